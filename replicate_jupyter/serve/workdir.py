"""Where coglet runs: the model's own folder for Cog folders, a private directory otherwise.

coglet reads `.cog/openapi_schema.json` from its working directory and reads a file output
(`return Path("hello.webp")`) relative to it, in its own process; Cog runs a model with its
folder as that directory. So a folder with cog.yaml runs from itself:

- `folder` mode: the schema goes to the model's own `.cog/openapi_schema.json` when the folder is
  writable and has no such file, or has one equal to ours (as `cog build` leaves it). What we
  created is removed again at cleanup (a `.cog/` we made carries a `.gitignore` of `*` meanwhile,
  so a served model folder in a git checkout stays clean).
- `mirror` mode: the folder is read-only, or its `.cog/openapi_schema.json` differs (another
  `cog build`, or a second serve of it under another name): a private directory holds a symlink to
  every entry of the folder plus our own `.cog/`. Relative paths read the same files; files the
  model writes to its working directory land in the mirror and go with it.
- `private` mode: everything else (`file.py:Class` outside a Cog folder, `local/...`, `hf:...`,
  registered names) runs as before: a private directory with the schema and a two-line shim that
  loads the class through `predictors.load`.

The private state directory (logs, shim, mirror) is always ours and removed at cleanup.
"""
from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any, Iterator

from replicate_jupyter.serve import batched
from replicate_jupyter.serve.folder import ModelFolder, find_folder, model_environment

__all__ = ["RunDir", "prepare", "SHIM_MODULE"]

SHIM_MODULE = "rj_serve_predict"
SCHEMA = pathlib.Path(".cog") / "openapi_schema.json"


@dataclass
class RunDir:
    """One served model's directories. `cwd` is coglet's working directory; `stub` its
    COG_PREDICT_TYPE_STUB; `state` is private (logs, shim, mirror)."""

    state: pathlib.Path
    cwd: pathlib.Path
    stub: str
    schema: dict
    folder: ModelFolder | None
    mode: str  # "folder" | "mirror" | "private"
    wrote: list[pathlib.Path] = field(default_factory=list)
    made_cog_dir: bool = False
    concurrency: int | None = None  # coglet's slots a batching model needs (None: as asked)

    @property
    def log_path(self) -> pathlib.Path:
        return self.state / "server.log"

    def ensure(self) -> None:
        """Before every (re)start: the schema coglet will read is there and is ours. Another serve
        of the same folder may have removed it (at its exit) or replaced it meanwhile."""
        if self.mode != "folder":
            return
        path = self.cwd / SCHEMA
        current = _read_json(path)
        if current == self.schema:
            return
        if current is None and os.access(self.cwd, os.W_OK):
            self._write_in_folder()
        else:
            self._to_mirror()

    def _write_in_folder(self) -> None:
        cog_dir = self.cwd / ".cog"
        if not cog_dir.exists():
            cog_dir.mkdir()
            self.made_cog_dir = True
            ignore = cog_dir / ".gitignore"
            ignore.write_text("# written by replicate-jupyter serve; removed when it stops\n*\n")
            self.wrote.append(ignore)
        path = self.cwd / SCHEMA
        path.write_text(json.dumps(self.schema, indent=1))
        if path not in self.wrote:
            self.wrote.append(path)

    def _to_mirror(self) -> None:
        assert self.folder is not None
        mirror = self.state / "model"
        mirror.mkdir(exist_ok=True)
        for entry in self.folder.root.iterdir():
            if entry.name == ".cog" or (mirror / entry.name).exists():
                continue
            os.symlink(entry, mirror / entry.name)
        (mirror / ".cog").mkdir(exist_ok=True)
        (mirror / SCHEMA).write_text(json.dumps(self.schema, indent=1))
        self.cwd, self.mode = mirror, "mirror"

    def cleanup(self) -> None:
        """Remove what we wrote into the model's folder (if it is still ours) and our state."""
        for path in reversed(self.wrote):
            if path.name == "openapi_schema.json" and _read_json(path) != self.schema:
                continue  # someone else's now
            with contextlib.suppress(OSError):
                path.unlink()
        if self.made_cog_dir:
            with contextlib.suppress(OSError):
                (self.folder.root / ".cog").rmdir()  # type: ignore[union-attr]
        self.wrote.clear()
        shutil.rmtree(self.state, ignore_errors=True)


def _read_json(path: pathlib.Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _absolute_ref(ref: str) -> str:
    """File references must survive the change of working directory."""
    if ref.startswith(("hf:", "local/")):
        return ref
    path_part, sep, cls = ref.rpartition(":") if ref.count(":") and not ref.endswith(".py") else (ref, "", "")
    if os.path.exists(path_part):
        return os.path.abspath(path_part) + (sep + cls if sep else "")
    return ref


@contextlib.contextmanager
def model_context(folder: ModelFolder | None) -> Iterator[None]:
    """Serve imports the model once to build its schema: as Cog would, from its folder and with
    its environment (restored afterwards; serve is single-threaded at that point)."""
    if folder is None:
        yield
        return
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    os.environ.clear()
    os.environ.update(model_environment(folder, saved_env))
    os.chdir(folder.root)
    try:
        yield
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)


def prepare(ref: str, name: str | None = None, hardware: str | None = None, concurrency: int = 1,
            batching: bool = True) -> RunDir:
    """Load the predictor (so a bad reference fails here with our message, not as coglet's
    SETUP_FAILED later), build its schema and lay out the directory coglet runs in. A model that
    declares batching (outside a Cog folder, as on the local runner) is served through the
    batching adapter (serve/batched.py) with `concurrency` slots (its max batch when 1), and its
    schema's `info` says so (`x-rj-batching`), so the pool sends it a sweep's members together."""
    from replicate_jupyter.model import predictors
    from replicate_jupyter.runners import devices

    ref = _absolute_ref(ref)
    folder = find_folder(ref)
    with model_context(folder):
        spec = predictors.load(ref, name)
    schema = json.loads(json.dumps(spec.schema))  # build_schema's dict is shared: copy before editing
    info = schema.setdefault("info", {})
    info["x-replicate-model"] = spec.name
    info["x-replicate-hardware"] = hardware or devices.current_sku()
    if spec.version:
        info.setdefault("x-replicate-version", spec.version)
    # coglet answers 406 to SSE unless the schema says x-cog-streaming; with it, every model
    # streams its start, logs and completion (a non-iterator output still arrives whole in
    # `completed`), so the pool sees logs live and knows when a prediction really started.
    post = schema.setdefault("paths", {}).setdefault("/predictions", {}).setdefault("post", {})
    post["x-cog-streaming"] = True
    # (an iterator model's members would each need their own stream of items: served unbatched for now)
    iterator = (schema.get("components", {}).get("schemas", {}).get("Output", {}) or {}).get("x-cog-array-type") == "iterator"
    batch = batched.batching_info(spec) if batching and folder is None and not iterator else None
    if batch is not None:
        batch["concurrency"] = max(2, int(concurrency)) if concurrency > 1 else max(2, batch["max_batch"])
        info[batched.INFO_KEY] = batch
    state = pathlib.Path(tempfile.mkdtemp(prefix="rj-serve-"))
    if folder is not None:
        rd = RunDir(state=state, cwd=folder.root, stub=folder.target, schema=schema, folder=folder, mode="folder")
        rd.ensure()
        return rd
    (state / ".cog").mkdir()
    (state / SCHEMA).write_text(json.dumps(schema, indent=1))
    (state / f"{SHIM_MODULE}.py").write_text(
        '"""Written by replicate-jupyter serve: the predictor class, loaded the way every runner loads it."""\n'
        "from replicate_jupyter.model import predictors as _predictors\n\n"
        + (f"Predictor = _predictors.load({ref!r}, {spec.name!r}).cls\n" if batch is None else
           "from replicate_jupyter.serve.batched import adapter_class as _adapter\n\n"
           f"Predictor = _adapter(_predictors.load({ref!r}, {spec.name!r}), {batch['concurrency']})\n")
    )
    return RunDir(state=state, cwd=state, stub=f"{SHIM_MODULE}.py:Predictor", schema=schema, folder=None, mode="private",
                  concurrency=batch["concurrency"] if batch is not None else None)


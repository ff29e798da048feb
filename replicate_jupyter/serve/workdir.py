"""Where coglet runs: the model's own folder for Cog folders, a private directory otherwise.

coglet reads `.cog/openapi_schema.json` from its working directory and reads a file output
(`return Path("hello.webp")`) relative to it, in its own process; Cog runs a model with its
folder as that directory. So a folder with cog.yaml runs from itself:

- `folder` mode: coglet reads the schema once, when setup() has finished (measured, coglet
  0.23.1: a file changed during setup is the one it serves, one changed after READY is not), so
  the file need only be ours while our coglet starts. Each start (`starting()`) holds a lock on
  the folder (flock on the directory itself: nothing written for it) from writing our schema
  until coglet is READY, and the file stays as the last start left it. Serves of one folder (a
  worker and the kernel's own Cog process of that model, one started before an edit and one
  after) take turns and all run in the folder. What we wrote goes when we stop if it is still
  ours, and a `.cog/` left holding only our `.gitignore` (`*`, so a served folder in a git
  checkout stays clean) goes with it.
- `mirror` mode, the narrow case: the folder is not writable, or its `.cog/openapi_schema.json`
  is not a serve's and differs from ours (`cog build` wrote it; a serve's schema has
  `x-rj-concurrency`), which is never overwritten: a private directory holds a symlink to every
  entry of the folder plus our own `.cog/`. Relative paths read the same files; files the model
  writes to its working directory land in the mirror and go with it.
- `private` mode: everything else (`file.py:Class` outside a Cog folder, `local/...`, `hf:...`,
  registered names) runs as before: a private directory with the schema and a two-line shim that
  loads the class through `predictors.load`.

The private state directory (logs, shim, mirror) is always ours and removed at cleanup. After an
edit, serve loads the model again (`RunDir.load`, serve/reload.py): a new schema, read by
coglet's next start.
"""
from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import tempfile
from typing import Any, Iterator

from replicate_jupyter.runners.workers.wire import CONCURRENCY_KEY
from replicate_jupyter.serve import batched
from replicate_jupyter.serve.folder import ModelFolder, find_folder, model_environment

__all__ = ["RunDir", "prepare", "SHIM_MODULE"]

SHIM_MODULE = "rj_serve_predict"
SCHEMA = pathlib.Path(".cog") / "openapi_schema.json"
_IGNORE = "# written by replicate-jupyter serve; removed when it stops\n*\n"


class RunDir:
    """One served model's directories and schema. `cwd` is coglet's working directory; `stub`
    its COG_PREDICT_TYPE_STUB; `state` is private (logs, shim, mirror); `slots` the predictions
    coglet runs at once (COG_MAX_CONCURRENCY, and the schema's `x-rj-concurrency`); `batch` a
    batching model's `x-rj-batching`; `watch` the folder whose code the model runs (a Cog
    folder, a loose file's folder; None for an embedded or hf: model)."""

    def __init__(self, ref: str, name: str | None = None, hardware: str | None = None, concurrency: int = 1,
                 batching: bool = True) -> None:
        self.ref, self.name, self.hardware = _absolute_ref(ref), name, hardware
        self.asked, self.batching = max(1, int(concurrency)), batching
        self.state = pathlib.Path(tempfile.mkdtemp(prefix="rj-serve-"))
        self.cwd, self.stub, self.mode = self.state, f"{SHIM_MODULE}.py:Predictor", "private"
        self.schema: dict = {}
        self.folder: ModelFolder | None = None
        self.slots = 1
        self.batch: dict | None = None
        self.version: str | None = None
        self.watch: pathlib.Path | None = None

    @property
    def log_path(self) -> pathlib.Path:
        return self.state / "server.log"

    # ----- the model -----------------------------------------------------------------------
    def load(self) -> None:
        """(Re)load the predictor, so a bad reference fails here with our message rather than as
        coglet's SETUP_FAILED later; build its schema and put it where coglet reads it. A model
        that declares batching (outside a Cog folder, as on the local runner) is served through
        the batching adapter (serve/batched.py) with `concurrency` slots (its max batch when 1),
        and its schema says so (`x-rj-batching`), so the pool sends it a sweep's members together."""
        from replicate_jupyter.model import predictors
        from replicate_jupyter.runners import devices

        folder = find_folder(self.ref)
        with model_context(folder):
            spec = predictors.load(self.ref, self.name)
        self.name = self.name or spec.name  # the name the pool routes by stays across reloads
        self.hardware = self.hardware or devices.current_sku()
        schema = json.loads(json.dumps(spec.schema))  # build_schema's dict is shared: copy before editing
        info = schema.setdefault("info", {})
        info["x-replicate-model"] = spec.name
        info["x-replicate-hardware"] = self.hardware
        if spec.version:
            info.setdefault("x-replicate-version", spec.version)
        # coglet answers 406 to SSE unless the schema says x-cog-streaming; with it, every model
        # streams its start, logs and completion (a non-iterator output still arrives whole in
        # `completed`), so the pool sees logs live and knows when a prediction really started.
        post = schema.setdefault("paths", {}).setdefault("/predictions", {}).setdefault("post", {})
        post["x-cog-streaming"] = True
        # (an iterator model's members would each need their own stream of items: served unbatched for now)
        iterator = (schema.get("components", {}).get("schemas", {}).get("Output", {}) or {}).get("x-cog-array-type") == "iterator"
        batch = batched.batching_info(spec) if self.batching and folder is None and not iterator else None
        if batch is not None:
            batch["concurrency"] = max(2, self.asked) if self.asked > 1 else max(2, batch["max_batch"])
            info[batched.INFO_KEY] = batch
        slots = batch["concurrency"] if batch is not None else \
            self.asked if self.asked != 1 or folder is None else (folder.concurrency or 1)
        info[CONCURRENCY_KEY] = slots  # the pool's slots for this worker (wire.concurrency)
        self.schema, self.folder, self.slots, self.batch, self.version = schema, folder, slots, batch, spec.version
        self.watch = folder.root if folder is not None else spec.folder
        if folder is not None:
            self.stub = folder.target
            if self.mode == "private":
                self.cwd, self.mode = folder.root, "folder"
            elif self.mode == "mirror":
                self._to_mirror()
            return
        (self.state / ".cog").mkdir(exist_ok=True)
        (self.state / SCHEMA).write_text(json.dumps(schema, indent=1))
        (self.state / f"{SHIM_MODULE}.py").write_text(
            '"""Written by replicate-jupyter serve: the predictor class, loaded the way every runner loads it."""\n'
            "from replicate_jupyter.model import predictors as _predictors\n\n"
            + (f"Predictor = _predictors.load({self.ref!r}, {spec.name!r}).cls\n" if batch is None else
               "from replicate_jupyter.serve.batched import adapter_class as _adapter\n\n"
               f"Predictor = _adapter(_predictors.load({self.ref!r}, {spec.name!r}), {batch['concurrency']})\n"))

    # ----- one coglet start ----------------------------------------------------------------
    @contextlib.contextmanager
    def starting(self) -> Iterator[None]:
        """Around one coglet start, until it is READY (when it has read the schema): in folder
        mode the folder's schema is ours meanwhile, and no other serve of the folder starts."""
        if self.mode != "folder":
            yield
            return
        with _folder_lock(self.cwd):
            self._claim()
            yield

    def _claim(self) -> None:
        path = self.cwd / SCHEMA
        current = _read_json(path)
        if current == self.schema:
            return
        if (current is None or self._a_serves(current)) and os.access(self.cwd, os.W_OK):
            try:
                self._write_in_folder()
                return
            except OSError:
                pass
        self._to_mirror()

    def _a_serves(self, schema: Any) -> bool:
        """Written by a serve (ours before an edit, another one's): ours to overwrite at a start."""
        info = schema.get("info") if isinstance(schema, dict) else None
        return (isinstance(info, dict) and CONCURRENCY_KEY in info) or _read_text(self.cwd / ".cog" / ".gitignore") == _IGNORE

    def _write_in_folder(self) -> None:
        cog_dir = self.cwd / ".cog"
        if not cog_dir.exists():
            cog_dir.mkdir()
            (cog_dir / ".gitignore").write_text(_IGNORE)
        tmp = cog_dir / f".openapi_schema.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(self.schema, indent=1))
        os.replace(tmp, self.cwd / SCHEMA)

    def _to_mirror(self) -> None:
        assert self.folder is not None
        mirror = self.state / "model"
        mirror.mkdir(exist_ok=True)
        for entry in self.folder.root.iterdir():
            if entry.name == ".cog" or os.path.lexists(mirror / entry.name):
                continue
            os.symlink(entry, mirror / entry.name)
        (mirror / ".cog").mkdir(exist_ok=True)
        (mirror / SCHEMA).write_text(json.dumps(self.schema, indent=1))
        self.cwd, self.mode = mirror, "mirror"

    def cleanup(self) -> None:
        """Remove what we wrote into the model's folder (if it is still ours) and our state.
        Another serve of the folder starting right now owns the file: left to it."""
        if self.mode == "folder":
            with contextlib.suppress(OSError), _folder_lock(self.cwd, wait=False) as free:
                path, cog_dir = self.cwd / SCHEMA, self.cwd / ".cog"
                if free and _read_json(path) == self.schema:
                    path.unlink()
                if free and sorted(os.listdir(cog_dir)) == [".gitignore"] and _read_text(cog_dir / ".gitignore") == _IGNORE:
                    (cog_dir / ".gitignore").unlink()
                    cog_dir.rmdir()
        shutil.rmtree(self.state, ignore_errors=True)


@contextlib.contextmanager
def _folder_lock(root: pathlib.Path, wait: bool = True) -> Iterator[bool]:
    """An exclusive flock on the folder itself (released however serve ends); yields whether it
    was taken (always, when `wait`). No lock where fcntl is missing."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield True
        return
    fd = os.open(root, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            taken = True
        except BlockingIOError:
            taken = False
        yield taken
    finally:
        os.close(fd)


def _read_json(path: pathlib.Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _read_text(path: pathlib.Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
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
    """Serve imports the model to build its schema: as Cog would, from its folder and with its
    environment (restored afterwards). Only serve's main thread imports (at start and at a
    reload); the front's thread reads neither the environment nor the working directory."""
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
    """The RunDir of `ref`, loaded (its state directory removed again when loading fails)."""
    rd = RunDir(ref, name, hardware, concurrency, batching)
    try:
        rd.load()
    except BaseException:
        shutil.rmtree(rd.state, ignore_errors=True)
        raise
    return rd

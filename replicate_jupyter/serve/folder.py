"""What a Cog model folder says about how its model runs: cog.yaml's target, environment, concurrency.

Under Cog a model runs from its own folder (the working directory, first on `sys.path`) with the
variables of cog.yaml's `environment` set, and nothing else of the machine it was built on. Serve
and the kernel-side Cog processes (runners/cogproc.py) read the folder here, once, so both apply
the same rules:

- `find_folder(ref)`: a folder holding cog.yaml, a cog.yaml path, or a `file.py[:Name]` inside
  one (the nearest cog.yaml at most three levels up) is a folder model; anything else is not.
- `environment`: cog.yaml's `environment:` as model/cogyaml.py reads it (the one reader, shared
  with the loader): a list of `KEY=VALUE`, refused where Cog refuses it (another form, a name
  given twice, a name Cog reserves: PATH, PYTHONPATH, CUDA_*, REPLICATE_*, ...).
- `model_environment`: the environment the model's process gets: the parent's, scrubbed of
  credentials (`scrub`, by errors.looks_secret: the project's one rule for secret-looking
  names), then the folder's entries expanded as Cog's Docker `ENV` expands them
  (cogyaml.expand_environment: `$NAME`/`${NAME}` from an earlier entry, else the parent). A
  credential reaches the model only when cog.yaml lists it.
- `code_signature`: a cheap version of the folder's code (names, sizes and mtimes of its `.py`
  files and cog.yaml), so a warm process is replaced when an edited file would change what runs.
"""
from __future__ import annotations

import hashlib
import os
import pathlib
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from replicate_jupyter.errors import looks_secret as _looks_secret
from replicate_jupyter.model.cogyaml import expand_environment, parse_environment

__all__ = ["ModelFolder", "find_folder", "parse_environment", "looks_secret", "scrub",
           "model_environment", "code_signature"]

#: always scrubbed, whatever their name looks like
_ALWAYS = frozenset({"REPLICATE_API_TOKEN", "RJ_WORKER_TOKEN"})
_SKIP_DIRS = frozenset({".cog", ".git", "__pycache__", "node_modules", ".venv", "venv"})
_MAX_FILES = 2000


@dataclass(frozen=True)
class ModelFolder:
    """A Cog model folder: `root` holds cog.yaml; `target` is relative to it (`predict.py:Predictor`)."""

    root: pathlib.Path
    target: str
    environment: tuple[tuple[str, str], ...] = ()
    concurrency: int | None = None
    config: Any = None  # cog.yaml as read

    @property
    def target_file(self) -> pathlib.Path:
        return self.root / self.target.split(":", 1)[0]


def find_folder(ref: Any) -> ModelFolder | None:
    """The Cog folder a reference runs from, or None (a class, `local/...`, `hf:...`, a loose file)."""
    if not isinstance(ref, (str, os.PathLike)):
        return None
    text = os.fspath(ref)
    if text.startswith(("hf:", "local/")):
        return None
    path_part, _, name = text.partition(":") if not text.endswith(".py") else (text, "", "")
    path = pathlib.Path(path_part)
    if not path.exists():
        return None
    path = path.resolve()
    if path.is_dir():
        return _read(path, None) if (path / "cog.yaml").exists() else None
    if path.name == "cog.yaml":
        return _read(path.parent, None)
    for parent in list(path.parents)[:3]:
        if (parent / "cog.yaml").exists():
            rel = path.relative_to(parent).as_posix()
            return _read(parent, f"{rel}:{name}" if name else rel)
    return None


_read_cache: dict[tuple[pathlib.Path, str | None], tuple[tuple[int, int], ModelFolder]] = {}


def _read(root: pathlib.Path, target: str | None) -> ModelFolder:
    """cog.yaml read once per edit: a runner asks on every prediction (one stat when unchanged)."""
    st = os.stat(root / "cog.yaml")
    stamp = (st.st_mtime_ns, st.st_size)
    hit = _read_cache.get((root, target))
    if hit is not None and hit[0] == stamp:
        return hit[1]
    folder = _read_config(root, target)
    _read_cache[(root, target)] = (stamp, folder)
    return folder


def _read_config(root: pathlib.Path, target: str | None) -> ModelFolder:
    from replicate_jupyter.model.cogyaml import read_config

    cfg = read_config(root)  # the one cog.yaml reader (target, concurrency), shared with the loader
    target = target or cfg.target
    if ":" not in target:
        target = _with_class(root, target)
    return ModelFolder(root=root, target=target, environment=tuple(cfg.environment.items()),
                       concurrency=cfg.concurrency if cfg.concurrency and cfg.concurrency > 0 else None,
                       config=cfg.raw)


def _with_class(root: pathlib.Path, file: str) -> str:
    """`predict.py` alone names the one predictor in it; coglet needs `file:Name`."""
    from replicate_jupyter.model import predictors

    spec = predictors.load(str(root / file))
    name = spec.source.rpartition(":")[2] if spec.source else spec.cls.__name__
    return f"{file}:{name}"


def looks_secret(name: str) -> bool:
    """Credential-looking variable names (errors.looks_secret: a word token, key, secret,
    password, … in the name), and the two tokens the project itself uses."""
    return name in _ALWAYS or _looks_secret(name)


def scrub(env: Mapping[str, str], keep: Iterable[str] = ()) -> dict[str, str]:
    """The environment without credentials, except the names in `keep`."""
    kept = set(keep)
    return {k: v for k, v in env.items() if k in kept or not looks_secret(k)}


def model_environment(folder: ModelFolder | None, parent: Mapping[str, str],
                      keep: Iterable[str] = ()) -> dict[str, str]:
    """What the model's process gets: `parent` scrubbed, then cog.yaml's entries in order.
    A reference in a value expands from earlier entries, then from the parent, unscrubbed:
    a credential the model needs reaches it only when its cog.yaml names it (`HF_TOKEN=$HF_TOKEN`)."""
    env = scrub(parent, keep)
    if folder is not None and folder.environment:
        env.update(expand_environment(dict(folder.environment), parent))
    return env


def code_signature(root: pathlib.Path, recursive: bool = True) -> str:
    """A version of the folder's code that changes whenever a .py file or cog.yaml does (with
    `recursive=False`, only those directly in `root`: a loose predictor file's siblings)."""
    h = hashlib.sha256()
    count = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith(".")) if recursive else []
        for fn in sorted(filenames):
            if not (fn.endswith(".py") or fn == "cog.yaml"):
                continue
            path = os.path.join(dirpath, fn)
            try:
                st = os.stat(path)
            except OSError:
                continue
            h.update(f"{os.path.relpath(path, root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            count += 1
            if count >= _MAX_FILES:
                return h.hexdigest()[:16]
    return h.hexdigest()[:16]

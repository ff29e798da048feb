"""What a Cog model folder says about how its model runs: cog.yaml's target, environment, concurrency.

Under Cog a model runs from its own folder (the working directory, first on `sys.path`) with the
variables of cog.yaml's `environment` set, and nothing else of the machine it was built on. Serve
and the kernel-side Cog processes (runners/cogproc.py) read the folder here, once, so both apply
the same rules:

- `find_folder(ref)`: a folder holding cog.yaml, a cog.yaml path, or a `file.py[:Name]` inside
  one (the nearest cog.yaml at most three levels up) is a folder model; anything else is not.
- `environment`: cog.yaml's `environment:`, a list of `KEY=VALUE` (Cog 0.23 refuses other forms,
  a name given twice, and the names it reserves: PATH, PYTHONPATH, CUDA_*, REPLICATE_*, ...);
  `$NAME`/`${NAME}` in a value refers to an earlier entry, else to the parent's variable.
- `model_environment`: the environment the model's process gets: the parent's, scrubbed of
  credentials (`scrub`), then the folder's entries. A credential reaches the model only when
  cog.yaml lists it.
- `code_signature`: a cheap version of the folder's code (names, sizes and mtimes of its `.py`
  files and cog.yaml), so a warm process is replaced when an edited file would change what runs.
"""
from __future__ import annotations

import hashlib
import os
import pathlib
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from replicate_jupyter.errors import InputError, Problem

__all__ = ["ModelFolder", "find_folder", "parse_environment", "looks_secret", "scrub",
           "model_environment", "code_signature"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_REF = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
#: always scrubbed, whatever their name looks like
_ALWAYS = frozenset({"REPLICATE_API_TOKEN", "RJ_WORKER_TOKEN"})
_SECRET = re.compile(r"(_TOKEN|_KEY)\Z|SECRET|PASSWORD", re.IGNORECASE)
#: names Cog refuses in cog.yaml's environment (cog's pkg/config/env.go)
_DENY = ("PATH", "LD_LIBRARY_PATH", "PYTHONPATH", "VIRTUAL_ENV", "PYTHONUNBUFFERED", "R8_*", "REPLICATE_*",
         "LIBRARY_PATH", "CUDA_*", "NVIDIA_*", "NV_*", "PGET_*", "HF_ENDPOINT", "HF_HUB_ENABLE_HF_TRANSFER",
         "KUBERNETES_*")
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
    return ModelFolder(root=root, target=target, environment=parse_environment(cfg.raw.get("environment")),
                       concurrency=cfg.concurrency if cfg.concurrency and cfg.concurrency > 0 else None,
                       config=cfg.raw)


def _with_class(root: pathlib.Path, file: str) -> str:
    """`predict.py` alone names the one predictor in it; coglet needs `file:Name`."""
    from replicate_jupyter.model import predictors

    spec = predictors.load(str(root / file))
    name = spec.source.rpartition(":")[2] if spec.source else spec.cls.__name__
    return f"{file}:{name}"


def parse_environment(entries: Any) -> tuple[tuple[str, str], ...]:
    """cog.yaml `environment:` → (name, value) in order, refused where Cog refuses it: not
    KEY=VALUE, a name defined twice, or one Cog reserves (PATH, PYTHONPATH, CUDA_*, REPLICATE_*, ...)."""
    if entries is None:
        return ()
    if isinstance(entries, dict):  # accepted by the loader too (model/cogyaml.py)
        entries = [f"{k}={'' if v is None else v}" for k, v in entries.items()]
    if not isinstance(entries, list):
        raise InputError([Problem("cog.yaml environment", "type", entries, "a list of KEY=VALUE strings")])
    out: dict[str, str] = {}
    problems: list[Problem] = []
    for entry in entries:
        name, sep, value = str(entry).partition("=")
        if not sep or not name:
            problems.append(Problem("cog.yaml environment", "format", entry, "KEY=VALUE",
                                    message=f"environment variable {str(entry)!r} is not in the KEY=VALUE format"))
        elif not _NAME.match(name):
            problems.append(Problem("cog.yaml environment", "name", name,
                                    "letters, digits and _, not starting with a digit"))
        elif _reserved(name):
            problems.append(Problem("cog.yaml environment", "reserved", name, "a name Cog does not reserve",
                                    message=f"environment variable {name!r} is not allowed (Cog reserves it)"))
        elif name in out:
            problems.append(Problem("cog.yaml environment", "duplicate", name, "each name once",
                                    message=f"environment variable {name!r} is already defined"))
        elif "\x00" in value:
            problems.append(Problem("cog.yaml environment", "value", name, "a value without NUL bytes"))
        else:
            out[name] = value
    if problems:
        raise InputError(problems)
    return tuple(out.items())


def _reserved(name: str) -> bool:
    return any(name.startswith(p[:-1]) if p.endswith("*") else name == p for p in _DENY)


def looks_secret(name: str) -> bool:
    """Credential-looking variable names: *_TOKEN, *_KEY, *SECRET*, *PASSWORD*, Replicate's token."""
    return name in _ALWAYS or bool(_SECRET.search(name))


def scrub(env: Mapping[str, str], keep: Iterable[str] = ()) -> dict[str, str]:
    """The environment without credentials, except the names in `keep`."""
    kept = set(keep)
    return {k: v for k, v in env.items() if k in kept or not looks_secret(k)}


def model_environment(folder: ModelFolder | None, parent: Mapping[str, str],
                      keep: Iterable[str] = ()) -> dict[str, str]:
    """What the model's process gets: `parent` scrubbed, then cog.yaml's entries in order.
    `$NAME`/`${NAME}` in a value expands from earlier entries, then from the parent, unscrubbed:
    a credential the model needs reaches it only when its cog.yaml names it (`HF_TOKEN=$HF_TOKEN`)."""
    env = scrub(parent, keep)
    for name, value in (folder.environment if folder is not None else ()):
        env[name] = _REF.sub(lambda m: env.get(m.group(1) or m.group(2), parent.get(m.group(1) or m.group(2), "")),
                             value)
    return env


def code_signature(root: pathlib.Path) -> str:
    """A version of the folder's code that changes whenever a .py file or cog.yaml does."""
    h = hashlib.sha256()
    count = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
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

"""What a Cog model folder says about how its model runs: cog.yaml's target, environment, concurrency.

Under Cog a model runs from its own folder (the working directory, first on `sys.path`) with the
variables of cog.yaml's `environment` set, and nothing else of the machine it was built on. Serve
and the kernel-side Cog processes (runners/cogproc.py) read the folder here, once, so both apply
the same rules:

- `find_folder(ref)`: a folder holding cog.yaml, a cog.yaml path, or a `file.py[:Name]` inside
  one (the nearest cog.yaml at most three levels up) is a folder model; anything else is not.
- `environment`: cog.yaml `build.environment` (Cog's documented place; a top-level `environment:`
  list is read too), a list of `NAME=value` in order, where `$NAME`/`${NAME}` refer to earlier
  entries or to the parent's variables. A bare `NAME` (our addition) passes the parent's value on.
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
_SKIP_DIRS = frozenset({".cog", ".git", "__pycache__", "node_modules", ".venv", "venv"})
_MAX_FILES = 2000


@dataclass(frozen=True)
class ModelFolder:
    """A Cog model folder: `root` holds cog.yaml; `target` is relative to it (`predict.py:Predictor`)."""

    root: pathlib.Path
    target: str
    environment: tuple[tuple[str, str | None], ...] = ()
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


def _read(root: pathlib.Path, target: str | None) -> ModelFolder:
    import yaml

    cfg_path = root / "cog.yaml"
    try:
        cfg = yaml.safe_load(cfg_path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise InputError([Problem("cog.yaml", "yaml", str(cfg_path), "valid YAML", message=f"{cfg_path}: {exc}")]) from None
    if not isinstance(cfg, dict):
        raise InputError([Problem("cog.yaml", "type", type(cfg).__name__, "a mapping")])
    target = target or cfg.get("run") or cfg.get("predict")
    if not target:
        raise InputError([Problem("cog.yaml", "required", None, "a 'predict:' (or 'run:') entry",
                                  message=f"{cfg_path} has no 'predict:' (or 'run:') entry")])
    if ":" not in str(target):
        target = _with_class(root, str(target))
    build = cfg.get("build") if isinstance(cfg.get("build"), dict) else {}
    entries = list(build.get("environment") or []) + list(_list(cfg.get("environment")))
    conc = cfg.get("concurrency") if isinstance(cfg.get("concurrency"), dict) else {}
    maximum = conc.get("max")
    return ModelFolder(root=root, target=str(target), environment=parse_environment(entries),
                       concurrency=int(maximum) if isinstance(maximum, int) and maximum > 0 else None, config=cfg)


def _list(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, list):
        return value
    raise InputError([Problem("cog.yaml environment", "type", value, "a list of NAME=value strings")])


def _with_class(root: pathlib.Path, file: str) -> str:
    """`predict.py` alone names the one predictor in it; coglet needs `file:Name`."""
    from replicate_jupyter.model import predictors

    spec = predictors.load(str(root / file))
    return f"{file}:{spec.cls.__name__}"


def parse_environment(entries: Iterable[Any]) -> tuple[tuple[str, str | None], ...]:
    """cog.yaml environment entries → (name, value or None for pass-through), checked as Cog does."""
    out: list[tuple[str, str | None]] = []
    problems: list[Problem] = []
    for entry in entries:
        if not isinstance(entry, str):
            problems.append(Problem("cog.yaml environment", "type", entry, "NAME=value strings"))
            continue
        name, sep, value = entry.partition("=")
        name = name.strip()
        if not _NAME.match(name):
            problems.append(Problem("cog.yaml environment", "name", name,
                                    "a name of letters, digits and _ that does not start with a digit"))
        elif "\x00" in value:
            problems.append(Problem("cog.yaml environment", "value", name, "a value without NUL bytes"))
        else:
            out.append((name, value if sep else None))
    if problems:
        raise InputError(problems)
    return tuple(out)


def looks_secret(name: str) -> bool:
    """Credential-looking variable names: *_TOKEN, *_KEY, *SECRET*, *PASSWORD*, Replicate's token."""
    return name in _ALWAYS or bool(_SECRET.search(name))


def scrub(env: Mapping[str, str], keep: Iterable[str] = ()) -> dict[str, str]:
    """The environment without credentials, except the names in `keep`."""
    kept = set(keep)
    return {k: v for k, v in env.items() if k in kept or not looks_secret(k)}


def model_environment(folder: ModelFolder | None, parent: Mapping[str, str],
                      keep: Iterable[str] = ()) -> dict[str, str]:
    """What the model's process gets: `parent` scrubbed, then cog.yaml's entries in order
    (`$NAME` expands from earlier entries, then from the unscrubbed parent: naming it is listing it)."""
    entries = folder.environment if folder is not None else ()
    env = scrub(parent, set(keep) | {n for n, v in entries if v is None})
    for name, value in entries:
        if value is None:
            if name in parent:
                env[name] = parent[name]
            continue
        env[name] = _REF.sub(lambda m: env.get(m.group(1) or m.group(2),
                                               parent.get(m.group(1) or m.group(2), "")), value)
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

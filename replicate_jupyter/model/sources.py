"""Predictor files → modules, and the version of a predictor's code.

Under Cog a model runs in a fresh process with its folder first on `sys.path`, so `from helper
import x` finds the `helper.py` beside `predict.py`, and an edited file is simply read again. In a
kernel, modules stay in `sys.modules`: this module imports a predictor file so that it behaves as
under Cog anyway:

- its folder is first on `sys.path` while it is executed (and stays on the path, last, for
  imports it makes later), and the sibling modules it imports from that folder are executed
  fresh for it, without displacing a module of the same name the notebook already uses;
- the files it ran (the predictor file and those siblings) are recorded, so `version_of` hashes
  exactly the code that runs, and `fingerprint` (one `stat` per file) tells cheaply whether any
  of it changed since.

It is executed off the main thread (model/loader.py), where a kernel interrupt cannot land in
the middle of the imports it makes (torch, half-imported, would break the kernel for good).
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import pathlib
import sys
import threading
from types import ModuleType

from replicate_jupyter.model import loader

__all__ = ["import_file", "version_of", "fingerprint", "Fingerprint"]

Fingerprint = tuple[tuple[str, int, int], ...]

_lock = threading.RLock()
_modules: dict[str, tuple[Fingerprint, ModuleType, tuple[pathlib.Path, ...]]] = {}


def fingerprint(files: tuple[pathlib.Path, ...] | list[pathlib.Path]) -> Fingerprint:
    """(path, mtime_ns, size) per file; a missing file reads as (path, -1, -1)."""
    out = []
    for f in files:
        try:
            st = os.stat(f)
            out.append((str(f), st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((str(f), -1, -1))
    return tuple(out)


def version_of(files: tuple[pathlib.Path, ...] | list[pathlib.Path], root: pathlib.Path | None = None) -> str:
    """A content hash of the files (names relative to `root`): the same code, the same version."""
    h = hashlib.sha256()
    for f in sorted(files):
        name = os.path.relpath(f, root) if root is not None else f.name
        h.update(name.encode() + b"\0")
        try:
            h.update(f.read_bytes())
        except OSError:
            h.update(b"<missing>")
        h.update(b"\0")
    return h.hexdigest()[:16]


def _module_name(path: pathlib.Path) -> str:
    return "rj_predictor_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]


def _sibling_names(folder: pathlib.Path) -> set[str]:
    """Top-level module names the folder provides (`helper.py`, `pkg/`)."""
    names = set()
    try:
        for entry in os.scandir(folder):
            if entry.is_file() and entry.name.endswith(".py"):
                names.add(entry.name[:-3])
            elif entry.is_dir() and os.path.exists(os.path.join(entry.path, "__init__.py")):
                names.add(entry.name)
    except OSError:
        pass
    return names


def _under(mod: ModuleType, folder: str) -> str | None:
    f = getattr(mod, "__file__", None)
    if not f:
        return None
    f = os.path.realpath(f)
    return f if f.startswith(folder + os.sep) else None


def import_file(path: pathlib.Path) -> tuple[ModuleType, tuple[pathlib.Path, ...]]:
    """(the module of a predictor file, the files it ran: itself first, then its siblings).

    Reused while none of those files changed; executed afresh (siblings too) when one did.
    """
    path = path.resolve()
    hit = _modules.get(str(path))
    if hit is not None and fingerprint(hit[2]) == hit[0]:
        return hit[1], hit[2]
    return loader.off_main(lambda: _import(path), path.name)  # never half-imported by an interrupt


def _import(path: pathlib.Path) -> tuple[ModuleType, tuple[pathlib.Path, ...]]:
    key = str(path)
    with _lock:
        hit = _modules.get(key)
        if hit is not None and fingerprint(hit[2]) == hit[0]:  # a load queued before this one made it
            return hit[1], hit[2]
        module, files = _execute(path)
        _modules[key] = (fingerprint(files), module, files)
        return module, files


def _execute(path: pathlib.Path) -> tuple[ModuleType, tuple[pathlib.Path, ...]]:
    folder = str(path.parent)
    real_folder = os.path.realpath(folder)
    siblings = _sibling_names(path.parent) - {path.stem}
    # sibling modules already imported (by the notebook, another model, or an older version of
    # this one) step aside so this predictor runs its folder's current code, as under Cog
    stashed = {n: m for n, m in list(sys.modules.items()) if n.split(".")[0] in siblings}
    for n in stashed:
        del sys.modules[n]
    name = _module_name(path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load a module from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        _restore(stashed, siblings, real_folder)
        raise
    finally:
        try:
            sys.path.remove(folder)
        except ValueError:
            pass
    if folder not in sys.path:
        sys.path.append(folder)  # imports the predictor makes later (inside setup or predict)
    ran = []
    for n, m in list(sys.modules.items()):
        if n.split(".")[0] in siblings:
            f = _under(m, real_folder)
            if f is not None:
                ran.append(pathlib.Path(f))
    _restore(stashed, siblings, real_folder)
    return module, (path, *sorted(set(ran)))


def _restore(stashed: dict[str, ModuleType], siblings: set[str], real_folder: str) -> None:
    """Give the notebook back the same-named modules from elsewhere that stepped aside (the
    predictor keeps its own copies through the names it imported); older copies of this
    folder's own modules are dropped for good."""
    foreign = {n: m for n, m in stashed.items() if _under(m, real_folder) is None}
    if not foreign:
        return
    tops = {n.split(".")[0] for n in foreign}
    for n in [n for n in sys.modules if n.split(".")[0] in tops]:
        del sys.modules[n]
    sys.modules.update(foreign)

"""The project's temp files: one folder per kernel, each file gone with what it backs.

A file output opened by path, an input copied for a predictor that takes `cog.Path`: each
needs bytes on disk for a while. They all live in this process's one `rj-kernel-*` folder,
each removed when the object it backs is collected, the folder at exit, so a long session
leaves nothing behind in /tmp (a 512 MB input copy used to outlive the kernel). A predictor's
own outputs under the system temp dir are adopted (removed once read), as Cog's server does.
"""
from __future__ import annotations

import atexit
import os
import pathlib
import shutil
import tempfile
import threading
import weakref
from typing import Any, Callable

__all__ = ["kernel_tmp", "remove_kernel_tmp", "temp_file", "adopt"]

_tmp_lock = threading.Lock()
_tmp: list[pathlib.Path] = []


def kernel_tmp() -> pathlib.Path:
    """This process's one temp folder (`rj-kernel-*`), made on first use (again if someone
    removed it), removed at exit."""
    with _tmp_lock:
        if not _tmp or not _tmp[0].is_dir():
            if not _tmp:
                atexit.register(remove_kernel_tmp)
            _tmp[:] = [pathlib.Path(tempfile.mkdtemp(prefix="rj-kernel-"))]
        return _tmp[0]


def remove_kernel_tmp() -> None:
    """Remove the per-kernel temp folder (at exit, and on the kernel's shutdown)."""
    with _tmp_lock:
        for d in _tmp:
            shutil.rmtree(d, ignore_errors=True)


def temp_file(prefix: str, suffix: str, owner: object, write: Callable[[Any], None]) -> pathlib.Path:
    """A file in the kernel's temp folder, filled by `write(fh)`, removed once `owner` is
    collected (so its lifetime is the object's, with no close() to forget)."""
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=kernel_tmp())
    with os.fdopen(fd, "wb") as fh:
        write(fh)
    weakref.finalize(owner, _unlink, name)
    return pathlib.Path(name)


def _unlink(name: str) -> None:
    try:
        os.unlink(name)
    except OSError:
        pass


def adopt(path: pathlib.Path) -> None:
    """A predictor's output written under the system temp dir (Cog predictors write theirs in
    a `tempfile.mkdtemp()` folder) is ours once its bytes are read: removed, and its folder with
    it when that is left empty, as Cog's server cleans up the outputs it has sent. A file
    anywhere else is the user's and stays."""
    try:
        root = pathlib.Path(tempfile.gettempdir()).resolve()
        real = path.resolve()
        if root not in real.parents:
            return
        os.unlink(real)
        parent = real.parent
        if parent != root and root in parent.parents:
            os.rmdir(parent)  # only when empty (OSError otherwise: others' files stay)
    except OSError:
        pass

"""Processes we start die with the process that started them, SIGKILL included.

Two mechanisms, because each covers a case the other cannot:

- `die_with_parent` (a `preexec_fn`): Linux's `PR_SET_PDEATHSIG`, so the kernel sends the child
  SIGKILL the moment its parent dies, however it died. It fires when the parent *thread* that
  forked exits, so it is only used where that thread lives as long as the process (serve's main
  thread spawning coglet). coglet's own predictor process already dies with coglet (measured:
  SIGKILL coglet and its `_run_worker` child exits at once).
- `exit_when_stdin_closes`: the child watches a pipe on its stdin that only its parent holds; when
  the parent dies the pipe reaches EOF. For parents that start children from arbitrary threads
  (a kernel's background threads come and go), which rules out PDEATHSIG.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
from typing import Callable

__all__ = ["die_with_parent", "exit_when_stdin_closes"]

_PR_SET_PDEATHSIG = 1
# resolved here, in the parent: between fork and exec only the call itself is safe
_prctl = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl \
    if sys.platform.startswith("linux") else None


def die_with_parent() -> Callable[[], None]:
    """A `preexec_fn`: in the child between fork and exec, ask for SIGKILL when this process (the
    parent) dies (Linux; a no-op elsewhere). Also closes the race where the parent died before the
    call: the child is re-parented already, and exits at once."""
    parent = os.getpid()

    def preexec() -> None:
        if _prctl is None:
            return
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def exit_when_stdin_closes(on_close: Callable[[], None]) -> threading.Thread:
    """Call `on_close()` once stdin reaches EOF (the parent that holds its other end is gone)."""
    def watch() -> None:
        fd = sys.stdin.fileno() if sys.stdin is not None else 0
        try:
            while os.read(fd, 4096):
                pass
        except OSError:
            pass
        on_close()

    t = threading.Thread(target=watch, name="rj-serve-parent-watch", daemon=True)
    t.start()
    return t

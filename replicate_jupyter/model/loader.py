"""Loading a model off the kernel's main thread, so that an interrupt never lands inside an import.

Why: resolving a model imports its predictor file, and with it torch, diffusers or transformers
(2–4 s on a cold kernel). A kernel interrupt is a SIGINT, and Python raises its
KeyboardInterrupt on the main thread only; raised in the middle of `import torch`, it leaves
torch half-imported, and every later run in that kernel fails ("partially initialized module
'torch'", SystemError, once a dead kernel). Cog never meets this: it imports a predictor in a
child process. Here the load runs on a loader thread, which signals never reach, and the main
thread waits for it interruptibly: an interrupt ends the wait with one `LoadInterrupted` line,
the load goes on in the background and finishes whole, and the next run waits for what is left
of it (loads run one at a time, so it queues behind) or finds it done in the caches.

Only the main thread's loads move (no other thread gets signals); a load started on the loader
thread (a predictor that loads another model while it is imported) runs where it is. What must
stay on the main thread is `signal.signal` and `signal.set_wakeup_fd`, which a few libraries
call when imported: a load that fails for that reason runs again on the main thread, as before.
A load runs in a copy of the caller's contextvars, so a predictor's import-time prints reach the
cell that asked for it.
"""
from __future__ import annotations

import contextvars
import threading
from typing import Any, Callable, TypeVar

from replicate_jupyter.errors import LoadInterrupted

__all__ = ["LoadInterrupted", "off_main"]

T = TypeVar("T")

_serial = threading.Lock()  # one load at a time: a second run's load queues behind the first
_local = threading.local()


class _Load:
    """One load handed to a loader thread: its value or error once `done` is set."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.context = contextvars.copy_context()
        self.value: Any = None
        self.error: BaseException | None = None
        self.done = threading.Event()

    def run(self) -> None:
        _local.loading = True
        try:
            with _serial:
                self.value = self.context.run(self.fn)
        except BaseException as exc:  # noqa: BLE001 — handed to whoever waits
            self.error = exc
        finally:
            self.fn = None  # type: ignore[assignment]  # hold nothing once done
            self.done.set()


def off_main(fn: Callable[[], T], model: str) -> T:
    """`fn()` (a load of `model`: imports, resolution) where no interrupt can land inside it.

    On the main thread it runs on a loader thread and is waited for; a KeyboardInterrupt
    meanwhile raises `LoadInterrupted` and leaves the load to finish. Elsewhere it runs here."""
    if getattr(_local, "loading", False) or threading.current_thread() is not threading.main_thread():
        return fn()
    load = _Load(fn)
    threading.Thread(target=load.run, name=f"rj-load {model}", daemon=True).start()
    try:
        load.done.wait()
    except KeyboardInterrupt:
        raise LoadInterrupted(model) from None
    error, load.error = load.error, None
    if error is None:
        return load.value
    try:
        if not _needs_main_thread(error):
            raise error
    finally:
        del error
    _local.loading = True  # the loads it makes in turn stay here too
    try:
        return fn()
    finally:
        _local.loading = False


def _needs_main_thread(exc: BaseException | None) -> bool:
    """A load that failed only because it ran off the main thread (`signal.signal` at import)."""
    seen = 0
    while exc is not None and seen < 20:
        if isinstance(exc, ValueError) and "only works in main thread" in str(exc):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False

"""Stopping Python code that runs in another thread of this process, as coglet stops a predictor.

A cancel flag stops a predictor that looks at it (`progress()`, a token loop); one that never
looks (a plain `predict()` with a loop of its own, a busy loop) must be interrupted. coglet does
that with a signal in the predictor's process; in a kernel the predictor runs in a thread of the
kernel's process, so we use what Python offers for threads: `PyThreadState_SetAsyncExc` raises an
exception in a given thread at its next bytecode boundary.

What it cannot do: interrupt a C call. `time.sleep(60)` or one long matrix multiply finishes
first, and the exception lands when it returns. A predictor can also catch it and carry on. So
the model thread raises it again until the call ends or a deadline passes, and says so when it
could not (model_thread.ModelThread.stop).
"""
from __future__ import annotations

import asyncio
import ctypes
import threading

__all__ = ["stop_exception", "raise_in_thread", "clear_pending", "is_cancel"]

_stop_type: type[BaseException] | None = None


def stop_exception() -> type[BaseException]:
    """What is raised in a predictor that is stopped: cog's `CancelationException`, the one Cog
    raises in a sync predictor on cancel. A BaseException, so a predictor's `except Exception`
    does not swallow it, and a Cog model's own `except CancelationException:` cleanup runs here
    as it does under Cog."""
    global _stop_type
    if _stop_type is None:
        try:
            from cog import CancelationException

            _stop_type = CancelationException
        except ImportError:  # cog is a dependency; this only guards a broken install
            from replicate_jupyter.errors import Canceled

            _stop_type = Canceled
    return _stop_type


def raise_in_thread(ident: int, exc_type: type[BaseException]) -> bool:
    """Raise `exc_type` in thread `ident` at its next bytecode boundary; False if no such thread."""
    n = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(exc_type))
    if n > 1:  # cannot happen for one ident; undo rather than hit other threads
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), None)
        return False
    return n == 1


class _Drained(BaseException):
    """Raised into the calling thread by `clear_pending`, and caught there at once."""


def clear_pending(ident: int) -> None:
    """Drop a stop raised in thread `ident` that has not landed yet, so a stop aimed at a call
    that just ended never lands in the next one.

    Called by that thread itself (the model thread, on the way out of a call). Clearing with
    NULL (`PyThreadState_SetAsyncExc(ident, NULL)`) is not enough: CPython 3.11 keeps the
    interpreter's "async exception pending" signal set until some thread takes one, and with a
    profiler or tracer on (cProfile, a debugger, coverage) the main thread then spins at 100% CPU
    for ever. So the pending stop is replaced by `_Drained`, which lands here within a few
    bytecodes — taking it clears the signal — and is caught."""
    if ident != threading.get_ident():
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), None)
        return
    if ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(_Drained)) != 1:
        return
    try:
        for _ in range(10_000_000):  # the eval loop checks for it at every backward jump
            pass
    except _Drained:
        return
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), None)  # never seen: at least drop it


def is_cancel(exc: BaseException | None) -> bool:
    """Did this end a call because it was canceled: our `Canceled` (from `progress()`), cog's
    `CancelationException` (raised by a stop), `asyncio.CancelledError` (an async predictor's
    task canceled), or a KeyboardInterrupt."""
    if exc is None:
        return False
    from replicate_jupyter.errors import Canceled

    return isinstance(exc, (Canceled, KeyboardInterrupt, asyncio.CancelledError, stop_exception())) \
        or type(exc).__name__ == "CancelationException"

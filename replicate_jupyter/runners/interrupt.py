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


def clear_pending(ident: int) -> None:
    """Drop an exception raised in thread `ident` that has not landed yet (NULL clears it), so a
    stop aimed at a call that just ended never lands in the next one."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), None)


def is_cancel(exc: BaseException | None) -> bool:
    """Did this end a call because it was canceled: our `Canceled` (from `progress()`), cog's
    `CancelationException` (raised by a stop), `asyncio.CancelledError` (an async predictor's
    task canceled), or a KeyboardInterrupt."""
    if exc is None:
        return False
    from replicate_jupyter.errors import Canceled

    return isinstance(exc, (Canceled, KeyboardInterrupt, asyncio.CancelledError, stop_exception())) \
        or type(exc).__name__ == "CancelationException"

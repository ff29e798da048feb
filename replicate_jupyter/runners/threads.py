"""Background threads for predictions, kept and reused.

Starting a thread costs ~0.45 ms on these machines (`Thread.start()` waits until the new thread
has run), which was a quarter of a quick `rj.stream` on a worker's time to first token. Finished
threads wait here for the next prediction instead, and leave after a minute idle. They are
daemons, like the threads they replace, so a prediction that never ends never blocks the
kernel's exit.
"""
from __future__ import annotations

import queue
import threading
from typing import Any, Callable

__all__ = ["submit"]

_IDLE_SECONDS = 60.0

_lock = threading.Lock()
_tasks: queue.SimpleQueue = queue.SimpleQueue()
_idle = 0  # threads waiting for a task, minus tasks already promised to them


def submit(fn: Callable[..., Any], *args: Any) -> None:
    """Run `fn(*args)` on a background thread (an idle one if there is one). `fn` handles its
    own errors: whatever it raises is dropped, as a plain thread would print and drop it."""
    global _idle
    with _lock:
        if _idle > 0:
            _idle -= 1
            _tasks.put((fn, args))
            return
    threading.Thread(target=_work, args=(fn, args), name="rj-prediction", daemon=True).start()


def _work(fn: Callable[..., Any], args: tuple) -> None:
    global _idle
    while True:
        try:
            fn(*args)
        except BaseException:  # noqa: BLE001 — the prediction already recorded its failure
            pass
        fn = args = None  # type: ignore[assignment]  # hold nothing while idle
        with _lock:
            _idle += 1
        while True:
            try:
                fn, args = _tasks.get(timeout=_IDLE_SECONDS)
                break
            except queue.Empty:
                with _lock:
                    if _tasks.empty():  # nothing was promised to this thread: leave
                        _idle -= 1
                        return
                # a task is queued: for this thread or for another idle one; wait again

"""One thread per warm model: its setup and all its predictions run there, as under Cog.

Why: state a model sets up for its own thread holds only in that thread. Both embedded models
call `torch.set_grad_enabled(False)` in setup (many Cog models do; thread-local RNG seeds and
CUDA streams are the same), and when predictions ran in whichever thread asked — the cell's
main thread, a background thread of `--async`, a form or a sweep — autograd ran in every
background prediction (local/shapes: 0.57 s instead of 0.24 s). Cog runs a model's setup and
predictions in one worker; here that worker is a thread, and the asking thread hands the call
over and waits for it.

A sync model's thread serves a queue, one call at a time. An async model's thread runs an event
loop and each prediction is a task on it, several at once when the model declares concurrency,
as Cog runs them. A call runs in a `contextvars.Context` of its own (`context.fresh_context`), so
progress, previews and print capture reach its prediction also from coroutines.

Stopping (`stop`): an async task is canceled (`asyncio.CancelledError` at its next await, as Cog
does); a sync call gets cog's `CancelationException` raised in this thread (interrupt.py), again
every `interval` until it ends. A call that has not ended by the deadline is abandoned: the
thread is marked defunct (its model must not be used again) and left to finish on its own.
"""
from __future__ import annotations

import asyncio
import contextvars
import queue
import threading
import time
from typing import Any, Callable

from replicate_jupyter.runners import interrupt

__all__ = ["Call", "ModelThread", "current"]

_STOP = object()
_local = threading.local()


def current() -> "ModelThread | None":
    """The model thread the calling code runs on (None on any other thread)."""
    return getattr(_local, "thread", None)


def _create_task(loop: asyncio.AbstractEventLoop, coro_fn: Callable[[], Any]) -> asyncio.Task:
    return loop.create_task(coro_fn())


class Call:
    """One call handed to a model thread: its value or error, once it has ended."""

    __slots__ = ("fn", "context", "value", "error", "state", "task", "stop_requested", "_settled")

    def __init__(self, fn: Callable[[], Any], context: contextvars.Context) -> None:
        self.fn = fn
        self.context = context
        self.value: Any = None
        self.error: BaseException | None = None
        self.state = "queued"  # → running → done; or skipped (stopped before it ran), abandoned
        self.task: asyncio.Task | None = None
        self.stop_requested = False  # a stop was asked while it ran: its result is not a clean one
        self._settled = threading.Event()

    @property
    def settled(self) -> bool:
        """Ended, skipped or abandoned: nobody needs to wait for it any more."""
        return self._settled.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until settled. Interruptible: a kernel interrupt raises KeyboardInterrupt here."""
        return self._settled.wait(timeout)


class ModelThread:
    """The thread a model lives on. `submit` a sync function, `submit_async` a coroutine
    function (event-loop threads only); both return a `Call` to wait on."""

    def __init__(self, name: str, use_loop: bool = False) -> None:
        self.name = name
        self.use_loop = use_loop
        self.defunct = False  # a call could not be stopped: nothing more may run here
        self._lock = threading.Lock()
        self._running: Call | None = None  # the sync call executing now (the only target of a stop)
        self._raised = False  # a stop was raised into this thread during the current sync call
        self._tasks: set[Call] = set()  # async calls on the loop
        self._closed = False
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._loop = asyncio.new_event_loop() if use_loop else None
        self._thread = threading.Thread(target=self._main, name=f"rj-model {name}", daemon=True)
        self._thread.start()

    @property
    def ident(self) -> int:
        return self._thread.ident or 0

    @property
    def thread_name(self) -> str:
        return self._thread.name

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    # ----- handing calls over ---------------------------------------------------------------
    def submit(self, fn: Callable[[], Any], context: contextvars.Context | None = None) -> Call:
        """Run `fn()` on this thread, in `context` (a fresh one by default)."""
        call = Call(fn, context or contextvars.Context())
        if threading.get_ident() == self.ident:  # a predictor calling its own model: queuing would deadlock
            self._invoke(call)
        elif self._loop is not None:
            self._loop.call_soon_threadsafe(self._invoke, call)
        else:
            self._queue.put(call)
        return call

    def submit_async(self, coro_fn: Callable[[], Any], context: contextvars.Context | None = None) -> Call:
        """Run the coroutine `coro_fn()` as a task on this thread's loop, in `context`."""
        if self._loop is None:
            raise RuntimeError("submit_async needs a model thread made with use_loop=True")
        call = Call(coro_fn, context or contextvars.Context())
        self._loop.call_soon_threadsafe(self._start_task, call)
        return call

    def _invoke(self, call: Call) -> None:
        """Run one sync call, so that a stop raised into this thread lands in it and nowhere else:
        a stop is raised only while `_running` is this call, and on the way out any stop not yet
        landed is cleared under the same lock."""
        with self._lock:
            if call.state != "queued":
                return  # skipped by a stop before it ran
            call.state = "running"
            outer, self._running = self._running, call
        try:
            call.value = call.context.run(call.fn)
        except BaseException as exc:  # noqa: BLE001 — the caller classifies it
            call.error = exc
        while True:
            try:
                with self._lock:
                    self._running = outer
                    if self._raised:  # a stop raised while it ran may not have landed yet
                        self._raised = False
                        interrupt.clear_pending(self.ident)
                break
            except BaseException as late:  # a stop landed between the call's end and the lock
                if call.error is None:
                    call.value, call.error = None, late
        self._settle(call)

    def _start_task(self, call: Call) -> None:
        with self._lock:
            if call.state != "queued":
                return
            call.state = "running"
        try:
            # created inside the call's context, the task runs in (a copy of) it: create_task's
            # own context= argument is Python 3.11+
            call.task = call.context.run(_create_task, self._loop, call.fn)  # type: ignore[arg-type]
        except BaseException as exc:  # noqa: BLE001 — e.g. coro_fn raised before its first await
            call.error = exc
            self._settle(call)
            return
        self._tasks.add(call)
        call.task.add_done_callback(lambda task: self._task_done(call, task))

    def _task_done(self, call: Call, task: asyncio.Task) -> None:
        self._tasks.discard(call)
        if task.cancelled():
            call.error = asyncio.CancelledError()
        else:
            call.error = task.exception()
            if call.error is None:
                call.value = task.result()
        self._settle(call)
        if self.defunct and not self._tasks:
            self._loop.stop()  # type: ignore[union-attr]  # the stuck task ended: let the thread go

    def _settle(self, call: Call) -> None:
        with self._lock:
            if call.state != "abandoned":
                call.state = "done"
        call._settled.set()

    # ----- the thread ------------------------------------------------------------------------
    def _main(self) -> None:
        _local.thread = self
        if self._loop is not None:
            asyncio.set_event_loop(self._loop)
            while not self._closed and not self.defunct:
                try:
                    self._loop.run_forever()
                except BaseException:  # noqa: BLE001 — a stop that landed in the loop between tasks
                    continue
            try:
                self._loop.close()
            except Exception:  # tasks still pending on a defunct thread: left to the collector
                pass
            return
        while True:
            try:
                call = self._queue.get()
                if call is _STOP:
                    break
                self._invoke(call)
                call = None
                if self.defunct:
                    break
            except BaseException:  # noqa: BLE001 — a stray stop outside any call: keep serving
                continue
        self._drain()

    def _drain(self) -> None:
        """Settle what is still queued on a thread that stops: nothing will run it."""
        while True:
            try:
                call = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(call, Call):
                with self._lock:
                    call.state = "skipped"
                call.error = RuntimeError(f"model thread {self.name} stopped")
                call._settled.set()

    # ----- stopping ---------------------------------------------------------------------------
    def stop(self, call: Call, grace: float = 0.1, deadline: float = 3.0, interval: float = 0.1) -> bool:
        """Stop `call`. True when it ended (or had not started); False when it still runs
        `deadline` seconds after the first interrupt: it is then abandoned and this thread is
        defunct. Blocks while it tries: run it on a thread of its own."""
        stop = interrupt.stop_exception()
        with self._lock:
            if call.state == "queued":
                call.state = "skipped"
                call.error = stop()
                call._settled.set()
                return True
            if call.settled:
                return True
            call.stop_requested = True
        if self._loop is not None:
            self._post(self._cancel_task, call)
        if call.wait(grace):  # a predictor that looks at the cancel flag stops cleanly by itself
            return True
        end = time.monotonic() + deadline
        while True:
            self._interrupt(call, stop)
            if call.wait(interval):
                return True
            if time.monotonic() >= end:
                break
        with self._lock:
            if call.settled:
                return True
            call.state = "abandoned"
            self.defunct = True
        call._settled.set()
        return False

    def _cancel_task(self, call: Call) -> None:
        if call.task is not None and not call.task.done():
            call.task.cancel()

    def _interrupt(self, call: Call, stop: type[BaseException]) -> None:
        """Raise `stop` in this thread if it is running `call` right now."""
        with self._lock:
            if call.settled:
                return
            if self._running is call:  # a sync call (also setup or teardown on a loop thread)
                self._raised = True
                interrupt.raise_in_thread(self.ident, stop)
                return
        if call.task is None or self._loop is None:
            return
        # an async call: cancel its task again (it may have caught the CancelledError); if the
        # loop is stuck inside this very task (a busy coroutine never awaits), raise in the thread
        self._post(self._cancel_task, call)
        try:
            running_task = asyncio.current_task(self._loop)
        except RuntimeError:
            running_task = None
        if running_task is not None and running_task is call.task:
            interrupt.raise_in_thread(self.ident, stop)

    def close(self, final: Callable[[], Any] | None = None, timeout: float | None = 30.0) -> None:
        """Run `final()` here (a teardown), then let the thread end. A defunct thread is left to
        its stuck call: it ends by itself once that call returns."""
        if self._closed:
            return
        if final is not None and not self.defunct:
            call = self.submit(final)
            call.wait(timeout)
        self._closed = True
        if self._loop is not None:
            self._post(self._loop.stop)
        else:
            self._queue.put(_STOP)

    def _post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Schedule `fn(*args)` on the loop; nothing if the loop is already closed."""
        try:
            self._loop.call_soon_threadsafe(fn, *args)  # type: ignore[union-attr]
        except RuntimeError:
            pass

"""The actor side of the `ray` backend: one `ModelActor` per model, living on a Ray worker.

The actor loads the predictor from its reference on the worker (a file path on a shared
filesystem, an embedded `local/…` model, `hf:…`, or a pickled class), sets it up once, and
serves predictions as *streaming generator* calls: every event of a run (Started, Log, Output,
Progress, Preview, Metric, Completed) is one yielded item, so the driver sees tokens and steps
as they happen.

The model lives on a thread of its own (runners/model_thread.py), as under Cog and on the local
backend: its setup and every prediction run there, whichever of Ray's threads serves the call,
so what setup set for its thread (`torch.set_grad_enabled(False)`, thread-local state, CUDA
streams) holds in every prediction. A prediction is one call handed to that thread through the
local backend's own steps (runners/warm.py: setup with `weights=`, arguments typed as Cog
passes them, each prediction inside its `cog.current_scope()`); the generator yields the events
the call emits while it waits for it. Cancel — the actor's `cancel()` or `ray.cancel` on the
stream, seen within 0.1 s — stops the call at its next `progress()`, else raises cog's
`CancelationException` in the model thread (asyncio's cancel for async predictors); a
predictor that still does not stop is abandoned and its model set up afresh next time. A model
that declares batching runs its concurrent predictions as batches instead (ray/batched.py).

This module imports ray only when `ModelActor` is built (`actor_class()`), so it can be read
(and `ModelCore` tested) without Ray.
"""
from __future__ import annotations

import contextlib
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from replicate_jupyter.model import predictors
from replicate_jupyter.model.arguments import call_arguments
from replicate_jupyter.prediction.events import Completed, Log, Started
from replicate_jupyter.runners import devices
from replicate_jupyter.runners import warm as warm_mod
from replicate_jupyter.runners.context import RunContext, fresh_context
from replicate_jupyter.runners.interrupt import is_cancel
from replicate_jupyter.runners.invoke import model_traceback, preview_throttle
from replicate_jupyter.runners.model_thread import Call, ModelThread
from replicate_jupyter.runners.ray import batched
from replicate_jupyter.runners.slots import is_async_callable
from replicate_jupyter.serve.batched import BatchHost, batching_info

__all__ = ["ModelCore", "actor_class"]

NOTE = "[replicate-jupyter] "
#: how often a waiting prediction looks at Ray's cancel flag (`is_canceled`)
_CHECK_EVERY = 0.1


@dataclass
class _Flight:
    """One run on the actor: the call it waits for now (setup, then the prediction) and where it runs."""

    pid: str
    metrics: dict[str, Any]
    cancel: threading.Event
    call: Call | None = None  # set while a call's outcome has not been taken
    thread: ModelThread | None = None
    kind: str = ""  # "setup" | "predict"
    is_async: bool = False
    t0: float = 0.0
    cancel_note: str = ""


@dataclass
class _Model:
    """The set-up predictor and the thread it lives on."""

    thread: ModelThread
    call: Any  # the bound predict/run method
    is_async: bool


class ModelCore:
    """Everything the actor does, without Ray: load, set up once on the model's thread, run one
    prediction at a time there as a stream of events, honour a cancel. `ModelActor` is this
    class wrapped by Ray."""

    def __init__(self, ref: Any, name: str | None = None, hardware: str | None = None,
                 preview_rate: float = 4.0, cancel_grace: float = 0.1, cancel_deadline: float = 3.0) -> None:
        self.ref = ref
        self.name = name
        self.hardware_override = hardware
        self.preview_rate = preview_rate
        self.cancel_grace = cancel_grace
        self.cancel_deadline = cancel_deadline
        self.spec = predictors.load(ref, name)
        self.host = BatchHost(self.spec, preview_rate=preview_rate) if batching_info(self.spec) else None
        self.model: _Model | None = None
        self.setup_time: float | None = None
        self._run_lock = threading.Lock()  # one prediction (or setup) at a time: one instance, one device
        self._cancels: dict[str, threading.Event] = {}
        self._results: dict[str, dict] = {}
        self._finished: dict[str, threading.Event] = {}
        self.running: str | None = None
        self.served = 0

    # ----- control (called concurrently with a running stream) -----------------------------------
    def info(self) -> dict[str, Any]:
        """Where this actor lives and what it holds: shown by `models()`, named in failures."""
        ready = self.model is not None if self.host is None else self.host.ready
        info = {"pid": os.getpid(), "name": self.spec.name, "version": self.spec.version, "ready": ready,
                "setup_time": self.setup_time, "running": self.running, "served": self.served, "hardware": self.hardware(),
                "model_thread": self.model.thread.thread_name if self.model is not None else None}
        ray = sys.modules.get("ray")  # outside an actor (ModelCore alone): asking Ray would start one
        if ray is None or not ray.is_initialized():
            return info
        try:
            ctx = ray.get_runtime_context()
            info["node_id"] = ctx.get_node_id()
            info["actor_id"] = ctx.get_actor_id()
            info["node_ip"] = ray.util.get_node_ip_address()
        except Exception:
            pass
        return info

    def describe(self) -> dict[str, Any]:
        return {"name": self.spec.name, "version": self.spec.version, "schema": self.spec.schema}

    def pid(self) -> int:
        return os.getpid()

    def hardware(self) -> str:
        return self.hardware_override or devices.current_sku()

    def cancel(self, prediction_id: str) -> bool:
        """Set the prediction's cancel flag: its call is stopped (see the module docstring).
        Works before the run started too."""
        self._cancels.setdefault(prediction_id, threading.Event()).set()
        return prediction_id == self.running

    def result(self, prediction_id: str, timeout: float = 5.0) -> dict | None:
        """The final metrics of a run once its call has ended (after `ray.cancel` cut the
        stream, the driver asks here for the predict_time measured on this side)."""
        done = self._finished.setdefault(prediction_id, threading.Event())
        if not done.wait(timeout):
            return None
        self._finished.pop(prediction_id, None)
        return self._results.pop(prediction_id, None)

    def warm(self) -> float | None:
        """Set the model up now (before its first prediction): the seconds it took, None if it already was."""
        if self.host is not None:
            return self.host.setup()
        with self._run_lock:
            if self._ready():
                return None
            flight = _Flight("warm", {}, threading.Event())
            self._start_setup(flight, queue.SimpleQueue())
            flight.call.wait()  # type: ignore[union-attr]
            failed = self._setup_done(flight)
            if failed is not None:
                raise RuntimeError(failed.error)
            return self.setup_time

    # ----- running ---------------------------------------------------------------------------
    def predict(self, prediction_id: str, inputs: dict[str, Any],
                is_canceled: Callable[[], bool] | None = None) -> Iterator[Any]:
        """Run one prediction; yield its events, ending with exactly one Completed.
        `is_canceled` is Ray's `runtime_context.is_canceled` (set by `ray.cancel`). When the
        stream is closed while a call runs (`ray.cancel`, the driver gone), the call is stopped
        and finished off the stream, its result kept for `result()`."""
        cancel = self._cancels.setdefault(prediction_id, threading.Event())
        finished = self._finished.setdefault(prediction_id, threading.Event())
        canceled = _watch(cancel, is_canceled)
        if self.host is not None:  # batchable: members arriving together run as one batch (ray/batched.py)
            yield from batched.stream(self, prediction_id, inputs, canceled, cancel)
            return
        flight = _Flight(prediction_id, {"hardware": self.hardware()}, cancel)
        delivered = got = False
        try:
            while not (got := self._run_lock.acquire(timeout=_CHECK_EVERY)) and not canceled():
                pass
            if not got or cancel.is_set():
                yield self._finish(prediction_id, Completed(status="canceled", metrics=dict(flight.metrics, predict_time=0.0)))
                delivered = True
                return
            self.running = prediction_id
            events: queue.SimpleQueue = queue.SimpleQueue()
            if not self._ready():
                self._start_setup(flight, events)
                yield from self._follow(flight, events, canceled)
                failed = self._setup_done(flight)
                if failed is not None:
                    yield self._finish(prediction_id, failed)
                    delivered = True
                    return
                flight.metrics["setup_time"] = round(self.setup_time or 0.0, 4)
            yield Started(hardware=flight.metrics["hardware"])
            failed = self._start_predict(flight, inputs, events)
            if failed is None:
                yield from self._follow(flight, events, canceled)
                failed = self._predict_done(flight)
                if flight.cancel_note:
                    yield Log(text=flight.cancel_note)
            yield self._finish(prediction_id, failed)
            delivered = True
        finally:
            cancel.set()  # the stream is gone (ended, canceled, consumer lost): nothing more runs for it
            if got and flight.call is not None:  # closed mid-call: stopped and recorded off the stream
                threading.Thread(target=self._finish_off, args=(flight,), name=f"rj-ray-finish {prediction_id}",
                                 daemon=True).start()
            else:
                self._release(prediction_id, got, delivered, finished)

    def _ready(self) -> bool:
        return self.model is not None and not self.model.thread.defunct

    def _release(self, pid: str, got: bool, delivered: bool, finished: threading.Event) -> None:
        """The run is over: the next may start; `result()` may answer (nobody asks when it was delivered)."""
        if got:
            self.running = None
            self.served += 1
            self._run_lock.release()
        self._cancels.pop(pid, None)
        finished.set()
        if delivered:
            self._finished.pop(pid, None)
            self._results.pop(pid, None)

    def _finish_off(self, flight: _Flight) -> None:
        """The stream of a run was closed while its call ran: stop the call, record its outcome."""
        try:
            call, thread = flight.call, flight.thread
            if call is not None and thread is not None and not call.settled:
                thread.stop(call, grace=self.cancel_grace, deadline=self.cancel_deadline)
            if flight.kind == "setup":
                self._finish(flight.pid, self._setup_done(flight)
                             or Completed(status="canceled", metrics=dict(flight.metrics, predict_time=0.0)))
            else:
                self._finish(flight.pid, self._predict_done(flight))
        finally:
            self._release(flight.pid, True, False, self._finished.setdefault(flight.pid, threading.Event()))

    def _start_setup(self, flight: _Flight, events: queue.SimpleQueue) -> None:
        """Make the predictor and set it up, on a new model thread; its prints become Logs."""
        spec = self.spec
        is_async = is_async_callable(predictors.predict_method(spec.instance if spec.instance is not None else spec.cls))
        thread, call = warm_mod.start_setup(spec, is_async, lambda s: events.put(Log(text=s)))
        flight.kind, flight.thread, flight.call, flight.is_async = "setup", thread, call, is_async

    def _setup_done(self, flight: _Flight) -> Completed | None:
        """The model, kept when setup succeeded (None); else the Completed that says why not."""
        call, thread = flight.call, flight.thread
        assert call is not None and thread is not None
        flight.call = None
        exc = call.error
        if exc is not None or call.state == "abandoned":
            thread.close()
            if exc is None or is_cancel(exc):
                return Completed(status="canceled", error="canceled during setup", metrics=flight.metrics)
            return Completed(status="failed", error=f"setup failed: {exc!r}", traceback=model_traceback(exc),
                             metrics=flight.metrics)
        instance, self.setup_time, _size = call.value
        self.model = _Model(thread=thread, call=predictors.predict_method(instance), is_async=flight.is_async)
        return None

    def _start_predict(self, flight: _Flight, inputs: dict, events: queue.SimpleQueue) -> Completed | None:
        """Hand the prediction to the model thread (None), or the Completed of inputs that cannot be passed."""
        model = self.model
        assert model is not None
        emit, cancel = events.put, flight.cancel
        ctx = RunContext(emit=emit, cancel_event=cancel, wants_preview=preview_throttle(self.preview_rate))
        context = fresh_context(ctx, sink=lambda s: emit(Log(text=s)))
        flight.t0 = time.perf_counter()
        try:
            kwargs = call_arguments(model.call, inputs)  # typed as Cog passes them (cog.File, Path, Secret)
        except Exception as exc:  # noqa: BLE001 — e.g. a file input that cannot be read here
            return Completed(status="failed", error=f"{type(exc).__name__}: {exc}",
                             metrics=dict(flight.metrics, predict_time=0.0))
        if model.is_async:
            call = model.thread.submit_async(lambda: warm_mod.apredict(model.call, kwargs, emit, cancel), context)
        else:
            call = model.thread.submit(lambda: warm_mod.predict(model.call, kwargs, emit, cancel), context)
        flight.kind, flight.thread, flight.call = "predict", model.thread, call
        return None

    def _predict_done(self, flight: _Flight) -> Completed:
        """The Completed of a prediction call that has ended."""
        call, thread = flight.call, flight.thread
        assert call is not None and thread is not None
        flight.call = None
        metrics = dict(flight.metrics, predict_time=round(time.perf_counter() - flight.t0, 6))
        failure, call.error = call.error, None  # taken off the call: its frames go with this function
        status, error, trace = "succeeded", None, None
        if call.state == "abandoned":
            self.model = None  # its thread is stuck in the old call: the next prediction sets up again
            flight.cancel_note = (f"{NOTE}the predictor did not stop within {self.cancel_deadline:g} s of the cancel; "
                                  f"it is still running in thread {thread.thread_name!r}. The model is set up again "
                                  "for the next prediction.\n")
            status = "canceled"
        elif is_cancel(failure) or (failure is None and call.stop_requested):
            status = "canceled"
        elif failure is not None:
            status, error, trace = "failed", f"{type(failure).__name__}: {failure}", model_traceback(failure)
        failure = None
        return Completed(status=status, error=error, traceback=trace, metrics=metrics)

    def _follow(self, flight: _Flight, events: queue.SimpleQueue, canceled: Callable[[], bool]) -> Iterator[Any]:
        """Yield what the current call emits until it has ended (and everything it emitted
        before); a cancel meanwhile stops it, from a helper thread (a stop blocks while it tries)."""
        call, thread = flight.call, flight.thread
        assert call is not None and thread is not None
        stopping = False
        while True:
            settled = call.settled  # read before the queue: settled and then empty means all was yielded
            try:
                yield events.get(timeout=0 if settled else _CHECK_EVERY)
            except queue.Empty:
                if settled:
                    return
            if not settled and not stopping and canceled():
                stopping = True
                threading.Thread(target=thread.stop, args=(call,), name=f"rj-ray-stop {thread.name}", daemon=True,
                                 kwargs={"grace": self.cancel_grace, "deadline": self.cancel_deadline}).start()

    def _finish(self, pid: str, done: Completed) -> Completed:
        self._results[pid] = {"status": done.status, "metrics": dict(done.metrics)}
        return done


def _watch(cancel: threading.Event, is_canceled: Callable[[], bool] | None) -> Callable[[], bool]:
    """Whether the run is canceled: its flag, or Ray's `is_canceled` (asked at most every 0.1 s,
    and remembered in the flag)."""
    last = [0.0]

    def canceled() -> bool:
        if cancel.is_set():
            return True
        now = time.monotonic()
        if is_canceled is not None and now - last[0] >= _CHECK_EVERY:
            last[0] = now
            with contextlib.suppress(Exception):
                if is_canceled():
                    cancel.set()
        return cancel.is_set()

    return canceled


_actor_class = None


def actor_class():
    """`ModelActor`: ModelCore as a threaded Ray actor. Two concurrency groups, so control calls
    (cancel, info, result) are served while every predict call is busy or queued."""
    global _actor_class
    if _actor_class is not None:
        return _actor_class
    import ray

    class ModelActor:
        def __init__(self, ref: Any, name: str | None = None, hardware: str | None = None,
                     preview_rate: float = 4.0) -> None:
            self.core = ModelCore(ref, name, hardware, preview_rate)

        @ray.method(concurrency_group="control")
        def info(self) -> dict:
            return self.core.info()

        @ray.method(concurrency_group="control")
        def describe(self) -> dict:
            return self.core.describe()

        @ray.method(concurrency_group="control")
        def pid(self) -> int:
            return self.core.pid()

        @ray.method(concurrency_group="control")
        def cancel(self, prediction_id: str) -> bool:
            return self.core.cancel(prediction_id)

        @ray.method(concurrency_group="control")
        def result(self, prediction_id: str, timeout: float = 5.0) -> dict | None:
            return self.core.result(prediction_id, timeout)

        @ray.method(concurrency_group="predict")
        def warm(self) -> float | None:
            """Set up now (before the first prediction), e.g. to pre-load a model."""
            return self.core.warm()

        # Never retried by Ray: a re-run would splice a second run's events after the first's.
        # The driver retries a run itself when nothing had started (ray/runner.py).
        @ray.method(concurrency_group="predict", num_returns="streaming", max_task_retries=0)
        def predict(self, prediction_id: str, inputs: dict):
            ctx = ray.get_runtime_context()
            yield from self.core.predict(prediction_id, inputs, is_canceled=ctx.is_canceled)

    _actor_class = ModelActor
    return ModelActor

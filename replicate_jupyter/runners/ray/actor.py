"""The actor side of the `ray` backend: one `ModelActor` per model, living on a Ray worker.

The actor loads the predictor from its reference on the worker (a file path on a shared
filesystem, an embedded `local/…` model, `hf:…`, or a pickled class), runs `setup()` once, and
serves predictions as *streaming generator* calls: every event of a run (Started, Log, Output,
Progress, Preview, Completed) is one yielded item, so the driver sees tokens and steps as they
happen. The predictor runs on its own thread, pushing events into a queue the generator drains,
because a predictor that returns one value only reports its steps through `progress()` calls
made while `predict()` is still running.

This module imports ray only when `ModelActor` is built (`actor_class()`), so it can be read
(and its plain helpers tested) without Ray.
"""
from __future__ import annotations

import inspect
import os
import queue
import threading
import time
from typing import Any, Iterator

from replicate_jupyter.errors import Canceled
from replicate_jupyter.model import predictors
from replicate_jupyter.prediction.events import Completed, Log, Started
from replicate_jupyter.runners import devices
from replicate_jupyter.runners.capture import capture
from replicate_jupyter.runners.context import RunContext, activate
from replicate_jupyter.runners.invoke import (
    build_kwargs,
    call_and_emit,
    call_params,
    model_traceback,
    preview_throttle,
    run_coroutine,
)

__all__ = ["ModelCore", "actor_class"]

_END = object()


class ModelCore:
    """Everything the actor does, without Ray: load, set up once, run one prediction at a time
    as a stream of events, honour a cancel flag. `ModelActor` is this class wrapped by Ray."""

    def __init__(self, ref: Any, name: str | None = None, hardware: str | None = None,
                 preview_rate: float = 4.0) -> None:
        self.ref = ref
        self.name = name
        self.hardware_override = hardware
        self.preview_rate = preview_rate
        self.spec = predictors.load(ref, name)
        self.instance: Any = None
        self.call: Any = None
        self.params: dict[str, Any] = {}
        self.setup_time: float | None = None
        self._setup_lock = threading.Lock()
        self._run_lock = threading.Lock()
        self._cancels: dict[str, threading.Event] = {}
        self._results: dict[str, dict] = {}
        self._finished: dict[str, threading.Event] = {}
        self.running: str | None = None
        self.served = 0

    # ----- control (called concurrently with a running stream) -----------------------------------
    def info(self) -> dict[str, Any]:
        """Where this actor lives and what it holds: shown by `models()`, named in failures."""
        info = {"pid": os.getpid(), "name": self.spec.name, "version": self.spec.version,
                "ready": self.instance is not None, "setup_time": self.setup_time, "running": self.running,
                "served": self.served, "hardware": self.hardware()}
        try:
            import ray

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
        """Set the prediction's cancel flag: `progress()` raises Canceled at the next step and an
        iterator stops after its current item. Works before the run started too."""
        self._cancels.setdefault(prediction_id, threading.Event()).set()
        return prediction_id == self.running

    def result(self, prediction_id: str, timeout: float = 5.0) -> dict | None:
        """The final metrics of a run once its thread has stopped (after `ray.cancel` cut the
        stream, the driver asks here for the predict_time measured on this side)."""
        done = self._finished.setdefault(prediction_id, threading.Event())
        if not done.wait(timeout):
            return None
        self._finished.pop(prediction_id, None)
        return self._results.pop(prediction_id, None)

    # ----- running ---------------------------------------------------------------------------
    def _ensure_setup(self, emit) -> float | None:
        """Set the predictor up once; the seconds it took when this call did it, else None."""
        with self._setup_lock:
            if self.instance is not None:
                return None
            t0 = time.perf_counter()
            instance = self.spec.make()
            setup = getattr(instance, "setup", None)
            if setup is not None:
                with capture(lambda s: emit(Log(text=s))):
                    result = setup()
                    if inspect.iscoroutine(result):
                        run_coroutine(result)
            devices.synchronize()
            self.setup_time = time.perf_counter() - t0
            self.call = predictors.predict_method(instance)
            self.params = call_params(self.call)
            self.instance = instance
            return self.setup_time

    def predict(self, prediction_id: str, inputs: dict[str, Any], secret_fields: frozenset = frozenset(),
                is_canceled: Any = None) -> Iterator[Any]:
        """Run one prediction; yield its events, ending with exactly one Completed.
        `is_canceled` is Ray's `runtime_context.is_canceled` (set by `ray.cancel`)."""
        q: queue.Queue = queue.Queue()
        cancel = self._cancels.setdefault(prediction_id, threading.Event())
        finished = self._finished.setdefault(prediction_id, threading.Event())
        worker = threading.Thread(target=self._work, args=(prediction_id, inputs, secret_fields, q, cancel, finished),
                                  name=f"rj-ray-predict-{prediction_id}", daemon=True)
        worker.start()
        checked = time.monotonic()
        try:
            while True:
                try:
                    item = q.get(timeout=0.1)
                except queue.Empty:
                    item = None
                now = time.monotonic()
                if is_canceled is not None and not cancel.is_set() and (item is None or now - checked >= 0.1):
                    checked = now  # ray.cancel on this stream: seen here within 0.1 s, busy or not
                    try:
                        if is_canceled():
                            cancel.set()
                    except Exception:
                        pass
                if item is None:
                    continue
                if item is _END:
                    self._finished.pop(prediction_id, None)  # delivered in full: nobody asks result()
                    self._results.pop(prediction_id, None)
                    return
                yield item
        finally:
            cancel.set()  # the stream is gone (canceled, consumer lost): stop the predictor too
            self._cancels.pop(prediction_id, None)

    def _work(self, pid: str, inputs: dict, secret_fields: frozenset, q: queue.Queue,
              cancel: threading.Event, finished: threading.Event) -> None:
        emit = q.put
        metrics: dict[str, Any] = {"hardware": self.hardware()}
        try:
            with self._run_lock:  # one prediction at a time per actor (one device, one instance)
                self.running = pid
                try:
                    if cancel.is_set():
                        metrics["predict_time"] = 0.0
                        self._finish(pid, emit, Completed(status="canceled", metrics=metrics))
                        return
                    try:
                        setup_time = self._ensure_setup(emit)
                    except BaseException as exc:  # noqa: BLE001 — the model's own error
                        self._finish(pid, emit, Completed(status="failed", error=f"setup failed: {exc!r}",
                                                          traceback=model_traceback(exc), metrics=metrics))
                        return
                    if setup_time is not None:
                        metrics["setup_time"] = round(setup_time, 4)
                    emit(Started(hardware=metrics["hardware"]))
                    self._predict(pid, inputs, secret_fields, emit, cancel, metrics)
                finally:
                    self.running = None
                    self.served += 1
        finally:
            finished.set()
            q.put(_END)

    def _finish(self, pid: str, emit, done: Completed) -> None:
        self._results[pid] = {"status": done.status, "metrics": dict(done.metrics)}
        emit(done)

    def _predict(self, pid: str, inputs: dict, secret_fields: frozenset, emit, cancel: threading.Event,
                 metrics: dict) -> None:
        kwargs = build_kwargs(self.params, self.call, inputs, secret_fields)
        ctx = RunContext(emit=emit, cancel_event=cancel, wants_preview=preview_throttle(self.preview_rate))
        t0 = time.perf_counter()
        prev = activate(ctx)
        try:
            with capture(lambda s: emit(Log(text=s))):
                call_and_emit(self.call, kwargs, emit, cancel)
            devices.synchronize()
            status, error, trace = "succeeded", None, None
        except Canceled:
            status, error, trace = "canceled", None, None
        except BaseException as exc:  # noqa: BLE001
            if type(exc).__name__ == "CancelationException":
                status, error, trace = "canceled", None, None
            else:
                status, error, trace = "failed", f"{type(exc).__name__}: {exc}", model_traceback(exc)
        finally:
            activate(prev)
        metrics["predict_time"] = round(time.perf_counter() - t0, 6)
        self._finish(pid, emit, Completed(status=status, error=error, traceback=trace, metrics=metrics))


_actor_class = None


def actor_class():
    """`ModelActor`: ModelCore as a threaded Ray actor. Two concurrency groups, so control calls
    (cancel, info, result) are served while every predict thread is busy or queued."""
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
            return self.core._ensure_setup(lambda _e: None)

        # Never retried by Ray: a re-run would splice a second run's events after the first's.
        # The driver retries a run itself when nothing had started (runners/ray.py).
        @ray.method(concurrency_group="predict", num_returns="streaming", max_task_retries=0)
        def predict(self, prediction_id: str, inputs: dict, secret_fields: frozenset = frozenset()):
            ctx = ray.get_runtime_context()
            yield from self.core.predict(prediction_id, inputs, secret_fields, is_canceled=ctx.is_canceled)

    _actor_class = ModelActor
    return ModelActor

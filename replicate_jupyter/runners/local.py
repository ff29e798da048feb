"""The kernel-side runner: predictors run in this process, on CUDA, else MPS, else CPU.

Set-up predictors stay warm between cells in an LRU cache bounded by a device-memory budget,
because setup (loading weights) is usually the slowest part of a notebook iteration.

Each warm model lives on a thread of its own (model_thread.py): its setup and every prediction
of it run there, whichever thread asked (the cell's main thread, `--async`, forms, sweeps,
`predictions.create`), so what setup set for its thread holds in every prediction, as under
Cog. The asking thread waits; a kernel interrupt while it waits stops the prediction, records it
canceled and propagates. A setup is never stopped (it may be inside an import: setups.py): a
cancel or an interrupt leaves it to finish for the next run. A cancel from anywhere stops it at its next step, or by raising cog's
`CancelationException` in the model thread (asyncio.CancelledError for async predictors); one
that cannot be stopped within `cancel_deadline` is reported canceled with a log line saying so,
and its model is evicted. Predictions of different models take turns on the device; one model
runs as many at once as it declares (slots.py), the rest wait in `starting`. Predictions of a
model that declares batching (model/batching.py) and arrive together — a sweep, a form clicked
again and again, `asyncio.gather` — run as one batch (batching.py): `batch_window` seconds of
quiet close a batch, at most `max_batch` in one.
"""
from __future__ import annotations

import functools
import os
import threading
import time
from collections import OrderedDict
from typing import Any

from replicate_jupyter.model import batching as batch_rules
from replicate_jupyter.model import predictors
from replicate_jupyter.model.arguments import call_arguments
from replicate_jupyter.prediction.events import Completed, Log, Output, Started
from replicate_jupyter.runners import devices, model_thread
from replicate_jupyter.runners import warm as warm_mod
from replicate_jupyter.runners.base import ModelHandle, Runner
from replicate_jupyter.runners.batching import Batcher
from replicate_jupyter.runners.context import RunContext, fresh_context
from replicate_jupyter.runners.interrupt import is_cancel
from replicate_jupyter.runners.invoke import (
    is_oom,
    model_traceback,
    preview_throttle,
)
from replicate_jupyter.runners.model_thread import Call, ModelThread
from replicate_jupyter.runners.setups import Setups
from replicate_jupyter.runners.slots import Slots, declared_concurrency, is_async_callable
from replicate_jupyter.runners.warm import Outcome, Warm

__all__ = ["LocalRunner"]


class LocalRunner(Runner):
    name = "local"
    concurrent = True  # sweeps start every prediction at once: slots queue them, batches gather them

    def __init__(self, memory_budget: int | None = None, preview_rate: float = 4.0,
                 cancel_deadline: float = 3.0, cancel_grace: float = 0.1,
                 max_concurrency: int | None = None, max_warm: int = 16, batching: bool = True,
                 batch_window: float = 0.01, batch_max_wait: float = 0.1, max_batch: int | None = None) -> None:
        self.memory_budget = memory_budget
        self.preview_rate = preview_rate
        #: at most this many predictions of one model at once, whatever it declares (None: as declared)
        self.max_concurrency = max_concurrency
        #: at most this many warm models (each holds a thread), however little memory they use
        self.max_warm = max_warm
        #: seconds after the first interrupt before a predictor that does not stop is given up on
        self.cancel_deadline = cancel_deadline
        #: seconds a canceled predictor gets to stop by itself (at its next progress()) first
        self.cancel_grace = cancel_grace
        #: batch predictions of models that declare batching; a batch closes after `batch_window`
        #: seconds with no new arrival (`batch_max_wait` after its first at most), ≤ `max_batch`
        self.batching, self.batch_window, self.batch_max_wait = batching, batch_window, batch_max_wait
        self.max_batch = max_batch
        self._batcher = Batcher(self)
        self._warm: "OrderedDict[str, Warm]" = OrderedDict()
        self._cache_lock = threading.RLock()  # the warm cache, and one setup at a time
        self._setups = Setups(self._cache_lock, self._install)  # setups no run waits for any more
        self._slots = Slots()
        self._calls: dict[str, tuple[Any, ModelThread, Call]] = {}  # prediction id → what runs for it
        self._stopping: set[int] = set()
        self.evictions: list[str] = []
        self._cog: Any = None  # CogProcesses, made when the first folder model runs

    # ----- models --------------------------------------------------------------------------
    def resolve(self, ref: Any) -> ModelHandle:
        spec = predictors.load(ref)
        return ModelHandle(name=spec.name, version=spec.version, schema=spec.schema, extra={"spec": spec})

    def models(self) -> list[ModelHandle]:
        from replicate_jupyter.models import DESCRIPTIONS, EMBEDDED

        out = []
        for name in predictors.known_names():
            note = predictors.needs_extra(name)  # the base install: "needs the [local] extra: pip install …"
            out.append(ModelHandle(name=name, version=None, schema={},
                                   description=" · ".join(filter(None, [DESCRIPTIONS.get(name, ""), note])),
                                   extra={"warm": any(k.endswith(name) for k in self._warm), "source": EMBEDDED.get(name),
                                          "needs_extra": note}))
        return out

    def concurrency(self, handle: ModelHandle) -> int:
        """How many predictions of this model run at once here (its `@cog.concurrent(max=N)` or
        cog.yaml `concurrency.max`; 1 for sync models): a sweep or form can start that many."""
        spec = handle.extra["spec"]
        return self._limit(spec, _predict_fn(spec))

    def _limit(self, spec: predictors.PredictorSpec, fn: Any) -> int:
        """The model's declared concurrency (the loader's reading of cog.yaml/@cog.concurrent,
        else our own), 1 for sync models, capped by `max_concurrency`."""
        declared = getattr(spec, "concurrency", None)
        if declared is None or not is_async_callable(fn):
            declared = declared_concurrency(fn, spec.source)
        declared = max(1, int(declared))
        return min(declared, self.max_concurrency) if self.max_concurrency else declared

    @property
    def warm(self) -> list[str]:
        return list(self._warm)

    # ----- warm cache ----------------------------------------------------------------------
    def _budget(self) -> int:
        if self.memory_budget is not None:
            return self.memory_budget
        total = devices.total_memory()
        if total:
            return int(total * 0.85)
        try:
            return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 0.5)
        except (ValueError, OSError):
            return 8 << 30

    def _acquire(self, p, spec: predictors.PredictorSpec, is_async: bool) -> tuple[Warm | None, Outcome | None]:
        """The warm model, set up on a new model thread if need be (or by the setup an earlier
        run left going); or the outcome of a failed or canceled setup. A cancel or an interrupt
        during setup cancels `p` and leaves the setup to finish in the background (setups.py)."""
        with self._cache_lock:
            warm = self._warm.get(spec.key)
            if warm is not None and not warm.thread.defunct:
                self._warm.move_to_end(spec.key)
                return warm, None
            left = self._setups.take(spec.key)
            if left is not None:
                thread, call = left
            else:
                if spec.replaces and spec.replaces in self._warm:  # edited: the old code's instance goes first
                    self.evict(spec.replaces)
                thread, call = warm_mod.start_setup(spec, is_async, lambda s: p.emit(Log(text=s)))
            interrupt = self._setups.wait(p, call)
            if interrupt is not None or not call.settled:
                self._setups.leave(spec.key, thread, call, is_async)
                why = "interrupted" if interrupt is not None else (p.cancel_reason or "canceled")
                return None, Outcome(status="canceled", interrupt=interrupt, error=(
                    f"{why} while loading {spec.name}; it goes on loading in the background, and the next run uses it"))
            outcome = self._outcome(p, thread, call, None, emitted=False)
            if outcome is not None:
                if outcome.status == "failed":
                    outcome.error = f"setup failed: {outcome.error}"
                elif outcome.status == "canceled":
                    outcome.error = p.cancel_reason or "canceled during setup"
                thread.close()
                return None, outcome
            return self._install(spec.key, thread, call, is_async), None

    def _install(self, key: str, thread: ModelThread, call: Call, is_async: bool) -> Warm:
        """A finished setup's model into the warm cache (under the cache lock)."""
        instance, setup_time, size = call.value
        call.value = None
        warm = Warm(instance=instance, size=int(size), setup_time=setup_time, call=predictors.predict_method(instance),
                    thread=thread, is_async=is_async)
        self._warm[key] = warm
        self._evict_to_budget(keep=key)
        return warm

    def _evict_to_budget(self, keep: str) -> None:
        budget = self._budget()
        while len(self._warm) > 1 and (sum(w.size for w in self._warm.values()) > budget
                                       or len(self._warm) > max(1, self.max_warm)):
            oldest = next(k for k in self._warm if k != keep)
            self.evict(oldest)

    def evict(self, key: str | None = None) -> None:
        """Drop a warm predictor (all of them with no key) and give its device memory back. Its
        teardown runs on its own thread, after any call still running there."""
        with self._cache_lock:
            self._setups.drop(key)
            keys = [key] if key else list(self._warm)
            for k in keys:
                warm = self._warm.pop(k, None)
                if warm is None:
                    continue
                self.evictions.append(k)
                instance, warm.instance = warm.instance, None
                warm.thread.close(final=functools.partial(warm_mod.release, instance))
                del instance, warm
        if self._cog is not None:
            self._cog.evict(key)
        devices.free_device_memory()

    def _drop_defunct(self, thread: ModelThread) -> None:
        """A model whose predictor would not stop: out of the cache, so nothing runs on it again."""
        with self._cache_lock:
            for k, w in list(self._warm.items()):
                if w.thread is thread:
                    del self._warm[k]
                    self.evictions.append(k)

    # ----- running -------------------------------------------------------------------------
    def execute(self, p) -> None:
        spec: predictors.PredictorSpec = p.handle.extra["spec"]
        fn = _predict_fn(spec)
        is_async = is_async_callable(fn)
        nested = model_thread.current() is not None  # a predictor running a model: it holds the device
        if self.batching and not nested:
            rule = batch_rules.rule_of(fn, spec.instance if spec.instance is not None else spec.cls)
            if rule is not None and not warm_mod.is_folder_model(spec) and self._batcher.run(p, spec, fn, rule, is_async):
                return
        if not nested and not self._slots.enter(spec.key, self._limit(spec, fn), p.cancel_event):
            p.emit(Completed(status="canceled", error=p.cancel_reason,
                             metrics={"predict_time": 0.0, "hardware": devices.current_sku()}))
            return
        try:
            if warm_mod.is_folder_model(spec):
                # a Cog folder runs as under Cog: its folder as working directory, cog.yaml's
                # environment, in a warm kernel-side Cog process (the kernel's cwd is untouched)
                self._cog_processes().execute(p, spec)
            else:
                self._execute(p, spec, is_async)
        finally:
            if not nested:
                self._slots.leave()

    def _cog_processes(self) -> Any:
        with self._cache_lock:
            if self._cog is None:
                from replicate_jupyter.runners.cogproc import CogProcesses

                self._cog = CogProcesses()
            return self._cog

    def _execute(self, p, spec: predictors.PredictorSpec, is_async: bool) -> None:
        hardware = devices.current_sku()
        if p.cancel_event.is_set():
            p.emit(Completed(status="canceled", error=p.cancel_reason, metrics={"predict_time": 0.0, "hardware": hardware}))
            return
        cold = spec.key not in self._warm
        warm, failed = self._acquire(p, spec, is_async)
        if failed is not None:
            p.emit(Completed(status=failed.status, error=failed.error, traceback=failed.trace,
                             metrics={"hardware": hardware}))
            if failed.interrupt is not None:
                raise failed.interrupt
            return
        assert warm is not None
        p.emit(Started(hardware=hardware))
        metrics: dict[str, Any] = {"hardware": hardware}
        if cold:
            metrics["setup_time"] = round(warm.setup_time, 4)
        kwargs = call_arguments(warm.call, p.input)  # typed as Cog passes them (cog.File, Path, Secret)
        t0 = time.perf_counter()
        outcome = self._attempt(p, warm, kwargs)
        if outcome.oom:
            # Retry here, after the failed attempt's exception and frames were dropped (their
            # tensors would otherwise stay alive through the retry: pytorch#18853).
            with self._cache_lock:
                freed = [k for k, w in self._warm.items() if w is not warm]
                for k in freed:
                    self.evict(k)
            devices.free_device_memory()
            p.emit(Log(text=f"[replicate-jupyter] out of device memory: evicted {len(freed)} warm model(s), retrying once\n"))
            outcome = self._attempt(p, warm, kwargs)
            if outcome.oom:
                outcome.status = "failed"
                outcome.error = (f"Out of device memory running {p.model}, even after freeing the warm models and retrying "
                                 f"once ({outcome.error}). Try fewer outputs, a smaller size, or another backend (--on workers).")
        metrics["predict_time"] = round(time.perf_counter() - t0, 6)
        p.emit(Completed(status=outcome.status, error=outcome.error, traceback=outcome.trace, metrics=metrics))
        if outcome.interrupt is not None:
            raise outcome.interrupt

    def _attempt(self, p, warm: Warm, kwargs: dict) -> Outcome:
        """One call of the predictor on its model thread, waited for here."""
        emitted = [False]

        def emit(event) -> None:
            if event.__class__ is Output:
                emitted[0] = True
            p.emit(event)

        ctx = RunContext(emit=p.emit, cancel_event=p.cancel_event, wants_preview=preview_throttle(self.preview_rate))
        context = fresh_context(ctx, sink=lambda s: p.emit(Log(text=s)))
        cancel = p.cancel_event
        if warm.is_async:
            call = warm.thread.submit_async(lambda: warm_mod.apredict(warm.call, kwargs, emit, cancel), context)
        else:
            call = warm.thread.submit(lambda: warm_mod.predict(warm.call, kwargs, emit, cancel), context)
        interrupt = self._wait(p, warm.thread, call)
        outcome = self._outcome(p, warm.thread, call, interrupt, emitted[0])
        return outcome or Outcome(status="succeeded")

    def _wait(self, p, thread: ModelThread, call: Call) -> BaseException | None:
        """Wait for `call`; a KeyboardInterrupt meanwhile stops it (waiting for that) and is
        returned, for the caller to re-raise once the prediction is recorded."""
        self._calls[p.id] = (p, thread, call)
        try:
            if p.cancel_event.is_set():  # canceled before the call was registered
                self.cancel(p)
            try:
                call.wait()
                return None
            except KeyboardInterrupt as exc:
                p.cancel()
                call.wait(self.cancel_grace + self.cancel_deadline + 1.0)
                return exc
        finally:
            self._calls.pop(p.id, None)

    def _outcome(self, p, thread: ModelThread, call: Call, interrupt: BaseException | None,
                 emitted: bool) -> Outcome | None:
        """What a settled call means for its prediction (None: it succeeded). The exception and
        its frames are dropped here, so nothing of a failed attempt outlives this."""
        exc, call.error = call.error, None
        try:
            if call.state == "abandoned" or (interrupt is not None and not call.settled):
                self._drop_defunct(thread)
                p.emit(Log(text=f"[replicate-jupyter] the predictor did not stop within {self.cancel_deadline:g} s of "
                                f"the cancel; it is still running in thread {thread.thread_name!r} "
                                f"(ident {thread.ident}). Its model was evicted: the next prediction sets it up again.\n"))
                return Outcome(status="canceled", abandoned=True, interrupt=interrupt,
                                error=f"{p.cancel_reason or 'canceled'}; the predictor did not stop (still running in "
                                      f"thread {thread.thread_name!r})")
            if interrupt is not None or is_cancel(exc):
                return Outcome(status="canceled", error=p.cancel_reason, interrupt=interrupt)
            if exc is None:
                if call.stop_requested:  # it returned after the cancel reached it: not a clean success
                    p.emit(Log(text="[replicate-jupyter] canceled: the predictor returned after the cancel\n"))
                    return Outcome(status="canceled", error=p.cancel_reason)
                return None
            if is_oom(exc) and not emitted:
                first = str(exc).splitlines()[0] if str(exc) else ""
                return Outcome(status="failed", error=f"{type(exc).__name__}: {first}", trace=model_traceback(exc), oom=True)
            return Outcome(status="failed", error=f"{type(exc).__name__}: {exc}", trace=model_traceback(exc))
        finally:
            warm_mod.forget(exc)
            del exc

    def cancel(self, prediction) -> None:
        """Stop a prediction: waiting for a slot, it leaves the queue; running, it is stopped on
        its model thread by a helper thread (this returns at once)."""
        self._slots.wake()
        self._batcher.cancel(prediction)
        if self._cog is not None:
            self._cog.cancel(prediction)
        entry = self._calls.get(prediction.id)
        if entry is None:
            return
        _p, thread, call = entry
        if call.settled or id(call) in self._stopping:
            return
        self._stopping.add(id(call))

        def stop() -> None:
            try:
                thread.stop(call, grace=self.cancel_grace, deadline=self.cancel_deadline)
            finally:
                self._stopping.discard(id(call))

        threading.Thread(target=stop, name=f"rj-stop-{prediction.id}", daemon=True).start()

    def close(self) -> None:
        """Cancel the predictions still running (the runner is being replaced, or the kernel is
        ending), wait for them up to the cancel deadline, then release every warm model."""
        self._batcher.close()
        self._setups.cancel_waiting("canceled: the local runner was closed")
        running = list(self._calls.values())
        for p, _thread, _call in running:
            p.cancel(reason="canceled: the local runner was closed")
        end = time.monotonic() + self.cancel_grace + self.cancel_deadline + 1.0
        for _p, _thread, call in running:
            call.wait(max(0.0, end - time.monotonic()))
        self.evict()
        if self._cog is not None:
            self._cog.close()


def _predict_fn(spec: predictors.PredictorSpec) -> Any:
    """The predictor's predict/run function (unbound when there is no instance yet): enough to
    tell async from sync and read its declared concurrency."""
    return predictors.predict_method(spec.instance if spec.instance is not None else spec.cls)


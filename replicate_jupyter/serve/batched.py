"""A batchable model's concurrent predictions run as batches inside one worker process.

Why: Cog runs one prediction per call, and `@cog.concurrent` only overlaps calls; a model that
declares batching (`model/batching.py`) does 8 prompts in one forward pass in little more than
the time of one. A worker — a coglet predictor process started by `serve`, or a Ray model
actor — receives those 8 as 8 separate predictions; `BatchHost` gives them the same batching
the kernel has, by running them through a local runner of its own (runners/local.py with its
Batcher: the collecting window, the compatibility key, cancel of one member, the device time
split into shares, the OOM retry), so nothing of that is written twice.

Under coglet (`adapter_class`): the predictor coglet loads is an async adapter with the model's
own signature and `concurrency` slots. Each coglet prediction is one adapter coroutine; it hands
its input to the host and relays what the host's prediction emits from its own task, so coglet
files every log line, relayed progress/preview and metric under that prediction: prints as
logs, `Metric` as `current_scope().record_metric` (`batch_size`, `batch_id`, and the member's
share of the device time as `predict_time_share`, since coglet's own predict_time is the
member's wall time and may not be overwritten). A coglet cancel (asyncio's, on the task) cancels
that member only, and records its share of the batch so far before the task ends. Metrics are
relayed through coglet's own scope (`model.scope.native_scope`), never `cog.current_scope()`:
in this process that can answer with the batch's scope and feed a metric back into the batch.
A model that does not batch is served as before.
"""
from __future__ import annotations

import asyncio
import inspect
import os
import tempfile
import types
import typing
from typing import Any, Callable

from replicate_jupyter.model import predictors
from replicate_jupyter.model.batching import rule_of
from replicate_jupyter.model.scope import native_scope
from replicate_jupyter.prediction.events import Completed, Log, Metric, Output, Preview, Progress
from replicate_jupyter.runners.workers.wire import BATCHING_KEY
from replicate_jupyter.runners.workers.wire import SHARE_METRIC as SHARE

__all__ = ["BatchHost", "batching_info", "adapter_class", "member_error", "INFO_KEY", "SHARE_METRIC", "WINDOW_ENV"]

#: where the schema's `info` says how a worker batches, and the metric of a member's share of
#: the device time: one spelling, the pool's (runners/workers/wire.py)
INFO_KEY, SHARE_METRIC = BATCHING_KEY, SHARE
#: seconds of quiet that close a batch on a served worker (`serve --batch-window`)
WINDOW_ENV = "RJ_BATCH_WINDOW"


def batching_info(spec: predictors.PredictorSpec) -> dict[str, Any] | None:
    """What a worker of `spec` says about its batching (None: it does not batch): the largest
    batch and the inputs that must match (`match`) or may differ (`vary`). `exact` is False when
    the rule also has functions (alone/group), which only the worker can apply."""
    owner = spec.instance if spec.instance is not None else spec.cls
    rule = rule_of(predictors.predict_method(owner), owner)
    if rule is None:
        return None
    return {"max_batch": rule.max_batch,
            "match": sorted(rule.match) if rule.match is not None else None,
            "vary": sorted(rule.vary) if rule.vary is not None else None,
            "exact": rule.alone is None and rule.group is None}


class BatchHost:
    """One batchable model in this process, behind a local runner that batches what arrives
    together. `start(inputs, listener)` runs one prediction (on a background thread) and returns
    it; the listener sees its events as the kernel would (`fn(prediction, event)`)."""

    def __init__(self, spec: predictors.PredictorSpec, window: float = 0.05, max_wait: float = 0.3,
                 preview_rate: float = 4.0) -> None:
        from replicate_jupyter.runners.base import ModelHandle
        from replicate_jupyter.runners.local import LocalRunner

        self.spec = spec
        # arrivals over HTTP or Ray spread more than threads in a kernel (8 of a sweep over ~40 ms
        # on the loaded 2-core test machine): a wider window than the kernel's 10 ms
        self.runner = LocalRunner(preview_rate=preview_rate, batch_window=window, batch_max_wait=max_wait)
        self.handle = ModelHandle(name=spec.name, version=spec.version, schema=spec.schema, extra={"spec": spec})

    @property
    def ready(self) -> bool:
        return self.spec.key in self.runner.warm

    def _prediction(self, inputs: dict[str, Any]) -> Any:
        from replicate_jupyter.prediction.prediction import Prediction

        return Prediction(self.spec.name, dict(inputs), version=self.spec.version, backend="local",
                          schema=self.spec.schema, runner=self.runner, handle=self.handle)

    def setup(self, log: Callable[[str], None] = print) -> float | None:
        """Set the model up now (a worker is ready only once its model is): the seconds it took,
        None when it already was. Raises RuntimeError with the model's error when setup fails."""
        if self.ready:
            return None
        from replicate_jupyter.runners.slots import is_async_callable

        holder = self._prediction({})  # stands in for a prediction while the runner sets up
        holder.subscribe(lambda _p, e: log(e.text) if isinstance(e, Log) else None)
        owner = self.spec.instance if self.spec.instance is not None else self.spec.cls
        warm, failed = self.runner._acquire(holder, self.spec, is_async_callable(predictors.predict_method(owner)))
        if failed is not None or warm is None:
            raise RuntimeError(failed.error if failed is not None else "setup failed")
        return warm.setup_time

    def start(self, inputs: dict[str, Any], listener: Callable[[Any, Any], None]) -> Any:
        """Run one prediction of the model; it joins a batch with those arriving with it."""
        from replicate_jupyter.runners import threads

        p = self._prediction(inputs)
        p.subscribe(listener)
        threads.submit(self._execute, p)
        return p

    def _execute(self, p: Any) -> None:
        try:
            self.runner.execute(p)
        except BaseException as exc:  # noqa: BLE001 — a runner bug must still end the prediction
            if not p.finished:
                p.emit(Completed(status="failed", error=f"{type(exc).__name__}: {exc}"))

    def share_so_far(self, p: Any) -> float | None:
        """`p`'s share of its batch's device time so far (None while it is not in one)."""
        return self.runner._batcher.share_so_far(p)

    def close(self) -> None:
        self.runner.close()


# ----- under coglet ----------------------------------------------------------------------------------
def _from_output(value: Any, folder: list[str]) -> Any:
    """What the local runner made of an output (FileOutput) → what coglet sends (a cog.Path)."""
    from cog import Path as CogPath

    from replicate_jupyter.prediction.files import FileOutput

    if isinstance(value, FileOutput):
        if not folder:
            folder.append(tempfile.mkdtemp(prefix="rj-batch-out-"))
        path = os.path.join(folder[0], f"{len(os.listdir(folder[0]))}-{os.path.basename(value.name) or 'output'}")
        with open(path, "wb") as fh:
            fh.write(value.read())
        return CogPath(path)
    if isinstance(value, list):
        return [_from_output(v, folder) for v in value]
    if isinstance(value, dict):
        return {k: _from_output(v, folder) for k, v in value.items()}
    return value


def _relay(event: Any) -> None:
    """One event of a member's host prediction, said from its coglet task (so coglet files it
    under that prediction): logs printed, progress/previews as tagged log lines, metrics recorded."""
    from replicate_jupyter.runners.context import relay_preview, relay_progress

    cls = event.__class__
    if cls is Log:
        print(event.text, end="", flush=True)
    elif cls is Progress:
        relay_progress(event.step, event.total)
    elif cls is Preview and event.image is not None:
        relay_preview(event.image, event.step)
    elif cls is Metric and event.name in ("batch_size", "batch_id"):
        native_scope().record_metric(event.name, event.value)


def _record_end(p: Any) -> None:
    scope = native_scope()
    for name in ("batch_size", "batch_id"):
        if name in p.metrics:
            scope.record_metric(name, p.metrics[name])
    if p.metrics.get("predict_time") is not None:
        scope.record_metric(SHARE_METRIC, p.metrics["predict_time"])


async def _follow(self: Any, kwargs: dict[str, Any]) -> Any:
    """One coglet prediction: its member's events relayed until its Completed, then its output
    (or its error); a coglet cancel cancels this member only."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    p = self._rj_host.start(kwargs, lambda _p, e: loop.call_soon_threadsafe(queue.put_nowait, e))
    output: Any = None
    try:
        while True:
            event = await queue.get()
            if event.__class__ is Completed:
                break
            if event.__class__ is Output:
                output = event.value
            else:
                _relay(event)
                if event.__class__ is Progress:  # the share so far, recorded as it grows: coglet
                    share = self._rj_host.share_so_far(p)  # keeps what was recorded before a cancel
                    if share is not None:
                        native_scope().record_metric(SHARE_METRIC, round(share, 6))
    except asyncio.CancelledError:
        # coglet has answered "canceled" by now and keeps only what was recorded before: the
        # share recorded at the member's last step (above) is what it is billed
        p.cancel(reason="canceled")
        raise
    _record_end(p)
    if p.status == "canceled":
        raise asyncio.CancelledError()
    if p.status != "succeeded":
        raise member_error(p.error)
    return _from_output(output, [])


def member_error(error: str | None) -> Exception:
    """The member's error raised again for coglet, under its own type's name: coglet words a
    failure "<type>: <message>", so the kernel reads "ValueError: bad input" as it would for a
    model run alone, not "RuntimeError: ValueError: bad input"."""
    text = error or "the prediction failed"
    name, sep, message = text.partition(": ")
    if sep and name.isidentifier() and "\n" not in name:
        return type(name, (Exception,), {"__module__": "builtins"})(message)
    return RuntimeError(text)


async def _predict_template(self: Any, **kwargs: Any) -> Any:
    return await self._rj_follow(kwargs)


def _setup_template(self: Any) -> None:
    window = float(os.environ.get(WINDOW_ENV) or 0.05)  # serve --batch-window
    self._rj_host = BatchHost(self._rj_spec, window=window, max_wait=max(0.3, 6 * window))
    self._rj_host.setup()


def adapter_class(spec: predictors.PredictorSpec, concurrency: int) -> type:
    """The class coglet loads for a batchable model: `predict` (or `run`, as the model names it)
    async, with the model's signature and `concurrency` slots, each call a member of a batch."""
    from cog import BasePredictor

    owner = spec.instance if spec.instance is not None else spec.cls
    fn = predictors.predict_method(owner)
    inner = getattr(fn, "__func__", fn)
    name = inner.__name__ if inner.__name__ in ("run", "predict") else "predict"
    try:
        hints = typing.get_type_hints(inner, include_extras=True)
    except Exception:
        hints = dict(getattr(inner, "__annotations__", {}))
    t = _predict_template
    # a copy of the template with no closure (cog follows closures to find the "real" function)
    method = types.FunctionType(t.__code__, t.__globals__, name, t.__defaults__, None)
    sig = inspect.signature(inner)
    method.__signature__ = sig.replace(parameters=list(sig.parameters.values()),  # type: ignore[attr-defined]
                                       return_annotation=hints.get("return", sig.return_annotation))
    method.__annotations__ = hints
    method.__cog_concurrent_max__ = max(1, int(concurrency))  # type: ignore[attr-defined]
    attrs = {name: method, "setup": _setup_template, "_rj_follow": _follow, "_rj_spec": spec,
             "__module__": __name__, "__doc__": f"{spec.name}, batched: concurrent predictions share forward passes"}
    return type(getattr(owner, "__name__", type(owner).__name__), (BasePredictor,), attrs)


"""A warm model of the local runner, and the calls that run on its model thread.

`setup`/`asetup` make and set the predictor up (`setup(weights=...)` as Cog passes it),
`predict`/`apredict` run one prediction inside its `cog.current_scope()` (so metrics reach the
prediction), `predict_batch`/`apredict_batch` run several at once through the predictor's own
`predict_batch` (model/batching.py), `release` tears it down. Each is handed to the model's own
thread (model_thread.py), so the model only ever runs there. Kept apart from local.py, which decides
what runs when; `is_folder_model` and `forget` are its helpers.
"""
from __future__ import annotations

import asyncio
import inspect
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from replicate_jupyter.model import batching, predictors
from replicate_jupyter.model.scope import scope_for
from replicate_jupyter.runners import devices
from replicate_jupyter.runners.context import fresh_context
from replicate_jupyter.runners.invoke import acall_and_emit, call_and_emit
from replicate_jupyter.runners.model_thread import Call, ModelThread

__all__ = ["Warm", "Outcome", "setup", "asetup", "start_setup", "predict", "apredict", "predict_batch", "apredict_batch",
           "release", "free_device_bytes", "is_folder_model", "forget"]


@dataclass
class Warm:
    """A set-up model in the local runner's cache: the instance, what it holds, its thread."""

    instance: Any
    size: int
    setup_time: float
    call: Any  # the bound predict/run method
    thread: ModelThread  # where setup ran and every prediction runs
    is_async: bool


def setup(spec: predictors.PredictorSpec) -> tuple[Any, float, int]:
    """Make and set up the predictor (on its model thread): instance, seconds, bytes held."""
    before = devices.memory_in_use()
    t0 = time.perf_counter()
    instance = spec.make()
    hook = getattr(instance, "setup", None)
    if hook is not None:
        result = hook(**spec.setup_kwargs(instance))  # weights=, as Cog passes it
        if inspect.iscoroutine(result):  # async setup of a sync predictor: no loop runs on this thread
            asyncio.run(result)
    return _measured(instance, before, t0)


async def asetup(spec: predictors.PredictorSpec) -> tuple[Any, float, int]:
    """`setup` for async predictors, as a task on the model's loop (their setup may be async)."""
    before = devices.memory_in_use()
    t0 = time.perf_counter()
    instance = spec.make()
    hook = getattr(instance, "setup", None)
    if hook is not None:
        result = hook(**spec.setup_kwargs(instance))
        if inspect.isawaitable(result):
            await result
    return _measured(instance, before, t0)


def start_setup(spec: predictors.PredictorSpec, is_async: bool, sink: Any) -> tuple[ModelThread, Call]:
    """A new model thread for `spec` with its setup handed over (as Cog runs it, in the thread
    its predictions will run in); the setup's prints go to `sink` as they come."""
    thread = ModelThread(spec.name, use_loop=is_async)
    context = fresh_context(None, sink=sink)
    if is_async:
        return thread, thread.submit_async(lambda: asetup(spec), context)
    return thread, thread.submit(lambda: setup(spec), context)


def _measured(instance: Any, before: int | None, t0: float) -> tuple[Any, float, int]:
    devices.synchronize()
    setup_time = time.perf_counter() - t0
    after = devices.memory_in_use()
    size = getattr(instance, "memory_bytes", None)
    if size is None:
        size = (after - before) if (after is not None and before is not None) else devices.estimate_bytes(instance)
    return instance, setup_time, int(size)


def predict(call: Any, kwargs: dict, emit: Any, cancel: threading.Event) -> None:
    """One sync prediction, inside its `cog.current_scope()` (metrics → Metric events), its
    device work finished before it counts as done (predict_time)."""
    with scope_for(emit):
        call_and_emit(call, kwargs, emit, cancel)
    devices.synchronize()


async def apredict(call: Any, kwargs: dict, emit: Any, cancel: threading.Event) -> None:
    """`predict` for async predictors, a task on the model's loop (the scope is per task)."""
    with scope_for(emit):
        await acall_and_emit(call, kwargs, emit, cancel)
    devices.synchronize()


def predict_batch(call: Any, inputs: list[dict], batch: Any) -> None:
    """One batch (`runners/batching.RunningBatch`): `predict_batch(inputs)` with the batch as
    `current_batch()`, its list of outputs or stream of (member, item) pairs handed to the
    batch, inside one `cog.current_scope()` whose metrics reach every member."""
    with scope_for(batch.emit), batching.using(batch):
        batch.take(call(inputs))
    devices.synchronize()


async def apredict_batch(call: Any, inputs: list[dict], batch: Any) -> None:
    """`predict_batch` of an async predictor, a task on its model's loop."""
    with scope_for(batch.emit), batching.using(batch):
        result = call(inputs)
        if inspect.isawaitable(result):
            result = await result
        if inspect.isasyncgen(result):
            try:
                async for pair in result:
                    batch.take_pair(pair)
            finally:
                await result.aclose()
        else:
            batch.take(result)
    devices.synchronize()


def release(instance: Any) -> None:
    """Teardown (if the predictor has one) and weights off the accelerator, on its model thread."""
    teardown = getattr(instance, "teardown", None)
    if callable(teardown):
        try:
            teardown()
        except Exception:
            pass
    devices.to_cpu(instance)


def free_device_bytes() -> int | None:
    """Free device memory (CUDA: device-wide, what a batch may still take), None elsewhere."""
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            return int(torch.cuda.mem_get_info()[0])
    except Exception:
        pass
    return None


def is_folder_model(spec: predictors.PredictorSpec) -> bool:
    """A model on disk in a folder with cog.yaml (not a class or object from the notebook): the
    local runner runs it in a kernel-side Cog process (cogproc.py), not on a model thread."""
    folder = getattr(spec, "folder", None)
    if folder is None or not any(getattr(f, "name", "") == "cog.yaml" for f in getattr(spec, "files", ())):
        return False  # a plain predictor file: cheap to tell, without loading the Cog process code
    from replicate_jupyter.runners.cogproc import folder_of

    return folder_of(spec) is not None


def forget(exc: BaseException | None) -> None:
    """Drop the frames a failed call's exception (and those it chains) hold: their locals may be
    tensors on the device."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        exc.__traceback__ = None
        exc = exc.__cause__ or exc.__context__


@dataclass
class Outcome:
    """How one call on a model thread ended, as the local runner and the batcher record it."""

    status: str
    error: str | None = None
    trace: str | None = None
    oom: bool = False
    abandoned: bool = False
    interrupt: BaseException | None = None  # the KeyboardInterrupt to re-raise after recording

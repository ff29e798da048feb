"""The kernel-side runner: predictors run in this process, on CUDA, else MPS, else CPU.

Set-up predictors stay warm between cells in an LRU cache bounded by a device-memory budget,
because setup (loading weights) is usually the slowest part of a notebook iteration. Predictions
run one at a time (one device), in the calling thread, so a kernel interrupt lands in the
predictor and stops it at once.
"""
from __future__ import annotations

import inspect
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from replicate_jupyter.runners import devices
from replicate_jupyter.model import predictors
from replicate_jupyter.runners.capture import capture
from replicate_jupyter.errors import Canceled
from replicate_jupyter.prediction.events import Completed, Log, Output, Started
from replicate_jupyter.runners.context import RunContext, activate
from replicate_jupyter.runners.base import ModelHandle, Runner
from replicate_jupyter.runners.invoke import (
    build_kwargs,
    call_and_emit,
    call_params,
    is_oom,
    model_traceback,
    preview_throttle,
    run_coroutine,
)

__all__ = ["LocalRunner"]

@dataclass
class _Warm:
    instance: Any
    size: int
    setup_time: float
    call: Any  # the bound predict/run method
    params: dict[str, Any]  # parameter → default, so every parameter is always passed


class LocalRunner(Runner):
    name = "local"
    concurrent = False

    def __init__(self, memory_budget: int | None = None, preview_rate: float = 4.0) -> None:
        self.memory_budget = memory_budget
        self.preview_rate = preview_rate
        self._warm: "OrderedDict[str, _Warm]" = OrderedDict()
        self._run_lock = threading.RLock()
        self.evictions: list[str] = []

    # ----- models --------------------------------------------------------------------------
    def resolve(self, ref: Any) -> ModelHandle:
        spec = predictors.load(ref)
        return ModelHandle(name=spec.name, version=spec.version, schema=spec.schema, extra={"spec": spec})

    def models(self) -> list[ModelHandle]:
        from replicate_jupyter.models import DESCRIPTIONS, EMBEDDED

        out = []
        for name in predictors.known_names():
            out.append(ModelHandle(name=name, version=None, schema={}, description=DESCRIPTIONS.get(name, ""),
                                   extra={"warm": any(k.endswith(name) for k in self._warm), "source": EMBEDDED.get(name)}))
        return out

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

    def _acquire(self, spec: predictors.PredictorSpec, p) -> _Warm:
        warm = self._warm.get(spec.key)
        if warm is not None:
            self._warm.move_to_end(spec.key)
            return warm
        before = devices.memory_in_use()
        t0 = time.perf_counter()
        instance = spec.make()
        setup = getattr(instance, "setup", None)
        if setup is not None:
            with capture(lambda s: p.emit(Log(text=s))):
                result = setup()
                if inspect.iscoroutine(result):
                    run_coroutine(result)
        devices.synchronize()
        setup_time = time.perf_counter() - t0
        after = devices.memory_in_use()
        size = getattr(instance, "memory_bytes", None)
        if size is None:
            size = (after - before) if (after is not None and before is not None) else estimate_bytes(instance)
        call = predictors.predict_method(instance)
        warm = _Warm(instance=instance, size=int(size), setup_time=setup_time, call=call, params=call_params(call))
        self._warm[spec.key] = warm
        self._evict_to_budget(keep=spec.key)
        return warm

    def _evict_to_budget(self, keep: str) -> None:
        budget = self._budget()
        while sum(w.size for w in self._warm.values()) > budget and len(self._warm) > 1:
            oldest = next(k for k in self._warm if k != keep)
            self.evict(oldest)

    def evict(self, key: str | None = None) -> None:
        """Drop a warm predictor (all of them with no key) and give its device memory back."""
        keys = [key] if key else list(self._warm)
        for k in keys:
            warm = self._warm.pop(k, None)
            if warm is None:
                continue
            self.evictions.append(k)
            teardown = getattr(warm.instance, "teardown", None)
            if callable(teardown):
                try:
                    teardown()
                except Exception:
                    pass
            _to_cpu(warm.instance)
            del warm
        devices.free_device_memory()

    # ----- running -------------------------------------------------------------------------
    def execute(self, p) -> None:
        spec: predictors.PredictorSpec = p.handle.extra["spec"]
        with self._run_lock:
            if p.cancel_event.is_set():
                p.emit(Completed(status="canceled", metrics={"predict_time": 0.0, "hardware": devices.current_sku()}))
                return
            cold = spec.key not in self._warm
            try:
                warm = self._acquire(spec, p)
            except KeyboardInterrupt:
                p.emit(Completed(status="canceled", error="canceled during setup", metrics={"hardware": devices.current_sku()}))
                raise
            except BaseException as exc:  # noqa: BLE001 — the model's own error, shown as such
                p.emit(Completed(status="failed", error=f"setup failed: {exc!r}", traceback=model_traceback(exc),
                                 metrics={"hardware": devices.current_sku()}))
                return
            hardware = devices.current_sku()
            p.emit(Started(hardware=hardware))
            metrics: dict[str, Any] = {"hardware": hardware}
            if cold:
                metrics["setup_time"] = round(warm.setup_time, 4)
            kwargs = build_kwargs(warm.params, warm.call, p.input, p.secret_fields)
            self._predict(p, warm, kwargs, metrics, retry_oom=True)

    def _predict(self, p, warm: _Warm, kwargs: dict, metrics: dict, retry_oom: bool) -> None:
        emitted = [False]

        def emit(event) -> None:
            emitted[0] = emitted[0] or isinstance(event, Output)
            p.emit(event)

        ctx = RunContext(emit=p.emit, cancel_event=p.cancel_event, wants_preview=preview_throttle(self.preview_rate))
        t0 = time.perf_counter()
        interrupted: BaseException | None = None
        prev = activate(ctx)
        try:
            with capture(lambda s: p.emit(Log(text=s))):
                call_and_emit(warm.call, kwargs, emit, p.cancel_event)
            devices.synchronize()
            status, error, trace = "succeeded", None, None
        except (Canceled, KeyboardInterrupt) as exc:
            status, error, trace = "canceled", p.cancel_reason, None
            if isinstance(exc, KeyboardInterrupt):
                interrupted = exc
        except BaseException as exc:  # noqa: BLE001
            if type(exc).__name__ == "CancelationException":
                status, error, trace = "canceled", p.cancel_reason, None
            elif is_oom(exc) and retry_oom and not emitted[0]:
                activate(prev)
                freed = [k for k in list(self._warm) if self._warm.get(k) is not warm]
                for k in freed:
                    self.evict(k)
                devices.free_device_memory()
                p.emit(Log(text=f"[replicate-jupyter] out of device memory: evicted {len(freed)} warm model(s), retrying once\n"))
                return self._predict(p, warm, kwargs, metrics, retry_oom=False)
            elif is_oom(exc):
                status, trace = "failed", model_traceback(exc)
                error = (f"Out of device memory running {p.model}, even after freeing the warm models and retrying once "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
                         "Try fewer outputs, a smaller size, or another backend (--on workers).")
            else:
                status, error, trace = "failed", f"{type(exc).__name__}: {exc}", model_traceback(exc)
        finally:
            activate(prev)
        metrics["predict_time"] = round(time.perf_counter() - t0, 6)
        p.emit(Completed(status=status, error=error, traceback=trace, metrics=metrics))
        if interrupted is not None:
            raise interrupted

    def close(self) -> None:
        self.evict()


def estimate_bytes(obj: Any, depth: int = 2) -> int:
    """Bytes of torch weights an object holds (modules, tensors, diffusers pipeline components)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None:
        return 0
    seen: set[int] = set()

    def size_of(value: Any, d: int) -> int:
        if id(value) in seen:
            return 0
        seen.add(id(value))
        if isinstance(value, torch.nn.Module):
            return sum(t.numel() * t.element_size() for t in list(value.parameters()) + list(value.buffers()))
        if isinstance(value, torch.Tensor):
            return value.numel() * value.element_size()
        if d <= 0:
            return 0
        comps = getattr(value, "components", None)
        if isinstance(comps, dict):
            return sum(size_of(v, d - 1) for v in comps.values())
        if isinstance(value, (list, tuple)):
            return sum(size_of(v, d - 1) for v in value)
        if isinstance(value, dict):
            return sum(size_of(v, d - 1) for v in value.values())
        attrs = getattr(value, "__dict__", None)
        if attrs and not isinstance(value, type):
            return sum(size_of(v, d - 1) for v in attrs.values())
        return 0

    return size_of(obj, depth)


def _to_cpu(instance: Any) -> None:
    """Move the instance's torch weights off the accelerator before dropping it."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None or not (torch.cuda.is_available()):
        return
    for value in list(getattr(instance, "__dict__", {}).values()):
        to = getattr(value, "to", None)
        if callable(to) and (isinstance(value, torch.nn.Module) or hasattr(value, "components")):
            try:
                to("cpu")
            except Exception:
                pass

"""Which predictions may use the kernel's device now, and how many of one model at once.

The local runner has one device. Predictions of different models never overlap there: the warm
cache may evict one model to make room for another, and an out-of-memory retry evicts the
others, which is only safe while they are not running. Of one model, as many run at once as it
declares the way Cog reads it: `@cog.concurrent(max=N)` on its async `predict`/`run`, else
`concurrency: max: N` in its cog.yaml, else 1. A sync model always runs one at a time (Cog
requires an async function for N > 1). Predictions that may not start yet wait here, still in
`starting`, first come first served.
"""
from __future__ import annotations

import inspect
import os
import pathlib
import threading
from collections import deque
from typing import Any

__all__ = ["Slots", "declared_concurrency", "is_async_callable"]


class Slots:
    """One model on the device at a time, up to its concurrency of its predictions at once."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._key: str | None = None
        self._active = 0
        self._waiting: deque[object] = deque()

    def _fits(self, key: str, limit: int) -> bool:
        return self._active == 0 or (key == self._key and self._active < limit)

    def _take(self, key: str) -> None:
        self._key = key
        self._active += 1

    def enter(self, key: str, limit: int, cancel: threading.Event) -> bool:
        """Wait for a slot for model `key`; False when `cancel` was set first (nothing taken).
        A KeyboardInterrupt while waiting (the cell's main thread) leaves the queue and propagates."""
        with self._cond:
            if not self._waiting and self._fits(key, limit):
                self._take(key)
                return True
            ticket = object()
            self._waiting.append(ticket)
            try:
                while True:
                    if cancel.is_set():
                        return False
                    if self._waiting[0] is ticket and self._fits(key, limit):
                        self._waiting.popleft()
                        self._take(key)
                        return True
                    self._cond.wait(0.25)  # woken by leave()/wake(); the timeout only re-checks
            finally:
                if ticket in self._waiting:
                    self._waiting.remove(ticket)
                self._cond.notify_all()  # the next in line may fit now

    def leave(self) -> None:
        with self._cond:
            self._active -= 1
            if self._active <= 0:
                self._active, self._key = 0, None
            self._cond.notify_all()

    def wake(self) -> None:
        """Make waiters look at their cancel flags now (a cancel of a waiting prediction)."""
        with self._cond:
            self._cond.notify_all()

    @property
    def active(self) -> int:
        return self._active

    @property
    def waiting(self) -> int:
        return len(self._waiting)


def is_async_callable(fn: Any) -> bool:
    """An `async def` predict/run, plain or async generator."""
    return inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)


def declared_concurrency(fn: Any, source: str | None) -> int:
    """How many predictions of one model may run at once, as Cog reads it: the decorator's
    `__cog_concurrent_max__`, else cog.yaml's `concurrency.max` (the cog.yaml beside the
    predictor file, when its `predict:`/`run:` names that file), else 1; always 1 for a sync
    function."""
    if not is_async_callable(fn):
        return 1
    declared = getattr(fn, "__cog_concurrent_max__", None)
    if declared is None:
        declared = getattr(getattr(fn, "__func__", None), "__cog_concurrent_max__", None)
    if declared is None and source:
        declared = _cog_yaml_max(source)
    try:
        return max(1, int(declared)) if declared is not None else 1
    except (TypeError, ValueError):
        return 1


_yaml_cache: dict[tuple[str, int], int | None] = {}


def _cog_yaml_max(source: str) -> int | None:
    file_part = source.rsplit(":", 1)[0] if source.count(":") else source
    path = pathlib.Path(file_part)
    cfg = path.parent / "cog.yaml"
    try:
        mtime = cfg.stat().st_mtime_ns
    except OSError:
        return None
    key = (str(cfg), mtime)
    if key not in _yaml_cache:
        _yaml_cache[key] = _read_max(cfg, path)
    return _yaml_cache[key]


def _read_max(cfg: pathlib.Path, predictor_file: pathlib.Path) -> int | None:
    import yaml

    try:
        data = yaml.safe_load(cfg.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(data, dict):
        return None
    target = str(data.get("run") or data.get("predict") or "").split(":", 1)[0]
    if not target or os.path.realpath(cfg.parent / target) != os.path.realpath(predictor_file):
        return None  # a cog.yaml of another predictor in the same folder
    conc = data.get("concurrency")
    value = conc.get("max") if isinstance(conc, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None

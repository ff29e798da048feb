"""`cog.current_scope()` for predictors called in this process: request context and metrics.

Under Cog, `cog.current_scope()` (and `BaseRunner.scope`, `record_metric`, the deprecated
`emit_metric`) all end in `coglet._sdk.current_scope()`, a native function that finds the running
prediction in a ContextVar and otherwise returns a scope that ignores everything. A runner that
calls a predictor in the kernel enters `scope_for(emit)` around each call; this module puts a
Python function in front of coglet's that answers with that prediction's `Scope` (the ContextVar
first, so concurrent and async predictions each see their own; then, as coglet does, the one
running prediction for threads a predictor starts). Outside it, coglet's own answer stands, so a
model served by coglet (`replicate-jupyter serve`) records its metrics through coglet as usual.

Metrics follow coglet 0.23.1 as measured: `record_metric(name, value, mode="replace"|"incr"|
"append")`, dot paths nest (`timing.infer` → `{"timing": {"infer": ...}}`), `scope.metrics[k] = v`
and `del scope.metrics[k]`, one type per key until deleted, and its name rules (letters, digits,
single underscores, at most 4 segments and 128 characters; not `predict_time`, not `cog.*`).
Each change is emitted as `Metric(name, value)` with the whole top-level value, so a reader that
sets `metrics[name] = value` ends with what coglet would report.
"""
from __future__ import annotations

import contextlib
import contextvars
import copy
import re
import threading
from typing import Any, Callable, Iterator

__all__ = ["Scope", "MetricRecorder", "scope_for", "current_scope", "native_scope"]

_current: contextvars.ContextVar["Scope | None"] = contextvars.ContextVar("rj_cog_scope", default=None)
_active: list["Scope"] = []
_active_lock = threading.Lock()
_install_lock = threading.Lock()
_native: Callable[[], Any] | None = None
_MODES = ("replace", "incr", "append")
_TYPES = (bool, int, float, str, list, dict)
_SEGMENT_CHAR = re.compile(r"[A-Za-z0-9_]")


def _check_name(key: Any) -> None:
    if not isinstance(key, str):
        raise TypeError(f"metric name must be a string, not {type(key).__name__}")
    if not key:
        raise ValueError("metric name must not be empty")
    if len(key) > 128:
        raise ValueError(f"metric name must be 128 characters or fewer (got {len(key)} characters)")
    if key.startswith("."):
        raise ValueError("metric name must not start with a dot")
    if key.endswith("."):
        raise ValueError("metric name must not end with a dot")
    if ".." in key:
        raise ValueError("metric name must not contain empty segments (consecutive dots)")
    segments = key.split(".")
    if len(segments) > 4:
        raise ValueError(f"metric name must have at most 4 dot-separated segments (got {len(segments)})")
    if key == "predict_time":
        raise ValueError("'predict_time' is reserved by the runtime")
    if key.startswith("cog."):
        raise ValueError("the 'cog.' prefix is reserved for system metrics")
    for seg in segments:
        if not seg[0].isascii() or not seg[0].isalpha():
            raise ValueError(f"metric name segment '{seg}' must start with a letter")
        bad = next((ch for ch in seg if not _SEGMENT_CHAR.fullmatch(ch)), None)
        if bad is not None:
            raise ValueError(f"metric name segment '{seg}' contains invalid character '{bad}'")
        if "__" in seg:
            raise ValueError(f"metric name segment '{seg}' must not contain consecutive underscores")
        if seg.endswith("_"):
            raise ValueError(f"metric name segment '{seg}' must end with a letter or digit")


class MetricRecorder:
    """`scope.metrics`: write-only, as coglet's (`record`, `delete`, `[k] = v`, `del [k]`)."""

    def __init__(self, scope: "Scope") -> None:
        self._scope = scope

    def record(self, key: str, value: Any, mode: str | None = None) -> None:
        """Record `value` under `key` ("a.b" nests); `mode` replace (default), incr or append."""
        self._scope._record(key, value, mode)

    def delete(self, key: str) -> None:
        """Delete a metric (required before giving it a value of another type)."""
        self._scope._delete(key)

    def __setitem__(self, key: str, value: Any) -> None:
        self._scope._record(key, value, None)

    def __delitem__(self, key: str) -> None:
        self._scope._delete(key)

    def __repr__(self) -> str:
        return f"MetricRecorder(keys={len(self._scope._types)})"


class Scope:
    """One prediction's scope: `context` (the request's context dict) and `metrics`."""

    def __init__(self, emit: Callable[[Any], None] | None = None, context: dict[str, str] | None = None) -> None:
        self._emit = emit
        self._context = {str(k): str(v) for k, v in (context or {}).items()}
        self._values: dict[str, Any] = {}
        self._types: dict[str, type] = {}
        self._lock = threading.Lock()
        self.metrics = MetricRecorder(self)

    @property
    def context(self) -> dict[str, str]:
        """Per-prediction context passed in the request (empty when none was given)."""
        return dict(self._context)

    def record_metric(self, key: str, value: Any, mode: str | None = None) -> None:
        """Shorthand for `scope.metrics.record(key, value, mode)`."""
        self._record(key, value, mode)

    def snapshot(self) -> dict[str, Any]:
        """Every metric recorded so far (a copy): what a runner puts in the final metrics."""
        with self._lock:
            return copy.deepcopy(self._values)

    def __repr__(self) -> str:
        return f"Scope({self.metrics!r})"

    # ----- internals ---------------------------------------------------------------------
    def _record(self, key: str, value: Any, mode: str | None) -> None:
        mode = "replace" if mode is None else mode
        if mode not in _MODES:
            raise TypeError(f"Invalid metric mode: {mode!r}. Expected 'replace', 'incr', or 'append'.")
        _check_name(key)
        if type(value) not in _TYPES:
            raise TypeError(f"Unsupported metric value type: {type(value).__name__}. "
                            "Expected bool, int, float, str, list, or dict.")
        with self._lock:
            known = self._types.get(key)
            if known is not None and known is not type(value):
                raise TypeError(f"Metric '{key}' has type {known.__name__}, cannot set to {type(value).__name__} "
                                "without deleting first")
            *parents, leaf = key.split(".")
            node = self._values
            for seg in parents:
                child = node.get(seg)
                if not isinstance(child, dict):
                    child = node[seg] = {}
                node = child
            old = node.get(leaf)
            if mode == "incr" and old is not None:
                if isinstance(old, bool) or not isinstance(old, (int, float)):
                    raise TypeError(f"Metric '{key}' is not numeric, cannot increment it")
                node[leaf] = old + value
            elif mode == "append":
                node[leaf] = (list(old) if isinstance(old, list) else [] if old is None else [old]) + [value]
            else:
                node[leaf] = copy.deepcopy(value)
            self._types[key] = type(value)
            top = key.split(".", 1)[0]
            shown = copy.deepcopy(self._values[top])
        self._send(top, shown)

    def _delete(self, key: str) -> None:
        with self._lock:
            self._types.pop(key, None)
            path = key.split(".")
            chain = [self._values]
            for seg in path[:-1]:
                nxt = chain[-1].get(seg)
                if not isinstance(nxt, dict):
                    return
                chain.append(nxt)
            if path[-1] not in chain[-1]:
                return
            del chain[-1][path[-1]]
            for depth in range(len(chain) - 1, 0, -1):  # drop parents left empty
                if not chain[depth]:
                    del chain[depth - 1][path[depth - 1]]
            top = path[0]
            shown = copy.deepcopy(self._values.get(top))
        self._send(top, shown)

    def _send(self, name: str, value: Any) -> None:
        if self._emit is None:
            return
        from replicate_jupyter.prediction.events import Metric

        self._emit(Metric(name=name, value=value))


def current_scope() -> Any:
    """The scope `cog.current_scope()` returns in this thread: ours while `scope_for` is active
    (or the only one active, for threads a predictor started), else coglet's own."""
    scope = _current.get()
    if scope is None:
        with _active_lock:
            scope = _active[0] if len(_active) == 1 else None
    if scope is not None:
        return scope
    if _native is not None:
        return _native()
    return Scope()


def native_scope() -> Any:
    """coglet's own scope for this context, never ours: for code that relays a prediction run in
    this process on to coglet (serve/batched.py). Through `cog.current_scope()` such code would
    get, by the one-active fallback, the batch's own scope, and feed each relayed metric back
    into the batch it came from, for ever."""
    _install()
    return _native() if _native is not None else Scope()


def _install() -> None:
    """Put `current_scope` in front of coglet's, once (coglet is imported only now)."""
    global _native
    if _native is not None:
        return
    with _install_lock:
        if _native is not None:
            return
        try:
            import coglet
        except ImportError:  # no coglet: cog.current_scope() cannot be reached anyway
            _native = lambda: Scope()  # noqa: E731
            return
        sdk = coglet._sdk  # type: ignore[attr-defined,unused-ignore]
        native = sdk.current_scope
        if getattr(native, "__module__", None) == __name__:  # installed by an earlier copy of this module
            _native = lambda: Scope()  # noqa: E731
            return
        _native = native
        try:
            sdk.current_scope = current_scope
        except (AttributeError, TypeError):  # a future coglet with a read-only module: leave it be
            pass


@contextlib.contextmanager
def scope_for(emit: Callable[[Any], None] | None, context: dict[str, str] | None = None) -> Iterator[Scope]:
    """Make `cog.current_scope()` this prediction's scope inside the block (this thread, the
    coroutines it schedules, and the threads the predictor starts while it is the only one)."""
    _install()
    scope = Scope(emit, context)
    token = _current.set(scope)
    with _active_lock:
        _active.append(scope)
    try:
        yield scope
    finally:
        with _active_lock:
            _active.remove(scope)
        try:
            _current.reset(token)
        except ValueError:  # exited in another context: clear this one instead
            _current.set(None)

"""`Prediction`: Replicate's prediction object, kept up to date by the one event stream.

A runner emits events into `emit()`; the Prediction folds them into its fields and hands each to
its listeners (display, ledger, cost guard) in order. Listeners added late are replayed the
history, so a display attached to an `--async` prediction misses nothing.
"""
from __future__ import annotations

import itertools
import secrets
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

from replicate_jupyter.cost import prices as cost
from replicate_jupyter.prediction.events import Completed, Event, Log, Metric, Output, Preview, Progress, Started
from replicate_jupyter.prediction.files import FileOutput, InputFile

__all__ = ["Prediction", "TERMINAL"]

TERMINAL = frozenset({"succeeded", "failed", "canceled"})
Listener = Callable[["Prediction", Event], None]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


_counter = itertools.count(1)


def _new_id() -> str:
    # Replicate ids are 26 lowercase base32 chars; ours are short, unique and sortable per kernel.
    return f"{next(_counter):04d}{secrets.token_hex(4)}"


class Prediction:
    """One run of a model. Fields follow Replicate's API; `metrics` holds predict_time,
    setup_time, hardware and cost_usd."""

    def __init__(
        self,
        model: str,
        input: dict[str, Any],
        *,
        version: str | None = None,
        backend: str = "local",
        schema: dict | None = None,
        runner: Any = None,
    ) -> None:
        self.id = _new_id()
        self.model = model
        self.version = version
        self.backend = backend
        self.input = input
        self.status = "starting"
        self.output: Any = None
        self.logs = ""
        self.error: str | None = None
        self.traceback: str | None = None
        self.created_at = _now()
        self.started_at: str | None = None
        self.completed_at: str | None = None
        self.metrics: dict[str, Any] = {}
        self.progress: tuple[int, int | None] | None = None
        self.preview: Any = None
        self.cell: int | None = None
        self.cancel_reason: str | None = None
        self.schema = schema
        self._runner = runner
        self._iterator = _is_iterator(schema)
        self._concatenate = _is_concatenate(schema)
        self.secret_fields = _secret_fields(schema)
        if self._iterator:
            self.output = []
        self._lock = threading.RLock()
        self._listeners: tuple[Listener, ...] = ()
        self._final = False  # a Completed was applied: nothing is applied after it
        self._done_callbacks: list[Callable[["Prediction"], None]] | None = []  # None once all ran
        self._history: list[Event] = []
        self._done = threading.Event()
        self.cancel_event = threading.Event()
        self._t_started: float | None = None
        self._t_created = time.monotonic()
        self._background = False  # handed to a background thread by api.start

    # ----- events -------------------------------------------------------------------------
    def emit(self, event: Event) -> None:
        """Fold one event into the state, then notify listeners (in the emitting thread).
        This runs for every token and step, so it stays a lock, a dict lookup and a loop."""
        with self._lock:
            if self._final:
                return  # exactly one Completed; nothing after it
            _APPLY[event.__class__](self, event)
            self._history.append(event)
            listeners = self._listeners  # a tuple, replaced (never mutated) by subscribe
            if event.__class__ is Completed:
                self._final = True
        for fn in listeners:
            try:
                fn(self, event)
            except Exception as exc:  # a broken listener must never kill a prediction
                self.logs += f"[replicate-jupyter] listener error: {exc!r}\n"
        if event.__class__ is Completed:
            while True:  # callbacks added meanwhile (even by a callback) run here too, in order
                with self._lock:
                    callbacks = self._done_callbacks
                    self._done_callbacks = [] if callbacks else None
                if not callbacks:
                    break
                for cb in callbacks:
                    self._call_done(cb)
            self._done.set()

    def on_done(self, fn: Callable[["Prediction"], None]) -> None:
        """Call `fn(prediction)` once it is final: in the thread that completed it, after the
        listeners and before `wait()` returns; at once if it is final already. For code that
        only cares about the end (a display's final draw), so it costs nothing per token."""
        with self._lock:
            if self._done_callbacks is not None:
                self._done_callbacks.append(fn)
                return
        self._call_done(fn)

    def _call_done(self, fn: Callable[["Prediction"], None]) -> None:
        try:
            fn(self)
        except Exception as exc:
            self.logs += f"[replicate-jupyter] done-callback error: {exc!r}\n"

    @property
    def seq(self) -> int:
        """How many events this prediction has had: a display redraws only when it moved."""
        return len(self._history)

    def _on_output(self, e: Output) -> None:
        if self._iterator and e.index is not None:
            self.output.append(e.value)
        else:
            self.output = e.value

    def _on_log(self, e: Log) -> None:
        self.logs += e.text

    def _on_progress(self, e: Progress) -> None:
        self.progress = (e.step, e.total)

    def _on_preview(self, e: Preview) -> None:
        self.preview = e.image

    def _on_started(self, e: Started) -> None:
        self.status = "processing"
        self.started_at = _now()
        self._t_started = time.monotonic()
        if e.hardware:
            self.metrics["hardware"] = e.hardware

    def _on_metric(self, e: Metric) -> None:
        self.metrics[e.name] = e.value

    def _on_completed(self, e: Completed) -> None:
        self.status = e.status
        self.error = e.error
        self.traceback = e.traceback
        self.completed_at = _now()
        self.metrics.update(e.metrics)
        pt = self.metrics.get("predict_time")
        if pt is not None:
            self.metrics["cost_usd"] = cost.cost_of(pt, self.metrics.get("hardware"))
        self.preview = None

    def subscribe(self, fn: Listener, replay: bool = True) -> None:
        """Add a listener; with `replay`, it first sees every event so far (same order)."""
        with self._lock:
            history = list(self._history) if replay else []
            self._listeners = self._listeners + (fn,)
            for event in history:
                fn(self, event)

    def unsubscribe(self, fn: Listener) -> None:
        with self._lock:
            self._listeners = tuple(f for f in self._listeners if f is not fn)

    def events(self, timeout: float | None = None, kinds: tuple[type, ...] | None = None) -> Iterator[Event]:
        """Every event from the start, then live ones, until Completed (always included).
        `kinds` keeps only those event classes, so the emitting thread does not wake the
        reader for events it would skip (each wake is a GIL hand-off between threads)."""
        import queue

        q: queue.SimpleQueue = queue.SimpleQueue()
        if kinds is None:
            self.subscribe(lambda _p, e: q.put(e))
        else:
            wanted = frozenset(kinds) | {Completed}
            self.subscribe(lambda _p, e: q.put(e) if e.__class__ in wanted else None)
        while True:
            e = q.get(timeout=timeout)
            yield e
            if e.__class__ is Completed:
                return

    # ----- replicate-python surface ---------------------------------------------------------
    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> "Prediction":
        """Block until a final state. Ctrl-C (a kernel interrupt) cancels the prediction."""
        try:
            if not self._done.wait(timeout):
                raise TimeoutError(f"prediction {self.id} still {self.status} after {timeout}s")
        except KeyboardInterrupt:
            self.cancel()
            self._done.wait(30)
            raise
        return self

    def cancel(self, reason: str | None = None) -> "Prediction":
        if self.done:
            return self
        if reason and not self.cancel_reason:
            self.cancel_reason = reason
        self.cancel_event.set()
        if self._runner is not None:
            try:
                self._runner.cancel(self)
            except Exception as exc:
                self.emit(Log(text=f"[replicate-jupyter] cancel request failed: {exc}\n"))
        return self

    def reload(self) -> "Prediction":
        """Local state is live (events update it), so there is nothing to fetch; runners that
        can refresh from a server do it here."""
        if self._runner is not None and hasattr(self._runner, "reload"):
            self._runner.reload(self)
        return self

    # ----- derived --------------------------------------------------------------------------
    @property
    def elapsed(self) -> float:
        """Seconds since the predictor started (0 before), the live predict_time estimate."""
        if "predict_time" in self.metrics and self.done:
            return float(self.metrics["predict_time"])
        return 0.0 if self._t_started is None else time.monotonic() - self._t_started

    @property
    def is_iterator(self) -> bool:
        return self._iterator

    @property
    def concatenate(self) -> bool:
        return self._concatenate

    @property
    def text(self) -> str | None:
        """The output as one string for text models (token streams joined)."""
        out = self.output
        if isinstance(out, str):
            return out
        if isinstance(out, list) and out:
            try:  # join itself checks every item is a str, in C (2,000 tokens: ~10 µs, not 80)
                return "".join(out) if self._concatenate else "\n".join(out)
            except TypeError:
                return None
        return None

    @property
    def files(self) -> list[FileOutput]:
        out = self.output if isinstance(self.output, list) else [self.output]
        return [x for x in out if isinstance(x, FileOutput)]

    def eta(self) -> float | None:
        if not self.progress or not self.progress[1] or self.progress[0] <= 0 or self._t_started is None:
            return None
        step, total = self.progress
        per = (time.monotonic() - self._t_started) / step
        return max(0.0, per * (total - step))

    def to_json(self, embed: bool = True) -> dict[str, Any]:
        """The `application/vnd.replicate.prediction+json` payload (see docs/ARCHITECTURE.md)."""
        with self._lock:
            prog = None
            if self.progress:
                eta = self.eta()
                prog = {"step": self.progress[0], "total": self.progress[1], "eta_s": None if eta is None else round(eta, 2)}
            return {
                "id": self.id,
                "model": self.model,
                "version": self.version,
                "status": self.status,
                "backend": self.backend,
                "input": {k: ("**********" if k in self.secret_fields else _jsonable(v)) for k, v in self.input.items()},
                "output": _jsonable(self.output),
                "output_display": "concatenate" if self._concatenate else None,
                "logs": self.logs,
                "error": self.error,
                "created_at": self.created_at,
                "started_at": self.started_at,
                "completed_at": self.completed_at,
                "metrics": dict(self.metrics),
                "progress": prog if not self.done else None,
                "preview": encode_preview(self.preview) if (self.preview is not None and not self.done) else None,
            }

    def _repr_mimebundle_(self, include=None, exclude=None):
        from replicate_jupyter.notebook import display

        return display.prediction_bundle(self)

    def __repr__(self) -> str:
        return f"<Prediction {self.id} {self.model} {self.status}>"


_APPLY: dict[type, Callable[["Prediction", Any], None]] = {
    Output: Prediction._on_output,
    Log: Prediction._on_log,
    Progress: Prediction._on_progress,
    Preview: Prediction._on_preview,
    Started: Prediction._on_started,
    Metric: Prediction._on_metric,
    Completed: Prediction._on_completed,
}


def encode_preview(image: Any) -> str | None:
    """A step preview as a small PNG data URI (previews are tiny; PNG keeps them exact)."""
    if image is None:
        return None
    if isinstance(image, str):
        return image
    import io

    from replicate_jupyter.prediction.files import data_uri

    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return data_uri(buf.getvalue(), "image/png")


def _jsonable(value: Any) -> Any:
    if isinstance(value, (FileOutput, InputFile)):
        return value.to_json()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        try:  # token streams: thousands of str chunks; join checks them all in C
            "".join(value)
            return list(value)
        except TypeError:
            return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if hasattr(value, "get_secret_value"):
        return "**********"
    return str(value)


def _secret_fields(schema: dict | None) -> frozenset[str]:
    """Inputs typed `cog.Secret`: their values never leave the kernel in a record."""
    props = ((schema or {}).get("components") or {}).get("schemas", {}).get("Input", {}).get("properties", {})
    return frozenset(k for k, v in props.items() if v.get("x-cog-secret") or v.get("format") == "password")


def _is_iterator(schema: dict | None) -> bool:
    out = ((schema or {}).get("components") or {}).get("schemas", {}).get("Output", {})
    return out.get("x-cog-array-type") == "iterator"


def _is_concatenate(schema: dict | None) -> bool:
    out = ((schema or {}).get("components") or {}).get("schemas", {}).get("Output", {})
    return out.get("x-cog-array-display") == "concatenate"

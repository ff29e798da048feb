"""`Prediction`: Replicate's prediction object, kept up to date by the one event stream.

A runner emits events into `emit()` from whatever thread it runs in; the Prediction folds each
into its fields as it records it, and its listeners (ledger, cost guard, webhooks, `events()`
readers) are handed the events in exactly the recorded order, always (`dispatch.py` says how).
Listeners added late are replayed the history first, so a display attached to an `--async`
prediction misses nothing.

The Prediction is data: it never imports how it looks. Its `_repr_mimebundle_` asks
`prediction.registry` for the renderer the notebook layer registered.
"""
from __future__ import annotations

import itertools
import secrets
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

from replicate_jupyter.cost import prices as cost
from replicate_jupyter.errors import PredictionTimeout
from replicate_jupyter.prediction import registry
from replicate_jupyter.prediction.dispatch import EventDispatch
from replicate_jupyter.prediction.events import TERMINAL, Completed, Event, Log, Metric, Output, Preview, Started
from replicate_jupyter.prediction.events import Progress as ProgressEvent
from replicate_jupyter.prediction.files import FileOutput
from replicate_jupyter.prediction.handle import ModelHandle
from replicate_jupyter.prediction.jsonable import encode_preview, is_concatenate, is_iterator, jsonable, secret_fields
from replicate_jupyter.prediction.progress_info import Progress as ProgressInfo
from replicate_jupyter.prediction.redact import MASK, Redactor, masked_input, reveal
from replicate_jupyter.prediction.surface import ReplicateSurface, plain_output

__all__ = ["Prediction", "TERMINAL", "Listener", "encode_preview", "plain_output"]

Listener = Callable[["Prediction", Event], None]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


_counter = itertools.count(1)


def _new_id() -> str:
    # Replicate ids are 26 lowercase base32 chars; ours are short, unique and sortable per kernel.
    return f"{next(_counter):04d}{secrets.token_hex(4)}"


class Prediction(ReplicateSurface, EventDispatch):
    """One run of a model. Fields follow Replicate's API; `metrics` holds predict_time,
    setup_time, hardware and cost_usd (and, once the ledger recorded it, notebook_total_usd:
    the kernel's total as of this prediction, which its cost line shows).

    Every field is declared here. Ours beside Replicate's: `handle` (the resolved model),
    `max_cost` (USD, `--max-cost`), `cell` (the notebook cell that started it), `background`
    (handed to a background thread), `display_cell` (the cell whose live display shows it, so
    that cell's value shows as one line, not a second card). `__slots__` holds them to
    that: code that sticks an undeclared attribute onto a Prediction fails at once.

    On the replicate backend three more come from Replicate, set by its runner once the create
    request is answered: `remote_id` (Replicate's id; `id` stays this kernel's, which the
    ledger, the display and `predictions.get` know it by, and `get` finds it by either),
    `urls` (Replicate's `get`, `cancel`, `stream`, `web`; `{}` on the other backends) and
    `version`. `params` holds the create parameters replicate-python takes (`webhook`,
    `webhook_events_filter`, `stream`, `wait`, `cancel_after`, `deployment`), which each backend
    honours its own way."""

    __slots__ = ("id", "model", "version", "backend", "input", "status", "output", "_logs", "error", "traceback",
                 "created_at", "started_at", "completed_at", "metrics", "progress", "preview", "handle", "max_cost",
                 "cell", "background", "display_cell", "cancel_reason", "cancel_event", "schema", "secret_fields",
                 "remote_id", "urls", "params", "ref",
                 "_runner", "_redactor", "_iterator", "_concatenate", "_t_started", "_preview_uri")
    Progress = ProgressInfo  # `Prediction.Progress`, as replicate-python names it

    def __init__(
        self,
        model: str,
        input: dict[str, Any],
        *,
        version: str | None = None,
        backend: str = "local",
        schema: dict[str, Any] | None = None,
        runner: Any = None,
        handle: ModelHandle | None = None,
        max_cost: float | None = None,
        cell: int | None = None,
        params: dict[str, Any] | None = None,
        ref: str | None = None,
    ) -> None:
        super().__init__()
        if schema is None and handle is not None:
            schema = handle.schema
        self.id = _new_id()
        self.model = model
        self.ref = ref  # the model reference as the user wrote it (a path, hf:…, owner/name), for reruns
        self.version = version
        self.backend = backend
        self.secret_fields = secret_fields(schema)
        self.input = masked_input(input, self.secret_fields)
        # one redaction step for everything this prediction shows (see prediction/redact.py)
        self._redactor = Redactor.of(reveal(self.input[k]) for k in self.secret_fields & self.input.keys())
        self.status = "starting"
        self.output: Any = None
        self._logs: list[str] = []  # the log in chunks, joined on read (`logs`): appending stays linear
        self.error: str | None = None
        self.traceback: str | None = None
        self.created_at = _now()
        self.started_at: str | None = None
        self.completed_at: str | None = None
        self.metrics: dict[str, Any] = {}
        self.progress: ProgressInfo | None = None  # replicate-python's Progress; unpacks as (step, total)
        self.preview: Any = None
        self._preview_uri: tuple[Any, str | None] | None = None  # (preview, its data URI): encoded once
        self.handle: ModelHandle | None = handle
        self.max_cost: float | None = max_cost
        self.cell: int | None = cell
        self.background = False
        self.display_cell: int | None = None
        self.cancel_reason: str | None = None
        self.cancel_event = threading.Event()
        self.schema = schema
        self.remote_id: str | None = None
        self.urls: dict[str, str] = {}
        self.params: dict[str, Any] = dict(params or {})
        self._runner = runner
        self._iterator = is_iterator(schema)
        self._concatenate = is_concatenate(schema)
        if self._iterator:
            self.output = []
        self._t_started: float | None = None

    def secret_input(self) -> dict[str, Any]:
        """The input with every secret's real value, for the one place that needs it (a runner
        sending it to its backend); `p.input` itself holds them masked (`Secret(**********)`)."""
        return {k: reveal(v) if k in self.secret_fields else v for k, v in self.input.items()}

    # ----- events -------------------------------------------------------------------------
    def emit(self, event: Event) -> None:
        """Record one event (see `EventDispatch.emit`), its text redacted first: the secrets'
        values never reach the history, the fields or any listener."""
        r = self._redactor
        if r is not None and event.__class__ in _REDACTED:
            event = r.event(event)
        EventDispatch.emit(self, event)

    @property
    def logs(self) -> str:
        """The whole log so far: chunks joined on read (then kept as one), because `logs += text`
        copied the whole log per line (10,000 lines: 1.6 s, growing quadratically)."""
        parts = self._logs
        if len(parts) > 1:
            with self._lock:
                parts[:] = ["".join(parts)]
        return parts[0] if parts else ""

    def _report(self, text: str) -> None:
        r = self._redactor
        with self._lock:
            self._logs.append(f"[replicate-jupyter] {text if r is None else r.text(text)}\n")

    def events(self, timeout: float | None = None, kinds: tuple[type, ...] | None = None) -> Iterator[Event]:
        """Every event from the start, then live ones, until Completed (always included).
        `timeout`: the longest wait for the next event, else `PredictionTimeout` (the
        prediction goes on). `kinds` keeps only those event classes, so the emitting thread
        does not wake the reader for events it would skip (each wake is a GIL hand-off)."""
        import queue

        q: queue.SimpleQueue[Event] = queue.SimpleQueue()
        wanted = None if kinds is None else frozenset(kinds) | {Completed}
        self._watched()

        def put(_p: Prediction, e: Event) -> None:
            if wanted is None or e.__class__ in wanted:
                q.put(e)

        self.subscribe(put)
        try:
            while True:
                try:
                    e = q.get(timeout=timeout)
                except queue.Empty:
                    raise PredictionTimeout(self.id, self.status, timeout, what="no event from prediction") from None
                yield e
                if e.__class__ is Completed:
                    return
        finally:
            self.unsubscribe(put)

    # ----- folding events into the fields ---------------------------------------------------
    def _on_output(self, e: Output) -> None:
        if self._iterator and e.index is not None:
            self.output.append(e.value)
        else:
            self.output = e.value

    def _on_log(self, e: Log) -> None:
        parts, r = self._logs, self._redactor
        if r is None:
            parts.append(e.text)
            return
        # a secret printed in pieces is whole only in the joined log: redact the log's last
        # `longest` characters joined with the new text (only the chunks holding them are read)
        i, got = len(parts), 0
        while i > 0 and got < r.longest:
            i -= 1
            got += len(parts[i])
        cut = max(0, got - r.longest)  # of parts[i]: the characters before the tail
        head = parts[i][:cut] if cut else ""
        tail = (parts[i][cut:] if i < len(parts) else "") + "".join(parts[i + 1:]) + e.text
        clean = r.text(tail)
        if clean is tail:
            parts.append(e.text)
        else:
            del parts[i:]
            parts.extend([head, clean] if head else [clean])

    def _on_progress(self, e: ProgressEvent) -> None:
        self.progress = ProgressInfo(e.step, e.total)

    def _on_preview(self, e: Preview) -> None:
        self.preview = e.image
        self._preview_uri = None

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
        self._preview_uri = None

    # ----- replicate-python surface ---------------------------------------------------------
    def wait(self, timeout: float | None = None) -> Prediction:
        """Block until final (its listeners and done-callbacks have run). Past `timeout`,
        `PredictionTimeout` (the prediction goes on). Ctrl-C (a kernel interrupt) cancels it."""
        self._watched()
        try:
            if not self._done.wait(timeout):
                raise PredictionTimeout(self.id, self.status, timeout)
        except KeyboardInterrupt:
            self.cancel()
            self._done.wait(30)
            raise
        return self

    def _watched(self) -> None:
        """Someone waits for this prediction: a runner that follows some predictions only on
        demand (the replicate backend's predictions from elsewhere) starts following it."""
        watch = getattr(self._runner, "watch", None)
        if watch is not None and not self.done:
            watch(self)

    def cancel(self, reason: str | None = None) -> Prediction:
        """Ask it to stop: sets `cancel_event` (a predictor's next `progress()` raises) and asks
        the runner to stop its backend. Safe from any thread and from a listener; a failed
        request is logged, and the run still ends with its one Completed."""
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

    def reload(self) -> Prediction:
        """Ask the backend for the prediction's state now. Local state is live (events update
        it), so on the kernel's own backends there is nothing to fetch; the replicate backend
        asks Replicate (`GET /v1/predictions/{id}`) and folds what it learns into the events."""
        refresh = getattr(self._runner, "reload", None)
        if refresh is not None:
            refresh(self)
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
        """Seconds left, from the pace so far (None before the first step or with no total)."""
        if not self.progress or self._t_started is None:
            return None
        step, total = self.progress
        if not total or step <= 0:
            return None
        per = (time.monotonic() - self._t_started) / step
        return max(0.0, per * (total - step))

    def to_json(self, embed: bool = True) -> dict[str, Any]:
        """The `application/vnd.replicate.prediction+json` payload (see docs/ARCHITECTURE.md)."""
        with self._lock:
            prog = None
            if self.progress:
                eta = self.eta()
                prog = {"step": self.progress[0], "total": self.progress[1], "eta_s": None if eta is None else round(eta, 2)}
            preview = self.preview if not self.done else None
            payload = {
                "id": self.id, "model": self.model, "version": self.version, "status": self.status,
                "backend": self.backend, "input": self._shown_input(), "output": jsonable(self.output),
                "output_display": "concatenate" if self._concatenate else None,
                "logs": self.logs, "error": self.error,
                "created_at": self.created_at, "started_at": self.started_at, "completed_at": self.completed_at,
                "metrics": dict(self.metrics),
                "progress": prog if not self.done else None,
                "preview": None,
            }
        if preview is not None:  # encoded outside the lock (a noisy 512 px PNG takes ~50 ms: the
            payload["preview"] = self._preview_data(preview)  # model's emits must not wait for it)
        return payload

    def _preview_data(self, preview: Any) -> str | None:
        """`preview` as a data URI, encoded once however many redraws show it."""
        cached = self._preview_uri
        if cached is not None and cached[0] is preview:
            return cached[1]
        uri = encode_preview(preview)
        with self._lock:
            if self.preview is preview:  # still the current one (not replaced or cleared meanwhile)
                self._preview_uri = (preview, uri)
        return uri

    def redact(self, value: Any) -> Any:
        """`value` (text, or JSON of lists and dicts) with this prediction's secrets and the
        session's tokens masked: for code that builds its own view of the prediction (a record)."""
        r = self._redactor
        return value if r is None else r.value(value)

    def _shown_input(self) -> dict[str, Any]:
        """The input as the payload shows it: secrets masked, and a session token given as an
        ordinary value (a prompt that quotes it) redacted too."""
        return self.redact({k: (MASK if k in self.secret_fields else jsonable(v)) for k, v in self.input.items()})

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return registry.mimebundle(self)

    def __repr__(self) -> str:
        return f"<Prediction {self.id} {self.model} {self.status}>"


#: the events whose text can carry a secret (the rest hold numbers, images and names)
_REDACTED = frozenset({Log, Output, Completed})


Prediction._appliers = {
    Output: Prediction._on_output, Log: Prediction._on_log, ProgressEvent: Prediction._on_progress,
    Preview: Prediction._on_preview, Started: Prediction._on_started, Metric: Prediction._on_metric,
    Completed: Prediction._on_completed,
}

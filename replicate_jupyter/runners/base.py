"""The interface every backend implements, and what a runner may do with a Prediction.

A runner knows how to find a model (`resolve`), run one prediction to a final state while
emitting events (`execute`), and ask its backend to stop (`cancel`). Everything else — input
validation, budget, display, ledger — happens above it, once, for every backend.

What a runner may read from the Prediction it is handed (all set before `execute` is called,
declared in `Prediction.__init__`):

    p.id, p.model, p.version      the id (for logs, remote ids) and the resolved model
    p.input                       the validated input (files as `InputFile`, secrets as cog.Secret)
    p.schema, p.secret_fields     the model's OpenAPI schema; inputs never to be logged or sent back
    p.is_iterator, p.concatenate  the output's shape (an iterator; a token stream)
    p.handle                      the `ModelHandle` this runner's `resolve` returned (`extra` is
                                  the runner's own: e.g. the local spec under "spec"); None only
                                  for a Prediction built by hand
    p.max_cost                    the `--max-cost` in USD, or None (the cost guard enforces it;
                                  a backend that can cap a run itself may use it)
    p.cancel_event, p.cancel_reason   set by `p.cancel()` before `Runner.cancel` is called
    p.status, p.started_at, p.metrics, p.elapsed   state the runner's own events made
    p.finished, p.done            a Completed is recorded / and its listeners have run

What a runner may call on it:

    p.emit(event)   from any thread: Started, Log, Output, Progress, Preview, Metric, then
                    exactly one Completed (events after it are dropped); listeners see
                    events in the order they were recorded, whichever thread emitted them
    p.version = v   once, when the backend reports the version it ran (Replicate does)

Nothing else: a runner sets no other attribute, never calls listeners, never imports the
notebook layer (display, forms, magics), and reports every outcome as an event.
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from replicate_jupyter.prediction.handle import ModelHandle

if TYPE_CHECKING:
    from replicate_jupyter.prediction.prediction import Prediction

__all__ = ["ModelHandle", "Runner"]

_admit_lock = threading.Lock()


class Runner:
    """Base class of the backends (`runners/local.py`, `runners/workers/`, …)."""

    name: str = "runner"
    #: True when `execute` may run several predictions at once (sweeps go concurrent).
    concurrent: bool = False
    #: at most this many predictions on this backend at once (None: no limit); the rest wait in
    #: `starting`, so a 500-point sweep does not open 500 streams against one connection pool
    max_inflight: int | None = None
    _inflight: threading.BoundedSemaphore | None = None

    def admit(self, p: Prediction) -> bool:
        """Wait for a place under `max_inflight` (at once without a limit). False when `p` was
        canceled while it waited: it is then recorded canceled, and nothing ran or was charged."""
        if self.max_inflight is None:
            return True
        with _admit_lock:
            if self._inflight is None:
                self._inflight = threading.BoundedSemaphore(self.max_inflight)
        while not self._inflight.acquire(timeout=0.05):
            if p.cancel_event.is_set():
                from replicate_jupyter.prediction.events import Completed

                p.emit(Completed(status="canceled", error=p.cancel_reason or "canceled before it started",
                                 metrics={"predict_time": 0.0}))
                return False
        return True

    def leave(self) -> None:
        """The place `admit` gave is free again."""
        if self._inflight is not None:
            self._inflight.release()

    def resolve(self, ref: Any) -> ModelHandle:
        """The model `ref` names on this backend; raises `ModelNotFound` (closest names)."""
        raise NotImplementedError

    def models(self) -> list[ModelHandle]:
        return []

    def execute(self, prediction: Prediction) -> None:
        """Run to a final state, emitting Started … Completed (exactly one Completed)."""
        raise NotImplementedError

    def cancel(self, prediction: Prediction) -> None:
        """Ask the backend to stop; `prediction.cancel_event` is already set. Called from any
        thread (a listener, the cost guard's timer, a button), so it must not block on the
        prediction's own events."""

    def close(self) -> None:
        """Release connections, threads, warm models."""

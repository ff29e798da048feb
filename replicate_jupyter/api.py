"""The Python API, shaped like replicate-python: `run`, `stream`, `predictions`, plus `schema`,
`models`, `ledger`, `form`.

Every call goes the same way: resolve the model on the backend, validate the input against its
schema (nothing is dispatched on bad input), check the budget, then hand a Prediction to the
runner. Display, ledger and cost guard only ever see the Prediction's events.
"""
from __future__ import annotations

import threading
from typing import Any, Iterator

from replicate_jupyter.cost import prices as cost
from replicate_jupyter.errors import BudgetExceeded, InputError, ModelError, Problem
from replicate_jupyter.prediction.events import Completed, Error, Event, Log, Output
from replicate_jupyter.prediction.prediction import TERMINAL, Prediction
from replicate_jupyter.session import session

__all__ = ["run", "stream", "predictions", "schema", "models", "ledger", "form", "create", "Predictions"]


def _resolve_model(ref: Any) -> Any:
    return session.default_model if ref is None else ref


def prepare(
    ref: Any = None,
    input: dict[str, Any] | None = None,
    *,
    on: str | None = None,
    seed: int | None = None,
    max_cost: float | None = None,
) -> Prediction:
    """Resolve, validate and budget-check; return a Prediction not yet started.
    Raises InputError / ModelNotFound / BudgetExceeded before anything is dispatched."""
    from replicate_jupyter.model.validation import validate

    backend = on or session.default_backend
    runner = session.runner(backend)
    handle = runner.resolve(_resolve_model(ref))
    given = dict(input or {})
    if seed is not None:
        props = handle.schema.get("components", {}).get("schemas", {}).get("Input", {}).get("properties", {})
        if "seed" not in props:
            raise InputError([Problem("seed", "unknown", seed, "this model has no seed input")], model=handle.name)
        given["seed"] = seed
    if max_cost is not None and max_cost <= 0:
        raise InputError([Problem("--max-cost", "minimum", max_cost, "> 0 USD")], model=handle.name)
    clean = validate(handle.schema, given, model=handle.name)
    if session.budget is not None:
        spent = session.ledger.total()
        if spent >= session.budget:
            raise BudgetExceeded(session.budget, spent)
    p = Prediction(handle.name, clean, version=handle.version, backend=backend, schema=handle.schema, runner=runner)
    p.handle = handle
    p.cell = session.current_cell
    p.max_cost = max_cost
    p.subscribe(session.ledger.listen)
    if session.budget is not None or max_cost is not None:
        CostGuard(p, max_cost).attach()
    session.track(p)
    return p


def execute(p: Prediction) -> Prediction:
    """Run a prepared prediction in this thread. A KeyboardInterrupt (the kernel's interrupt
    button) cancels it on its backend, records it, and propagates."""
    runner = p._runner
    try:
        runner.execute(p)
    except KeyboardInterrupt:
        if not p.done:
            p.cancel()
            p._done.wait(10)
        if not p.done:
            p.emit(Completed(status="canceled", metrics={"predict_time": round(p.elapsed, 6),
                                                          "hardware": p.metrics.get("hardware")}))
        raise
    except BaseException as exc:
        if not p.done:  # a runner bug must still leave the prediction final, never lost
            p.emit(Completed(status="failed", error=f"{type(exc).__name__}: {exc}",
                             metrics={"predict_time": round(p.elapsed, 6), "hardware": p.metrics.get("hardware")}))
        if not isinstance(exc, Exception):
            raise
    if not p.done:
        p.emit(Completed(status="failed", error=f"the {p.backend} backend ended without a result"))
    return p


def start(p: Prediction) -> Prediction:
    """Run a prepared prediction on a background thread (for --async, forms, sweeps)."""
    from replicate_jupyter.runners import threads

    p._background = True
    threads.submit(execute, p)
    return p


def create(ref: Any = None, input: dict[str, Any] | None = None, *, on: str | None = None,
           seed: int | None = None, max_cost: float | None = None) -> Prediction:
    """Start a prediction in the background and return it at once (`p.wait()` to block)."""
    return start(prepare(ref, input, on=on, seed=seed, max_cost=max_cost))


def run(ref: Any = None, input: dict[str, Any] | None = None, *, on: str | None = None,
        seed: int | None = None, max_cost: float | None = None, wait: bool = True) -> Any:
    """Run a model and return its output (like `replicate.run`). Raises ModelError if it fails."""
    p = prepare(ref, input, on=on, seed=seed, max_cost=max_cost)
    if not wait:
        return start(p)
    execute(p)
    if p.status == "failed":
        raise ModelError(p)
    return p.output


def stream(ref: Any = None, input: dict[str, Any] | None = None, *, on: str | None = None,
           seed: int | None = None) -> Iterator[Event]:
    """Yield `output`, `logs`, `error` and `done` events as they happen (like `replicate.stream`)."""
    p = create(ref, input, on=on, seed=seed)
    try:
        for e in p.events(kinds=(Output, Log)):
            if isinstance(e, Completed):
                if e.status == "failed":
                    yield Error(message=e.error or "failed")
                yield e
            else:  # Output or Log: the only kinds asked for
                yield e
    finally:
        if p.status not in TERMINAL:  # left early (break, error): stop it; Completed seen: nothing to stop
            p.cancel()


class Predictions:
    """`rj.predictions`: create, get, list, cancel — the kernel's predictions, all backends."""

    create = staticmethod(create)

    def get(self, id: str) -> Prediction:
        try:
            return session.predictions[id]
        except KeyError:
            raise KeyError(f"No prediction {id!r} in this kernel") from None

    def list(self) -> list[Prediction]:
        return list(session.predictions.values())

    def cancel(self, id: str) -> Prediction:
        return self.get(id).cancel()


predictions = Predictions()


def schema(ref: Any = None, *, on: str | None = None) -> dict:
    """The model's OpenAPI schema, in the shape Cog and Replicate publish."""
    return session.runner(on).resolve(_resolve_model(ref)).schema


def models(*, on: str | None = None) -> list:
    return session.runner(on).models()


def ledger():
    return session.ledger


def form(ref: Any = None, *, on: str | None = None):
    from replicate_jupyter.notebook.forms import form as _form

    return _form(_resolve_model(ref), on=on)


class CostGuard:
    """Cancels a running prediction once it would pass the budget or its own max cost.
    Checks on every event and on a 10 Hz timer, since a predictor may report nothing for a while."""

    def __init__(self, p: Prediction, max_cost: float | None) -> None:
        self.p = p
        self.max_cost = max_cost
        self._timer: threading.Thread | None = None

    def attach(self) -> None:
        self.p.subscribe(self.on_event)

    def on_event(self, p: Prediction, e: Event) -> None:
        if isinstance(e, Completed):
            return
        if self._timer is None and p.started_at is not None:
            self._timer = threading.Thread(target=self._tick, daemon=True, name=f"rj-cost-guard-{p.id}")
            self._timer.start()
        self.check()

    def _tick(self) -> None:
        while not self.p._done.wait(0.1):
            self.check()

    def check(self) -> None:
        p = self.p
        if p.done or p.cancel_event.is_set():
            return
        running = p.elapsed * cost.price(p.metrics.get("hardware"))
        if self.max_cost is not None and running >= self.max_cost:
            p.cancel(reason=f"canceled: --max-cost ${self.max_cost:.4f} reached")
        elif session.budget is not None and session.ledger.total() + running >= session.budget:
            p.cancel(reason=f"canceled: budget ${session.budget:.4f} reached")

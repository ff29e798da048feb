"""The Python API, shaped like replicate-python: `run`, `stream`, `predictions`, plus `schema`,
`models`, `ledger`.

Every call goes the same way: resolve the model on the backend, validate the input against its
schema (nothing is dispatched on bad input), check the budget, then hand a Prediction to the
runner. Display, ledger and cost guard only ever see the Prediction's events. The API sits
below the notebook layer: magics and forms use it, it never imports them.
"""
from __future__ import annotations

import math
from typing import Any, Iterator

from replicate_jupyter.cost.guard import CostGuard, check_budget
from replicate_jupyter.cost.ledger import Ledger
from replicate_jupyter.errors import InputError, ModelError, PredictionNotFound, Problem
from replicate_jupyter.prediction.events import Completed, Error, Event, Log, Output
from replicate_jupyter.prediction.prediction import TERMINAL, Prediction
from replicate_jupyter.session import session

__all__ = ["run", "stream", "predictions", "schema", "models", "ledger", "create", "prepare", "execute",
           "start", "Predictions"]

#: how long `execute` waits for listeners another thread is still running once a run is final
_LISTENERS_GRACE = 30.0


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
    """Resolve, validate and budget-check; return a Prediction not yet started, followed by
    the ledger (and a cost guard when there is a limit).
    Raises InputError / ModelNotFound / UnknownBackend / BudgetExceeded before anything is
    dispatched."""
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
    if max_cost is not None and not (isinstance(max_cost, (int, float)) and math.isfinite(max_cost) and max_cost > 0):
        raise InputError([Problem("--max-cost", "minimum", max_cost, "a finite number > 0 (USD)")], model=handle.name)
    clean = validate(handle.schema, given, model=handle.name)
    check_budget(session.budget, session.ledger)
    p = Prediction(handle.name, clean, version=handle.version, backend=backend, schema=handle.schema, runner=runner,
                   handle=handle, max_cost=max_cost, cell=session.current_cell)
    p.subscribe(session.ledger.listen)
    if session.budget is not None or max_cost is not None:
        CostGuard(p, max_cost, budget=lambda: session.budget, ledger=session.ledger).attach()
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
        if not p.finished:  # a runner bug must still leave the prediction final, never lost
            p.emit(Completed(status="failed", error=f"{type(exc).__name__}: {exc}",
                             metrics={"predict_time": round(p.elapsed, 6), "hardware": p.metrics.get("hardware")}))
        if not isinstance(exc, Exception):
            raise
    if not p.finished:
        p.emit(Completed(status="failed", error=f"the {p.backend} backend ended without a result"))
    # final; its listeners (the ledger's stamp) may still be running in the thread that was
    # delivering events when the Completed came: the caller reads the cost line next
    p._done.wait(_LISTENERS_GRACE)
    return p


def start(p: Prediction) -> Prediction:
    """Run a prepared prediction on a background thread (for --async, forms, sweeps)."""
    from replicate_jupyter.runners import threads

    p.background = True
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
        """The prediction `id` of this kernel; `PredictionNotFound` (a KeyError) if none."""
        try:
            p: Prediction = session.predictions[id]
        except (KeyError, TypeError):
            raise PredictionNotFound(str(id)) from None
        return p

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


def ledger() -> Ledger:
    """The cost ledger of this kernel (every backend's predictions, by cell and by model)."""
    return session.ledger



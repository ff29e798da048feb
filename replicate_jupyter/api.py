"""The Python API, replicate-python 1.0.7's: `run`, `stream`, `async_run`, `async_stream`,
`predictions`, plus ours (`on=`, `seed=`, `max_cost=`, `schema`, `ledger`).

Every call goes the same way: find the backend and the model (`routing.py`), validate the input
against its schema (nothing is dispatched on bad input), check the budget, then hand a
Prediction to the runner. Display, ledger and cost guard only ever see the Prediction's events.
The API sits below the notebook layer: magics and forms use it, it never imports them.

replicate-python's create parameters (`webhook`, `webhook_completed`, `webhook_events_filter`,
`stream`, `wait`, `cancel_after`, `file_encoding_strategy`) travel on the Prediction
(`p.params`): the replicate backend sends them to Replicate as replicate-python would; on the
kernel's backends a webhook is delivered by the kernel in Replicate's format and `cancel_after`
cancels the run past its deadline.
"""
from __future__ import annotations

import math
import weakref
from typing import Any, AsyncIterator, Iterator

from replicate_jupyter.cost.guard import CostGuard, check_budget, check_forecast
from replicate_jupyter.cost.ledger import Ledger
from replicate_jupyter.errors import BackendError, InputError, ModelError, PredictionNotFound, Problem
from replicate_jupyter.prediction.events import Completed, Event, Log, Output
from replicate_jupyter.prediction.outputs import with_looks
from replicate_jupyter.prediction.prediction import TERMINAL, Prediction, plain_output
from replicate_jupyter.prediction.record import draw_seed
from replicate_jupyter.runners.replicate import routing as _routing
from replicate_jupyter.runners.replicate.resources import Page
from replicate_jupyter.runners.replicate.routing import (
    CREATE_PARAMS,
    SessionTarget,
    Target,
    check_params,
    create_ref,
    model_ref,
    parse_duration,
)
from replicate_jupyter.session import session

#: the module-level functions' target: the session's runners, a bare name routed by who knows it
SESSION = SessionTarget(session)
session.observe(lambda change: _routing.note_choice(), names="default_backend")  # a choice the user made

__all__ = ["run", "stream", "async_run", "async_stream", "predictions", "schema", "models", "ledger", "create",
           "prepare", "execute", "start", "Predictions", "Page", "CREATE_PARAMS", "SESSION", "Log", "Output"]

#: how long `execute` waits for listeners another thread is still running once a run is final
_LISTENERS_GRACE = 30.0
#: predictions that failed because their backend could not be used, with that error
_CAUSES: weakref.WeakKeyDictionary[Prediction, BackendError] = weakref.WeakKeyDictionary()
def prepare(
    ref: Any = None,
    input: dict[str, Any] | None = None,
    *,
    on: str | None = None,
    seed: int | None = None,
    max_cost: float | None = None,
    params: dict[str, Any] | None = None,
    deployment: str | None = None,
    _target: Target | None = None,
) -> Prediction:
    """Resolve, validate and budget-check; return a Prediction not yet started, followed by
    the ledger (and a cost guard when there is a limit).
    Raises InputError / ModelNotFound / UnknownBackend / BudgetExceeded before anything is
    dispatched."""
    from replicate_jupyter.model.validation import validate

    target = _target or SESSION
    ref = model_ref(ref)  # a Model or Version object as its name, as replicate-python takes them
    clean_params = check_params(dict(params or {}))
    if deployment:
        backend, runner, handle = target.deployment(deployment, on)
        clean_params["deployment"] = deployment
    else:
        backend, runner, handle = target.resolve(ref, on)
    given = dict(input or {})
    if seed is not None:
        props = handle.schema.get("components", {}).get("schemas", {}).get("Input", {}).get("properties", {})
        if "seed" not in props:
            raise InputError([Problem("seed", "unknown", seed, "this model has no seed input")], model=handle.name)
        given["seed"] = seed
    if max_cost is not None and not (isinstance(max_cost, (int, float)) and math.isfinite(max_cost) and max_cost > 0):
        raise InputError([Problem("--max-cost", "minimum", max_cost, "a finite number > 0 (USD)")], model=handle.name)
    if handle.schema:  # a seed drawn now is the seed actually used: in the input, the record, the rerun
        given = draw_seed(handle.schema, given)
    # a bare version id has no schema here: Replicate validates it (a 422 fails the prediction)
    clean = validate(handle.schema, given, model=handle.name) if handle.schema else given
    webhook = clean_params.get("webhook") or clean_params.get("webhook_completed")
    if webhook and backend != "replicate":
        from replicate_jupyter.webhooks import check as check_webhook

        check_webhook(webhook, clean_params.get("webhook_events_filter")
                      if clean_params.get("webhook") else ["completed"])
    check_budget(session.budget, session.ledger)
    p = Prediction(handle.name, clean, version=handle.version, backend=backend, schema=handle.schema, runner=runner,
                   handle=handle, max_cost=max_cost, cell=session.current_cell, params=clean_params,
                   ref=ref if isinstance(ref, str) else None)
    check_forecast(p, session.budget, session.ledger)  # a forecast past the budget: refused, not run (max_cost cancels)
    p.subscribe(session.ledger.listen)
    if session.budget is not None or max_cost is not None:
        CostGuard(p, max_cost, budget=lambda: session.budget, ledger=session.ledger).attach()
    if backend != "replicate":  # Replicate delivers its own webhooks and keeps its own deadline
        _kernel_side(p, clean_params)
    session.track(p)
    return p


def _kernel_side(p: Prediction, params: dict[str, Any]) -> None:
    """What Replicate does for its predictions, done by the kernel for the others: webhooks in
    Replicate's format, and the `cancel_after` deadline."""
    if params.get("webhook"):
        from replicate_jupyter import webhooks

        webhooks.attach(p, params["webhook"], params.get("webhook_events_filter"))
    if params.get("webhook_completed"):
        from replicate_jupyter import webhooks

        webhooks.attach(p, params["webhook_completed"], ["completed"])
    if params.get("cancel_after"):
        import threading

        seconds = parse_duration(params["cancel_after"])
        timer = threading.Timer(seconds, lambda: p.cancel(reason=f"its cancel_after deadline ({params['cancel_after']}) passed"))
        timer.daemon = True
        timer.start()
        p.on_done(lambda _p: timer.cancel())


def execute(p: Prediction) -> Prediction:
    """Run a prepared prediction in this thread. A KeyboardInterrupt (the kernel's interrupt
    button) cancels it on its backend, records it, and propagates."""
    runner = p._runner
    try:
        if runner.admit(p):  # past the backend's max_inflight it waits in `starting`
            try:
                runner.execute(p)
            finally:
                runner.leave()
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
            if isinstance(exc, BackendError):  # the service, not the model: `run` raises it as it is
                _CAUSES[p] = exc
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
           seed: int | None = None, max_cost: float | None = None, **params: Any) -> Prediction:
    """Start a prediction in the background and return it at once (`p.wait()` to block)."""
    params.setdefault("stream", None)  # as replicate-python: no `stream` key unless asked for
    return start(prepare(ref, input, on=on, seed=seed, max_cost=max_cost, params=params))


def _result(p: Prediction, use_file_output: bool | None) -> Any:
    if p.status == "failed":
        cause = _CAUSES.get(p)
        if cause is not None:  # nothing ran: the backend could not be used (a 503, no token, …)
            raise cause
        raise ModelError(p)
    return with_looks(p.output) if use_file_output is not False else plain_output(p.output)


def _live(p: Prediction, use_file_output: bool | None) -> Iterator[Any]:
    for item in p.output_iterator():
        yield item if use_file_output is not False else plain_output(item)


def _run_params(params: dict[str, Any], wait: bool | int) -> dict[str, Any]:
    params = {"stream": None, **params}  # replicate-python's run sends no `stream` key
    params["wait"] = wait
    return params


def run(ref: Any = None, input: dict[str, Any] | None = None, *, use_file_output: bool | None = True,
        wait: bool | int = True, on: str | None = None, seed: int | None = None, max_cost: float | None = None,
        _target: Target | None = None, **params: Any) -> Any:
    """Run a model and return its output (replicate-python's `run`). Raises ModelError if it
    fails. Iterator models: with `wait=False` an iterator of items as they come; otherwise the
    list of items once done (a list iterates as replicate-python's iterator does).
    `use_file_output=False`: files as their URL strings. `wait`: True or N sends
    `Prefer: wait[=N]` on the replicate backend."""
    p = prepare(ref, input, on=on, seed=seed, max_cost=max_cost, params=_run_params(params, wait), _target=_target)
    if wait is False and p.is_iterator:
        return _live(start(p), use_file_output)
    execute(p)
    return _result(p, use_file_output)


async def async_run(ref: Any = None, input: dict[str, Any] | None = None, *, use_file_output: bool | None = True,
                    wait: bool | int = True, on: str | None = None, seed: int | None = None,
                    max_cost: float | None = None, _target: Target | None = None, **params: Any) -> Any:
    """`run` for asyncio (replicate-python's `async_run`): many at once under a TaskGroup run
    concurrently; a task canceled cancels its prediction."""
    import asyncio

    p = await asyncio.to_thread(prepare, ref, input, on=on, seed=seed, max_cost=max_cost,
                                params=_run_params(params, wait), _target=_target)
    start(p)
    if wait is False and p.is_iterator:
        return _alive(p, use_file_output)
    try:
        await p.async_wait()
    except asyncio.CancelledError:
        p.cancel(reason="its asyncio task was canceled")
        raise
    return _result(p, use_file_output)


async def _alive(p: Prediction, use_file_output: bool | None) -> AsyncIterator[Any]:
    async for item in p.async_output_iterator():
        yield item if use_file_output is not False else plain_output(item)


def stream(ref: Any = None, input: dict[str, Any] | None = None, *, use_file_output: bool | None = True,
           on: str | None = None, seed: int | None = None, _target: Target | None = None,
           **params: Any) -> Iterator[Event]:
    """Yield `output`, `logs`, `error` and `done` events as they happen (replicate-python's
    `stream`; `str(event)` is the output's text). A failed model yields `error` and `done`,
    then raises ModelError (replicate-python raises at its `error` event)."""
    p = start(prepare(ref, input, on=on, seed=seed, params={**params, "stream": True}, _target=_target))
    try:
        yield from p.stream(use_file_output)
    finally:
        if p.status not in TERMINAL:  # left early (break, error): stop it; Completed seen: nothing to stop
            p.cancel()
    if p.status == "failed":
        raise ModelError(p)


async def async_stream(ref: Any = None, input: dict[str, Any] | None = None, *, use_file_output: bool | None = True,
                       on: str | None = None, seed: int | None = None, _target: Target | None = None,
                       **params: Any) -> AsyncIterator[Event]:
    """`stream` for asyncio (replicate-python's `async_stream`, awaited to get the iterator)."""
    import asyncio

    p = await asyncio.to_thread(prepare, ref, input, on=on, seed=seed, params={**params, "stream": True},
                                _target=_target)
    start(p)
    return _astream(p, use_file_output)


async def _astream(p: Prediction, use_file_output: bool | None) -> AsyncIterator[Event]:
    try:
        async for e in p.async_stream(use_file_output):
            yield e
    finally:
        if p.status not in TERMINAL:
            p.cancel()
    if p.status == "failed":
        raise ModelError(p)


class Predictions:
    """`predictions`: replicate-python's namespace (create, get, list, cancel and their async
    twins) on a target: the module-level one holds every prediction of this kernel on every
    backend (and asks Replicate for ids it does not know); a Client's asks Replicate."""

    def __init__(self, target: Target) -> None:
        self._target = target

    def create(self, *args: Any, model: Any = None, version: Any = None, deployment: Any = None,
               input: dict[str, Any] | None = None, on: str | None = None, seed: int | None = None,
               max_cost: float | None = None, **params: Any) -> Prediction:
        """Start a prediction and return it: once Replicate has answered the create request on
        the replicate backend (so `id`, `remote_id`, `urls` and a refusal are there), at once on
        the others. `wait=True|N` holds until it is done (up to 60 s or N, as Prefer: wait)."""
        import time

        ref, dep = create_ref(args, model, version, deployment)
        if len(args) > 1:
            input = args[1]
        params.setdefault("stream", None)  # as replicate-python: no `stream` key unless asked for
        p = start(prepare(ref, input, on=on, seed=seed, max_cost=max_cost, params=params, deployment=dep,
                          _target=self._target))
        if p.backend == "replicate":
            while p.remote_id is None and not p.finished:
                time.sleep(0.002)
        wait = params.get("wait")
        if wait:
            p._done.wait(60.0 if wait is True else float(wait))
        return p

    def get(self, id: str, *, on: str | None = None) -> Prediction:
        """The prediction `id`: this kernel's (by its id or Replicate's), else Replicate's own;
        `PredictionNotFound` (a KeyError) if neither knows it."""
        from replicate_jupyter.runners.replicate import token as tokens

        if self._target.kernel_predictions and on in (None, session.default_backend) or on == "local":
            found = _kernel_prediction(id)
            if found is not None:
                return found
            if on is None and not tokens.configured():
                raise PredictionNotFound(str(id))
        try:
            return self._target.replicate(on, "remote predictions").remote.get(str(id))
        except InputError:
            raise PredictionNotFound(str(id)) from None
        except Exception as exc:
            if getattr(exc, "status", None) == 404:
                raise PredictionNotFound(str(id)) from None
            raise

    def list(self, cursor: Any = ..., *, on: str | None = None) -> Page[Prediction]:
        """A page of predictions, newest first as Replicate lists them (`list().results[0]` is
        the latest): this kernel's (module level), or Replicate's (a Client, `on="replicate"`,
        or a `cursor` from a page's `next`)."""
        if cursor is None:
            raise ValueError("cursor cannot be None")
        if self._target.kernel_predictions and cursor is ... and on != "replicate":
            return Page(list(reversed(session.predictions.values())))
        results, nxt, prev = self._target.replicate(on, "remote predictions").remote.list(
            None if cursor is ... else str(cursor))
        return Page(results, next=nxt, previous=prev)

    def cancel(self, id: str) -> Prediction:
        return self.get(id).cancel()

    async def async_create(self, *args: Any, **kwargs: Any) -> Prediction:
        import asyncio

        return await asyncio.to_thread(lambda: self.create(*args, **kwargs))

    async def async_get(self, id: str) -> Prediction:
        import asyncio

        return await asyncio.to_thread(self.get, id)

    async def async_list(self, cursor: Any = ...) -> Page[Prediction]:
        import asyncio

        return await asyncio.to_thread(self.list, cursor)

    async def async_cancel(self, id: str) -> Prediction:
        import asyncio

        return await asyncio.to_thread(self.cancel, id)


def _kernel_prediction(id: str) -> Prediction | None:
    try:
        found: Prediction = session.predictions[id]
        return found
    except (KeyError, TypeError):
        pass
    for p in list(session.predictions.values()):
        if p.remote_id == id:
            return p
    return None


predictions = Predictions(SESSION)


def schema(ref: Any = None, *, on: str | None = None) -> dict:
    """The model's OpenAPI schema, in the shape Cog and Replicate publish."""
    return SESSION.resolve(ref, on)[2].schema


def models(*, on: str | None = None) -> list:
    return session.runner(on).models()


def ledger() -> Ledger:
    """The cost ledger of this kernel (every backend's predictions, by cell and by model)."""
    return session.ledger



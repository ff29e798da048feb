"""What a `%%replicate` cell does once its option line is read: its inputs, the forecast check,
the run (one prediction, or a sweep's grid) with its live display, and how the cell ends.

`magics.py` parses and dispatches; this module runs. It uses only the public API
(`api.prepare/execute/start`), the session and the live displays; it never talks to a runner.

How a cell ends: its card is drawn final first, then, after an interrupt or when a model failed,
the cell raises one line (`Interrupted`, `ModelError`): the cell's reply is an error, so Run All
and nbconvert stop there, as they do for any cell that raises and as replicate-python's `run`
raises `ModelError`. A canceled run (`--max-cost`, the budget, a Cancel button) is an answer, not
an error: the cell's value is the Prediction. `-o NAME` holds the result in every case.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

from replicate_jupyter import api
from replicate_jupyter.errors import Interrupted, ModelError
from replicate_jupyter.notebook import live as rjlive
from replicate_jupyter.notebook.cellparse import model_axis, parse_body, sweep_grid
from replicate_jupyter.session import Session

__all__ = ["CellRun"]


class CellRun:
    """One cell's run: `session` for its settings and ledger, `user_ns` for `-o NAME`."""

    def __init__(self, session: Session, user_ns: dict[str, Any] | None) -> None:
        self.session = session
        self.user_ns = user_ns

    def inputs(self, args: Any, cell: str, ns: Mapping[str, Any], extra: dict | None = None,
               model: str | None = None, on: str | None = None) -> tuple[Any, dict, Callable[[], dict]]:
        """The model, the body's inputs, and its schema as a function: looked up only when read
        (`api.prepare` resolves the model anyway; the lookup is ~0.1 ms of a cell)."""
        from replicate_jupyter.model.schema import first_string_input

        model = model or args.model or self.session.default_model
        schema = functools.cache(lambda: api.schema(model, on=on or args.on))
        given = parse_body(cell, ns, text_field=lambda: first_string_input(schema()), model=model)
        if extra:
            given.update(extra)
        return model, given, schema

    def refuse_forecast(self, model: str, given: dict, schema_of: Callable[[], dict], on: str | None,
                        max_cost: float | None) -> None:
        """Before anything is dispatched: refuse a run whose forecast passes the budget or its
        --max-cost (cost/guard.py says how; api.prepare does the same for the Python API).
        The input is checked first, so a bad one is named before any money is."""
        if self.session.budget is None and max_cost is None:
            return
        from replicate_jupyter.cost.guard import check_forecast
        from replicate_jupyter.model.validation import validate

        schema = schema_of()
        name = str((schema.get("info") or {}).get("x-replicate-model") or model)
        clean = validate(schema, given, model=name)
        probe = _Probe(name, clean, schema, on or self.session.default_backend)
        check_forecast(probe, self.session.budget, self.session.ledger, max_cost)  # type: ignore[arg-type]

    def one(self, args: Any, cell: str, ns: Mapping[str, Any]) -> Any:
        model, given, schema = self.inputs(args, cell, ns)
        self.refuse_forecast(model, given, schema, args.on, args.max_cost)
        p = api.prepare(model, given, on=args.on, seed=args.seed, max_cost=args.max_cost)
        live = rjlive.LiveDisplay(p)
        live.async_mode = args.run_async
        live.attach()
        if args.run_async:
            api.start(p)
            return p
        try:
            api.execute(p)
        except KeyboardInterrupt:
            # api.execute already canceled it on its backend and recorded the partial time
            p._done.wait(10)
            live.finish()
            raise self._stopped(args, p, [p]) from None
        live.finish()
        if p.status == "failed":
            raise self._stopped(args, p, [p])
        return p

    def sweep(self, args: Any, cell: str, ns: Mapping[str, Any]) -> Any:
        """The grid of inputs; `model` is an axis too (each value resolved and validated on its
        own schema, a value `BACKEND:MODEL` runs on that backend)."""
        combos = sweep_grid(args.sweep)
        swept_seed = any(k == "seed" for k, _ in args.sweep)
        planned = []
        for combo in combos:  # every combination is validated before anything runs
            extra = dict(combo)
            model, on = model_axis(extra.pop("model", None), args.on)
            model, given, schema = self.inputs(args, cell, ns, extra=extra, model=model, on=on)
            planned.append((model, given, schema, on))
        for model, given, schema, on in planned:
            self.refuse_forecast(model, given, schema, on, args.max_cost)
        preds = [api.prepare(model, given, on=on, seed=None if swept_seed else args.seed, max_cost=args.max_cost)
                 for model, given, _schema, on in planned]
        labels = [", ".join(f"{k}={v}" for k, v in c.items()) for c in combos]
        grid = rjlive.GridDisplay(preds, labels)
        grid.async_mode = args.run_async
        grid.attach()
        if args.run_async:
            for p in preds:
                api.start(p)
            return preds
        try:
            together = [p for p in preds if getattr(p._runner, "concurrent", False)]
            for p in together:
                api.start(p)
            for p in preds:
                if p not in together:
                    api.execute(p)
            for p in together:
                p.wait()
        except KeyboardInterrupt:
            _cancel_all(preds)
            grid.finish()
            raise self._stopped(args, preds, preds) from None
        grid.finish()
        if any(p.status == "failed" for p in preds):
            raise self._stopped(args, preds, preds)
        return preds

    def _stopped(self, args: Any, result: Any, preds: list) -> Exception:
        """The one-line error a cell ends with after an interrupt or a failed model (its card is
        drawn already); `-o NAME` is set first, so the result is not lost."""
        if args.out and self.user_ns is not None:
            self.user_ns[args.out] = result
        where = f" (the result is in `{args.out}`)" if args.out else ""
        failed = [p for p in preds if p.status == "failed"]
        if not failed:
            stopped = sum(1 for p in preds if p.status == "canceled")
            what = preds[0].model if len(preds) == 1 else f"{stopped} of {len(preds)} predictions"
            return Interrupted(f"{what} canceled by the interrupt; the cells after this one were not run{where}")
        exc = ModelError(failed[0])
        if len(preds) > 1:
            exc.args = (f"{len(failed)} of {len(preds)} predictions failed; the first: {failed[0].error}{where}",)
        elif where:
            exc.args = (f"{exc}{where}",)
        return exc


class _Probe:
    """A run not yet prepared, as the forecast check reads one (model, input, schema, backend)."""

    def __init__(self, model: str, input: dict, schema: dict, backend: str) -> None:
        self.model, self.input, self.schema, self.backend, self.version = model, input, schema, backend, None


def _cancel_all(preds: list) -> None:
    """After an interrupt: cancel what runs, and close out what never started (no charge)."""
    from replicate_jupyter.prediction.events import Completed

    for p in preds:
        if p.done:
            continue
        if p.started_at is None and not p.background:
            p.cancel_event.set()
            p.emit(Completed(status="canceled", error="interrupted before it started", metrics={"predict_time": 0.0}))
        else:
            p.cancel(reason="interrupted")
    for p in preds:
        p._done.wait(10)

"""The budget, enforced: refuse a prediction before it runs, cancel one that runs past it.

Two limits: the kernel's budget (`%replicate budget USD`, the ledger's total may not pass it)
and a prediction's own `--max-cost`. Before anything is dispatched, `check_budget` refuses
once the ledger has reached the budget, and `check_forecast` refuses a prediction whose
forecast (`forecast.py`: history, else the model's per-unit price) would pass the budget or
its `--max-cost`, saying what the forecast rests on. While it runs, a `CostGuard` follows it
and cancels it once its running cost (`billing.running`: the units so far at the model's
prices, or the elapsed time at its hardware's price) would pass either limit. The guard looks
on every event and on a 10 Hz timer, since a predictor may report nothing for a while.
"""
from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Callable

from replicate_jupyter.cost import billing
from replicate_jupyter.cost.forecast import Forecast, forecast
from replicate_jupyter.cost.ledger import Ledger
from replicate_jupyter.errors import BudgetExceeded
from replicate_jupyter.prediction.events import Completed, Event

if TYPE_CHECKING:
    from replicate_jupyter.prediction.prediction import Prediction

__all__ = ["CostGuard", "check_budget", "check_forecast", "forecast_of", "running_cost", "reserved"]

#: the guards of predictions still running: the budget reserves what each has cost so far, so N
#: concurrent runs cannot each spend up to the budget (each guard alone would count only itself)
_live: weakref.WeakSet[CostGuard] = weakref.WeakSet()


#: ledger → (budget, entries) when the guard last canceled a run for that budget: the budget is
#: reached then, even if the canceled run's final predict_time (measured by its runner from the
#: call, not from Started) comes out a little under it; a new budget or a new entry clears it
_reached: weakref.WeakKeyDictionary[Ledger, tuple[float, int]] = weakref.WeakKeyDictionary()


def reserved() -> float:
    """What the predictions running under a guard have cost so far, together (USD)."""
    total = 0.0
    for g in list(_live):
        if not (g.p.done or g.p.finished):
            total += running_cost(g.p)
    return total

#: seconds between the guard's own looks at a prediction that emits nothing
INTERVAL = 0.1


def check_budget(budget: float | None, ledger: Ledger) -> None:
    """Raise `BudgetExceeded` when the ledger has reached `budget` (None: no budget)."""
    if budget is None:
        return
    spent = ledger.total() + reserved()  # the ledger, and what the running predictions hold already
    if spent >= budget or _reached.get(ledger) == (budget, len(ledger)):
        raise BudgetExceeded(budget, spent)


def forecast_of(p: Prediction, ledger: Ledger | None) -> Forecast | None:
    """The forecast of a prepared prediction, from `ledger`'s history and the price table."""
    return forecast(p.model, p.input, version=p.version, schema=p.schema, backend=p.backend, ledger=ledger)


def _refused(limit: float, spent: float, message: str, what: str = "budget") -> BudgetExceeded:
    exc = BudgetExceeded(limit, spent, what=what)
    exc.args = (message,)
    return exc


def check_forecast(p: Prediction, budget: float | None, ledger: Ledger, max_cost: float | None = None) -> Forecast | None:
    """Refuse `p` (not yet dispatched) when its forecast would pass the budget or its own
    `max_cost`: `BudgetExceeded`, naming the forecast and its basis. Returns the forecast."""
    if budget is None and max_cost is None:
        return None
    f = forecast_of(p, ledger)
    if f is None:
        return None
    spent = ledger.total()
    if budget is not None and spent + f.usd > budget:
        raise _refused(budget, spent, (
            f"Refused: {p.model} is forecast at ≈ ${f.usd:.4g} ({f.basis}); with ${spent:.4g} spent that passes "
            f"the budget of ${budget:.4g}. Nothing was run. Raise it with %replicate budget USD."))
    if max_cost is not None and f.usd > max_cost:
        raise _refused(max_cost, 0.0, (
            f"Refused: {p.model} is forecast at ≈ ${f.usd:.4g} ({f.basis}), over its --max-cost ${max_cost:.4g}. "
            "Nothing was run. Ask for less (fewer outputs, steps or tokens) or raise --max-cost."), what="--max-cost")
    return f


def running_cost(p: Prediction) -> float:
    """What `p` has cost so far: the units so far at its model's prices, or its elapsed
    predict time at its hardware's price."""
    return billing.running(p).usd


class CostGuard:
    """Cancels `p` once it would pass its own `max_cost` or the budget. `budget` is a function
    (the session's setting now, so a budget changed mid-run applies at once); `ledger` gives
    the total spent before this prediction."""

    def __init__(self, p: Prediction, max_cost: float | None, budget: Callable[[], float | None],
                 ledger: Ledger) -> None:
        self.p = p
        self.max_cost = max_cost
        self.budget = budget
        self.ledger = ledger
        self._timer: threading.Thread | None = None
        self._reached_budget: float | None = None

    def attach(self) -> CostGuard:
        _live.add(self)
        self.p.subscribe(self.on_event)
        self.p.on_done(lambda _p: _live.discard(self))
        return self

    def on_event(self, p: Prediction, e: Event) -> None:
        if isinstance(e, Completed):
            return
        if self._timer is None and p.started_at is not None:
            self._timer = threading.Thread(target=self._tick, daemon=True, name=f"rj-cost-guard-{p.id}")
            self._timer.start()
        self.check()

    def _tick(self) -> None:
        while not self.p._done.wait(INTERVAL):
            self.check()

    def check(self) -> None:
        p = self.p
        if p.done or p.finished or p.cancel_event.is_set():
            return
        running = running_cost(p)
        budget = self.budget()
        if self.max_cost is not None and running >= self.max_cost:
            p.cancel(reason=f"canceled: --max-cost ${self.max_cost:.4f} reached")
        elif budget is not None and self.ledger.total() + reserved() >= budget:  # reserved() counts p too
            self._reached_budget = budget
            p.on_done(self._mark_reached)
            p.cancel(reason=f"canceled: budget ${budget:.4f} reached")

    def _mark_reached(self, _p: Prediction) -> None:
        """After the ledger recorded the canceled run: its budget counts as reached."""
        if self._reached_budget is not None:
            _reached[self.ledger] = (self._reached_budget, len(self.ledger))

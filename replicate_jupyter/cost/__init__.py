"""What predictions cost, and the limits on it.

    prices.py    the price table (shipped as prices.json): per hardware second, per unit of a
                 model's output (image, megapixel, second of video/audio, input/output token),
                 each entry with its source and date; layers: shipped, a user's file, this kernel
    units.py     the billable units of a prediction, measured from what it returned
    billing.py   a prediction's bill: mode, units × prices, exact or an estimate (and why)
    forecast.py  what a prediction is expected to cost before it runs (history, else prices)
    ledger.py    one entry per finished prediction; stamps its cost and the notebook total onto it
    guard.py     the budget and --max-cost: refused before a run (forecast), canceled during one
    text.py      the words and figures of a cost (cost lines, bases, estimates), for every view

`cost.prices` and `cost.forecast` stay the modules (code reads `prices.prices`, `prices.cost_of`),
so they are not re-bound here.
"""
from __future__ import annotations

from replicate_jupyter.cost.billing import Bill, bill
from replicate_jupyter.cost.forecast import Forecast
from replicate_jupyter.cost.guard import CostGuard, check_budget, check_forecast, running_cost
from replicate_jupyter.cost.ledger import TOTAL_KEY, Entry, Ledger
from replicate_jupyter.cost.prices import ModelPrice, PriceTable, cost_of, price

__all__ = ["Ledger", "Entry", "TOTAL_KEY", "CostGuard", "check_budget", "check_forecast", "running_cost",
           "PriceTable", "ModelPrice", "price", "cost_of", "Bill", "bill", "Forecast"]

"""What predictions cost, and the limits on it.

    prices.py   the price table (shipped as prices.json, overridable per SKU): seconds → USD
    ledger.py   one entry per finished prediction; stamps the notebook total onto each
    guard.py    the budget and --max-cost: refused before a run, canceled during one

`cost.prices` stays the module (code reads `prices.prices`, `prices.cost_of`), so it is not
re-bound here.
"""
from __future__ import annotations

from replicate_jupyter.cost.guard import CostGuard, check_budget, running_cost
from replicate_jupyter.cost.ledger import TOTAL_KEY, Entry, Ledger
from replicate_jupyter.cost.prices import PriceTable, cost_of, price

__all__ = ["Ledger", "Entry", "TOTAL_KEY", "CostGuard", "check_budget", "running_cost", "PriceTable", "price", "cost_of"]

"""What a prediction cost, as Replicate would bill it, and how sure that figure is.

`bill(p)` picks the billing mode the price table gives the model:

- `per-unit`: the model has an entry (`owner/name[:version]` → USD per image, per token, …):
  cost = Σ units × price, each unit measured from the prediction (`units.py`);
- `hardware`: otherwise, predict_time × the price of the SKU it ran on.

A figure is exact only when every input to it was measured or reported and priced from the
table. It is an estimate — and says why, in `assumptions` — when the hardware was assumed
(Replicate's API reports no hardware and no price, so a model without an entry is costed as
the SKU the backend was told or defaults to), when the SKU has no price, or when a unit had to
be guessed. `running(p)` is the same while it runs: the units so far, or its elapsed time at
its hardware's price; always provisional.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from replicate_jupyter.cost import prices as _prices
from replicate_jupyter.cost.units import measure

if TYPE_CHECKING:
    from replicate_jupyter.cost.prices import PriceTable
    from replicate_jupyter.prediction.prediction import Prediction

__all__ = ["Bill", "bill", "running", "ESTIMATE_KEY", "BILLING_KEY"]

#: metrics keys the ledger writes beside `cost_usd`
ESTIMATE_KEY = "cost_estimate"
BILLING_KEY = "billing"
#: backends whose API reports neither the hardware nor the price of a prediction
_HARDWARE_UNREPORTED = ("replicate",)


@dataclass(frozen=True)
class Bill:
    """A prediction's cost: `usd`, its `mode`, the `units` measured and the `prices` used (USD
    per unit; for `hardware` mode the unit is a second of `sku`), and the `assumptions` that
    make it an estimate (none: exact)."""

    usd: float
    mode: str  # "per-unit" | "hardware"
    units: dict[str, float] = field(default_factory=dict)
    prices: dict[str, float] = field(default_factory=dict)
    assumptions: tuple[str, ...] = ()
    sku: str | None = None
    source: str = ""
    date: str = ""
    sku_assumed: bool = False  # the SKU is the backend's assumption, not what it reported

    @property
    def estimate(self) -> bool:
        return bool(self.assumptions)

    def to_json(self) -> dict[str, Any]:
        """What the prediction's metrics carry under `billing` (and the extension reads)."""
        return {"mode": self.mode, "units": dict(self.units), "prices": dict(self.prices), "sku": self.sku,
                "sku_assumed": self.sku_assumed, "estimate": self.estimate, "assumptions": list(self.assumptions),
                "source": self.source, "date": self.date}


def _table(table: PriceTable | None) -> PriceTable:
    return _prices.prices if table is None else table


def bill(p: Prediction, table: PriceTable | None = None, *, so_far: bool = False) -> Bill:
    """The cost of `p` (final), or of what it did so far (`so_far`)."""
    table = _table(table)
    entry = table.model(p.model, p.version)
    if entry is not None:
        units: dict[str, float] = {}
        assumptions: list[str] = []
        total = 0.0
        for unit, usd in entry.units.items():
            got = measure(p, unit, running=so_far)
            units[unit] = got.qty
            total += got.qty * usd
            if not got.exact:
                assumptions.append(got.how)
        return Bill(round(total, 10), "per-unit", units, dict(entry.units), tuple(assumptions),
                    p.metrics.get("hardware"), entry.source, entry.date)
    sku = p.metrics.get("hardware")
    # while a batch runs, a member's share of the device is its part of the batch (the final
    # predict_time is the batcher's exact split); the whole elapsed time would bill it N times
    share = max(1, int(p.metrics.get("batch_size") or 1)) if so_far else 1
    seconds = float(p.elapsed / share if so_far else (p.metrics.get("predict_time") or 0.0))
    usd_s = table.price(sku)
    assumptions = []
    assumed = bool(sku) and p.backend in _HARDWARE_UNREPORTED
    if not sku:
        assumptions.append("the backend reported no hardware: not costed")
    elif not table.known(sku):
        assumptions.append(f"no price for {sku}: costed at $0 (set one with %replicate price {sku}=USD_PER_S)")
    elif p.backend in _HARDWARE_UNREPORTED:
        assumptions.append(f"no price for {p.model} and Replicate reports no hardware: costed as {sku} "
                           f"seconds at ${usd_s:g}/s (set a price with %replicate price {p.model} UNIT=USD)")
    source, when = table.hardware_source(sku)
    usd = round(seconds * usd_s, 8) if not so_far else seconds * usd_s
    return Bill(usd, "hardware", {"second": seconds}, {"second": usd_s}, tuple(assumptions), sku, source, when,
                assumed)


def running(p: Prediction, table: PriceTable | None = None) -> Bill:
    """What `p` has cost so far while it runs (provisional: its final bill replaces it)."""
    return bill(p, table, so_far=True)

"""What a prediction is expected to cost, before it runs.

Two sources, the better first:

1. the ledger's history of the same model (succeeded runs billed the way it is billed now; the
   same backend when there are such): the median of what it used per unit asked for (seconds,
   images, tokens) × the units asked for now × today's prices. The unit is what the input
   asks: outputs (`num_outputs`, `num_images`), else tokens (`max_tokens`, `max_new_tokens`),
   else one prediction;
2. the model's per-unit price: images × price per image, the prompt's tokens (≈ 4 characters
   each) + `max_tokens` × the output price, one prediction × its flat price. A per-second
   price with no history cannot be forecast (nobody knows the duration yet).

A hardware-billed model with no history has no forecast (None). The forecast is what the
card shows while the prediction is `starting` ("≈ $0.05 expected"), what `%replicate
estimate` prints, and what the budget is checked against before anything is dispatched.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from replicate_jupyter.cost import prices as _prices
from replicate_jupyter.cost.text import unit_label
from replicate_jupyter.cost.units import CHARS_PER_TOKEN, asked, asked_outputs, asked_tokens, prompt_of

if TYPE_CHECKING:
    from replicate_jupyter.cost.ledger import Entry, Ledger
    from replicate_jupyter.cost.prices import PriceTable

__all__ = ["Forecast", "forecast"]

#: at most this many recent runs of a model make its history
HISTORY = 50


@dataclass(frozen=True)
class Forecast:
    """`usd` expected, and `basis`: how it was reached, in words a user can check."""

    usd: float
    basis: str
    source: str  # "history" | "price"

    def to_json(self) -> dict[str, Any]:
        return {"cost_usd": self.usd, "basis": self.basis, "source": self.source}


def _from_history(model: str, version: str | None, backend: str | None, want: tuple[str, str, int],
                  ledger: Ledger, table: PriceTable) -> Forecast | None:
    """Units per unit asked (seconds per output, tokens per max_token, …) from earlier runs,
    at today's prices: a price changed since still forecasts right."""
    unit, name, n = want
    runs: list[Entry] = [e for e in ledger.entries if e.model == model and e.status == "succeeded"
                         and e.asked and e.asked[0] == unit and e.asked[1] > 0]
    same = [e for e in runs if e.backend == backend]
    runs = (same or runs)[-HISTORY:]
    entry = table.model(model, version)
    mode = "per-unit" if entry is not None else "hardware"
    runs = [e for e in runs if e.mode == mode]
    if not runs:
        return None
    per = {"output": "output", "token": "token asked", "prediction": "prediction"}[unit]
    times = f" × {n} ({name})" if name else ""
    plural = "s" if len(runs) != 1 else ""
    if entry is None:
        sku = runs[-1].hardware
        seconds = statistics.median(e.predict_time / e.asked[1] for e in runs)  # type: ignore[index]
        usd_s = table.price(sku)
        return Forecast(seconds * n * usd_s, f"median {seconds:.3g} s per {per} over {len(runs)} earlier "
                        f"run{plural}{times} at ${usd_s:g}/s ({sku})", "history")
    usd, parts = 0.0, []
    for u, price in entry.units.items():
        ratios = [e.units[u] / e.asked[1] for e in runs if u in e.units]  # type: ignore[index]
        if not ratios:
            return None
        med = statistics.median(ratios)
        usd += med * n * price
        parts.append(f"{med:.4g} {unit_label(u, med)} per {per} × ${price:g}")
    return Forecast(usd, f"median over {len(runs)} earlier run{plural}: " + " + ".join(parts) + times, "history")


def _from_price(model: str, version: str | None, input: dict[str, Any], schema: dict | None,
                table: PriceTable) -> Forecast | None:
    entry = table.model(model, version)
    if entry is None or "second" in entry.units:
        return None
    usd, parts = 0.0, []
    for unit, price in entry.units.items():
        if unit in ("image", "video"):
            got = asked_outputs(input, schema)
            n = got[1] if got else 1
            parts.append(f"{n} {unit}{'s' if n != 1 else ''} × ${price:g}")
        elif unit == "prediction":
            n = 1
            parts.append(f"1 prediction × ${price:g}")
        elif unit == "input_token":
            n = math.ceil(len(prompt_of(input)) / CHARS_PER_TOKEN)
            parts.append(f"≈ {n} input tokens × ${price:g}")
        elif unit == "output_token":
            got = asked_tokens(input, schema)
            if not got:
                return None
            n = got[1]
            parts.append(f"up to {n} output tokens ({got[0]}) × ${price:g}")
        else:  # megapixels, seconds of media, a model's own metric: not known before it runs
            return None
        usd += n * price
    return Forecast(usd, " + ".join(parts) + f" ({entry.source or 'price table'})", "price")


def forecast(model: str, input: dict[str, Any], *, version: str | None = None, schema: dict | None = None,
             backend: str | None = None, ledger: Ledger | None = None,
             table: PriceTable | None = None) -> Forecast | None:
    """The expected cost of running `model` on `input`, or None when nothing says."""
    table = _prices.prices if table is None else table
    want = asked(input, schema)
    if ledger is not None:
        got = _from_history(model, version, backend, want, ledger, table)
        if got is not None:
            return got
    return _from_price(model, version, input, schema, table)

"""What a prediction is expected to cost, before it runs.

Two sources, the better first:

1. the ledger's history of the same model (succeeded runs billed the way it is billed now; the
   same backend when there are such): the median of what it used per unit asked for (seconds,
   images, tokens) × the units asked for now × today's prices. The unit is what the input
   asks: outputs (`num_outputs`, `num_images`), else tokens (`max_tokens`, `max_new_tokens`),
   else one prediction. A model with a steps-like input (`num_inference_steps`, `steps`, …)
   takes longer the more steps it runs, so its seconds per unit are read against the steps
   of the earlier runs (the ledger records them): a line through them (a fixed part + a part
   per step) when they ran two step counts or more, else in proportion to their steps;
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
from replicate_jupyter.cost.units import CHARS_PER_TOKEN, asked, asked_outputs, asked_steps, asked_tokens, prompt_of

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


def _by_steps(runs: list[Entry], steps: tuple[str, int], of: str) -> tuple[float, str]:
    """Seconds per unit asked for a run of `steps` (input name, count), and how that was
    reached: a line through the earlier runs' (steps, seconds) when they took two step counts
    or more (a fixed part, as loading and decoding, + a part per step), else in proportion."""
    name, n = steps
    xs = [float(e.steps or 0) for e in runs]
    ys = [e.predict_time / e.asked[1] for e in runs]  # type: ignore[index]
    k = f"{len(runs)} earlier run{'s' if len(runs) != 1 else ''}"
    if len(set(xs)) > 1:
        fit = statistics.linear_regression(xs, ys)
        if fit.slope > 0 and fit.intercept >= 0:
            secs = fit.intercept + fit.slope * n
            return secs, (f"{fit.intercept:.3g} s + {fit.slope:.3g} s per step{of}, fitted to {k}: "
                          f"{secs:.3g} s at {n} steps ({name})")
    per_step = statistics.median(y / x for x, y in zip(xs, ys))
    return per_step * n, f"median {per_step:.3g} s per step{of} over {k} × {n} steps ({name})"


def _from_history(model: str, version: str | None, backend: str | None, want: tuple[str, str, int],
                  ledger: Ledger, table: PriceTable, steps: tuple[str, int] | None = None) -> Forecast | None:
    """Units per unit asked (seconds per output, tokens per max_token, …) from earlier runs,
    at today's prices: a price changed since still forecasts right. `steps`: the steps this
    run asks for, when the model has a steps-like input (its time is counted per step)."""
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
        usd_s = table.price(sku)
        stepped = [e for e in runs if e.steps] if steps and unit != "token" else []
        if steps and stepped:  # its time goes with its steps: per step, for the steps asked now
            seconds, how = _by_steps(stepped, steps, "" if unit == "prediction" else f" of an {per}")
            return Forecast(seconds * n * usd_s, f"{how}{times} at ${usd_s:g}/s ({sku})", "history")
        seconds = statistics.median(e.predict_time / e.asked[1] for e in runs)  # type: ignore[index]
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
        got = _from_history(model, version, backend, want, ledger, table, asked_steps(input, schema))
        if got is not None:
            return got
    return _from_price(model, version, input, schema, table)

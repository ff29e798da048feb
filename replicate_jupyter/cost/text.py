"""The words and figures of a cost, the same in every view (cost line, card, ledger, CSV).

Plain functions of numbers and of the `billing` record the ledger stamps on a prediction's
metrics (`billing.Bill.to_json()`); nothing here renders HTML or reads a setting. An estimate
always reads `≈ $0.0012 est.`, an exact figure `$0.0012`, so the two are never confused.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from replicate_jupyter.cost.billing import BILLING_KEY, ESTIMATE_KEY
from replicate_jupyter.cost.ledger import TOTAL_KEY
from replicate_jupyter.prediction.prediction import TERMINAL

if TYPE_CHECKING:
    from replicate_jupyter.prediction.prediction import Prediction

__all__ = ["usd", "secs", "money", "unit_label", "quantity", "basis", "hardware_label", "assumptions_of",
           "notebook_total", "cost_line", "running_line", "forecast_line", "summary_line"]

_UNIT_WORDS = {
    "second": ("s", "s"), "prediction": ("prediction", "predictions"), "image": ("image", "images"),
    "megapixel": ("MP", "MP"), "video": ("video", "videos"), "video_second": ("s of video", "s of video"),
    "audio_second": ("s of audio", "s of audio"), "input_token": ("input token", "input tokens"),
    "output_token": ("output token", "output tokens"),
}


def usd(x: float | None) -> str:
    """Dollars as shown everywhere (cost lines, ledger, summaries), so they can be compared."""
    x = float(x or 0.0)
    if x == 0:
        return "$0.00"
    if abs(x) >= 0.01:
        return f"${x:.4f}"
    text = f"{x:.8f}".rstrip("0")
    return "$" + (text if len(text.split(".")[1]) >= 2 else f"{x:.2f}")


def secs(s: float | None) -> str:
    if s is None:
        return "–"
    return f"{s:.2f} s" if s < 60 else f"{int(s // 60)} min {s % 60:.0f} s"


def money(x: float | None, estimate: bool = False) -> str:
    """`$0.0012`, or `≈ $0.0012 est.` when the figure rests on an assumption."""
    return f"≈ {usd(x)} est." if estimate else usd(x)


def unit_label(unit: str, qty: float = 2.0) -> str:
    one, many = _UNIT_WORDS.get(unit, (unit, unit))
    return one if qty == 1 else many


def quantity(qty: float) -> str:
    """12 → "12", 0.786432 → "0.786", 1234567 → "1,234,567"."""
    if float(qty).is_integer():
        return f"{int(qty):,}"
    return f"{qty:,.3f}".rstrip("0").rstrip(".")


def basis(billing: dict[str, Any] | None) -> str:
    """What a per-unit cost was made of: `2 images × $0.05 + …`; "" for hardware billing."""
    if not billing or billing.get("mode") != "per-unit":
        return ""
    prices = billing.get("prices") or {}
    parts = []
    for unit, qty in (billing.get("units") or {}).items():
        q = float(qty)
        sep = "" if unit == "second" else " "
        parts.append(f"{quantity(q)}{sep}{unit_label(unit, q)} × ${float(prices.get(unit, 0)):g}")
    return " + ".join(parts)


def hardware_label(hardware: str | None, billing: dict[str, Any] | None) -> str:
    """The SKU as reported, `gpu-t4 (assumed)` when the backend only assumed it, or the unit
    basis for a model billed per unit (its hardware is not what it is billed by)."""
    if billing and billing.get("mode") == "per-unit":
        return basis(billing) or "billed per unit"
    if not hardware:
        return "unknown hardware"
    return f"{hardware} (assumed)" if billing and billing.get("sku_assumed") else hardware


def assumptions_of(billing: dict[str, Any] | None) -> list[str]:
    return [str(a) for a in (billing or {}).get("assumptions") or []]


def notebook_total(p: Prediction) -> float | None:
    """The kernel's total as of `p`, as the ledger stamped it (None: in no ledger yet)."""
    total = p.metrics.get(TOTAL_KEY)
    return None if total is None else float(total)


def cost_line(p: Prediction, total: bool = True) -> str:
    """`model · status · predict time · hardware · cost · cold start · notebook total` (the
    total only once a ledger recorded `p`). A model billed per unit shows its units in place of
    the hardware (`2 images × $0.05`); an estimate reads `≈ $0.0012 est.`. `total=False`: a
    member of a sweep's grid, whose one notebook total is its summary line's (members finish
    in any order but are listed in input order, so their own totals would read out of order)."""
    m = p.metrics
    billing = m.get(BILLING_KEY)
    parts = [p.model, p.status, secs(m.get("predict_time")), hardware_label(m.get("hardware"), billing),
             money(m.get("cost_usd"), bool(m.get(ESTIMATE_KEY)))]
    if int(m.get("batch_size") or 1) > 1:  # one forward pass for several predictions: this is its share
        parts[2] = f"{parts[2]} · batched ×{int(m['batch_size'])}"
    if (m.get("setup_time") or 0) >= 0.005:  # a cold start worth naming
        parts.append(f"cold start {secs(m.get('setup_time'))}")
    stamped = notebook_total(p) if total else None
    if stamped is not None:
        parts.append(f"notebook total {usd(stamped)}")
    return " · ".join(str(x) for x in parts)


def running_line(running: dict[str, Any] | None) -> str:
    """While it runs: `running · 2.31 s · cpu · ≈ $0.000231 so far` (the live display passes
    what `cost.billing.running` measured; the final cost line replaces it)."""
    if not running:
        return ""
    label = hardware_label(running.get("hardware"), running.get("billing"))
    return f"running · {secs(running.get('predict_time'))} · {label} · ≈ {usd(running.get('cost_usd'))} so far"


def forecast_line(forecast: dict[str, Any] | None) -> str:
    """Before it runs: `≈ $0.05 expected (4 images × $0.0125, from …)`."""
    if not forecast:
        return ""
    return f"≈ {usd(forecast.get('cost_usd'))} expected ({forecast.get('basis')})"


def summary_line(predictions: Sequence[Prediction]) -> str:
    """A sweep's one line: counts by status, time, cost (an estimate if any part is), and the
    notebook total after the last of them the ledger recorded."""
    n = len(predictions)
    counts: dict[str, int] = {}
    for p in predictions:
        counts[p.status] = counts.get(p.status, 0) + 1
    states = ", ".join(f"{v} {k}" for k, v in counts.items())
    seconds = sum(float(p.metrics.get("predict_time") or 0) for p in predictions)
    spent = sum(float(p.metrics.get("cost_usd") or 0) for p in predictions)
    estimate = any(p.metrics.get(ESTIMATE_KEY) for p in predictions)
    totals = [t for p in predictions if p.status in TERMINAL and (t := notebook_total(p)) is not None]
    line = f"{n} prediction{'s' if n != 1 else ''} · {states} · {secs(seconds)} · {money(spent, estimate)}"
    return line + (f" · notebook total {usd(max(totals))}" if totals else "")

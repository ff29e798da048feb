"""The cost ledger of this kernel: one entry per finished prediction.

It listens to Completed events, so every backend's predictions land here the same way, and the
notebook total in every cost line, `%replicate cost` and `rj.ledger()` agree by construction.
When it records a prediction it bills it (`billing.bill`: per unit or per hardware second,
exact or an estimate with its assumptions) and stamps onto the prediction's metrics the cost
(`cost_usd`, `cost_estimate`, `billing`) and the notebook total as of that prediction
(`notebook_total_usd`), so a cost line is a function of its Prediction alone: drawn again
later, or in a saved notebook, it shows the figure it showed then.

Readable from Python: iterate it (entries, oldest first), `rows()` (dicts), `to_csv(path)`,
`to_pandas()` (pandas only if installed: it is no dependency), `by("cell" | "model" |
"backend" | "day" | any Entry field)`.
"""
from __future__ import annotations

import csv
import json
import os
import threading
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Iterator

from replicate_jupyter.cost import billing
from replicate_jupyter.cost.units import asked, asked_steps
from replicate_jupyter.errors import InputError, Problem
from replicate_jupyter.prediction import registry
from replicate_jupyter.prediction.events import Completed, Event

if TYPE_CHECKING:
    from replicate_jupyter.prediction.prediction import Prediction

__all__ = ["Ledger", "Entry", "TOTAL_KEY", "GROUPS"]

#: the metrics key the ledger stamps: the kernel's total in USD once this prediction was recorded
TOTAL_KEY = "notebook_total_usd"
#: the groupings `%replicate cost` shows
GROUPS = ("cell", "model", "backend", "day")


@dataclass(frozen=True)
class Entry:
    """One billed prediction: what ran where, the units measured, the prices used, and whether
    the cost is exact (`estimate` False) or what was assumed."""

    id: str
    model: str
    backend: str
    hardware: str | None
    status: str
    predict_time: float
    setup_time: float | None
    cost_usd: float
    cell: int | None
    completed_at: str | None
    version: str | None = None
    mode: str = "hardware"
    estimate: bool = False
    units: dict[str, float] = field(default_factory=dict)
    prices: dict[str, float] = field(default_factory=dict)
    assumptions: tuple[str, ...] = ()
    asked: tuple[str, int] | None = None  # (unit, how many) the input asked for: the forecast's basis
    steps: int | None = None  # the steps it asked for (a steps-like input): the forecast scales by them too
    day: str | None = None  # the UTC date it completed (YYYY-MM-DD)

    def flat(self) -> dict[str, Any]:
        """One row of plain values (units and prices as `units.X` / `price.X` columns)."""
        row = {k: v for k, v in asdict(self).items() if k not in ("units", "prices", "assumptions", "asked")}
        row["assumptions"] = "; ".join(self.assumptions)
        row["asked"] = f"{self.asked[1]} {self.asked[0]}" if self.asked else ""
        row.update({f"units.{k}": v for k, v in self.units.items()})
        row.update({f"price.{k}": v for k, v in self.prices.items()})
        return row


class Ledger:
    def __init__(self) -> None:
        self._entries: list[Entry] = []
        self._through: dict[str, float] = {}  # id → the total once that prediction was recorded
        self._sum = 0.0
        self._lock = threading.Lock()

    def listen(self, prediction: Prediction, event: Event) -> None:
        """Prediction listener: record the prediction when it completes."""
        if isinstance(event, Completed):
            self.record(prediction)

    def record(self, p: Prediction) -> Entry:
        """Bill `p` (final), add it, and stamp its cost and the notebook total onto `p.metrics`."""
        m = p.metrics
        b = billing.bill(p)
        unit, _, n = asked(p.input, p.schema)
        steps = asked_steps(p.input, p.schema)
        entry = Entry(
            id=p.id, model=p.model, backend=p.backend, hardware=m.get("hardware"), status=p.status,
            predict_time=float(m.get("predict_time") or 0.0), setup_time=m.get("setup_time"), cost_usd=b.usd,
            cell=p.cell, completed_at=p.completed_at, version=p.version, mode=b.mode, estimate=b.estimate,
            units=dict(b.units), prices=dict(b.prices), assumptions=b.assumptions, asked=(unit, n),
            steps=steps[1] if steps else None,
            day=(p.completed_at or "")[:10] or None,
        )
        with self._lock:
            self._entries.append(entry)
            self._sum += entry.cost_usd
            through = self._through[entry.id] = round(self._sum, 10)
        # one dict update: a reader copying the metrics sees the old figures or all the new ones
        p.metrics.update({"cost_usd": b.usd, billing.ESTIMATE_KEY: b.estimate, billing.BILLING_KEY: b.to_json(),
                          TOTAL_KEY: through})
        return entry

    def total_through(self, id: str) -> float:
        """The notebook total as of prediction `id` (ledger order); the current total for a
        prediction not recorded (yet)."""
        through = self._through.get(id)
        return self.total() if through is None else through

    @property
    def entries(self) -> list[Entry]:
        with self._lock:
            return list(self._entries)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries)

    def __getitem__(self, index: int) -> Entry:
        return self.entries[index]

    def __len__(self) -> int:
        return len(self._entries)

    def total(self) -> float:
        return round(sum(e.cost_usd for e in self.entries), 10)

    def gpu_seconds(self) -> float:
        return sum(e.predict_time for e in self.entries)

    def estimated(self) -> int:
        """How many entries are estimates (their cost rests on an assumption)."""
        return sum(1 for e in self.entries if e.estimate)

    def reset(self) -> None:
        with self._lock:
            self._entries.clear()
            self._through.clear()
            self._sum = 0.0

    def by(self, key: str) -> dict[Any, dict[str, float]]:
        """Sums grouped by an Entry field (`cell`, `model`, `hardware`, `backend`, `day`, …):
        predictions, predict_time, cost_usd, and how many of them are estimates."""
        if key not in Entry.__dataclass_fields__ or key in ("units", "prices", "assumptions"):
            allowed = [f for f in Entry.__dataclass_fields__ if f not in ("units", "prices", "assumptions")]
            raise InputError([Problem("key", "choices", key, "one of: " + ", ".join(allowed))])
        groups: dict[Any, dict[str, float]] = {}
        for e in self.entries:
            g = groups.setdefault(getattr(e, key),
                                  {"predictions": 0, "predict_time": 0.0, "cost_usd": 0.0, "estimated": 0})
            g["predictions"] += 1
            g["predict_time"] += e.predict_time
            g["cost_usd"] += e.cost_usd
            g["estimated"] += int(e.estimate)
        for g in groups.values():
            g["cost_usd"] = round(g["cost_usd"], 10)
        return groups

    def by_cell(self) -> dict[Any, dict[str, float]]:
        return self.by("cell")

    def by_model(self) -> dict[Any, dict[str, float]]:
        return self.by("model")

    def by_backend(self) -> dict[Any, dict[str, float]]:
        return self.by("backend")

    def by_day(self) -> dict[Any, dict[str, float]]:
        return self.by("day")

    # ----- export -------------------------------------------------------------------------------
    def rows(self) -> list[dict[str, Any]]:
        """Every entry as a dict (units, prices and assumptions kept as they are)."""
        return [asdict(e) for e in self.entries]

    def flat_rows(self) -> list[dict[str, Any]]:
        """Every entry as one row of plain values (`units.X` / `price.X` columns), as a CSV or a
        DataFrame holds them."""
        return [e.flat() for e in self.entries]

    def columns(self, rows: list[dict[str, Any]] | None = None) -> list[str]:
        base = [f for f in Entry.__dataclass_fields__ if f not in ("units", "prices")]
        extra = sorted({k for r in (self.flat_rows() if rows is None else rows) for k in r} - set(base))
        return base + extra

    def to_csv(self, path: str | os.PathLike[str]) -> int:
        """Write the ledger as CSV (one row per prediction); returns the rows written."""
        rows = self.flat_rows()
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=self.columns(rows), restval="")
            writer.writeheader()
            writer.writerows(rows)
        return len(rows)

    def to_pandas(self) -> Any:
        """The ledger as a pandas DataFrame (pandas is not a dependency: install it to use this)."""
        try:
            import pandas as pd
        except ImportError:
            raise ModuleNotFoundError("Ledger.to_pandas needs pandas, which replicate-jupyter does not install: "
                                      "pip install pandas (or use .rows() / .to_csv(path))", name="pandas") from None
        rows = self.flat_rows()
        return pd.DataFrame(rows, columns=self.columns(rows))

    def to_json(self) -> dict[str, Any]:
        """The machine-readable ledger (our own mime type carries it, never application/json)."""
        return {"entries": json.loads(json.dumps(self.rows(), default=str)), "total_usd": self.total(),
                "predict_time": self.gpu_seconds(), "estimated": self.estimated()}

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return registry.mimebundle(self)  # the look the notebook layer registered (registry.py)

    def __repr__(self) -> str:
        return f"<Ledger {len(self)} predictions, ${self.total():.4f}, {self.gpu_seconds():.1f} s>"

"""The cost ledger of this kernel: one entry per finished prediction.

It listens to Completed events, so every backend's predictions land here the same way, and the
notebook total in every cost line, `%replicate cost` and `rj.ledger()` agree by construction.
When it records a prediction it stamps the notebook total as of that prediction onto the
prediction's metrics (`notebook_total_usd`), so a cost line is a function of its Prediction
alone: drawn again later, or in a saved notebook, it shows the figure it showed then.
"""
from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from replicate_jupyter.errors import InputError, Problem
from replicate_jupyter.prediction import registry
from replicate_jupyter.prediction.events import Completed, Event

if TYPE_CHECKING:
    from replicate_jupyter.prediction.prediction import Prediction

__all__ = ["Ledger", "Entry", "TOTAL_KEY"]

#: the metrics key the ledger stamps: the kernel's total in USD once this prediction was recorded
TOTAL_KEY = "notebook_total_usd"


@dataclass(frozen=True)
class Entry:
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
        """Add `p` (final) and stamp the notebook total as of it onto `p.metrics`."""
        m = p.metrics
        entry = Entry(
            id=p.id,
            model=p.model,
            backend=p.backend,
            hardware=m.get("hardware"),
            status=p.status,
            predict_time=float(m.get("predict_time") or 0.0),
            setup_time=m.get("setup_time"),
            cost_usd=float(m.get("cost_usd") or 0.0),
            cell=p.cell,
            completed_at=p.completed_at,
        )
        with self._lock:
            self._entries.append(entry)
            self._sum += entry.cost_usd
            through = self._through[entry.id] = round(self._sum, 8)
        p.metrics[TOTAL_KEY] = through  # one dict store: atomic beside to_json's copy
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

    def total(self) -> float:
        return round(sum(e.cost_usd for e in self.entries), 8)

    def gpu_seconds(self) -> float:
        return sum(e.predict_time for e in self.entries)

    def reset(self) -> None:
        with self._lock:
            self._entries.clear()
            self._through.clear()
            self._sum = 0.0

    def by(self, key: str) -> dict[Any, dict[str, float]]:
        """Sums grouped by an Entry field (`cell`, `model`, `hardware`, `backend`, …)."""
        if key not in Entry.__dataclass_fields__:
            raise InputError([Problem("key", "choices", key, "one of: " + ", ".join(Entry.__dataclass_fields__))])
        groups: dict[Any, dict[str, float]] = {}
        for e in self.entries:
            g = groups.setdefault(getattr(e, key), {"predictions": 0, "predict_time": 0.0, "cost_usd": 0.0})
            g["predictions"] += 1
            g["predict_time"] += e.predict_time
            g["cost_usd"] += e.cost_usd
        return groups

    def by_cell(self) -> dict[Any, dict[str, float]]:
        return self.by("cell")

    def by_model(self) -> dict[Any, dict[str, float]]:
        return self.by("model")

    def rows(self) -> list[dict[str, Any]]:
        return [asdict(e) for e in self.entries]

    def __len__(self) -> int:
        return len(self._entries)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return registry.mimebundle(self)  # the look the notebook layer registered (registry.py)

    def __repr__(self) -> str:
        return f"<Ledger {len(self)} predictions, ${self.total():.4f}, {self.gpu_seconds():.1f} s>"

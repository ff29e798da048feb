"""The interface every backend implements.

A runner knows how to find a model (`resolve`), run one prediction to a final state while
emitting events (`execute`), and ask its backend to stop (`cancel`). Everything else — input
validation, budget, display, ledger — happens above it, once, for every backend.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ModelHandle", "Runner"]


@dataclass
class ModelHandle:
    name: str
    version: str | None
    schema: dict
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Runner:
    """Base class of the backends (`runners/local.py`, `runners/workers.py`, …)."""

    name: str = "runner"
    #: True when `execute` may run several predictions at once (sweeps go concurrent).
    concurrent: bool = False

    def resolve(self, ref: Any) -> ModelHandle:
        raise NotImplementedError

    def models(self) -> list[ModelHandle]:
        return []

    def execute(self, prediction) -> None:
        """Run to a final state, emitting Started … Completed (exactly one Completed)."""
        raise NotImplementedError

    def cancel(self, prediction) -> None:
        """Ask the backend to stop; `prediction.cancel_event` is already set."""

    def close(self) -> None:
        """Release connections, threads, warm models."""

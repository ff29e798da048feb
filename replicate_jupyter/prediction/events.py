"""The one event model every backend speaks.

Runners turn whatever their backend does (a Python call, Cog's SSE stream, a Ray generator,
Replicate's API) into these; the Prediction, the display and the ledger read only these.
`.event` follows replicate-python's stream names where they exist (output, logs, done).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

__all__ = ["Event", "Started", "Log", "Output", "Progress", "Preview", "Metric", "Completed", "Error"]


@dataclass(frozen=True, slots=True)
class Event:
    event: ClassVar[str] = "event"

    def __str__(self) -> str:
        return ""


@dataclass(frozen=True, slots=True)
class Started(Event):
    event: ClassVar[str] = "start"
    hardware: str | None = None


@dataclass(frozen=True, slots=True)
class Log(Event):
    event: ClassVar[str] = "logs"
    text: str = ""

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True)
class Output(Event):
    """One item of an iterator output (`index` 0, 1, …) or the whole output (`index=None`)."""

    event: ClassVar[str] = "output"
    value: Any = None
    index: int | None = None

    def __str__(self) -> str:
        return self.value if isinstance(self.value, str) else str(self.value)


@dataclass(frozen=True, slots=True)
class Progress(Event):
    event: ClassVar[str] = "progress"
    step: int = 0
    total: int | None = None


@dataclass(frozen=True, slots=True)
class Preview(Event):
    event: ClassVar[str] = "preview"
    image: Any = None
    step: int | None = None


@dataclass(frozen=True, slots=True)
class Metric(Event):
    event: ClassVar[str] = "metric"
    name: str = ""
    value: Any = None


@dataclass(frozen=True, slots=True)
class Error(Event):
    """Only in `stream()`: replicate-python's `error` event before `done` on failure."""

    event: ClassVar[str] = "error"
    message: str = ""

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True, slots=True)
class Completed(Event):
    event: ClassVar[str] = "done"
    status: str = "succeeded"  # succeeded | failed | canceled
    error: str | None = None
    traceback: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

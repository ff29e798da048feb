"""The one event model every backend speaks.

Runners turn whatever their backend does (a Python call, Cog's SSE stream, a Ray generator,
Replicate's API) into these; the Prediction, the display and the ledger read only these.

The four a `stream()` yields are shaped like replicate-python's `ServerSentEvent`: `.event` is
`output`, `logs`, `error` or `done` (an `EventType`, a str-Enum: `== "output"` and `.value`
both hold), `.data` the event's text and `.id` its place in the stream,
and `str(event)` is the data of an `output` event and `""` for every other kind (so
`print(str(event), end="")` prints the generated text and nothing else: a log line never lands
inside the answer).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar

__all__ = ["Event", "EventType", "Started", "Log", "Output", "Progress", "Preview", "Metric", "Completed", "Error",
           "TERMINAL"]

#: a prediction's final statuses (`aborted`: it ended before it ran, e.g. its deadline passed)
TERMINAL = frozenset({"succeeded", "failed", "canceled", "aborted"})


class EventType(str, Enum):
    """`event.event`: an Enum, as replicate-python's `ServerSentEvent.EventType` (`.value`,
    `.name`, `is EventType.OUTPUT`), and a str equal to the plain name (`== "output"`, `str()`,
    f-strings, JSON and dict keys all see `"output"`), so code written for either works."""

    OUTPUT = "output"
    LOGS = "logs"
    ERROR = "error"
    DONE = "done"
    START = "start"
    PROGRESS = "progress"
    PREVIEW = "preview"
    METRIC = "metric"
    EVENT = "event"

    __str__ = str.__str__  # "output", not "EventType.OUTPUT" (Python 3.10's Enum str)
    __format__ = str.__format__  # type: ignore[assignment]
    __hash__ = str.__hash__  # a dict keyed by "output" finds EventType.OUTPUT


@dataclass(frozen=True, slots=True)
class Event:
    event: ClassVar[EventType] = EventType.EVENT

    @property
    def data(self) -> Any:
        """The event's payload as replicate-python's ServerSentEvent carries it."""
        return ""

    @property
    def id(self) -> str:
        """The event's place in its stream (replicate-python's `ServerSentEvent.id`)."""
        return ""

    def __str__(self) -> str:
        return ""


@dataclass(frozen=True, slots=True)
class Started(Event):
    event: ClassVar[EventType] = EventType.START
    hardware: str | None = None


@dataclass(frozen=True, slots=True)
class Log(Event):
    event: ClassVar[EventType] = EventType.LOGS
    text: str = ""

    @property
    def data(self) -> str:
        return self.text.rstrip("\n")

    # str() stays "" (Event's): replicate-python prints only output events' data


@dataclass(frozen=True, slots=True)
class Output(Event):
    """One item of an iterator output (`index` 0, 1, …) or the whole output (`index=None`)."""

    event: ClassVar[EventType] = EventType.OUTPUT
    value: Any = None
    index: int | None = None

    @property
    def data(self) -> Any:
        """The text as it came (a str), a file as its FileOutput (whose str() is its URL), other
        values as JSON, as Replicate's stream sends them."""
        v = self.value
        if isinstance(v, str) or hasattr(v, "read"):
            return v
        try:
            return json.dumps(v)
        except (TypeError, ValueError):
            return str(v)

    @property
    def id(self) -> str:
        return "" if self.index is None else str(self.index)

    def __str__(self) -> str:
        return self.value if isinstance(self.value, str) else str(self.data)


@dataclass(frozen=True, slots=True)
class Progress(Event):
    event: ClassVar[EventType] = EventType.PROGRESS
    step: int = 0
    total: int | None = None


@dataclass(frozen=True, slots=True)
class Preview(Event):
    event: ClassVar[EventType] = EventType.PREVIEW
    image: Any = None
    step: int | None = None


@dataclass(frozen=True, slots=True)
class Metric(Event):
    event: ClassVar[EventType] = EventType.METRIC
    name: str = ""
    value: Any = None


@dataclass(frozen=True, slots=True)
class Error(Event):
    """Only in `stream()`: replicate-python's `error` event before `done` on failure."""

    event: ClassVar[EventType] = EventType.ERROR
    message: str = ""

    @property
    def data(self) -> str:
        return json.dumps({"detail": self.message})


@dataclass(frozen=True, slots=True)
class Completed(Event):
    event: ClassVar[EventType] = EventType.DONE
    status: str = "succeeded"  # succeeded | failed | canceled | aborted
    error: str | None = None
    traceback: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def data(self) -> str:
        """Replicate's `done` data: `{}` on success, else `{"reason": status}`."""
        if self.status == "succeeded":
            return "{}"
        return json.dumps({"reason": "error" if self.status == "failed" else self.status})

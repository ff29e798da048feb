"""Server-sent events from an HTTP body's lines (the W3C framing, nothing backend-specific).

Cog workers and Replicate both stream SSE; what their `data` means differs (Cog sends JSON for
every event, Replicate plain text for `output`/`logs`), so decoding stays with each client.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

__all__ = ["SSEEvent", "iter_sse"]


@dataclass
class SSEEvent:
    event: str
    data: Any


def iter_sse(lines: Iterator[str]) -> Iterator[SSEEvent]:
    """`event:`/`data:` fields up to a blank line make one event; data lines join with newlines;
    `:` lines are comments; an event with no `event:` field is a `message`."""
    event: str | None = None
    data: list[str] = []
    for line in lines:
        line = line.rstrip("\r")
        if not line:
            if event is not None or data:
                yield SSEEvent(event or "message", "\n".join(data))
            event, data = None, []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)
    if event is not None or data:
        yield SSEEvent(event or "message", "\n".join(data))

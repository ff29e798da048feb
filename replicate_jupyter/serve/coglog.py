"""coglet's own log file: what a prediction printed, when coglet's answer left it out.

coglet 0.23.1 forgets a prediction as soon as it ends, and its blocking answer (a PUT or POST
to /predictions, which holds the final state) to one that *failed* carries `logs: ''`, while its
SSE stream and its log file have every line. A prediction that fails at once ends before any
stream can attach, so the answer is all a client gets: serve's front (serve/auth.py, through
serve/outputs.py) and the kernel's own Cog processes (runners/cogproc.py) read the lost lines
here. serve sends coglet's stdout to this file (one JSON object a line, appended across
restarts); each print is an entry of target `coglet::prediction` with the prediction's id and a
`source` field, between its "Starting prediction" entry and the one that says how it ended.

Secrets are as coglet wrote them, as in coglet's own answers: a client's copy of the text is
masked where a prediction is recorded (the kernel's prediction/redact.py).
"""
from __future__ import annotations

import asyncio
import json
import os
import pathlib
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

__all__ = ["Prints", "entries", "prints", "wait_prints", "logged_prints", "size"]

_PREDICTION = "coglet::prediction"
_START = "Starting prediction"
_CANCELING = "Cancelling prediction"


@dataclass(frozen=True)
class Prints:
    """What a prediction printed (each line with its newline, in order), and how much of it the
    log holds so far: `entries` of it at all, its start (`started`: the text is whole from its
    first line) and its end (`ended`: no line is still on its way)."""

    text: str = ""
    entries: int = 0
    started: bool = False
    ended: bool = False


def entries(log: pathlib.Path | None, offset: int) -> Iterator[tuple[Any, dict]]:
    """coglet's log file (JSON lines) from `offset`: (target, fields) per entry; nothing when
    there is no log (None, or not readable)."""
    try:
        with open(log, "rb") as fh:  # type: ignore[arg-type]  # None: TypeError, no log
            text = (fh.seek(offset), fh.read())[1].decode("utf-8", "replace")
    except (OSError, TypeError):
        return
    for raw in text.splitlines():
        try:
            entry = json.loads(raw)
            yield entry.get("target"), dict(entry.get("fields") or {})
        except (ValueError, AttributeError, TypeError):
            continue


def prints(log: pathlib.Path | None, offset: int, mine: Callable[[str], bool]) -> Prints:
    """The lines logged after `offset` by the prediction whose id `mine` accepts (one read)."""
    lines: list[str] = []
    count, started, ended = 0, False, False
    for target, fields in entries(log, offset):
        if target != _PREDICTION or not mine(str(fields.get("prediction_id", ""))):
            continue
        count += 1
        if "source" in fields:
            lines.append(f"{fields.get('message', '')}\n")
        elif fields.get("message") == _START:
            started = True
        elif fields.get("message") != _CANCELING:  # asked to stop: its last lines may still come
            ended = True  # "Prediction failed", "Prediction worker completed", "Prediction cancelled"
    return Prints("".join(lines), count, started, ended)


def wait_prints(log: pathlib.Path | None, offset: int, mine: Callable[[str], bool], wait: float = 1.0) -> Prints:
    """`prints`, once its end is logged: up to `wait` s (0.1 s while it has no entry at all: one
    refused before it ran never gets one). Blocking; `logged_prints` is the event loop's twin."""
    t0 = time.monotonic()
    while not _settled(got := prints(log, offset, mine), log, t0, wait):
        time.sleep(0.02)
    return got


async def logged_prints(log: pathlib.Path | None, offset: int, pid: str, wait: float = 1.0) -> Prints:
    """`wait_prints` for prediction `pid` exactly, without blocking the loop it runs on."""
    t0 = time.monotonic()
    while not _settled(got := prints(log, offset, pid.__eq__), log, t0, wait):
        await asyncio.sleep(0.02)
    return got


def _settled(got: Prints, log: pathlib.Path | None, t0: float, wait: float) -> bool:
    return log is None or got.ended or time.monotonic() - t0 > (wait if got.entries else 0.1)


def size(path: pathlib.Path | None) -> int:
    """The log's size now: where the lines of a prediction about to start begin."""
    try:
        return os.path.getsize(path) if path is not None else 0
    except OSError:
        return 0

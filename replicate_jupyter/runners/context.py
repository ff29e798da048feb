"""The link between a running predictor and its Prediction: runner internals.

A runner activates a `RunContext` in the thread that calls the predictor; what the predictor
calls (`replicate_jupyter.progress`) finds it here. On a Cog worker started by `serve` there is
no context: progress and previews travel as tagged log lines (`relay_*`), which the workers
backend turns back into events with `parse_relayed`.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["RunContext", "current", "activate", "parse_relayed", "relay_progress", "relay_preview",
           "RELAY_ENV", "PROGRESS_TAG", "PREVIEW_TAG"]

# On a Cog worker started by `replicate-jupyter serve`, there is no RunContext: progress and
# previews travel in the predictor's log stream as tagged lines, which the workers backend turns
# back into Progress/Preview events (and drops from the logs). Anything else running the same
# predictor (plain coglet, Replicate) sees no such lines because the variable is not set.
RELAY_ENV = "RJ_PROGRESS_RELAY"
PROGRESS_TAG = "[rj-progress] "
PREVIEW_TAG = "[rj-preview] "
_relay_state = {"last_preview": 0.0}


@dataclass
class RunContext:
    """The link between a running predictor and its Prediction (set by the local runner)."""

    emit: Callable[[Any], None]
    cancel_event: threading.Event
    wants_preview: Callable[[], bool] = field(default=lambda: True)


_local = threading.local()


def current() -> RunContext | None:
    return getattr(_local, "ctx", None)


def activate(ctx: RunContext | None) -> RunContext | None:
    """Make `ctx` this thread's running prediction (None: none); returns the previous one, for a
    runner to restore in a `finally`."""
    prev = getattr(_local, "ctx", None)
    _local.ctx = ctx
    return prev


def relay_progress(step: int, total: int | None) -> None:
    if os.environ.get(RELAY_ENV) == "1":
        print(f"{PROGRESS_TAG}{int(step)}/{'' if total is None else int(total)}", flush=True)


def relay_preview(image: Any, step: int | None) -> None:
    rate = float(os.environ.get("RJ_PREVIEW_RATE", "2"))
    if os.environ.get(RELAY_ENV) != "1" or rate <= 0:
        return
    now = time.monotonic()
    if now - _relay_state["last_preview"] < 1.0 / rate:
        return
    _relay_state["last_preview"] = now
    if callable(image):
        image = image()
    import base64
    import io

    small = image.copy()
    small.thumbnail((192, 192))
    buf = io.BytesIO()
    small.save(buf, format="PNG")
    print(f"{PREVIEW_TAG}{'' if step is None else int(step)} {base64.b64encode(buf.getvalue()).decode()}", flush=True)


def parse_relayed(text: str) -> tuple[list[Any], str]:
    """Split a worker's log text into relayed Progress/Preview events and the remaining logs."""
    if PROGRESS_TAG not in text and PREVIEW_TAG not in text:
        return [], text
    from replicate_jupyter.prediction.events import Preview, Progress

    events: list[Any] = []
    keep: list[str] = []
    for line in text.splitlines(keepends=True):
        body = line.strip()
        try:
            if body.startswith(PROGRESS_TAG.strip()):
                step, _, total = body[len(PROGRESS_TAG):].strip().partition("/")
                events.append(Progress(step=int(step), total=int(total) if total else None))
                continue
            if body.startswith(PREVIEW_TAG.strip()):
                import base64
                import io

                from PIL import Image

                step, _, payload = body[len(PREVIEW_TAG):].strip().partition(" ")
                img = Image.open(io.BytesIO(base64.b64decode(payload)))
                img.load()
                events.append(Preview(image=img, step=int(step) if step else None))
                continue
        except Exception:
            pass  # not ours after all: keep it as a log line
        keep.append(line)
    return events, "".join(keep)

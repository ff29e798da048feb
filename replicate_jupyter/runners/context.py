"""The link between a running predictor and its Prediction: runner internals.

A runner activates a `RunContext` where it calls the predictor; what the predictor calls
(`replicate_jupyter.progress`) finds it here. It is a `contextvars.ContextVar`, not a
thread-local, because an async predictor's coroutines run as tasks on an event loop thread:
each task carries its own context, so `progress()`/`preview()`/`log()` from a coroutine reach its
own prediction, also with several predictions of one model running at once on one loop.

Threads a predictor starts itself begin with an empty context (Python's rule for
`threading.Thread`), so they are not linked to the prediction: start them as
`threading.Thread(target=contextvars.copy_context().run, args=(fn,))` (the same for an
executor's `submit`); `asyncio.to_thread` carries it by itself. We do not patch
`threading.Thread`: the kernel's own threads must never inherit a prediction.

On a Cog worker started by `serve` there is no context: progress and previews travel as tagged
log lines (`relay_*`), which the workers backend turns back into events with `parse_relayed`.
"""
from __future__ import annotations

import contextvars
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["RunContext", "current", "activate", "fresh_context", "parse_relayed", "relay_progress", "relay_preview",
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


_current: contextvars.ContextVar[RunContext | None] = contextvars.ContextVar("rj_run_context", default=None)


def current() -> RunContext | None:
    return _current.get()


def activate(ctx: RunContext | None) -> RunContext | None:
    """Make `ctx` the running prediction of the current context (None: none); returns the
    previous one, for a runner to restore in a `finally`."""
    prev = _current.get()
    _current.set(ctx)
    return prev


def fresh_context(ctx: RunContext | None, sink: Callable[[str], None] | None = None) -> contextvars.Context:
    """A new, empty `contextvars.Context` in which `ctx` is the running prediction and prints go
    to `sink`: what a model thread runs one call in (`Context.run`) or gives an asyncio task
    (`create_task(..., context=)`), so nothing of the caller's context leaks into the model and
    nothing the model sets leaks out."""
    from replicate_jupyter.runners.capture import set_sink

    fresh = contextvars.Context()
    fresh.run(_enter, ctx, sink, set_sink)
    return fresh


def _enter(ctx: RunContext | None, sink, set_sink) -> None:
    _current.set(ctx)
    set_sink(sink)


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

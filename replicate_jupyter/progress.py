"""What a predictor calls to report progress, previews and logs, and to notice cancellation.

Every function is a no-op outside a prediction run by this package, so a predictor that uses
them still runs unchanged under Cog (`coglet`) or on Replicate.

    from replicate_jupyter import progress as rjp
    for i, t in enumerate(timesteps):
        ...
        rjp.progress(i + 1, len(timesteps))      # raises errors.Canceled once canceled
        rjp.preview(pil_image, step=i + 1)       # cheap: dropped unless a display wants one now

For diffusers pipelines, `diffusers_callback()` gives a `callback_on_step_end` that does both
and sets `pipe._interrupt` on cancel, so the loop stops at its next step.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import Canceled

__all__ = ["progress", "preview", "log", "canceled", "device", "diffusers_callback", "RunContext", "current",
           "parse_relayed", "activate"]

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


_set = activate  # the name tests and benchmarks used first


def canceled() -> bool:
    ctx = current()
    return bool(ctx and ctx.cancel_event.is_set())


def _check() -> RunContext | None:
    ctx = current()
    if ctx is not None and ctx.cancel_event.is_set():
        raise Canceled("prediction canceled")
    return ctx


def progress(step: int, total: int | None = None) -> None:
    """Report step `step` of `total`. Raises `Canceled` when the prediction was canceled."""
    ctx = _check()
    if ctx is not None:
        from .events import Progress

        ctx.emit(Progress(step=int(step), total=None if total is None else int(total)))
    elif os.environ.get(RELAY_ENV) == "1":
        print(f"{PROGRESS_TAG}{int(step)}/{'' if total is None else int(total)}", flush=True)


def preview(image: Any, step: int | None = None) -> None:
    """Offer a step preview (PIL image, or a callable returning one so the work is skipped
    when no display wants a preview right now)."""
    ctx = _check()
    if ctx is None:
        _relay_preview(image, step)
        return
    if not ctx.wants_preview():
        return
    if callable(image):
        image = image()
    from .events import Preview

    ctx.emit(Preview(image=image, step=step))


def _relay_preview(image: Any, step: int | None) -> None:
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
    from .events import Preview, Progress

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


def log(text: str) -> None:
    ctx = current()
    if ctx is None:
        print(text)
        return
    from .events import Log

    ctx.emit(Log(text=text if text.endswith("\n") else text + "\n"))


def device() -> str:
    """The best torch device here: cuda, else mps, else cpu."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def diffusers_callback(total: int, latents_to_image: Callable[[Any], Any] | None = None) -> Callable:
    """A `callback_on_step_end` for diffusers pipelines: progress each step, a cheap preview
    (when `latents_to_image` is given and a display wants one), and `_interrupt` on cancel."""

    def callback(pipe, step_index, timestep, callback_kwargs):
        ctx = current()
        if ctx is None:
            return callback_kwargs
        if ctx.cancel_event.is_set():
            pipe._interrupt = True
            return callback_kwargs
        from .events import Preview, Progress

        ctx.emit(Progress(step=step_index + 1, total=total))
        latents = callback_kwargs.get("latents")
        if latents_to_image is not None and latents is not None and ctx.wants_preview():
            ctx.emit(Preview(image=latents_to_image(latents), step=step_index + 1))
        return callback_kwargs

    return callback

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

from typing import Any, Callable

from replicate_jupyter.errors import Canceled
from replicate_jupyter.runners.context import RunContext, current, relay_preview, relay_progress

__all__ = ["progress", "preview", "log", "canceled", "device", "diffusers_callback"]


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
        from replicate_jupyter.prediction.events import Progress

        ctx.emit(Progress(step=int(step), total=None if total is None else int(total)))
    else:
        relay_progress(step, total)


def preview(image: Any, step: int | None = None) -> None:
    """Offer a step preview (PIL image, or a callable returning one so the work is skipped
    when no display wants a preview right now)."""
    ctx = _check()
    if ctx is None:
        relay_preview(image, step)
        return
    if not ctx.wants_preview():
        return
    if callable(image):
        image = image()
    from replicate_jupyter.prediction.events import Preview

    ctx.emit(Preview(image=image, step=step))


def log(text: str) -> None:
    ctx = current()
    if ctx is None:
        print(text)
        return
    from replicate_jupyter.prediction.events import Log

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
        from replicate_jupyter.prediction.events import Preview, Progress

        ctx.emit(Progress(step=step_index + 1, total=total))
        latents = callback_kwargs.get("latents")
        if latents_to_image is not None and latents is not None and ctx.wants_preview():
            ctx.emit(Preview(image=latents_to_image(latents), step=step_index + 1))
        return callback_kwargs

    return callback

"""replicate-python's Prediction methods beyond wait/cancel/reload, written once over the events.

`stream()`, `output_iterator()` and the `async_*` twins read the one event stream a Prediction
records (history first, then live), so they work the same on every backend: nothing polls.
Kept apart from `prediction.py`, which is about folding events into fields.
"""
from __future__ import annotations

from typing import Any, AsyncIterator, Iterator

from replicate_jupyter.errors import ModelError, PredictionTimeout
from replicate_jupyter.prediction.events import Completed, Error, Event, Log, Output
from replicate_jupyter.prediction.files import FileOutput

__all__ = ["ReplicateSurface", "StreamError", "plain_output"]


class StreamError(ModelError, RuntimeError):
    """A failed model's stream ends in this: a `ModelError` of the project's tree (with its
    `.prediction`), and a `RuntimeError`, which is what replicate-python's stream raises, so
    `except RuntimeError` written around a replicate-python stream still catches it."""


class ReplicateSurface:
    """Mixed into `Prediction` (which supplies `events`, `on_done`, `reload`, `cancel`, `status`;
    `self` is typed Any here so this module need not import the one that imports it)."""

    __slots__ = ()

    async def async_wait(self: Any, timeout: float | None = None) -> Any:
        """`wait()` for async code: the event loop keeps running while the prediction does."""
        import asyncio

        loop = asyncio.get_running_loop()
        done = asyncio.Event()

        def wake(_p: Any) -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(done.set)

        self._watched()
        self.on_done(wake)
        try:
            await asyncio.wait_for(done.wait(), timeout)
        except asyncio.TimeoutError:
            raise PredictionTimeout(self.id, self.status, timeout) from None
        return self

    async def async_reload(self: Any) -> Any:
        import asyncio

        await asyncio.to_thread(self.reload)
        return self

    async def async_cancel(self: Any) -> Any:
        import asyncio

        await asyncio.to_thread(self.cancel)
        return self

    def stream(self: Any, use_file_output: bool | None = None) -> Iterator[Event]:
        """Its `output`, `logs`, `error` and `done` events, from the start then live, as
        replicate-python's `Prediction.stream()` yields them (`str(event)` is the output's text).
        With `use_file_output=False` file outputs come as their URL strings. A failed model
        yields `error` and `done`, then raises `StreamError` (a ModelError and a RuntimeError:
        replicate-python raises RuntimeError at `error`; the events come first here, so a
        consumer still sees how it ended)."""
        plain = use_file_output is False
        for e in self.events(kinds=(Output, Log)):
            if e.__class__ is Completed:
                if e.status == "failed":
                    yield Error(message=e.error or "failed")
                yield e
                if e.status == "failed":
                    raise StreamError(self)
            elif plain and e.__class__ is Output:
                yield Output(value=plain_output(e.value), index=e.index)
            else:
                yield e

    async def async_stream(self: Any, use_file_output: bool | None = None) -> AsyncIterator[Event]:
        """`stream()` for async code (events are handed over from the prediction's thread)."""
        async for e in _aiter(self.stream(use_file_output)):
            yield e

    def output_iterator(self: Any) -> Iterator[Any]:
        """The output's items as they arrive (iterator models; the whole output once for the
        others), then `ModelError` if it failed, as replicate-python's `output_iterator()`."""
        for e in self.events(kinds=(Output,)):
            if e.__class__ is Output:
                yield e.value
        if self.status == "failed":
            raise ModelError(self)

    async def async_output_iterator(self: Any) -> AsyncIterator[Any]:
        async for item in _aiter(self.output_iterator()):
            yield item

    def __iter__(self: Any) -> Iterator[tuple[str, Any]]:
        """`dict(prediction)`: its fields as replicate-python's Prediction gives them."""
        yield from self.to_json().items()
        yield "remote_id", self.remote_id
        yield "urls", dict(self.urls)


def plain_output(value: Any) -> Any:
    """`value` with every FileOutput as its URL string (replicate-python's `use_file_output=False`)."""
    if isinstance(value, FileOutput):
        return value.url
    if isinstance(value, list):
        return [plain_output(v) for v in value]
    if isinstance(value, dict):
        return {k: plain_output(v) for k, v in value.items()}
    return value


async def _aiter(it: Iterator[Any]) -> AsyncIterator[Any]:
    """A blocking iterator read on a worker thread, item by item, for async code."""
    import asyncio

    done = object()
    while True:
        item = await asyncio.to_thread(next, it, done)
        if item is done:
            return
        yield item



"""What the remote backends share: one run's bookkeeping and the walk of values onto the wire.

The workers, Ray and Replicate runners each follow a prediction that runs somewhere else, and
each needs the same few things: a table of the runs in flight (so `cancel()`, called from
another thread, finds the run `execute()` is driving), a Started emitted exactly once however
many sources report the start (a stream, a poll, a watcher thread), the iterator items a stream
never carried emitted from the final prediction, and inputs walked into JSON with files and
secrets turned into what that backend accepts. Written once here; what differs (how a file
travels, how an output is decoded) is passed in.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Generic, Iterator, TypeVar

from replicate_jupyter.prediction.events import Output, Started
from replicate_jupyter.prediction.files import InputFile

if TYPE_CHECKING:
    from replicate_jupyter.prediction.prediction import Prediction

__all__ = ["RemoteRun", "RunTable", "encode_values", "output_schema", "is_iterator"]

R = TypeVar("R")


def encode_values(value: Any, file: Callable[[InputFile], Any]) -> Any:
    """Validated input → JSON: mappings and sequences walked, secrets as their value, every
    InputFile replaced by `file(f)` (a data URI for a worker, an upload for Replicate)."""
    if isinstance(value, InputFile):
        return file(value)
    if isinstance(value, dict):
        return {k: encode_values(v, file) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode_values(v, file) for v in value]
    if hasattr(value, "get_secret_value"):
        return value.get_secret_value()
    return value


def output_schema(schema: dict | None) -> dict:
    """The model's `Output` schema (Cog's shape), `{}` when it has none."""
    return ((schema or {}).get("components") or {}).get("schemas", {}).get("Output", {}) or {}


def is_iterator(schema: dict | None) -> bool:
    """Whether outputs arrive as items (`x-cog-array-type: iterator`), one Output per item."""
    return output_schema(schema).get("x-cog-array-type") == "iterator"


class RemoteRun:
    """One prediction's state while a remote backend follows it."""

    def __init__(self, p: Prediction) -> None:
        self.p = p
        self.started = False
        self.next_index = 0  # the next iterator item not yet emitted
        self.cancel_sent = False
        self.lock = threading.Lock()

    def start(self, hardware: str | None) -> None:
        """Emit Started once, whichever source reports the start first."""
        with self.lock:
            if self.started:
                return
            self.started = True
        self.p.emit(Started(hardware=hardware))

    def emit_items(self, items: Any, decode: Callable[[Any, int], Any]) -> None:
        """Emit the iterator items from `next_index` on (those no stream event carried), each
        decoded with `decode(value, index)`; `items` that is not a list carries none."""
        values = items if isinstance(items, list) else []
        for i in range(self.next_index, len(values)):
            self.p.emit(Output(value=decode(values[i], i), index=i))
        self.next_index = max(self.next_index, len(values))


class RunTable(Generic[R]):
    """The runs in flight by prediction id. Thread-safe: `execute()` tracks, `cancel()` looks up."""

    def __init__(self) -> None:
        self._runs: dict[str, R] = {}
        self._lock = threading.Lock()

    @contextmanager
    def track(self, prediction_id: str, run: R) -> Iterator[R]:
        """Hold `run` under its prediction's id for the duration of the block."""
        with self._lock:
            self._runs[prediction_id] = run
        try:
            yield run
        finally:
            with self._lock:
                self._runs.pop(prediction_id, None)

    def get(self, prediction_id: str) -> R | None:
        with self._lock:
            return self._runs.get(prediction_id)

    def __getitem__(self, prediction_id: str) -> R:
        with self._lock:
            return self._runs[prediction_id]

    def __len__(self) -> int:
        return len(self._runs)

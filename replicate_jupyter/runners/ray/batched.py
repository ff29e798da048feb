"""A Ray model actor's predictions of a batchable model, run as batches on the actor.

Why: a sweep of 8 sends 8 `predict` calls to the model's one actor at once (its "predict"
concurrency group takes them together); a model that declares batching (`model/batching.py`)
does them in one forward pass. So for such a model the actor does not run one call at a time
under its run lock: every call hands its input to the actor's `BatchHost` (serve/batched.py:
the local runner's Batcher in the actor process, on the model's own thread) and streams back
what that member's prediction emits — Started, its own progress, previews, logs, Metric
`batch_size`/`batch_id`, its output, and a Completed whose predict_time is its share of the
batch's device time. A cancel (the actor's flag or `ray.cancel`, seen within 0.1 s) cancels that
member only; a stream closed early cancels it too, and `result()` answers with its metrics.
"""
from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterator

from replicate_jupyter.prediction.events import Completed, Started

__all__ = ["stream"]

#: how often a waiting member looks at its cancel flag and Ray's
_CHECK_EVERY = 0.1


def stream(core: Any, prediction_id: str, inputs: dict[str, Any],
           canceled: Callable[[], bool], cancel: threading.Event) -> Iterator[Any]:
    """One member's events, ending with exactly one Completed (ModelCore.predict's contract;
    `core` is the actor's ModelCore, which imports this module)."""
    host = core.host
    assert host is not None
    finished = core._finished.setdefault(prediction_id, threading.Event())
    events: queue.SimpleQueue = queue.SimpleQueue()
    hardware = core.hardware()

    def listen(_p: Any, event: Any) -> None:
        if event.__class__ is Started:
            event = Started(hardware=hardware)
        elif event.__class__ is Completed:
            event = Completed(status=event.status, error=event.error, traceback=event.traceback,
                              metrics=dict(event.metrics, hardware=hardware))
            core._results[prediction_id] = {"status": event.status, "metrics": dict(event.metrics)}
            finished.set()
        events.put(event)

    delivered = False
    p = host.start(inputs, listen)
    try:
        while True:
            try:
                event = events.get(timeout=_CHECK_EVERY)
            except queue.Empty:
                if canceled() and not p.cancel_event.is_set():
                    p.cancel(reason="canceled")
                continue
            yield event
            if event.__class__ is Completed:
                delivered = True
                return
    finally:
        cancel.set()
        core._cancels.pop(prediction_id, None)
        if delivered:
            core.served += 1
            core._finished.pop(prediction_id, None)
            core._results.pop(prediction_id, None)
        else:  # the stream was closed (ray.cancel, the driver gone): this member leaves its batch
            p.cancel(reason="canceled")

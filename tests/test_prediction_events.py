"""The event plumbing every backend and every display relies on: done-callbacks, filtered
event readers, and the reused background threads of `api.create`."""
from __future__ import annotations

import threading
import time

from cog import BasePredictor, Input

from replicate_jupyter import api
from replicate_jupyter.prediction.events import Completed, Log, Output, Progress, Started
from replicate_jupyter.prediction.prediction import Prediction

STREAM = {"components": {"schemas": {"Output": {"type": "array", "items": {"type": "string"},
                                                "x-cog-array-type": "iterator",
                                                "x-cog-array-display": "concatenate"}}}}


def test_on_done_runs_once_after_the_listeners_and_before_wait_returns():
    p = Prediction("test/stream", {}, schema=STREAM)
    order: list[str] = []
    p.subscribe(lambda _p, e: order.append(f"listener {e.event}"))
    p.on_done(lambda q: order.append(f"done {q.status} wait-returned={q.done}"))
    p.emit(Started(hardware="cpu"))
    p.emit(Output(value="a", index=0))
    assert order == ["listener start", "listener output"]  # nothing per event for a done-callback
    p.emit(Completed(status="succeeded", metrics={"predict_time": 0.1}))
    assert order[-2:] == ["listener done", "done succeeded wait-returned=False"]
    # exactly one Completed: later events are ignored and the callback never runs again
    p.emit(Completed(status="failed"))
    p.emit(Output(value="late", index=1))
    assert p.status == "succeeded" and p.output == ["a"] and len(order) == 4
    # a callback added once it is final runs at once
    late: list[str] = []
    p.on_done(lambda q: late.append(q.status))
    assert late == ["succeeded"]


def test_a_broken_done_callback_is_logged_and_the_prediction_still_ends():
    p = Prediction("test/stream", {}, schema=STREAM)
    p.on_done(lambda q: 1 / 0)
    p.emit(Completed(status="succeeded"))
    assert p.done and "done-callback error: ZeroDivisionError" in p.logs


def test_events_can_keep_only_some_kinds_and_always_end_with_completed():
    p = Prediction("test/stream", {}, schema=STREAM)
    p.emit(Started(hardware="cpu"))
    p.emit(Progress(step=1, total=2))
    p.emit(Log(text="hello\n"))
    reader = p.events(timeout=5, kinds=(Output, Log))
    p.emit(Output(value="x", index=0))
    p.emit(Progress(step=2, total=2))
    p.emit(Completed(status="succeeded"))
    assert [e.__class__.__name__ for e in reader] == ["Log", "Output", "Completed"]
    # seq counts every event, whichever reader filtered what
    assert p.seq == 6


class Ident(BasePredictor):
    def predict(self, tag: str = Input(default="")) -> int:
        return threading.get_ident()


def test_background_predictions_reuse_idle_threads():
    from replicate_jupyter.runners import threads

    first = api.create(Ident, {"tag": "a"}).wait(30)
    deadline = time.monotonic() + 5
    while threads._idle < 1 and time.monotonic() < deadline:  # it is back in the pool a moment after
        time.sleep(0.001)
    second = api.create(Ident, {"tag": "b"}).wait(30)
    assert first.status == second.status == "succeeded"
    assert first.output == second.output != threading.get_ident()  # one background thread, reused
    # several at once each get a thread of their own
    many = [api.create(Ident, {"tag": str(i)}) for i in range(4)]
    outs = [p.wait(30).output for p in many]
    assert all(isinstance(o, int) for o in outs) and threading.get_ident() not in outs


def test_a_done_callback_added_while_listeners_run_still_runs_after_them():
    p = Prediction("test/stream", {}, schema=STREAM)
    order: list[str] = []

    def first(_p, e):
        if isinstance(e, Completed):
            p.on_done(lambda q: order.append(f"late callback, done={q.done}"))
            order.append("first listener")

    p.subscribe(first)
    p.subscribe(lambda _p, e: isinstance(e, Completed) and order.append("second listener"))
    p.emit(Completed(status="succeeded"))
    assert order == ["first listener", "second listener", "late callback, done=False"]
    assert p.done

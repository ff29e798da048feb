"""The event plumbing every backend and every display relies on: done-callbacks, filtered
event readers, and the reused background threads of `api.create`."""
from __future__ import annotations

import threading
import time

import pytest
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


# ----- one event order ----------------------------------------------------------------------
class _CancelFails:
    """A runner whose cancel request fails, so `p.cancel()` logs (an emit inside a listener)."""

    def cancel(self, p) -> None:
        raise ConnectionError("worker gone")


def test_a_listener_that_emits_does_not_reorder_what_the_others_see():
    p = Prediction("test/stream", {}, schema=STREAM, runner=_CancelFails())
    first: list = []
    second: list = []

    def canceling(_p, e):
        first.append(e)
        if isinstance(e, Output) and e.index == 1:
            p.cancel(reason="enough")  # the failed cancel request emits a Log, from inside here

    p.subscribe(canceling)
    p.subscribe(lambda _p, e: second.append(e))
    p.emit(Started(hardware="cpu"))
    for i in range(3):
        p.emit(Output(value=f"t{i}", index=i))
    p.emit(Completed(status="canceled"))
    names = [e.__class__.__name__ for e in second]
    assert names == ["Started", "Output", "Output", "Log", "Output", "Completed"]
    assert first == second == p._history


def test_listeners_see_history_order_while_threads_hammer_emit_and_subscribe():
    import sys

    p = Prediction("test/stream", {}, schema=STREAM, runner=_CancelFails())
    seen: dict[str, list] = {"a": [], "b": []}

    def a(_p, e):
        seen["a"].append(e)
        if isinstance(e, Output) and e.index % 97 == 0:
            p.emit(Log(text=f"listener saw {e.index}\n"))  # re-entrant emit
        if isinstance(e, Output) and e.index == 1500:
            p.cancel(reason="test")  # re-entrant: cancel logs its failed request

    p.subscribe(a)
    p.subscribe(lambda _p, e: seen["b"].append(e))
    late: list[list] = []
    go = threading.Event()

    def emitter(k: int) -> None:
        go.wait()
        for i in range(600):
            p.emit(Output(value=f"{k}.{i}", index=k * 1000 + i))

    def subscriber() -> None:
        go.wait()
        for _ in range(20):
            got: list = []
            late.append(got)
            p.subscribe(lambda _p, e, got=got: got.append(e))
            time.sleep(0.001)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # hand the GIL over as often as possible
    try:
        threads_ = [threading.Thread(target=emitter, args=(k,)) for k in range(4)]
        threads_.append(threading.Thread(target=subscriber))
        for t in threads_:
            t.start()
        go.set()
        for t in threads_:
            t.join(60)
    finally:
        sys.setswitchinterval(old)
    p.emit(Completed(status="succeeded"))
    p.wait(10)
    history = p._history
    assert len([e for e in history if isinstance(e, Output)]) == 2400
    assert any(isinstance(e, Log) and "listener saw" in e.text for e in history)
    assert seen["a"] == history and seen["b"] == history
    assert len(late) == 20 and all(got == history for got in late)


def test_an_emitter_never_waits_for_a_listener_running_in_another_thread():
    p = Prediction("test/stream", {}, schema=STREAM)
    release = threading.Event()
    entered = threading.Event()
    seen: list = []

    def slow(_p, e):
        if isinstance(e, Started):
            entered.set()
            release.wait(10)
        seen.append(e)

    p.subscribe(slow)
    t = threading.Thread(target=p.emit, args=(Started(hardware="cpu"),))
    t.start()
    assert entered.wait(5)
    t0 = time.monotonic()
    p.emit(Output(value="a", index=0))  # recorded; the busy thread hands it on
    p.emit(Completed(status="succeeded"))
    assert time.monotonic() - t0 < 1.0
    assert p.status == "succeeded" and p.finished and not p.done and seen == []
    release.set()
    t.join(5)
    assert p.wait(5).done
    assert [e.__class__.__name__ for e in seen] == ["Started", "Output", "Completed"]


# ----- one error tree -----------------------------------------------------------------------
def test_waits_that_run_out_raise_a_timeout_of_the_tree_and_leave_the_prediction_alone():
    from replicate_jupyter.errors import PredictionTimeout, ReplicateJupyterError

    p = Prediction("test/stream", {}, schema=STREAM)
    p.emit(Started(hardware="cpu"))
    with pytest.raises(PredictionTimeout) as info:
        p.wait(0.05)
    assert isinstance(info.value, TimeoutError) and isinstance(info.value, ReplicateJupyterError)
    assert p.id in str(info.value) and "processing" in str(info.value)
    reader = p.events(timeout=0.05)
    assert isinstance(next(reader), Started)  # the history first
    with pytest.raises(PredictionTimeout):
        next(reader)
    assert p._listeners == ()  # the reader is gone with its generator
    p.emit(Completed(status="succeeded"))
    assert p.wait(1).status == "succeeded"


def test_unknown_ids_and_backends_are_errors_of_the_tree():
    from replicate_jupyter.errors import PredictionNotFound, ReplicateJupyterError, UnknownBackend
    from replicate_jupyter.runners import create

    with pytest.raises(PredictionNotFound) as info:
        api.predictions.get("no-such-id")
    assert isinstance(info.value, KeyError) and isinstance(info.value, ReplicateJupyterError)
    assert str(info.value) == "No prediction 'no-such-id' in this kernel"
    with pytest.raises(PredictionNotFound):
        api.predictions.cancel("no-such-id")
    with pytest.raises(UnknownBackend) as bad:
        create("workr")
    assert isinstance(bad.value, ValueError) and "did you mean 'workers'" in str(bad.value)
    with pytest.raises(UnknownBackend):
        api.prepare(Ident, {}, on="rayy")


def test_prepare_declares_what_runners_read_on_the_prediction():
    p = api.prepare(Ident, {"tag": "x"}, max_cost=0.5)
    assert p.handle is not None and p.handle.name == p.model and p.schema is p.handle.schema
    assert p.max_cost == 0.5 and p.background is False and p.display_cell is None
    with pytest.raises(AttributeError):  # nothing is stuck onto a Prediction that it does not declare
        p._rj_live_cell = 3  # type: ignore[attr-defined]
    api.start(p).wait(30)
    assert p.background and p.status == "succeeded"
    from replicate_jupyter.errors import InputError

    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(InputError) as info:
            api.prepare(Ident, {}, max_cost=bad)
        assert info.value.problems[0].field == "--max-cost"


def test_bad_values_given_to_data_objects_are_input_errors_and_a_dead_url_a_backend_error():
    import http.server

    from replicate_jupyter.cost.ledger import Ledger
    from replicate_jupyter.cost.prices import PriceTable
    from replicate_jupyter.errors import BackendError, InputError
    from replicate_jupyter.prediction.files import InputFile, parse_data_uri

    table = PriceTable()
    for bad in (float("nan"), float("inf"), -1.0, "cheap"):
        with pytest.raises(InputError) as info:
            table.set("gpu-t4", bad)
        assert info.value.problems[0].field == "gpu-t4"
    assert table.price("gpu-t4") == 0.000225  # nothing changed
    with pytest.raises(InputError):
        Ledger().by("colour")
    with pytest.raises(InputError):
        parse_data_uri("https://example.com/a.png")
    with pytest.raises(InputError):
        parse_data_uri("data:image/png;base64,abc")  # bad padding
    with pytest.raises(InputError):
        InputFile()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/no-such-file.png"
    try:
        with pytest.raises(BackendError) as fetch:
            InputFile(url=url, name="x.png").read()
        assert fetch.value.url == url and "404" in str(fetch.value)
    finally:
        server.shutdown()
        server.server_close()


def test_a_bound_method_listener_can_be_unsubscribed():
    """`p.unsubscribe(self.on_event)`: each read of `self.on_event` is a new bound method."""
    class Watcher:
        def __init__(self) -> None:
            self.seen: list = []

        def on_event(self, _p, e) -> None:
            self.seen.append(e)

    w = Watcher()
    p = Prediction("test/m", {})
    p.subscribe(w.on_event)
    p.emit(Log(text="one\n"))
    p.unsubscribe(w.on_event)
    p.emit(Log(text="two\n"))
    assert [e.text for e in w.seen] == ["one\n"]


def test_a_running_payload_encodes_its_preview_once_and_outside_the_lock():
    """A redraw's `to_json()` encodes the step preview (a noisy 512 px PNG takes ~50 ms) without
    holding the prediction's lock, so the model's emits never wait for it; ten redraws of one
    preview encode it once."""
    from PIL import Image

    from replicate_jupyter.prediction.events import Preview

    p = Prediction("test/m", {})
    p.emit(Started(hardware="cpu"))
    saves, emitted = [], threading.Event()

    class SlowImage:
        def __init__(self) -> None:
            self.img = Image.new("RGB", (4, 4), "red")

        def save(self, buf, format) -> None:
            saves.append(format)
            t = threading.Thread(target=lambda: (p.emit(Log(text="during\n")), emitted.set()))
            t.start()
            assert emitted.wait(5), "an emit waited for the preview's encoding"
            self.img.save(buf, format=format)

    image = SlowImage()
    p.emit(Preview(image=image, step=1))
    payloads = [p.to_json() for _ in range(10)]
    assert len(saves) == 1 and all(j["preview"].startswith("data:image/png;base64,") for j in payloads)
    p.emit(Preview(image=SlowImage(), step=2))
    emitted.clear()
    assert p.to_json()["preview"] and len(saves) == 2  # a new preview is encoded anew
    p.emit(Completed(status="succeeded", metrics={"predict_time": 0.1}))
    assert p.to_json()["preview"] is None and p._preview_uri is None  # nothing kept once final

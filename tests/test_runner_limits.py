"""A backend's `max_inflight`: past it, predictions wait in `starting` (nothing dispatched), and a
cancel while waiting ends them canceled at no cost — so a 500-point sweep on `replicate` never
opens 500 streams at once."""
from __future__ import annotations

import threading
import time

from replicate_jupyter import api
from replicate_jupyter.prediction.events import Completed, Started
from replicate_jupyter.prediction.prediction import Prediction
from replicate_jupyter.runners.base import Runner
from replicate_jupyter.runners.replicate.runner import ReplicateRunner


class Gate(Runner):
    name = "gate"
    concurrent = True
    max_inflight = 2

    def __init__(self) -> None:
        self.release = threading.Event()
        self.running = 0
        self.most = 0
        self.lock = threading.Lock()

    def execute(self, p: Prediction) -> None:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        p.emit(Started(hardware="cpu"))
        self.release.wait(10)
        with self.lock:
            self.running -= 1
        p.emit(Completed(status="succeeded", metrics={"predict_time": 0.01, "hardware": "cpu"}))


def test_past_max_inflight_predictions_wait_in_starting_and_can_be_canceled_there():
    gate = Gate()
    ps = [Prediction("test/gate", {}, backend="gate", runner=gate) for _ in range(5)]
    threads = [threading.Thread(target=api.execute, args=(p,)) for p in ps]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while sum(p.status == "processing" for p in ps) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    assert sorted(p.status for p in ps) == ["processing"] * 2 + ["starting"] * 3
    waiting = next(p for p in ps if p.status == "starting")
    waiting.cancel(reason="not needed")
    waiting.wait(5)
    assert waiting.status == "canceled" and waiting.metrics["predict_time"] == 0.0 and waiting.started_at is None
    gate.release.set()
    for t in threads:
        t.join(10)
    assert gate.most == 2
    assert sorted(p.status for p in ps) == ["canceled"] + ["succeeded"] * 4


def test_the_replicate_backend_has_a_limit():
    assert ReplicateRunner.max_inflight is not None and 0 < ReplicateRunner.max_inflight <= 100


SLEEP = "tests/predictors/sleep.py:Predictor"


def test_max_inflight_is_a_setting_of_every_backend_and_replaces_the_runners_own():
    from traitlets.config import Config

    from replicate_jupyter.session import Session

    s = Session(config=Config({"ReplicateMagics": {"backend_options": {"replicate": {"max_inflight": 4}}}}))
    try:
        assert s.runner("replicate").max_inflight == 4  # c.ReplicateMagics.backend_options
        s.use("replicate", max_inflight=None)  # `%replicate use replicate --max-inflight none`: no limit
        assert s.runner("replicate").max_inflight is None
        s.use("replicate", max_inflight=32)
        assert s.runner("local").max_inflight is None  # a backend keeps its own default until told
        s.use("local", max_inflight=1)
        assert s.runner("local").max_inflight == 1 and s.default_backend == "local"
    finally:
        s.close()


def test_a_configured_limit_holds_background_local_runs_in_starting(tmp_path):
    """`%replicate use local --max-inflight 1`, then three background runs: one runs, two wait in
    `starting` (nothing dispatched: no started_at); all three end succeeded, one after another."""
    from replicate_jupyter.notebook.commands import run_line
    from replicate_jupyter.session import session

    before = dict(session.backend_options)
    try:
        run_line("use local --max-inflight 1")
        assert session.runner("local").max_inflight == 1
        ps = [api.start(api.prepare(SLEEP, {"seconds": 0.4, "tag": str(i)}, on="local")) for i in range(3)]
        deadline = time.monotonic() + 20
        while not any(p.status == "processing" for p in ps) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)
        assert sorted(p.status for p in ps) == ["processing", "starting", "starting"]
        assert sum(p.started_at is None for p in ps) == 2
        for p in ps:
            p.wait(20)
        assert [p.status for p in ps] == ["succeeded"] * 3
        spans = sorted((p.started_at, p.completed_at) for p in ps)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))  # never two at once
    finally:
        session.backend_options = before

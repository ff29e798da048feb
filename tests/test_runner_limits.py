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

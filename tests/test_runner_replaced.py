"""A runner replaced while its predictions run (new backend options) cancels them first, saying
why, then closes: no prediction is left running on a closed runner (issue 18, lifetimes)."""
from __future__ import annotations

import pathlib
import time

import replicate_jupyter as rj
from replicate_jupyter import api
from replicate_jupyter.session import session

P = pathlib.Path(__file__).resolve().parent / "predictors"


def test_reconfiguring_a_backend_cancels_its_running_predictions_first():
    p = api.start(api.prepare(f"{P}/stop_sleep.py:Predictor", {"seconds": 30}, on="local"))
    deadline = time.monotonic() + 10
    while p.status != "processing" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert p.status == "processing"
    old = session.runner("local")
    t0 = time.monotonic()
    rj.backend("local", memory_budget=123_456_789)  # new options: the local runner is replaced
    try:
        assert p.finished and p.status == "canceled" and "reconfigured" in (p.cancel_reason or "")
        p.wait(5)
        assert time.monotonic() - t0 < 5
        assert session.runner("local") is not old and session.runner("local").memory_budget == 123_456_789
    finally:
        session.backend_options = {k: v for k, v in session.backend_options.items() if k != "local"}

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


def _processing(p, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while p.status != "processing" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert p.status == "processing", (p.status, p.error)


def test_a_reconfigured_replicate_backend_cancels_its_run_on_replicate_too(monkeypatch):
    """Not orphaned: the run on Replicate (here the project's Replicate-API server) is canceled
    there as well, so nothing keeps billing with nobody following it."""
    from fake_replicate import FakeReplicate

    token = "r8_ReplacedRunnerToken0123456789ab"
    monkeypatch.setenv("REPLICATE_API_TOKEN", token)
    with FakeReplicate({"acme/sleep": f"{P}/sleep.py:Predictor"}, token=token) as fake:
        session.use("replicate", base_url=fake.url, poll_interval=0.1)
        try:
            p = api.start(api.prepare("acme/sleep", {"seconds": 30}, on="replicate"))
            _processing(p)
            assert p.remote_id
            rj.backend("replicate", base_url=fake.url, poll_interval=0.2)
            assert p.finished and p.status == "canceled" and "reconfigured" in (p.cancel_reason or "")
            assert fake.wait_status(p.remote_id, timeout=10) == "canceled"
            again = api.execute(api.prepare("acme/sleep", {"seconds": 0}, on="replicate"))
            assert again.status == "succeeded"  # the new runner works
        finally:
            session.backend_options = {k: v for k, v in session.backend_options.items() if k != "replicate"}
            session.default_backend = "local"
            old = session._runners.pop("replicate", None)
            if old is not None:
                old.close()


def test_a_reconfigured_workers_backend_stops_the_run_on_the_worker():
    """The worker's run is canceled, not left running: the same worker (coglet runs one
    prediction at a time) takes the next prediction at once instead of answering busy for 30 s."""
    from test_workers import Serve

    from replicate_jupyter.runners.workers.runner import pool

    worker = Serve(f"{P}/stop_sleep.py:Predictor", "--name", "acme/stop-sleep")
    pool().add(worker.url)
    try:
        p = api.start(api.prepare("acme/stop-sleep", {"seconds": 30}, on="workers"))
        _processing(p)
        t0 = time.monotonic()
        rj.backend("workers", response_timeout=31.0)
        assert p.finished and p.status == "canceled" and "reconfigured" in (p.cancel_reason or "")
        again = api.execute(api.prepare("acme/stop-sleep", {"seconds": 0}, on="workers"))
        assert again.status == "succeeded", again.error
        assert time.monotonic() - t0 < 15
    finally:
        session.backend_options = {k: v for k, v in session.backend_options.items() if k != "workers"}
        session.default_backend = "local"
        try:
            pool().remove(worker.url)
        except KeyError:
            pass
        worker.stop()

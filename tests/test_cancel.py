"""Cancel reaches a running in-process prediction (issue 18, item 1): within one step for a step
loop, and within 1 s for a predictor that never reports progress (a loop of sleeps, a busy
loop, an asyncio.sleep loop, an async busy loop that never awaits), on the background path
(`api.start`, as --async, forms and sweeps use it) and the foreground one (`api.execute` in the
calling thread); one that cannot be stopped is reported, never `succeeded`. Real predictors from
tests/predictors, real threads, and a real kernel."""
from __future__ import annotations

import os
import pathlib
import signal
import threading
import time

import pytest

import replicate_jupyter as rj
from replicate_jupyter import api
from replicate_jupyter.cost import prices as cost
from replicate_jupyter.runners.local import LocalRunner
from replicate_jupyter.session import session

P = pathlib.Path(__file__).parent / "predictors"
NEVER_REPORTING = ["stop_sleep.py", "stop_busy.py", "stop_async.py", "stop_async_busy.py"]


@pytest.fixture(autouse=True)
def clean_session():
    session.ledger.reset()
    session.budget = None
    cost.prices.reset()
    yield
    session.budget = None
    cost.prices.reset()


@pytest.fixture
def runner_named():
    """A LocalRunner of the test's own under a backend name, closed afterwards."""
    from replicate_jupyter import runners

    made: list[str] = []

    def make(name: str, **options) -> LocalRunner:
        runner = LocalRunner(**options)
        session._runners[name] = runner
        runners.BACKENDS.setdefault(name, "replicate_jupyter.runners.local:LocalRunner")
        made.append(name)
        return runner

    yield make
    for name in made:
        session._runners.pop(name).close()
        runners.BACKENDS.pop(name, None)


def _wait_processing(p, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while p.status != "processing":
        assert time.monotonic() < end, f"never started: {p.status}"
        time.sleep(0.005)


@pytest.mark.parametrize("name", NEVER_REPORTING)
def test_background_cancel_stops_a_predictor_that_never_reports_progress(name):
    p = api.prepare(f"{P}/{name}", {"seconds": 20})
    api.start(p)
    time.sleep(0.3)
    assert p.status == "processing"
    t0 = time.monotonic()
    p.cancel()
    p.wait(2)
    took = time.monotonic() - t0
    assert p.status == "canceled", (p.status, p.error, p.logs)
    assert took < 1.0, took
    assert 0.2 < p.metrics["predict_time"] < 1.5
    assert p.output in (None, [])
    assert "did not stop" not in p.logs  # stopped for real, not given up on
    entry = session.ledger.entries[-1]
    assert entry.status == "canceled" and entry.predict_time == p.metrics["predict_time"]
    # the same warm model runs the next prediction to the end
    out = rj.run(f"{P}/{name}", {"seconds": 0.05})
    assert out == "finished" or (name.endswith("busy.py") and isinstance(out, int) and out > 0)


@pytest.mark.parametrize("name", NEVER_REPORTING)
def test_foreground_cancel_from_another_thread_stops_the_calling_cell(name):
    p = api.prepare(f"{P}/{name}", {"seconds": 20})
    asked: list[float] = []

    def cancel() -> None:
        asked.append(time.monotonic())
        p.cancel()

    threading.Timer(0.3, cancel).start()
    api.execute(p)  # returns (does not raise) once the prediction is canceled
    returned = time.monotonic()
    assert p.status == "canceled", (p.status, p.error)
    assert returned - asked[0] < 1.0
    assert threading.current_thread() is threading.main_thread()


def test_kernel_interrupt_stops_a_busy_loop_and_propagates():
    timer = threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        rj.run(f"{P}/stop_busy.py", {"seconds": 20})
    assert time.monotonic() - t0 < 1.3
    p = rj.predictions.list()[0]
    assert p.status == "canceled" and 0.25 <= p.metrics["predict_time"] < 1.3
    assert isinstance(rj.run(f"{P}/stop_busy.py", {"seconds": 0.01}), int)  # usable afterwards


def test_async_predictor_sees_cancelled_error_at_its_await():
    p = rj.predictions.create(f"{P}/stop_async.py", {"seconds": 20})
    _wait_processing(p)
    time.sleep(0.1)
    p.cancel().wait(2)
    assert p.status == "canceled"
    spec = session.runner("local").resolve(f"{P}/stop_async.py").extra["spec"]
    assert spec.cls.cancelled >= 1  # asyncio.CancelledError reached the coroutine, as under Cog


def test_a_predictor_that_swallows_exceptions_is_still_stopped_and_not_succeeded():
    p = rj.predictions.create(f"{P}/stop_swallow.py", {"seconds": 20})
    _wait_processing(p)
    time.sleep(0.2)
    t0 = time.monotonic()
    p.cancel().wait(2)
    assert p.status == "canceled" and time.monotonic() - t0 < 1.0
    assert p.output is None


def test_a_predictor_that_cannot_be_stopped_is_said_so_and_its_model_evicted(runner_named):
    runner = runner_named("local-stuck", cancel_deadline=0.4)
    p = rj.predictions.create(f"{P}/sleep.py", {"seconds": 3, "tag": "stuck"}, on="local-stuck")
    _wait_processing(p)
    time.sleep(0.1)
    t0 = time.monotonic()
    p.cancel().wait(3)
    took = time.monotonic() - t0
    assert p.status == "canceled" and p.status != "succeeded"
    assert took < 0.4 + 0.1 + 0.6  # grace + deadline, not the 3 s sleep
    assert "did not stop" in p.logs and "still running in thread" in p.logs
    assert "did not stop" in (p.error or "")
    assert runner.warm == [] and runner.evictions  # never used again
    q = rj.predictions.create(f"{P}/sleep.py", {"seconds": 0, "tag": "after"}, on="local-stuck").wait(5)
    assert q.status == "succeeded" and q.output == "slept 0.0 after" and "setup_time" in q.metrics


def test_cancel_while_waiting_for_the_device_never_runs_it():
    a = rj.predictions.create(f"{P}/stop_sleep.py", {"seconds": 20})
    try:
        _wait_processing(a)
        b = rj.predictions.create(f"{P}/echo.py:Predictor", {"text": "never"})
        time.sleep(0.1)
        assert b.status == "starting"  # one model on the device at a time: it waits its turn
        t0 = time.monotonic()
        b.cancel().wait(1)
        assert b.status == "canceled" and b.started_at is None and time.monotonic() - t0 < 0.5
        assert a.status == "processing"
    finally:
        a.cancel().wait(2)
    assert a.status == "canceled"


def test_max_cost_stops_a_predictor_that_never_reports_progress():
    cost.prices.set("cpu", 1.0)  # 1 USD a second
    p = rj.predictions.create(f"{P}/stop_busy.py", {"seconds": 20}, max_cost=0.3).wait(5)
    assert p.status == "canceled" and "max-cost" in (p.error or "")
    assert p.metrics["cost_usd"] <= 0.3 + 1.0  # the cap plus one second's price at most
    assert p.metrics["cost_usd"] < 0.8


def test_budget_stops_a_background_sleep_loop():
    cost.prices.set("cpu", 1.0)
    session.budget = 0.3
    p = rj.predictions.create(f"{P}/stop_sleep.py", {"seconds": 20}).wait(5)
    assert p.status == "canceled" and "budget" in (p.error or "")
    assert session.ledger.total() <= 0.3 + 1.0 and session.ledger.total() < 0.8


def test_closing_the_runner_cancels_its_running_prediction_first(runner_named):
    runner = runner_named("local-closing")
    p = rj.predictions.create(f"{P}/stop_busy.py", {"seconds": 20}, on="local-closing")
    _wait_processing(p)
    t0 = time.monotonic()
    runner.close()
    assert time.monotonic() - t0 < 1.5
    p.wait(1)
    assert p.status == "canceled" and "runner was closed" in (p.error or "")
    assert runner.warm == []


def test_in_a_kernel_an_async_cell_is_canceled_and_an_interrupt_stops_a_busy_loop(run_cells):
    import json

    from kernel_helpers import text_of

    nb = run_cells([
        "%load_ext replicate_jupyter\nimport json, time",
        f"%%replicate {P}/stop_busy.py --async -o bg\nseconds: 20",
        "time.sleep(0.4)\nt = time.monotonic(); bg.cancel(); bg.wait(2)\n"
        "print(json.dumps([bg.status, time.monotonic() - t]))",
        (f"%%replicate {P}/stop_busy.py -o fg\nseconds: 20", ["raises-exception"]),  # the interrupt stops the cell
        "print(json.dumps([fg.status, fg.metrics['predict_time']]))",
    ], timeout=60, interrupt={3: 1.0})
    status, took = json.loads(text_of(nb.cells[2]).strip().splitlines()[-1])
    assert status == "canceled" and took < 1.0
    status, predict_time = json.loads(text_of(nb.cells[4]).strip().splitlines()[-1])
    assert status == "canceled" and predict_time < 2.0

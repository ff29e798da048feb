"""The local runner's execution model as under Cog (issue 17): a warm model's setup and every
prediction of it on the model's own thread, whichever thread asked; an async predictor's
context (prints, progress, previews) reaching its prediction from coroutines and from threads it
starts with copy_context(); `@cog.concurrent(max=N)` and cog.yaml `concurrency.max` letting N
predictions of one async model run at once, the rest waiting in `starting`."""
from __future__ import annotations

import pathlib
import threading
import time

import cog
import pytest
from cog import BasePredictor, Input

import replicate_jupyter as rj
from replicate_jupyter import api
from replicate_jupyter.prediction.events import Preview, Progress
from replicate_jupyter.session import session

P = pathlib.Path(__file__).parent / "predictors"


def _ts(s: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


# ----- thread affinity ---------------------------------------------------------------------------
def test_setup_state_holds_in_every_prediction_whichever_thread_asks():
    ref = f"{P}/grad_mode.py"
    results = {"foreground": rj.run(ref, {"tag": "fg"})}  # cold: setup on the model thread
    results["create"] = rj.predictions.create(ref, {"tag": "bg"}).wait(10).output
    p = api.prepare(ref, {"tag": "start"})
    results["start"] = api.start(p).wait(10).output
    out: list = []
    t = threading.Thread(target=lambda: out.append(rj.run(ref, {"tag": "own thread"})))
    t.start()
    t.join(10)
    results["own thread"] = out[0]
    for how, r in results.items():
        assert r["grad"] is False, how  # torch.set_grad_enabled(False) from setup still holds
        assert r["mark"] == "from setup", how  # so does a threading.local set in setup
        assert r["same_thread"] is True, how


def test_the_model_thread_is_one_per_warm_model_and_not_the_callers():
    class WhereAmI(BasePredictor):
        def setup(self) -> None:
            self.thread = threading.current_thread().name

        def predict(self, x: int = Input(default=0)) -> str:
            assert threading.current_thread().name == self.thread
            return threading.current_thread().name

    class WhereElse(WhereAmI):
        pass

    a = rj.run(WhereAmI, {"x": 1})
    b = rj.run(WhereElse, {"x": 1})
    assert a.startswith("rj-model ") and b.startswith("rj-model ") and a != b
    assert a != threading.current_thread().name
    assert rj.predictions.create(WhereAmI, {"x": 2}).wait(5).output == a


def test_a_predictor_may_run_another_local_model_without_deadlock():
    class Outer(BasePredictor):
        def predict(self, text: str = Input(default="in")) -> str:
            return "outer:" + rj.run(f"{P}/echo.py:Predictor", {"text": text})

    p = rj.predictions.create(Outer, {"text": "x"}).wait(10)
    assert p.status == "succeeded" and p.output == "outer:>x"


# ----- async context -----------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["background", "foreground"])
def test_async_predictor_prints_progress_and_previews_reach_its_prediction(path):
    ref = f"{P}/async_context.py"
    if path == "background":
        p = rj.predictions.create(ref, {"word": "hey"}).wait(10)
    else:
        p = api.execute(api.prepare(ref, {"word": "hey"}))
    assert p.status == "succeeded" and p.output == "HEY"
    for line in ("print from coroutine: hey", "log from coroutine", "print from copied thread", "print from to_thread"):
        assert line in p.logs, (line, p.logs)
    seen: list = []
    p.subscribe(lambda _p, e: seen.append(e))
    assert [e.step for e in seen if isinstance(e, Progress)] == [1, 2, 3, 4]
    assert [e.step for e in seen if isinstance(e, Preview)] == [1]


def test_async_setup_prints_go_to_the_first_predictions_logs():
    class AsyncSetup(BasePredictor):
        async def setup(self) -> None:
            print("loading weights asynchronously")

        async def predict(self, x: int = Input(default=1)) -> int:
            return x + 1

    assert rj.run(AsyncSetup, {"x": 1}) == 2
    assert "loading weights asynchronously" in rj.predictions.list()[0].logs


def test_prints_of_other_threads_are_not_captured_by_a_running_prediction(capfd):
    p = rj.predictions.create(f"{P}/stop_sleep.py", {"seconds": 20})
    while p.status != "processing":
        time.sleep(0.005)
    print("the cell's own print")  # the test's main thread: not the prediction's
    p.cancel().wait(2)
    assert "the cell's own print" not in p.logs
    assert "the cell's own print" in capfd.readouterr().out


# ----- concurrency -------------------------------------------------------------------------------
def _run_at_once(ref: str, n: int, seconds: float, running: int) -> tuple[list, float, list[str]]:
    """Create n predictions at once; their statuses once `running` of them are processing."""
    t0 = time.monotonic()
    ps = [rj.predictions.create(ref, {"seconds": seconds}) for _ in range(n)]
    end = time.monotonic() + 2
    while sum(p.status == "processing" for p in ps) < running and time.monotonic() < end:
        time.sleep(0.005)
    time.sleep(0.05)  # time for a wrong extra one to start too
    statuses = [p.status for p in ps]
    for p in ps:
        p.wait(10)
    return ps, time.monotonic() - t0, statuses


def _fresh_peak(ref: str, on: str | None = None) -> None:
    cls = session.runner(on).resolve(ref).extra["spec"].cls
    cls.peak = cls.active = 0


def test_cog_concurrent_max_runs_that_many_at_once_and_the_next_waits_in_starting():
    ref = f"{P}/concurrent_async.py"
    rj.run(ref, {"seconds": 0})  # warm
    _fresh_peak(ref)
    ps, took, statuses = _run_at_once(ref, 4, 0.4, running=3)
    assert all(p.status == "succeeded" for p in ps)
    assert sorted(statuses) == ["processing"] * 3 + ["starting"]
    assert max(p.output for p in ps) == 3  # at most three overlapped
    assert 0.75 < took < 1.3  # two rounds of 0.4 s, not four
    fourth = min(ps, key=lambda p: -_ts(p.started_at))
    first_done = min(_ts(p.completed_at) for p in ps if p is not fourth)
    assert _ts(fourth.started_at) >= first_done - 0.01  # it started when a slot freed
    assert session.runner("local").concurrency(session.runner("local").resolve(ref)) == 3


def test_cog_yaml_concurrency_max_is_honoured():
    ref = f"{P}/conc_yaml"
    rj.run(ref, {"seconds": 0})
    _fresh_peak(ref)
    ps, took, statuses = _run_at_once(ref, 3, 0.4, running=2)
    assert all(p.status == "succeeded" for p in ps)
    assert sorted(statuses) == ["processing"] * 2 + ["starting"]
    assert max(p.output for p in ps) == 2
    assert 0.75 < took < 1.3


def test_sync_models_run_one_at_a_time_and_models_take_turns():
    ref = f"{P}/sleep.py"
    rj.run(ref, {"seconds": 0})  # warm
    ps, took, statuses = _run_at_once(ref, 2, 0.3, running=1)
    assert sorted(statuses) == ["processing", "starting"]
    assert took >= 0.6
    # an async concurrent model does not overlap a running sync one
    a = rj.predictions.create(ref, {"seconds": 0.3})
    while a.status == "starting":
        time.sleep(0.005)
    b = rj.predictions.create(f"{P}/concurrent_async.py", {"seconds": 0})
    time.sleep(0.05)
    assert b.status == "starting"
    a.wait(5)
    b.wait(5)
    assert _ts(b.started_at) >= _ts(a.completed_at) - 0.01


def test_a_runner_may_cap_concurrency_below_what_the_model_declares():
    from replicate_jupyter import runners
    from replicate_jupyter.runners.local import LocalRunner

    runner = session._runners["local-capped"] = LocalRunner(max_concurrency=2)
    runners.BACKENDS.setdefault("local-capped", "replicate_jupyter.runners.local:LocalRunner")
    try:
        ref = f"{P}/concurrent_async.py"
        rj.predictions.create(ref, {"seconds": 0}, on="local-capped").wait(5)
        _fresh_peak(ref, "local-capped")
        ps = [rj.predictions.create(ref, {"seconds": 0.3}, on="local-capped") for _ in range(3)]
        time.sleep(0.15)
        assert sorted(p.status for p in ps) == ["processing"] * 2 + ["starting"]
        assert max(p.wait(5).output for p in ps) == 2
        assert runner.concurrency(runner.resolve(ref)) == 2
    finally:
        session._runners.pop("local-capped").close()
        runners.BACKENDS.pop("local-capped", None)


def _tiny(i: int) -> type:
    class Tiny(BasePredictor):
        def predict(self, x: int = Input(default=1)) -> int:
            return x

    Tiny.__name__ = Tiny.__qualname__ = f"Tiny{i}"
    return Tiny


def test_warm_models_are_capped_in_number_so_their_threads_are_too():
    from replicate_jupyter import runners
    from replicate_jupyter.runners.local import LocalRunner

    runner = session._runners["local-few"] = LocalRunner(max_warm=2)
    runners.BACKENDS.setdefault("local-few", "replicate_jupyter.runners.local:LocalRunner")
    try:
        before = threading.active_count()
        for i in range(5):
            p = rj.predictions.create(_tiny(i), {"x": i}, on="local-few").wait(5)
            assert p.status == "succeeded" and p.output == i
        assert len(runner.warm) == 2 and len(runner.evictions) == 3
        time.sleep(0.1)
        assert threading.active_count() <= before + 2 + 1  # the evicted models' threads ended
    finally:
        session._runners.pop("local-few").close()
        runners.BACKENDS.pop("local-few", None)


# ----- called as Cog calls it --------------------------------------------------------------------
class Metered(BasePredictor):
    def predict(self, n: int = Input(default=3)) -> str:
        import cog

        cog.current_scope().record_metric("output_token_count", n)
        cog.current_scope().record_metric("timing.decode", 0.5)
        return "ok"


class AsyncMetered(BasePredictor):
    async def predict(self, n: int = Input(default=3)) -> str:
        import asyncio

        import cog

        await asyncio.sleep(0)
        cog.current_scope().record_metric("output_token_count", n, mode="incr")
        cog.current_scope().record_metric("output_token_count", n, mode="incr")
        return "ok"


@pytest.mark.parametrize("cls,expected", [(Metered, 4), (AsyncMetered, 8)])
def test_metrics_a_predictor_records_reach_its_prediction(cls, expected):
    p = rj.predictions.create(cls, {"n": 4}).wait(5)
    assert p.status == "succeeded"
    assert p.metrics["output_token_count"] == expected
    if cls is Metered:
        assert p.metrics["timing"] == {"decode": 0.5}


class Reader(BasePredictor):
    def setup(self, weights: cog.Path | None = None) -> None:
        self.weights = pathlib.Path(weights).read_bytes() if weights else b""

    def predict(self, doc: cog.File = Input(description="a document")) -> str:
        return f"{doc.read().decode()}+{self.weights.decode()}"


def test_cog_file_inputs_arrive_as_file_objects_and_setup_gets_weights(tmp_path, monkeypatch):
    from replicate_jupyter.prediction.files import InputFile

    weights = tmp_path / "w.bin"
    weights.write_bytes(b"12345")
    monkeypatch.setenv("COG_WEIGHTS", str(weights))
    assert rj.run(Reader, {"doc": InputFile(b"text", name="a.txt")}) == "text+12345"


TRACED = r"""
import sys, time
from replicate_jupyter import api
P = sys.argv[1]
ok = api.execute(api.prepare(P + "/sleep.py:Predictor", {"seconds": 0}, on="local"))
busy = api.start(api.prepare(P + "/stop_busy.py:Predictor", {"seconds": 20}, on="local"))
while busy.status != "processing":
    time.sleep(0.01)
time.sleep(0.2)
busy.cancel()
busy.wait(20)
def f():
    return 1
for hook in (sys.setprofile, sys.settrace):  # cProfile, a debugger, coverage
    hook(lambda *a: None)
    f()
    hook(None)
print(ok.status, busy.status, "traced ok", flush=True)
"""


def test_a_profiler_or_debugger_still_works_after_runs_and_a_stopped_one():
    """Every call used to end by clearing a pending stop with PyThreadState_SetAsyncExc(NULL),
    which leaves CPython 3.11's async-exception signal set: with a profiler or tracer on, the
    main thread then spun at 100% CPU for ever (cProfile, the JupyterLab debugger, coverage)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", TRACED, str(P)], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().endswith("succeeded canceled traced ok"), out.stdout[-500:] + out.stderr[-2000:]

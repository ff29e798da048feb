"""`replicate-jupyter serve` and edited code, against real serve + coglet processes.

- an edit of the served folder's code reaches the worker before its next prediction (serve
  restarts coglet between predictions; a running one finishes on the old code), its schema and
  version regenerated, and the pool sees the new version (serve/reload.py); the first prediction
  after the edit, resolved to the old version, reports the version that ran it;
- a served folder's concurrency (cog.yaml `concurrency.max`) is in its schema and is the pool's
  slots for that worker (wire.CONCURRENCY_KEY);
- a second serve of the same folder, after an edit (the kernel's own Cog process of the model
  beside a worker), runs in the model's folder, not in a mirror (serve/workdir.py).
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import textwrap
import threading
import time

import httpx
import pytest
from serve_helpers import Serve

import replicate_jupyter as rj
from replicate_jupyter.runners.workers import pool

PREDICT = textwrap.dedent('''\
    import os
    import time

    from cog import BasePredictor, Input

    import helper

    VERSION = "v1"


    class Predictor(BasePredictor):
        def setup(self):
            with open("setup-wrote.txt", "w") as f:  # a file the model writes in its working directory
                f.write(VERSION)

        def predict(self, delay: float = Input(default=0.0)) -> str:
            print("running", VERSION)
            time.sleep(delay)
            return f"{VERSION}|{helper.TAG}|{os.getcwd()}"
    ''')

ASYNC = textwrap.dedent('''\
    import asyncio

    from cog import BasePredictor, Input


    class Predictor(BasePredictor):
        async def predict(self, delay: float = Input(default=1.0)) -> str:
            await asyncio.sleep(delay)
            return "done"
    ''')


def make_folder(root: pathlib.Path, predict: str = PREDICT, concurrency: int | None = None) -> pathlib.Path:
    root.mkdir(parents=True)
    (root / "cog.yaml").write_text('build:\n  python_version: "3.11"\npredict: "predict.py:Predictor"\n'
                                   + (f"concurrency:\n  max: {concurrency}\n" if concurrency else ""))
    (root / "predict.py").write_text(predict)
    (root / "helper.py").write_text('TAG = "helper-v1"\n')
    return root


def edit(path: pathlib.Path, old: str, new: str) -> None:
    """Change a file as an editor does; its mtime moves on even on a coarse clock."""
    before = path.stat().st_mtime_ns
    path.write_text(path.read_text().replace(old, new))
    if path.stat().st_mtime_ns == before:
        os.utime(path, ns=(before + 1_000_000, before + 1_000_000))


def predict(s: Serve, **inp) -> dict:
    return httpx.post(s.url + "/predictions", json={"input": inp}, timeout=60).json()


def info(s: Serve) -> dict:
    return httpx.get(s.url + "/openapi.json", timeout=10).json()["info"]


@pytest.fixture
def served(tmp_path):
    folder = make_folder(tmp_path / "editme")
    s = Serve(str(folder))
    yield folder, s
    s.stop()


def test_an_edit_reaches_the_worker_before_its_next_prediction(served):
    folder, s = served
    P = pool()
    P.add(s.url)
    try:
        name = info(s)["x-replicate-model"]
        first = rj.predictions.create(name, {}, on="workers").wait(60)
        assert first.status == "succeeded" and first.output.startswith("v1|helper-v1|"), first.error
        v1, pid1 = info(s)["x-replicate-version"], s.coglet().pid
        edit(folder / "predict.py", '"v1"', '"v2"')
        p = rj.predictions.create(name, {}, on="workers").wait(60)
        assert p.status == "succeeded", p.error
        assert p.output == f"v2|helper-v1|{folder}" and p.logs == "running v2\n"
        assert info(s)["x-replicate-version"] != v1 and s.coglet().pid != pid1
        assert any("reloaded at" in line for line in s.lines), s.lines
        assert "reloading" in s.log.read_text() if s.log else False  # the worker's own log says so too
        # the pool reads the new schema (coglet's setup.started_at moved): later predictions carry the new version
        worker = P.workers()[0]
        deadline = time.monotonic() + 10
        while worker.version == v1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert worker.version == info(s)["x-replicate-version"]
        assert rj.predictions.create(name, {}, on="workers").wait(60).version == worker.version
        # a helper of the folder counts as its code too
        edit(folder / "helper.py", "helper-v1", "helper-v2")
        assert predict(s)["output"] == f"v2|helper-v2|{folder}"
    finally:
        P.remove(s.url)


def test_the_first_prediction_after_an_edit_reports_the_version_it_ran(served):
    """It was resolved (the pool's version) before serve reloaded: serve's answer says which ran."""
    folder, s = served
    P = pool()
    P.add(s.url)
    try:
        name, v1 = info(s)["x-replicate-model"], info(s)["x-replicate-version"]
        assert predict(s)["version"] == v1  # serve names it in every finished prediction
        first = rj.predictions.create(name, {}, on="workers").wait(60)
        assert first.status == "succeeded" and first.version == v1, first.error
        edit(folder / "predict.py", '"v1"', '"v2"')
        p = rj.predictions.create(name, {}, on="workers")
        assert p.version == v1  # what the kernel knew when it resolved it
        p.wait(60)
        v2 = info(s)["x-replicate-version"]
        assert p.status == "succeeded" and p.output.startswith("v2|"), p.error
        assert v2 != v1 and p.version == v2 and p.to_json()["version"] == v2
    finally:
        P.remove(s.url)


def test_a_running_prediction_finishes_on_the_old_code_first(served):
    folder, s = served
    out: dict = {}

    def slow():
        out["slow"] = predict(s, delay=2.0)
        out["slow_end"] = time.monotonic()

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.6)  # running now
    edit(folder / "predict.py", '"v1"', '"v2"')
    fast = predict(s)
    fast_end = time.monotonic()
    t.join(30)
    assert out["slow"]["output"].startswith("v1|") and fast["output"].startswith("v2|")
    assert fast_end > out["slow_end"]
    assert fast["logs"] == "running v2\n"


def test_a_new_input_is_in_the_regenerated_schema(served):
    folder, s = served
    assert "shout" not in httpx.get(s.url + "/openapi.json").json()["components"]["schemas"]["Input"]["properties"]
    edit(folder / "predict.py", "delay: float = Input(default=0.0)) -> str:",
         "delay: float = Input(default=0.0), shout: bool = Input(default=False)) -> str:")
    r = predict(s, shout=True)  # coglet validates against the new schema
    assert r["status"] == "succeeded", r
    assert "shout" in httpx.get(s.url + "/openapi.json").json()["components"]["schemas"]["Input"]["properties"]


def test_an_edit_that_does_not_load_fails_predictions_and_keeps_the_old_server(served):
    folder, s = served
    assert predict(s)["output"].startswith("v1|")
    pid = s.coglet().pid
    edit(folder / "predict.py", "class Predictor(BasePredictor):", "class Predictor(BasePredictor)  # typo")
    r = predict(s)
    assert r["status"] == "failed" and "does not load" in r["error"] and "SyntaxError" in r["error"], r
    assert predict(s)["status"] == "failed"  # until it is fixed
    assert s.coglet().pid == pid and httpx.get(s.url + "/health-check").json()["status"] == "READY"
    edit(folder / "predict.py", "class Predictor(BasePredictor)  # typo", "class Predictor(BasePredictor):")
    edit(folder / "predict.py", '"v1"', '"v3"')
    assert predict(s)["output"].startswith("v3|")


def test_a_loose_predictor_file_reloads_from_its_folder(tmp_path):
    (tmp_path / "helper.py").write_text('TAG = "helper-v1"\n')
    (tmp_path / "model.py").write_text(PREDICT.replace('open("setup-wrote.txt", "w")', 'open(os.devnull, "w")'))
    s = Serve(f"{tmp_path / 'model.py'}:Predictor")
    try:
        assert predict(s)["output"].startswith("v1|helper-v1|")
        edit(tmp_path / "helper.py", "helper-v1", "helper-v2")
        assert predict(s)["output"].startswith("v1|helper-v2|")
    finally:
        s.stop()


def test_the_pool_sends_a_worker_as_many_predictions_as_its_concurrency(tmp_path):
    folder = make_folder(tmp_path / "asyncm", ASYNC, concurrency=4)
    s = Serve(str(folder))
    P = pool()
    try:
        assert info(s)["x-rj-concurrency"] == 4
        row = P.add(s.url)
        assert row["slots"] == 4
        t0 = time.monotonic()
        ps = [rj.predictions.create("local/asyncm", {"delay": 1.5}, on="workers") for _ in range(4)]
        for p in ps:
            p.wait(60)
        took = time.monotonic() - t0
        assert [p.output for p in ps] == ["done"] * 4
        assert took < 4.0, f"4 x 1.5 s took {took:.2f} s: sent one at a time"
        assert P.add(s.url, slots=1)["slots"] == 1  # the user's slots win
    finally:
        with contextlib.suppress(KeyError):
            P.remove(s.url)
        s.stop()


def test_a_second_serve_of_an_edited_folder_runs_in_the_folder(served):
    folder, s = served
    assert predict(s)["output"] == f"v1|helper-v1|{folder}"
    v1 = info(s)["x-replicate-version"]
    edit(folder / "predict.py", '"v1"', '"v2"')
    other = Serve(str(folder))  # what the kernel's own Cog process of this model is
    try:
        assert any(f"runs in {folder} [folder]" in line for line in other.lines), other.lines
        assert predict(other)["output"] == f"v2|helper-v1|{folder}"
        assert (folder / "setup-wrote.txt").read_text() == "v2"  # written by the second one's setup, kept
        assert info(s)["x-replicate-version"] == v1  # the first one serves what it read, untouched
    finally:
        other.stop()
    assert predict(s)["output"] == f"v2|helper-v1|{folder}"  # and reloads in its folder too
    s.stop()
    assert not (folder / ".cog").exists()


def test_the_local_backend_runs_an_edited_served_folder_in_the_folder(served):
    """The review's case: a worker serves the folder; after an edit, `local` runs it."""
    from replicate_jupyter.model import predictors
    from replicate_jupyter.prediction.prediction import Prediction
    from replicate_jupyter.runners.cogproc import CogProcesses

    folder, s = served
    edit(folder / "predict.py", '"v1"', '"v2"')
    cp = CogProcesses()
    try:
        spec = predictors.load(str(folder))
        p = Prediction(spec.name, {}, version=spec.version, backend="local", schema=spec.schema)
        cp.execute(p, spec)
        assert p.status == "succeeded", p.error
        assert p.output == f"v2|helper-v1|{folder}"
        assert (folder / "setup-wrote.txt").read_text() == "v2"
    finally:
        cp.close()

"""What a folder model printed reaches `p.logs`, and its code is the code on disk, against real
serve + coglet (review 2/B, findings 1, 3 and 5).

- A folder model's prediction that fails at once keeps every line it printed, a Secret still
  redacted, on `local` and on `workers`: coglet's blocking answer to a failed prediction has
  `logs: ''`, and a prediction that ends before its stream attaches is filled in from coglet's
  log file (by serve's front for every worker, by the kernel's own Cog process for local).
- A helper module imported only inside `setup()` is code of the model: editing it replaces the
  local Cog process, as editing predict.py does.
- A burst of setup() prints reaches the first prediction whole: coglet 0.23.1 files the lines
  that come after it says READY in its log file, not in its health's setup logs.
"""
from __future__ import annotations

import pathlib
import textwrap

import httpx
import pytest
from serve_helpers import Serve

import replicate_jupyter as rj
from replicate_jupyter.runners.cogproc import CogProcesses
from replicate_jupyter.runners.workers import pool

SECRET = "tok-VERYSECRET-42"
YAML = 'build:\n  python_version: "3.11"\npredict: "predict.py:Predictor"\n'


def _folder(root: pathlib.Path, source: str, **files: str) -> pathlib.Path:
    root.mkdir()
    (root / "cog.yaml").write_text(YAML)
    (root / "predict.py").write_text(textwrap.dedent(source))
    for name, text in files.items():
        (root / name).write_text(text)
    return root


FAILS = """
    import logging
    import sys

    from cog import BasePredictor, Input, Secret


    class Predictor(BasePredictor):
        def predict(self, token: Secret = Input(description="a token")) -> str:
            value = token.get_secret_value()
            print(f"stdout sees {value}")
            print(f"stderr sees {value}", file=sys.stderr)
            logging.basicConfig(level=logging.INFO)
            logging.getLogger("fails").info("logging line")
            raise ValueError(f"failed with {value}")
"""
PRINTED = ["stdout sees **********", "stderr sees **********", "INFO:fails:logging line"]


def _assert_kept(p) -> None:
    assert p.status == "failed" and "ValueError" in (p.error or ""), (p.status, p.error)
    assert [line for line in p.logs.splitlines() if not line.startswith("[replicate-jupyter]")] == PRINTED, p.logs
    assert SECRET not in p.logs and SECRET not in (p.error or "") and SECRET not in str(p.to_json())


def test_a_fast_failure_keeps_its_prints_on_local(tmp_path, procs):
    folder = _folder(tmp_path / "fails", FAILS)
    for _ in range(6):  # the old code lost them in most of these
        _assert_kept(_run(procs, folder, {"token": SECRET}))


def test_a_fast_failure_keeps_its_prints_on_workers(tmp_path):
    """Through real serve: the old code kept none of them (the creating PUT answers first)."""
    s = Serve(str(_folder(tmp_path / "fails", FAILS)))
    P = pool()
    try:
        P.add(s.url)
        name = httpx.get(s.url + "/openapi.json", timeout=10).json()["info"]["x-replicate-model"]
        for _ in range(6):
            _assert_kept(rj.predictions.create(name, {"token": SECRET}, on="workers").wait(60))
        # a client of serve other than the kernel gets them too, as coglet's own stream gives them
        answer = httpx.post(s.url + "/predictions", json={"input": {"token": "x"}}, timeout=60).json()
        assert answer["status"] == "failed" and answer["logs"].splitlines() == [
            "stdout sees x", "stderr sees x", "INFO:fails:logging line"], answer
    finally:
        P.remove(s.url)
        s.stop()


LAZY = """
    from cog import BasePredictor


    class Predictor(BasePredictor):
        def setup(self) -> None:
            import helper_lazy  # imported inside setup(), as models importing heavy libraries do
            self.tag = helper_lazy.TAG

        def predict(self, text: str = "x") -> str:
            return f"{self.tag}|{text}"
"""


@pytest.fixture
def procs():
    cp = CogProcesses()
    yield cp
    cp.close()


def _run(cp: CogProcesses, folder: pathlib.Path, inp: dict | None = None) -> rj.Prediction:
    from replicate_jupyter.model import predictors

    spec = predictors.load(str(folder))
    p = rj.Prediction(spec.name, inp or {}, version=spec.version, backend="local", schema=spec.schema)
    cp.execute(p, spec)
    return p


def test_a_helper_imported_inside_setup_is_code_of_the_model(tmp_path, procs):
    """The loader's version does not see the helper (predict.py's import never runs it); the
    local Cog process is replaced all the same, and its first prediction says it was a cold start
    (serve itself reloading coglet would give the new code, but not that)."""
    folder = _folder(tmp_path / "lazy", LAZY, **{"helper_lazy.py": 'TAG = "lazy-v1"\n'})
    first = _run(procs, folder)
    assert first.output == "lazy-v1|x" and "setup_time" in first.metrics
    [old] = procs._procs.values()
    (folder / "helper_lazy.py").write_text('TAG = "lazy-v2"\n')  # same size: the mtime tells
    edited = _run(procs, folder)
    assert edited.output == "lazy-v2|x" and "setup_time" in edited.metrics
    [new] = procs._procs.values()
    assert new is not old and old.proc.wait(20) == 0  # replaced, and the old one stopped cleanly
    again = _run(procs, folder)
    assert again.output == "lazy-v2|x" and "setup_time" not in again.metrics  # unchanged: kept warm


BURST = """
    import sys

    from cog import BasePredictor


    class Predictor(BasePredictor):
        def setup(self) -> None:
            for i in range(200):
                print(f"setup line {i}")
            print("setup to stderr", file=sys.stderr)

        def predict(self, text: str = "x") -> str:
            print("predict", text)
            return text
"""


def test_a_burst_of_setup_prints_reaches_the_first_prediction_whole(tmp_path):
    """coglet 0.23.1 kept 0-179 of these 201 lines in its health's setup logs (4 cold starts)."""
    folder = _folder(tmp_path / "burst", BURST)
    expected = [f"setup line {i}" for i in range(200)] + ["setup to stderr"]
    for _ in range(2):  # each a cold start of its own
        cp = CogProcesses()
        try:
            p = _run(cp, folder)
        finally:
            cp.close()
        assert p.status == "succeeded", p.error
        lines = p.logs.splitlines()
        assert [line for line in lines if line.startswith("setup")] == expected
        assert lines.count("predict x") == 1 and p.metrics.get("setup_time") is not None

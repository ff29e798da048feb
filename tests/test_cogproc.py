"""The kernel-side Cog process for folder models (runners/cogproc.py), against real serve + coglet.

Each test drives `CogProcesses.execute` the way LocalRunner does: a Prediction with the model's
schema and its PredictorSpec. One CogProcesses for the module keeps the machine's load down.
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap
import threading
import time

import psutil
import pytest

from replicate_jupyter.model import predictors
from replicate_jupyter.prediction.events import Output, Progress
from replicate_jupyter.prediction.prediction import Prediction
from replicate_jupyter.runners.cogproc import CogProcesses, folder_of

ROOT = pathlib.Path(__file__).resolve().parent.parent
COG = ROOT / "tests" / "predictors" / "cogfolders"
NO_COG = shutil.ignore_patterns(".cog")  # a served folder holds serve's .cog/ meanwhile


@pytest.fixture(scope="module")
def procs():
    cp = CogProcesses()
    yield cp
    cp.close()


def run(cp: CogProcesses, folder: pathlib.Path | str, inp: dict | None = None, wait: bool = True) -> Prediction:
    spec = predictors.load(str(folder))
    p = Prediction(spec.name, inp or {}, version=spec.version, backend="local", schema=spec.schema)
    if wait:
        cp.execute(p, spec)
    else:
        threading.Thread(target=cp.execute, args=(p, spec), daemon=True).start()
    return p


def serve_processes(cp: CogProcesses) -> list[psutil.Process]:
    out = []
    for pr in cp._procs.values():
        me = psutil.Process(pr.proc.pid)
        out += [me] + me.children(recursive=True)
    return out


def test_folder_of():
    assert folder_of(str(COG / "hello-image")).target == "predict.py:Predictor"
    assert folder_of(f"{COG / 'hello-image' / 'predict.py'}:Predictor").root == COG / "hello-image"
    assert folder_of(f"{ROOT / 'tests' / 'predictors' / 'echo.py'}:Predictor") is None
    assert folder_of("local/shapes") is None


def test_file_beside_predict_py_returns_its_bytes(procs):
    cwd = os.getcwd()
    p = run(procs, COG / "hello-image")
    assert p.status == "succeeded", p.error
    assert p.backend == "local"
    assert p.output.read() == (COG / "hello-image" / "hello.webp").read_bytes()
    assert "worker" not in p.metrics and p.metrics["hardware"]
    assert os.getcwd() == cwd


def test_relative_weights_environment_and_the_kernel_untouched(procs, monkeypatch):
    monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_kernel")
    monkeypatch.setenv("SOME_SERVICE_KEY", "key-kernel")
    monkeypatch.setenv("LISTED_TOKEN", "listed")
    predictors.load(str(COG / "weights-env"))  # the kernel reads the schema (validation, forms) first
    before_env, before_cwd, before_path = dict(os.environ), os.getcwd(), list(sys.path)
    p = run(procs, COG / "weights-env", {"x": 4})
    assert p.status == "succeeded", p.error
    out = json.loads(p.output)
    assert out["scaled"] == 12
    assert out["cwd"] == str(COG / "weights-env")
    assert out["greeting"] == "hello from cog.yaml" and out["listed_token"] == "listed"
    assert out["leaked"] == []
    assert "loading weights from weights/scale.txt" in p.logs  # setup()'s print, on the cold run
    assert p.metrics["setup_time"] > 0
    assert dict(os.environ) == before_env and "GREETING" not in os.environ
    assert os.getcwd() == before_cwd and sys.path == before_path
    again = run(procs, COG / "weights-env", {"x": 1})
    assert json.loads(again.output)["scaled"] == 3
    assert "setup_time" not in again.metrics and "loading weights" not in again.logs  # warm


def test_null_output_where_a_file_is_promised_fails(procs):
    p = run(procs, COG / "null-output")
    assert p.status == "failed"
    assert "missing.webp" in p.error and "null" in p.error
    assert "127.0.0.1" not in p.error


def test_stream_progress_and_cancel(procs):
    p = run(procs, COG / "tokens", {"n": 6})
    assert p.status == "succeeded" and p.output == [f"t{i} " for i in range(6)]
    steps = [(e.step, e.total) for e in p._history if isinstance(e, Progress)]
    assert steps == [(i, 6) for i in range(1, 7)] and "[rj-progress]" not in p.logs
    long = run(procs, COG / "tokens", {"n": 200, "delay": 0.05}, wait=False)
    deadline = time.monotonic() + 20
    while len(long.output or []) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    t0 = time.monotonic()
    long.cancel_event.set()
    procs.cancel(long)
    long.wait(10)
    assert long.status == "canceled" and time.monotonic() - t0 < 2
    assert len(long.output) < 60
    after = run(procs, COG / "tokens", {"n": 2})  # the process is still good
    assert after.status == "succeeded"


def test_first_token_and_overhead_against_in_process(procs):
    """Figures for the note; loose bounds so a stall (a delayed ACK, a reconnect) fails it."""
    run(procs, COG / "echo", {"text": "warm"})
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        p = run(procs, COG / "echo", {"text": "x"})
        times.append(time.perf_counter() - t0)
        assert p.output == ">x"
    ttfts = []
    for _ in range(10):
        t0 = time.perf_counter()
        p = run(procs, COG / "tokens", {"n": 3}, wait=False)
        first = next(e for e in p.events(timeout=20) if isinstance(e, Output))
        ttfts.append(time.perf_counter() - t0)
        assert first.value == "t0 "
        p.wait(10)
    times.sort(), ttfts.sort()
    print(f"\nfolder model, warm: {times[len(times) // 2] * 1e3:.2f} ms per prediction, "
          f"first token {ttfts[len(ttfts) // 2] * 1e3:.2f} ms (medians)")
    assert times[len(times) // 2] < 0.05 and ttfts[len(ttfts) // 2] < 0.1


def test_an_edited_folder_gets_a_new_process(procs, tmp_path):
    folder = tmp_path / "editable"
    shutil.copytree(COG / "echo", folder, ignore=NO_COG)
    assert run(procs, folder, {"text": "a"}).output == ">a"
    old = [pr.proc for pr in procs._procs.values() if pr.folder.root == folder]
    source = (folder / "predict.py").read_text().replace('self.prefix = ">"', 'self.prefix = "v2:"')
    (folder / "predict.py").write_text(source)
    os.utime(folder / "predict.py", ns=(time.time_ns(), time.time_ns() + 1_000_000))
    assert run(procs, folder, {"text": "a"}).output == "v2:a"
    assert old and old[0].wait(20) == 0  # the old version's serve stopped, cleanly
    procs.evict(str(folder))
    assert not [pr for pr in procs._procs.values() if pr.folder.root == folder]


def test_concurrent_first_runs_start_one_process(tmp_path):
    cp = CogProcesses()
    try:
        folder = tmp_path / "once"
        shutil.copytree(COG / "echo", folder, ignore=NO_COG)
        preds = [run(cp, folder, {"text": str(i)}, wait=False) for i in range(3)]
        for p in preds:
            p.wait(60)
        assert [p.output for p in preds] == [">0", ">1", ">2"]
        assert len(cp._procs) == 1
        group = serve_processes(cp)
        serve_pid = next(iter(cp._procs.values())).proc.pid
        assert os.getsid(serve_pid) != os.getsid(0)  # a kernel interrupt (SIGINT to its group) misses it
    finally:
        cp.close()
    assert not [p for p in psutil.wait_procs(group, timeout=15)[1] if p.status() != psutil.STATUS_ZOMBIE]
    assert not (folder / ".cog").exists()


def test_setup_failure_is_reported(tmp_path, procs):
    folder = tmp_path / "broken"
    shutil.copytree(COG / "echo", folder, ignore=NO_COG)
    (folder / "predict.py").write_text((folder / "predict.py").read_text().replace(
        'print("loading echo")', 'raise RuntimeError("no weights here")'))
    p = run(procs, folder)
    assert p.status == "failed" and "setup failed" in p.error and "no weights here" in p.error


def test_kernel_killed_takes_its_cog_processes_with_it(tmp_path):
    script = tmp_path / "kernel.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT / 'tests')!r})
        from test_cogproc import run, CogProcesses, COG
        cp = CogProcesses()
        p = run(cp, COG / "echo", {{"text": "k"}})
        print(p.output, flush=True)
        time.sleep(120)
    """))
    kernel = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert kernel.stdout.readline().strip() == ">k"
        group = psutil.Process(kernel.pid).children(recursive=True)
        assert any("cog.server.http" in " ".join(c.cmdline()) for c in group)
        kernel.kill()  # SIGKILL: no atexit, no finally
        kernel.wait(10)
        alive = [p for p in psutil.wait_procs(group, timeout=20)[1] if p.status() != psutil.STATUS_ZOMBIE]
        assert not alive, f"left running: {alive}"
    finally:
        if kernel.poll() is None:
            kernel.kill()

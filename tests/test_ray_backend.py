"""The `ray` backend on a real two-node Ray cluster bound to loopback (head 127.0.0.2, worker
127.0.0.3), started once for this module and stopped at its end (only the processes we started).

Ray rewrites 127.0.0.1 to the host's address, hence 127.0.0.2/3. Actors ask for 0.25 CPU so a
few models fit on the small cluster the shared 2-core machine allows.
"""
from __future__ import annotations

import _thread
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest
import ray  # the [test] extra installs it: a missing ray must fail, not skip

ROOT = pathlib.Path(__file__).resolve().parent.parent
PRED = ROOT / "tests" / "predictors"
RAY_BIN = pathlib.Path(sys.executable).parent / "ray"
HEAD_IP, WORKER_IP = "127.0.0.2", "127.0.0.3"
TOKENS = f"{PRED / 'tokens.py'}:Predictor"
STEPS = f"{PRED / 'steps.py'}:Predictor"
IMAGE = f"{PRED / 'image.py'}:Predictor"
FAILING = f"{PRED / 'failing.py'}:Predictor"
GRAD = f"{PRED / 'grad_mode.py'}:Predictor"
BUSY = f"{PRED / 'stop_busy.py'}:Predictor"
OPTS = {"num_cpus": 0.25}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HEAD_IP, 0))
        return s.getsockname()[1]


def _start(args: list[str], log: pathlib.Path, env: dict) -> subprocess.Popen:
    # --block keeps `ray start` in the foreground as the parent of the node's processes: ending
    # its process group stops exactly this node and nothing else on the machine.
    return subprocess.Popen([str(RAY_BIN), "start", "--block", *args], stdout=log.open("w"), stderr=subprocess.STDOUT,
                            env=env, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(3)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


@pytest.fixture(scope="module")
def cluster():
    os.environ["RAY_AUTH_MODE"] = "disabled"
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="rj-ray-"))
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    port = _free_port()
    address = f"{HEAD_IP}:{port}"
    procs = [_start(["--head", "--node-ip-address", HEAD_IP, "--port", str(port), "--num-cpus", "2",
                     "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", str(tmp / "t")],
                    tmp / "head.log", env)]
    try:
        deadline = time.monotonic() + 60
        while True:  # the GCS port answers once the head is up
            try:
                socket.create_connection((HEAD_IP, port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or procs[0].poll() is not None:
                    raise RuntimeError("ray head did not start:\n" + (tmp / "head.log").read_text()[-3000:]) from None
                time.sleep(0.3)
        procs.append(_start(["--address", address, "--node-ip-address", WORKER_IP, "--num-cpus", "1",
                             "--disable-usage-stats"], tmp / "worker.log", env))
        yield {"address": address, "tmp": tmp}
    finally:
        from replicate_jupyter.session import session

        session.close()
        try:
            import ray

            ray.shutdown()
        except Exception:
            pass
        for proc in reversed(procs):
            _stop(proc)


@pytest.fixture(scope="module")
def rj(cluster):
    import replicate_jupyter as rj
    from replicate_jupyter.session import session

    previous = session.default_backend
    session.use("ray", address=cluster["address"], **OPTS)
    yield rj
    # other test modules share this process: leave the default backend as it was
    session.default_backend = previous
    session.backend_options.pop("ray", None)


def _runner():
    from replicate_jupyter.session import session

    return session.runner("ray")


def test_import_does_not_import_ray():
    code = "import sys, replicate_jupyter, replicate_jupyter.runners; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


def test_tokens_stream_in_order_before_the_end(rj):
    p = rj.predictions.create(TOKENS, input={"n": 6, "delay": 0.15}, on="ray")
    seen = []
    for e in p.events(timeout=60):
        seen.append((time.monotonic(), e))
    outputs = [(t, e) for t, e in seen if e.event == "output"]
    done_at = seen[-1][0]
    assert [e.value for _, e in outputs] == [f"t{i} " for i in range(6)]
    assert [e.index for _, e in outputs] == list(range(6))
    assert done_at - outputs[0][0] > 0.5  # the first token arrived well before the run ended
    assert p.status == "succeeded" and p.text == "t0 t1 t2 t3 t4 t5 "
    assert p.metrics["hardware"] == "cpu" and 0.7 < p.metrics["predict_time"] < 5
    assert seen[0][1].event == "start"
    # warm: the second run has no setup_time, the first had one
    q = rj.predictions.create(TOKENS, input={"n": 2}, on="ray").wait(30)
    assert q.status == "succeeded" and "setup_time" not in q.metrics and "setup_time" in p.metrics


def test_image_outputs_are_file_outputs(rj):
    from replicate_jupyter.prediction.files import FileOutput

    out = rj.run(IMAGE, input={"color": "blue", "count": 2}, on="ray")
    assert len(out) == 2 and all(isinstance(f, FileOutput) for f in out)
    assert out[0].content_type == "image/png" and out[0].image().getpixel((0, 0)) == (0, 0, 255)
    # and a file given as input reaches the actor as a file on its node
    assert rj.run(f"{PRED / 'file_in.py'}:Predictor", input={"image": b"12345"}, on="ray") == "5 bytes"


def test_progress_and_previews_arrive_as_events(rj):
    p = rj.predictions.create(STEPS, input={"steps": 8, "delay": 0.1}, on="ray")
    events = list(p.events(timeout=60))
    steps = [e.step for e in events if e.event == "progress"]
    previews = [e for e in events if e.event == "preview"]
    assert steps == list(range(1, 9)) and p.output == "done 8"
    assert previews and previews[0].image.size == (8, 8)  # a PIL image came across
    assert len(previews) < 8  # rate-limited on the actor (4/s)


def test_cancel_stops_the_step_loop_within_a_step(rj):
    p = rj.predictions.create(STEPS, input={"steps": 200, "delay": 0.1}, on="ray")
    for e in p.events(timeout=60):
        if e.event == "progress" and e.step >= 5:
            break
    t = time.monotonic()
    p.cancel()
    p.wait(20)
    assert p.status == "canceled"
    assert time.monotonic() - t < 2.0
    assert p.progress[0] < 20
    assert 0.4 < p.metrics["predict_time"] < 3.0  # partial, measured on the actor
    info = _runner().actor_info(STEPS)
    assert info["running"] is None  # the loop really stopped on the actor


def test_ray_cancel_alone_stops_the_actor_run(rj):
    """Without the cancel flag: `ray.cancel` on the stream is seen by the actor (is_canceled)."""
    actor = _runner().actor(STEPS)
    stream = actor.predict.remote("direct-1", {"steps": 200, "delay": 0.1})
    got = [ray.get(next(stream)) for _ in range(3)]
    assert got[0].event == "start"
    ray.cancel(stream)
    result = ray.get(actor.result.remote("direct-1", 5.0), timeout=10)
    assert result["status"] == "canceled" and result["metrics"]["predict_time"] < 3


def test_setup_thread_state_holds_in_every_prediction(rj):
    """Setup turns autograd off for its own thread (both embedded models do, as many Cog models
    do) and sets a thread-local: every prediction of the actor sees both, on the thread setup
    ran on, also when several are asked at once (Ray serves each call on a thread of its own)."""
    preds = [rj.predictions.create(GRAD, input={"tag": str(i)}, on="ray") for i in range(4)]
    for p in preds:
        p.wait(120)
    assert [p.status for p in preds] == ["succeeded"] * 4, [p.error for p in preds]
    for i, p in enumerate(preds):
        assert p.output == {"grad": False, "mark": "from setup", "same_thread": True, "tag": str(i)}
    info = _runner().actor_info(GRAD)
    assert info["served"] >= 4 and info["model_thread"].startswith("rj-model")


def test_ray_cancel_stops_a_predictor_that_never_reports_progress(rj):
    """A busy loop with no progress() and no sleep: `ray.cancel` still stops it on the model
    thread (cog's CancelationException raised there), well before its 20 s."""
    actor = _runner().actor(BUSY)
    ray.get(actor.warm.remote(), timeout=60)
    stream = actor.predict.remote("busy-1", {"seconds": 20})
    assert ray.get(next(stream)).event == "start"
    t = time.monotonic()
    ray.cancel(stream)
    result = ray.get(actor.result.remote("busy-1", 10.0), timeout=15)
    assert result["status"] == "canceled" and time.monotonic() - t < 5
    assert result["metrics"]["predict_time"] < 5
    assert _runner().actor_info(BUSY)["running"] is None


def test_a_stream_closed_mid_run_is_stopped_and_its_result_kept():
    """What `ray.cancel` does to the actor's generator (closes it at a yield while the call runs),
    on ModelCore alone: the call is stopped on the model thread, `result()` has its outcome and
    the next prediction runs on the same warm model."""
    from replicate_jupyter.runners.ray.actor import ModelCore

    core = ModelCore(STEPS)
    stream = core.predict("closed-1", {"steps": 200, "delay": 0.05})
    assert next(stream).event == "start"
    for _ in range(4):
        next(stream)
    t = time.monotonic()
    stream.close()
    result = core.result("closed-1", 5.0)
    assert result is not None and result["status"] == "canceled" and time.monotonic() - t < 2
    assert 0.1 < result["metrics"]["predict_time"] < 2 and core.running is None
    events = list(core.predict("after-1", {"steps": 2, "delay": 0.0}))
    assert events[-1].status == "succeeded" and "setup_time" not in events[-1].metrics


def test_kernel_style_interrupt_cancels(rj):
    from replicate_jupyter import api

    p = api.prepare(STEPS, input={"steps": 200, "delay": 0.1}, on="ray")

    def interrupt():
        while p.progress is None or p.progress[0] < 4:
            time.sleep(0.02)
        _thread.interrupt_main()

    threading.Thread(target=interrupt, daemon=True).start()
    t = None
    with pytest.raises(KeyboardInterrupt):
        try:
            api.execute(p)
        finally:
            t = time.monotonic()
    assert p.status == "canceled" and p.progress[0] < 20
    assert 0.3 < p.metrics["predict_time"] < 3.0
    deadline = time.monotonic() + 3
    while _runner().actor_info(STEPS)["running"] is not None:
        assert time.monotonic() < deadline, "the actor kept running after the interrupt"
        time.sleep(0.1)
    assert t is not None


def test_model_error_is_failed_with_its_traceback(rj):
    p = rj.predictions.create(FAILING, input={"text": "x"}, on="ray").wait(60)
    assert p.status == "failed"
    assert "ValueError: model exploded on 'x'" in p.error
    assert "failing.py" in p.traceback and "helper" in p.traceback
    assert "runners" not in p.traceback  # the model's frames, not ours
    assert "about to fail" in p.logs


def test_killed_actor_fails_the_run_then_restarts(rj):
    actor = _runner().actor(TOKENS)
    pid = ray.get(actor.pid.remote(), timeout=30)
    p = rj.predictions.create(TOKENS, input={"n": 100, "delay": 0.1}, on="ray")
    for e in p.events(timeout=60):
        if e.event == "output" and e.index >= 2:
            break
    os.kill(pid, signal.SIGKILL)
    p.wait(60)
    assert p.status == "failed"
    assert "died mid-prediction" in p.error and "127.0.0." in p.error and str(pid) in p.error
    assert 3 <= len(p.output) < 100  # what streamed before the loss is kept
    q = rj.predictions.create(TOKENS, input={"n": 3}, on="ray").wait(90)
    assert q.status == "succeeded" and q.text == "t0 t1 t2 "
    assert ray.get(actor.pid.remote(), timeout=30) != pid  # Ray restarted it in a new process
    assert "setup_time" in q.metrics  # set up again after the restart


def test_two_nodes_place_and_stream(rj, cluster):
    from replicate_jupyter.runners.ray.runner import RayRunner

    ray = _runner()._ray()  # connected as a driver
    deadline = time.monotonic() + 60
    while len([n for n in ray.nodes() if n["Alive"]]) < 2:
        assert time.monotonic() < deadline, "the worker node did not join"
        time.sleep(0.5)
    remote = RayRunner(address=cluster["address"], resources={f"node:{WORKER_IP}": 0.01}, **OPTS)
    try:
        from replicate_jupyter.prediction.prediction import Prediction

        # the same tokens model, pinned to the worker node through its node resource
        h = remote.resolve(TOKENS)
        p = Prediction(h.name, {"n": 4, "delay": 0.05}, version=h.version, schema=h.schema, runner=remote,
                       backend="ray")
        p.handle = h
        remote.execute(p)
        assert p.status == "succeeded" and p.text == "t0 t1 t2 t3 "
        assert remote.actor_info(TOKENS)["node_ip"] == WORKER_IP
        assert _runner().actor_info(TOKENS)["node_ip"] in (HEAD_IP, WORKER_IP)
        names = [m.name for m in remote.models()]
        assert "local/tiny-lm" in names and "local/shapes" in names
    finally:
        remote.close()


def test_bad_address_names_it_quickly():
    from replicate_jupyter.errors import BackendError
    from replicate_jupyter.runners.ray.runner import RayRunner

    t = time.monotonic()
    with pytest.raises(BackendError, match="127.0.0.9:1"):
        RayRunner(address="127.0.0.9:1")._ray()
    assert time.monotonic() - t < 5
    with pytest.raises(ValueError, match="ray://"):
        RayRunner(address="ray://h:10001")


def test_magic_in_a_real_kernel(run_cells, cluster):
    from kernel_helpers import text_of

    nb = run_cells([
        "%load_ext replicate_jupyter",
        "%replicate use ray --num-cpus 0.25",
        f"%%replicate {TOKENS} --on ray -o p\nn: 4",
        "print(p.status, p.backend, repr(p.text), p.metrics['hardware'])",
    ], env={"RAY_ADDRESS": cluster["address"], "RAY_AUTH_MODE": "disabled"}, timeout=90)
    assert "Using backend 'ray'" in text_of(nb.cells[1])
    assert "succeeded ray 't0 t1 t2 t3 ' cpu" in text_of(nb.cells[3])


SLOW_SETUP = '''
import time
from cog import BasePredictor


class Predictor(BasePredictor):
    def setup(self):
        time.sleep(1.5)

    def predict(self) -> str:
        return "ready"
'''


def test_actor_lost_before_the_run_started_is_retried(rj, tmp_path):
    """Killed during setup (nothing ran yet): Ray restarts the actor and the run is submitted again."""

    path = tmp_path / "slow_setup.py"
    path.write_text(SLOW_SETUP)
    ref = f"{path}:Predictor"
    runner = _runner()
    p = rj.predictions.create(ref, on="ray")
    deadline = time.monotonic() + 30
    while True:  # wait until the actor is inside setup() for this prediction
        info = runner.actor_info(ref)
        if info["running"] == p.id:
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(info["pid"], signal.SIGKILL)
    p.wait(60)
    assert p.status == "succeeded" and p.output == "ready"
    assert "submitting it again (1/" in p.logs and "before the run started" in p.logs
    assert runner.actor_info(ref)["pid"] != info["pid"]


def test_a_reconfigured_ray_backend_cancels_its_run_before_the_actors_go(rj, cluster):
    """New options replace the runner: its running prediction is canceled first (saying why), not
    torn down with its actor mid-predict; the new runner (same cluster) runs the next one. Last in
    the module: it replaces the runner the other tests share."""
    from replicate_jupyter.session import session

    p = rj.predictions.create(BUSY, input={"seconds": 30}, on="ray")
    deadline = time.monotonic() + 60
    while p.status != "processing" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert p.status == "processing", (p.status, p.error)
    old = _runner()
    t0 = time.monotonic()
    session.use("ray", address=cluster["address"], **OPTS, start_retries=3)
    assert p.finished and p.status == "canceled" and "reconfigured" in (p.cancel_reason or "")
    assert time.monotonic() - t0 < 12
    assert _runner() is not old
    again = rj.predictions.create(f"{PRED / 'sleep.py'}:Predictor", input={"seconds": 0}, on="ray").wait(90)
    assert again.status == "succeeded", again.error

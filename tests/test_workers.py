"""The workers backend against real coglet servers started with `replicate-jupyter serve`.

One set of workers for the whole module (two serving local/tokens, one local/image): the
machine is small and each server costs a Python process pair.
"""
from __future__ import annotations

import _thread
import json
import socket
import threading
import time

import httpx
import pytest
from serve_helpers import ROOT, Serve  # noqa: F401  (other test modules import Serve from here)

import replicate_jupyter as rj
from replicate_jupyter import api
from replicate_jupyter.errors import BackendError, InputError, ModelNotFound
from replicate_jupyter.prediction.events import Completed, Output, Started
from replicate_jupyter.prediction.files import FileOutput
from replicate_jupyter.prediction.prediction import Prediction
from replicate_jupyter.runners.workers.runner import WorkersRunner, pool

PRED = ROOT / "tests" / "predictors"
def wait_for(cond, timeout: float = 30.0, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout}s")


@pytest.fixture(scope="module")
def workers():
    started: list[Serve] = []
    try:
        for ref in (f"{PRED / 'tokens.py'}:Predictor", f"{PRED / 'tokens.py'}:Predictor", f"{PRED / 'image.py'}:Predictor"):
            started.append(Serve(ref))
        P = pool()
        for s in started:
            P.add(s.url)
        yield started
    finally:
        for s in started:
            try:
                pool().remove(s.url)
            except KeyError:
                pass
            s.stop()


def tokens_workers(workers):
    return workers[0], workers[1]


def ready_again(*servers: Serve, timeout: float = 40.0) -> None:
    urls = {s.url for s in servers}
    wait_for(lambda: all(r["status"] == "READY" for r in pool().list() if r["url"] in urls), timeout)


def running_on(p: Prediction) -> str:
    run = p._runner._runs.get(p.id)
    return run.worker.url if run and run.worker else None


# ---------------------------------------------------------------------------------------------
def test_pool_rows_and_table(workers):
    rows = {r["url"]: r for r in rj.workers.list()}
    for s in workers:
        assert rows[s.url]["status"] in ("READY", "BUSY")
        assert rows[s.url]["hardware"] == "cpu"
    assert rows[workers[0].url]["model"] == "local/tokens"
    assert rows[workers[2].url]["model"] == "local/image"
    bundle = rj.workers._repr_mimebundle_()
    assert "<table" in bundle["text/html"] and workers[2].url in bundle["text/html"]
    assert "GPU seconds" in bundle["text/html"]
    # the default backend can be switched to the shared pool
    from replicate_jupyter.session import session
    assert session.runner("workers").pool is rj.workers


def test_streamed_tokens_arrive_in_order(workers):
    p = api.create("local/tokens", {"n": 12, "delay": 0.02}, on="workers")
    events = list(p.events(timeout=30))
    outs = [e for e in events if isinstance(e, Output)]
    assert isinstance(events[0], Started) and events[0].hardware == "cpu"
    assert [e.index for e in outs] == list(range(12))
    assert [e.value for e in outs] == [f"t{i} " for i in range(12)]
    done = events[-1]
    assert isinstance(done, Completed) and done.status == "succeeded"
    assert p.text == "".join(f"t{i} " for i in range(12))
    assert 0.2 < p.metrics["predict_time"] < 5 and p.metrics["hardware"] == "cpu"
    assert p.metrics["worker"] in (workers[0].url, workers[1].url)


def test_progress_travels_from_the_worker_and_stays_out_of_the_logs(workers):
    from replicate_jupyter.prediction.events import Progress

    p = api.create("local/tokens", {"n": 8, "delay": 0.01}, on="workers")
    events = list(p.events(timeout=30))
    steps = [(e.step, e.total) for e in events if isinstance(e, Progress)]
    assert steps == [(i, 8) for i in range(1, 9)]
    assert p.status == "succeeded" and "[rj-progress]" not in p.logs


def test_relayed_previews_round_trip(monkeypatch, capsys):
    from PIL import Image

    from replicate_jupyter import progress
    from replicate_jupyter.prediction.events import Preview, Progress
    from replicate_jupyter.runners import context

    monkeypatch.setenv(context.RELAY_ENV, "1")
    monkeypatch.setitem(context._relay_state, "last_preview", 0.0)
    progress.progress(3, 10)
    progress.preview(lambda: Image.new("RGB", (400, 200), (10, 200, 30)), step=3)
    printed = capsys.readouterr().out
    events, rest = context.parse_relayed("model says hi\n" + printed)
    assert rest == "model says hi\n"
    assert isinstance(events[0], Progress) and (events[0].step, events[0].total) == (3, 10)
    assert isinstance(events[1], Preview) and events[1].step == 3
    assert events[1].image.size == (192, 96) and events[1].image.getpixel((5, 5))[:3] == (10, 200, 30)


def test_image_output_is_a_file(workers):
    out = rj.run("local/image", {"color": "green", "count": 2}, on="workers")
    assert len(out) == 2 and all(isinstance(f, FileOutput) for f in out)
    assert out[0].content_type == "image/png"
    assert out[0].image().getpixel((3, 3)) == (0, 255, 0)


def test_validation_errors_never_reach_a_worker(workers):
    before = [len(s.started_ids()) for s in workers]
    with pytest.raises(InputError) as err:
        rj.run("local/tokens", {"n": 0, "delay": "slow", "nope": 1}, on="workers")
    assert set(err.value.fields) >= {"n", "delay"}
    with pytest.raises(ModelNotFound) as nf:
        rj.run("local/tokenz", {}, on="workers")
    assert "local/tokens" in str(nf.value)
    time.sleep(0.3)
    assert [len(s.started_ids()) for s in workers] == before


def test_busy_worker_is_skipped(workers):
    a, b = tokens_workers(workers)
    # someone else (a raw client) holds worker a: coglet answers us 409 there
    hold = threading.Thread(target=lambda: httpx.put(f"{a.url}/predictions/outsider", json={"input": {"n": 1, "delay": 3}},
                                                     timeout=30), daemon=True)
    hold.start()
    wait_for(lambda: httpx.get(a.url + "/health-check").json()["status"] == "BUSY", 10)
    t0 = time.monotonic()
    preds = [api.create("local/tokens", {"n": 2}, on="workers") for _ in range(4)]
    for p in preds:
        p.wait(20)
    assert all(p.status == "succeeded" for p in preds)
    assert {p.metrics["worker"] for p in preds} == {b.url}
    assert time.monotonic() - t0 < 2.5  # never waited for the outsider's 3 s prediction
    hold.join(10)


def test_waiting_prediction_stays_starting(workers):
    a, b = tokens_workers(workers)
    ready_again(a, b)
    long = [api.create("local/tokens", {"n": 10, "delay": 0.1}, on="workers") for _ in range(2)]
    wait_for(lambda: all(p.status == "processing" for p in long), 10)
    queued = api.create("local/tokens", {"n": 1}, on="workers")
    time.sleep(0.4)
    assert queued.status == "starting"
    queued.wait(20)
    assert queued.status == "succeeded"
    for p in long:
        assert p.wait(20).status == "succeeded"


def test_cancel_stops_it_on_the_worker(workers):
    p = api.create("local/tokens", {"n": 100, "delay": 0.05}, on="workers")
    wait_for(lambda: len(p.output) >= 2, 10)
    url = running_on(p)
    run_id = p._runner._runs[p.id].remote_id
    t0 = time.monotonic()
    p.cancel()
    p.wait(10)
    assert p.status == "canceled" and time.monotonic() - t0 < 2
    assert len(p.output) < 60
    server = next(s for s in workers if s.url == url)
    wait_for(lambda: f'"Cancelling prediction","prediction_id":"{run_id}"' in server.log.read_text(), 5)
    assert httpx.get(url + "/health-check").json()["status"] == "READY"


def test_kernel_interrupt_cancels_on_the_worker(workers):
    a, b = tokens_workers(workers)
    ready_again(a, b)
    timer = threading.Timer(0.6, _thread.interrupt_main)
    timer.start()
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        rj.run("local/tokens", {"n": 100, "delay": 0.05}, on="workers")
    assert time.monotonic() - t0 < 3
    p = rj.predictions.list()[0]
    assert p.status == "canceled"
    needle = '"Cancelling prediction","prediction_id":"rj-' + p.id
    wait_for(lambda: any(needle in s.log.read_text() for s in (a, b)), 5)
    ready_again(a, b)


@pytest.mark.parametrize("what", ["predictor", "server"])
def test_worker_killed_mid_prediction(workers, what):
    a, b = tokens_workers(workers)
    ready_again(a, b)
    restarts = {s.url: s.restarts() for s in (a, b)}
    p = api.create("local/tokens", {"n": 100, "delay": 0.05}, on="workers")
    wait_for(lambda: len(p.output) >= 2, 10)
    url = running_on(p)
    victim = a if url == a.url else b
    proc = victim.predictor_process() if what == "predictor" else victim.server()
    if what == "server":
        for c in proc.children(recursive=True):
            c.kill()
    proc.kill()
    p.wait(15)
    assert p.status == "failed"
    assert victim.url in p.error
    assert "not re-run" in p.error
    # the next prediction goes elsewhere at once
    q = rj.predictions.create("local/tokens", {"n": 2}, on="workers").wait(15)
    assert q.status == "succeeded" and q.metrics["worker"] != victim.url
    # and serve brings the killed one back; the pool sees it and uses it again
    wait_for(lambda: victim.restarts() > restarts[victim.url], 40)
    ready_again(victim)
    hold = api.create("local/tokens", {"n": 20, "delay": 0.05}, on="workers")
    r = api.create("local/tokens", {"n": 20, "delay": 0.05}, on="workers")
    assert hold.wait(20).status == r.wait(20).status == "succeeded"
    assert {hold.metrics["worker"], r.metrics["worker"]} == {a.url, b.url}


def test_worker_that_never_answers_times_out(workers):
    """A server that answers health and schema, then holds every prediction forever."""
    schema = httpx.get(workers[0].url + "/openapi.json").json()
    schema["info"]["x-replicate-model"] = "test/hang"
    body = json.dumps(schema).encode()
    health = json.dumps({"status": "READY"}).encode()
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(16)
    held = []

    def serve_conn(conn):
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        if data.startswith(b"GET /health-check"):
            payload = health
        elif data.startswith(b"GET /openapi.json"):
            payload = body
        else:
            held.append(conn)  # accept, read, never reply
            return
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                     b"connection: close\r\n\r\n" % len(payload) + payload)
        conn.close()

    def accept_loop():
        while True:
            try:
                conn, _ = lsock.accept()
            except OSError:
                return
            threading.Thread(target=serve_conn, args=(conn,), daemon=True).start()

    threading.Thread(target=accept_loop, daemon=True).start()
    url = f"http://127.0.0.1:{lsock.getsockname()[1]}"
    try:
        rj.workers.add(url)
        runner = WorkersRunner(response_timeout=1.0)
        handle = runner.resolve("test/hang")
        p = Prediction("test/hang", {"n": 1}, backend="workers", schema=handle.schema, runner=runner)
        t0 = time.monotonic()
        runner.execute(p)
        assert time.monotonic() - t0 < 5
        assert p.status == "failed"
        assert url in p.error and "did not answer within 1s" in p.error
        assert held, "the request never reached the silent server"
    finally:
        rj.workers.remove(url)
        lsock.close()
        for c in held:
            c.close()


def test_unreachable_worker_is_named():
    url = "http://127.0.0.1:9"  # discard port: nothing listens
    P = pool()
    saved = [r["url"] for r in P.list()]
    try:
        # a pool of only this worker: resolving names the URL that was tried
        for u in saved:
            P._workers[u].removed = False
        hidden = {u: P._workers.pop(u) for u in saved}
        P.add(url)
        with pytest.raises(BackendError) as err:
            WorkersRunner().resolve("local/tokens")
        assert url in str(err.value) and url in err.value.tried
    finally:
        P.remove(url)
        P._workers.update(hidden)


def test_no_prediction_lost_across_200_with_a_restart(workers):
    a, b = tokens_workers(workers)
    ready_again(a, b)
    before = {s.url: set(s.started_ids()) for s in (a, b)}
    restarts = a.restarts()
    preds = []
    for i in range(200):
        preds.append(api.create("local/tokens", {"n": 3, "prompt": str(i)}, on="workers"))
        if i == 60:
            wait_for(lambda: a.predictor_process() is not None, 5)
            a.predictor_process().kill()
    for p in preds:
        p.wait(120)
    statuses = [p.status for p in preds]
    assert all(s in ("succeeded", "failed") for s in statuses)
    failed = [p for p in preds if p.status == "failed"]
    assert len(failed) <= 2, [p.error for p in failed]
    assert all(a.url in p.error for p in failed), [p.error for p in failed]
    for p in preds:
        if p.status == "succeeded":
            assert p.output == ["t0 ", "t1 ", "t2 "]
    # nothing ran twice: every remote id started at most once across both workers
    started = [i for s in (a, b) for i in s.started_ids() if i not in before[s.url]]
    assert len(started) == len(set(started))
    ours = {p.id for p in preds}
    assert len({i.split("-")[1] for i in started if i.startswith("rj-")} & ours) >= 198
    wait_for(lambda: a.restarts() > restarts, 40)


def test_a_closed_client_is_a_backend_error_naming_the_url(workers):
    """httpx raises a bare RuntimeError on a closed Client; the edge makes it a BackendError."""
    from replicate_jupyter.runners.workers.cog_client import CogClient

    url = workers[0].url
    client = CogClient(url)
    client.close()
    for call, tried in ((lambda: client.health(), f"{url}/health-check"),
                        (lambda: client.open_stream("rj-closed", {"n": 1}), f"{url}/predictions/rj-closed"),
                        (lambda: client.cancel("rj-closed"), f"{url}/predictions/rj-closed/cancel")):
        with pytest.raises(BackendError) as err:
            call()
        assert tried in str(err.value) and "closed" in str(err.value)
        assert err.value.url == tried and err.value.tried == [tried]
        assert isinstance(err.value.__cause__, RuntimeError)


def test_a_worker_with_a_closed_client_is_unreachable_and_skipped(workers):
    """The pool's health thread survives a closed client (it used to die of the RuntimeError),
    marks that worker unreachable, and predictions go to the other one."""
    from replicate_jupyter.runners.workers.cog_client import CogClient

    a, b = tokens_workers(workers)
    ready_again(a, b)
    w = pool()._workers[a.url]
    w.client.close()
    try:
        row = wait_for(lambda: next((r for r in pool().list() if r["url"] == a.url and r["status"] == "UNREACHABLE"), None), 10)
        assert "closed" in row["last_error"] and a.url in row["last_error"]
        preds = [api.create("local/tokens", {"n": 2}, on="workers") for _ in range(3)]
        assert all(p.wait(20).status == "succeeded" for p in preds), [p.error for p in preds]
        assert {p.metrics["worker"] for p in preds} == {b.url}
    finally:
        w.client = CogClient(a.url)
    ready_again(a)  # the same health thread sees it come back


@pytest.mark.parametrize("text", ["not-a-url", "ftp://gpu1:5000", "http://gpu 1:5000", "http://gpu1:port",
                                  "http://gpu1:5000/?x=1"])
def test_a_worker_url_that_is_not_one_is_refused_at_once(text):
    before = [r["url"] for r in pool().list()]
    with pytest.raises(InputError, match="not a worker URL"):
        pool().add(text)
    assert [r["url"] for r in pool().list()] == before  # nothing added


def test_a_worker_url_gets_its_scheme():
    from replicate_jupyter.runners.workers.worker_pool import _worker_url

    assert _worker_url("gpu1:5000") == "http://gpu1:5000"
    assert _worker_url("https://gpu1.example.com/") == "https://gpu1.example.com"
    assert _worker_url("http://[::1]:5055") == "http://[::1]:5055"

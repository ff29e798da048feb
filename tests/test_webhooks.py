"""Webhooks from real predictions to real receivers on loopback: `local` in this process, `workers`
against a `replicate-jupyter serve` worker, `ray` on a one-node loopback cluster.

`Consumer` is a plain http.server that answers as scripted (codes, delays, Retry-After) and keeps
every raw request, so signatures are checked with the two verifiers a user would use:
`standardwebhooks` and replicate-python 1.0.7's `Webhooks.validate`.
"""
from __future__ import annotations

import _thread
import json
import os
import pathlib
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import standardwebhooks
from replicate.webhook import Webhooks, WebhookSigningSecret, WebhookValidationError

from replicate_jupyter import api, webhooks
from replicate_jupyter.errors import InputError, ReplicateJupyterError
from replicate_jupyter.webhooks import RetryPolicy, WebhookDeliveryWarning

ROOT = pathlib.Path(__file__).resolve().parent.parent
PRED = ROOT / "tests" / "predictors"
TOKENS = f"{PRED / 'tokens.py'}:Predictor"
STEPS = f"{PRED / 'steps.py'}:Predictor"
FAST = RetryPolicy(delays=(0.05, 0.05, 0.05, 0.05), timeout=2.0)
REPLICATE_KEYS = {"id", "model", "version", "input", "output", "logs", "error", "status", "created_at",
                  "started_at", "completed_at", "metrics", "urls", "data_removed"}


class Consumer:
    """A webhook consumer on 127.0.0.1. `script` is a list of (code, delay_s, headers) answers,
    used in order, then 200s. `requests` holds (monotonic time, headers, raw body)."""

    def __init__(self, script: list[tuple[int, float, dict]] | None = None) -> None:
        self.script = list(script or [])
        self.requests: list[tuple[float, dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802
                data = self.rfile.read(int(self.headers["content-length"]))
                with outer.lock:
                    outer.requests.append((time.monotonic(), {k.lower(): v for k, v in self.headers.items()}, data))
                    code, delay, extra = outer.script.pop(0) if outer.script else (200, 0.0, {})
                if delay:
                    time.sleep(delay)
                try:
                    self.send_response(code)
                    for k, v in extra.items():
                        self.send_header(k, v)
                    self.send_header("content-length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the sender gave up waiting

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def bodies(self) -> list[dict]:
        return [json.loads(b) for _, _, b in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(autouse=True)
def own_config(tmp_path, monkeypatch):
    """Each test gets its own per-user config dir and no secret from the environment."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv(webhooks.ENV_SECRET, raising=False)
    webhooks.set_default_secret(None)


@pytest.fixture
def consumer():
    made: list[Consumer] = []

    def make(script=None) -> Consumer:
        made.append(Consumer(script))
        return made[-1]

    yield make
    for c in made:
        c.close()


def run_local(ref, input, url, **kw):
    p = api.prepare(ref, input, on="local")
    d = webhooks.attach(p, url, **kw)
    api.execute(p)
    assert d.wait(30), "deliveries did not settle"
    return p, d


def assert_signed(requests, key):
    """Every request verifies with standardwebhooks and with replicate-python's validate."""
    wh = standardwebhooks.Webhook(key)
    for _, headers, raw in requests:
        assert json.loads(raw) == wh.verify(raw, headers)
        # 1.0.7 returns None when valid and raises otherwise (its tolerance is off by default)
        Webhooks.validate(headers=headers, body=raw.decode(), secret=WebhookSigningSecret(key=key), tolerance=300)
        assert re.fullmatch(r"v1,[A-Za-z0-9+/]+=*", headers["webhook-signature"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----- signing and validate -------------------------------------------------------------------
def test_validate_rejects_tampering_old_timestamps_and_missing_headers():
    key = webhooks.new_secret()
    body = '{"id":"p1","status":"succeeded"}'
    ts = int(time.time())
    headers = {"Webhook-Id": "msg_1", "Webhook-Timestamp": str(ts), "Webhook-Signature": webhooks.sign(key, "msg_1", ts, body)}
    assert webhooks.validate(headers=headers, body=body, secret=key) is True
    assert webhooks.validate(headers=headers, body=body.encode(), secret=key.key) is True  # bytes and a plain key
    assert webhooks.validate(request=httpx.Request("POST", "http://x", headers=headers, content=body), secret=key)
    # the same delivery read by the two reference verifiers
    assert standardwebhooks.Webhook(key.key).verify(body, headers) == json.loads(body)
    Webhooks.validate(headers=headers, body=body, secret=WebhookSigningSecret(key=key.key), tolerance=300)

    def refused(**kw) -> str:
        """The class name of our error, checked against replicate-python's for the same input."""
        args = {"headers": headers, "body": body, "secret": key, **kw}
        with pytest.raises(webhooks.WebhookValidationError) as ours:
            webhooks.validate(**args)
        assert isinstance(ours.value, ReplicateJupyterError) and isinstance(ours.value, ValueError)
        theirs_secret = args["secret"]
        theirs_secret = WebhookSigningSecret(key=getattr(theirs_secret, "key", theirs_secret))
        with pytest.raises(WebhookValidationError) as theirs:
            Webhooks.validate(headers=args["headers"], body=args["body"], secret=theirs_secret, tolerance=300)
        assert type(theirs.value).__name__ == type(ours.value).__name__
        return type(ours.value).__name__

    assert refused(body=body.replace("succeeded", "failed")) == "InvalidSignatureError"
    assert refused(secret=webhooks.new_secret()) == "InvalidSignatureError"
    assert refused(headers={k: v for k, v in headers.items() if k != "Webhook-Signature"}) == "MissingWebhookHeaderError"
    assert refused(headers={}) == "MissingWebhookHeaderError"
    assert refused(body="") == "MissingWebhookBodyError"
    assert refused(secret="not-a-key") == "InvalidSecretKeyError"
    old = ts - 301
    stale = dict(headers, **{"Webhook-Timestamp": str(old), "Webhook-Signature": webhooks.sign(key, "msg_1", old, body)})
    assert refused(headers=stale) == "InvalidTimestampError"
    assert webhooks.validate(headers=stale, body=body, secret=key, tolerance=400)  # the signature itself is right
    assert webhooks.validate(headers=stale, body=body, secret=key, tolerance=None)
    future = dict(stale, **{"Webhook-Timestamp": str(ts + 400), "Webhook-Signature": webhooks.sign(key, "msg_1", ts + 400, body)})
    assert refused(headers=future) == "InvalidTimestampError"
    # several signatures (key rotation): any v1 match passes
    rotated = dict(headers, **{"Webhook-Signature": "v1,AAAA " + headers["Webhook-Signature"]})
    assert webhooks.validate(headers=rotated, body=body, secret=key)


def test_default_secret_is_generated_once_per_user_and_configurable(tmp_path, monkeypatch):
    first = webhooks.default.secret()
    assert first.key.startswith("whsec_") and first.key not in repr(first)
    path = tmp_path / "config" / "replicate-jupyter" / "webhook_secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text().strip() == first.key
    assert webhooks.default_secret() == first
    code = "from replicate_jupyter import webhooks; print(webhooks.default_secret().key)"
    other_kernel = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=dict(os.environ))
    assert other_kernel.stdout.strip() == first.key  # one key per user, across kernels
    mine = webhooks.new_secret()
    monkeypatch.setenv(webhooks.ENV_SECRET, mine.key)
    assert webhooks.default_secret() == mine
    set_by_traitlet = webhooks.new_secret()
    webhooks.set_default_secret(set_by_traitlet.key)
    assert webhooks.default_secret() == set_by_traitlet
    webhooks.set_default_secret(None)
    monkeypatch.setenv(webhooks.ENV_SECRET, "whsec_not base64!")
    with pytest.raises(InputError) as err:
        webhooks.default_secret()
    assert err.value.problems[0].field == webhooks.ENV_SECRET and "not base64" not in str(err.value)


# ----- local ----------------------------------------------------------------------------------
def test_local_start_outputs_completed_in_replicates_format(consumer):
    c = consumer()
    p, d = run_local(TOKENS, {"n": 30, "delay": 0.05}, c.url)
    bodies = c.bodies()
    assert [r.event for r in d.records][0] == "start" and d.records[-1].event == "completed"
    assert {r.event for r in d.records[1:-1]} == {"output"} and len(d.records) >= 4  # ~1.5 s at 2/s
    assert all(r.ok and r.attempts == 1 for r in d.records)
    assert all(set(b) == REPLICATE_KEYS for b in bodies)  # no progress/preview/backend
    start, last = bodies[0], bodies[-1]
    assert start["status"] == "processing" and start["output"] == [] and start["completed_at"] is None
    assert start["id"] == p.id and start["input"] == {"prompt": "count", "n": 30, "delay": 0.05}
    assert last["status"] == "succeeded" and last["output"] == [f"t{i} " for i in range(30)]
    assert last["metrics"]["predict_time"] == p.metrics["predict_time"] and last["completed_at"] == p.completed_at
    outs = [len(b["output"]) for b in bodies[1:-1]]
    assert outs == sorted(outs) and 0 < outs[0] < 30  # output so far, growing
    assert_signed(c.requests, webhooks.default_secret().key)
    ids = [h["webhook-id"] for _, h, _ in c.requests]
    assert len(set(ids)) == len(ids)
    assert all(h["content-type"] == "application/json" for _, h, _ in c.requests)


def test_events_filter_and_bad_arguments(consumer):
    only_done, ends, outputs = consumer(), consumer(), consumer()
    run_local(TOKENS, {"n": 12, "delay": 0.05}, only_done.url, events_filter=["completed"])
    assert [b["status"] for b in only_done.bodies()] == ["succeeded"]
    run_local(TOKENS, {"n": 12, "delay": 0.05}, ends.url, events_filter=["start", "completed"])
    assert [b["status"] for b in ends.bodies()] == ["processing", "succeeded"]
    _, d = run_local(TOKENS, {"n": 12, "delay": 0.05}, outputs.url, events_filter=["output"])
    assert {r.event for r in d.records} == {"output"}
    assert outputs.bodies()[-1]["output"] == [f"t{i} " for i in range(12)]  # the final state still arrives
    p = api.prepare(TOKENS, {"n": 1})
    with pytest.raises(InputError) as err:
        webhooks.attach(p, "ftp://example.com/x", events_filter=["start", "finished"])
    assert {(q.field, q.rule) for q in err.value.problems} == {("webhook", "format"), ("webhook_events_filter", "choices")}
    with pytest.raises(InputError):
        webhooks.attach(p, "http://127.0.0.1:1/", events_filter="completed")  # a str, not a list


def test_2000_tokens_at_most_two_deliveries_a_second_and_the_last_exact(consumer):
    c = consumer()
    t0 = time.monotonic()
    p, d = run_local(TOKENS, {"n": 2000, "delay": 0.001}, c.url)
    took = time.monotonic() - t0
    times = [t for t, _, _ in c.requests]
    gaps = [b - a for a, b in zip(times[:-2], times[1:-1])]  # start and outputs; completed is not throttled
    assert gaps and min(gaps) > 0.4, gaps
    assert len(times) <= 2 * took + 2
    last = c.bodies()[-1]
    assert last["status"] == "succeeded" and last["output"] == [f"t{i} " for i in range(2000)]
    assert p.text == "".join(last["output"])


def test_retries_after_500s_keep_the_webhook_id_and_honour_retry_after(consumer):
    c = consumer([(500, 0, {}), (500, 0, {}), (503, 0, {"Retry-After": "1"})])
    _, d = run_local(TOKENS, {"n": 3}, c.url, events_filter=["completed"], retry=FAST)
    rec, = d.records
    assert rec.ok and rec.attempts == 4 and rec.code == 200 and not d.failures
    assert len({h["webhook-id"] for _, h, _ in c.requests}) == 1 and len(c.requests) == 4
    times = [t for t, _, _ in c.requests]
    assert times[1] - times[0] < 0.5 and times[3] - times[2] >= 0.95  # 50 ms backoff, then Retry-After: 1
    assert_signed(c.requests, webhooks.default_secret().key)  # every attempt is signed (own timestamp)


def test_a_slow_receiver_is_retried_and_never_slows_the_prediction(consumer):
    c = consumer([(200, 1.5, {})])  # the start's first attempt times out
    policy = RetryPolicy(delays=(0.05,) * 4, timeout=0.5)
    p = api.prepare(TOKENS, {"n": 5, "delay": 0.01})
    d = webhooks.attach(p, c.url, events_filter=["start", "completed"], retry=policy)
    t = time.monotonic()
    api.execute(p)
    assert time.monotonic() - t < 0.5 and p.status == "succeeded"  # ~0.05 s of tokens, not the consumer's time
    assert d.wait(10)
    start, done = d.records
    assert start.ok and start.attempts == 2 and done.ok and done.attempts == 1
    ids = [h["webhook-id"] for _, h, _ in c.requests]
    assert ids[0] == ids[1] != ids[2]


def test_completed_after_cancel_failure_and_interrupt(consumer):
    c = consumer()
    p = api.prepare(STEPS, {"steps": 200, "delay": 0.05})
    d = webhooks.attach(p, c.url)
    threading.Thread(target=api.execute, args=(p,), daemon=True).start()
    while p.progress is None or p.progress[0] < 3:
        time.sleep(0.01)
    p.cancel()
    assert d.wait(15) and d.records[-1].event == "completed"
    assert c.bodies()[-1]["status"] == "canceled" and p.status == "canceled"

    failed = consumer()
    run_local(f"{PRED / 'failing.py'}:Predictor", {}, failed.url)
    last = failed.bodies()[-1]
    assert last["status"] == "failed" and "model exploded" in last["error"] and "about to fail" in last["logs"]

    hit = consumer()
    p = api.prepare(STEPS, {"steps": 200, "delay": 0.05})
    d = webhooks.attach(p, hit.url)

    def interrupt():
        while p.progress is None or p.progress[0] < 3:
            time.sleep(0.01)
        _thread.interrupt_main()  # what the kernel's interrupt button does

    threading.Thread(target=interrupt, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        api.execute(p)
    assert d.wait(15) and hit.bodies()[-1]["status"] == "canceled" and d.records[-1].event == "completed"


def test_a_receiver_that_is_down_is_named_and_the_prediction_succeeds():
    url = f"http://127.0.0.1:{free_port()}/down"
    with pytest.warns(WebhookDeliveryWarning, match=re.escape(url)):
        p, d = run_local(TOKENS, {"n": 3}, url, events_filter=["start", "completed"], retry=FAST)
    assert p.status == "succeeded" and p.output == ["t0 ", "t1 ", "t2 "]
    assert [(f.event, f.attempts) for f in d.failures] == [("start", 5), ("completed", 5)]
    assert all("connection refused" in f.error for f in d.failures)
    assert "[replicate-jupyter]" not in p.logs  # nothing of the webhook in the prediction


def test_secrets_never_reach_a_body(consumer, tmp_path):
    c = consumer()
    token = "sk-live-" + "7" * 24
    run_local(f"{PRED / 'secret.py'}:Predictor", {"api_key": token, "word": "w"}, c.url)
    assert c.requests and all(token.encode() not in raw for _, _, raw in c.requests)
    assert c.bodies()[-1]["input"]["api_key"] == "**********" and c.bodies()[-1]["output"] == f"w:{len(token)}:Secret"
    # a model that prints its secret: masked in the logs of the body too
    leaky = tmp_path / "leaky.py"
    leaky.write_text("from cog import BasePredictor, Input, Secret\n\n"
                     "class Predictor(BasePredictor):\n"
                     "    def predict(self, key: Secret = Input()) -> str:\n"
                     "        print('using', key.get_secret_value())\n"
                     "        return 'ok ' + key.get_secret_value()\n")
    c2 = consumer()
    run_local(f"{leaky}:Predictor", {"key": token}, c2.url)
    assert c2.requests and all(token.encode() not in raw for _, _, raw in c2.requests)
    assert "using **********" in c2.bodies()[-1]["logs"]


def test_file_outputs_are_urls(consumer):
    c = consumer()
    p, _ = run_local(f"{PRED / 'image.py'}:Predictor", {"color": "green", "count": 2}, c.url, events_filter=["completed"])
    out = c.bodies()[-1]["output"]
    assert len(out) == 2 and all(u.startswith("data:image/png;base64,") for u in out)
    assert out[0] == p.output[0].url


# ----- the notebook receiver ------------------------------------------------------------------
def test_receiver_verifies_names_events_and_shows_a_table():
    with webhooks.listen() as rx:
        assert rx.url.startswith("http://127.0.0.1:")
        p, d = run_local(TOKENS, {"n": 20, "delay": 0.05}, rx.url)
        done = rx.wait(p.id, "completed", timeout=10)
        rows = rx.deliveries
        assert [r.event for r in rows] == [r.event for r in d.records]  # inferred as the sender meant
        assert all(r.verified for r in rows) and done.body["output"] == p.output
        # a tampered delivery is refused (401) and shown unverified
        _, headers, raw = _resend(p, rx)
        bad = httpx.post(rx.url, content=raw.replace(b"succeeded", b"failed"), headers=headers)
        assert bad.status_code == 401 and rx.deliveries[-1].verified is False
        bundle = rx._repr_mimebundle_()
        for col in ("time", "prediction", "status", "event", "verified"):
            assert f">{col}</th>" in bundle["text/html"]
        assert p.id in bundle["text/plain"] and "✗" in bundle["text/plain"] and "✓" in bundle["text/plain"]
        port = rx.port
    with pytest.raises(httpx.ConnectError):  # stopped: nothing listens there
        httpx.post(f"http://127.0.0.1:{port}/", content=b"{}")
    with webhooks.listen(port=port) as again:  # and the port is free for a new receiver
        assert again.port == port and again.deliveries == []
    with pytest.raises(InputError):  # a port in use is named
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            webhooks.listen(port=s.getsockname()[1])


def _resend(p, rx):
    """A correctly signed copy of p's final body, by the kernel's key, as raw parts."""
    from replicate_jupyter.webhooks.body import Builder

    body = Builder(p).build()
    ts = int(time.time())
    headers = {"webhook-id": "msg_resent", "webhook-timestamp": str(ts),
               "webhook-signature": webhooks.sign(webhooks.default_secret(), "msg_resent", ts, body.text),
               "content-type": "application/json"}
    return None, headers, body.data


# ----- workers --------------------------------------------------------------------------------
READY = re.compile(r"ready at (http://\S+) ")


@pytest.fixture(scope="module")
def worker():
    proc = subprocess.Popen([sys.executable, "-m", "replicate_jupyter.serve.cli", "serve", TOKENS, "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    url, lines, ready = [], [], threading.Event()

    def drain():
        for line in proc.stdout:
            lines.append(line)
            m = READY.search(line)
            if m and not ready.is_set():
                url.append(m.group(1))
                ready.set()

    threading.Thread(target=drain, daemon=True).start()
    from replicate_jupyter.runners.workers.runner import pool

    try:
        assert ready.wait(90), "serve did not become ready:\n" + "".join(lines)
        pool().add(url[0])
        yield url[0]
    finally:
        if url:
            try:
                pool().remove(url[0])
            except KeyError:
                pass
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_workers_backend_delivers_the_same_format(worker, consumer):
    c = consumer()
    p = api.prepare("local/tokens", {"n": 20, "delay": 0.05}, on="workers")
    d = webhooks.attach(p, c.url)
    api.execute(p)
    assert d.wait(30) and p.status == "succeeded" and p.metrics["worker"] == worker
    bodies = c.bodies()
    assert [r.event for r in d.records][0] == "start" and d.records[-1].event == "completed" and len(bodies) >= 3
    assert all(set(b) == REPLICATE_KEYS for b in bodies) and bodies[0]["status"] == "processing"
    assert bodies[-1]["output"] == [f"t{i} " for i in range(20)] and bodies[-1]["model"] == "local/tokens"
    assert_signed(c.requests, webhooks.default_secret().key)


# ----- ray ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local_ray():
    """A Ray started by this process (the runner's default without an address), stopped after."""
    import ray  # noqa: F401  (the [test] extra installs it: missing must fail, not skip)

    from replicate_jupyter.session import session

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    previous = session.default_backend
    session.use("ray", num_cpus=0.25)
    try:
        yield session
    finally:
        session.default_backend = previous
        session.backend_options.pop("ray", None)
        session.close()
        import ray

        ray.shutdown()


def test_ray_backend_delivers_the_same_format(local_ray, consumer):
    c = consumer()
    p = api.prepare(TOKENS, {"n": 20, "delay": 0.05}, on="ray")
    d = webhooks.attach(p, c.url)
    api.execute(p)
    assert d.wait(30) and p.status == "succeeded", p.error
    bodies = c.bodies()
    assert [r.event for r in d.records][0] == "start" and d.records[-1].event == "completed" and len(bodies) >= 3
    assert all(set(b) == REPLICATE_KEYS for b in bodies) and bodies[0]["status"] == "processing"
    assert bodies[-1]["output"] == [f"t{i} " for i in range(20)] and bodies[-1]["status"] == "succeeded"
    assert_signed(c.requests, webhooks.default_secret().key)
    # canceled on the cluster: the completed still comes, last
    q = api.prepare(STEPS, {"steps": 200, "delay": 0.05}, on="ray")
    c2 = consumer()
    d2 = webhooks.attach(q, c2.url)
    threading.Thread(target=api.execute, args=(q,), daemon=True).start()
    while q.progress is None or q.progress[0] < 3:
        time.sleep(0.02)
    q.cancel()
    assert d2.wait(30) and c2.bodies()[-1]["status"] == "canceled" and d2.records[-1].event == "completed"


# ----- a real kernel --------------------------------------------------------------------------
def test_completed_after_a_real_kernel_interrupt(run_cells, consumer):
    c = consumer()
    key = webhooks.new_secret().key
    nb = run_cells([
        "from replicate_jupyter import api, webhooks\n"
        f"p = api.prepare({STEPS!r}, {{'steps': 400, 'delay': 0.05}})\n"
        f"d = webhooks.attach(p, {c.url!r})\n"
        "api.execute(p)",
        ("print(d.wait(20), p.status, [r.event for r in d.records][-1])", []),
    ], env={webhooks.ENV_SECRET: key}, allow_errors=True, interrupt={0: 2.0})
    errors = [o for o in nb.cells[0].outputs if o.output_type == "error"]
    assert errors and errors[0]["ename"] == "KeyboardInterrupt"
    assert "True canceled completed" in "".join(o.get("text", "") for o in nb.cells[1].outputs)
    bodies = c.bodies()
    assert bodies[0]["status"] == "processing" and bodies[-1]["status"] == "canceled"
    assert_signed(c.requests, key)  # signed with the key the kernel was given

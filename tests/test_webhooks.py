"""Webhooks from real predictions (local, a `replicate-jupyter serve` worker, a local Ray, a real
kernel) to real consumers on loopback: `Consumer` answers as scripted and keeps every raw request,
so signatures are checked with `standardwebhooks` and replicate-python 1.0.7's `Webhooks.validate`."""
from __future__ import annotations

import _thread
import base64
import json
import os
import pathlib
import re
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


class Consumer(ThreadingHTTPServer):
    """A webhook consumer on 127.0.0.1. `script`: (code, delay_s, headers) answers used in order,
    then 200s. `requests`: (monotonic time, lower-cased headers, raw body) of every request."""

    daemon_threads = True

    def __init__(self, script: list[tuple[int, float, dict]] | None = None) -> None:
        self.script, self.requests, self.lock = list(script or []), [], threading.Lock()
        super().__init__(("127.0.0.1", 0), _Answer)
        self.url = f"http://127.0.0.1:{self.server_address[1]}/hook"
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def bodies(self) -> list[dict]:
        return [json.loads(b) for _, _, b in self.requests]


class _Answer(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):  # noqa: N802
        data, srv = self.rfile.read(int(self.headers["content-length"])), self.server
        with srv.lock:
            srv.requests.append((time.monotonic(), {k.lower(): v for k, v in self.headers.items()}, data))
            code, delay, extra = srv.script.pop(0) if srv.script else (200, 0.0, {})
        time.sleep(delay)
        try:
            self.send_response(code)
            for k, v in {**extra, "content-length": "0"}.items():
                self.send_header(k, v)
            self.end_headers()
        except OSError:
            pass  # the sender gave up waiting

    def log_message(self, *a):
        pass


@pytest.fixture(autouse=True)
def own_config(tmp_path, monkeypatch):
    """Each test gets its own per-user config dir and no secret from the environment."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv(webhooks.ENV_SECRET, raising=False)
    webhooks.set_default_secret(None)


@pytest.fixture
def consumer():
    made: list[Consumer] = []
    yield lambda script=None: made.append(Consumer(script)) or made[-1]
    for c in made:
        c.shutdown()
        c.server_close()


def run_local(ref, input, url, **kw):
    d = webhooks.attach(p := api.prepare(ref, input, on="local"), url, **kw)
    api.execute(p)
    assert d.wait(30), "deliveries did not settle"
    return p, d


def assert_signed(requests, key):
    """Every request verifies with standardwebhooks and with replicate-python's validate (1.0.7
    returns None when valid and raises otherwise; its tolerance is off unless given)."""
    wh = standardwebhooks.Webhook(key)
    for _, headers, raw in requests:
        assert json.loads(raw) == wh.verify(raw, headers)
        Webhooks.validate(headers=headers, body=raw.decode(), secret=WebhookSigningSecret(key=key), tolerance=300)
        assert re.fullmatch(r"v1,[A-Za-z0-9+/]+=*", headers["webhook-signature"])


def check_run(d, c, n: int) -> list[dict]:
    """The common shape of a streamed run's deliveries: start, outputs, completed, exact, signed."""
    bodies = c.bodies()
    assert [r.event for r in d.records][0] == "start" and d.records[-1].event == "completed" and len(bodies) >= 3
    assert {r.event for r in d.records[1:-1]} == {"output"} and all(r.ok for r in d.records)
    assert all(set(b) == REPLICATE_KEYS for b in bodies)  # no progress/preview/backend of ours
    assert bodies[0]["status"] == "processing" and bodies[0]["completed_at"] is None
    assert bodies[-1]["status"] == "succeeded" and bodies[-1]["output"] == [f"t{i} " for i in range(n)]
    assert_signed(c.requests, webhooks.default_secret().key)
    return bodies


def at_step(p, then, step: int = 3) -> None:
    """Call `then()` from another thread once `p` reached `step` (a cancel, an interrupt)."""
    def watch():
        while p.progress is None or p.progress[0] < step:
            time.sleep(0.01)
        then()

    threading.Thread(target=watch, daemon=True).start()


def run_and_cancel(p) -> None:
    at_step(p, p.cancel)
    api.execute(p)


def signed(key, body: str, ts: int, mid: str = "msg_1") -> dict[str, str]:
    return {"Webhook-Id": mid, "Webhook-Timestamp": str(ts), "Webhook-Signature": webhooks.sign(key, mid, ts, body)}


def test_validate_rejects_tampering_old_timestamps_and_missing_headers():
    key, body, ts = webhooks.new_secret(), '{"id":"p1","status":"succeeded"}', int(time.time())
    headers = signed(key, body, ts)
    assert webhooks.validate(headers=headers, body=body, secret=key) is True
    assert webhooks.validate(headers=headers, body=body.encode(), secret=key.key) is True  # bytes and a plain key
    assert webhooks.validate(request=httpx.Request("POST", "http://x", headers=headers, content=body), secret=key)
    # the same delivery read by the two reference verifiers
    assert standardwebhooks.Webhook(key.key).verify(body, headers) == json.loads(body)
    Webhooks.validate(headers=headers, body=body, secret=WebhookSigningSecret(key=key.key), tolerance=300)
    assert webhooks.validate(headers=signed(key, body, ts - 301), body=body, secret=key, tolerance=400)
    assert webhooks.validate(headers=signed(key, body, ts - 301), body=body, secret=key, tolerance=None)
    for change, name in [({"body": body.replace("succeeded", "failed")}, "InvalidSignatureError"),
                         ({"secret": webhooks.new_secret()}, "InvalidSignatureError"),
                         ({"headers": {**headers, "Webhook-Signature": ""}}, "MissingWebhookHeaderError"),
                         ({"headers": {}}, "MissingWebhookHeaderError"), ({"body": ""}, "MissingWebhookBodyError"),
                         ({"secret": "not-a-key"}, "InvalidSecretKeyError"),
                         ({"headers": signed(key, body, ts - 301)}, "InvalidTimestampError"),
                         ({"headers": signed(key, body, ts + 400)}, "InvalidTimestampError")]:
        args = {"headers": headers, "body": body, "secret": key, **change}
        with pytest.raises(webhooks.WebhookValidationError) as ours:
            webhooks.validate(**args)
        theirs_key = WebhookSigningSecret(key=getattr(args["secret"], "key", args["secret"]))
        with pytest.raises(WebhookValidationError) as theirs:  # replicate-python refuses it alike
            Webhooks.validate(headers=args["headers"], body=args["body"], secret=theirs_key, tolerance=300)
        assert type(ours.value).__name__ == type(theirs.value).__name__ == name
        assert isinstance(ours.value, ReplicateJupyterError) and isinstance(ours.value, ValueError)
    rotated = {**headers, "Webhook-Signature": "v1,AAAA " + headers["Webhook-Signature"]}  # key rotation: any v1
    assert webhooks.validate(headers=rotated, body=body, secret=key)


def test_default_secret_is_generated_once_per_user_and_configurable(tmp_path, monkeypatch):
    first = webhooks.default.secret()
    assert first.key.startswith("whsec_") and first.key not in repr(first)
    path = tmp_path / "config" / "replicate-jupyter" / "webhook_secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text().strip() == first.key
    assert webhooks.default_secret() == first == webhooks.Secret(path.read_text().strip())
    code = "from replicate_jupyter import webhooks; print(webhooks.default_secret().key)"
    other_kernel = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=dict(os.environ))
    assert other_kernel.stdout.strip() == first.key  # one key per user, across kernels
    from_env, from_traitlet = webhooks.new_secret(), webhooks.new_secret()
    monkeypatch.setenv(webhooks.ENV_SECRET, from_env.key)
    assert webhooks.default_secret() == from_env
    webhooks.set_default_secret(from_traitlet.key)
    assert webhooks.default_secret() == from_traitlet
    webhooks.set_default_secret(None)
    monkeypatch.setenv(webhooks.ENV_SECRET, "whsec_not base64!")
    with pytest.raises(InputError) as err:  # named, never shown
        webhooks.default_secret()
    assert err.value.problems[0].field == webhooks.ENV_SECRET and "not base64" not in str(err.value)


def test_local_start_outputs_completed_in_replicates_format(consumer):
    c = consumer()
    p, d = run_local(TOKENS, {"n": 30, "delay": 0.05}, c.url)
    bodies = check_run(d, c, 30)
    assert len(d.records) >= 4 and all(r.attempts == 1 for r in d.records)  # ~1.5 s at 2/s
    assert bodies[0]["output"] == [] and bodies[0]["id"] == p.id
    assert bodies[0]["input"] == {"prompt": "count", "n": 30, "delay": 0.05} and bodies[-1]["completed_at"] == p.completed_at
    kernel = {"cost_usd", "cost_estimate", "billing", "notebook_total_usd", "worker"}  # never to a third party
    assert bodies[-1]["metrics"] == {k: v for k, v in p.metrics.items() if k not in kernel} and "cost_usd" in p.metrics
    outs = [len(b["output"]) for b in bodies[1:-1]]
    assert outs == sorted(outs) and 0 < outs[0] < 30  # output so far, growing
    ids = [h["webhook-id"] for _, h, _ in c.requests]
    assert len(set(ids)) == len(ids) and all(h["content-type"] == "application/json" for _, h, _ in c.requests)


def test_events_filter_and_bad_arguments(consumer):
    for wanted, statuses in ((["completed"], ["succeeded"]), (["start", "completed"], ["processing", "succeeded"])):
        c = consumer()
        run_local(TOKENS, {"n": 12, "delay": 0.05}, c.url, events_filter=wanted)
        assert [b["status"] for b in c.bodies()] == statuses
    _, d = run_local(TOKENS, {"n": 12, "delay": 0.05}, (outputs := consumer()).url, events_filter=["output"])
    assert {r.event for r in d.records} == {"output"}
    assert outputs.bodies()[-1]["output"] == [f"t{i} " for i in range(12)]  # the final state still arrives
    late = consumer()  # attached after the end: replayed, the start as it was at the start
    assert webhooks.attach(d.prediction, late.url).wait(10)
    assert [b["status"] for b in late.bodies()] == ["processing", "succeeded"] and late.bodies()[0]["output"] == []
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
    times = [t for t, _, _ in c.requests]
    gaps = [b - a for a, b in zip(times[:-2], times[1:-1])]  # start and outputs; completed is not throttled
    assert gaps and min(gaps) > 0.4 and len(times) <= 2 * (time.monotonic() - t0) + 2, gaps
    last = c.bodies()[-1]
    assert last["status"] == "succeeded" and last["output"] == [f"t{i} " for i in range(2000)] == p.output


def test_retries_after_500s_keep_the_webhook_id_and_honour_retry_after(consumer):
    c = consumer([(500, 0, {}), (500, 0, {}), (503, 0, {"Retry-After": "1"})])
    _, d = run_local(TOKENS, {"n": 3}, c.url.replace("//", "//hook:s%40cret@"), events_filter=["completed"], retry=FAST)
    assert c.requests[0][1]["authorization"] == "Basic " + base64.b64encode(b"hook:s@cret").decode()
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
    assert time.monotonic() - t < 0.5 and p.status == "succeeded" and d.wait(10)  # 0.05 s of tokens, not 1.5
    assert [(r.event, r.ok, r.attempts) for r in d.records] == [("start", True, 2), ("completed", True, 1)]
    ids = [h["webhook-id"] for _, h, _ in c.requests]
    assert ids[0] == ids[1] != ids[2]


def test_completed_after_cancel_failure_and_interrupt(consumer):
    c = consumer()
    p = api.prepare(STEPS, {"steps": 200, "delay": 0.05})
    d = webhooks.attach(p, c.url)
    threading.Thread(target=run_and_cancel, args=(p,), daemon=True).start()
    assert d.wait(15) and d.records[-1].event == "completed" and c.bodies()[-1]["status"] == "canceled"
    failed, hit = consumer(), consumer()
    run_local(f"{PRED / 'failing.py'}:Predictor", {}, failed.url)
    last = failed.bodies()[-1]
    assert last["status"] == "failed" and "model exploded" in last["error"] and "about to fail" in last["logs"]
    p = api.prepare(STEPS, {"steps": 200, "delay": 0.05})
    d = webhooks.attach(p, hit.url)
    at_step(p, _thread.interrupt_main)  # what the kernel's interrupt button does
    with pytest.raises(KeyboardInterrupt):
        api.execute(p)
    assert d.wait(15) and hit.bodies()[-1]["status"] == "canceled" and d.records[-1].event == "completed"


def test_a_receiver_that_is_down_is_named_and_the_prediction_succeeds():
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]  # closed again: nothing listens there
    url = f"http://hook:pw@127.0.0.1:{port}/down"
    with pytest.warns(WebhookDeliveryWarning, match=re.escape(f"http://hook:****@127.0.0.1:{port}/down")) as seen:
        p, d = run_local(TOKENS, {"n": 3}, url, events_filter=["start", "completed"], retry=FAST)
    assert not any("pw@" in str(w.message) for w in seen)  # a password in the URL is never shown
    assert p.status == "succeeded" and p.output == ["t0 ", "t1 ", "t2 "]
    assert [(f.event, f.attempts) for f in d.failures] == [("start", 5), ("completed", 5)]
    assert all("connection refused" in f.error for f in d.failures)
    assert "[replicate-jupyter]" not in p.logs  # nothing of the webhook in the prediction


def test_secrets_never_reach_a_body_and_files_are_urls(consumer, tmp_path):
    c, token = consumer(), "sk-live-" + "7" * 24
    run_local(f"{PRED / 'secret.py'}:Predictor", {"api_key": token, "word": "w"}, c.url)
    assert c.requests and all(token.encode() not in raw for _, _, raw in c.requests)
    assert c.bodies()[-1]["input"]["api_key"] == "**********" and c.bodies()[-1]["output"] == f"w:{len(token)}:Secret"
    # a model that prints its secret: masked in the logs of the body too
    leaky = tmp_path / "leaky.py"
    leaky.write_text("from cog import BasePredictor, Input, Secret\n\nclass Predictor(BasePredictor):\n"
                     "    def predict(self, key: Secret = Input()) -> str:\n"
                     "        print('using', key.get_secret_value())\n        return 'ok ' + key.get_secret_value()\n")
    c2, c3 = consumer(), consumer()
    run_local(f"{leaky}:Predictor", {"key": token}, c2.url)
    assert c2.requests and all(token.encode() not in raw for _, _, raw in c2.requests)
    assert "using **********" in c2.bodies()[-1]["logs"] and c2.bodies()[-1]["output"] == "ok **********"
    # files leave as URLs (data URIs for files the kernel holds)
    p, _ = run_local(f"{PRED / 'image.py'}:Predictor", {"color": "green", "count": 2}, c3.url, events_filter=["completed"])
    assert c3.bodies()[-1]["output"] == [f.url for f in p.output] and p.output[0].url.startswith("data:image/png;base64,")


def test_receiver_verifies_names_events_and_shows_a_table():
    with webhooks.listen() as rx:
        assert rx.url.startswith("http://127.0.0.1:")
        p, d = run_local(TOKENS, {"n": 20, "delay": 0.05}, rx.url)
        done = rx.wait(p.id, "completed", timeout=10)
        rows = rx.deliveries
        assert [r.event for r in rows] == [r.event for r in d.records]  # inferred as the sender meant
        assert all(r.verified for r in rows) and done.body["output"] == p.output
        # a tampered delivery is refused (401) and shown unverified
        body, ts = json.dumps(done.body), int(time.time())
        headers = {"webhook-id": "msg_x", "webhook-timestamp": str(ts),
                   "webhook-signature": webhooks.sign(webhooks.default_secret(), "msg_x", ts, body)}
        bad = httpx.post(rx.url, content=body.replace("succeeded", "failed"), headers=headers)
        assert bad.status_code == 401 and rx.deliveries[-1].verified is False
        html, plain = rx._repr_mimebundle_()["text/html"], rx._repr_mimebundle_()["text/plain"]
        assert all(f">{col}</th>" in html for col in ("time", "prediction", "status", "event", "verified"))
        assert p.id in plain and "✗" in plain and "✓" in plain
        port = rx.port
    with pytest.raises(httpx.ConnectError):  # stopped: nothing listens there
        httpx.post(f"http://127.0.0.1:{port}/", content=b"{}")
    with webhooks.listen(port=port) as again:  # and the port is free for a new receiver
        assert again.port == port and again.deliveries == []
    with socket.create_server(("127.0.0.1", 0)) as s, pytest.raises(InputError):  # a port in use is named
        webhooks.listen(port=s.getsockname()[1])


@pytest.fixture(scope="module")
def worker():
    """One `replicate-jupyter serve` worker for tokens.py, in the shared pool for this module."""
    from replicate_jupyter.runners.workers.runner import pool

    proc = subprocess.Popen([sys.executable, "-m", "replicate_jupyter.serve.cli", "serve", TOKENS, "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    lines = [""]
    while not (m := re.search(r"ready at (http://\S+) ", lines[-1])):
        lines.append(proc.stdout.readline())
        if not lines[-1]:
            pytest.fail("serve ended before it was ready:\n" + "".join(lines))
    threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep its pipe drained
    pool().add(m.group(1))
    yield m.group(1)
    pool().remove(m.group(1))
    proc.terminate()  # the server stops its coglet child on SIGTERM
    proc.wait(20)


@pytest.fixture(scope="module")
def local_ray():
    """A Ray started by this process (the runner's default without an address), stopped after."""
    import ray  # the [test] extra installs it: missing must fail, not skip

    from replicate_jupyter.session import session

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    previous = session.default_backend
    session.use("ray", num_cpus=0.25)
    yield
    session.default_backend, _ = previous, session.backend_options.pop("ray", None)
    session.close()
    ray.shutdown()


@pytest.mark.parametrize("backend,fixture,ref", [("workers", "worker", "local/tokens"), ("ray", "local_ray", TOKENS)])
def test_remote_backends_deliver_the_same_format(backend, fixture, ref, request, consumer):
    request.getfixturevalue(fixture)
    c, c2 = consumer(), consumer()
    p = api.prepare(ref, {"n": 20, "delay": 0.05}, on=backend)
    d = webhooks.attach(p, c.url)
    api.execute(p)
    assert d.wait(30) and p.status == "succeeded", p.error
    check_run(d, c, 20)
    q = api.prepare(ref, {"n": 400, "delay": 0.05}, on=backend)
    d2 = webhooks.attach(q, c2.url)
    run_and_cancel(q)  # canceled on the worker or the cluster: the completed still comes, last
    assert d2.wait(30) and c2.bodies()[-1]["status"] == "canceled" and d2.records[-1].event == "completed"


def test_completed_after_a_real_kernel_interrupt(run_cells, consumer):
    c, key = consumer(), webhooks.new_secret().key
    nb = run_cells([
        "from replicate_jupyter import api, webhooks\n"
        f"p = api.prepare({STEPS!r}, {{'steps': 400, 'delay': 0.05}})\n"
        f"d = webhooks.attach(p, {c.url!r})\n"
        "api.execute(p)",
        "print(d.wait(20), p.status, [r.event for r in d.records][-1])",
    ], env={webhooks.ENV_SECRET: key}, allow_errors=True, interrupt={0: 2.0})
    errors = [o for o in nb.cells[0].outputs if o.output_type == "error"]
    assert errors and errors[0]["ename"] == "KeyboardInterrupt"
    assert "True canceled completed" in "".join(o.get("text", "") for o in nb.cells[1].outputs)
    assert c.bodies()[0]["status"] == "processing" and c.bodies()[-1]["status"] == "canceled"
    assert_signed(c.requests, key)  # signed with the key the kernel was given

"""The `replicate` backend against a local server speaking Replicate's HTTP API (tests/fake_replicate.py),
which runs the real predictors in tests/predictors. Nothing here is mocked but Replicate's cloud itself."""
from __future__ import annotations

import _thread
import json
import os
import pathlib
import threading
import time

import httpx
import pytest
from cog import BasePredictor, Input
from fake_replicate import FakeReplicate

import replicate_jupyter as rj
from replicate_jupyter.cost import prices as cost
from replicate_jupyter.errors import BackendError, InputError, ModelError, ModelNotFound
from replicate_jupyter.prediction.events import Completed, Log, Output
from replicate_jupyter.prediction.files import FileOutput
from replicate_jupyter.prediction.prediction import Prediction
from replicate_jupyter.runners import create
from replicate_jupyter.session import session

PRED = pathlib.Path(__file__).resolve().parent / "predictors"
TOKEN = "r8_TestSecretToken0123456789abcdef"


class Chatty(BasePredictor):
    """Prints a line per step, slowly, so logs can be seen arriving while it runs."""

    def predict(self, lines: int = Input(default=4, ge=1, le=50), delay: float = Input(default=0.1, ge=0, le=2)) -> str:
        for i in range(lines):
            print(f"step {i}", flush=True)
            time.sleep(delay)
        return f"{lines} lines"


MODELS = {
    "acme/image": f"{PRED}/image.py:Predictor",
    "acme/tokens": f"{PRED}/tokens.py:Predictor",
    "acme/fail": f"{PRED}/failing.py:Predictor",
    "acme/echo": f"{PRED}/echo.py:Predictor",
    "acme/sleep": f"{PRED}/sleep.py:Predictor",
    "acme/file-in": f"{PRED}/file_in.py:Predictor",
    "acme/chatty": Chatty,
    "acme/polled": f"{PRED}/tokens.py:Predictor",
}


@pytest.fixture(scope="module")
def fake():
    with FakeReplicate(MODELS, token=TOKEN, no_stream={"acme/polled"}) as server:
        yield server


@pytest.fixture
def on(fake, monkeypatch):
    """The replicate backend pointed at the fake server, with the right token in the environment."""
    monkeypatch.setenv("REPLICATE_API_TOKEN", TOKEN)
    previous = session.default_backend
    session.use("replicate", base_url=fake.url, poll_interval=0.1)
    session.default_backend = previous
    yield "replicate"
    session.backend_options.pop("replicate", None)
    old = session._runners.pop("replicate", None)
    if old is not None:
        old.close()


def remote_of(fake: FakeReplicate, model: str):
    """The fake's most recent prediction of `model`."""
    return [p for p in fake.predictions.values() if p.model.name == model][-1]


def test_image_outputs_are_fetched_and_embedded_before_they_expire(fake, on):
    p = rj.predictions.create("acme/image", input={"color": "green", "count": 2}, on=on).wait(30)
    assert p.status == "succeeded", p.error
    remote = remote_of(fake, "acme/image")
    assert p.version == fake.models["acme/image"].version
    assert all(isinstance(o, FileOutput) for o in p.output) and len(p.output) == 2
    urls = list(remote.output)
    assert all(u.startswith(fake.root + "/delivery/") for u in urls)
    # Replicate deletes outputs after an hour: after that the links are dead, the notebook's copy is not
    assert fake.expire_outputs() >= 2
    assert httpx.get(urls[0]).status_code == 404
    import io

    from PIL import Image

    img = Image.open(io.BytesIO(p.output[0].read()))
    assert img.getpixel((3, 3)) == (0, 255, 0)
    record = p.to_json()
    assert record["output"][0]["url"].startswith("data:image/png;base64,")
    assert fake.root not in json.dumps(record["output"])
    # metrics: Replicate's predict_time, billed at the (default) SKU's price
    assert p.metrics["predict_time"] == pytest.approx(remote.metrics["predict_time"], abs=1e-6)
    assert p.metrics["hardware"] == "gpu-t4"
    assert p.metrics["cost_usd"] == pytest.approx(cost.cost_of(p.metrics["predict_time"], "gpu-t4"))
    # the assumed SKU is said on the bill and the cost line, never in the model's own logs
    assert "costing it as" not in p.logs and p.metrics["billing"]["sku_assumed"]


def test_token_stream_arrives_in_order_while_running(fake, on):
    n, delay = 15, 0.04
    seen: list[tuple[float, object]] = []
    for event in rj.stream("acme/tokens", input={"n": n, "delay": delay}, on=on):
        seen.append((time.monotonic(), event))
    outputs = [e for _, e in seen if isinstance(e, Output)]
    done = [t for t, e in seen if isinstance(e, Completed)]
    assert [e.index for e in outputs] == list(range(n))
    assert "".join(str(e) for e in outputs) == "".join(f"t{i} " for i in range(n))
    # streamed, not delivered at the end: the first chunk came well before completion
    assert done and done[0] - seen[0][0] > delay * n * 0.5
    assert [e.event for _, e in seen][-1] == "done"


def test_logs_arrive_incrementally_and_exactly(fake, on):
    p = rj.predictions.create("acme/chatty", input={"lines": 5, "delay": 0.12}, on=on)
    arrivals = []
    for e in p.events(timeout=30):
        if isinstance(e, Log) and e.text.startswith("step"):
            arrivals.append(time.monotonic())
        if isinstance(e, Completed):
            end = time.monotonic()
    assert p.status == "succeeded" and p.output == "5 lines"
    assert len(arrivals) == 5 and end - arrivals[0] > 0.3  # the first line long before the end
    remote = remote_of(fake, "acme/chatty")
    assert p.logs.endswith(remote.logs) and remote.logs == "".join(f"step {i}\n" for i in range(5))


def test_cancel_mid_run_is_canceled_on_both_sides(fake, on):
    p = rj.predictions.create("acme/sleep", input={"seconds": 30}, on=on)
    deadline = time.monotonic() + 10
    while p.status != "processing" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert p.status == "processing"
    t0 = time.monotonic()
    p.cancel()
    p.wait(10)
    assert p.status == "canceled" and time.monotonic() - t0 < 5
    remote = remote_of(fake, "acme/sleep")
    assert remote.status == "canceled"
    assert ("POST", f"/v1/predictions/{remote.id}/cancel") in fake.requests
    assert p.metrics["predict_time"] == pytest.approx(remote.metrics["predict_time"], abs=1e-6)


def test_cancel_a_token_stream_stops_it(fake, on):
    p = rj.predictions.create("acme/tokens", input={"n": 500, "delay": 0.02}, on=on)
    for e in p.events(timeout=30):
        if isinstance(e, Output) and e.index == 4:
            p.cancel()
    assert p.status == "canceled"
    remote = remote_of(fake, "acme/tokens")
    assert fake.wait_status(remote.id) == "canceled"
    assert 5 <= len(p.output) < 500


def test_failed_model_carries_replicates_error_and_logs(fake, on):
    with pytest.raises(ModelError) as info:
        rj.run("acme/fail", input={"text": "x"}, on=on)
    p = info.value.prediction
    assert p.status == "failed"
    assert p.error == "model exploded on 'x'"
    assert "about to fail" in p.logs
    assert 'failing.py", line 5, in helper' in p.logs  # the model's own frames
    assert "fake_replicate.py" not in p.logs


def test_wrong_or_missing_token_is_a_clear_error_that_never_shows_the_token(fake, on, monkeypatch):
    wrong = "r8_WrongButStillSecret_777"
    rj.schema("acme/echo", on=on)  # resolved while the token was right
    monkeypatch.setenv("REPLICATE_API_TOKEN", wrong)
    # resolving a model not seen yet answers 401
    runner = create("replicate", base_url=fake.url)
    with pytest.raises(BackendError) as info:
        runner.resolve("acme/never-resolved")
    msg = str(info.value)
    assert "401" in msg and "%replicate login" in msg
    assert wrong not in msg and wrong not in repr(info.value) and wrong not in repr(runner)
    # creating the prediction answers 401 too: the prediction fails, nothing holds the token
    p = rj.predictions.create("acme/echo", input={"text": "hi"}, on=on).wait(10)
    assert p.status == "failed" and "%replicate login" in p.error
    blob = json.dumps(p.to_json()) + repr(p) + p.logs + str(p.error)
    assert wrong not in blob and TOKEN not in blob
    from replicate_jupyter.notebook import display

    assert wrong not in json.dumps(display.prediction_bundle(p), default=str)
    # no token at all: said plainly, and nothing is sent
    monkeypatch.delenv("REPLICATE_API_TOKEN")
    before = len(fake.requests)
    with pytest.raises(BackendError, match="No Replicate API token.*%replicate login"):
        create("replicate", base_url=fake.url).resolve("acme/not-cached")
    assert len(fake.requests) == before
    with pytest.raises(ValueError, match="never takes a token"):
        create("replicate", base_url=fake.url, token="r8_x")


def test_unknown_model_and_version_are_model_not_found(fake, on):
    with pytest.raises(ModelNotFound, match="acme/nope") as info:
        rj.run("acme/nope", input={}, on=on)
    assert "replicate" in str(info.value)
    with pytest.raises(ModelNotFound, match="version"):
        rj.schema("acme/echo:" + "0" * 64, on=on)
    with pytest.raises(ModelNotFound, match="owner/name"):
        rj.schema("not a model", on=on)


def test_unreachable_service_names_the_url(monkeypatch):
    monkeypatch.setenv("REPLICATE_API_TOKEN", TOKEN)
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    runner = create("replicate", base_url=f"http://127.0.0.1:{port}/v1", timeout=3)
    with pytest.raises(BackendError, match=f"127.0.0.1:{port}/v1/models/acme/echo"):
        runner.resolve("acme/echo")


def test_bad_input_is_caught_before_any_request(fake, on):
    rj.schema("acme/image", on=on)  # resolved (and cached) first
    before = list(fake.requests)
    with pytest.raises(InputError) as info:
        rj.run("acme/image", input={"color": "purple", "count": 9}, on=on)
    assert set(info.value.fields) == {"color", "count"}
    assert fake.requests == before  # not one request: nothing created, nothing charged


def test_replicate_side_422_fails_the_prediction_with_its_detail(fake, on):
    runner = session.runner("replicate")
    h = runner.resolve("acme/echo")
    p = Prediction("acme/echo", {"text": "hi", "times": 99}, version=h.version, backend="replicate",
                   schema=h.schema, runner=runner)  # skips our validation on purpose
    runner.execute(p)
    assert p.status == "failed"
    assert "Replicate rejected the input" in p.error and "times" in p.error


def test_small_files_go_as_data_uris_and_large_ones_through_v1_files(fake, on, tmp_path):
    small = tmp_path / "small.bin"
    small.write_bytes(os.urandom(1000))
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(300 * 1024))
    uploads = len(fake.uploads)
    assert rj.run("acme/file-in", input={"image": small}, on=on) == "1000 bytes"
    assert len(fake.uploads) == uploads
    assert remote_of(fake, "acme/file-in").input["image"].startswith("data:")
    assert rj.run("acme/file-in", input={"image": big}, on=on) == f"{300 * 1024} bytes"
    assert len(fake.uploads) == uploads + 1
    sent = remote_of(fake, "acme/file-in").input["image"]
    assert sent == fake.uploads[-1]["urls"]["get"]
    assert fake.uploads[-1]["name"] == "big.bin" and fake.uploads[-1]["size"] == 300 * 1024
    # replicate-python's file_encoding_strategy: "url" uploads even a small file, "base64" inlines a big one
    assert rj.run("acme/file-in", input={"image": small}, on=on, file_encoding_strategy="url") == "1000 bytes"
    assert len(fake.uploads) == uploads + 2 and remote_of(fake, "acme/file-in").input["image"].startswith(fake.url)
    assert rj.run("acme/file-in", input={"image": big}, on=on, file_encoding_strategy="base64") == f"{300 * 1024} bytes"
    assert len(fake.uploads) == uploads + 2 and remote_of(fake, "acme/file-in").input["image"].startswith("data:")


def test_without_a_stream_url_the_prediction_is_polled(fake, on):
    p = rj.predictions.create("acme/polled", input={"n": 6, "delay": 0.05}, on=on).wait(30)
    assert p.status == "succeeded"
    assert "".join(p.output) == "".join(f"t{i} " for i in range(6))
    remote = remote_of(fake, "acme/polled")
    assert "stream" not in remote.to_json()["urls"]
    assert fake.count("GET", f"/v1/predictions/{remote.id}") >= 2


def test_pinned_version_runs_by_version_and_hardware_option_prices_it(fake, on):
    version = fake.models["acme/echo"].version
    session.use("replicate", base_url=fake.url, hardware="gpu-a100-large")
    session.default_backend = "local"
    p = rj.predictions.create(f"acme/echo:{version}", input={"text": "v", "times": 2}, on=on).wait(10)
    assert p.status == "succeeded" and p.output == ">v >v"
    assert p.version == version
    assert ("GET", f"/v1/models/acme/echo/versions/{version}") in fake.requests
    assert ("POST", "/v1/predictions") in fake.requests
    assert p.metrics["hardware"] == "gpu-a100-large"
    assert p.metrics["cost_usd"] == pytest.approx(cost.cost_of(p.metrics["predict_time"], "gpu-a100-large"))
    assert "costing it as" not in p.logs


def test_magic_in_a_real_kernel_with_login_never_saves_the_token(fake, run_cells):
    secret_env = "RJ_TEST_PASTED_TOKEN"
    nb = run_cells([
        "%load_ext replicate_jupyter",
        # the user pastes the token at the getpass prompt (patched here: there is no terminal)
        f"import getpass, os\ngetpass.getpass = lambda prompt='': os.environ.pop({secret_env!r})\n%replicate login",
        "%%replicate acme/image --on replicate\ncolor: blue\ncount: 2",
        "%%replicate acme/tokens --on replicate\nn: 4",
        "p = _\nprint(p.status, ''.join(p.output), p.metrics['hardware'])",
    ], env={"REPLICATE_API_TOKEN": "", "REPLICATE_API_BASE_URL": fake.url, secret_env: TOKEN},
        timeout=120)
    from kernel_helpers import nb_json, outputs_of, text_of

    saved = nb_json(nb)
    assert TOKEN not in saved
    assert "Token stored" in text_of(nb.cells[1])
    image_cell = outputs_of(nb.cells[2])
    bundles = [o["data"] for o in image_cell if "data" in o]
    record = next(b["application/vnd.replicate.prediction+json"] for b in bundles
                  if "application/vnd.replicate.prediction+json" in b)
    assert record["status"] == "succeeded" and record["backend"] == "replicate"
    assert all(o["url"].startswith("data:image/png;base64,") for o in record["output"])
    assert "succeeded t0 t1 t2 t3  gpu-t4" in text_of(nb.cells[4])
    assert fake.root + "/delivery" not in saved  # no expiring links in the notebook


def test_kernel_interrupt_cancels_on_replicate(fake, run_cells, monkeypatch):
    nb = run_cells([
        "%load_ext replicate_jupyter",
        ("%%replicate acme/sleep --on replicate\nseconds: 30\ntag: interrupted", ["raises-exception"]),
        "from replicate_jupyter import api\np = api.predictions.list()[0]\nprint(p.status, p.metrics['predict_time'] < 10)",
    ], env={"REPLICATE_API_TOKEN": TOKEN, "REPLICATE_API_BASE_URL": fake.url}, timeout=60, interrupt={1: 2.0})
    from kernel_helpers import nb_json, text_of

    remote = [p for p in fake.predictions.values() if p.input.get("tag") == "interrupted"][-1]
    assert fake.wait_status(remote.id) == "canceled"
    assert ("POST", f"/v1/predictions/{remote.id}/cancel") in fake.requests
    assert "canceled True" in text_of(nb.cells[2])
    assert TOKEN not in nb_json(nb)


def test_prefer_wait_returns_a_finished_prediction_without_streaming(fake, on):
    session.use("replicate", base_url=fake.url, wait=10)
    session.default_backend = "local"
    p = rj.predictions.create("acme/echo", input={"text": "w"}, on=on).wait(20)
    assert p.status == "succeeded" and p.output == ">w"
    remote = remote_of(fake, "acme/echo")
    assert ("GET", f"/stream/{remote.id}") not in fake.requests  # the create answer was already final
    assert p.metrics["predict_time"] == pytest.approx(remote.metrics["predict_time"], abs=1e-6)


def test_a_cut_stream_is_reopened_after_the_last_event_and_nothing_is_repeated(fake, on):
    fake.drop_streams_after, fake.stream_cuts = 3, 2  # the first two connections are cut after 3 events
    n0 = len(fake.log)
    try:
        p = rj.predictions.create("acme/tokens", input={"n": 10, "delay": 0.03}, on=on, stream=True).wait(30)
    finally:
        fake.drop_streams_after, fake.stream_cuts = None, None
    assert p.status == "succeeded"
    assert p.output == [f"t{i} " for i in range(10)]  # every item once, in order
    reopened = [c for c in fake.calls(n0) if c.path.startswith("/stream/") and c.last_event_id]
    assert len(reopened) == 2 and reopened[0].last_event_id.endswith(":2")
    assert "opening it again after event" in p.logs
    assert_billed_as_on_replicate(fake, p)


def assert_billed_as_on_replicate(fake: FakeReplicate, p: Prediction) -> None:
    """The prediction ended in Replicate's own final state, and the ledger bills Replicate's time."""
    remote = fake.predictions[p.remote_id]
    assert p.status == remote.status
    entry = next(e for e in session.ledger if e.id == p.id)
    assert entry.predict_time == pytest.approx(remote.metrics["predict_time"], abs=1e-6)


# ----- faults: the cloud path is as robust as replicate-python, or more --------------------------
def test_429_with_retry_after_is_waited_out_on_reads_and_on_create(fake, on):
    n0 = len(fake.log)
    fake.fail(429, 1, method="POST", prefix="/v1/models/acme/echo/predictions", retry_after=1)
    fake.fail(429, 2, method="GET", prefix="/v1/predictions/", retry_after="0.3")
    t0 = time.monotonic()
    p = rj.predictions.create("acme/echo", input={"text": "rate"}, on=on).wait(30)
    assert p.status == "succeeded" and p.output == ">rate"
    calls = fake.calls(n0)
    posts = [c for c in calls if c.method == "POST"]
    assert [c.status for c in posts] == [429, 201]  # a 429 created nothing: sent again, once
    assert posts[1].t - posts[0].t >= 0.95 and time.monotonic() - t0 >= 1.0  # Retry-After: 1 honoured
    assert [c.status for c in calls if c.method == "GET" and c.path.startswith("/v1/predictions/")][:3] == [429, 429, 200]
    assert len([x for x in fake.predictions.values() if x.input.get("text") == "rate"]) == 1
    assert_billed_as_on_replicate(fake, p)


def test_a_burst_of_503_on_reads_is_retried_and_a_503_on_create_is_not(fake, on):
    fake.fail(503, 3, method="GET", prefix="/v1/predictions/")
    p = rj.predictions.create("acme/chatty", input={"lines": 3, "delay": 0.05}, on=on).wait(30)
    assert p.status == "succeeded" and p.output == "3 lines"
    assert_billed_as_on_replicate(fake, p)
    # the create answered 503: it may have created the prediction, so it is never sent blindly again
    n0 = len(fake.log)
    fake.fail(503, 1, method="POST", prefix="/v1/models/acme/echo/predictions")
    with pytest.raises(BackendError, match="503"):
        rj.run("acme/echo", input={"text": "once"}, on=on)
    assert [c.status for c in fake.calls(n0) if c.method == "POST"] == [503]


def test_a_server_restart_mid_prediction_is_followed_through(fake, on):
    p = rj.predictions.create("acme/chatty", input={"lines": 12, "delay": 0.25}, on=on, stream=True)
    while p.status != "processing":
        time.sleep(0.02)
    fake.restart(down=1.5)  # refused connections, the stream cut; the prediction keeps running
    p.wait(60)
    assert p.status == "succeeded" and p.output == "12 lines"
    assert p.logs.count("step 11\n") == 1 and "opening it again after event" in p.logs  # resumed, nothing twice
    assert_billed_as_on_replicate(fake, p)


def test_out_of_reach_past_lost_after_it_is_canceled_not_left_running(fake, on):
    session.use("replicate", base_url=fake.url, poll_interval=0.1, lost_after=1.0)
    session.default_backend = "local"
    p = rj.predictions.create("acme/sleep", input={"seconds": 20, "tag": "lost"}, on=on)
    while p.status != "processing":
        time.sleep(0.02)
    remote = fake.predictions[p.remote_id]
    threading.Thread(target=fake.restart, args=(3.0,), daemon=True).start()
    p.wait(60)
    assert p.status == "failed" and "Stopped following" in p.error and "asked to cancel" in p.error
    assert fake.wait_status(remote.id) == "canceled"  # the cancel got through once the API was back
    assert ("POST", f"/v1/predictions/{remote.id}/cancel") in fake.requests


def test_ctrl_c_during_create_cancels_once_the_id_is_known(fake, on):
    from replicate_jupyter import api

    fake.create_delay = 1.5  # Replicate has created it; its answer is on the way
    p = api.prepare("acme/sleep", {"seconds": 20, "tag": "ctrl-c"}, on=on)
    timer = threading.Timer(0.4, _thread.interrupt_main)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            api.execute(p)
    finally:
        fake.create_delay = 0.0
        timer.cancel()
    p.wait(30)
    remote = next(x for x in fake.predictions.values() if x.input.get("tag") == "ctrl-c")
    assert fake.wait_status(remote.id) == "canceled" and p.status == "canceled"
    assert ("POST", f"/v1/predictions/{remote.id}/cancel") in fake.requests
    assert p.remote_id == remote.id
    assert_billed_as_on_replicate(fake, p)


def test_cancel_after_sends_the_header_and_a_prediction_that_never_started_is_aborted(fake, on):
    with pytest.raises(InputError, match="cancel_after"):
        rj.predictions.create("acme/echo", input={}, on=on, cancel_after="2s")  # under Replicate's 5 s
    fake.boot_delays["acme/sleep"] = 30.0  # a cold boot longer than the deadline
    n0 = len(fake.log)
    try:
        p = rj.predictions.create("acme/sleep", input={"seconds": 1, "tag": "deadline"}, on=on, cancel_after="5s")
        p.wait(30)
    finally:
        fake.boot_delays.clear()
    assert p.status == "aborted" and p.metrics["predict_time"] == 0 and p.metrics["cost_usd"] == 0
    assert "Cancel-After" in (p.error or "") or "aborted" in (p.error or "")
    assert [c.cancel_after for c in fake.calls(n0) if c.method == "POST"] == ["5s"]
    assert fake.predictions[p.remote_id].deadline
    assert_billed_as_on_replicate(fake, p)


def test_a_closed_client_is_a_backend_error_naming_the_url(fake, monkeypatch):
    """httpx raises a bare RuntimeError on a closed Client; the edge makes it a BackendError."""
    monkeypatch.setenv("REPLICATE_API_TOKEN", TOKEN)
    h = create("replicate", base_url=fake.url).resolve("acme/echo")  # cached for the process
    runner = create("replicate", base_url=fake.url)
    runner.close()
    before = len(fake.requests)
    with pytest.raises(BackendError, match="closed") as info:
        runner.resolve("acme/closed-client")
    url = f"{fake.url}/models/acme/closed-client"
    assert url in str(info.value) and info.value.url == url and info.value.tried == [url]
    assert isinstance(info.value.__cause__, RuntimeError)
    # a prediction on it: nothing could be created, so the error is raised, naming the create URL
    p = Prediction("acme/echo", {"text": "hi"}, version=h.version, backend="replicate", schema=h.schema, runner=runner)
    with pytest.raises(BackendError, match="closed") as info:
        runner.execute(p)
    assert f"{fake.url}/models/acme/echo/predictions" in str(info.value)
    assert len(fake.requests) == before  # nothing was sent


def test_login_token_lives_in_memory_only_and_a_client_token_on_the_client(fake, on, monkeypatch):
    import pickle
    import subprocess
    import sys

    from replicate_jupyter.runners.replicate import token as tokens

    monkeypatch.delenv("REPLICATE_API_TOKEN")
    tokens.login(TOKEN)  # what %replicate login is to call (notebook/commands.py)
    try:
        assert "REPLICATE_API_TOKEN" not in os.environ
        child = subprocess.run([sys.executable, "-c", "import os; print(os.environ.get('REPLICATE_API_TOKEN'))"],
                               capture_output=True, text=True, check=True)
        assert child.stdout.strip() == "None"  # nothing the kernel starts inherits it
        assert rj.run("acme/echo", input={"text": "mem"}, on=on) == ">mem"
    finally:
        tokens.logout()
    with pytest.raises(BackendError, match="No Replicate API token"):
        create("replicate", base_url=fake.url).resolve("acme/never-seen-here")
    client = rj.Client(api_token=TOKEN, base_url=fake.root)  # its own token, nowhere else
    out = client.run("acme/image", input={"color": "red", "count": 1})
    assert out[0].read()[:4] == b"\x89PNG"
    p = rj.predictions.list()[0]
    from replicate_jupyter.notebook import display

    blob = repr(client) + repr(client._runner) + repr(client._runner.credentials) + json.dumps(p.to_json()) + p.logs
    blob += json.dumps(display.prediction_bundle(p), default=str)
    assert TOKEN not in blob and "r8_***" in repr(client)
    with pytest.raises(TypeError):
        pickle.dumps(client._runner.credentials)
    with pytest.raises(TypeError):
        pickle.dumps(client)

"""How a delivery stays off the prediction's back, against real parts on loopback: the deliverer
stops listening at the start and reads the prediction's state when a throttle slot opens (so a
log-only stream, a whole output and a run with neither still come out right), a body is built
without the prediction's lock, and the answer is read by hand (transport.py), keeping a socket
only when it can carry the next request."""
from __future__ import annotations

import json
import re
import socket
import threading
import time

import pytest
from test_webhooks import STEPS, Consumer, run_local

from replicate_jupyter.webhooks import body, transport


@pytest.fixture
def consumer():
    made: list[Consumer] = []
    yield lambda script=None: made.append(Consumer(script)) or made[-1]
    for c in made:
        c.shutdown()
        c.server_close()


def test_state_read_per_slot_sees_logs_a_whole_output_and_nothing_new(consumer, tmp_path):
    src = tmp_path / "logger.py"
    src.write_text("import time\nfrom cog import BasePredictor\n\nclass Predictor(BasePredictor):\n"
                   "    def predict(self, n: int = 12) -> str:\n        for i in range(n):\n"
                   "            print(f'line {i}', flush=True)\n            time.sleep(0.1)\n        return 'ok'\n")
    c = consumer()
    p, d = run_local(f"{src}:Predictor", {"n": 12}, c.url)
    events, bodies = [r.event for r in d.records], c.bodies()
    assert events[0] == "start" and events[-1] == "completed" and set(events[1:-1]) == {"logs"} and len(events) >= 4
    assert d._listen not in p._listeners  # it stopped listening once the start was taken
    logs = [b["logs"] for b in bodies]
    assert all(a == b[:len(a)] for a, b in zip(logs, logs[1:])) and logs[-1] == p.logs and "line 11" in p.logs
    assert len(set(logs[1:-1])) == len(logs) - 2  # each logs delivery is a newer state
    # progress and previews only: nothing between the start and the completed, for 1.5 s
    quiet = consumer()
    p, d = run_local(STEPS, {"steps": 15, "delay": 0.1}, quiet.url)
    assert [r.event for r in d.records] == ["start", "completed"] and quiet.bodies()[-1]["output"] == "done 15"
    # a whole output, with only `output` wanted: one delivery of the final state
    only = consumer()
    _, d = run_local(STEPS, {"steps": 3, "delay": 0.01}, only.url, events_filter=["output"])
    assert [r.event for r in d.records] == ["output"] and only.bodies()[-1]["output"] == "done 3"


def test_a_body_is_built_without_the_prediction_lock(consumer):
    """Not through `to_json()`, which PNG-encodes the step preview under the lock the model's
    every event takes: a body is built while that lock is held elsewhere (the model mid-emit)."""
    p, _ = run_local(STEPS, {"steps": 2, "delay": 0.01}, consumer().url, events_filter=["completed"])
    assert p.logs is not None  # its chunks joined now (joining takes the lock, briefly)
    held, release, built = threading.Event(), threading.Event(), []

    def hold() -> None:
        with p._lock:
            held.set()
            release.wait(10)

    threading.Thread(target=hold, daemon=True).start()
    assert held.wait(5)
    builder = threading.Thread(target=lambda: built.append(body.Builder(p).build()), daemon=True)
    builder.start()
    builder.join(5)
    release.set()
    assert built, "building the body waited for the prediction's lock"
    assert json.loads(built[0].text)["output"] == "done 2" and built[0].status == "succeeded"


def test_answers_read_by_hand_and_sockets_kept_only_when_reusable():
    script = [b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 503 Busy\r\nRetry-After: 7\r\nContent-Length: 4\r\n\r\nbusy",
              b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
              b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
              b"HTTP/1.0 204 No Content\r\n\r\n", b"SSH-2.0-OpenSSH_9.6\r\n\r\n", b""]
    conns: list[int] = []

    def serve(srv: socket.socket) -> None:
        while script:
            conn, _ = srv.accept()
            conns.append(len(script))
            with conn:
                data = b""
                while script:
                    while b"\r\n\r\n" not in data and (chunk := conn.recv(65536)):
                        data += chunk
                    if b"\r\n\r\n" not in data:
                        break  # the client closed this connection
                    head, _, data = data.partition(b"\r\n\r\n")
                    n = int(re.search(rb"Content-Length: (\d+)", head).group(1))
                    while len(data) < n:
                        data += conn.recv(65536)
                    data, answer = data[n:], script.pop(0)
                    if not answer:
                        break  # closed without answering
                    conn.sendall(answer)

    with socket.create_server(("127.0.0.1", 0)) as srv:
        threading.Thread(target=serve, args=(srv,), daemon=True).start()
        url = f"http://127.0.0.1:{srv.getsockname()[1]}/hook"

        def post() -> transport.Answer:
            return transport.post(url, b'{"a": 1}', {"webhook-id": "msg_1"}, 5.0)

        assert post() == transport.Answer(503, "7")  # the 100 skipped, the body drained
        assert post() == transport.Answer(200, None)  # on the same socket
        assert post() == transport.Answer(200, None)  # chunked: answered, the socket not kept
        assert post() == transport.Answer(204, None)  # HTTP/1.0: not kept
        with pytest.raises(transport.DeliveryFailed, match="BadStatusLine: SSH-2.0"):
            post()
        with pytest.raises(transport.DeliveryFailed, match="closed without an answer"):
            post()  # a fresh socket closed unanswered is a failure, not retried as a stale one
    assert conns == [6, 3, 2, 1]  # the first three answers on one connection, then one each


# ----- answers and URLs the hand-written transport must take as http.client did ---------------------
def _one_answer_server(answer: bytes, linger: float = 0.0):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    got: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            got.append(data)
            conn.sendall(answer)
            time.sleep(linger)
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return srv, got


@pytest.mark.parametrize("answer,linger", [
    (b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", 0.0),  # bare LF line endings
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", 1.0),  # a body cut short / slow after the status
])
def test_a_2xx_is_delivered_whatever_follows_its_status(answer, linger):
    srv, got = _one_answer_server(answer, linger)
    try:
        a = transport.post(f"http://127.0.0.1:{srv.getsockname()[1]}/hook", b"{}", {}, timeout=0.5)
        assert a.code == 200 and len(got) == 1
    finally:
        srv.close()


def test_a_non_ascii_path_goes_out_percent_encoded():
    srv, got = _one_answer_server(b"HTTP/1.1 204 No Content\r\n\r\n")
    try:
        transport.post(f"http://127.0.0.1:{srv.getsockname()[1]}/hooks/café?q=é", b"{}", {}, timeout=2)
        assert got[0].split(b"\r\n")[0] == b"POST /hooks/caf%C3%A9?q=%C3%A9 HTTP/1.1"
    finally:
        srv.close()


def test_a_proxy_named_by_the_environment_carries_the_delivery(monkeypatch):
    """HTTP_PROXY set (as behind a corporate proxy): the delivery goes through it, to a host only
    the proxy can reach; NO_PROXY for that host goes direct again."""
    srv, got = _one_answer_server(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")
    for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{srv.getsockname()[1]}")
    try:
        a = transport.post("http://hooks.example.invalid/in", b'{"id": "x"}', {"webhook-id": "msg_1"}, timeout=5)
        assert a.code == 202
        assert got[0].split(b"\r\n")[0] == b"POST http://hooks.example.invalid/in HTTP/1.1"  # an absolute target
        direct, seen = _one_answer_server(b"HTTP/1.1 204 No Content\r\n\r\n")  # loopback: never proxied
        assert transport.post(f"http://127.0.0.1:{direct.getsockname()[1]}/in", b"{}", {}, timeout=5).code == 204
        assert len(got) == 1 and seen[0].startswith(b"POST /in ")
        direct.close()
        monkeypatch.setenv("NO_PROXY", "hooks.example.invalid")
        with pytest.raises(transport.DeliveryFailed, match="host not found"):
            transport.post("http://hooks.example.invalid/in", b"{}", {}, timeout=5)
    finally:
        srv.close()

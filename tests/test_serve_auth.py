"""Workers let no one in: `replicate-jupyter serve` on a non-loopback address needs a token.

127.0.0.2 stands in for a network address (RJ_SERVE_TREAT_AS_REMOTE makes serve apply the
rules of one there), so the tests need no network namespace. Real serve processes, real coglet,
the real pool.
"""
from __future__ import annotations

import pathlib
import subprocess
import sys
import time

import httpx
import psutil
import pytest
from serve_helpers import ROOT
from serve_helpers import Serve as _Serve

import replicate_jupyter as rj
from replicate_jupyter.runners.workers import pool

PRED = ROOT / "tests" / "predictors"
TOKEN = "rjw-3f9c2a7d51e84b06aa1c"
HOST = "127.0.0.2"


class Serve(_Serve):
    """serve as on a network address: 127.0.0.2 treated as one, no worker token unless given."""

    def __init__(self, ref: str, *args: str, env: dict | None = None, host: str = HOST, **kw) -> None:
        super().__init__(ref, *args, env={"RJ_SERVE_TREAT_AS_REMOTE": HOST, "RJ_WORKER_TOKEN": None, **(env or {})},
                         host=host, **kw)


@pytest.fixture(scope="module")
def guarded():
    s = Serve(f"{PRED / 'tokens.py'}:Predictor", "--name", "me/guarded", env={"RJ_WORKER_TOKEN": TOKEN})
    yield s
    s.stop()


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_no_token_on_a_network_address_refuses_to_start():
    s = Serve(f"{PRED / 'echo.py'}:Predictor", wait=False)
    assert s.proc.wait(60) == 2
    s._reader.join(5)
    text = "".join(s.lines)
    assert "RJ_WORKER_TOKEN" in text and "--token-file" in text and "--insecure" in text
    assert "Traceback" not in text


def test_insecure_is_an_explicit_loud_opt_out():
    s = Serve(f"{PRED / 'echo.py'}:Predictor", "--insecure")
    try:
        assert any("WARNING" in line and "anyone" in line for line in s.lines)
        assert httpx.get(s.url + "/health-check", timeout=5).json()["status"] == "READY"
    finally:
        s.stop()


def test_requests_without_the_token_or_with_a_wrong_one_get_401_and_run_nothing(guarded):
    url = guarded.url
    for headers in ({}, bearer("wrong"), bearer(TOKEN + "x"), {"Authorization": TOKEN}):
        assert httpx.get(url + "/health-check", headers=headers, timeout=5).status_code == 401
        assert httpx.get(url + "/openapi.json", headers=headers, timeout=5).status_code == 401
        r = httpx.post(url + "/predictions", json={"input": {"n": 2}}, headers=headers, timeout=5)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        r = httpx.put(url + "/predictions/p1", json={"input": {"n": 2}},
                      headers={**headers, "Accept": "text/event-stream"}, timeout=5)
        assert r.status_code == 401
    time.sleep(0.3)
    assert guarded.started() == 0  # nothing reached coglet
    refusals = [line for line in guarded.lines if "refused" in line]
    assert len(refusals) >= 16 and any("no token" in x for x in refusals) and any("wrong token" in x for x in refusals)


def test_the_right_token_runs_and_streams_unbuffered(guarded):
    r = httpx.post(guarded.url + "/predictions", json={"input": {"n": 3}}, headers=bearer(TOKEN), timeout=30)
    assert r.status_code == 200 and r.json()["output"] == ["t0 ", "t1 ", "t2 "]
    # SSE through the front arrives as it is made, not when the prediction ends
    t0 = time.monotonic()
    seen = []
    with httpx.stream("POST", guarded.url + "/predictions", json={"input": {"n": 5, "delay": 0.3}},
                      headers={**bearer(TOKEN), "Accept": "text/event-stream"}, timeout=30) as resp:
        for line in resp.iter_lines():
            if line.startswith("event: output"):
                seen.append(time.monotonic() - t0)
    assert len(seen) == 5
    assert seen[0] < 0.9 and seen[-1] - seen[0] > 0.9  # spread over the run: streamed


def test_the_pool_sends_the_token(guarded, monkeypatch):
    monkeypatch.setenv("GUARDED_WORKER_TOKEN", TOKEN)
    P = pool()
    P.add(guarded.url, token_env="GUARDED_WORKER_TOKEN")
    try:
        assert rj.run("me/guarded", {"n": 2}, on="workers") == ["t0 ", "t1 "]
    finally:
        P.remove(guarded.url)
    # a pool without the token never gets in
    P.add(guarded.url)
    try:
        row = next(r for r in P.list() if r["url"] == guarded.url)
        assert row["status"] == "UNREACHABLE" and "401" in (row["last_error"] or "")
    finally:
        P.remove(guarded.url)


def test_coglet_listens_on_loopback_only(guarded):
    coglet = guarded.coglet()
    listening = [c.laddr for c in coglet.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    assert listening and all(addr.ip == "127.0.0.1" for addr in listening)
    public_port = int(guarded.url.rsplit(":", 1)[1])
    assert public_port not in {addr.port for addr in listening}
    # the front (serve itself) holds the public address
    front = [c.laddr for c in psutil.Process(guarded.proc.pid).net_connections(kind="inet")
             if c.status == psutil.CONN_LISTEN]
    assert (HOST, public_port) in [(a.ip, a.port) for a in front]


def test_the_token_is_in_no_log_and_no_process_listing(guarded):
    httpx.get(guarded.url + "/health-check", headers=bearer("wrong"), timeout=5)
    httpx.post(guarded.url + "/predictions", json={"input": {"n": 1}}, headers=bearer(TOKEN), timeout=30)
    assert not any(TOKEN in line for line in guarded.lines)
    assert TOKEN not in guarded.log.read_text(errors="replace")
    for proc in psutil.process_iter():
        try:
            assert TOKEN not in " ".join(proc.cmdline())
        except psutil.Error:
            continue
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert TOKEN not in ps
    # nor in the environment of coglet or the model's process (serve took it out of its own)
    for child in guarded.tree()[1:]:
        assert TOKEN not in pathlib.Path(f"/proc/{child.pid}/environ").read_bytes().decode(errors="replace")


def test_token_file(tmp_path):
    path = tmp_path / "token"
    path.write_text("file-token-77c1\n")
    s = Serve(f"{PRED / 'echo.py'}:Predictor", "--token-file", str(path))
    try:
        assert httpx.get(s.url + "/health-check", timeout=5).status_code == 401
        r = httpx.post(s.url + "/predictions", json={"input": {"text": "ok"}}, headers=bearer("file-token-77c1"), timeout=30)
        assert r.json()["output"] == ">ok"
        assert not any("file-token-77c1" in line for line in s.lines)
    finally:
        s.stop()
    bad = Serve(f"{PRED / 'echo.py'}:Predictor", "--token-file", str(tmp_path / "absent"), wait=False)
    assert bad.proc.wait(60) == 2
    bad._reader.join(5)
    assert "cannot read the token file" in "".join(bad.lines)


def test_no_token_option_on_the_command_line():
    r = subprocess.run([sys.executable, "-m", "replicate_jupyter.serve.cli", "serve", "x", "--token", "abc"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "unrecognized arguments" in r.stderr


def test_loopback_needs_no_token():
    s = Serve(f"{PRED / 'echo.py'}:Predictor", host="127.0.0.1")
    try:
        r = httpx.post(s.url + "/predictions", json={"input": {"text": "local"}}, timeout=30)
        assert r.json()["output"] == ">local"
    finally:
        s.stop()

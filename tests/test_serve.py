"""`replicate-jupyter serve`: a real coglet server per predictor, supervised."""
from __future__ import annotations

import pathlib
import signal
import subprocess
import sys

import httpx
import psutil
import pytest

from test_workers import PRED, ROOT, Serve, wait_for


@pytest.fixture(scope="module")
def echo():
    s = Serve(f"{PRED / 'echo.py'}:Predictor", "--name", "me/echo", "--hardware", "gpu-t4")
    yield s
    s.stop()


def test_schema_names_model_and_hardware(echo):
    doc = httpx.get(echo.url + "/openapi.json").json()
    assert doc["info"]["x-replicate-model"] == "me/echo"
    assert doc["info"]["x-replicate-hardware"] == "gpu-t4"
    assert doc["paths"]["/predictions"]["post"]["x-cog-streaming"] is True
    assert doc["components"]["schemas"]["Input"]["properties"]["times"]["maximum"] == 10
    assert httpx.get(echo.url + "/health-check").json()["status"] == "READY"
    r = httpx.post(echo.url + "/predictions", json={"input": {"text": "yo", "times": 2}}, timeout=10).json()
    assert r["status"] == "succeeded" and r["output"] == ">yo >yo"
    # coglet validates against the schema we wrote
    bad = httpx.post(echo.url + "/predictions", json={"input": {"times": 99}}, timeout=10)
    assert bad.status_code == 422


def test_restarts_when_the_predictor_process_dies(echo):
    before = echo.restarts()
    echo.predictor_process().kill()
    wait_for(lambda: echo.restarts() > before, 30)
    assert any("health-check says UNHEALTHY" in line for line in echo.lines)
    assert httpx.get(echo.url + "/health-check").json()["status"] == "READY"
    r = httpx.post(echo.url + "/predictions", json={"input": {"text": "back"}}, timeout=10).json()
    assert r["output"] == ">back"


def test_restarts_when_the_server_exits(echo):
    before = echo.restarts()
    server = echo.server()
    for c in server.children(recursive=True):
        c.kill()
    server.kill()
    wait_for(lambda: echo.restarts() > before, 30)
    assert any("the server exited" in line for line in echo.lines)
    assert httpx.get(echo.url + "/health-check").json()["status"] == "READY"


def test_cog_yaml_folder_default_name():
    s = Serve(str(PRED / "cogdir"))
    try:
        doc = httpx.get(s.url + "/openapi.json").json()
        assert doc["info"]["x-replicate-model"] == "local/cogdir"
        assert doc["info"]["x-replicate-hardware"] == "cpu"
        server = s.server()
        group = [server] + server.children(recursive=True)
        workdir = s.log.parent
        assert workdir.exists()
    finally:
        s.stop()
    assert s.proc.returncode == 0
    assert any("stopped local/cogdir" in line for line in s.lines)
    gone = psutil.wait_procs(group, timeout=5)[1]
    assert not gone, f"left behind: {gone}"
    assert not workdir.exists()


def test_sigint_stops_cleanly():
    s = Serve(f"{PRED / 'echo.py'}:Predictor")
    server = s.server()
    group = [server] + server.children(recursive=True)
    s.proc.send_signal(signal.SIGINT)
    assert s.proc.wait(20) == 0
    assert not psutil.wait_procs(group, timeout=5)[1]
    with pytest.raises(httpx.HTTPError):
        httpx.get(s.url + "/health-check", timeout=1)


def test_bad_reference_is_a_clear_error():
    r = subprocess.run([sys.executable, "-m", "replicate_jupyter.serve.cli", "serve", str(PRED / "nope.py"), "--port", "0"],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 2
    assert "nope.py" in r.stderr and "Traceback" not in r.stderr


def test_console_script_is_installed():
    exe = pathlib.Path(sys.executable).parent / "replicate-jupyter"
    if not exe.exists():
        pytest.skip("package not installed as a console script in this environment")
    r = subprocess.run([str(exe), "serve", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--concurrency" in r.stdout and "--hardware" in r.stdout

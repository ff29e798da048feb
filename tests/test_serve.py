"""`replicate-jupyter serve`: a real coglet server per predictor, supervised."""
from __future__ import annotations

import json
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import httpx
import psutil
import pytest
from test_workers import PRED, ROOT, Serve, wait_for

import replicate_jupyter as rj
from replicate_jupyter.runners.workers import pool


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


# ----- Cog folders run as from their own folder ----------------------------------------------
COG = PRED / "cogfolders"


def _run_on_worker(s: Serve, model: str, inp: dict):
    P = pool()
    P.add(s.url)
    try:
        return rj.predictions.create(model, inp, on="workers").wait(60)
    finally:
        P.remove(s.url)


def test_hello_image_file_beside_predict_py_comes_back_whole():
    """replicate/cog-examples hello-image: `return Path("hello.webp")` read from the model's folder."""
    folder = COG / "hello-image"
    s = Serve(str(folder))
    try:
        assert any("[folder]" in line for line in s.lines)
        assert (folder / ".cog" / "openapi_schema.json").exists()
        p = _run_on_worker(s, "local/hello-image", {})
        assert p.status == "succeeded", p.error
        assert p.output.read() == (folder / "hello.webp").read_bytes()
    finally:
        s.stop()
    assert not (folder / ".cog").exists()  # what serve wrote into the folder is gone with it


def test_a_differing_schema_in_the_folder_is_left_alone(tmp_path):
    folder = tmp_path / "hello-image"
    shutil.copytree(COG / "hello-image", folder, ignore=shutil.ignore_patterns(".cog"))
    (folder / ".cog").mkdir()
    theirs = (folder / ".cog" / "openapi_schema.json")
    theirs.write_text('{"info": {"title": "from cog build"}}')
    s = Serve(str(folder))
    try:
        assert any("[mirror]" in line for line in s.lines)
        p = _run_on_worker(s, "local/hello-image", {})
        assert p.status == "succeeded" and p.output.read() == (folder / "hello.webp").read_bytes()
    finally:
        s.stop()
    assert theirs.read_text() == '{"info": {"title": "from cog build"}}'


def test_null_output_where_the_schema_promises_a_file_is_a_failure():
    s = Serve(str(COG / "null-output"))
    try:
        p = _run_on_worker(s, "local/null-output", {})
        assert p.status == "failed"
        assert "null" in p.error and "missing.webp" in p.error and "No such file" in p.error
        # the same through a raw client, sync and streamed
        r = httpx.post(s.url + "/predictions", json={"input": {}}, timeout=30).json()
        assert r["status"] == "failed" and "missing.webp" in r["error"]
    finally:
        s.stop()


def test_weights_by_relative_path_and_cog_yaml_environment_only(monkeypatch):
    folder = COG / "weights-env"
    env = {"REPLICATE_API_TOKEN": "r8_parent", "SOME_SERVICE_KEY": "k-parent", "MY_SECRET_THING": "s",
           "ANOTHER_TOKEN": "t", "LISTED_TOKEN": "listed-by-cog-yaml"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s = Serve(str(folder))
    try:
        r = httpx.post(s.url + "/predictions", json={"input": {"x": 5}}, timeout=30).json()
        assert r["status"] == "succeeded", r
        out = json.loads(r["output"])
        assert out["scaled"] == 15  # weights/scale.txt opened by relative path in setup
        assert out["cwd"] == str(folder)
        assert out["greeting"] == "hello from cog.yaml"
        assert out["listed_token"] == "listed-by-cog-yaml"  # listed in cog.yaml: passed on
        assert out["leaked"] == []
        for proc in [s.server()] + s.server().children(recursive=True):
            environ = pathlib.Path(f"/proc/{proc.pid}/environ").read_bytes().decode(errors="replace")
            assert "r8_parent" not in environ and "k-parent" not in environ
    finally:
        s.stop()


def test_serve_killed_with_sigkill_takes_coglet_with_it():
    s = Serve(f"{PRED / 'echo.py'}:Predictor")
    server = s.server()
    worker = s.predictor_process()
    assert server is not None and worker is not None
    s.proc.send_signal(signal.SIGKILL)
    s.proc.wait(10)
    gone, alive = psutil.wait_procs([server, worker], timeout=10)
    alive = [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"left running: {alive}"
    with pytest.raises(httpx.HTTPError):
        httpx.get(s.url + "/health-check", timeout=1)


def test_exit_with_stdin_stops_when_the_parent_goes():
    proc = subprocess.Popen([sys.executable, "-m", "replicate_jupyter.serve.cli", "serve", f"{PRED / 'echo.py'}:Predictor",
                             "--port", "0", "--exit-with-stdin"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "ready at" in line:
            break
    group = psutil.Process(proc.pid).children(recursive=True)
    assert group
    proc.stdin.close()
    assert proc.wait(30) == 0
    assert not [p for p in psutil.wait_procs(group, timeout=10)[1] if p.status() != psutil.STATUS_ZOMBIE]


def test_cog_yaml_environment_is_checked_as_cog_checks_it(tmp_path):
    folder = tmp_path / "reserved"
    shutil.copytree(COG / "echo", folder, ignore=shutil.ignore_patterns(".cog"))
    (folder / "cog.yaml").write_text('predict: "predict.py:Predictor"\nenvironment:\n  - PATH=/nowhere\n  - OK=1\n  - OK=2\n')
    r = subprocess.run([sys.executable, "-m", "replicate_jupyter.serve.cli", "serve", str(folder), "--port", "0"],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "'PATH' is not allowed" in r.stderr and "'OK' is already defined" in r.stderr


def test_a_dropped_stream_cancels_through_the_front():
    """coglet cancels a prediction whose stream drops; the front must pass the drop on."""
    s = Serve(str(COG / "tokens"))
    try:
        t0 = time.monotonic()
        with httpx.stream("POST", s.url + "/predictions", json={"input": {"n": 100, "delay": 0.05}},
                          headers={"Accept": "text/event-stream"}, timeout=30) as resp:
            outputs = 0
            for line in resp.iter_lines():
                outputs += line.startswith("event: output")
                if outputs == 3:
                    break  # leaving the block closes the connection mid-stream
        wait_for(lambda: "Cancelling prediction" in s.log.read_text(), 5)
        wait_for(lambda: httpx.get(s.url + "/health-check").json()["status"] == "READY", 5)
        assert time.monotonic() - t0 < 4  # the 5 s prediction did not run to its end
    finally:
        s.stop()


def test_which_outputs_may_be_null():
    from replicate_jupyter.serve.outputs import null_output_error, promises_value

    def schema(output):
        return {"components": {"schemas": {"Output": output, "Thing": {"type": "object", "properties": {}}}}}

    assert promises_value({}, {"type": "string", "format": "uri"})
    assert not promises_value({}, {"type": "string", "nullable": True})
    assert not promises_value({}, {"anyOf": [{"type": "string"}, {"type": "null"}]})
    assert not promises_value({}, {"title": "Output"})  # Any / returns None
    assert promises_value(schema({}), {"$ref": "#/components/schemas/Thing"})
    files = schema({"type": "array", "items": {"type": "string", "format": "uri"}})
    assert null_output_error(files, {"status": "succeeded", "output": ["a", "b"]}) is None
    assert "item 1 " in null_output_error(files, {"status": "succeeded", "output": ["a", None]})
    assert null_output_error(files, {"status": "failed", "output": None}) is None
    assert null_output_error(schema({"title": "Output"}), {"status": "succeeded", "output": None}) is None

"""Fidelity of the remote path: one cog.yaml reader for the loader and serve, and the workers
runner against bare coglet servers (Cog's own server, no serve front in between).

The coglet servers are started here from a folder with `.cog/openapi_schema.json`, the way Cog
runs a built model, so what they do is coglet 0.23.1's own behaviour: a stream whose reader
falls behind is ended ("SSE stream lagged") and, when it created the prediction, cancels it;
a file output it cannot read comes back null under `succeeded`; an explicit null input is
refused even where the input is nullable.
"""
from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import httpx
import pytest

import replicate_jupyter as rj
from replicate_jupyter.errors import InputError
from replicate_jupyter.model import cogyaml
from replicate_jupyter.model import predictors as P
from replicate_jupyter.prediction.events import Output
from replicate_jupyter.runners.workers import pool
from replicate_jupyter.serve import folder as serve_folder

# ----- one cog.yaml reader -----------------------------------------------------------------------

ECHO = ("from cog import BasePredictor\n\n"
        "class Predictor(BasePredictor):\n    def predict(self, x: str = 'a') -> str:\n        return x\n")


def _cog_folder(tmp_path: pathlib.Path, yaml_text: str) -> pathlib.Path:
    (tmp_path / "predict.py").write_text(ECHO)
    (tmp_path / "cog.yaml").write_text(yaml_text)
    return tmp_path


@pytest.mark.parametrize("entries, rule, name", [
    (["OK=1", "OK=2"], "duplicate", "OK"),
    (["PATH=/nowhere"], "reserved", "PATH"),
    (["CUDA_VISIBLE_DEVICES=0"], "reserved", "CUDA_VISIBLE_DEVICES"),
    (["REPLICATE_API_TOKEN=r8_x"], "reserved", "REPLICATE_API_TOKEN"),
    (["PYTHONUNBUFFERED=1"], "reserved", "PYTHONUNBUFFERED"),
    (["NO_EQUALS"], "format", "NO_EQUALS"),
])
def test_the_loader_refuses_what_cog_refuses_naming_the_variable(tmp_path, entries, rule, name):
    body = "".join(f"  - {e}\n" for e in entries)
    folder = _cog_folder(tmp_path, f'predict: "predict.py:Predictor"\nenvironment:\n{body}')
    for load in (lambda: P.load(str(folder)), lambda: serve_folder.find_folder(str(folder))):
        with pytest.raises(InputError) as err:
            load()
        problem = err.value.problems[0]
        assert (problem.field, problem.rule, problem.value) == ("cog.yaml environment", rule, name)
        assert repr(name) in str(err.value)


def test_cog_accepts_what_it_accepts(tmp_path):
    """Cog's own parse cases (pkg/config/env_variables_test.go): lower case, `=` and spaces in
    values, empty values."""
    entries = ["name=VALUE", "MiXeD_Case=VALUE WITH SPACES", "EQ=a=b", "EMPTY=", "QUOTED=\"x y\""]
    assert cogyaml.parse_environment(entries) == {"name": "VALUE", "MiXeD_Case": "VALUE WITH SPACES", "EQ": "a=b",
                                                  "EMPTY": "", "QUOTED": '"x y"'}
    with pytest.raises(InputError, match="list of KEY=VALUE"):
        cogyaml.parse_environment({"A": "1"})  # a mapping is not Cog's format


def test_expansion_as_cogs_env_lines_expand(tmp_path):
    folder = _cog_folder(tmp_path, """predict: "predict.py:Predictor"
environment:
  - SOME_DIR=/src/example
  - ANOTHER_DIR=$SOME_DIR/weights
  - BRACED=${SOME_DIR}/x
  - DEFAULTED=${UNSET_HERE:-fallback}
  - ALT=${SOME_DIR:+set}
  - ALT_UNSET=${UNSET_HERE:+set}
  - FROM_PARENT=$HOME_LIKE
  - LITERAL=\\$SOME_DIR
  - LATER=$DEFINED_BELOW
  - DEFINED_BELOW=x
""")
    found = serve_folder.find_folder(str(folder))
    env = serve_folder.model_environment(found, {"HOME_LIKE": "/home/u", "KEEP": "1"})
    assert env["ANOTHER_DIR"] == "/src/example/weights" and env["BRACED"] == "/src/example/x"
    assert env["DEFAULTED"] == "fallback" and env["ALT"] == "set" and env["ALT_UNSET"] == ""
    assert env["FROM_PARENT"] == "/home/u" and env["LITERAL"] == "$SOME_DIR"
    assert env["LATER"] == "" and env["KEEP"] == "1"  # order is significant; the parent stays
    # the loader reads the same entries, as written
    assert P.load(str(folder)).environment == dict(found.environment)


def test_build_environment_as_later_cog_writes_it(tmp_path):
    folder = _cog_folder(tmp_path, 'predict: "predict.py:Predictor"\nbuild:\n  environment:\n    - A=1\n')
    assert P.load(str(folder)).environment == {"A": "1"}
    assert serve_folder.model_environment(serve_folder.find_folder(str(folder)), {})["A"] == "1"
    (folder / "cog.yaml").write_text('predict: "predict.py:Predictor"\nenvironment:\n  - A=1\nbuild:\n  environment:\n'
                                     '    - A=2\n')
    with pytest.raises(InputError, match="both"):
        P.load(str(folder))


# ----- bare coglet servers ------------------------------------------------------------------------

TOKENS = '''
from cog import BasePredictor, ConcatenateIterator, Input


class Predictor(BasePredictor):
    def predict(self, n: int = Input(default=3), size: int = Input(default=1)) -> ConcatenateIterator[str]:
        for i in range(n):
            print(f"token {i}")
            yield f"<{i}>" + "x" * size
'''

FILES = '''
from cog import BasePredictor, Input, Path


class Predictor(BasePredictor):
    def predict(self, missing: bool = Input(default=True), note: str | None = None) -> Path:
        if missing:
            return Path("missing.webp")
        Path("present.txt").write_text(f"note={note}")
        return Path("present.txt")
'''


class Coglet:
    """`python -m cog.server.http` from a model folder, as Cog runs a built image (no front)."""

    def __init__(self, folder: pathlib.Path, source: str, model: str, streaming: bool) -> None:
        from replicate_jupyter.model.schema import build_schema

        (folder / "predict.py").write_text(source)
        schema = json.loads(json.dumps(build_schema(P.load(str(folder / "predict.py")).cls, name=model)))
        if streaming:
            schema["paths"]["/predictions"]["post"]["x-cog-streaming"] = True
        (folder / ".cog").mkdir()
        (folder / ".cog" / "openapi_schema.json").write_text(json.dumps(schema))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.log = folder / "coglet.log"
        env = dict(os.environ, PORT=str(port), COG_PREDICT_TYPE_STUB="predict.py:Predictor",
                   PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
        self.proc = subprocess.Popen([sys.executable, "-m", "cog.server.http", "--host", "127.0.0.1"], cwd=folder,
                                     env=env, stdout=self.log.open("wb"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(self.url + "/health-check", timeout=1).json().get("status") == "READY":
                    break
            except (httpx.HTTPError, ValueError):
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError("coglet did not become ready:\n" + self.log.read_text(errors="replace")[-3000:])
            time.sleep(0.1)
        pool().add(self.url)

    def stop(self) -> None:
        try:
            pool().remove(self.url)
        except KeyError:
            pass
        try:
            os.killpg(self.proc.pid, 9)
        except ProcessLookupError:
            pass
        self.proc.wait(10)


@pytest.fixture(scope="module")
def bare(tmp_path_factory):
    servers = {"tokens": Coglet(tmp_path_factory.mktemp("tokens"), TOKENS, "bare/tokens", streaming=True),
               "files": Coglet(tmp_path_factory.mktemp("files"), FILES, "bare/files", streaming=True)}
    try:
        yield servers
    finally:
        for s in servers.values():
            s.stop()


def test_a_stream_that_lags_is_filled_in_from_the_final_state(bare):
    """A reader that falls ~4 MB and 1,024 events behind: coglet ends its stream ("SSE stream
    lagged", N skipped). The prediction goes on (it was created by its own request) and the
    2,000 items and their logs come back exact, in order, each once."""
    n, size = 2000, 8192
    p = rj.predictions.create("bare/tokens", {"n": n, "size": size}, on="workers")
    slept = []

    def slow_listener(_p, e) -> None:  # a display that stalls once, on a loaded machine
        if isinstance(e, Output) and not slept:
            slept.append(e.index)
            time.sleep(3.0)

    p.subscribe(slow_listener)
    p.wait(120)
    assert p.status == "succeeded", p.error
    assert slept, "the listener never ran"
    assert "SSE prediction stream receiver lagged" in bare["tokens"].log.read_text(errors="replace")
    assert f"[replicate-jupyter] stream from {bare['tokens'].url} " in p.logs  # said, not hidden
    assert len(p.output) == n and p.output == [f"<{i}>" + "x" * size for i in range(n)]
    lines = [line for line in p.logs.splitlines() if line.startswith("token ")]
    assert lines == [f"token {i}" for i in range(n)]


def test_a_quick_stream_is_exact_with_its_logs(bare):
    p = rj.predictions.create("bare/tokens", {"n": 5}, on="workers").wait(30)
    assert p.status == "succeeded" and p.output == [f"<{i}>x" for i in range(5)]
    assert [line for line in p.logs.splitlines() if line.startswith("token")] == [f"token {i}" for i in range(5)]
    assert "[replicate-jupyter]" not in p.logs  # nothing went wrong, nothing said


@pytest.mark.parametrize("streaming", [True, False])
def test_a_null_output_where_a_file_is_promised_is_a_failure(bare, streaming):
    """coglet says `succeeded` with output null for a file output it could not read; not behind
    serve's front, the runner itself fails it, naming the cause (both ways it talks to a worker)."""
    w = pool()._workers[bare["files"].url]
    saved = w.schema
    if not streaming:
        w.schema = dict(saved, paths={})  # a worker without x-cog-streaming: one blocking PUT
    try:
        p = rj.predictions.create("bare/files", {"missing": True}, on="workers").wait(30)
    finally:
        w.schema = saved
    assert p.status == "failed"
    assert "null" in p.error and "a file" in p.error and bare["files"].url in p.error
    assert p.output is None


def test_an_explicit_null_input_is_left_out(bare):
    """coglet 0.23.1 answers 422 to `"note": null` although `note: str | None = None`."""
    raw = httpx.post(bare["files"].url + "/predictions", json={"input": {"missing": False, "note": None}}, timeout=30)
    assert raw.status_code == 422  # what a runner sending the null would get
    out = rj.run("bare/files", {"missing": False, "note": None}, on="workers")
    assert out.read() == b"note=None"

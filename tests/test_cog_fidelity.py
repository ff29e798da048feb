"""Cog fidelity, the model side: the cog-examples models load, type and run as under Cog 0.23.

The predictors in tests/predictors/cog_examples mirror replicate/cog-examples (nothing is fetched).
`run_as_cog` does what a runner does for one prediction, with the model layer's own parts only:
`spec.make()`, `setup(**spec.setup_kwargs(...))` (awaited when async), `call_arguments`, and the
call inside `scope_for` — in the model's folder, as Cog runs it. Metrics are also checked
against a real coglet server running the same predictor.
"""
from __future__ import annotations

import asyncio
import gc
import inspect
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys
import threading
import time
import warnings

import cog
import httpx
import pytest
from PIL import Image

from replicate_jupyter.model import predictors as P
from replicate_jupyter.model.arguments import call_arguments
from replicate_jupyter.model.cogyaml import MissingPackageWarning
from replicate_jupyter.model.scope import scope_for
from replicate_jupyter.model.validation import validate
from replicate_jupyter.prediction.events import Metric
from replicate_jupyter.prediction.files import InputFile

EXAMPLES = pathlib.Path(__file__).parent / "predictors" / "cog_examples"


def _drain(result):
    if inspect.iscoroutine(result):
        return asyncio.run(result)
    if inspect.isasyncgen(result):
        async def collect():
            return [x async for x in result]
        return asyncio.run(collect())
    if inspect.isgenerator(result):
        return list(result)
    return result


def run_as_cog(spec, inputs=None, context=None, instance=None):
    """(output, events) of one prediction, run the way a runner runs it."""
    events = []
    cwd = os.getcwd()
    try:
        if spec.folder is not None:
            os.chdir(spec.folder)
        if instance is None:
            instance = spec.make()
            setup = getattr(instance, "setup", None)
            if setup is not None:
                _drain(setup(**spec.setup_kwargs(instance)))
        call = P.predict_method(instance)
        # held until the call is over, as a runner holds p.input: a file input's copy for the
        # predictor (InputFile.as_path) is removed with its InputFile (prediction/files.py)
        given = validate(spec.schema, inputs or {})
        kwargs = call_arguments(call, given)
        with scope_for(events.append, context):
            out = _drain(call(**kwargs))
        del given
        if isinstance(out, os.PathLike):  # read a file output where the model ran
            out = pathlib.Path(out).read_bytes()
        return out, events
    finally:
        os.chdir(cwd)


# ---------------------------------------------------------------------------------- the examples


def test_hello_world():
    spec = P.load(str(EXAMPLES / "hello_world"))
    assert spec.folder == EXAMPLES / "hello_world" and spec.target == "predict.py:Predictor"
    assert spec.name == "local/hello-world" and spec.key.endswith(f"@{spec.version}:Predictor")
    inp = spec.schema["components"]["schemas"]["Input"]
    assert inp == {"type": "object", "title": "Input", "required": ["text"], "properties": {"text": {
        "type": "string", "title": "Text", "x-order": 0, "description": "Text to prefix with 'hello '"}}}
    assert run_as_cog(spec, {"text": "world"})[0] == "hello world"


def test_canary_streams_a_concatenate_iterator():
    spec = P.load(str(EXAMPLES / "canary"))
    assert spec.schema["components"]["schemas"]["Output"] == {
        "title": "Output", "type": "array", "items": {"type": "string"}, "x-cog-array-type": "iterator",
        "x-cog-array-display": "concatenate"}
    assert "".join(run_as_cog(spec, {"text": "world"})[0]) == "hello there, world"


def test_blur_path_in_path_out(tmp_path):
    src = tmp_path / "in.png"
    img = Image.new("RGB", (24, 24), (0, 0, 0))
    img.paste((255, 255, 255), (8, 8, 16, 16))
    img.save(src)
    spec = P.load(str(EXAMPLES / "blur"))
    props = spec.schema["components"]["schemas"]["Input"]["properties"]
    assert props["image"] == {"type": "string", "format": "uri", "title": "Image", "x-order": 0, "description": "Input image"}
    assert props["blur"] == {"type": "number", "title": "Blur", "default": 5.0, "x-order": 1, "description": "Blur radius"}
    out, _ = run_as_cog(spec, {"image": str(src), "blur": 2})
    blurred = Image.open(io.BytesIO(out))
    assert blurred.size == (24, 24) and 0 < blurred.getpixel((7, 12))[0] < 255  # the edge is soft now


def test_hello_image_reads_its_own_folder(tmp_path):
    spec = P.load(str(EXAMPLES / "hello_image"))
    assert spec.schema["components"]["schemas"]["Output"] == {"title": "Output", "type": "string", "format": "uri"}
    elsewhere = os.getcwd()
    out, _ = run_as_cog(spec)
    assert out == (EXAMPLES / "hello_image" / "hello.webp").read_bytes()
    assert os.getcwd() == elsewhere


def test_hello_context_function_target():
    spec = P.load(str(EXAMPLES / "hello_context"))
    assert spec.target == "predict.py:run" and spec.function is not None and spec.function.__name__ == "run"
    assert spec.source.endswith("hello_context/predict.py:run")
    assert spec.schema["components"]["schemas"]["Input"]["properties"]["name"]["default"] == "world"
    out, events = run_as_cog(spec, {"name": "Ada"}, context={"user": "u1", "team": "t"})
    assert out == "hello Ada, from u1 (2 context keys)"
    assert [e for e in events if isinstance(e, Metric)] == [Metric(name="greetings", value=1)]
    assert run_as_cog(spec)[0] == "hello world, from nobody (0 context keys)"


def test_hello_train_setup_weights(tmp_path, monkeypatch):
    spec = P.load(str(EXAMPLES / "hello_train"))
    monkeypatch.delenv("COG_WEIGHTS", raising=False)
    assert run_as_cog(spec, {"text": "x"})[0] == "hello x"
    weights = tmp_path / "weights.txt"
    weights.write_text("howdy")
    monkeypatch.setenv("COG_WEIGHTS", str(weights))  # as Cog: COG_WEIGHTS reaches setup(weights=)
    instance = spec.make()
    kw = spec.setup_kwargs(instance)
    assert isinstance(kw["weights"], cog.Path) and kw["weights"] == weights
    monkeypatch.delenv("COG_WEIGHTS")
    given = P.load(str(EXAMPLES / "hello_train"))
    given.weights = str(weights)  # a user-given path wins
    assert run_as_cog(given, {"text": "x"})[0] == "howdy x"


def test_notebook_sibling_import():
    spec = P.load(str(EXAMPLES / "notebook"))
    assert [f.name for f in spec.files] == ["predict.py", "my_notebook.py", "cog.yaml"]
    assert run_as_cog(spec, {"name": "Ada"})[0] == "hello, Ada"


def test_hello_concurrency_async_metrics_and_packages():
    ref = str(EXAMPLES / "hello_concurrency")
    P.register("test/hello-concurrency", ref)  # a fresh load, so its package check runs here
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        spec = P.load("test/hello-concurrency")
    named = [str(w.message) for w in caught if issubclass(w.category, MissingPackageWarning)]
    assert any("'opentelemetry-api', which is not installed" in m for m in named), named
    assert spec.missing_packages == ["'opentelemetry-api', which is not installed",
                                     "'opentelemetry-sdk', which is not installed"]
    assert spec.concurrency == 4
    out, events = run_as_cog(spec, {"total": 3, "interval": 0})
    assert "".join(out) == "Apple\nBanana\nOrange"
    assert [(e.name, e.value) for e in events if isinstance(e, Metric)] == [("output_tokens", 3), ("output_tokens", 3)]


def test_concurrent_decorator_sets_concurrency(tmp_path):
    (tmp_path / "predict.py").write_text(
        "import cog\nfrom cog import BaseRunner\n\nclass Runner(BaseRunner):\n"
        "    @cog.concurrent(max=3)\n    async def run(self, n: int = 1) -> int:\n        return n\n")
    spec = P.load(str(tmp_path / "predict.py"))
    assert spec.concurrency == 3 and spec.cls.__name__ == "Runner" and spec.folder == tmp_path


def test_environment_from_cog_yaml(tmp_path):
    (tmp_path / "cog.yaml").write_text('run: "run.py:Runner"\nenvironment:\n  - NAME=michael\n  - TEST_VAR=a=b\n')
    (tmp_path / "run.py").write_text("from cog import BaseRunner\nimport os\n\nclass Runner(BaseRunner):\n"
                                     "    def run(self, name: str) -> str:\n        return str(os.getenv(name))\n")
    spec = P.load(str(tmp_path))
    assert spec.environment == {"NAME": "michael", "TEST_VAR": "a=b"}
    assert "NAME" not in os.environ  # applied by the runner to the model only, never here


# ---------------------------------------------------------------------------------- edit → rerun


def test_three_edits_three_outputs(tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(EXAMPLES / "notebook", folder)
    seen = []
    for word in ("hello", "bonjour", "hola"):
        (folder / "my_notebook.py").write_text(f"def say_hello(name):\n    return '{word}, ' + name\n")
        spec = P.load(str(folder))
        seen.append((spec, run_as_cog(spec, {"name": "Ada"})[0]))
    assert [out for _, out in seen] == ["hello, Ada", "bonjour, Ada", "hola, Ada"]
    specs = [s for s, _ in seen]
    assert len({s.version for s in specs}) == 3 and len({s.key for s in specs}) == 3
    assert len({id(s.cls) for s in specs}) == 3
    assert specs[1].replaces == specs[0].key and specs[2].replaces == specs[1].key
    os.utime(folder / "predict.py")  # touched, not changed: the same spec
    assert P.load(str(folder)) is specs[2]
    (folder / "predict.py").write_text((folder / "predict.py").read_text().replace("say_hello(name)", "say_hello(name.upper())"))
    assert run_as_cog(P.load(str(folder)), {"name": "Ada"})[0] == "hola, ADA"


def test_sibling_modules_stay_apart(tmp_path):
    for word in ("one", "two"):
        (tmp_path / word).mkdir()
        (tmp_path / word / "helper.py").write_text(f"WORD = {word!r}\n")
        (tmp_path / word / "predict.py").write_text(
            "from cog import BasePredictor\nimport helper\n\nclass Predictor(BasePredictor):\n"
            "    def predict(self) -> str:\n        return helper.WORD\n")
    mine = type(sys)("helper")  # the notebook's own `helper` module
    sys.modules["helper"] = mine
    try:
        outs = [run_as_cog(P.load(str(tmp_path / w / "predict.py")))[0] for w in ("one", "two")]
        assert outs == ["one", "two"] and sys.modules["helper"] is mine
    finally:
        sys.modules.pop("helper", None)


def test_register_replaces_and_objects_are_held_weakly():
    class A(cog.BasePredictor):
        def predict(self) -> str:
            return "a"

    class B(cog.BasePredictor):
        def predict(self) -> str:
            return "b"

    P.register("test/swap", A)
    assert P.load("test/swap").cls is A
    P.register("test/swap", B)
    assert P.load("test/swap").cls is B
    obj = A()
    spec = P.load(obj)
    assert spec.make() is obj and P.load(obj) is spec
    del obj
    gc.collect()
    assert spec.instance is None  # neither the spec nor the cache kept it alive
    with pytest.raises(ReferenceError, match="no longer exists"):
        spec.make()
    temporary = P.load(B())  # a temporary survives until it is made (set up by a runner)
    gc.collect()
    assert temporary.make().predict() == "b"


def test_function_handed_in():
    def shout(text: str = cog.Input(default="hi")) -> str:
        return text.upper()

    spec = P.load(shout)
    assert spec.function is shout and run_as_cog(spec, {"text": "yo"})[0] == "YO"


# ---------------------------------------------------------------------------------- inputs as Cog passes them


def test_file_path_secret_arguments(tmp_path):
    class Files(cog.BasePredictor):
        def predict(self, doc: cog.File, docs: list[cog.File], maybe: cog.File | None = None,
                    image: cog.Path = cog.Input(default=None), key: cog.Secret = cog.Input(default=None)) -> str:
            return ""

    call = Files().predict
    given = validate(P.load(Files).schema, {"doc": b"one", "docs": [b"two", b"three"], "image": b"\x89PNG..",
                                            "key": "sk-1"})
    kw = call_arguments(call, given)
    assert kw["doc"].read() == b"one" and kw["doc"].name == "input"
    assert [f.read() for f in kw["docs"]] == [b"two", b"three"]
    assert kw["maybe"] is None
    assert isinstance(kw["image"], cog.Path) and kw["image"].read_bytes() == b"\x89PNG.."
    assert isinstance(kw["key"], cog.Secret) and kw["key"].get_secret_value() == "sk-1"
    assert call_arguments(call, {"doc": InputFile(b"x", name="a.txt"), "docs": []})["image"] is None


# ---------------------------------------------------------------------------------- metrics


def test_scope_metrics_modes_paths_and_shims():
    class M(cog.BaseRunner):
        def run(self) -> str:
            scope = cog.current_scope()
            scope.record_metric("temperature", 0.7)
            scope.record_metric("token_count", 1, mode="incr")
            scope.record_metric("token_count", 2, mode="incr")
            scope.record_metric("tags", "fast", mode="append")
            scope.record_metric("tags", "cached", mode="append")
            scope.record_metric("timing.preprocess", 0.1)
            scope.metrics["dict_metric"] = "hello"
            self.record_metric("via_self", 1)
            self.scope.metrics["gone"] = 1
            del self.scope.metrics["gone"]
            cog.emit_metric("emitted", 9)
            with pytest.raises(TypeError, match="Metric 'temperature' has type float, cannot set to str"):
                scope.record_metric("temperature", "hot")
            return "ok"

    events = []
    with scope_for(events.append) as scope:
        assert M().run() == "ok"
    final = {"temperature": 0.7, "token_count": 3, "tags": ["fast", "cached"], "timing": {"preprocess": 0.1},
             "dict_metric": "hello", "via_self": 1, "emitted": 9}
    assert scope.snapshot() == final
    last = {}
    for e in events:
        last[e.name] = e.value
    assert {k: v for k, v in last.items() if v is not None} == final  # metrics[name] = value ends right
    assert type(cog.current_scope()).__module__ != "replicate_jupyter.model.scope"  # outside: coglet's own


@pytest.mark.parametrize("name, message", [
    ("_invalid", "metric name segment '_invalid' must start with a letter"),
    ("foo__bar", "metric name segment 'foo__bar' must not contain consecutive underscores"),
    ("invalid_", "metric name segment 'invalid_' must end with a letter or digit"),
    (".invalid", "metric name must not start with a dot"),
    ("foo..bar", "metric name must not contain empty segments (consecutive dots)"),
    ("predict_time", "'predict_time' is reserved by the runtime"),
    ("cog.system", "the 'cog.' prefix is reserved for system metrics"),
    ("a.b.c.d.e", "metric name must have at most 4 dot-separated segments (got 5)"),
    ("a" * 129, "metric name must be 128 characters or fewer (got 129 characters)"),
    ("a-b", "metric name segment 'a-b' contains invalid character '-'"),
])
def test_metric_name_rules_as_coglet(name, message):
    """coglet 0.23.1's messages, as measured from a real coglet server."""
    with scope_for(None):
        with pytest.raises(ValueError) as info:
            cog.current_scope().record_metric(name, 1)
    assert str(info.value) == message


def test_scope_reaches_coroutines_threads_and_stays_per_prediction():
    loop = asyncio.new_event_loop()
    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    try:
        async def coro(tag):
            await asyncio.sleep(0.01)
            cog.current_scope().record_metric("tag", tag)

        def predict(tag, out):
            with scope_for(None) as scope:
                asyncio.run_coroutine_threadsafe(coro(tag), loop).result(5)  # as the local runner awaits
                out[tag] = scope.snapshot()

        out: dict = {}
        workers = [threading.Thread(target=predict, args=(tag, out)) for tag in ("a", "b")]
        for w in workers:
            w.start()
        for w in workers:
            w.join(5)
        assert out == {"a": {"tag": "a"}, "b": {"tag": "b"}}
        with scope_for(None) as scope:  # a thread the predictor starts, while it is the only one running
            helper = threading.Thread(target=lambda: cog.current_scope().record_metric("from_thread", True))
            helper.start()
            helper.join(5)
        assert scope.snapshot() == {"from_thread": True}
    finally:
        loop.call_soon_threadsafe(loop.stop)


METRICS_PREDICTOR = '''
from cog import BasePredictor, current_scope


class Predictor(BasePredictor):
    def predict(self) -> str:
        scope = current_scope()
        scope.record_metric("temperature", 0.7)
        scope.record_metric("token_count", 1, mode="incr")
        scope.record_metric("token_count", 2, mode="incr")
        scope.record_metric("tags", "fast", mode="append")
        scope.record_metric("tags", "cached", mode="append")
        scope.record_metric("n", 1)
        scope.record_metric("n", 2, mode="append")
        scope.record_metric("timing.preprocess", 0.1)
        scope.record_metric("r.a.b", 1)
        scope.record_metric("r.a.c", 2, mode="incr")
        scope.metrics.delete("r.a.b")
        scope.record_metric("p.x", 1)
        scope.record_metric("p", 3)
        scope.record_metric("p.y", 1)
        scope.metrics["dict_metric"] = "hello"
        return ",".join(sorted(scope.context))
'''


def test_metrics_match_a_real_coglet(tmp_path):
    """The same predictor under coglet (Cog's own server) and in process: the same metrics."""
    from replicate_jupyter.model.schema import build_schema

    (tmp_path / "predict.py").write_text(METRICS_PREDICTOR)
    spec = P.load(str(tmp_path / "predict.py"))
    ours, _ = run_as_cog(spec, context={"b": "2", "a": "1"})
    (tmp_path / ".cog").mkdir()
    (tmp_path / ".cog" / "openapi_schema.json").write_text(json.dumps(build_schema(spec.cls)))
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PORT=str(port), COG_PREDICT_TYPE_STUB="predict.py:Predictor",
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "cog.server.http", "--host", "127.0.0.1"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/health-check", timeout=1).json().get("status") == "READY":
                    break
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.1)
        body = httpx.post(url + "/predictions", json={"input": {}, "context": {"a": "1", "b": "2"}}, timeout=30).json()
    finally:
        os.killpg(proc.pid, 9)
        proc.wait(10)
    assert body["status"] == "succeeded" and body["output"] == ours == "a,b"
    theirs = {k: v for k, v in body["metrics"].items() if k != "predict_time"}
    with scope_for(None) as scope:
        P.predict_method(spec.make())()
    assert theirs["token_count"] == 3 and theirs["p"] == {"y": 1}  # not vacuous: coglet answered
    assert scope.snapshot() == theirs

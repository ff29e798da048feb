"""More of replicate-python 1.0.7's surface, side by side with the real client against the
project's Replicate-API server (tests/fake_replicate.py), as test_replicate_compat.py does:
`replicate.exceptions` and `ReplicateError`, a bare version id, `Model`/`Version` objects as
`run`'s reference, `predictions.list()` newest first, `Client(headers=, transport=)`, and a list
of files shown as a cell's value (a real kernel).
"""
from __future__ import annotations

import copy
import json
import pickle
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import httpx
import pytest
import test_replicate_compat as compat

import replicate_jupyter as rj
from replicate_jupyter.errors import BackendError, ModelNotFound, PredictionNotFound, ReplicateJupyterError
from replicate_jupyter.runners.replicate import routing
from replicate_jupyter.session import session

replicate_python = pytest.importorskip("replicate")

TOKEN = compat.TOKEN
fake = compat.fake  # the fixtures of test_replicate_compat: the fake server, both clients pointed at it
env = compat.env


def raised(fn: Any) -> BaseException:
    try:
        fn()
    except BaseException as exc:  # noqa: BLE001 — the error is what is compared
        return exc
    raise AssertionError("no error raised")


# ----- 1. replicate.exceptions ----------------------------------------------------------------
def test_the_exceptions_module_names_replicate_pythons_errors():
    from replicate_jupyter.exceptions import ModelError, ReplicateError, ReplicateException

    assert rj.exceptions.ReplicateError is ReplicateError is rj.ReplicateError
    assert ModelError is rj.ModelError and ReplicateException is ReplicateJupyterError
    assert issubclass(ModelError, ReplicateException) and issubclass(ReplicateError, ReplicateException)
    from replicate_jupyter.helpers import FileOutput

    assert rj.helpers.FileOutput is FileOutput is rj.FileOutput
    # built as replicate-python builds it, it reads and lists its fields as replicate-python's does
    kw = {"title": "Unauthenticated", "status": 401, "detail": "bad token"}
    ours, theirs = ReplicateError(**kw), replicate_python.exceptions.ReplicateError(**kw)
    assert str(ours) == str(theirs) and ours.to_dict() == theirs.to_dict()
    back = pickle.loads(pickle.dumps(ours))
    assert back.to_dict() == ours.to_dict()


def test_api_errors_are_replicate_errors_with_their_problem_fields(env):
    from replicate_jupyter.exceptions import ReplicateError

    cases = {
        "unknown model": lambda r: r.run("nobody/nothing", input={"prompt": "x"}),
        "bad token": lambda r: (rj.Client if r is rj else replicate_python.Client)(
            api_token="r8_wrong_token_xxxxxxxxxxxxxxxxxxxx", base_url=env.root).run(
            "black-forest-labs/flux-schnell", input={"prompt": "x"}),
        "unknown prediction": lambda r: r.predictions.get("zzzzzzzzzzzzzzzzzzzzzzzzzz"),
    }
    for what, call in cases.items():
        # theirs on a fresh client: the fake leaves a refused POST's body unread on a kept-alive
        # connection, which garbles that connection's next request (a 501)
        fresh = replicate_python.Client(api_token=TOKEN, base_url=env.root)
        ours, theirs = raised(lambda: call(rj)), raised(lambda: call(fresh))  # noqa: B023
        assert isinstance(theirs, replicate_python.exceptions.ReplicateError), what
        assert isinstance(ours, ReplicateError), f"{what}: {type(ours).__name__}"
        assert ours.status == theirs.status, what
        assert isinstance(ours.title, str) and isinstance(ours.detail, str) and ours.detail, what
        assert ours.type is None and ours.instance is None and TOKEN not in str(ours)
    # still the errors of our own tree, as before
    missing = raised(lambda: cases["unknown model"](rj))
    assert isinstance(missing, ModelNotFound) and isinstance(missing, LookupError) and missing.backend == "replicate"
    back = pickle.loads(pickle.dumps(missing))
    assert type(back) is type(missing) and str(back) == str(missing) and back.status == 404
    gone = raised(lambda: rj.predictions.get("zzzzzzzzzzzzzzzzzzzzzzzzzz"))
    assert isinstance(gone, PredictionNotFound) and isinstance(gone, KeyError)
    assert isinstance(raised(lambda: cases["bad token"](rj)), BackendError)
    # on every backend: code written for Replicate's 404 keeps catching it
    local = ModelNotFound("acme/none", backend="local")
    assert isinstance(local, ReplicateError) and local.status == 404 and type(local).__name__ == "ModelNotFound"


def test_model_error_reads_as_the_models_error(env):
    ours = raised(lambda: rj.run("acme/fail", input={"text": "x"}))
    theirs = raised(lambda: replicate_python.run("acme/fail", input={"text": "x"}))
    assert isinstance(ours, rj.exceptions.ModelError)
    assert str(ours) == str(theirs) == "model exploded on 'x'"
    assert ours.prediction.model == "acme/fail" and ours.prediction.status == "failed"


# ----- 2. a bare version id -------------------------------------------------------------------
def test_a_bare_version_id_goes_to_replicate(env):
    vid = env.models["kvfrans/clipdraw"].version
    ours = rj.predictions.create(version=vid, input={"prompt": "x"})
    theirs = replicate_python.predictions.create(version=vid, input={"prompt": "x"})
    ours.wait(30)
    theirs.wait()
    assert ours.status == theirs.status == "succeeded"
    assert ours.backend == "replicate" and ours.version == vid and ours.remote_id
    assert str(rj.run(vid, input={"prompt": "y"})).startswith(env.root + "/delivery/")  # run takes it too


def test_a_bare_version_id_without_a_token_says_a_token_is_needed(env, monkeypatch):
    from replicate_jupyter.runners.replicate import token as tokens

    monkeypatch.delenv("REPLICATE_API_TOKEN")
    monkeypatch.setattr(tokens, "configured", lambda *a, **k: False)  # nor a kernel login
    err = raised(lambda: rj.predictions.create(version="ab" * 32, input={"prompt": "x"}))
    assert isinstance(err, BackendError) and not isinstance(err, ModelNotFound)
    assert "token" in str(err) and "%replicate login" in str(err) and "local" not in str(err)
    rj.backend("local")  # a backend the user chose: a call goes there, as every call does
    assert isinstance(raised(lambda: rj.run("ab" * 32, input={})), ModelNotFound)


# ----- 3. Model and Version objects as the reference ---------------------------------------------
def test_run_stream_and_async_run_take_model_and_version_objects(env):
    import asyncio

    model = rj.models.get("kvfrans/clipdraw")
    version = model.versions.get(model.latest_version.id)
    theirs_model = replicate_python.models.get("kvfrans/clipdraw")
    refs = {"Model": model, "Version": version, "latest_version": model.latest_version,
            "their Model": theirs_model, "their Version": theirs_model.latest_version}
    for what, ref in refs.items():
        out = rj.run(ref, input={"prompt": "x"})
        assert str(out).startswith(env.root + "/delivery/"), what
        p = rj.predictions.list()[0]
        assert p.model == "kvfrans/clipdraw" and p.backend == "replicate", what
        if what != "Model":
            assert p.version == version.id, what
    theirs_version = theirs_model.versions.get(theirs_model.latest_version.id)
    for ref in (theirs_model, theirs_version, theirs_model.latest_version):  # as replicate-python runs its own
        assert replicate_python.run(ref, input={"prompt": "x"})
    events = list(rj.stream(version, input={"prompt": "x"}))
    assert [e.event for e in events][-1] == "done"
    assert str(asyncio.run(rj.async_run(model, input={"prompt": "x"}))).startswith(env.root + "/delivery/")
    assert rj.schema(model) == rj.schema("kvfrans/clipdraw")


# ----- 9. predictions.list() newest first ------------------------------------------------------
def test_predictions_list_is_newest_first_as_replicates(env):
    c = rj.Client(api_token=TOKEN, base_url=env.root)
    theirs = replicate_python.Client(api_token=TOKEN, base_url=env.root)
    for client in (rj, theirs):
        for word in ("first", "second"):
            client.run("kvfrans/clipdraw", input={"prompt": word})
    assert [p.input["prompt"] for p in theirs.predictions.list().results[:2]] == ["second", "first"]
    assert [p.input["prompt"] for p in rj.predictions.list().results[:2]] == ["second", "first"]
    assert [p.input["prompt"] for p in c.predictions.list().results[:2]] == ["second", "first"]  # Replicate's


# ----- 11. Client(headers=, transport=) --------------------------------------------------------
@pytest.fixture
def header_server() -> Iterator[tuple[str, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            seen.append({k.lower(): v for k, v in self.headers.items()})
            body = json.dumps({"title": "Not found", "detail": "Not found.", "status": 404}).encode()
            self.send_response(404)
            self.send_header("Content-Type", "application/problem+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_port}", seen
    finally:
        srv.shutdown()
        srv.server_close()


def test_client_headers_go_with_every_request(header_server):
    url, seen = header_server
    headers = {"User-Agent": "my-app/1.0", "X-Custom": "yes"}
    for module in (rj, replicate_python):
        client = module.Client(api_token="r8_HeaderTestToken000000000000000000", base_url=url, headers=dict(headers))
        raised(lambda: client.models.get("acme/thing"))  # noqa: B023
    ours, theirs = seen[0], seen[-1]
    assert ours["user-agent"] == theirs["user-agent"] == "my-app/1.0"
    assert ours["x-custom"] == theirs["x-custom"] == "yes"
    assert ours["authorization"] == theirs["authorization"]
    lower = rj.Client(api_token="r8_HeaderTestToken000000000000000000", base_url=url, headers={"user-agent": "x/2"})
    raised(lambda: lower.models.get("acme/thing"))
    assert seen[-1]["user-agent"] == "x/2"  # one User-Agent, theirs, whatever its case
    err = raised(lambda: rj.Client(base_url=url, headers={"authorization": "Bearer r8_secret_in_headers_000000"}))
    assert isinstance(err, rj.InputError) and "api_token" in str(err) and "r8_secret" not in str(err)


def test_client_transport_carries_the_requests(header_server):
    url, seen = header_server

    class Counting(httpx.HTTPTransport):
        sent = 0

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            Counting.sent += 1
            return super().handle_request(request)

    client = rj.Client(api_token="r8_HeaderTestToken000000000000000000", base_url=url, transport=Counting())
    raised(lambda: client.models.get("acme/thing"))
    assert Counting.sent == len(seen) == 1


# ----- 6. a list of files as a cell's value ------------------------------------------------------
def test_a_list_of_files_is_a_list_to_user_code(env):
    ours = rj.run("black-forest-labs/flux-schnell", input={"prompt": "x", "num_outputs": 2})
    theirs = replicate_python.run("black-forest-labs/flux-schnell", input={"prompt": "x", "num_outputs": 2})
    assert isinstance(ours, list) and len(ours) == len(theirs) == 2
    plain = list(ours)
    assert ours == plain and repr(ours) == repr(plain) and ours[0] is plain[0] and ours[-1:] == plain[-1:]
    assert type(ours[:1]) is list and [x for x in ours] == plain
    assert [x.read() for x in ours] == [x.read() for x in theirs]
    urls = json.loads(json.dumps([str(x) for x in ours]))
    assert [u.rsplit("/", 1)[1] for u in urls] == [str(x).rsplit("/", 1)[1] for x in theirs]
    for back in (pickle.loads(pickle.dumps(ours)), copy.copy(ours), copy.deepcopy(ours)):
        assert type(back) is list and [x.read() for x in back] == [x.read() for x in plain]
    urls_only = rj.run("black-forest-labs/flux-schnell", input={"prompt": "x", "num_outputs": 2},
                       use_file_output=False)
    assert type(urls_only) is list and all(isinstance(u, str) for u in urls_only)  # URL strings: as before
    one = rj.run("kvfrans/clipdraw", input={"prompt": "x"})
    assert type(one) is rj.FileOutput  # one file: as before


def test_a_list_of_files_shows_its_images_as_a_cells_value(run_cells):
    routing.reset_choice()
    nb = run_cells([
        "%load_ext replicate_jupyter",
        "import replicate_jupyter as replicate\n"
        "output = replicate.run('local/shapes', input={'prompt': 'a red square', 'num_outputs': 2})\n"
        "output",
        "list(output)",
        "output[0]",
        "import json, pickle\n"
        "print(isinstance(output, list), output == list(output), type(pickle.loads(pickle.dumps(output))).__name__)",
    ], timeout=300)
    shown = [o for o in nb.cells[1].outputs if o.output_type == "execute_result"][0]
    plain = [o for o in nb.cells[2].outputs if o.output_type == "execute_result"][0]
    single = [o for o in nb.cells[3].outputs if o.output_type == "execute_result"][0]
    assert {"image/png", "text/html", "text/plain"} <= set(shown.data)
    assert shown.data["text/html"].count("<img") == 2
    assert shown.data["text/plain"] == plain.data["text/plain"]  # the text is the list's, unchanged
    assert set(plain.data) == {"text/plain"}  # a plain list of them is left as it was
    assert set(single.data) == {"image/png", "text/html", "text/plain"}
    assert "".join(o.get("text", "") for o in nb.cells[4].outputs).split() == ["True", "True", "list"]


def test_kernel_list_order_leaves_session_predictions_alone(env):
    a = rj.run("kvfrans/clipdraw", input={"prompt": "a"})
    assert a is not None
    ids = list(session.predictions)
    assert [p.id for p in rj.predictions.list()] == ids[::-1]

"""`import replicate_jupyter as replicate` is a drop-in for replicate-python 1.0.7.

The snippets from the seed issue and replicate-python's README examples run here as written —
only the import changes, and the placeholders (`r8_...`, `<version id>`) are filled — against the
project's Replicate-API server (tests/fake_replicate.py) serving models of our own under those
names. The same code then runs through the real replicate-python 1.0.7 against the same server,
and the HTTP requests both made (method, path, body keys, Prefer, Cancel-After) are compared:
the same calls, apart from the few our client makes on purpose (listed in `OURS_ONLY`), and
the uploads replicate-python makes for small files we send inline (`THEIRS_ONLY`).
"""
from __future__ import annotations

import json
import pathlib
import re
import textwrap
import warnings
from typing import Any

import pytest
from cog import BasePredictor, ConcatenateIterator, Input
from fake_replicate import SEED_DEPLOYMENTS, Call, FakeReplicate, fresh_replicate_backend, seed_models

import replicate_jupyter as rj
from replicate_jupyter.errors import InputError, ModelError
from replicate_jupyter.prediction.events import Log, Output
from replicate_jupyter.runners.replicate import routing
from replicate_jupyter.runners.replicate import token as tokens

replicate_python = pytest.importorskip("replicate")  # the real client, a test dependency (==1.0.7)

TOKEN = "r8_CompatTestToken0123456789abcdefXY"

#: requests our client makes that replicate-python does not, and why
OURS_ONLY = {
    ("GET", "/v1/models/{model}"),  # the schema, to validate input before anything is sent (cached)
    ("GET", "/v1/models/{model}/versions/{version}"),  # the same for a pinned version (cached)
    ("GET", "/delivery/{file}"),  # outputs fetched now: Replicate deletes them after an hour
    ("GET", "/v1/predictions/{id}"),  # the final state after a stream's `done` (predict_time, logs)
    ("GET", "/v1/deployments/{model}"),  # a deployment's schema, to validate input
}
#: requests replicate-python makes that ours does not
THEIRS_ONLY = {
    ("GET", "/v1/predictions/{id}"),  # its polls (ours follow the same prediction by stream or poll)
    ("GET", "/delivery/{file}"),  # it downloads an output at each read(); ours once, when it is done
}


PRED = pathlib.Path(__file__).resolve().parent / "predictors"


class UnicodeTokens(BasePredictor):
    """Tokens holding line separators that are not SSE line ends (U+2028, U+0085, U+2029)."""

    def predict(self, n: int = Input(default=3, ge=1, le=3)) -> ConcatenateIterator[str]:
        yield from ["a\u2028b", " c\x85d", " e\u2029f"][:n]


@pytest.fixture(scope="module")
def fake():
    models = {**seed_models(), "acme/unicode": UnicodeTokens, "acme/fail": f"{PRED}/failing.py:Predictor"}
    with FakeReplicate(models, token=TOKEN, deployments=SEED_DEPLOYMENTS, page_size=3) as server:
        yield server


@pytest.fixture
def env(fake, monkeypatch, tmp_path):
    """Both clients pointed at the fake, the token in the environment as a user sets it, a
    fresh kernel's routing (no backend chosen), and a working directory with input.jpg."""
    monkeypatch.setenv("REPLICATE_API_TOKEN", TOKEN)
    monkeypatch.setenv("REPLICATE_API_BASE_URL", fake.url)  # ours (the session's runner)
    monkeypatch.setenv("REPLICATE_BASE_URL", fake.root)  # replicate-python's
    monkeypatch.setenv("REPLICATE_POLL_INTERVAL", "0.05")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "input.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    replicate_python.default_client.poll_interval = 0.05
    # its httpx clients hold the base URL they were made with (and the async one its event
    # loop): fresh ones per test, so a test never talks to an earlier test's server
    replicate_python.default_client._Client__client = None
    replicate_python.default_client._Client__async_client = None
    # replicate-python takes only https: and data: URLs for files; the fake serves http:
    import replicate.helpers as helpers

    def transform(value: Any, client: Any) -> Any:
        if isinstance(value, str) and value.startswith(fake.root + "/delivery/"):
            return helpers.FileOutput(value, client)
        if isinstance(value, list):
            return [transform(v, client) for v in value]
        if isinstance(value, dict):
            return {k: transform(v, client) for k, v in value.items()}
        return original(value, client)

    import sys

    original = helpers.transform_output
    for module in ("replicate.helpers", "replicate.run", "replicate.stream"):
        monkeypatch.setattr(sys.modules[module], "transform_output", transform)
    with fresh_replicate_backend():
        yield fake


def norm(calls: list[Call]) -> list[tuple]:
    """Requests as comparable shapes: ids, versions and files templated, Prefer kept by kind."""
    out = []
    for c in calls:
        path = re.sub(r"/delivery/.*", "/delivery/{file}", c.path)
        path = re.sub(r"/versions/[0-9a-f]{64}", "/versions/{version}", path)
        path = re.sub(r"/(predictions|stream)/[a-z2-7]{26}", r"/\1/{id}", path)
        path = re.sub(r"/files/[\w-]{20,}", "/files/{file}", path)
        path = re.sub(r"^/v1/(models|deployments)/[^/]+/[^/]+", r"/v1/\1/{model}", path)
        prefer = None if c.prefer is None else c.prefer.split("=")[0]
        out.append((c.method, path, c.keys, prefer, c.cancel_after))
    return out


def run_both(fake: FakeReplicate, code: str, **fill: str) -> tuple[dict, dict, list[tuple], list[tuple]]:
    """Run `code` with `replicate_jupyter` as written, then with `replicate` in its place."""
    code = textwrap.dedent(code).replace("r8_...", TOKEN).replace("<fake root>", fake.root)
    for k, v in fill.items():
        code = code.replace(f"<{k}>", v)
    results = []
    for module in ("replicate_jupyter", "replicate"):
        ns: dict[str, Any] = {}
        n0 = len(fake.log)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            exec(compile(code.replace("replicate_jupyter", module), f"<{module} snippet>", "exec"), ns)
        for name in ("prediction", "p"):
            if hasattr(ns.get(name), "wait") and module == "replicate_jupyter":
                ns[name].wait(30)
        results.append((ns, norm(fake.calls(n0))))
    (ours, ours_calls), (theirs, theirs_calls) = results
    return ours, theirs, ours_calls, theirs_calls


def same_requests(ours: list[tuple], theirs: list[tuple], uploads_asked: int = 0) -> None:
    """What each client asked the API to do is the same: every action (POST, DELETE: method,
    path, body keys, Prefer, Cancel-After) in the same order, and the same things read (GETs,
    as a set), apart from the reads each makes on purpose (`OURS_ONLY`, `THEIRS_ONLY`)."""
    def acts(calls: list[tuple], skip: set) -> list[tuple]:
        return [c for c in calls if c[0] != "GET" and (c[0], c[1]) not in skip and c[1] != "/v1/files"]

    def uploads(calls: list[tuple]) -> int:
        return sum(1 for c in calls if c[:2] == ("POST", "/v1/files"))

    assert acts(ours, OURS_ONLY) == acts(theirs, THEIRS_ONLY), f"ours: {ours}\ntheirs: {theirs}"
    # `files.create` uploads in both; replicate-python also uploads every file object given as
    # an input, where we send a small one inline (one request less)
    assert uploads(ours) == uploads_asked <= uploads(theirs)

    read_a, read_b = {c for c in ours if c[0] == "GET"}, {c for c in theirs if c[0] == "GET"}
    assert {(c[0], c[1]) for c in read_a - read_b} <= OURS_ONLY, f"ours: {ours}\ntheirs: {theirs}"
    assert {(c[0], c[1]) for c in read_b - read_a} <= THEIRS_ONLY, f"ours: {ours}\ntheirs: {theirs}"


# ----- the seed issue's snippets ------------------------------------------------------------------
def test_client_run_gives_url_strings_and_the_same_requests(env):
    ours, theirs, a, b = run_both(env, """
        from replicate_jupyter import Client
        client = Client(api_token="r8_...", base_url="<fake root>")
        output = client.run("black-forest-labs/flux-1.1-pro",
                            input={"prompt": "A serene mountain lake at sunset, photorealistic",
                                   "width": 1024, "height": 1024, "num_outputs": 1})
        image_url = str(output[0])            # a URL (Replicate's delivery URL when there is one)
        video = client.run("stability-ai/stable-video-diffusion", input={"image": open("input.jpg", "rb")})
    """)
    assert ours["image_url"] == theirs["image_url"].replace(re.search(r"/delivery/[^/]+", theirs["image_url"])[0],
                                                            re.search(r"/delivery/[^/]+", ours["image_url"])[0])
    assert ours["image_url"].startswith(env.root + "/delivery/") and ours["image_url"].endswith("/out-0.png")
    assert ours["output"][0].read()[:4] == b"\x89PNG"  # the bytes were embedded before they expire
    assert str(ours["video"]).endswith("/output.mp4") and ours["video"].read()[4:8] == b"ftyp"
    assert ours["video"].read() == theirs["video"].read()  # the same model, the same input bytes
    assert ("POST", "/v1/models/{model}/predictions", ("input",), "wait", None) in a
    same_requests(a, b)
    assert TOKEN not in repr(ours["client"]) and "r8_***" in repr(ours["client"])


def test_stream_prints_only_the_text_and_routes_to_replicate_by_name(env, capsys):
    ours, theirs, a, b = run_both(env, """
        import replicate_jupyter as replicate    # token from REPLICATE_API_TOKEN
        for event in replicate.stream("meta/meta-llama-3-8b-instruct",
                                      input={"prompt": "Explain quantum computing", "max_tokens": 500}):
            print(str(event), end="", flush=True)
    """)
    printed = capsys.readouterr().out
    text = printed[: len(printed) // 2]
    assert printed == text * 2  # both clients printed exactly the same text
    assert text.startswith("Quantum computing uses qubits") and "prompt tokens" not in text  # no log line in it
    p = rj.predictions.list()[0]  # newest first, as Replicate lists them
    assert p.backend == "replicate" and p.model == "meta/meta-llama-3-8b-instruct"  # routed by name
    assert p.remote_id and "".join(p.output) == text
    assert ("POST", "/v1/models/{model}/predictions", ("input", "stream"), None, None) in a
    same_requests(a, b)


def test_predictions_create_with_version_and_webhook(env):
    version = env.models["stability-ai/stable-video-diffusion"].version
    ours, theirs, a, b = run_both(env, """
        import replicate_jupyter as replicate
        prediction = replicate.predictions.create(
            version="stability-ai/stable-video-diffusion:<version id>",
            input={"image": "https://example.com/image.jpg"},
            webhook="https://your-server.com/webhook", webhook_events_filter=["completed"])
        print(prediction.id)
    """, **{"version id": version})
    assert ours["prediction"].remote_id in env.predictions and ours["prediction"].urls["get"].endswith(
        ours["prediction"].remote_id)
    assert ("POST", "/v1/predictions", ("input", "version", "webhook", "webhook_events_filter"), None, None) in a
    same_requests(a, b)
    sent = env.predictions[ours["prediction"].remote_id]
    assert sent.webhook == "https://your-server.com/webhook"


# ----- replicate-python's README ------------------------------------------------------------------
def test_readme_use_file_output_false_and_file_output_reading(env):
    ours, theirs, a, b = run_both(env, """
        import asyncio
        import replicate_jupyter as replicate
        urls = replicate.run("black-forest-labs/flux-schnell", input={"prompt": "astronaut riding a rocket"},
                             use_file_output=False)
        output = replicate.run("black-forest-labs/flux-schnell", input={"prompt": "astronaut", "num_outputs": 2})
        for index, item in enumerate(output):
            with open(f"output_{index}.webp", "wb") as file:
                file.write(item.read())
        chunks = b""
        for chunk in output[0]:
            chunks += chunk
        aread = asyncio.run(output[1].aread())
    """)
    assert all(isinstance(u, str) and u.startswith("http") for u in ours["urls"])
    assert ours["chunks"] == theirs["chunks"] and ours["aread"] == theirs["aread"]
    assert open("output_0.webp", "rb").read() == ours["chunks"]
    same_requests(a, b)


def test_readme_async_run_under_a_task_group(env):
    version = env.models["stability-ai/sdxl"].version
    ours, theirs, a, b = run_both(env, """
        import asyncio
        import replicate_jupyter as replicate

        async def main():
            model_version = "stability-ai/sdxl:<version>"
            prompts = [f"A chariot pulled by a team of {count} rainbow unicorns" for count in ["two", "four", "six", "eight"]]
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(replicate.async_run(model_version, input={"prompt": prompt}))
                         for prompt in prompts]
            return await asyncio.gather(*tasks)

        results = asyncio.run(main())
    """, version=version)
    assert len(ours["results"]) == 4
    assert [r[0].read() for r in ours["results"]] == [r[0].read() for r in theirs["results"]]
    assert sorted(a) != [] and sorted(c for c in a if c[0] == "POST") == sorted(c for c in b if c[0] == "POST")


def test_readme_background_wait_reload_and_cancel(env):
    version = env.models["kvfrans/clipdraw"].version
    ours, theirs, a, b = run_both(env, """
        import replicate_jupyter as replicate
        model = replicate.models.get("kvfrans/clipdraw")
        version = model.versions.get("<version>")
        prediction = replicate.predictions.create(version=version, input={"prompt": "Watercolor painting", "iterations": 6})
        first = prediction.status
        fields = dict(prediction)
        prediction.reload()
        prediction.wait()
        status = prediction.status
        logs = prediction.logs
        other = replicate.predictions.create(version=version, input={"prompt": "x", "iterations": 50, "delay": 0.2})
        other.cancel()
        other.reload()
    """, version=version)
    assert ours["first"] in ("starting", "processing") and ours["status"] == theirs["status"] == "succeeded"
    assert "iteration: 30" in ours["logs"] and "iteration: 30" in theirs["logs"]
    assert ours["fields"]["id"] == ours["prediction"].id and "status" in ours["fields"]
    assert ours["model"].latest_version.id == version == ours["version"].id
    ours["other"].wait(10)
    assert ours["other"].status == "canceled"
    same_requests(a, b)


def test_readme_model_predictions_deployments_files_hardware(env):
    ours, theirs, a, b = run_both(env, """
        import replicate_jupyter as replicate
        p = replicate.models.predictions.create(model="ai-forever/kandinsky-2.2", input={"prompt": "submarine"})
        p.wait()
        deployment = replicate.deployments.get("replicate/my-app-image-generator")
        dp = deployment.predictions.create(input={"prompt": "a cat"})
        dp.wait()
        dp2 = replicate.deployments.predictions.create(deployment="replicate/my-app-image-generator", input={"prompt": "a dog"})
        dp2.wait()
        f = replicate.files.create(open("input.jpg", "rb"))
        got = replicate.files.get(f.id)
        skus = [hw.sku for hw in replicate.hardware.list()]
    """)
    assert ours["skus"] == theirs["skus"] == ["cpu", "gpu-t4", "gpu-a40-small", "gpu-a40-large"]
    assert ours["f"].size == theirs["f"].size and ours["got"].urls["get"].startswith(env.url + "/files/")
    assert ours["dp"].status == "succeeded" and env.predictions[ours["dp"].remote_id].deployment == \
        "replicate/my-app-image-generator"
    same_requests(a, b, uploads_asked=1)


def test_readme_predictions_list_pages_with_next(env):
    ours, theirs, a, b = run_both(env, """
        from replicate_jupyter import Client
        client = Client(api_token="r8_...", base_url="<fake root>")
        page1 = client.predictions.list()
        page2 = client.predictions.list(page1.next) if page1.next else None
        ids = [p.id for p in page1] + [p.id for p in page2 or []]
    """)
    assert len(env.predictions) > 3  # the fake pages by 3: the second page is there
    assert [p.remote_id for p in ours["page1"].results] == theirs["ids"][:3]
    assert ours["page2"] is not None and len(ours["page1"]) == 3
    assert all(p.status in rj.prediction.TERMINAL for p in ours["page1"])
    same_requests(a, b)
    assert not [c for c in a if c[1] == "/delivery/{file}"]  # listing downloads nothing
    # module level, as the README writes it: this kernel's predictions, every backend
    page = rj.predictions.list()
    assert page.next is None and any(p.backend == "replicate" for p in page)


def test_readme_iterator_output_while_running(env):
    version = env.models["pixray/text2image"].version
    ours, theirs, a, b = run_both(env, """
        import replicate_jupyter as replicate
        iterator = replicate.run("pixray/text2image:<version>", input={"prompts": "san francisco sunset"})
        images = [image.read()[:4] for image in iterator]
        live = replicate.run("pixray/text2image:<version>", input={"prompts": "sunrise"}, wait=False)
        first = next(iter(live))
    """, version=version)
    assert ours["images"] == theirs["images"] == [b"\x89PNG"] * 3


# ----- beyond the snippets ------------------------------------------------------------------------
def test_sse_splits_only_on_cr_lf(env):
    """U+2028, U+0085 and U+2029 are not SSE line ends: our tokens arrive whole. (replicate-python
    1.0.7 reads httpx's iter_lines, which splits on them, and drops text.)"""
    ours = "".join(str(e) for e in rj.stream("acme/unicode", input={}))
    assert ours == "a\u2028b c\x85d e\u2029f"
    client = replicate_python.Client(api_token=TOKEN, base_url=env.root)
    theirs = "".join(str(e) for e in client.stream("acme/unicode", input={}))
    assert theirs != ours  # the difference this test exists for


def test_use_is_replicate_python_1_1s(env):
    llama = rj.use("meta/meta-llama-3-8b-instruct")
    text = llama(prompt="hi", max_tokens=5)
    assert text == "Quantum computing uses qubits, which"  # a token stream comes back as one str
    chunks = list(rj.use("meta/meta-llama-3-8b-instruct", streaming=True)(prompt="hi", max_tokens=3))
    assert chunks == ["Quantum", " computing", " uses"]
    flux = rj.use("black-forest-labs/flux-schnell")
    run = flux.create(prompt="a lighthouse", num_outputs=2)
    images = run.output()
    from PIL import Image

    assert Image.open(images[0]).size == (8, 8)  # path-like, opened as a file
    assert str(images[1]).startswith(env.root + "/delivery/")
    with pytest.raises(InputError) as info:  # validated against its schema, nothing sent
        n0 = len(env.log)
        flux(prompt="x", num_outputs=9)
    assert info.value.fields == ["num_outputs"] and len(env.log) == n0
    assert rj.use(f"{__file__.rsplit('/', 1)[0]}/predictors/echo.py:Predictor")(text="yo") == ">yo"  # any backend
    with pytest.warns(DeprecationWarning):
        rj.use("local")
    assert routing.backend_chosen()


def test_routing_needs_a_token_and_on_always_pins(env, monkeypatch):
    monkeypatch.delenv("REPLICATE_API_TOKEN")
    with pytest.raises(rj.ModelNotFound, match="%replicate login"):
        rj.run("meta/meta-llama-3-8b-instruct", input={"prompt": "x"})
    tokens.login(TOKEN)  # what %replicate login does: memory only
    try:
        import os

        assert "REPLICATE_API_TOKEN" not in os.environ
        out = rj.run("meta/meta-llama-3-8b-instruct", input={"prompt": "x", "max_tokens": 2})
        assert "".join(out) == "Quantum computing"
        with pytest.raises(rj.ModelNotFound, match="local"):
            rj.run("meta/meta-llama-3-8b-instruct", input={"prompt": "x"}, on="local")
        assert rj.run("local/tiny-lm", input={"prompt": "x", "max_new_tokens": 1}) is not None  # local names stay local
        assert rj.predictions.list()[0].backend == "local"
        with pytest.raises(InputError, match="local backend has no deployments"):
            rj.deployments.predictions.create(deployment="replicate/my-app-image-generator", input={}, on="local")
    finally:
        tokens.logout()


def test_model_error_stream_events_and_get_by_remote_id(env):
    events = list(rj.stream("meta/meta-llama-3-8b-instruct", input={"prompt": "x", "max_tokens": 2}))
    assert [e.event for e in events if e.event != "logs"] == ["output", "output", "done"]
    assert any(e.event == "logs" and e.data == "prompt tokens: 1" for e in events)  # the model's print
    events = [e for e in events if e.event != "logs"]
    assert events[0].data == "Quantum" and events[0].id == "0" and str(events[-1]) == ""
    assert str(Log(text="a log line\n")) == "" and Log(text="a log line\n").data == "a log line"
    assert isinstance(events[0], Output)
    p = rj.predictions.list()[0]
    assert rj.predictions.get(p.remote_id) is p  # found by Replicate's id too
    client = rj.Client(api_token=TOKEN, base_url=env.root)
    remote = client.predictions.get(p.remote_id)  # not this client's: wrapped from Replicate's answer
    assert remote is not p and remote.status == "succeeded" and "".join(remote.output) == "".join(p.output)
    assert json.dumps(p.to_json()).count(TOKEN) == 0


def test_a_failing_model_raises_model_error_as_replicate_python_does(env):
    with pytest.raises(ModelError) as ours:
        rj.run("acme/fail", input={"text": "x"})
    with pytest.raises(replicate_python.exceptions.ModelError) as theirs:
        replicate_python.run("acme/fail", input={"text": "x"})
    assert ours.value.prediction.error == theirs.value.prediction.error == "model exploded on 'x'"
    seen = []
    with pytest.raises(ModelError):
        for event in rj.stream("acme/fail", input={"text": "y"}):
            seen.append(event.event)
    assert seen[-2:] == ["error", "done"]  # the events first, then the error (not a silent end)

"""The rest of replicate-python's surface that review A found missing or different.

- 1.1's `use()`: `use_async=True`, a streaming call's `OutputIterator`, `use(ref)` taking a
  typing class's `name`, `get_path_url`, `openapi_schema()` as a method;
- `cancel(); reload()` ends at `canceled` on the replicate backend, through one Completed;
- `prediction.progress` as replicate-python's `Progress(percentage, current, total)`, read from
  tqdm lines on Replicate, still unpacking as `(step, total)`;
- the hardware note is a warning and the bill's assumption, never the model's `logs`;
- stream events' `event` is an Enum equal to the plain names; a failed stream raises an error
  that is a `RuntimeError` as well as our `ModelError`.

Against the project's Replicate-API server (tests/fake_replicate.py) and the kernel's own
backend, as a user runs them: the token in the environment, nothing mocked.
"""
from __future__ import annotations

import asyncio
import time
import warnings

import pytest
from cog import BasePredictor, Input
from fake_replicate import FakeReplicate, fresh_replicate_backend, seed_models

import replicate_jupyter as rj
from replicate_jupyter import get_path_url, use  # the root's, as a user calls them
from replicate_jupyter.errors import ModelError
from replicate_jupyter.prediction.events import Completed, EventType, Output
from replicate_jupyter.prediction.events import Progress as ProgressEvent
from replicate_jupyter.prediction.files import FileOutput
from replicate_jupyter.prediction.prediction import Prediction
from replicate_jupyter.runners.replicate.runner import HardwareAssumed
from replicate_jupyter.use import AsyncFunction, OutputIterator

TOKEN = "r8_UseMoreTestToken0123456789abcdefXY"
PRED = __file__.rsplit("/", 1)[0] + "/predictors"


class Tqdm(BasePredictor):
    """Prints tqdm's lines, as most diffusion models on Replicate do."""

    def predict(self, steps: int = Input(default=4, ge=1, le=10), delay: float = Input(default=0.05)) -> str:
        for i in range(1, steps + 1):
            print(f"{i * 100 // steps:3d}%|{'#' * i}{' ' * (steps - i)}| {i}/{steps} [00:0{i}<00:00]", flush=True)
            time.sleep(delay)
        return "ok"


class Echo(BasePredictor):
    """A predictor class that also has a `name`: it is still run as the predictor it is."""

    name = "not/a-replicate-model"

    def predict(self, text: str = "x") -> str:
        return f"<{text}>"


@pytest.fixture(scope="module")
def fake():
    models = {**seed_models(), "acme/tqdm": Tqdm, "acme/fail": f"{PRED}/failing.py:Predictor",
              "acme/polled-clipdraw": seed_models()["kvfrans/clipdraw"]}
    with FakeReplicate(models, token=TOKEN, no_stream={"acme/polled-clipdraw"}) as server:
        yield server


@pytest.fixture
def env(fake, monkeypatch):
    """The token in the environment and the service's address, as a user sets them; a fresh
    kernel's routing (bare owner/name goes to Replicate) and a fresh replicate runner."""
    monkeypatch.setenv("REPLICATE_API_TOKEN", TOKEN)
    monkeypatch.setenv("REPLICATE_API_BASE_URL", fake.url)
    monkeypatch.setenv("REPLICATE_POLL_INTERVAL", "0.05")
    with fresh_replicate_backend():
        yield fake


# ----- use() ------------------------------------------------------------------------------------
def test_use_async_gives_a_function_to_await(env):
    async def main():
        flux = use("black-forest-labs/flux-schnell", use_async=True)
        assert isinstance(flux, AsyncFunction)
        images = await flux(prompt="a cat wearing an amusing hat", num_outputs=2)
        schema = await flux.openapi_schema()
        run = await flux.create(prompt="a dog")
        one = await run.output()
        llama = use("meta/meta-llama-3-8b-instruct", streaming=True, use_async=True)
        chunks = [t async for t in await llama(prompt="hi", max_tokens=3)]
        joined = await (await llama(prompt="hi", max_tokens=2))  # the OutputIterator awaited: the text
        old = await use("meta/meta-llama-3-8b-instruct").async_call(prompt="hi", max_tokens=2)  # our own spelling
        return images, schema, one, chunks, joined, old

    images, schema, one, chunks, joined, old = asyncio.run(main())
    assert len(images) == 2 and all(isinstance(i, FileOutput) for i in images)
    assert images[0].read()[:4] == b"\x89PNG" and isinstance(one[0], FileOutput)
    assert "Input" in schema["components"]["schemas"]
    assert chunks == ["Quantum", " computing", " uses"]
    assert joined == old == "Quantum computing"


def test_streaming_output_is_an_output_iterator(env):
    llama = use("meta/meta-llama-3-8b-instruct", streaming=True)
    out = llama(prompt="hi", max_tokens=3)
    assert isinstance(out, OutputIterator)
    assert str(out) == "Quantum computing uses"  # 1.1's __str__ joins a token stream
    assert list(out) == ["Quantum", " computing", " uses"]  # and it iterates again, from the first
    assert asyncio.run(_awaited(out)) == "Quantum computing uses"
    images = use("pixray/text2image", streaming=True)(prompts="dawn", steps=2)
    got = asyncio.run(_awaited(images))  # not a token stream: awaited, the list
    assert isinstance(got, list) and len(got) == 2 and all(isinstance(i, FileOutput) for i in got)
    assert str(images) == str(got)
    # another call takes it as input, as 1.1 passes it: the text
    echo = use(f"{PRED}/echo.py:Predictor")
    assert echo(text=llama(prompt="hi", max_tokens=2)) == ">Quantum computing"


async def _awaited(it: OutputIterator):
    return await it


def test_use_takes_the_name_of_a_typing_class_and_still_runs_predictor_classes(env):
    class FluxDev:  # 1.1's README, "Typing", option 2
        name = "black-forest-labs/flux-schnell"

        def __call__(self, *, prompt: str) -> list: ...

    out = use(FluxDev)(prompt="a lighthouse")
    assert isinstance(out[0], FileOutput) and out[0].read()[:4] == b"\x89PNG"
    assert use(FluxDev()).ref == "black-forest-labs/flux-schnell"  # an instance too
    assert use(Echo)(text="yo") == "<yo>"  # a predictor class is the model, whatever its `name`
    assert use(Echo())(text="yo") == "<yo>"


def test_get_path_url_and_openapi_schema_method(env):
    flux = use("black-forest-labs/flux-schnell")
    image = flux(prompt="a cat")[0]
    assert get_path_url(image) == image.remote_url and get_path_url(image).startswith(env.root + "/delivery/")
    local = rj.run("local/shapes", input={"prompt": "a red square", "num_inference_steps": 2})
    local_file = local if isinstance(local, FileOutput) else local[0]
    assert get_path_url(local_file) is None  # the kernel's own backends deliver no URL
    assert get_path_url("not a file") is None
    schema = flux.openapi_schema()  # a method, as in 1.1's source
    assert schema["paths"] == {} and {"Input", "Output"} <= set(schema["components"]["schemas"])
    assert "$ref" not in str(schema["components"]["schemas"]["Input"])
    assert set(schema["components"]["schemas"]["Input"]["properties"]) == {"prompt", "num_outputs"}


# ----- cancel + reload ----------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["kvfrans/clipdraw", "acme/polled-clipdraw"])
def test_cancel_then_reload_is_canceled_with_one_completed(env, monkeypatch, model):
    """Followed by its stream (which ends at once too) and by polling (every 5 s here: only
    the answers to cancel and reload can say it is over)."""
    monkeypatch.setenv("REPLICATE_POLL_INTERVAL", "5")
    rj.backend("replicate")
    version = rj.models.get(model).latest_version
    n0 = len(rj.ledger())
    p = rj.predictions.create(version=version, input={"prompt": "x", "iterations": 50, "delay": 0.2})
    seen: list = []
    p.subscribe(lambda _p, e: seen.append(e))
    p.cancel()
    p.reload()
    assert p.status == "canceled"  # README "Cancel a prediction": right after cancel + reload
    p.wait(10)
    time.sleep(0.5)  # the follower has seen the end meanwhile: nothing comes after the one Completed
    assert sum(isinstance(e, Completed) for e in seen) == 1
    assert sum(isinstance(e, Completed) for e in p.events(timeout=1)) == 1
    entries = [e for e in rj.ledger() if e.id == p.id]
    assert len(entries) == 1 and entries[0].status == "canceled" and len(rj.ledger()) == n0 + 1
    assert p.metrics["predict_time"] < 5


# ----- progress -----------------------------------------------------------------------------------
def test_progress_is_replicate_pythons_from_tqdm_lines_and_unpacks_as_before(env):
    p = rj.predictions.create(model="acme/tqdm", input={"steps": 4}).wait(30)
    assert p.status == "succeeded"
    pr = p.progress
    assert (pr.percentage, pr.current, pr.total) == (1.0, 4, 4)
    step, total = pr  # our code's (step, total)
    assert (step, total) == (4, 4) and pr == (4, 4) and pr.step == 4
    assert repr(pr) == "Progress(percentage=1.0, current=4, total=4)"
    assert Prediction.Progress is type(pr)
    steps = [e.step for e in p.events(timeout=1) if isinstance(e, ProgressEvent)]
    assert steps == [1, 2, 3, 4]  # one Progress event per tqdm line: the card shows it live


def test_local_progress_has_the_same_shape():
    p = rj.predictions.create("local/shapes", input={"prompt": "a red square", "num_inference_steps": 5}, on="local")
    assert p.wait(60).status == "succeeded"
    assert p.progress.percentage == 1.0 and p.progress == (5, 5) and p.eta() == 0.0  # eta() unpacks it


# ----- the hardware note --------------------------------------------------------------------------
def test_hardware_note_is_a_warning_and_an_assumption_not_a_log_line(env):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a = rj.predictions.create(model="kvfrans/clipdraw", input={"prompt": "first", "iterations": 2}).wait(30)
        b = rj.predictions.create(model="kvfrans/clipdraw", input={"prompt": "second", "iterations": 2}).wait(30)
    notes = [w for w in caught if issubclass(w.category, HardwareAssumed)]
    assert len(notes) == 1 and "costing it as gpu-t4" in str(notes[0].message)  # once per model
    assert a.logs.startswith("iteration: 0") and "replicate-jupyter" not in a.logs + b.logs
    bill = a.metrics["billing"]
    assert bill["sku_assumed"] and any("Replicate reports no hardware" in x for x in bill["assumptions"])


# ----- stream events ------------------------------------------------------------------------------
def test_stream_event_types_are_an_enum_equal_to_the_names(env):
    events = list(rj.stream("meta/meta-llama-3-8b-instruct", input={"prompt": "x", "max_tokens": 2}))
    kinds = [e.event for e in events]
    assert all(isinstance(k, EventType) for k in kinds)
    out = next(k for k in kinds if k is EventType.OUTPUT)
    assert out == "output" and out.value == "output" and out.name == "OUTPUT" and {"output": 1}[out] == 1
    assert "logs" in kinds and kinds[-1] == "done" and f"{kinds[-1]}" == str(kinds[-1]) == "done"
    assert [str(e) for e in events if isinstance(e, Output)] == ["Quantum", " computing"]


def test_a_failed_stream_raises_a_runtime_error_that_is_a_model_error(env):
    seen = []
    with pytest.raises(RuntimeError) as info:  # what code written for replicate-python catches
        for event in rj.stream("acme/fail", input={"text": "y"}):
            seen.append(event.event)
    assert isinstance(info.value, ModelError) and info.value.prediction.error == "model exploded on 'y'"
    assert seen[-2:] == ["error", "done"]  # the events first, then the error

    async def consume():
        async for _ in await rj.async_stream("acme/fail", input={"text": "z"}):
            pass

    with pytest.raises(RuntimeError) as ainfo:
        asyncio.run(consume())
    assert isinstance(ainfo.value, ModelError)

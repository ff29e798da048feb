"""`hf:REPO_ID` models on real tiny pipelines (diffusers Stable Diffusion, transformers GPT-2),
built offline with random weights and laid out as a real hub cache, with HF_HUB_OFFLINE=1.

Everything goes through the public API (`rj.run`, `rj.stream`, `rj.predictions.create`,
`rj.schema`) and the local runner, as a notebook would use it.
"""
from __future__ import annotations

import io
import os
import pathlib
import subprocess
import sys
import threading
import time

import pytest

import replicate_jupyter as rj
from replicate_jupyter.errors import ModelError, ModelNotFound
from replicate_jupyter.model.schema import input_properties
from replicate_jupyter.prediction.events import Completed, Output, Preview, Progress
from replicate_jupyter.session import session

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from tiny_pipelines import build_tiny_gpt2, build_tiny_sd, populate_hf_cache  # noqa: E402

SD = "hf:tiny/sd"
GPT2 = "hf:tiny/gpt2"


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A temp HF cache holding tiny/sd and tiny/gpt2; HF_HUB_OFFLINE=1 while the module runs."""
    root = tmp_path_factory.mktemp("hf")
    t0 = time.perf_counter()
    sd = build_tiny_sd(root / "build" / "sd")
    gpt2 = build_tiny_gpt2(root / "build" / "gpt2")
    cache = root / "hub"
    populate_hf_cache(cache, "tiny/sd", sd)
    populate_hf_cache(cache, "tiny/gpt2", gpt2)
    print(f"tiny pipelines built in {time.perf_counter() - t0:.2f}s")
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "HF_HUB_CACHE", "HF_HOME")}
    os.environ.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), HF_HOME=str(root / "home"))
    yield {"cache": cache, "sd": sd, "gpt2": gpt2, "root": root}
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    runner = session.runner("local")
    for key in [k for k in runner.warm if k.startswith("hf:")]:  # only ours: other modules' warm models stay
        runner.evict(key)


def _warm_instance(ref: str):
    runner = session.runner("local")
    return runner._warm[ref].instance


class _DecodeCounter:
    """Wraps `vae.decode` to count calls and decoded images (a preview must never decode)."""

    def __init__(self, vae):
        self.vae, self.orig, self.calls, self.images = vae, vae.decode, 0, 0

    def __enter__(self):
        def decode(z, *a, **kw):
            self.calls += 1
            self.images += int(z.shape[0])
            return self.orig(z, *a, **kw)

        self.vae.decode = decode
        return self

    def __exit__(self, *exc):
        self.vae.decode = self.orig


# ----- resolving and schema (no weights read) ----------------------------------------------------
def test_resolving_reads_no_weights_and_imports_no_torch(hub):
    code = ("import sys, replicate_jupyter as rj; from replicate_jupyter import hf\n"
            "c = hf.predictor_class('tiny/sd'); t = hf.predictor_class('tiny/gpt2')\n"
            "print(c.__name__, t.__name__, c.version, 'torch' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    sd_name, text_name, version, torch_loaded = out.stdout.split()
    assert sd_name == "HFTinySdDiffusionPredictor" and text_name == "HFTinyGpt2TextPredictor"
    assert torch_loaded == "False"
    assert version == pathlib.Path(next((hub["cache"] / "models--tiny--sd" / "snapshots").iterdir())).name[:16]


def test_schema_of_diffusion_and_text_predictors(hub):
    props = input_properties(rj.schema(SD))
    assert [n for n, _ in props] == ["prompt", "negative_prompt", "image", "prompt_strength", "width", "height",
                                     "num_outputs", "num_inference_steps", "guidance_scale", "seed", "output_format"]
    p = dict(props)
    assert p["image"]["format"] == "uri" and "default" not in p["image"]
    assert (p["prompt_strength"]["minimum"], p["prompt_strength"]["maximum"]) == (0, 1)
    assert p["width"]["default"] == 64 and (p["width"]["minimum"], p["width"]["maximum"]) == (64, 2048)  # native size
    assert (p["num_outputs"]["minimum"], p["num_outputs"]["maximum"]) == (1, 4)
    assert (p["num_inference_steps"]["minimum"], p["num_inference_steps"]["maximum"]) == (1, 100)
    assert (p["guidance_scale"]["minimum"], p["guidance_scale"]["maximum"]) == (0, 20)
    assert p["seed"]["type"] == "integer" and "default" not in p["seed"]
    assert p["output_format"]["enum"] == ["webp", "png"]
    doc = rj.schema(GPT2)
    tprops = input_properties(doc)
    assert [n for n, _ in tprops] == ["prompt", "max_new_tokens", "temperature", "top_p", "seed"]
    t = dict(tprops)
    assert (t["max_new_tokens"]["minimum"], t["max_new_tokens"]["maximum"]) == (1, 4096)
    assert (t["temperature"]["minimum"], t["temperature"]["maximum"]) == (0.01, 2)
    out = doc["components"]["schemas"]["Output"]
    assert out["x-cog-array-type"] == "iterator" and out["x-cog-array-display"] == "concatenate"


def test_missing_repo_names_the_download_command(hub):
    with pytest.raises(ModelNotFound) as e:
        rj.run("hf:nobody/missing-model", {"prompt": "x"})
    msg = str(e.value)
    assert "hf download nobody/missing-model" in msg and "huggingface-cli download nobody/missing-model" in msg
    assert "not in the local Hugging Face cache" in msg


def test_unsupported_kinds_are_refused_before_loading(hub, tmp_path):
    (tmp_path / "config.json").write_text('{"architectures": ["BertForMaskedLM"], "model_type": "bert"}')
    with pytest.raises(ModelNotFound, match="BertForMaskedLM"):
        rj.schema(f"hf:{tmp_path}")
    with pytest.raises(ModelNotFound, match="no such folder"):
        rj.schema(f"hf:{tmp_path / 'nope'}")


# ----- diffusion -------------------------------------------------------------------------------------
def test_text_to_image_run_is_seeded_and_returns_images(hub):
    from PIL import Image

    inp = {"prompt": "a red square", "num_inference_steps": 2, "seed": 7, "output_format": "png"}
    t0 = time.perf_counter()
    out = rj.run(SD, inp)
    first = time.perf_counter() - t0
    assert len(out) == 1 and out[0].content_type == "image/png"
    img = Image.open(io.BytesIO(out[0].read()))
    assert img.size == (64, 64) and img.mode == "RGB"
    t0 = time.perf_counter()
    again = rj.run(SD, inp)
    warm = time.perf_counter() - t0
    assert again[0].read() == out[0].read()  # same seed, same image
    other = rj.run(SD, {**inp, "seed": 8})
    assert other[0].read() != out[0].read()
    p = rj.predictions.list()[0]
    assert "Using seed: 8" in p.logs and p.metrics["hardware"] == "cpu"
    print(f"tiny sd: cold run {first:.2f}s (load + 2 steps), warm run {warm:.2f}s")


def test_random_seed_is_reported_and_webp_output(hub):
    p = rj.predictions.create(SD, {"prompt": "x", "num_inference_steps": 1}).wait(120)
    assert p.status == "succeeded", p.error
    assert "Using seed: " in p.logs
    assert p.output[0].content_type == "image/webp" and p.output[0].name.endswith(".webp")


def test_previews_are_cheap_projections_not_vae_decodes(hub):
    from PIL import Image

    rj.run(SD, {"prompt": "warm up", "num_inference_steps": 1, "seed": 0})  # load outside the count
    inst = _warm_instance(SD)
    assert inst.previewer is not None and inst.previewer.source == "fitted"  # tiny VAE: fitted at setup
    runner = session.runner("local")
    rate, runner.preview_rate = runner.preview_rate, 0  # 0: no throttle, every step offers a preview
    try:
        with _DecodeCounter(inst.pipe.vae) as counter:
            p = rj.predictions.create(SD, {"prompt": "two", "num_outputs": 2, "num_inference_steps": 4, "seed": 1})
            events = list(p.events(timeout=120))
    finally:
        runner.preview_rate = rate
    assert p.status == "succeeded", p.error
    previews = [e for e in events if isinstance(e, Preview)]
    assert [e.step for e in previews] == [1, 2, 3, 4]
    assert all(isinstance(e.image, Image.Image) for e in previews)
    assert previews[0].image.width == 2 * previews[0].image.height  # both outputs, side by side
    steps = [(e.step, e.total) for e in events if isinstance(e, Progress)]
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert counter.calls == 1 and counter.images == 2  # one decode of the final batch, none per step
    assert len(p.output) == 2
    # the last step's preview shows the latents that were decoded: same average colour as the outputs
    import numpy as np

    shown = np.asarray(previews[-1].image, dtype=float).reshape(-1, 3).mean(0)
    decoded = np.concatenate([np.asarray(Image.open(io.BytesIO(o.read())).convert("RGB"), dtype=float).reshape(-1, 3)
                              for o in p.output]).mean(0)
    assert np.abs(shown - decoded).max() < 8, (shown, decoded)


def test_known_vaes_use_published_factors_others_are_fitted():
    from replicate_jupyter.hf.previews import SD_FACTORS, SDXL_FACTORS, standard_factors

    sd = {"_class_name": "AutoencoderKL", "latent_channels": 4, "block_out_channels": [128, 256, 512, 512],
          "scaling_factor": 0.18215}
    assert standard_factors(sd)[2] == "sd" and standard_factors(sd)[0] == SD_FACTORS[0]
    assert standard_factors({**sd, "scaling_factor": 0.13025})[1] == SDXL_FACTORS[1]
    assert standard_factors({**sd, "scaling_factor": 0.5}) is None  # e.g. Playground v2.5: fitted
    assert standard_factors({**sd, "latent_channels": 16}) is None  # SD3 / Flux VAEs: fitted
    assert standard_factors({**sd, "block_out_channels": [32, 64]}) is None


def test_image_to_image_with_a_pil_input(hub):
    from PIL import Image

    src = Image.new("RGB", (48, 64), (200, 30, 30))
    p = rj.predictions.create(SD, {"prompt": "a cat", "image": src, "prompt_strength": 0.5,
                                   "num_inference_steps": 4, "seed": 3, "output_format": "png"}).wait(120)
    assert p.status == "succeeded", p.error
    out = Image.open(io.BytesIO(p.output[0].read()))
    assert out.size == (48, 64)  # the input image's size, not width × height
    assert "img2img" in p.logs
    assert p.progress == (2, 2)  # strength 0.5 of 4 steps denoises 2
    # prompt_strength 0 still runs (one step) rather than failing inside diffusers
    p0 = rj.predictions.create(SD, {"prompt": "a cat", "image": src, "prompt_strength": 0.0,
                                    "num_inference_steps": 4, "seed": 3}).wait(120)
    assert p0.status == "succeeded", p0.error


def test_width_not_a_multiple_of_8_fails_clearly(hub):
    with pytest.raises(ModelError) as e:
        rj.run(SD, {"prompt": "x", "width": 100, "num_inference_steps": 1})
    assert "width" in str(e.value) and "multiple of 8" in str(e.value)
    from PIL import Image

    # with an input image the output follows the image's size, so width is not checked
    assert rj.run(SD, {"prompt": "x", "width": 100, "image": Image.new("RGB", (64, 64)), "num_inference_steps": 2})


def test_cancel_stops_within_one_step_and_pipeline_stays_usable(hub):
    from replicate_jupyter import api

    small = {"prompt": "after", "num_inference_steps": 2, "seed": 7, "output_format": "png"}
    before = rj.run(SD, small)[0].read()
    inst = _warm_instance(SD)
    seen: list[int] = []

    def listen(p, e):
        if isinstance(e, Progress):
            seen.append(e.step)
            if e.step == 2:
                p.cancel()

    with _DecodeCounter(inst.pipe.vae) as counter:
        p = api.prepare(SD, {"prompt": "long", "num_inference_steps": 100, "seed": 2})
        p.subscribe(listen)
        api.start(p)
        p.wait(120)
    assert p.status == "canceled", (p.status, p.error)
    assert 2 in seen and max(seen) <= 3, seen  # stopped at the next step
    assert counter.calls == 0  # no per-step decodes, and no decode of a partial image nobody gets
    assert 0 < p.metrics["predict_time"] and p.metrics.get("cost_usd") is not None
    assert p.output is None
    assert inst.pipe._interrupt is False
    after = rj.run(SD, small)[0].read()
    assert after == before  # same pipeline, same result: nothing left over from the canceled run


def test_folder_refs_absolute_and_relative(hub, monkeypatch):
    chunks = [str(e) for e in rj.stream(f"hf:{hub['gpt2']}", {"prompt": "hi", "max_new_tokens": 8, "seed": 1})
              if isinstance(e, Output)]
    assert chunks
    monkeypatch.chdir(hub["gpt2"].parent)
    assert input_properties(rj.schema("hf:./gpt2"))[0][0] == "prompt"
    from replicate_jupyter import hf

    assert hf.resolve("gpt2").folder == hub["gpt2"]  # not in the cache, but a folder here
    (hub["gpt2"].parent / "tiny").mkdir(exist_ok=True)
    (hub["gpt2"].parent / "tiny" / "sd").mkdir(exist_ok=True)
    assert hf.resolve("tiny/sd").folder.parent.name == "snapshots"  # the cache wins over a same-named folder
    props = input_properties(rj.schema(f"hf:{hub['sd']}"))  # a diffusers folder, resolved without loading
    assert props[2][0] == "image"


# ----- text ----------------------------------------------------------------------------------------
def test_text_streams_in_order_and_is_seeded(hub):
    inp = {"prompt": "hello", "max_new_tokens": 40, "temperature": 1.0, "seed": 11}
    t0 = time.perf_counter()
    events = list(rj.stream(GPT2, inp))
    took = time.perf_counter() - t0
    outs = [e for e in events if isinstance(e, Output)]
    assert [e.index for e in outs] == list(range(len(outs)))
    assert len(outs) > 3  # token by token, not one blob
    done = events[-1]
    assert isinstance(done, Completed) and done.status == "succeeded"
    p = rj.predictions.list()[0]
    assert "".join(str(e) for e in outs) == "".join(p.output)
    assert p.progress[1] == 40 and 0 < p.progress[0] <= 40
    again = rj.run(GPT2, inp)
    assert "".join(again) == "".join(p.output)
    other = rj.run(GPT2, {**inp, "seed": 12})
    assert "".join(other) != "".join(p.output)
    print(f"tiny gpt2: 40 tokens streamed in {took:.2f}s (cold)")


def test_text_cancel_stops_generation(hub):
    rj.run(GPT2, {"prompt": "warm", "max_new_tokens": 1, "seed": 0})
    from replicate_jupyter import api

    p = api.prepare(GPT2, {"prompt": "go", "max_new_tokens": 4096, "seed": 5})
    first = threading.Event()
    p.subscribe(lambda _p, e: isinstance(e, Output) and (first.set(), _p.cancel()))
    api.start(p)
    p.wait(60)
    assert first.is_set()
    assert p.status == "canceled"
    assert p.progress is None or p.progress[0] < 900  # far from the 1024-token context
    assert "past the model's context" in p.logs  # 4096 clamped to what fits
    assert rj.run(GPT2, {"prompt": "again", "max_new_tokens": 3, "seed": 1})


def test_chat_template_models_get_the_prompt_as_a_user_message(hub, tmp_path):
    template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
                "{% if add_generation_prompt %}<assistant>{% endif %}")
    folder = build_tiny_gpt2(tmp_path / "chat", chat_template=template)
    from replicate_jupyter import hf

    cls = hf.predictor_class(str(folder))
    inst = cls()
    inst.setup()
    ids, _mask = inst._encode("hi")
    assert inst.tokenizer.decode(ids[0]) == "<user>hi<assistant>"
    out = rj.run(f"hf:{folder}", {"prompt": "hi", "max_new_tokens": 5, "seed": 2 ** 40})  # seeds past 32 bits work
    assert isinstance(out, list) and len("".join(out)) > 0


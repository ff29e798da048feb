"""The two embedded models (`local/shapes`, `local/tiny-lm`), run for real from their shipped weights.

Each predictor is instantiated directly, set up once per module and driven with few steps/tokens
so the file stays fast on a shared 2-core machine.
"""
from __future__ import annotations

import importlib.util
import sys
import threading
from pathlib import Path

import diffusers  # noqa: F401,E402  (the [local] extra: missing must fail, not skip)
import numpy as np
import pytest
import torch  # noqa: F401,E402
import transformers  # noqa: F401,E402
from PIL import Image

from replicate_jupyter import errors  # noqa: E402
from replicate_jupyter.models import DESCRIPTIONS, EMBEDDED  # noqa: E402
from replicate_jupyter.prediction import events  # noqa: E402
from replicate_jupyter.runners import context  # noqa: E402


def _load(ref: str):
    """Load a `<path>/predict.py:Predictor` reference the way a runner would (by file path)."""
    path, cls = ref.rsplit(":", 1)
    name = "embedded_" + Path(path).parent.name
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return getattr(mod, cls)


class Recorder:
    """A RunContext that records events and can cancel after a given progress step."""

    def __init__(self, cancel_after: int | None = None):
        self.events: list = []
        self.cancel_after = cancel_after
        self.ctx = context.RunContext(emit=self.emit, cancel_event=threading.Event())

    def emit(self, ev) -> None:
        self.events.append(ev)
        if isinstance(ev, events.Progress) and ev.step == self.cancel_after:
            self.ctx.cancel_event.set()

    def of(self, kind):
        return [e for e in self.events if isinstance(e, kind)]

    def run(self, fn, *args, **kwargs):
        prev = context.activate(self.ctx)
        try:
            return fn(*args, **kwargs)
        finally:
            context.activate(prev)


def test_registry_points_at_predictor_files():
    assert set(EMBEDDED) == {"local/shapes", "local/tiny-lm"} == set(DESCRIPTIONS)
    for ref in EMBEDDED.values():
        path, cls = ref.rsplit(":", 1)
        assert Path(path).is_absolute() and Path(path).is_file() and cls == "Predictor"


# ---------------------------------------------------------------- local/shapes


@pytest.fixture(scope="module")
def shapes():
    p = _load(EMBEDDED["local/shapes"])()
    p.setup()
    return p


def _shapes(p, **kw):
    args = dict(prompt="a red square on a white background", negative_prompt="", num_outputs=1,
                num_inference_steps=4, guidance_scale=3.0, seed=1, output_format="png")
    args.update(kw)
    return p.predict(**args)


@pytest.mark.parametrize("fmt", ["png", "webp"])
def test_shapes_returns_files_of_the_requested_format(shapes, fmt):
    paths = _shapes(shapes, num_outputs=3, output_format=fmt, num_inference_steps=2)
    assert len(paths) == 3
    for p in paths:
        img = Image.open(p)
        assert img.format == fmt.upper() and img.size == (256, 256) and str(p).endswith("." + fmt)


def test_shapes_is_deterministic_for_a_seed(shapes):
    a = [np.asarray(Image.open(p)) for p in _shapes(shapes, num_outputs=2, seed=7)]
    b = [np.asarray(Image.open(p)) for p in _shapes(shapes, num_outputs=2, seed=7)]
    c = [np.asarray(Image.open(p)) for p in _shapes(shapes, num_outputs=2, seed=8)]
    assert all((x == y).all() for x, y in zip(a, b))
    assert not all((x == y).all() for x, y in zip(a, c))


def test_shapes_draws_a_red_thing_on_white(shapes):
    (path,) = _shapes(shapes, num_inference_steps=10, seed=3)
    a = np.asarray(Image.open(path).convert("RGB")).astype(int)
    corners = np.concatenate([a[:8, :8].reshape(-1, 3), a[-8:, -8:].reshape(-1, 3)])
    assert corners.min() > 200, "background should be white"
    fg = a[np.abs(a - 250).sum(axis=2) > 150]
    assert len(fg) > 0.03 * a.shape[0] * a.shape[1], "there should be a visible shape"
    r, g, b = np.median(fg, axis=0)
    assert r > 160 and g < 90 and b < 90, f"foreground should be red, got {(r, g, b)}"


def test_shapes_reports_progress_previews_and_the_understood_prompt(shapes):
    rec = Recorder()
    paths = rec.run(_shapes, shapes, prompt="a lovely blue ring", num_inference_steps=5)
    assert len(paths) == 1
    assert [(e.step, e.total) for e in rec.of(events.Progress)] == [(i, 5) for i in range(1, 6)]
    previews = rec.of(events.Preview)
    assert previews and all(isinstance(e.image, Image.Image) for e in previews)
    logs = "".join(e.text for e in rec.of(events.Log))
    assert "colour=blue shape=ring" in logs and "ignored: lovely" in logs


def test_shapes_cancel_stops_at_the_next_step(shapes):
    rec = Recorder(cancel_after=2)
    with pytest.raises(errors.Canceled):
        rec.run(_shapes, shapes, num_inference_steps=10)
    assert [e.step for e in rec.of(events.Progress)] == [1, 2]


def test_shapes_prompt_parser_names_what_it_ignored():
    from replicate_jupyter.models.shapes.prompt import parse

    p = parse("Lovely pink stars on grey")
    assert (p.color, p.shape, p.background, p.ignored) == ("pink", "star", "gray", ["lovely"])
    assert parse("a teal donut, cream background").describe() == "understood: colour=cyan shape=ring background=cream"
    assert parse("").color is None


# ---------------------------------------------------------------- local/tiny-lm


@pytest.fixture(scope="module")
def tiny_lm():
    p = _load(EMBEDDED["local/tiny-lm"])()
    p.setup()
    return p


def _lm(p, **kw):
    args = dict(prompt="The", max_new_tokens=40, temperature=0.8, top_p=0.95, seed=5)
    args.update(kw)
    return list(p.predict(**args))


def test_tiny_lm_streams_chunks_deterministically(tiny_lm):
    a, b = _lm(tiny_lm), _lm(tiny_lm)
    assert len(a) >= 5 and all(isinstance(c, str) and c for c in a)
    assert a == b
    assert "".join(_lm(tiny_lm, seed=6)) != "".join(a)


def test_tiny_lm_uses_no_deprecated_transformers_api(caplog):
    """The embedded model must keep working when transformers moves on: 5.24 renamed the KV
    cache (`past_key_values` → `cache`, removal announced for 5.40)."""
    import logging
    import warnings

    from transformers.utils import logging as tlog

    tlog.warning_once.cache_clear()  # once-per-process warnings another test may have used up
    p = _load(EMBEDDED["local/tiny-lm"])()
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING, logger="transformers"):
        warnings.simplefilter("always")
        p.setup()
        _lm(p, max_new_tokens=8)
    said = [str(w.message) for w in caught if issubclass(w.category, (DeprecationWarning, FutureWarning))]
    said += [r.getMessage() for r in caplog.records if r.name.startswith("transformers")]
    assert not [m for m in said if "deprecat" in m.lower()], said


def test_tiny_lm_stream_equals_full_greedy_decode(tiny_lm):
    """Greedy-ish sampling through the KV-cache loop must match transformers' own greedy decode,
    and the concatenated chunks must equal the tokenizer's decode of the whole sequence."""

    prompt = "Café → the"
    chunks = _lm(tiny_lm, prompt=prompt, temperature=0.01, top_p=0.0, max_new_tokens=50)
    ids = [tiny_lm.eos] + tiny_lm.tokenizer.encode(prompt).ids
    out = tiny_lm.model.generate(torch.tensor([ids]), max_new_tokens=50, do_sample=False,
                                 pad_token_id=tiny_lm.eos, eos_token_id=tiny_lm.eos)
    new = [t for t in out[0, len(ids):].tolist() if t != tiny_lm.eos]
    assert "".join(chunks) == tiny_lm.tokenizer.decode(new)


def test_tiny_lm_multibyte_characters_survive_token_splits(tiny_lm):
    import codecs

    text = "naïve café → 漢字 ✓"
    ids = tiny_lm.tokenizer.encode(text).ids
    dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pieces = [dec.decode(tiny_lm.token_bytes[i]) for i in ids] + [dec.decode(b"", final=True)]
    assert "".join(pieces) == text


def test_tiny_lm_progress_and_cancel(tiny_lm):
    rec = Recorder()
    text = "".join(rec.run(_lm, tiny_lm, max_new_tokens=12))
    steps = [e.step for e in rec.of(events.Progress)]
    assert text and steps == list(range(1, len(steps) + 1)) and all(e.total == 12 for e in rec.of(events.Progress))

    rec = Recorder(cancel_after=3)
    got: list[str] = []
    with pytest.raises(errors.Canceled):
        rec.run(lambda: got.extend(tiny_lm.predict(prompt="The", max_new_tokens=50, temperature=0.8,
                                                    top_p=0.95, seed=5)))
    assert [e.step for e in rec.of(events.Progress)] == [1, 2, 3]

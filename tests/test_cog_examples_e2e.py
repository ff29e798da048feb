"""The public replicate/cog-examples models (our copies under tests/predictors/cog_examples, fetched
at no test time) run unchanged the two ways a user runs them: `rj.run(folder)` on `local` (a Cog
folder runs in a kernel-side Cog process, its folder as working directory) and through
`replicate-jupyter serve` on `workers` — with the outputs Cog documents for them."""
from __future__ import annotations

import os
import pathlib

import pytest
from test_workers import Serve

import replicate_jupyter as rj
from replicate_jupyter.runners.workers import pool

EXAMPLES = pathlib.Path(__file__).resolve().parent / "predictors" / "cog_examples"

CASES = [  # folder, input, the output Cog gives (file outputs: the file's bytes)
    ("hello_world", {"text": "world"}, "hello world"),
    ("canary", {"text": "world"}, "hello there, world"),
    ("hello_image", {}, (EXAMPLES / "hello_image" / "hello.webp").read_bytes()),
    ("hello_context", {"name": "Ada"}, "hello Ada, from nobody (0 context keys)"),
    ("hello_train", {"text": "x"}, "hello x"),
    ("notebook", {"name": "Ada"}, "hello, Ada"),
    ("hello_concurrency", {"total": 3, "interval": 0}, "Apple\nBanana\nOrange"),
    ("blur", {"image": "BLUR_INPUT", "blur": 2}, "BLURRED"),
]


def _blur_input(tmp_path: pathlib.Path) -> pathlib.Path:
    from PIL import Image

    src = tmp_path / "in.png"
    img = Image.new("RGB", (24, 24), (0, 0, 0))
    img.paste((255, 255, 255), (8, 8, 16, 16))
    img.save(src)
    return src


def _check(out, expected) -> None:
    if expected == "BLURRED":  # blur's documented output: the same picture with soft edges
        import io

        from PIL import Image

        blurred = Image.open(io.BytesIO(out))
        assert blurred.size == (24, 24) and 0 < blurred.getpixel((7, 12))[0] < 255
    else:
        assert out == expected


def _inputs(given, tmp_path):
    return {k: (str(_blur_input(tmp_path)) if v == "BLUR_INPUT" else v) for k, v in given.items()}


def _plain(out):
    """The output as Cog documents it: text joined for a token stream, bytes for a file."""
    if isinstance(out, list) and all(isinstance(x, str) for x in out):
        return "".join(out)
    if hasattr(out, "read"):
        return out.read()
    return out


@pytest.mark.parametrize("folder, given, expected", CASES, ids=[c[0] for c in CASES])
def test_runs_unchanged_on_local(folder, given, expected, tmp_path):
    cwd = os.getcwd()
    out = rj.run(str(EXAMPLES / folder), input=_inputs(given, tmp_path), on="local")
    _check(_plain(out), expected)
    assert os.getcwd() == cwd  # the model ran from its folder; the kernel's cwd is untouched


@pytest.mark.parametrize("folder, given, expected", CASES, ids=[c[0] for c in CASES])
def test_runs_unchanged_through_serve_on_workers(folder, given, expected, tmp_path):
    worker = Serve(str(EXAMPLES / folder))
    try:
        pool().add(worker.url)
        names = [r["model"] for r in pool().list() if r["url"] == worker.url]
        p = rj.predictions.create(names[0] if names and names[0] else str(EXAMPLES / folder),
                                  input=_inputs(given, tmp_path), on="workers").wait(120)
        assert p.status == "succeeded", (p.error, p.logs)
        assert p.backend == "workers" and p.metrics.get("worker") == worker.url
        _check(_plain(p.output), expected)
    finally:
        try:
            pool().remove(worker.url)
        finally:
            worker.stop()

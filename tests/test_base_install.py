"""The base install (`pip install replicate-jupyter`, no `[local]` extra), simulated.

This venv has torch, diffusers and transformers, so the base install is made in a subprocess
(a plain Python, or a real kernel) by a `sitecustomize` import hook that makes them, and the
rest of what the extra brings, absent: found by no finder, so `import torch` raises
`ModuleNotFoundError` and `importlib.util.find_spec("torch")` is None, as on a real base install. There,
the embedded models and `hf:` pipelines must fail when they are resolved, with one error that
says the pip command (`MissingExtra`, a `ModelNotFound`), before anything is dispatched or
charged, and the kernel must go on running models that need no extra.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from kernel_helpers import ROOT, execute, make_notebook, text_of

#: everything the [local] extra brings (pyproject.toml) that the base install lacks
EXTRA = "torch,diffusers,transformers,accelerate,safetensors,tokenizers,huggingface_hub,numpy"
PHRASE = "needs the [local] extra: pip install 'replicate-jupyter[local]'"

HOOK = '''
import importlib.machinery
import os

_BLOCKED = frozenset(filter(None, os.environ.get("RJ_TEST_BLOCK", "").split(",")))
_find_spec = importlib.machinery.PathFinder.find_spec.__func__


def _absent(cls, fullname, path=None, target=None):
    """As if the package were not installed: `find_spec` finds nothing (so libraries that probe
    for optional packages see it absent) and `import` raises ModuleNotFoundError naming it."""
    if fullname.partition(".")[0] in _BLOCKED:
        return None
    return _find_spec(cls, fullname, path, target)


importlib.machinery.PathFinder.find_spec = classmethod(_absent)
'''


def hooked_env(tmp_path, blocked: str = EXTRA) -> dict[str, str]:
    hook = tmp_path / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(HOOK)
    return {"PYTHONPATH": os.pathsep.join([str(hook), str(ROOT)]), "RJ_TEST_BLOCK": blocked}


def run_python(tmp_path, code: str, blocked: str = EXTRA) -> dict:
    env = {**os.environ, **hooked_env(tmp_path, blocked)}
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                         timeout=120, cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def make_hf_folders(tmp_path) -> tuple[str, str]:
    """A diffusers pipeline folder and a causal LM folder as `hf.resolve` reads them (JSON only;
    the weights file is never opened, the run fails before)."""
    diff = tmp_path / "tiny-diffusion"
    diff.mkdir()
    (diff / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    lm = tmp_path / "tiny-lm"
    lm.mkdir()
    (lm / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}))
    (lm / "model.safetensors").write_bytes(b"\0" * 8)
    return str(diff), str(lm)


PROBE = '''
import json, sys
try:
    import torch
    blocked = False
except ModuleNotFoundError:
    blocked = True
import replicate_jupyter
from replicate_jupyter.errors import ModelNotFound, ReplicateJupyterError
from replicate_jupyter.model import predictors

out = {"hook": blocked, "light": not ({"torch", "diffusers", "transformers"} & set(sys.modules)), "refs": {}}
for ref in ["local/shapes", "local/tiny-lm"] + REFS:
    try:
        predictors.load(ref)
        got = ["loaded", "", False]
    except ModuleNotFoundError as exc:
        got = ["ModuleNotFoundError", str(exc), False]
    except ModelNotFound as exc:
        got = [type(exc).__name__, str(exc), isinstance(exc, ReplicateJupyterError)]
    out["refs"][ref] = got + [predictors.needs_extra(ref)]
print(json.dumps(out))
'''


def test_without_the_extra_every_embedded_and_hf_model_says_the_pip_command(tmp_path):
    diff, lm = make_hf_folders(tmp_path)
    out = run_python(tmp_path, f"REFS = {['hf:' + diff, 'hf:' + lm, 'hf:acme/not-cached']!r}\n" + PROBE)
    assert out["hook"] and out["light"]  # the hook made torch absent, and nothing heavy was imported
    for ref, (kind, msg, in_tree, note) in out["refs"].items():
        assert kind == "MissingExtra" and in_tree, (ref, kind, msg)
        assert msg.startswith(f"{ref} {PHRASE}"), msg
        assert "torch" in msg  # names what is missing
        assert note == PHRASE  # what a listing shows
    assert out["refs"]["local/shapes"][1] == f"local/shapes {PHRASE} (not installed: torch, diffusers, safetensors)"


def test_a_missing_pipeline_library_is_named_for_the_kind_that_needs_it(tmp_path):
    """torch present, diffusers or transformers absent: the hf: model of that kind (and
    local/tiny-lm, whose transformers import is inside setup(), so only a check before the run
    can catch it) is refused; the other kind still resolves."""
    diff, lm = make_hf_folders(tmp_path)
    refs = ["hf:" + diff, "hf:" + lm]
    no_diffusers = run_python(tmp_path, f"REFS = {refs!r}\n" + PROBE, blocked="diffusers")["refs"]
    assert no_diffusers["hf:" + diff][:2] == ["MissingExtra", f"hf:{diff} {PHRASE} (not installed: diffusers)"]
    assert no_diffusers["hf:" + lm][0] == "loaded"
    assert no_diffusers["local/shapes"][0] == "MissingExtra" and no_diffusers["local/tiny-lm"][0] == "loaded"
    no_transformers = run_python(tmp_path, f"REFS = {refs!r}\n" + PROBE, blocked="transformers")["refs"]
    assert no_transformers["hf:" + lm][:2] == ["MissingExtra", f"hf:{lm} {PHRASE} (not installed: transformers)"]
    assert no_transformers["local/tiny-lm"][:2] == ["MissingExtra",
                                                    f"local/tiny-lm {PHRASE} (not installed: transformers)"]
    assert no_transformers["hf:" + diff][0] == "loaded" and no_transformers["local/shapes"][0] == "loaded"


def test_with_the_extra_nothing_is_marked():
    from replicate_jupyter.model import predictors

    assert predictors.needs_extra("local/shapes") is None and predictors.needs_extra("local/tiny-lm") is None
    assert predictors.needs_extra("../tests/predictors/echo.py") is None


CHECK = ("print(json.dumps([len(rj.predictions.list()), len(rj.ledger()), rj.ledger().total(),"
         " sorted({'torch', 'diffusers', 'transformers'} & set(sys.modules))]))")


@pytest.fixture(scope="module")
def base_kernel(tmp_path_factory):
    """One real kernel on the simulated base install, shared by the tests below."""
    tmp = tmp_path_factory.mktemp("base")
    cells = [
        "%load_ext replicate_jupyter\nimport json, sys, replicate_jupyter as rj",
        "%replicate models",
        ("%%replicate local/shapes\nprompt: a red star on a black background", ["raises-exception"]),
        ("%%replicate local/tiny-lm\nprompt: The", ["raises-exception"]),
        "try:\n    rj.run('local/shapes', {'prompt': 'a red star'})\nexcept rj.ModelNotFound as exc:\n"
        "    print(json.dumps([type(exc).__name__, str(exc)]))",
        CHECK,
        "%%replicate ../tests/predictors/echo.py:Predictor\nstill working",
        CHECK,
    ]
    return execute(make_notebook(cells), env=hooked_env(tmp), timeout=120)


def test_running_an_embedded_model_fails_before_dispatch_in_a_real_kernel(base_kernel):
    nb = base_kernel
    for cell, ref in ((nb.cells[2], "local/shapes"), (nb.cells[3], "local/tiny-lm")):
        (out,) = cell.outputs  # the error alone: no card, nothing started
        shown = text_of(cell)
        assert shown.startswith(f"MissingExtra: {ref} {PHRASE}"), shown
        assert "ModuleNotFoundError" not in json.dumps(out)
    kind, msg = json.loads(text_of(nb.cells[4]).strip().splitlines()[-1])
    assert kind == "MissingExtra" and msg.startswith(f"local/shapes {PHRASE}")  # from Python too
    assert json.loads(text_of(nb.cells[5]).strip().splitlines()[-1]) == [0, 0, 0, []]  # nothing ran or was charged
    assert ">still working" in text_of(nb.cells[6])  # the kernel goes on, running what needs no extra
    assert json.loads(text_of(nb.cells[7]).strip().splitlines()[-1])[:2] == [1, 1]


def test_models_lists_the_embedded_models(base_kernel):
    listing = text_of(base_kernel.cells[1])
    assert "local/shapes" in listing and "local/tiny-lm" in listing


def test_models_marks_the_embedded_models_as_needing_the_extra(base_kernel):
    rows = [line for line in text_of(base_kernel.cells[1]).splitlines() if line.startswith("local/")]
    assert len(rows) == 2 and all(PHRASE in row for row in rows), rows

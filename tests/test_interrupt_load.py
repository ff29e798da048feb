"""A kernel interrupt (or a cancel) while a model loads never half-imports anything (review C, #2).

Loading a model imports its predictor file, and torch with it; its setup may import more
(tiny-lm's imports transformers). Interrupted in the middle of an import, a module stays
half-imported and every later run fails ("partially initialized module 'torch'"). The import
now runs on a loader thread (model/loader.py) and a setup is never stopped by raising into it
(runners/setups.py): the interrupted cell says so in one line, the load finishes in the
background, and the next run works, without loading again.

Real kernels (nbclient, interrupted at several moments of a cold embedded model's load), and
real predictor files with a slow import or a slow setup, interrupted with a real SIGINT.
"""
from __future__ import annotations

import os
import pathlib
import signal
import sys
import textwrap
import threading
import time

import pytest

import replicate_jupyter as rj
from replicate_jupyter.errors import ReplicateJupyterError
from replicate_jupyter.model import loader
from replicate_jupyter.session import session

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from kernel_helpers import ROOT, execute, make_notebook, outputs_of, text_of  # noqa: E402

# after the interrupted cell: nothing may be half-imported, and torch must work
_HEALTH = textwrap.dedent("""\
    import sys
    half = sorted(n for n, m in list(sys.modules.items())
                  if getattr(getattr(m, "__spec__", None), "_initializing", False))
    import torch
    torch.distributed, torch.fx, torch.nn.functional.relu(torch.ones(2))
    print("half-imported:", half)
""")


def _errors(cell) -> list[dict]:
    return [o for o in outputs_of(cell) if o.get("output_type") == "error"]


@pytest.mark.parametrize("model,body,moments", [
    # moments inside the imports (torch, transformers/diffusers) and, later, inside setup
    ("local/tiny-lm", "prompt: The\nmax_new_tokens: 50", (0.3, 1.5, 3.5)),
    ("local/shapes", "prompt: a red star\nnum_inference_steps: 30", (1.0,)),
])
def test_interrupting_a_cold_start_leaves_the_kernel_working(model, body, moments):
    for at in moments:  # each moment in a fresh kernel: the model, and torch, not yet imported
        cell = f"%%replicate {model} --seed 1\n{body}"
        nb = execute(make_notebook(["%load_ext replicate_jupyter", cell, cell, _HEALTH]), cwd=ROOT,
                     allow_errors=True, interrupt={1: at}, timeout=180)
        interrupted, after, health = nb.cells[1], nb.cells[2], nb.cells[3]
        errors = _errors(interrupted)
        if errors:  # an interrupt that came after the run ended is no error; one during it is one line
            assert len(errors) == 1, (at, errors)
            err = errors[0]
            assert err["ename"] in ("LoadInterrupted", "Interrupted"), (at, err["ename"], err["evalue"])
            assert len(err["traceback"]) == 1, (at, err["traceback"])  # no frames of our internals
            assert "interrupt" in err["evalue"], (at, err["evalue"])
        assert not _errors(after), (at, [e["ename"] + ": " + e["evalue"] for e in _errors(after)])
        assert f"{model} · succeeded" in text_of(after), (at, text_of(after))
        assert not _errors(health) and "half-imported: []" in text_of(health), (at, text_of(health))


# ----- in this process, with a real SIGINT ----------------------------------------------------------
@pytest.fixture(autouse=True)
def clean_session():
    session.ledger.reset()
    yield


def _interrupt_after(seconds: float) -> threading.Timer:
    timer = threading.Timer(seconds, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    return timer


def _write(folder: pathlib.Path, name: str, source: str) -> pathlib.Path:
    path = folder / name
    path.write_text(textwrap.dedent(source))
    return path


SLOW_IMPORT = """\
    import pathlib, time
    HERE = pathlib.Path(__file__).parent
    with open(HERE / "imports.log", "a") as f:
        f.write("start\\n")
    import helper  # a sibling of the predictor, imported on the loader thread too
    for _ in range(30):  # 1.5 s of module-level work, as `import torch` is
        time.sleep(0.05)
    with open(HERE / "imports.log", "a") as f:
        f.write("end\\n")
    from cog import BasePredictor

    class Predictor(BasePredictor):
        def predict(self, text: str = "x") -> str:
            return helper.shout(text)
"""


def test_interrupt_during_the_import_raises_one_line_and_the_import_completes(tmp_path):
    _write(tmp_path, "helper.py", "def shout(s):\n    return s.upper() + '!'\n")
    path = _write(tmp_path, "slowimport.py", SLOW_IMPORT)
    t0 = time.monotonic()
    _interrupt_after(0.3)
    with pytest.raises(KeyboardInterrupt) as info:
        rj.run(str(path), {"text": "hi"})
    assert time.monotonic() - t0 < 1.0  # the interrupt ended the wait at once
    assert isinstance(info.value, loader.LoadInterrupted) and isinstance(info.value, ReplicateJupyterError)
    assert str(info.value).startswith("interrupted while loading")
    # the next run right away waits for the import still going, which ran once, whole
    assert rj.run(str(path), {"text": "hi"}) == "HI!"
    assert (tmp_path / "imports.log").read_text() == "start\nend\n"
    assert not [n for n, m in list(sys.modules.items())
                if getattr(getattr(m, "__spec__", None), "_initializing", False)]


SLOW_SETUP = """\
    import pathlib, time
    from cog import BasePredictor
    HERE = pathlib.Path(__file__).parent

    class Predictor(BasePredictor):
        def setup(self):
            for _ in range(30):  # 1.5 s of loading, as a from_pretrained is
                time.sleep(0.05)
            with open(HERE / "setups.log", "a") as f:
                f.write("setup\\n")

        def predict(self, text: str = "x") -> str:
            return text + "."
"""


def test_interrupt_during_setup_cancels_and_the_setup_serves_the_next_run(tmp_path):
    path = _write(tmp_path, "slowsetup.py", SLOW_SETUP)
    rj.schema(str(path))  # imported: what follows is the setup alone
    _interrupt_after(0.4)
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        rj.run(str(path), {"text": "a"})
    assert time.monotonic() - t0 < 1.0
    [p] = [q for q in rj.predictions.list() if q.model == "local/slowsetup"]
    assert p.status == "canceled" and "goes on loading in the background" in (p.error or ""), (p.status, p.error)
    assert rj.run(str(path), {"text": "b"}) == "b."  # waits for that setup: not a second one
    assert (tmp_path / "setups.log").read_text() == "setup\n"


def test_a_cancel_during_setup_is_at_once_and_the_model_warms_in_the_background(tmp_path):
    path = _write(tmp_path, "slowsetup2.py", SLOW_SETUP)
    rj.schema(str(path))
    p = rj.predictions.create(str(path), {"text": "a"})
    time.sleep(0.3)
    asked = time.monotonic()
    p.cancel()
    p.wait(5)
    assert p.status == "canceled" and time.monotonic() - asked < 0.5
    deadline = time.monotonic() + 10
    while not (tmp_path / "setups.log").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.1)
    q = rj.predictions.create(str(path), {"text": "b"}).wait()
    assert q.status == "succeeded" and q.output == "b." and "setup_time" not in q.metrics  # warm already
    assert (tmp_path / "setups.log").read_text() == "setup\n"


def test_a_library_that_sets_a_signal_handler_when_imported_still_loads(tmp_path):
    """`signal.signal` works on the main thread only: such a load runs again there."""
    path = _write(tmp_path, "sigpred.py", """\
        import signal
        signal.signal(signal.SIGUSR1, signal.getsignal(signal.SIGUSR1))
        from cog import BasePredictor

        class Predictor(BasePredictor):
            def predict(self, n: int = 1) -> int:
                return n + 1
    """)
    assert threading.current_thread() is threading.main_thread()
    assert rj.run(str(path), {"n": 2}) == 3

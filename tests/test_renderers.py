"""Renderers alone: bundles built from Predictions whose events are emitted by hand, with no
session, no kernel and no IPython shell; then their registration with IPython's own display
formatter (a real `DisplayFormatter`, the object a kernel's shell uses)."""
from __future__ import annotations

import ast
import io
import pathlib

import pytest
from IPython.core.formatters import DisplayFormatter
from PIL import Image

from replicate_jupyter.cost.ledger import TOTAL_KEY, Ledger
from replicate_jupyter.notebook import display as d
from replicate_jupyter.notebook import renderers
from replicate_jupyter.prediction import registry
from replicate_jupyter.prediction.events import Completed, Log, Output, Progress, Started
from replicate_jupyter.prediction.files import FileOutput
from replicate_jupyter.prediction.prediction import Prediction

ROOT = pathlib.Path(__file__).resolve().parent.parent / "replicate_jupyter"


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (0, 0, 255)).save(buf, format="PNG")
    return buf.getvalue()


def finished(model: str = "test/model", seconds: float = 2.0, output: object = "ok") -> Prediction:
    p = Prediction(model, {"prompt": "x"})
    p.emit(Started(hardware="gpu-a100-large"))
    p.emit(Log(text="hello\n"))
    p.emit(Output(value=output))
    p.emit(Completed(status="succeeded", metrics={"predict_time": seconds, "hardware": "gpu-a100-large"}))
    return p


def test_the_cost_line_shows_the_total_the_ledger_stamped_and_keeps_it():
    ledger = Ledger()
    first, second = finished(seconds=2.0), finished(seconds=3.0)
    ledger.record(first)
    ledger.record(second)
    assert first.metrics[TOTAL_KEY] == pytest.approx(2.0 * 0.0014)
    assert second.metrics[TOTAL_KEY] == pytest.approx(5.0 * 0.0014)
    line = d.cost_line(first)
    assert line == ("test/model · succeeded · 2.00 s · gpu-a100-large · $0.0028 · notebook total $0.0028")
    ledger.reset()  # the line is a function of the prediction alone: drawn again, it is the same
    ledger.record(finished(seconds=10.0))
    assert d.cost_line(first) == line
    assert d.cost_line(second).endswith("notebook total $0.007")
    # and it is what the final bundle carries, in every mime type
    bundle = d.render(second)
    assert "notebook total $0.007" in bundle["text/plain"] and "notebook total $0.007" in bundle["text/html"]
    assert bundle[d.MIME]["metrics"][TOTAL_KEY] == pytest.approx(0.007)


def test_a_prediction_in_no_ledger_has_no_notebook_total():
    p = finished()
    assert d.cost_line(p) == "test/model · succeeded · 2.00 s · gpu-a100-large · $0.0028"
    assert "notebook total" not in d.render(p)["text/plain"]


def test_the_sweep_summary_takes_the_last_stamped_total():
    ledger = Ledger()
    ledger.record(finished(seconds=1.0))  # an earlier cell
    a, b = finished(seconds=2.0), finished(seconds=3.0)
    ledger.record(b)
    ledger.record(a)
    line = d.summary_line([a, b])
    assert line == "2 predictions · 2 succeeded · 5.00 s · $0.007 · notebook total $0.0084"


def test_a_card_already_shown_in_the_running_cell_is_one_line_there_and_whole_elsewhere():
    p = finished(output=[FileOutput(png(), "a.png")])
    p.display_cell = 7
    assert d.prediction_bundle(p, current_cell=7) == {"text/plain": f"<Prediction {p.id} {p.model}>"}
    whole = d.prediction_bundle(p, current_cell=8)
    assert {d.MIME, "text/html", "text/plain", "image/png"} <= set(whole)
    assert set(d.prediction_bundle(p)) == set(whole)  # no cell given: the whole card


def test_a_running_prediction_renders_its_progress_and_no_cost_line():
    p = Prediction("test/steps", {})
    p.emit(Started(hardware="cpu"))
    p.emit(Progress(step=3, total=10))
    b = d.render(p)
    assert b[d.MIME]["status"] == "processing" and b[d.MIME]["progress"]["step"] == 3
    assert "step 3/10" in b["text/plain"] and "<progress" in b["text/html"]
    assert "cost:" not in b["text/plain"] and "image/png" not in b


def test_renderers_never_read_the_session():
    """Statically (display.py imports no session) and in effect (a session ledger with another
    total and another current cell change nothing)."""
    tree = ast.parse((ROOT / "notebook" / "display.py").read_text())
    names = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {n for n in names if n and "session" in n}, names
    from replicate_jupyter.session import session

    ledger = Ledger()
    p = finished()
    ledger.record(p)
    before = d.render(p)
    session.ledger.record(finished(seconds=100.0))
    old_cell, session.current_cell = session.current_cell, 12345
    p.display_cell = 12345
    try:
        assert d.render(p) == before
        assert d.prediction_bundle(p) == before  # the cell is an argument, not the session's
    finally:
        session.current_cell = old_cell
        session.ledger.reset()


def test_data_objects_show_what_the_registry_holds_and_their_repr_without_it():
    p, f, ledger = finished(), FileOutput(png(), "a.png"), Ledger()
    renderers.install()
    assert p._repr_mimebundle_()[d.MIME]["id"] == p.id
    assert "image/png" in f._repr_mimebundle_()
    assert "By cell" in ledger._repr_mimebundle_()["text/plain"]
    try:
        for cls in renderers.RENDERERS:
            registry.remove_renderer(cls)
        assert p._repr_mimebundle_() == {"text/plain": repr(p)}
        assert f._repr_mimebundle_() == {"text/plain": repr(f)}
        assert ledger._repr_mimebundle_() == {"text/plain": repr(ledger)}
    finally:
        renderers.install()
    assert d.MIME in p._repr_mimebundle_()


class _Shell:
    """What `register` uses of an IPython shell: its display formatter (a real one)."""

    def __init__(self) -> None:
        self.display_formatter = DisplayFormatter()


def test_register_puts_the_renderers_into_ipythons_display_formatter():
    shell = _Shell()
    p = finished()
    p.display_cell = None
    renderers.register(shell)
    try:
        data, _md = shell.display_formatter.format(p)
        assert data[d.MIME]["id"] == p.id and "notebook total" not in data["text/plain"]
        # IPython asks the formatter's table first: with the registry emptied, still rich
        registry.remove_renderer(Prediction)
        data, _md = shell.display_formatter.format(p)
        assert d.MIME in data
        f_data, _ = shell.display_formatter.format(FileOutput(png(), "a.png"))
        assert "image/png" in f_data
    finally:
        renderers.install()
        renderers.unregister(shell)
    mf = shell.display_formatter.mimebundle_formatter
    assert all(cls not in mf.type_printers for cls in renderers.RENDERERS)
    data, _md = shell.display_formatter.format(p)  # back to _repr_mimebundle_ → the registry
    assert d.MIME in data


def test_in_a_kernel_a_prediction_renders_richly_with_and_without_load_ext(run_cells):
    """A real kernel: plain `import replicate_jupyter` (no %load_ext) already shows a
    Prediction as the card's bundle; `%load_ext` puts the renderers into the shell's display
    formatter and `%unload_ext` takes them out (the objects still render, by the registry)."""
    import json

    from kernel_helpers import PREDICTORS, outputs_of, text_of

    echo = f"{PREDICTORS}/echo.py:Predictor"
    check = ("import json\nmf = get_ipython().display_formatter.mimebundle_formatter\n"
             "print(json.dumps([c.__name__ for c in mf.type_printers if c.__module__.startswith('replicate_jupyter')]))")
    nb = run_cells([
        f"import replicate_jupyter as rj\np = rj.predictions.create({echo!r}, input={{'text': 'hey'}}).wait(60)",
        "p",
        "%load_ext replicate_jupyter",
        check,
        "p",
        "%unload_ext replicate_jupyter",
        check + "\np",
    ])
    plain = [o for o in outputs_of(nb.cells[1]) if o.get("output_type") == "execute_result"]
    assert plain and d.MIME in plain[0]["data"] and ">hey" in plain[0]["data"]["text/plain"]
    shown = sorted(json.loads(text_of(nb.cells[3]).strip().splitlines()[-1]))
    assert shown == ["FileOutput", "FileOutputs", "Ledger", "Prediction"]
    loaded = [o for o in outputs_of(nb.cells[4]) if o.get("output_type") == "execute_result"]
    assert loaded and d.MIME in loaded[0]["data"]
    assert json.loads(text_of(nb.cells[6]).strip().splitlines()[0]) == []
    after = [o for o in outputs_of(nb.cells[6]) if o.get("output_type") == "execute_result"]
    assert after and d.MIME in after[0]["data"]

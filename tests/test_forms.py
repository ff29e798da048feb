"""Forms: widgets built from schemas (kinds, ranges, defaults, order, help), validation shown on
the fields, secrets, "Copy as cell"; then the form driven in a real kernel (nbclient), asserting
on the saved notebook."""
from __future__ import annotations

import json
import os
import pathlib
import textwrap
from typing import Optional

import ipywidgets as W
import pytest
from cog import BasePredictor, Input, Path, Secret
from test_schema import PUBLISHED_SDXL_INPUT, SDXL

from replicate_jupyter.model.validation import validate
from replicate_jupyter.notebook.cellparse import parse_body
from replicate_jupyter.notebook.forms import Form, form
from replicate_jupyter.notebook.forms.fields import UNSET
from replicate_jupyter.prediction.files import InputFile

ROOT = pathlib.Path(__file__).resolve().parent.parent
P = ROOT / "tests" / "predictors"


class Kinds(BasePredictor):
    def predict(
        self,
        text: str = Input(description="Text", min_length=2, max_length=10, regex="^[a-z]+$"),
        needed: int = Input(description="A required number", ge=0, le=9),
        size: int = Input(description="Size", choices=[256, 512, 768], default=512),
        plain: int = 7,
        bare: float = 0.5,
        flag: bool = Input(description="A flag", default=False),
        nothing: str = Input(default=None),
        opt: Optional[str] = None,
        tags: list[str] = Input(description="Tags", default=["a", "b"]),
        ratio: float = Input(default=1, ge=0, le=2),
        image: Path = Input(description="An image", default=None),
        images: list[Path] = Input(description="Several", default=None),
        api_key: Secret = Input(description="API key", default=None),
        mode: str = Input(choices=["fast", "slow"]),
    ) -> str:
        return ""


def _state_dump() -> str:
    """Every live widget's state, as a notebook save would store it."""
    return json.dumps(W.Widget.get_manager_state(drop_defaults=False), default=str)


def _upload(widget: W.FileUpload, name: str, data: bytes) -> None:
    """A file chosen in the browser: the state update the frontend sends, deserialised as the
    kernel does it."""
    widget.set_state({"value": [{"name": name, "type": "image/png", "size": len(data),
                                 "content": memoryview(data), "last_modified": 0}]})


# ----- building -----------------------------------------------------------------------------
def test_sdxl_kinds_ranges_defaults_order_help():
    f = form(SDXL)
    props = PUBLISHED_SDXL_INPUT["properties"]
    assert list(f.fields) == sorted(props, key=lambda n: props[n]["x-order"])  # x-order
    kind = {n: fl.kind for n, fl in f.fields.items()}
    assert kind["prompt"] == kind["negative_prompt"] == "textarea"
    assert isinstance(f.fields["prompt"].widget, W.Textarea)
    assert kind["image"] == kind["mask"] == "file"
    assert isinstance(f.fields["image"].upload, W.FileUpload) and isinstance(f.fields["image"].widget, W.Text)
    assert isinstance(f.fields["scheduler"].widget, W.Dropdown)
    assert [o[1] for o in f.fields["scheduler"].widget.options] == [
        "DDIM", "DPMSolverMultistep", "HeunDiscrete", "KarrasDPM", "K_EULER_ANCESTRAL", "K_EULER", "PNDM"]
    assert f.fields["scheduler"].widget.value == "K_EULER"
    # bounded numbers: slider + number box, linked; unbounded: a number box only
    steps = f.fields["num_inference_steps"]
    assert isinstance(steps.slider, W.IntSlider) and isinstance(steps.widget, W.IntText)
    assert (steps.slider.min, steps.slider.max, steps.slider.value, steps.widget.value) == (1, 500, 50, 50)
    g = f.fields["guidance_scale"]
    assert isinstance(g.slider, W.FloatSlider) and (g.slider.min, g.slider.max, g.widget.value) == (1, 50, 7.5)
    assert isinstance(f.fields["width"].widget, W.IntText) and f.fields["width"].slider is None
    assert f.fields["width"].widget.value == 1024
    steps.slider.value = 20
    assert steps.widget.value == 20
    steps.widget.value = 30
    assert steps.slider.value == 30
    # no default: a blank box means "not given"
    assert isinstance(f.fields["seed"].widget, W.Text) and f.fields["seed"].value() is UNSET
    assert isinstance(f.fields["apply_watermark"].widget, W.Checkbox) and f.fields["apply_watermark"].widget.value is True
    # help text under each field, the description
    for n, fl in f.fields.items():
        assert props[n]["description"] in fl.help.value.replace("&#x27;", "'")
    # the first four fields shown, the rest folded away
    assert f.primary == ["prompt", "negative_prompt", "image", "mask"]
    assert f.accordion is not None and f.accordion.selected_index is None
    assert "Advanced inputs (15)" in f.accordion.get_title(0)
    # defaults filled: the form's input is exactly the model's defaults
    steps.widget.value = 50
    assert validate(f.schema, f.values()) == validate(f.schema, {})


def test_every_kind_and_constraint():
    f = form(Kinds)
    k = {n: fl.kind for n, fl in f.fields.items()}
    assert k == {"text": "textarea", "needed": "int", "size": "enum", "plain": "int", "bare": "number", "flag": "bool",
                 "nothing": "text", "opt": "text", "tags": "list", "ratio": "number", "image": "file",
                 "images": "files", "api_key": "secret", "mode": "enum"}
    assert isinstance(f.fields["api_key"].widget, W.Password)
    assert [o[1] for o in f.fields["size"].widget.options] == [256, 512, 768]
    assert f.fields["mode"].widget.value is None and f.fields["mode"].required
    assert isinstance(f.fields["needed"].slider, W.IntSlider) and f.fields["needed"].widget.value == ""
    assert f.fields["tags"].widget.value == "a\nb" and f.fields["tags"].value() == ["a", "b"]
    # required fields marked; constraints named beside the field
    assert f.fields["text"].required and "*" in f.fields["text"].label.value
    assert not f.fields["plain"].required and "*" not in f.fields["plain"].label.value
    assert "min length 2" in f.fields["text"].label.value and "max length 10" in f.fields["text"].label.value
    assert "0 – 9" in f.fields["needed"].label.value
    # required fields are always shown, whatever their position
    assert {"text", "needed", "mode"} <= set(f.primary)


def test_validation_on_the_fields_and_run_disabled():
    f = form(Kinds)
    # required fields missing: the messages are validation's own
    assert f.run_button.disabled
    errors = {n: fl.error for n, fl in f.fields.items() if fl.error}
    assert set(errors) == {"text", "needed", "mode"}
    assert errors["text"].startswith("required")
    f.fields["text"].widget.value = "Ab"
    assert f.fields["text"].error == "pattern — got 'Ab', allowed: matching ^[a-z]+$"
    f.fields["text"].widget.value = "abc"
    f.fields["needed"].widget.value = "12"
    assert f.fields["needed"].error == "maximum — got 12, allowed: <= 9"
    assert f.fields["needed"].slider.value == 0  # out of range: the slider does not follow
    f.fields["needed"].widget.value = "x"
    assert f.fields["needed"].error == "type — got 'x', allowed: an integer"
    f.fields["needed"].slider.value = 4
    assert f.fields["needed"].widget.value == "4" and f.fields["needed"].error == ""
    assert f.run_button.disabled  # mode still missing
    assert f.run() is None and f.predictions == []
    f.fields["mode"].widget.value = "fast"
    assert not f.run_button.disabled and not any(fl.error for fl in f.fields.values())
    # the same rules as validation.validate, item by item for lists
    f.fields["image"].widget.value = "/no/such/file.png"
    assert "does not exist" in f.fields["image"].error and f.run_button.disabled
    f.fields["image"].widget.value = ""
    assert not f.run_button.disabled
    # an error on a folded field is named next to Run
    f.fields["ratio"].widget.value = 3.0
    assert "ratio" in f.status.value and "Advanced" in f.status.value


def test_files_by_path_and_upload(tmp_path):
    png = tmp_path / "cat.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 32)
    f = form(Kinds)
    img = f.fields["image"]
    img.widget.value = str(png)
    assert img.value() == str(png) and img.error == ""
    _upload(img.upload, "up.png", png.read_bytes())
    assert isinstance(img.value(), InputFile) and img.value().name == "up.png"
    assert img.upload.value == () and img.widget.value == ""  # the bytes left widget state
    assert "up.png" in img.widget.placeholder
    img.widget.value = "https://example.com/x.png"  # typing a path/URL replaces the upload
    assert img.value() == "https://example.com/x.png"


def test_secret_never_in_widget_state_history_or_cell():
    f = form(Kinds)
    f.fields["text"].widget.value = "abc"
    f.fields["needed"].widget.value = "3"
    f.fields["mode"].widget.value = "slow"
    f.fields["api_key"].widget.value = "s3cret-token"  # as typed in the browser
    assert f.fields["api_key"].widget.value == ""  # moved into the kernel at once
    assert f.values()["api_key"] == "s3cret-token"
    assert "s3cret" not in _state_dump()
    text = f.cell_text()
    assert "s3cret" not in text and "api_key: $api_key" in text
    kept = {k: v for k, v in f.values().items() if f.fields[k].kind != "secret"}
    entry = f.history.add(kept, {}, type("P", (), {"status": "starting", "metrics": {}})())
    assert "api_key" not in entry.values and "s3cret" not in _state_dump()


def test_copy_as_cell_round_trips_through_the_cell_language(tmp_path):
    png = tmp_path / "init.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"1" * 16)
    f = form(SDXL)
    tricky = "a {style} lighthouse: at dusk\n$x costs $5 {{literal}}"
    f.fields["prompt"].widget.value = tricky
    f.fields["negative_prompt"].widget.value = "$blurry"
    f.fields["image"].widget.value = str(png)
    f.fields["seed"].widget.value = "42"
    f.fields["guidance_scale"].slider.value = 3.0
    f.fields["scheduler"].widget.value = "DDIM"
    f.fields["apply_watermark"].widget.value = False
    text = f.cell_text()
    head, body = text.split("\n", 1)
    assert head == "%%replicate local/sdxl"
    assert "width" not in body and "num_outputs" not in body  # only what differs from defaults
    again = validate(f.schema, parse_body(body, {}, "prompt"))
    plain = lambda d: {k: v.to_json() if isinstance(v, InputFile) else v for k, v in d.items()}  # noqa: E731
    assert plain(again) == plain(validate(f.schema, f.values()))
    assert again["prompt"] == tricky and again["negative_prompt"] == "$blurry" and again["seed"] == 42
    # an upload cannot be copied: a comment says so
    _upload(f.fields["mask"].upload, "m.png", png.read_bytes())
    text = f.cell_text()
    assert "# mask: uploaded file 'm.png'" in text and "\nmask:" not in text
    g = Form("tests/predictors/echo.py:Predictor", on="local")
    assert g.cell_text() == "%%replicate tests/predictors/echo.py:Predictor --on local"


def test_history_restores_inputs():
    f = form(f"{P}/echo.py:Predictor")
    f.fields["text"].widget.value = "first"
    f.fields["times"].widget.value = 3
    p = f.run()
    f.wait(30)
    assert p.status == "succeeded" and p.input == {"text": "first", "times": 3}
    e = f.history.entries[0]
    assert e.button.description.startswith("#1 · succeeded") and "$" in e.button.description
    f.fields["text"].widget.value = "second"
    f.fields["times"].widget.value = 1
    e.button.click()
    assert f.values() == {"text": "first", "times": 3}


def test_reference_is_a_clear_error():
    from replicate_jupyter.errors import ModelNotFound

    with pytest.raises(ModelNotFound):
        form("tests/predictors/nope.py:Predictor")


# ----- in a real kernel ---------------------------------------------------------------------------
SECRET_PREDICTOR = '''
from cog import BasePredictor, Input, Secret
class Predictor(BasePredictor):
    def predict(self, text: str = Input(default="x"), token: Secret = Input(default=None)) -> str:
        return f"{text}:{len(token.get_secret_value()) if token else 0}"
'''


class Kernel:
    """A notebook executed cell by cell in one real kernel, keeping each execute_reply."""

    def __init__(self, cwd: pathlib.Path) -> None:
        import nbformat
        from nbclient import NotebookClient

        self.nb = nbformat.v4.new_notebook()
        self.nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        self.client = NotebookClient(self.nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(cwd)}})
        self.replies: dict[int, dict] = {}
        self.client.on_cell_executed = lambda cell, cell_index, execute_reply: self.replies.__setitem__(
            cell_index, execute_reply)

    def run(self, source: str) -> int:
        import nbformat

        cell = nbformat.v4.new_code_cell(textwrap.dedent(source).strip())
        self.nb.cells.append(cell)
        i = len(self.nb.cells) - 1
        self.client.execute_cell(cell, i)
        return i

    def text(self, i: int) -> str:
        return "".join(o.get("text", "") for o in self.nb.cells[i].outputs if o.output_type == "stream")

    def saved(self):
        import nbformat

        return nbformat.reads(nbformat.writes(self.nb), as_version=4)


def test_form_in_a_real_kernel(tmp_path):
    (tmp_path / "secret_pred.py").write_text(SECRET_PREDICTOR)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    k = Kernel(ROOT)
    with k.client.setup_kernel(env=env):
        k.run("""
            %load_ext replicate_jupyter
            import json, time
            import replicate_jupyter as rj
        """)
        form_cell = k.run("form = rj.form('tests/predictors/echo.py:Predictor'); form")
        click = k.run("""
            form.fields['text'].widget.value = 'from the form'
            form.fields['times'].slider.value = 3
            form.run_button.click()
            p = form.wait(60)
            print(json.dumps({'input': p.input, 'status': p.status, 'values': form.values()}))
        """)
        got = json.loads(k.text(click))
        assert got["status"] == "succeeded"
        assert got["input"] == got["values"] == {"text": "from the form", "times": 3}

        # invalid values block Run, with validation's message on the field
        bad = k.run("""
            form.fields['times'].widget.value = 99
            form.run_button.click()
            print(json.dumps({'disabled': form.run_button.disabled, 'error': form.fields['times'].error,
                              'runs': len(form.predictions)}))
        """)
        assert json.loads(k.text(bad)) == {"disabled": True, "error": "maximum — got 99, allowed: <= 10", "runs": 1}

        # Copy as cell: set_next_input's payload comes back in the execute reply
        k.run("form.fields['times'].widget.value = 3")
        copy = k.run("form.copy_button.click()")
        payload = [pl for pl in k.replies[copy]["content"].get("payload", []) if pl.get("source") == "set_next_input"]
        assert len(payload) == 1 and payload[0]["replace"] is False
        cell_text = payload[0]["text"]
        assert cell_text.startswith("%%replicate tests/predictors/echo.py:Predictor\n")
        k.run(cell_text)  # the copied cell reproduces the same input
        same = k.run("print(json.dumps([rj.predictions.list()[0].input, form.predictions[0].input]))")
        a, b = json.loads(k.text(same))
        assert a == b == {"text": "from the form", "times": 3}

        # Cancel stops a running prediction (steps: 1000 × 50 ms)
        cancel = k.run("""
            sf = rj.form('tests/predictors/steps.py:Predictor'); display(sf)
            sf.fields['steps'].widget.value = 1000
            sf.run_button.click()
            time.sleep(0.6)
            running = (sf.cancel_button.disabled, sf.run_button.disabled)
            sf.cancel_button.click()
            q = sf.wait(30)
            print(json.dumps({'status': q.status, 'step': q.progress[0], 'running': running,
                              'after': (sf.cancel_button.disabled, sf.run_button.disabled)}))
        """)
        c = json.loads(k.text(cancel))
        assert c["status"] == "canceled" and 1 <= c["step"] < 1000
        assert c["running"] == [False, True] and c["after"] == [True, False]

        # secrets: never in outputs, widget state or the copied cell
        sec = k.run(f"""
            tf = rj.form({str(tmp_path / 'secret_pred.py') + ':Predictor'!r}); display(tf)
            tf.fields['token'].widget.value = 'hunter2-secret'
            tf.run_button.click(); r = tf.wait(30)
            tf.copy_button.click()
            print(r.output)
        """)
        assert k.text(sec).strip() == "x:14"
        assert "token: $token" in k.replies[sec]["content"]["payload"][0]["text"]

        # a click from the browser arrives as a comm message, outside any cell: the cell text
        # is shown in the form (there is no execute reply to carry set_next_input)
        mid = k.run("print(form.copy_button.model_id)")
        comm_id = k.text(mid).strip()
        msg = k.client.kc.session.msg("comm_msg", {"comm_id": comm_id, "data": {
            "method": "custom", "content": {"event": "click"}}})
        k.client.kc.shell_channel.send(msg)
        shown = k.run("""
            for _ in range(100):
                if form.cell_preview.value: break
                time.sleep(0.05)
            print(json.dumps([form.cell_preview.value, form.cell_preview.layout.display]))
        """)
        preview, disp = json.loads(k.text(shown))
        assert preview == cell_text and disp == ""
        assert not k.replies[shown]["content"].get("payload")  # nothing left to pop up later
        k.client.set_widgets_metadata()  # what "save widget state" would store

    nb = k.saved()
    saved = json.dumps({"outputs": [c.get("outputs", []) for c in nb.cells], "metadata": nb.metadata})
    assert "widgets" in nb.metadata  # nbclient saves the widget state, like "save widget state"
    assert "hunter2" not in saved  # (the test cell's own source typed it, as a user would)
    # the form's own cell holds the widget and, under it, the run's outputs and cost line
    outs = nb.cells[form_cell].outputs
    assert outs[0]["data"]["application/vnd.jupyter.widget-view+json"]
    assert outs[0]["data"]["text/plain"].startswith("replicate form: tests/predictors/echo.py:Predictor")
    result = outs[1]["data"]
    pred = result["application/vnd.replicate.prediction+json"]
    assert pred["status"] == "succeeded" and pred["input"] == {"text": "from the form", "times": 3}
    assert pred["output"] == ">from the form >from the form >from the form"
    assert "notebook total" in result["text/html"] and {"cost_usd", "predict_time", "hardware"} <= set(pred["metrics"])
    assert "cost:" in result["text/plain"] and ">from the form" in result["text/plain"]
    # the click cell itself shows nothing of the run: it all went to the form's cell
    assert not [o for o in nb.cells[click].outputs if o.output_type != "stream"]
    steps_result = [o for o in nb.cells[cancel].outputs if "application/vnd.replicate.prediction+json" in o.get("data", {})]
    assert steps_result and steps_result[0]["data"]["application/vnd.replicate.prediction+json"]["status"] == "canceled"


def test_each_kind_alone_lazy_value_round_trip_and_reset():
    """Fields without a form: an unbuilt field's value is what its fresh widgets hold; a value
    put back reads back the same; reset gives the default again."""
    from replicate_jupyter.notebook.forms.fields import KINDS, Layouts, build_field

    props = {n: fl.prop for n, fl in form(Kinds).fields.items()}  # as the form resolved them (enums)
    lay = Layouts()
    round_trip = {"text": "abc", "needed": 4, "size": 768, "plain": 3, "bare": 1.5, "flag": True, "nothing": "x",
                  "opt": "y", "tags": ["c", "d", "e"], "ratio": 0.25, "image": "/tmp/a.png",
                  "images": ["/tmp/a.png", "https://example.com/b.png"], "mode": "slow"}
    seen = set()
    for name, prop in props.items():
        fresh = build_field(name, prop, False, "text", lay)
        built = build_field(name, prop, False, "text", lay).build()
        assert type(fresh) is KINDS[fresh.kind] and not fresh.built
        assert fresh.value() == built.value(), name  # UNSET is one object: == holds for it too
        seen.add(fresh.kind)
        if name in round_trip:
            built.set_value(round_trip[name])
            assert built.value() == round_trip[name], name
            built.reset()
            default = build_field(name, prop, False, "text", lay).value()
            assert built.value() == default, name
    assert seen == set(KINDS) - {"yaml"}
    # a secret is never put back, and reset forgets it
    secret = build_field("api_key", props["api_key"], False, None, lay).build()
    secret.widget.value = "typed"
    assert secret.value() == "typed" and secret.widget.value == ""
    secret.set_value("from-history")
    assert secret.value() == "typed"
    secret.reset()
    fresh = build_field("api_key", props["api_key"], False, None, lay).value()
    assert secret.value() == fresh  # UNSET, or the empty default
    assert secret.value() != "typed"
    # anything else is YAML
    obj = build_field("cfg", {"type": "object", "default": {"a": 1}}, False, None, lay)
    assert obj.kind == "yaml" and obj.value() == {"a": 1}
    obj.set_value({"b": [1, 2]})
    assert obj.value() == {"b": [1, 2]}

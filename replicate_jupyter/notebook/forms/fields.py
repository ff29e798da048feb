"""One schema property → one form field: its widgets, its value, its error line.

The widget kinds follow what Replicate's model page draws for the same OpenAPI `Input`:
free text → Text (Textarea for prompts), bounded numbers → a slider linked to a number box,
unbounded numbers → a number box, booleans → a Checkbox, enums → a Dropdown, files → an upload
button beside a Text that takes a path or URL, secrets → a Password box whose value is kept
only in the kernel. Fields never check values themselves: the form validates the whole input
with `validation.validate` and hands each field its own messages.
"""
from __future__ import annotations

import html
import math
from typing import Any, Callable

import ipywidgets as W
from ipywidgets.widgets.widget_bool import CheckboxStyle
from ipywidgets.widgets.widget_string import DescriptionStyle, HTMLStyle, TextStyle

from replicate_jupyter.prediction.files import InputFile

__all__ = ["Field", "UNSET", "build_field", "is_prompt"]


class _Unset:
    """A field left blank: the input is not given (the model's default applies)."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()

class Layouts:
    """Layouts shared by the widgets of one form: a Layout per control would be most of the
    cost of building a big form (a 30-input schema builds in well under 50 ms)."""

    def __init__(self) -> None:
        self.full = W.Layout(width="100%")
        self.row = W.Layout(width="100%", align_items="center")
        self.slider = W.Layout(flex="1 1 auto", width="auto")
        self.box = W.Layout(width="9em", flex="0 0 auto")
        self.textarea = W.Layout(width="100%", height="5em")
        self.text_flex = W.Layout(flex="1 1 auto", width="auto")
        self.upload = W.Layout(width="auto", flex="0 0 auto")
        self.field = W.Layout(width="100%", margin="0 0 10px 0")
        self.note = W.Layout(width="100%", margin="0")
        self.html_style = HTMLStyle()
        self.text_style = TextStyle()
        self.desc_style = DescriptionStyle()
        self.slider_style = W.SliderStyle()
        self.check_style = CheckboxStyle()
        self.button_style = W.ButtonStyle()


def is_prompt(name: str, prop: dict, first_text: str | None) -> bool:
    """Prompts get a Textarea: the model's first text input, or any field named like one."""
    return name == first_text or "prompt" in name.lower() or (prop.get("maxLength") or 0) > 200


def _fmt(x: Any) -> str:
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return str(x)


def _float_step(lo: float, hi: float) -> float:
    span = float(hi) - float(lo)
    if span <= 0:
        return 0.01
    return 10 ** math.floor(math.log10(span)) / 100


class Field:
    """The widgets of one input and the conversion between them and an input value.

    `widget` is the control that holds the value (the number box for a slider pair, the path
    Text for a file); `slider`/`upload` are its companions. `value()` is what goes into the
    input dict (`UNSET` when blank), `set_value()` puts a value back (history, reset).

    Widgets are made on first use (`build()`, or reading `widget`/`container`/…): a form builds
    its first fields at once and the folded "Advanced inputs" only when opened, so a big schema
    shows at once. An unbuilt field's value is what its fresh widgets would hold.
    """

    def __init__(self, name: str, prop: dict, required: bool, kind: str, lay: Layouts) -> None:
        self.name = name
        self.prop = prop
        self.kind = kind
        self.has_default = "default" in prop
        self.default = prop.get("default")
        self.required = required and not self.has_default
        self.title = prop.get("title") or name
        self.description = prop.get("description") or ""
        self.error = ""
        self.built = False
        self.on_build: Callable[["Field"], None] | None = None  # the form places it when built
        self._w: W.Widget = None  # type: ignore[assignment]
        self._slider: W.Widget | None = None
        self._upload: W.FileUpload | None = None
        self._label: W.HTML = None  # type: ignore[assignment]
        self._help: W.HTML = None  # type: ignore[assignment]
        self._container: W.VBox = None  # type: ignore[assignment]
        self._file: InputFile | None = None  # an uploaded file, kept in the kernel only
        self._files: list[InputFile] = []
        self._secret = ""  # a secret, kept in the kernel only
        self._syncing = False
        self._on_change: Callable[[], None] | None = None
        self._lay = lay
        self._initial = _initial_value(kind, prop)
        if kind == "secret" and "default" in prop and prop["default"] is not None:
            self._secret = str(prop["default"])

    # ----- widgets, made on first use ---------------------------------------------------------
    def build(self) -> "Field":
        if not self.built:
            self.built = True
            _build_widgets(self)
            if self.on_build is not None:
                self.on_build(self)
        return self

    @property
    def widget(self) -> W.Widget:
        return self.build()._w

    @property
    def slider(self) -> W.Widget | None:
        return self.build()._slider

    @property
    def upload(self) -> W.FileUpload | None:
        return self.build()._upload

    @property
    def label(self) -> W.HTML:
        return self.build()._label

    @property
    def help(self) -> W.HTML:
        return self.build()._help

    @property
    def container(self) -> W.VBox:
        return self.build()._container

    def _raw(self) -> Any:
        return self._w.value if self.built else self._initial

    # ----- text shown around the control ---------------------------------------------------
    def hint(self) -> str:
        """Type and constraints, the way Replicate prints them beside a field name."""
        p = self.prop
        parts = []
        t = p.get("type")
        if "enum" in p:
            parts.append("choice")
        elif self.kind == "file":
            parts.append("file")
        elif self.kind == "secret":
            parts.append("secret")
        elif t:
            parts.append(t)
        lo, hi = p.get("minimum"), p.get("maximum")
        if lo is not None and hi is not None:
            parts.append(f"{_fmt(lo)} – {_fmt(hi)}")
        elif lo is not None:
            parts.append(f"≥ {_fmt(lo)}")
        elif hi is not None:
            parts.append(f"≤ {_fmt(hi)}")
        if p.get("minLength") is not None:
            parts.append(f"min length {p['minLength']}")
        if p.get("maxLength") is not None:
            parts.append(f"max length {p['maxLength']}")
        if p.get("pattern"):
            parts.append(f"pattern {p['pattern']}")
        return " · ".join(parts)

    def _label_html(self) -> str:
        star = ' <span style="color:#d33" title="required">*</span>' if self.required else ""
        hint = html.escape(self.hint())
        return (f'<b>{html.escape(self.title)}</b>{star} '
                f'<code style="font-size:85%;opacity:.75">{html.escape(self.name)}</code> '
                f'<span style="opacity:.6;font-size:85%">{hint}</span>')

    def _help_html(self) -> str:
        parts = []
        if self.description:
            parts.append(f'<div style="opacity:.7;font-size:90%;line-height:1.3">{html.escape(self.description)}</div>')
        if self.error:
            parts.append(f'<div class="rj-form-error" style="color:#d33;font-size:90%">⚠ {html.escape(self.error)}</div>')
        return "".join(parts)

    def set_error(self, message: str) -> None:
        if message != self.error:
            self.error = message
            if self.built:
                self._help.value = self._help_html()

    # ----- value ------------------------------------------------------------------------------
    def value(self) -> Any:
        k = self.kind
        v = self._raw()
        if k in ("text", "textarea"):
            return UNSET if v == "" and not self.has_default else v
        if k in ("int", "number"):
            if isinstance(v, str):  # the optional number box: blank means not given
                return _number_or_text(v.strip())
            return v
        if k == "bool":
            return v
        if k == "enum":
            return UNSET if v is None else v
        if k == "secret":
            return UNSET if self._secret == "" and not self.has_default else self._secret
        if k == "file":
            if self._file is not None:
                return self._file
            v = v.strip()
            return UNSET if v == "" else v
        if k == "files":
            items: list[Any] = list(self._files)
            items += [line.strip() for line in v.splitlines() if line.strip()]
            return items if items else UNSET
        if k == "list":
            items = [line for line in v.splitlines() if line.strip()]
            return items if items else UNSET
        # yaml: objects, unions, anything else
        text = v.strip()
        if not text:
            return UNSET
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            return text

    @property
    def is_upload(self) -> bool:
        return self._file is not None or bool(self._files)

    def set_value(self, v: Any) -> None:
        """Put a value back into the widgets (history, reset). Secrets are never put back."""
        self.build()
        k = self.kind
        w = self.widget
        blank = v is UNSET or v is None
        if k in ("text", "textarea"):
            w.value = "" if blank else str(v)
        elif k in ("int", "number"):
            if isinstance(w, W.Text):
                w.value = "" if blank else _fmt(v)
            elif not blank:
                try:
                    w.value = int(v) if k == "int" else float(v)
                except (TypeError, ValueError):
                    pass
        elif k == "bool":
            w.value = bool(v) if not blank else bool(self.default)
        elif k == "enum":
            options = [o[1] for o in w.options]
            w.value = v if v in options else (None if None in options else w.value)
        elif k == "file":
            if isinstance(v, InputFile):
                self._set_file(v)
            else:
                self._set_file(None)
                w.value = "" if blank else str(v)
        elif k == "files":
            vals = [] if blank else list(v)
            self._files = [x for x in vals if isinstance(x, InputFile)]
            w.value = "\n".join(str(x) for x in vals if not isinstance(x, InputFile))
            self._show_uploads()
        elif k == "list":
            w.value = "" if blank else "\n".join(str(x) for x in v)
        elif k == "yaml":
            if blank:
                w.value = ""
            else:
                import yaml

                w.value = v if isinstance(v, str) else yaml.safe_dump(v, default_flow_style=True).strip()

    def reset(self) -> None:
        if not self.built:
            self._file, self._files = None, []
            return  # fresh widgets already hold the default
        if self.kind == "secret":
            self._secret = ""
            self._show_secret()
            return
        self.set_value(self.default if self.has_default else UNSET)

    def observe(self, fn: Callable[[], None]) -> None:
        """Call `fn()` whenever the user changes this field."""
        self._on_change = fn
        if self.built:
            self._watch()

    def _watch(self) -> None:
        fn = self._on_change
        if fn is not None and self.kind != "secret":  # secrets report through _take_secret
            self._w.observe(lambda _c: fn(), names="value")

    # ----- secrets and uploads: kernel-side state ---------------------------------------------
    def _take_secret(self, change: dict) -> None:
        """The Password box is only a way in: its text moves into the kernel and the widget is
        emptied, so the secret never sits in widget state that a notebook save could keep."""
        if self._syncing or change["new"] == "":
            return
        self._secret = change["new"]
        self._syncing = True
        try:
            self.widget.value = ""
        finally:
            self._syncing = False
        self._show_secret()
        if self._on_change is not None:
            self._on_change()

    def _show_secret(self) -> None:
        self.widget.placeholder = "•••••••• set (kept in the kernel; type to replace)" if self._secret else "secret"

    def _take_upload(self, change: dict) -> None:
        """Uploaded bytes move into the kernel as an InputFile and the upload widget is
        emptied, so a notebook save does not carry the file in widget state."""
        if self._syncing or not change["new"]:
            return
        files = [InputFile(bytes(f["content"]), name=f["name"], content_type=f.get("type") or None)
                 for f in change["new"]]
        self._syncing = True
        try:
            self.upload.value = ()
            if self.kind == "file":
                self._file = files[0]
                self.widget.value = ""
                self._show_upload()
            else:
                self._files = self._files + files
                self._show_uploads()
        finally:
            self._syncing = False
        if self._on_change is not None:
            self._on_change()

    def _typed_path(self, change: dict) -> None:
        if not self._syncing and change["new"].strip() and self._file is not None:
            self._file = None
            self._show_upload()

    def _set_file(self, f: InputFile | None) -> None:
        self._file = f
        self._syncing = True
        try:
            self.widget.value = ""
        finally:
            self._syncing = False
        self._show_upload()

    def _show_upload(self) -> None:
        f = self._file
        self.widget.placeholder = (f"⬆ {f.name} ({_size(f)}) — or type a path / URL to replace"
                                   if f is not None else "a path or URL, or upload a file")

    def _show_uploads(self) -> None:
        fs = self._files
        self.widget.placeholder = (("⬆ " + ", ".join(f.name for f in fs) + " — plus paths / URLs, one per line")
                                   if fs else "paths or URLs, one per line, or upload files")


def _number_or_text(text: str) -> Any:
    """What was typed in a free number box: a number when it reads as one, else the text
    (validation then says what is wrong with it)."""
    if text == "":
        return UNSET
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def _size(f: InputFile) -> str:
    try:
        n = len(f.read())
    except Exception:
        return "?"
    return f"{n / 1024:.1f} kB" if n >= 1024 else f"{n} B"


# --------------------------------------------------------------------------------------------
# building
# --------------------------------------------------------------------------------------------


def _kind(name: str, prop: dict, first_text: str | None) -> str:
    t = prop.get("type")
    fmt = prop.get("format")
    if "enum" in prop:
        return "enum"
    if t == "boolean":
        return "bool"
    if t == "integer":
        return "int"
    if t == "number":
        return "number"
    if t == "string":
        if fmt == "uri":
            return "file"
        if fmt == "password" or prop.get("x-cog-secret"):
            return "secret"
        return "textarea" if is_prompt(name, prop, first_text) else "text"
    if t == "array":
        item = prop.get("items") or {}
        if item.get("format") == "uri":
            return "files"
        if item.get("type") in ("string", "integer", "number", "boolean"):
            return "list"
    return "yaml"


def build_field(name: str, prop: dict, required: bool, first_text: str | None, lay: Layouts) -> Field:
    """The field of one input; its widgets are made by `Field.build()`."""
    return Field(name, prop, required, _kind(name, prop, first_text), lay)


def _initial_value(kind: str, prop: dict) -> Any:
    """What the main widget holds when freshly made (the default, in the widget's terms)."""
    d = prop.get("default")
    has_d = "default" in prop and d is not None
    if kind in ("text", "textarea", "file"):
        return str(d) if has_d else ""
    if kind in ("int", "number"):
        return d if has_d else ""
    if kind == "bool":
        return bool(d) if has_d else False
    if kind == "enum":
        choices = list(prop.get("enum") or [])
        return (d if d in choices else choices[0]) if has_d and choices else None
    if kind == "secret":
        return ""
    if kind in ("files", "list"):
        return "\n".join(map(str, d)) if has_d and isinstance(d, list) else ""
    if not has_d:
        return ""
    if isinstance(d, str):
        return d
    import yaml

    return yaml.safe_dump(d, default_flow_style=True).strip()


def _build_widgets(f: Field) -> None:
    lay, prop, kind = f._lay, f.prop, f.kind
    init = f._initial
    row: list[W.Widget]
    if kind == "text":
        f._w = W.Text(value=init, placeholder=f.title, layout=lay.full, style=lay.text_style)
    elif kind == "textarea":
        f._w = W.Textarea(value=init, placeholder=f.title, layout=lay.textarea, style=lay.text_style)
    elif kind in ("int", "number"):
        lo, hi = prop.get("minimum"), prop.get("maximum")
        is_int = kind == "int"
        if init != "":
            f._w = (W.IntText if is_int else W.FloatText)(value=init, layout=lay.box, style=lay.desc_style)
        else:  # no default: a blank box means "not given" (e.g. a seed left to chance)
            f._w = W.Text(value="", placeholder="blank: not set", layout=lay.box, style=lay.text_style)
        if lo is not None and hi is not None and hi > lo:
            start = min(max(init, lo), hi) if init != "" else lo
            if is_int:
                f._slider = W.IntSlider(value=int(start), min=int(lo), max=int(hi), step=1, readout=False,
                                        continuous_update=True, layout=lay.slider, style=lay.slider_style)
            else:
                f._slider = W.FloatSlider(value=float(start), min=float(lo), max=float(hi),
                                          step=_float_step(lo, hi), readout=False, continuous_update=True,
                                          layout=lay.slider, style=lay.slider_style)
            _link(f)
    elif kind == "bool":
        f._w = W.Checkbox(value=init, description="", indent=False, layout=lay.upload, style=lay.check_style)
    elif kind == "enum":
        choices = list(prop.get("enum") or [])
        options: list[tuple[str, Any]] = [(str(c), c) for c in choices]
        if init is None:
            options.insert(0, ("— choose —" if f.required else "(not set)", None))
        f._w = W.Dropdown(options=options, value=init, layout=lay.full, style=lay.desc_style)
    elif kind == "secret":
        f._w = W.Password(value="", placeholder="secret", continuous_update=False, layout=lay.full,
                          style=lay.text_style)
        f._w.observe(f._take_secret, names="value")
        f._show_secret()
    elif kind in ("file", "files"):
        many = kind == "files"
        if many:
            f._w = W.Textarea(value=init, placeholder="paths or URLs, one per line, or upload files",
                              layout=lay.textarea, style=lay.text_style)
        else:
            f._w = W.Text(value=init, placeholder="a path or URL, or upload a file", layout=lay.text_flex,
                          style=lay.text_style)
            f._w.observe(f._typed_path, names="value")
        f._upload = W.FileUpload(accept="", multiple=many, description="Upload", layout=lay.upload,
                                 style=lay.button_style)
        f._upload.observe(f._take_upload, names="value")
        if f._file is not None:
            f._show_upload()
        elif f._files:
            f._show_uploads()
    else:  # list, yaml
        f._w = W.Textarea(value=init, placeholder="one item per line" if kind == "list" else "a YAML / JSON value",
                          layout=lay.textarea, style=lay.text_style)
    row = [x for x in (f._slider, f._w, f._upload) if x is not None]
    control = row[0] if len(row) == 1 else W.HBox(row, layout=lay.row)
    f._label = W.HTML(f._label_html(), layout=lay.note, style=lay.html_style)
    f._help = W.HTML(f._help_html(), layout=lay.note, style=lay.html_style)
    f._container = W.VBox([f._label, control, f._help], layout=lay.field)
    f._watch()


def _link(f: Field) -> None:
    """Slider ↔ number box, in the kernel (so a value set from code moves both). The box may
    leave the slider's range — validation then says why — so box → slider only when in range."""
    box, slider = f._w, f._slider
    assert slider is not None

    def from_slider(change: dict) -> None:
        if f._syncing:
            return
        f._syncing = True
        try:
            box.value = change["new"] if not isinstance(box, W.Text) else _fmt(change["new"])
        finally:
            f._syncing = False

    def from_box(change: dict) -> None:
        if f._syncing:
            return
        v = change["new"]
        try:
            num = float(v) if isinstance(v, str) else v
        except ValueError:
            return
        if num is None or (isinstance(num, float) and math.isnan(num)):
            return
        if slider.min <= num <= slider.max:
            f._syncing = True
            try:
                slider.value = int(num) if isinstance(slider, W.IntSlider) and float(num).is_integer() else num
            except Exception:
                pass
            finally:
                f._syncing = False

    slider.observe(from_slider, names="value")
    box.observe(from_box, names="value")

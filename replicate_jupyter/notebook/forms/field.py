"""What every form field is, whatever its kind: a label, a control, an error line, a value.

A `Field` is one input of the model's schema. It knows its title, description and constraints
(the hint printed beside the name, the way Replicate's model page prints them), shows the
validation message the form hands it, and converts between its widgets and an input value.
How the control looks and how a value is read from it depends on the kind — text, numbers,
choices, files — and lives in the `*_fields.py` modules; `fields.py` picks the kind.

Widgets are made on first use (`build()`, or reading `widget`/`container`/…): a form builds its
first fields at once and the folded "Advanced inputs" only when opened, so a big schema shows
at once. An unbuilt field's value is what its fresh widgets would hold (`initial()`).
"""
from __future__ import annotations

import html
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import ipywidgets as W
from ipywidgets.widgets.widget_bool import CheckboxStyle
from ipywidgets.widgets.widget_string import DescriptionStyle, HTMLStyle, TextStyle

__all__ = ["Field", "Layouts", "UNSET", "fmt"]


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


def fmt(x: Any) -> str:
    """A number as a person writes it (7, not 7.0)."""
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return str(x)


def has_default(prop: dict) -> bool:
    """A default a widget can show (`default: null` shows as blank)."""
    return "default" in prop and prop.get("default") is not None


class Field:
    """The widgets of one input and the conversion between them and an input value.

    `widget` is the control that holds the value (the number box for a slider pair, the path
    Text for a file); `slider`/`upload` are its companions. `value()` is what goes into the
    input dict (`UNSET` when blank), `set_value()` puts a value back (history, reset).
    Subclasses (one per family of kinds) give `initial()`, `_make_controls()`, `value()` and
    `set_value()`.
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
        self.on_build: Callable[[Field], None] | None = None  # the form places it when built
        self._w: W.Widget = None
        self._slider: W.Widget | None = None
        self._upload: W.FileUpload | None = None
        self._label: W.HTML = None
        self._help: W.HTML = None
        self._container: W.VBox = None
        self._syncing = False  # set while the kernel itself writes a widget (no change events)
        self._on_change: Callable[[], None] | None = None
        self._lay = lay
        self._initial = self.initial()

    # ----- what a kind gives -----------------------------------------------------------------
    def initial(self) -> Any:
        """What the main widget holds when freshly made (the default, in the widget's terms)."""
        d = self.prop.get("default")
        return str(d) if has_default(self.prop) else ""

    def _make_controls(self) -> None:
        """Make `_w` (and `_slider`/`_upload` where the kind has them)."""
        raise NotImplementedError

    def value(self) -> Any:
        """The input value the widgets stand for; UNSET when left blank."""
        raise NotImplementedError

    def set_value(self, v: Any) -> None:
        """Put a value back into the widgets (history, reset)."""
        raise NotImplementedError

    @property
    def is_upload(self) -> bool:
        """Whether the value is a file uploaded in the browser (kept in the kernel only)."""
        return False

    # ----- widgets, made on first use ---------------------------------------------------------
    def build(self) -> Field:
        if not self.built:
            self.built = True
            self._make()
            if self.on_build is not None:
                self.on_build(self)
        return self

    def _make(self) -> None:
        lay = self._lay
        self._make_controls()
        row = [x for x in (self._slider, self._w, self._upload) if x is not None]
        control = row[0] if len(row) == 1 else W.HBox(row, layout=lay.row)
        self._label = W.HTML(self._label_html(), layout=lay.note, style=lay.html_style)
        self._help = W.HTML(self._help_html(), layout=lay.note, style=lay.html_style)
        self._container = W.VBox([self._label, control, self._help], layout=lay.field)
        self._watch()

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

    @contextmanager
    def _quiet(self) -> Iterator[None]:
        """While the kernel itself writes a widget: the field's observers see `_syncing` and
        ignore the change events that write causes."""
        self._syncing = True
        try:
            yield
        finally:
            self._syncing = False

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
            parts.append(f"{fmt(lo)} – {fmt(hi)}")
        elif lo is not None:
            parts.append(f"≥ {fmt(lo)}")
        elif hi is not None:
            parts.append(f"≤ {fmt(hi)}")
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
        """Show validation's message for this field ("" clears it)."""
        if message != self.error:
            self.error = message
            if self.built:
                self._help.value = self._help_html()

    # ----- changes ----------------------------------------------------------------------------
    def reset(self) -> None:
        """Back to the default (fresh widgets already hold it)."""
        if self.built:
            self.set_value(self.default if self.has_default else UNSET)

    def observe(self, fn: Callable[[], None]) -> None:
        """Call `fn()` whenever the user changes this field."""
        self._on_change = fn
        if self.built:
            self._watch()

    def _watch(self) -> None:
        fn = self._on_change
        if fn is not None:
            self._w.observe(lambda _c: fn(), names="value")

    def _changed(self) -> None:
        """Tell the form, for changes the kernel itself turned into field state (uploads, secrets)."""
        if self._on_change is not None:
            self._on_change()

"""Fields typed as numbers: `int` and `number`.

Bounded numbers get a slider linked to a number box (the box may leave the slider's range —
validation then says why), unbounded ones a number box. A number with no default gets a
blank text box instead, because "not given" (a seed left to chance) must be sayable, and an
IntText cannot be blank.
"""
from __future__ import annotations

import math
from typing import Any

import ipywidgets as W

from replicate_jupyter.notebook.forms.field import UNSET, Field, fmt, has_default

__all__ = ["NumberField"]


def _float_step(lo: float, hi: float) -> float:
    """A slider step of a hundredth of the range's order of magnitude."""
    span = float(hi) - float(lo)
    if span <= 0:
        return 0.01
    return 10 ** math.floor(math.log10(span)) / 100


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


class NumberField(Field):
    """Kinds `int` and `number`."""

    def initial(self) -> Any:
        return self.prop.get("default") if has_default(self.prop) else ""

    def _make_controls(self) -> None:
        lay, prop, init = self._lay, self.prop, self._initial
        lo, hi = prop.get("minimum"), prop.get("maximum")
        is_int = self.kind == "int"
        if init != "":
            self._w = (W.IntText if is_int else W.FloatText)(value=init, layout=lay.box, style=lay.desc_style)
        else:  # no default: a blank box means "not given" (e.g. a seed left to chance)
            self._w = W.Text(value="", placeholder="blank: not set", layout=lay.box, style=lay.text_style)
        if lo is not None and hi is not None and hi > lo:
            start = min(max(init, lo), hi) if init != "" else lo
            if is_int:
                self._slider = W.IntSlider(value=int(start), min=int(lo), max=int(hi), step=1, readout=False,
                                           continuous_update=True, layout=lay.slider, style=lay.slider_style)
            else:
                self._slider = W.FloatSlider(value=float(start), min=float(lo), max=float(hi),
                                             step=_float_step(lo, hi), readout=False, continuous_update=True,
                                             layout=lay.slider, style=lay.slider_style)
            self._link()

    def value(self) -> Any:
        v = self._raw()
        if isinstance(v, str):  # the optional number box: blank means not given
            return _number_or_text(v.strip())
        return v

    def set_value(self, v: Any) -> None:
        self.build()
        w = self.widget
        blank = v is UNSET or v is None
        if isinstance(w, W.Text):
            w.value = "" if blank else fmt(v)
        elif not blank:
            try:
                w.value = int(v) if self.kind == "int" else float(v)
            except (TypeError, ValueError):
                pass

    def _link(self) -> None:
        """Slider ↔ number box, in the kernel (so a value set from code moves both). The box may
        leave the slider's range — validation then says why — so box → slider only when in range."""
        box, slider = self._w, self._slider
        assert slider is not None

        def from_slider(change: dict) -> None:
            if self._syncing:
                return
            with self._quiet():
                box.value = change["new"] if not isinstance(box, W.Text) else fmt(change["new"])

        def from_box(change: dict) -> None:
            if self._syncing:
                return
            v = change["new"]
            try:
                num = float(v) if isinstance(v, str) else v
            except ValueError:
                return
            if num is None or (isinstance(num, float) and math.isnan(num)):
                return
            if slider.min <= num <= slider.max:
                with self._quiet():
                    try:
                        slider.value = int(num) if isinstance(slider, W.IntSlider) and float(num).is_integer() else num
                    except Exception:
                        pass

        slider.observe(from_slider, names="value")
        box.observe(from_box, names="value")

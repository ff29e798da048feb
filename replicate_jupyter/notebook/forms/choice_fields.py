"""Fields whose value is picked, not typed: booleans and enums.

- `bool` → a Checkbox (unchecked unless the default says otherwise).
- `enum` (`enum`, or Cog's `allOf`/`$ref` choices resolved into one) → a Dropdown of the
  choices; with no default a first entry "— choose —" (required) or "(not set)" stands for
  no value, so a blank choice is never silently the first one.
"""
from __future__ import annotations

from typing import Any

import ipywidgets as W

from replicate_jupyter.notebook.forms.field import UNSET, Field, has_default

__all__ = ["BoolField", "EnumField"]


class BoolField(Field):
    """Kind `bool`."""

    def initial(self) -> Any:
        return bool(self.prop.get("default")) if has_default(self.prop) else False

    def _make_controls(self) -> None:
        lay = self._lay
        self._w = W.Checkbox(value=self._initial, description="", indent=False, layout=lay.upload,
                             style=lay.check_style)

    def value(self) -> Any:
        return self._raw()

    def set_value(self, v: Any) -> None:
        self.build()
        self.widget.value = bool(v) if not (v is UNSET or v is None) else bool(self.default)


class EnumField(Field):
    """Kind `enum`."""

    def initial(self) -> Any:
        d = self.prop.get("default")
        choices = list(self.prop.get("enum") or [])
        return (d if d in choices else choices[0]) if has_default(self.prop) and choices else None

    def _make_controls(self) -> None:
        lay = self._lay
        options: list[tuple[str, Any]] = [(str(c), c) for c in self.prop.get("enum") or []]
        if self._initial is None:
            options.insert(0, ("— choose —" if self.required else "(not set)", None))
        self._w = W.Dropdown(options=options, value=self._initial, layout=lay.full, style=lay.desc_style)

    def value(self) -> Any:
        v = self._raw()
        return UNSET if v is None else v

    def set_value(self, v: Any) -> None:
        self.build()
        w = self.widget
        options = [o[1] for o in w.options]
        w.value = v if v in options else (None if None in options else w.value)

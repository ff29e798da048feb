"""Fields typed as text: free text and prompts, secrets, lists of scalars, and YAML for the rest.

- `text` → a Text; `textarea` (prompts: the model's first text input, or one named like a
  prompt) → a Textarea. Blank means not given, unless the schema has a default.
- `secret` (`format: password`, `x-cog-secret`) → a Password box that is only a way in: what is
  typed moves into the kernel and the box is emptied, so a notebook save never keeps it.
- `list` (an array of strings or numbers) → one item per line.
- `yaml` (objects, unions, anything else) → a YAML / JSON value, read with `yaml.safe_load`.
"""
from __future__ import annotations

from typing import Any

import ipywidgets as W

from replicate_jupyter.notebook.forms.field import UNSET, Field, Layouts, has_default

__all__ = ["TextField", "SecretField", "ListField", "YamlField"]


class TextField(Field):
    """Kinds `text` and `textarea`."""

    def _make_controls(self) -> None:
        lay = self._lay
        if self.kind == "textarea":
            self._w = W.Textarea(value=self._initial, placeholder=self.title, layout=lay.textarea, style=lay.text_style)
        else:
            self._w = W.Text(value=self._initial, placeholder=self.title, layout=lay.full, style=lay.text_style)

    def value(self) -> Any:
        v = self._raw()
        return UNSET if v == "" and not self.has_default else v

    def set_value(self, v: Any) -> None:
        self.build()
        self.widget.value = "" if v is UNSET or v is None else str(v)


class SecretField(Field):
    """Kind `secret`: the value is kept in the kernel (`_secret`), never in widget state."""

    def __init__(self, name: str, prop: dict, required: bool, kind: str, lay: Layouts) -> None:
        super().__init__(name, prop, required, kind, lay)
        self._secret = ""
        if "default" in prop and prop["default"] is not None:
            self._secret = str(prop["default"])

    def initial(self) -> Any:
        return ""

    def _make_controls(self) -> None:
        lay = self._lay
        self._w = W.Password(value="", placeholder="secret", continuous_update=False, layout=lay.full,
                             style=lay.text_style)
        self._w.observe(self._take_secret, names="value")
        self._show_secret()

    def value(self) -> Any:
        return UNSET if self._secret == "" and not self.has_default else self._secret

    def set_value(self, v: Any) -> None:
        """Secrets are never put back (history keeps none)."""
        self.build()

    def reset(self) -> None:
        if self.built:
            self._secret = ""
            self._show_secret()

    def _watch(self) -> None:
        """Secrets report their changes through `_take_secret`, after the box is emptied."""

    def _take_secret(self, change: dict) -> None:
        """The Password box is only a way in: its text moves into the kernel and the widget is
        emptied, so the secret never sits in widget state that a notebook save could keep."""
        if self._syncing or change["new"] == "":
            return
        self._secret = change["new"]
        with self._quiet():
            self.widget.value = ""
        self._show_secret()
        self._changed()

    def _show_secret(self) -> None:
        self.widget.placeholder = "•••••••• set (kept in the kernel; type to replace)" if self._secret else "secret"


class ListField(Field):
    """Kind `list`: an array of scalars, one item per line (validation types each item)."""

    def initial(self) -> Any:
        d = self.prop.get("default")
        return "\n".join(map(str, d)) if has_default(self.prop) and isinstance(d, list) else ""

    def _make_controls(self) -> None:
        lay = self._lay
        self._w = W.Textarea(value=self._initial, placeholder="one item per line", layout=lay.textarea,
                             style=lay.text_style)

    def value(self) -> Any:
        items = [line for line in self._raw().splitlines() if line.strip()]
        return items if items else UNSET

    def set_value(self, v: Any) -> None:
        self.build()
        self.widget.value = "" if v is UNSET or v is None else "\n".join(str(x) for x in v)


class YamlField(Field):
    """Kind `yaml`: objects, unions and anything else, written as a YAML / JSON value."""

    def initial(self) -> Any:
        d = self.prop.get("default")
        if not has_default(self.prop):
            return ""
        if isinstance(d, str):
            return d
        import yaml

        return yaml.safe_dump(d, default_flow_style=True).strip()

    def _make_controls(self) -> None:
        lay = self._lay
        self._w = W.Textarea(value=self._initial, placeholder="a YAML / JSON value", layout=lay.textarea,
                             style=lay.text_style)

    def value(self) -> Any:
        text = self._raw().strip()
        if not text:
            return UNSET
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            return text

    def set_value(self, v: Any) -> None:
        self.build()
        if v is UNSET or v is None:
            self.widget.value = ""
        else:
            import yaml

            self.widget.value = v if isinstance(v, str) else yaml.safe_dump(v, default_flow_style=True).strip()

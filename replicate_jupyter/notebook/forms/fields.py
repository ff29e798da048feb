"""One schema property → one form field of the right kind.

The widget kinds follow what Replicate's model page draws for the same OpenAPI `Input`:
free text → Text (Textarea for prompts), bounded numbers → a slider linked to a number box,
unbounded numbers → a number box, booleans → a Checkbox, enums → a Dropdown, files → an upload
button beside a Text that takes a path or URL, secrets → a Password box whose value is kept
only in the kernel. Each family of kinds is one module (`text_fields`, `number_fields`,
`choice_fields`, `file_fields`) on the common `field.Field`; this one only decides the kind.
Fields never check values themselves: the form validates the whole input with
`validation.validate` and hands each field its own messages.
"""
from __future__ import annotations

from replicate_jupyter.notebook.forms.choice_fields import BoolField, EnumField
from replicate_jupyter.notebook.forms.field import UNSET, Field, Layouts
from replicate_jupyter.notebook.forms.file_fields import FileField
from replicate_jupyter.notebook.forms.number_fields import NumberField
from replicate_jupyter.notebook.forms.text_fields import ListField, SecretField, TextField, YamlField

__all__ = ["Field", "Layouts", "UNSET", "KINDS", "build_field", "kind_of", "is_prompt"]

#: kind → the Field class that draws it
KINDS: dict[str, type[Field]] = {
    "text": TextField, "textarea": TextField, "secret": SecretField, "list": ListField, "yaml": YamlField,
    "int": NumberField, "number": NumberField, "bool": BoolField, "enum": EnumField,
    "file": FileField, "files": FileField,
}


def is_prompt(name: str, prop: dict, first_text: str | None) -> bool:
    """Prompts get a Textarea: the model's first text input, or any field named like one."""
    return name == first_text or "prompt" in name.lower() or (prop.get("maxLength") or 0) > 200


def kind_of(name: str, prop: dict, first_text: str | None) -> str:
    """The field kind of one schema property (a key of KINDS)."""
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
    kind = kind_of(name, prop, first_text)
    return KINDS[kind](name, prop, required, kind, lay)

"""A prediction's values as JSON, and what its schema says about its output and inputs.

Kept apart from `Prediction` so the renderers and the webhook bodies turn values into JSON
exactly as `Prediction.to_json` does, without reaching into the Prediction's privates.
"""
from __future__ import annotations

from typing import Any

from replicate_jupyter.prediction.files import FileOutput, InputFile, data_uri

__all__ = ["jsonable", "encode_preview", "secret_fields", "is_iterator", "is_concatenate", "MASK"]

#: what a secret input shows as, everywhere it leaves the kernel
MASK = "**********"


#: values that are JSON as they are (exact types: a subclass may be a file or a secret)
_PLAIN = frozenset({str, int, float, bool, type(None)})


def jsonable(value: Any) -> Any:
    """`value` as JSON: files as their `to_json()`, secrets masked, the rest as str."""
    cls = type(value)
    if cls in _PLAIN:  # most leaves (metrics, inputs): one look-up, not the chain below
        return value
    if cls is dict:
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (FileOutput, InputFile)):
        return value.to_json()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        try:  # token streams: thousands of str chunks; join checks them all in C
            "".join(value)
            return list(value)
        except TypeError:
            return [jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if hasattr(value, "get_secret_value"):
        return MASK
    return str(value)


def encode_preview(image: Any) -> str | None:
    """A step preview as a small PNG data URI (previews are tiny; PNG keeps them exact)."""
    if image is None:
        return None
    if isinstance(image, str):
        return image
    import io

    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return data_uri(buf.getvalue(), "image/png")


def _component(schema: dict[str, Any] | None, name: str) -> dict[str, Any]:
    comp: dict[str, Any] = ((schema or {}).get("components") or {}).get("schemas", {}).get(name, {})
    return comp


def secret_fields(schema: dict[str, Any] | None) -> frozenset[str]:
    """Inputs typed `cog.Secret`: their values never leave the kernel in a record."""
    props = _component(schema, "Input").get("properties", {})
    return frozenset(k for k, v in props.items() if v.get("x-cog-secret") or v.get("format") == "password")


def is_iterator(schema: dict[str, Any] | None) -> bool:
    return bool(_component(schema, "Output").get("x-cog-array-type") == "iterator")


def is_concatenate(schema: dict[str, Any] | None) -> bool:
    return bool(_component(schema, "Output").get("x-cog-array-display") == "concatenate")

"""Values across the wire to a Cog worker, and what its schema says about the wire.

A worker has no upload URL configured (`replicate-jupyter serve` and a bare coglet alike), so
files travel inside the JSON both ways, as data URIs: inputs are encoded into them here, and
outputs that come back as data URIs become `FileOutput`s. Kept apart from the runner because
these are pure functions of values and schemas, testable without a worker.
"""
from __future__ import annotations

from typing import Any

from replicate_jupyter.prediction.files import FileOutput, InputFile
from replicate_jupyter.runners.remote import encode_values

__all__ = ["encode_input", "decode_output", "streams", "strip_prefix"]


def _as_data_uri(f: InputFile) -> str:
    return f.as_data_uri()


def encode_input(value: Any) -> Any:
    """Validated input → JSON for Cog: files as data URIs, secrets as their value, and fields
    whose value is None left out. coglet 0.23.1 refuses an explicit `null` even for a nullable
    input (`x: str | None = None` given None: 422), while a field left out takes the input's
    default — None for `x: T | None = None`, the usual way to write an optional input."""
    if isinstance(value, dict):
        value = {k: v for k, v in value.items() if v is not None}
    return encode_values(value, _as_data_uri)


def decode_output(value: Any, index: int | None = None) -> Any:
    """Cog output JSON → our values: data URIs become FileOutput (named output-<i>)."""
    if isinstance(value, str) and value.startswith("data:") and "," in value[:200]:
        try:
            return FileOutput.from_data_uri(value, name=f"output-{index or 0}")
        except ValueError:
            return value
    if isinstance(value, list):
        return [decode_output(v, i) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: decode_output(v) for k, v in value.items()}
    return value


def streams(schema: dict | None) -> bool:
    """Whether the worker streams SSE (`x-cog-streaming` on `POST /predictions`); coglet
    answers 406 to `Accept: text/event-stream` otherwise."""
    post = ((schema or {}).get("paths") or {}).get("/predictions", {}).get("post", {})
    return bool(post.get("x-cog-streaming"))


def strip_prefix(error: str) -> str:
    """coglet says 'Prediction failed: Prediction failed: ValueError: …'; keep the model's words."""
    while error.startswith("Prediction failed: "):
        error = error[len("Prediction failed: "):]
    return error

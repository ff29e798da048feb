"""Values across the wire to a Cog worker, and what its schema says about the wire.

A worker has no upload URL configured (`replicate-jupyter serve` and a bare coglet alike), so
files travel inside the JSON both ways, as data URIs: inputs are encoded into them here, and
outputs that come back as data URIs become `FileOutput`s. Kept apart from the runner because
these are pure functions of values and schemas, testable without a worker.
"""
from __future__ import annotations

from typing import Any, Hashable

from replicate_jupyter.prediction.files import FileOutput, InputFile
from replicate_jupyter.runners.remote import encode_values

__all__ = ["encode_input", "decode_output", "streams", "strip_prefix", "batching", "batch_key", "concurrency",
           "BATCHING_KEY", "CONCURRENCY_KEY", "SHARE_METRIC"]

#: where a worker's schema `info` says how it batches (serve/batched.py writes it)
BATCHING_KEY = "x-rj-batching"
#: where a worker's schema `info` says how many predictions it runs at once (serve/workdir.py
#: writes it: cog.yaml's `concurrency.max`, `serve --concurrency`, or a batching model's slots)
CONCURRENCY_KEY = "x-rj-concurrency"
#: the metric a batching worker reports a member's share of the batch's device time under
#: (coglet's own predict_time is the member's wall time, and a model may not record that name)
SHARE_METRIC = "predict_time_share"


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
    """coglet says 'Prediction failed: Prediction failed: ValueError: …' (an async predictor's:
    'Async prediction failed: …'); keep the model's words."""
    while True:
        for prefix in ("Prediction failed: ", "Async prediction failed: "):
            if error.startswith(prefix):
                error = error[len(prefix):]
                break
        else:
            return error


def batching(schema: dict | None) -> dict | None:
    """How a worker batches, from its schema (`replicate-jupyter serve` of a batchable model):
    `max_batch`, `match`/`vary`, `concurrency`; None for any other Cog server."""
    info = ((schema or {}).get("info") or {}).get(BATCHING_KEY)
    return info if isinstance(info, dict) and isinstance(info.get("max_batch"), int) else None


def concurrency(schema: dict | None) -> int | None:
    """The predictions a worker says it runs at once (None: it does not say; a plain coglet).
    The pool uses it as the worker's slots unless the user gave them."""
    value = ((schema or {}).get("info") or {}).get(CONCURRENCY_KEY)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else None


def batch_key(schema: dict | None, inputs: dict[str, Any]) -> Hashable | None:
    """What a prediction shares with the others it may be batched with on a worker (None: the
    model does not batch): the worker's rule applied to the input with the schema's defaults, so
    the pool sends compatible members of a sweep to the same worker. The worker applies the
    rule's functions (alone, group) itself; this key only routes."""
    rule = batching(schema)
    if rule is None:
        return None
    from replicate_jupyter.model.batching import BatchRule

    props = ((((schema or {}).get("components") or {}).get("schemas") or {}).get("Input") or {}).get("properties") or {}
    filled = {k: v.get("default") for k, v in props.items() if isinstance(v, dict)}
    filled.update(inputs)
    vary = rule.get("vary")
    br = BatchRule(max_batch=rule["max_batch"], match=None if vary is not None else frozenset(rule.get("match") or ()),
                   vary=frozenset(vary) if vary is not None else None)
    return br.key(filled)

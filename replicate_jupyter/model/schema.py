"""Predictor signature → OpenAPI schema, identical to what Cog's generator writes.

A model's schema is the one description every part of the project reads: validation checks input
against it, forms draw widgets from it, the workers pool and Replicate hand out the same document.
So it must match what `cog build` writes to `.cog/openapi_schema.json` and what Replicate shows as a
version's `openapi_schema` (checked field by field against stability-ai/sdxl in the tests).

The parts: `model.types` (what an annotation means to Cog), `model.inputs` (the `Input`
component), `model.outputs` (the `Output` component), `model.reading` (reading any such
document). This module picks the predict function the way Cog does and assembles the document.
cog itself is never imported here: a predictor that uses cog types has imported cog already.
"""
from __future__ import annotations

import copy
import inspect
import threading
import weakref
from typing import Any, Callable

from replicate_jupyter.model.inputs import REF_PREFIX, input_schema
from replicate_jupyter.model.outputs import output_schema, title_case
from replicate_jupyter.model.reading import (
    file_fields,
    first_string_input,
    input_component,
    input_properties,
    is_concatenate,
    is_iterator,
)
from replicate_jupyter.model.types import SchemaError

__all__ = [
    "build_schema",
    "input_properties",
    "first_string_input",
    "is_iterator",
    "is_concatenate",
    "file_fields",
    "predict_function",
    "title_case",
    "SchemaError",
]

_input_component = input_component  # the name forms and older callers import

_cache: "weakref.WeakKeyDictionary[Any, dict[str | None, dict]]" = weakref.WeakKeyDictionary()
_cache_lock = threading.Lock()


def build_schema(predictor: type | object, name: str | None = None) -> dict:
    """The OpenAPI document of a predictor class, instance or function.

    Built once per class (and name) and cached: the returned dict is shared, so treat it as
    read-only. `name` ("owner/model") lands in `info["x-replicate-model"]`. Raises `SchemaError`
    (a `TypeError`) with Cog's reason for a definition `cog build` refuses.
    """
    key = _cache_key(predictor)
    try:
        per_name = _cache.get(key)
    except TypeError:  # not weak-referenceable: build every time
        per_name, key = None, None
    if per_name is not None and name in per_name:
        return per_name[name]
    doc = _build(predictor, name)
    if key is not None:
        with _cache_lock:
            _cache.setdefault(key, {})[name] = doc
    return doc


def _user_method(cls: type, name: str) -> Any:
    """The class's own `run`/`predict` (cog's `_user_method_owner`: the SDK's placeholders and
    anything above them in the MRO do not count)."""
    for owner in cls.__mro__:
        if owner is object or (owner.__module__ or "").split(".")[0] == "cog":
            break
        value = owner.__dict__.get(name)
        if value is not None and (callable(value) or isinstance(value, (staticmethod, classmethod))):
            return value
    return None


def predict_function(predictor: type | object) -> tuple[Callable[..., Any], bool]:
    """(the function whose signature is the model's interface, whether it takes `self`).

    As Cog: `run` (BaseRunner) or `predict` (BasePredictor), never both; a plain function is its
    own interface.
    """
    if inspect.isfunction(predictor):
        return predictor, False
    if inspect.ismethod(predictor):
        return predictor.__func__, True
    cls = predictor if isinstance(predictor, type) else type(predictor)
    run, predict = _user_method(cls, "run"), _user_method(cls, "predict")
    if run is not None and predict is not None:
        raise SchemaError(f"{cls.__name__} must define either run() or predict(), not both")
    fn = run if run is not None else predict
    if fn is None:
        raise SchemaError(f"run or predict method not found: {cls.__name__} has no predict() or run() method")
    if isinstance(fn, (staticmethod, classmethod)):
        return fn.__func__, isinstance(fn, classmethod)
    return fn, True


def _cache_key(predictor: Any) -> Any:
    if isinstance(predictor, type) or inspect.isfunction(predictor):
        return predictor
    if inspect.ismethod(predictor):
        return predictor.__func__
    return type(predictor)


# --------------------------------------------------------------------------------------------
# the document
# --------------------------------------------------------------------------------------------

_STATUS = {
    "title": "Status",
    "description": "An enumeration.",
    "enum": ["starting", "processing", "succeeded", "canceled", "failed"],
    "type": "string",
}

_VALIDATION = {
    "HTTPValidationError": {
        "title": "HTTPValidationError",
        "type": "object",
        "properties": {
            "detail": {"title": "Detail", "type": "array", "items": {"$ref": REF_PREFIX + "ValidationError"}}
        },
    },
    "ValidationError": {
        "title": "ValidationError",
        "required": ["loc", "msg", "type"],
        "type": "object",
        "properties": {
            "loc": {"title": "Location", "type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
            "msg": {"title": "Message", "type": "string"},
            "type": {"title": "Error Type", "type": "string"},
        },
    },
}


def _json_response(ref: str | None) -> dict:
    schema = {"$ref": REF_PREFIX + ref} if ref else {}
    return {"content": {"application/json": {"schema": schema}}}


def _where(predictor: Any, fn: Callable[..., Any]) -> str:
    if inspect.isfunction(predictor):
        return predictor.__qualname__
    owner = predictor if isinstance(predictor, type) else type(predictor)
    return f"{owner.__qualname__}.{fn.__name__}"


def _build(predictor: Any, name: str | None) -> dict:
    fn, takes_self = predict_function(predictor)
    fn = inspect.unwrap(fn)
    where = _where(predictor, fn)
    inp, enums = input_schema(fn, takes_self, where)
    output = output_schema(fn, where)

    comps: dict[str, Any] = {"Input": inp, "Output": output}
    for ename, comp in enums:
        comps.setdefault(ename, comp)
    comps["PredictionRequest"] = {
        "title": "PredictionRequest",
        "type": "object",
        "properties": {"id": {"title": "Id", "type": "string"}, "input": {"$ref": REF_PREFIX + "Input"}},
    }
    comps["PredictionResponse"] = {
        "title": "PredictionResponse",
        "type": "object",
        "properties": {
            "input": {"$ref": REF_PREFIX + "Input"},
            "output": {"$ref": REF_PREFIX + "Output"},
            "id": {"title": "Id", "type": "string"},
            "version": {"title": "Version", "type": "string"},
            "created_at": {"title": "Created At", "type": "string", "format": "date-time"},
            "started_at": {"title": "Started At", "type": "string", "format": "date-time"},
            "completed_at": {"title": "Completed At", "type": "string", "format": "date-time"},
            "status": {"title": "Status", "type": "string"},
            "error": {"title": "Error", "type": "string"},
            "logs": {"title": "Logs", "type": "string"},
            "metrics": {"title": "Metrics", "type": "object"},
        },
    }
    comps["Status"] = copy.deepcopy(_STATUS)
    comps.update(copy.deepcopy(_VALIDATION))

    ok = {"description": "Successful Response"}
    invalid = {"description": "Validation Error", **_json_response("HTTPValidationError")}
    predict_post: dict[str, Any] = {
        "summary": "Predict",
        "description": "Run a single prediction on the model",
        "operationId": "predict_predictions_post",
        "requestBody": _json_response("PredictionRequest"),
        "responses": {"200": {**ok, **_json_response("PredictionResponse")}, "422": invalid},
    }
    if output.get("x-cog-array-type") == "iterator":
        predict_post["x-cog-streaming"] = True
    paths = {
        "/": {"get": {"summary": "Root", "operationId": "root__get", "responses": {"200": {**ok, **_json_response(None)}}}},
        "/health-check": {
            "get": {
                "summary": "Healthcheck",
                "operationId": "healthcheck_health_check_get",
                "responses": {"200": {**ok, **_json_response(None)}},
            }
        },
        "/predictions": {"post": predict_post},
        "/predictions/{prediction_id}/cancel": {
            "post": {
                "summary": "Cancel",
                "operationId": "cancel_predictions__prediction_id__cancel_post",
                "parameters": [
                    {"required": True, "schema": {"title": "Prediction Id", "type": "string"},
                     "name": "prediction_id", "in": "path"}
                ],
                "responses": {"200": {**ok, **_json_response(None)}, "422": copy.deepcopy(invalid)},
            }
        },
    }
    info: dict[str, Any] = {"title": "Cog", "version": "0.1.0"}
    if name:
        info["x-replicate-model"] = name
    return {"openapi": "3.0.2", "info": info, "paths": paths, "components": {"schemas": comps}}

"""A predictor's return annotation → the `Output` component Cog's generator writes.

Outputs are typed recursively, as Cog 0.23's generator does (`list[dict[str, int]]`, nested
`BaseModel`s, `TypedDict`s): scalars and files as for inputs, `dict[str, V]` as an object with
`additionalProperties`, `BaseModel`/pydantic/`TypedDict` as an object whose optional fields are
`nullable` and whose required ones are listed, iterators as arrays marked
`x-cog-array-type: iterator` (and `x-cog-array-display: concatenate` for `ConcatenateIterator`).
What Cog refuses (an `Optional` or union return, a `ConcatenateIterator` of anything but `str`,
an iterator of lists) raises `SchemaError` with Cog's reason.

A predictor with no return annotation is refused by Cog; here it gets an untyped output and a
warning saying so, so a class sketched in a notebook still runs.
"""
from __future__ import annotations

import collections.abc
import dataclasses
import inspect
import sys
import typing
import warnings
from typing import Any, Callable

from replicate_jupyter.model.types import (
    _JSON,
    SchemaError,
    _primitive,
    cog_attr,
    is_typeddict,
    is_union,
    strip_annotated,
    type_name,
    unwrap_opaque,
)

__all__ = ["output_schema", "title_case", "CogCompatibilityWarning"]


class CogCompatibilityWarning(UserWarning):
    """The predictor runs here, but `cog build` would refuse it (the message says why)."""


def title_case(name: str) -> str:
    """`num_inference_steps` → `Num Inference Steps` (Cog's property titles)."""
    return name.replace("_", " ").title()


def type_hints(obj: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(obj, include_extras=True)
    except Exception:  # noqa: BLE001 — unresolvable forward references: use what is written
        return dict(getattr(obj, "__annotations__", {}) or {})


_OPTIONAL_OUTPUT = "unsupported output type: Optional is not allowed as a return type"


def output_schema(fn: Callable[..., Any], where: str) -> dict[str, Any]:
    """The `Output` component of a predict/run function."""
    tp = type_hints(fn).get("return", inspect.Parameter.empty)
    if tp is inspect.Parameter.empty or tp is None or tp is type(None):
        warnings.warn(f"{where}() must have a return type annotation (cog build refuses it; its output is "
                      "untyped here)", CogCompatibilityWarning, stacklevel=4)
        if inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn):
            return {"title": "Output", "type": "array", "items": {}, "x-cog-array-type": "iterator"}
        return {"title": "Output"}
    inner, opaque = unwrap_opaque(tp)
    if opaque:
        if is_union(inner) and type(None) in typing.get_args(inner):
            raise SchemaError(f"{where} output: {_OPTIONAL_OUTPUT}")
        shape = _opaque(inner)
        return {"title": "Output", **shape}
    tp = strip_annotated(tp)
    if is_union(tp):
        if type(None) in typing.get_args(tp):
            raise SchemaError(f"{where} output: {_OPTIONAL_OUTPUT}")
        raise SchemaError(f"{where} output: unsupported type: union types are not supported as output")
    origin = typing.get_origin(tp)
    concat = tuple(c for c in (cog_attr("ConcatenateIterator"), cog_attr("AsyncConcatenateIterator")) if c is not None)
    if concat and (tp in concat or origin in concat):
        args = typing.get_args(tp)
        if len(args) != 1:
            raise SchemaError(f"{where} output: iterator type must have a type argument")
        if strip_annotated(args[0]) is not str:
            raise SchemaError(f"{where} output: ConcatenateIterator element type must be str, got {type_name(args[0])}")
        return {"title": "Output", "type": "array", "items": {"type": "string"}, "x-cog-array-type": "iterator",
                "x-cog-array-display": "concatenate"}
    if origin in (collections.abc.Iterator, collections.abc.AsyncIterator):
        args = typing.get_args(tp)
        if len(args) != 1:
            raise SchemaError(f"{where} output: iterator type must have a type argument")
        elem = strip_annotated(args[0])
        if is_union(elem) or elem is list or typing.get_origin(elem) is list:
            raise SchemaError(f"{where} output: iterator element type must not be Optional or List")
        return {"title": "Output", "type": "array", "items": _value(args[0], where, set()),
                "x-cog-array-type": "iterator"}
    return {"title": "Output", **_value(tp, where, set())}


def _opaque(inner: Any) -> dict[str, Any]:
    if inner is list or typing.get_origin(inner) is list:
        return {"type": "array", "items": {"type": "object"}}
    return {"type": "object"}


def _value(tp: Any, where: str, seen: set) -> dict[str, Any]:
    """The schema of a value inside an output (no title, no iterator marks)."""
    inner, opaque = unwrap_opaque(tp)
    if opaque:
        return _opaque(inner)
    tp = strip_annotated(tp)
    if is_union(tp):
        if type(None) in typing.get_args(tp):
            raise SchemaError(f"{where} output: {_OPTIONAL_OUTPUT}")
        raise SchemaError(f"{where} output: unsupported type: union types are not supported as output")
    if tp is Any or tp is dict:
        return {"type": "object"}
    origin = typing.get_origin(tp)
    if origin is dict:
        args = typing.get_args(tp)
        if len(args) == 2:
            return {"type": "object", "additionalProperties": _value(args[1], where, seen)}
        return {"type": "object"}
    if tp is list:
        return {"type": "array", "items": {"type": "object"}}
    if origin is list:
        args = typing.get_args(tp)
        if len(args) != 1:
            raise SchemaError(f"{where} output: unsupported type: list expects exactly 1 type argument")
        return {"type": "array", "items": _value(args[0], where, seen)}
    if isinstance(tp, type) and _is_object(tp):
        if tp in seen:  # a model that contains itself: Cog emits an opaque object
            return {"type": "object"}
        return _object(tp, where, seen | {tp})
    prim = _primitive(tp) if isinstance(tp, type) else None
    if prim is not None:
        return dict(_JSON[str(prim)])
    if origin is not None:
        raise SchemaError(f"{where} output: unsupported type: {type_name(origin)}[...] is not a supported output type")
    raise SchemaError(f"{where} output: cannot resolve output type '{type_name(tp)}' — it is not a primitive type "
                      "(str, int, float, bool, Path) and no BaseModel definition was found in the predict file")


def _is_object(tp: type) -> bool:
    base = cog_attr("BaseModel")
    if base is not None and issubclass(tp, base):
        return True
    if is_typeddict(tp):
        return True
    pyd = sys.modules.get("pydantic")
    pbase = getattr(pyd, "BaseModel", None) if pyd is not None else None
    return bool(pbase is not None and issubclass(tp, pbase))


def _fields(tp: type) -> list[tuple[str, Any, bool | None, bool]]:
    """(name, annotation, key required (TypedDict) or None, has a default) per field, in order."""
    hints = type_hints(tp)
    if is_typeddict(tp):
        required = getattr(tp, "__required_keys__", frozenset(hints))
        out: list[tuple[str, Any, bool | None, bool]] = []
        for n, t in hints.items():
            qualifier = _qualifier(t)  # explicit on the key; also right when annotations are strings
            out.append((n, _key_qualifier(t), (n in required) if qualifier is None else qualifier, False))
        return out
    model_fields = getattr(tp, "model_fields", None)
    if isinstance(model_fields, dict):  # pydantic
        return [(n, hints.get(n, f.annotation), None, not f.is_required()) for n, f in model_fields.items()]
    if dataclasses.is_dataclass(tp):  # cog.BaseModel is a dataclass
        return [(f.name, hints.get(f.name, f.type), None,
                 f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING)
                for f in dataclasses.fields(tp)]
    return [(n, t, None, hasattr(tp, n)) for n, t in hints.items() if not n.startswith("_")]


def _qualifier(tp: Any) -> bool | None:
    name = str(typing.get_origin(tp) or "")
    return True if name.endswith(".Required") else False if name.endswith(".NotRequired") else None


def _key_qualifier(tp: Any) -> Any:
    """`Required[X]` / `NotRequired[X]` (a TypedDict key's qualifier) → X."""
    while _qualifier(tp) is not None:
        tp = typing.get_args(tp)[0]
    return tp


def _object(tp: type, where: str, seen: set) -> dict[str, Any]:
    props: dict[str, Any] = {}
    required: list[str] = []
    for name, ftp, key_required, has_default in _fields(tp):
        here = f"{where} output field {name!r}"
        inner, opaque = unwrap_opaque(ftp)
        base = inner if opaque else strip_annotated(ftp)
        optional = is_union(base) and type(None) in typing.get_args(base)
        if optional:
            rest = [a for a in typing.get_args(base) if a is not type(None)]
            if len(rest) != 1:
                raise SchemaError(f"{here}: unsupported type: union types are not supported as output")
            prop = _opaque(rest[0]) if opaque else _value(rest[0], here, seen)
            prop["nullable"] = True
        else:
            prop = _opaque(inner) if opaque else _value(ftp, here, seen)
        prop["title"] = title_case(name)
        is_required = not optional if key_required is None else key_required
        if is_required and not has_default:
            required.append(name)
        props[name] = prop
    out: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        out["required"] = required
    return out

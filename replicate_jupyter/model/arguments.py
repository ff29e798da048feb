"""Validated input → the keyword arguments of one predict/run call, typed as Cog passes them.

Validation leaves files as `InputFile`s and secrets as strings; a Cog predictor expects what
coglet hands it: a `cog.Path` (a local file) for `Path` inputs, an open file object with
`.read()` and `.name` for `cog.File` inputs (also inside `list[File]` and `File | None`), a
`cog.Secret` for `Secret` inputs, and every parameter present (a parameter left out would
receive cog's `Input(...)` object itself), with its `Input(default=...)` when not given.

The conversion plan of each function is worked out once (cached by the function) from its
annotations, so a call costs a dict walk.
"""
from __future__ import annotations

import dataclasses
import inspect
import io
import threading
import weakref
from typing import Any, Callable

from replicate_jupyter.model.outputs import type_hints
from replicate_jupyter.model.types import FILE, PATH, SECRET, SchemaError, field_type
from replicate_jupyter.prediction.files import InputFile

__all__ = ["call_arguments", "to_cog_file", "to_cog_path"]

_Plan = tuple[list[tuple[str, Any, Callable[[Any], Any]]], bool]
_plans: "weakref.WeakKeyDictionary[Any, _Plan]" = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def to_cog_file(value: Any) -> Any:
    """A file object as Cog gives a `cog.File` input: readable, named, at position 0."""
    if isinstance(value, InputFile):
        buf = io.BytesIO(value.read())
        buf.name = value.name  # type: ignore[attr-defined,unused-ignore]
        return buf
    if isinstance(value, str):
        from cog import File

        return File.validate(value)
    return value


def to_cog_path(value: Any) -> Any:
    """A `cog.Path` as Cog gives a `Path` input (a local file; a URL string stays lazy)."""
    from cog import Path

    if isinstance(value, InputFile):
        return Path(value.as_path())
    if isinstance(value, str):
        return Path.validate(value)
    return value


def _to_secret(value: Any) -> Any:
    """A `cog.Secret`, as Cog passes a Secret input: from a str or from the masked
    `prediction.redact.Secret` a validated input holds (its value revealed here, to the predictor
    only)."""
    from cog import Secret

    if isinstance(value, Secret):
        return value
    if hasattr(value, "get_secret_value"):
        return Secret(value.get_secret_value())
    return Secret(value) if isinstance(value, str) else value


def _legacy(value: Any) -> Any:
    """No usable annotation: files as paths (what most models want), the rest unchanged."""
    if isinstance(value, InputFile):
        return to_cog_path(value)
    if isinstance(value, list):
        return [_legacy(v) for v in value]
    return value


def _each(one: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, (list, tuple)):
            return [one(v) for v in value]
        return one(value)

    return convert


def _converter(annotation: Any) -> Callable[[Any], Any]:
    if annotation is inspect.Parameter.empty:
        return _legacy
    try:
        ft = field_type(annotation)
    except SchemaError:
        return _legacy
    if ft.variants is not None:
        return lambda v: v
    one = {FILE: to_cog_file, PATH: to_cog_path, SECRET: _to_secret}.get(ft.primitive)
    return _each(one) if one is not None else (lambda v: v)


def _default(param: inspect.Parameter) -> Any:
    d = param.default
    if d is inspect.Parameter.empty:
        return None
    if type(d).__name__ == "FieldInfo":  # cog.Input(...)
        d = d.default
    if isinstance(d, dataclasses.Field):
        d = None if d.default is dataclasses.MISSING else d.default
    return d


def _plan(call: Callable[..., Any]) -> _Plan:
    fn = getattr(call, "__func__", call)
    try:
        hit = _plans.get(fn)
    except TypeError:
        hit = None
    if hit is not None:
        return hit
    hints = type_hints(fn)
    steps = []
    any_kwargs = False
    for pname, param in inspect.signature(call).parameters.items():
        if param.kind is param.VAR_KEYWORD:
            any_kwargs = True
            continue
        if param.kind is param.VAR_POSITIONAL:
            continue
        steps.append((pname, _default(param), _converter(hints.get(pname, param.annotation))))
    plan = (steps, any_kwargs)
    try:
        with _lock:
            _plans[fn] = plan
    except TypeError:
        pass
    return plan


def call_arguments(call: Callable[..., Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments for `call(**kwargs)`: every parameter, given or defaulted, each
    converted to the type Cog passes for its annotation. Inputs the signature does not name go
    through only when it takes `**kwargs`."""
    steps, any_kwargs = _plan(call)
    kwargs: dict[str, Any] = {}
    for pname, default, convert in steps:
        value = inputs[pname] if pname in inputs else default
        kwargs[pname] = convert(value)
    if any_kwargs:
        for k, v in inputs.items():
            if k not in kwargs:
                kwargs[k] = _legacy(v)
    return kwargs

"""A predictor's parameters → the `Input` component, as Cog's generator writes it.

Per parameter: `title`, the type's JSON (`model.types`), `x-order`, `default`, `nullable`,
`description`, `minimum/maximum`, `minLength/maxLength`, `pattern`, `deprecated`,
`x-cog-accept`; a `choices` field becomes `allOf: [{"$ref": ...}]` plus an enum component named
after the field. Defaults follow Cog:

- `Input(...)` with no default: required;
- `Optional[X] = None` (or `Input(default=None)`): `"default": null` and `nullable`;
- `Secret = Input(default=None)`: nullable with a null default too (Cog's rule for optional keys);
- `x: int = Input(default=None)` on a non-Optional type: may be left out, no default written
  (Cog's documented meaning, e.g. a seed randomised when blank, and what Replicate publishes).

Cog 0.23 stores `Input()` and `Input(default=None)` the same way; telling them apart needs the
source, read once per function with `ast`. Constraints Cog refuses (a default outside `ge/le`,
`accept=` on a non-file, `choices` with one value...) raise `SchemaError` with Cog's message.
"""
from __future__ import annotations

import ast
import dataclasses
import enum
import inspect
import os
import re
import sys
import textwrap
import typing
import warnings
from typing import Any, Callable

from replicate_jupyter.model.outputs import CogCompatibilityWarning, title_case, type_hints
from replicate_jupyter.model.types import (
    FILE,
    FLOAT,
    INT,
    PATH,
    REPEATED,
    REQUIRED,
    SECRET,
    STR,
    FieldType,
    SchemaError,
    cog_attr,
    field_type,
)

__all__ = ["input_schema", "REF_PREFIX"]

REF_PREFIX = "#/components/schemas/"


class _NoDefault:
    """Marks a parameter with no default at all (required)."""


_MISSING = _NoDefault()


def _field_info_class() -> Any:
    mod = sys.modules.get("cog.input")
    return getattr(mod, "FieldInfo", None) if mod is not None else None


def _is_input_call(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    f = node.func
    name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
    return name == "Input"


def explicit_defaults(fn: Callable[..., Any]) -> dict[str, bool] | None:
    """Which parameters spell out a default (an `Input(...)` with `default=`, or a plain `= v`),
    read from the source; None when there is no source (code run with `exec`)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError, IndentationError):
        return None
    node = next((n for n in ast.walk(tree)
                 if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == fn.__name__), None)
    if node is None:
        return None
    a = node.args
    positional = list(a.posonlyargs) + list(a.args)
    pairs = list(zip(positional[len(positional) - len(a.defaults):], a.defaults))
    pairs += [(arg, d) for arg, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None]
    out: dict[str, bool] = {}
    for arg, dnode in pairs:
        if _is_input_call(dnode):
            call = typing.cast(ast.Call, dnode)
            out[arg.arg] = bool(call.args) or any(kw.arg in ("default", None) for kw in call.keywords)
        else:
            out[arg.arg] = True
    return out


def _plain(v: Any) -> Any:
    return v.value if isinstance(v, enum.Enum) else v


def _normalise(value: Any, ft: FieldType) -> Any:
    """A default as Cog writes it: `float` fields get floats, paths strings, secrets their value."""
    value = _plain(value)
    if ft.is_list and isinstance(value, (list, tuple)):
        return [_normalise(v, FieldType(ft.primitive)) for v in value]
    if ft.primitive == FLOAT and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    secret = cog_attr("Secret")
    if secret is not None and isinstance(value, secret):
        return value.get_secret_value()
    return value


def _check_constraints(name: str, ft: FieldType, info: Any, default: Any) -> None:
    """Cog's own checks of `Input(...)` against the field type (cog._inspector, 0.23)."""
    in_repr = f"{name}: {ft.python_name()}"
    defaults = [] if default is None else (list(default) if ft.is_list and isinstance(default, (list, tuple)) else [default])
    prim = ft.primitive if ft.variants is None else None
    if getattr(info, "accept", None) is not None and prim not in (PATH, FILE):
        raise SchemaError(f"accept is only valid on Path or File inputs (parameter '{name}')")
    if info.ge is not None or info.le is not None:
        if prim not in (FLOAT, INT):
            raise SchemaError(f"incompatible input type for ge/le: {in_repr}")
        if info.ge is not None and not all(x >= info.ge for x in defaults):
            raise SchemaError(f"invalid default for {in_repr}: must be at minimum {info.ge}")
        if info.le is not None and not all(x <= info.le for x in defaults):
            raise SchemaError(f"invalid default for {in_repr}: must be at maximum {info.le}")
    if info.min_length is not None or info.max_length is not None:
        if prim != STR:
            raise SchemaError(f"incompatible input type for min_length/max_length: {in_repr}")
        if info.min_length is not None and not all(len(x) >= info.min_length for x in defaults):
            raise SchemaError(f"default conflicts with min_length={info.min_length} for input: {in_repr}")
        if info.max_length is not None and not all(len(x) <= info.max_length for x in defaults):
            raise SchemaError(f"default conflicts with max_length={info.max_length} for input: {in_repr}")
    if info.regex is not None:
        if prim != STR:
            raise SchemaError(f"incompatible input type for regex: {in_repr}")
        if not all(re.match(info.regex, x) for x in defaults):
            raise SchemaError(f"default not a regex match for input: {in_repr}")
    if info.choices is not None:
        choices = list(info.choices)
        if prim not in (INT, STR):
            raise SchemaError(f"incompatible input type for choices: {in_repr}")
        if len(choices) < 2:
            raise SchemaError(f"choices={info.choices!r} must have >= 2 elements: {in_repr}")
        if info.ge is not None or info.le is not None:
            raise SchemaError(f"choices and ge/le are mutually exclusive: {in_repr}")
        if info.min_length is not None or info.max_length is not None:
            raise SchemaError(f"choices and min_length/max_length are mutually exclusive: {in_repr}")
        want = int if prim == INT else str
        if not all(type(_plain(c)) is want for c in choices):
            raise SchemaError(f"not all choices have the same type as input: {in_repr}")


def _default_of(default: Any, explicit: bool | None) -> tuple[Any, Any, bool]:
    """(FieldInfo or None, the default value, whether a default was spelled out)."""
    info_cls = _field_info_class()
    if info_cls is not None and isinstance(default, info_cls):
        raw = default.default
        if isinstance(raw, dataclasses.Field):  # cog accepts dataclasses.field(default=...)
            raw = raw.default if raw.default is not dataclasses.MISSING else None
        spelled = True if raw is not None else (explicit if explicit is not None else True)
        return default, raw, spelled
    if default is _MISSING:
        return None, None, False
    return None, default, True


def _property(order: int, name: str, tp: Any, default: Any, explicit: bool | None, where: str):
    """(property, enum component or None, required)."""
    here = f"{where} input {name!r}"
    info, raw, spelled = _default_of(default, explicit)
    if tp is inspect.Parameter.empty:
        if raw is None:
            raise SchemaError(f"{here}: missing type annotation for input: {name}")
        warnings.warn(f"{here}: missing type annotation for input: {name} (cog build refuses it; typed from its "
                      f"default as {type(_plain(raw)).__name__} here)", CogCompatibilityWarning, stacklevel=5)
        tp = type(_plain(raw))
    ft = field_type(tp, here)
    if ft.primitive == FLOAT and ft.variants is None and isinstance(_plain(raw), int) and not isinstance(raw, bool):
        raw = float(_plain(raw))
    if info is not None:
        try:
            _check_constraints(name, ft, info, None if raw is None else _normalise(raw, ft))
        except SchemaError as exc:
            raise SchemaError(f"{here}: {exc}") from None
    choices = [_plain(c) for c in info.choices] if info is not None and info.choices is not None else None
    prop: dict[str, Any] = {}
    component = None
    if choices:
        ctype = ft.json().get("type") if ft.variants is None and not ft.is_list else None
        component = {"title": name, "description": "An enumeration.", "enum": choices, "type": ctype or "string"}
        prop["allOf"] = [{"$ref": REF_PREFIX + name}]
    else:
        prop["title"] = title_case(name)
        prop.update(ft.json())
    nullable = ft.nullable or (ft.primitive == SECRET and ft.repetition == REQUIRED and spelled and raw is None)
    if spelled and (raw is not None or nullable):
        prop["default"] = None if raw is None else _normalise(raw, ft)
    if nullable:
        prop["nullable"] = True
    if info is not None:
        for key, attr in (("minimum", "ge"), ("maximum", "le"), ("minLength", "min_length"),
                          ("maxLength", "max_length"), ("pattern", "regex")):
            value = getattr(info, attr)
            if value is not None:
                prop[key] = value
        if info.deprecated:
            prop["deprecated"] = True
        if getattr(info, "accept", None) is not None:
            prop["x-cog-accept"] = info.accept
    prop["x-order"] = order
    if info is not None and info.description is not None:
        prop["description"] = info.description
    required = not spelled and ft.repetition in (REQUIRED, REPEATED)
    return prop, component, required


def input_schema(fn: Callable[..., Any], takes_self: bool, where: str) -> tuple[dict, list[tuple[str, dict]]]:
    """(the `Input` component, the enum components of `choices` fields)."""
    sig = inspect.signature(fn)
    hints = type_hints(fn)
    explicit = explicit_defaults(fn)
    params = list(sig.parameters.values())
    if takes_self and params:
        params = params[1:]
    props: dict[str, dict] = {}
    enums: list[tuple[str, dict]] = []
    required: list[str] = []
    order = 0
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            star = "*args" if p.kind is p.VAR_POSITIONAL else "**kwargs"
            warnings.warn(f"{where}() must not have {star} (cog build refuses it; ignored here)",
                          CogCompatibilityWarning, stacklevel=4)
            continue
        default = _MISSING if p.default is p.empty else p.default
        prop, comp, req = _property(order, p.name, hints.get(p.name, p.annotation), default,
                                    None if explicit is None else explicit.get(p.name), where)
        props[p.name] = prop
        if comp is not None:
            enums.append((p.name, comp))
        if req:
            required.append(p.name)
        order += 1
    inp: dict[str, Any] = {"type": "object", "title": "Input", "properties": props}
    if required:
        inp["required"] = required
    return inp, enums


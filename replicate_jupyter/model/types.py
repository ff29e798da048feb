"""Cog's type system: a Python annotation → the field type Cog gives it → its JSON schema.

Cog 0.23 types a predictor twice: its Go CLI writes the schema at build time from the source,
and its Python SDK (`cog._adt`) types each input again when coglet sets the model up. Both agree
on what a type means, and both refuse some annotations outright. This module is that one
mapping, written once so the schema, validation and the argument conversion for the predictor
(`model.arguments`) all read the same answer:

- scalars `bool int float str`, files `cog.Path` (any `os.PathLike`) and `cog.File` (any
  `io.IOBase`), `cog.Secret`, and opaque JSON objects (`dict`, `TypedDict`, `Any`,
  `Annotated[T, cog.Opaque]`);
- repetition: required, `Optional[X]`, `list[X]`, `Optional[list[X]]`;
- unions of scalars or lists of scalars (`str | float`, `int | list[int]`), tried in Cog's order.

Refusals raise `SchemaError` with Cog's own reason, so a predictor that would not build under
`cog build` does not quietly run here. cog is never imported: a predictor using cog types has
imported it already, and they are looked up in `sys.modules`.
"""
from __future__ import annotations

import io
import os
import sys
import types
import typing
from dataclasses import dataclass
from typing import Any

__all__ = [
    "SchemaError", "FieldType", "field_type", "strip_annotated", "unwrap_opaque", "is_union",
    "cog_attr", "type_name", "is_typeddict", "is_dict_like", "BOOL", "FLOAT", "INT", "STR", "PATH", "FILE", "SECRET", "ANY",
    "REQUIRED", "OPTIONAL", "REPEATED", "OPTIONAL_REPEATED",
]


class SchemaError(TypeError):
    """A predictor definition Cog refuses; the message names the field and Cog's reason."""


BOOL, FLOAT, INT, STR, PATH, FILE, SECRET, ANY = "bool", "float", "int", "str", "Path", "File", "Secret", "Any"
REQUIRED, OPTIONAL, REPEATED, OPTIONAL_REPEATED = "required", "optional", "repeated", "optional_repeated"

_JSON: dict[str, dict[str, Any]] = {
    BOOL: {"type": "boolean"},
    FLOAT: {"type": "number"},
    INT: {"type": "integer"},
    STR: {"type": "string"},
    PATH: {"type": "string", "format": "uri"},
    FILE: {"type": "string", "format": "uri"},
    SECRET: {"type": "string", "format": "password", "writeOnly": True, "x-cog-secret": True},
    ANY: {"type": "object"},
}
_PYTHON_NAME = {BOOL: "bool", FLOAT: "float", INT: "int", STR: "str", PATH: "Path", FILE: "File",
                SECRET: "Secret", ANY: "Any"}
_UNION_PRIORITY = {BOOL: 0, INT: 1, FLOAT: 2, STR: 3, ANY: 4}


@dataclass(frozen=True)
class FieldType:
    """What Cog makes of one annotation: a primitive, its repetition, and union variants."""

    primitive: str
    repetition: str = REQUIRED
    variants: tuple["FieldType", ...] | None = None

    @property
    def nullable(self) -> bool:
        return self.repetition in (OPTIONAL, OPTIONAL_REPEATED)

    @property
    def is_list(self) -> bool:
        return self.repetition in (REPEATED, OPTIONAL_REPEATED)

    def json(self) -> dict[str, Any]:
        """The JSON schema fragment Cog writes for this type (without `nullable`)."""
        if self.variants is not None:
            return {"anyOf": [v.json() for v in self.variants]}
        if self.is_list:
            return {"type": "array", "items": dict(_JSON[self.primitive])}
        return dict(_JSON[self.primitive])

    def python_name(self) -> str:
        """Cog's spelling of the type in its error messages (`Optional[List[int]]`)."""
        if self.variants is not None:
            name = " | ".join(v.python_name() for v in self.variants)
            return f"Optional[{name}]" if self.nullable else name
        base = _PYTHON_NAME[self.primitive]
        return {REQUIRED: base, OPTIONAL: f"Optional[{base}]", REPEATED: f"List[{base}]",
                OPTIONAL_REPEATED: f"Optional[List[{base}]]"}[self.repetition]

    def union_order(self, value: Any) -> list["FieldType"]:
        """The variants in the order Cog tries them for `value`: an exact type match first, then
        bool < int < float < str < object (lists after scalars), then as declared."""
        assert self.variants is not None
        return [v for _, v in sorted(enumerate(self.variants), key=lambda iv: (
            not _exact_match(value, iv[1]), _UNION_PRIORITY.get(iv[1].primitive, 100) + (10 if iv[1].is_list else 0),
            iv[0]))]


def _exact_match(value: Any, ft: FieldType) -> bool:
    if ft.is_list:
        return isinstance(value, list)
    p = ft.primitive
    return {BOOL: isinstance(value, bool), INT: isinstance(value, int) and not isinstance(value, bool),
            FLOAT: isinstance(value, float), STR: isinstance(value, str), ANY: isinstance(value, dict)}.get(p, False)


# --------------------------------------------------------------------------------------------
# annotations
# --------------------------------------------------------------------------------------------


def cog_attr(name: str) -> Any:
    mod = sys.modules.get("cog")
    return getattr(mod, name, None) if mod is not None else None


def is_union(tp: Any) -> bool:
    origin = typing.get_origin(tp)
    return origin is typing.Union or origin is types.UnionType


def unwrap_opaque(tp: Any) -> tuple[Any, bool]:
    """`Annotated[T, cog.Opaque]` → (T, True); anything else → (tp, False)."""
    if typing.get_origin(tp) is not typing.Annotated:
        return tp, False
    args = typing.get_args(tp)
    opaque = cog_attr("Opaque")
    marker = type(opaque) if opaque is not None else None
    for meta in args[1:]:
        if opaque is not None and (meta is opaque or (marker is not None and isinstance(meta, marker))):
            return args[0], True
    return tp, False


def strip_annotated(tp: Any) -> Any:
    """`Annotated[T, ...]` → T, unless the metadata is `cog.Opaque` (which changes the type)."""
    while typing.get_origin(tp) is typing.Annotated and not unwrap_opaque(tp)[1]:
        tp = typing.get_args(tp)[0]
    return tp


def type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or getattr(tp, "_name", None) or str(tp)


def is_typeddict(tp: Any) -> bool:
    if typing.is_typeddict(tp):
        return True
    ext = sys.modules.get("typing_extensions")
    return bool(ext is not None and ext.is_typeddict(tp))


def is_dict_like(tp: Any) -> bool:
    return tp is dict or typing.get_origin(tp) is dict or is_typeddict(tp)


def _primitive(tp: Any) -> str | None:
    if tp is bool:
        return BOOL
    if tp is int:
        return INT
    if tp is float:
        return FLOAT
    if tp is str:
        return STR
    if tp is Any:
        return ANY
    if isinstance(tp, type):
        secret = cog_attr("Secret")
        if secret is not None and issubclass(tp, secret):
            return SECRET
        if issubclass(tp, io.IOBase):  # cog.File (deprecated): a file object
            return FILE
        if issubclass(tp, os.PathLike):  # cog.Path, pathlib.Path
            return PATH
    return None


def field_type(tp: Any, where: str = "input") -> FieldType:
    """The Cog field type of an input annotation; `SchemaError` with Cog's reason if Cog refuses it."""
    inner, opaque = unwrap_opaque(tp)
    if opaque:
        return _opaque_field_type(inner)
    tp = strip_annotated(tp)
    if tp is list:
        return FieldType(ANY, REPEATED)
    if is_dict_like(tp):
        return FieldType(ANY)
    origin = typing.get_origin(tp)
    if origin is list:
        return FieldType(_list_element(tp, where), REPEATED)
    if is_union(tp):
        args = typing.get_args(tp)
        has_none = any(a is type(None) for a in args)
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            variants = []
            for arg in rest:
                try:
                    v = field_type(arg, where)
                except SchemaError:
                    v = None
                if v is None or v.variants is not None or v.primitive in (PATH, FILE, SECRET) or v.nullable:
                    raise SchemaError(f"{where}: unsupported union member {type_name(strip_annotated(arg))} in union {tp}")
                variants.append(v)
            return FieldType(ANY, OPTIONAL if has_none else REQUIRED, tuple(variants))
        elem = strip_annotated(rest[0])
        if not has_none:
            return field_type(elem, where)
        elem_inner, elem_opaque = unwrap_opaque(rest[0])
        if elem_opaque:
            ft = _opaque_field_type(elem_inner)
            return FieldType(ANY, OPTIONAL_REPEATED if ft.is_list else OPTIONAL)
        if elem is list or typing.get_origin(elem) is list:
            return FieldType(_list_element(elem, where) if elem is not list else ANY, OPTIONAL_REPEATED)
        if is_dict_like(elem):
            return FieldType(ANY, OPTIONAL)
        nested = typing.get_origin(elem)
        if nested is not None:
            raise SchemaError(f"{where}: Optional cannot have nested type {type_name(nested)}")
        return FieldType(_scalar(elem, where), OPTIONAL)
    if origin is not None:
        raise SchemaError(f"{where}: unsupported Cog type {type_name(tp)}")
    return FieldType(_scalar(tp, where))


def _scalar(tp: Any, where: str) -> str:
    prim = _primitive(tp)
    if prim is None:
        raise SchemaError(f"{where}: unsupported Cog type {type_name(tp)}")
    return prim


def _list_element(tp: Any, where: str) -> str:
    args = typing.get_args(tp)
    if not args:
        return ANY
    if len(args) != 1:
        raise SchemaError(f"{where}: List must have one type argument")
    elem = args[0]
    if unwrap_opaque(elem)[1]:
        return ANY
    elem = strip_annotated(elem)
    if is_dict_like(elem):
        return ANY
    nested = typing.get_origin(elem)
    if nested is not None:
        raise SchemaError(f"{where}: List cannot have nested type {type_name(nested)}")
    return _scalar(elem, where)


def _opaque_field_type(inner: Any) -> FieldType:
    origin = typing.get_origin(inner)
    if inner is list or origin is list:
        return FieldType(ANY, REPEATED)
    if is_union(inner):
        args = typing.get_args(inner)
        if len(args) == 2 and type(None) in args:
            other = args[0] if args[1] is type(None) else args[1]
            repeated = other is list or typing.get_origin(other) is list
            return FieldType(ANY, OPTIONAL_REPEATED if repeated else OPTIONAL)
    return FieldType(ANY)

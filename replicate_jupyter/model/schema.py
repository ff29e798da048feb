"""Predictor signature → OpenAPI schema, in the shape Cog and Replicate publish.

A model's schema is the one description every part of the project reads: validation checks input
against it, forms draw widgets from it, the workers pool and Replicate hand out the same document.
So it must match what `cog build` writes to `.cog/openapi_schema.json` and what Replicate shows as a
version's `openapi_schema` (checked field by field against stability-ai/sdxl in the tests):

- `Input` properties carry `type`, `title` ("Num Inference Steps"), `description`, `default`,
  `x-order`, `minimum`/`maximum`, `minLength`/`maxLength`, `pattern`, `format: uri` for files,
  `format: password` + `x-cog-secret` for secrets; a `choices` field becomes
  `allOf: [{"$ref": "#/components/schemas/<field>"}]` plus an enum component named after the field.
- `Output` carries `x-cog-array-type: iterator` for iterators and `x-cog-array-display: concatenate`
  for `ConcatenateIterator`.

cog 0.23's Python SDK only inspects types (its schema is written by the Go CLI), so the document
is assembled here. cog itself is never imported by this module: a predictor that uses cog types
has imported cog already, and its types are looked up in `sys.modules`.

A `Input(default=None)` on a non-Optional field means "no default, may be left out" (e.g. a seed
that is randomised when blank), exactly as Replicate publishes it; an `Input(...)` without any
default means required. Telling them apart needs the source text (cog 0.23 stores both as
`default=None`), which is read once per class with `ast`.
"""
from __future__ import annotations

import ast
import collections.abc
import copy
import dataclasses
import enum
import inspect
import io
import os
import sys
import threading
import types
import typing
import weakref
from typing import Any, Callable

__all__ = [
    "build_schema",
    "input_properties",
    "first_string_input",
    "is_iterator",
    "is_concatenate",
    "file_fields",
    "predict_function",
    "title_case",
]

_REF_PREFIX = "#/components/schemas/"

# --------------------------------------------------------------------------------------------
# public: building
# --------------------------------------------------------------------------------------------

_cache: "weakref.WeakKeyDictionary[Any, dict[str | None, dict]]" = weakref.WeakKeyDictionary()
_cache_lock = threading.Lock()


def build_schema(predictor: type | object, name: str | None = None) -> dict:
    """The OpenAPI document of a predictor class, instance or function.

    Built once per class (and name) and cached: the returned dict is shared, so treat it as
    read-only. `name` ("owner/model") lands in `info["x-replicate-model"]`.
    """
    key = _cache_key(predictor)
    try:
        per_name = _cache.get(key)
    except TypeError:  # not weak-referenceable: build every time
        per_name = None
        key = None
    if per_name is not None and name in per_name:
        return per_name[name]
    doc = _build(predictor, name)
    if key is not None:
        with _cache_lock:
            _cache.setdefault(key, {})[name] = doc
    return doc


def predict_function(predictor: type | object) -> tuple[Callable[..., Any], bool]:
    """(the function whose signature is the model's interface, whether it takes `self`).

    `run` when the class defines its own (cog's `BaseRunner`), else `predict`; methods the cog
    SDK defines as placeholders do not count. A plain function is its own interface.
    """
    if inspect.isfunction(predictor):
        return predictor, False
    if inspect.ismethod(predictor):
        return predictor.__func__, True
    cls = predictor if isinstance(predictor, type) else type(predictor)
    found: dict[str, Any] = {}
    for owner in cls.__mro__:
        if owner is object or (owner.__module__ or "").split(".")[0] == "cog":
            continue
        for meth in ("run", "predict"):
            if meth not in found and meth in owner.__dict__:
                found[meth] = owner.__dict__[meth]
    for meth in ("run", "predict"):
        fn = found.get(meth)
        if fn is None:
            continue
        if isinstance(fn, (staticmethod, classmethod)):
            return fn.__func__, isinstance(fn, classmethod)
        if callable(fn):
            return fn, True
    raise TypeError(f"{cls.__name__} has no predict() or run() method")


def title_case(name: str) -> str:
    """`num_inference_steps` → `Num Inference Steps` (Cog's property titles)."""
    return name.replace("_", " ").title()


# --------------------------------------------------------------------------------------------
# public: reading
# --------------------------------------------------------------------------------------------

_props_cache: dict[int, tuple[dict, list[tuple[str, dict]]]] = {}


def input_properties(schema: dict) -> list[tuple[str, dict]]:
    """Input properties in `x-order`, each a copy with `allOf`/`$ref` enums resolved into
    `enum` (+ `type`, `title`). Accepts the full document or the `Input` component alone."""
    hit = _props_cache.get(id(schema))
    if hit is not None and hit[0] is schema:
        return [(n, dict(p)) for n, p in hit[1]]
    comps = _components(schema)
    inp = _input_component(schema)
    props = inp.get("properties") or {}
    items: list[tuple[str, dict]] = []
    for pos, (fname, prop) in enumerate(props.items()):
        p = dict(prop)
        ref = _enum_ref(p)
        if ref is not None:
            target = comps.get(ref) or {}
            p.pop("allOf", None)
            if "enum" in target:
                p["enum"] = list(target["enum"])
            if "type" in target and "type" not in p:
                p["type"] = target["type"]
        p.setdefault("title", title_case(fname))
        items.append((fname, p))
    order = {n: i for i, (n, _) in enumerate(items)}
    items.sort(key=lambda it: (it[1].get("x-order", 10**6 + order[it[0]]), order[it[0]]))
    if len(_props_cache) > 512:
        _props_cache.clear()
    _props_cache[id(schema)] = (schema, items)
    return [(n, dict(p)) for n, p in items]


def first_string_input(schema: dict) -> str | None:
    """The first free-text input by `x-order` (the prompt): a plain string, not a file, secret
    or choice."""
    for fname, prop in input_properties(schema):
        if prop.get("type") == "string" and "format" not in prop and "enum" not in prop:
            return fname
    return None


def is_iterator(schema: dict) -> bool:
    return _output(schema).get("x-cog-array-type") == "iterator"


def is_concatenate(schema: dict) -> bool:
    out = _output(schema)
    return out.get("x-cog-array-type") == "iterator" and out.get("x-cog-array-display") == "concatenate"


def file_fields(schema: dict) -> set[str]:
    """Inputs that take files (`format: uri`, or arrays of them)."""
    found = set()
    for fname, prop in (_input_component(schema).get("properties") or {}).items():
        if prop.get("format") == "uri" or (prop.get("items") or {}).get("format") == "uri":
            found.add(fname)
    return found


def _components(schema: dict) -> dict:
    return (schema.get("components") or {}).get("schemas") or {}


def _input_component(schema: dict) -> dict:
    comps = _components(schema)
    if "Input" in comps:
        return comps["Input"]
    if "properties" in schema:
        return schema
    return {}


def _output(schema: dict) -> dict:
    return _components(schema).get("Output") or {}


def _enum_ref(prop: dict) -> str | None:
    for part in prop.get("allOf") or ():
        ref = part.get("$ref") if isinstance(part, dict) else None
        if isinstance(ref, str) and ref.startswith(_REF_PREFIX):
            return ref[len(_REF_PREFIX):]
    return None


# --------------------------------------------------------------------------------------------
# building: inputs
# --------------------------------------------------------------------------------------------


def _cache_key(predictor: Any) -> Any:
    if isinstance(predictor, type) or inspect.isfunction(predictor):
        return predictor
    if inspect.ismethod(predictor):
        return predictor.__func__
    return type(predictor)


class _NoDefault:
    """Marks a parameter with no default at all (required)."""


_MISSING = _NoDefault()


def _cog_attr(name: str) -> Any:
    mod = sys.modules.get("cog")
    return getattr(mod, name, None) if mod is not None else None


def _field_info_class() -> Any:
    mod = sys.modules.get("cog.input")
    return getattr(mod, "FieldInfo", None) if mod is not None else None


def _is_input_call(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    f = node.func
    name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
    return name == "Input"


def _explicit_defaults(fn: Callable[..., Any]) -> dict[str, bool] | None:
    """Which `Input(...)` calls spell out a default, read from the source; None if unreadable."""
    import textwrap

    try:
        src = textwrap.dedent(inspect.getsource(fn))
        tree = ast.parse(src)
    except (OSError, TypeError, SyntaxError, IndentationError):
        return None
    node = next(
        (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == fn.__name__),
        None,
    )
    if node is None:
        return None
    a = node.args
    out: dict[str, bool] = {}
    positional = list(a.posonlyargs) + list(a.args)
    pairs = list(zip(positional[len(positional) - len(a.defaults):], a.defaults))
    pairs += [(arg, d) for arg, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None]
    for arg, dnode in pairs:
        if _is_input_call(dnode):
            call = typing.cast(ast.Call, dnode)
            out[arg.arg] = bool(call.args) or any(kw.arg in ("default", None) for kw in call.keywords)
        else:
            out[arg.arg] = True
    return out


def _strip_annotated(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _is_union(tp: Any) -> bool:
    origin = typing.get_origin(tp)
    return origin is typing.Union or origin is types.UnionType


def _split_optional(tp: Any) -> tuple[Any, bool]:
    """`Optional[X]` → (X, True); unions of several types stay as they are."""
    if _is_union(tp):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        nullable = len(args) != len(typing.get_args(tp))
        if len(args) == 1:
            return args[0], nullable
        return typing.Union[tuple(args)] if nullable else tp, nullable  # type: ignore[return-value]
    return tp, False


def _primitive(tp: Any, where: str) -> dict[str, Any]:
    """JSON type of one scalar annotation."""
    tp = _strip_annotated(tp)
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer"}
    if tp is float:
        return {"type": "number"}
    if tp is str:
        return {"type": "string"}
    if tp is Any or tp is object:
        return {}
    secret = _cog_attr("Secret")
    if isinstance(tp, type):
        if secret is not None and issubclass(tp, secret):
            return {"type": "string", "format": "password", "writeOnly": True, "x-cog-secret": True}
        if issubclass(tp, (os.PathLike, io.IOBase)):  # cog.Path, cog.File, pathlib.Path
            return {"type": "string", "format": "uri"}
        if issubclass(tp, enum.Enum):
            values = [m.value for m in tp]
            return _primitive(type(values[0]), where) if values else {"type": "string"}
        if tp is dict or _is_typeddict(tp):
            return {"type": "object"}
    if tp is dict or typing.get_origin(tp) is dict:
        return {"type": "object"}
    raise TypeError(f"{where}: unsupported type {getattr(tp, '__name__', tp)!r}")


def _is_typeddict(tp: Any) -> bool:
    fn = getattr(typing, "is_typeddict", None)
    return bool(fn and fn(tp))


def _json_type(tp: Any, where: str) -> tuple[dict[str, Any], bool]:
    """(JSON schema of an annotation, nullable)."""
    tp = _strip_annotated(tp)
    inner, nullable = _split_optional(tp)
    inner = _strip_annotated(inner)
    if _is_union(inner):
        variants = [_json_type(a, where)[0] for a in typing.get_args(inner)]
        return {"anyOf": variants}, nullable
    origin = typing.get_origin(inner)
    if inner is list or origin in (list, collections.abc.Sequence, tuple, set, frozenset) or inner in (tuple, set):
        args = typing.get_args(inner)
        item = _primitive(args[0], where) if args and args[0] is not Ellipsis else {}
        return {"type": "array", "items": item}, nullable
    return _primitive(inner, where), nullable


def _number(v: Any) -> Any:
    return v.value if isinstance(v, enum.Enum) else v


def _normalise_default(value: Any, jt: dict[str, Any]) -> Any:
    value = _number(value)
    t = jt.get("type")
    if t == "number" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if t == "array" and isinstance(value, (list, tuple)):
        return [_normalise_default(v, jt.get("items") or {}) for v in value]
    if t == "string" and isinstance(value, os.PathLike):
        return os.fspath(value)
    secret = _cog_attr("Secret")
    if secret is not None and isinstance(value, secret):
        return value.get_secret_value()
    return value


def _input_property(order: int, pname: str, tp: Any, default: Any, explicit: bool | None, where: str):
    """(property, enum component or None, required)."""
    info_cls = _field_info_class()
    info = default if info_cls is not None and isinstance(default, info_cls) else None
    if info is not None:
        raw_default = info.default
        if isinstance(raw_default, dataclasses.Field):  # cog allows dataclasses.field(default=…)
            raw_default = raw_default.default if raw_default.default is not dataclasses.MISSING else None
        has_default_kw = explicit if explicit is not None else True
        if raw_default is not None:
            has_default_kw = True
    elif default is _MISSING:
        raw_default, has_default_kw = None, False
    else:
        raw_default, has_default_kw = default, True

    if tp is inspect.Parameter.empty:
        if raw_default is None:
            raise TypeError(f"{where}: missing type annotation")
        tp = type(_number(raw_default))
    jt, nullable = _json_type(tp, where)

    choices = [_number(c) for c in info.choices] if info is not None and info.choices is not None else None
    prop: dict[str, Any] = {}
    component = None
    if choices:
        ctype = jt.get("type") or ("integer" if all(isinstance(c, int) for c in choices) else "string")
        component = {"title": pname, "description": "An enumeration.", "enum": choices, "type": ctype}
        prop["allOf"] = [{"$ref": _REF_PREFIX + pname}]
    else:
        prop.update({k: v for k, v in jt.items() if k == "type"})
        prop["title"] = title_case(pname)
        prop.update({k: v for k, v in jt.items() if k != "type"})
    if raw_default is not None:
        prop["default"] = _normalise_default(raw_default, jt)
    if nullable:
        prop["nullable"] = True
    if info is not None:
        if info.ge is not None:
            prop["minimum"] = info.ge
        if info.le is not None:
            prop["maximum"] = info.le
        if info.min_length is not None:
            prop["minLength"] = info.min_length
        if info.max_length is not None:
            prop["maxLength"] = info.max_length
        if info.regex is not None:
            prop["pattern"] = info.regex
        if info.deprecated:
            prop["deprecated"] = True
        if getattr(info, "accept", None):
            prop["x-cog-accept"] = info.accept
    prop["x-order"] = order
    if info is not None and info.description is not None:
        prop["description"] = info.description
    required = not has_default_kw and not nullable
    return prop, component, required


def _inputs(fn: Callable[..., Any], takes_self: bool, where: str):
    sig = inspect.signature(fn)
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception:
        hints = {k: v for k, v in getattr(fn, "__annotations__", {}).items()}
    explicit = _explicit_defaults(fn)
    params = list(sig.parameters.values())
    if takes_self and params:
        params = params[1:]
    props: dict[str, dict] = {}
    enums: list[tuple[str, dict]] = []
    required: list[str] = []
    order = 0
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        tp = hints.get(p.name, p.annotation)
        default = _MISSING if p.default is p.empty else p.default
        prop, comp, req = _input_property(
            order, p.name, tp, default, None if explicit is None else explicit.get(p.name), f"{where} input {p.name!r}"
        )
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


# --------------------------------------------------------------------------------------------
# building: output
# --------------------------------------------------------------------------------------------


def _output_schema(fn: Callable[..., Any], where: str) -> dict[str, Any]:
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception:
        hints = dict(getattr(fn, "__annotations__", {}))
    tp = hints.get("return", inspect.Parameter.empty)
    out: dict[str, Any] = {"title": "Output"}
    if tp is inspect.Parameter.empty or tp is None or tp is type(None):
        # an unannotated predictor: anything (async generators are still streams)
        if inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn):
            out.update({"type": "array", "items": {}, "x-cog-array-type": "iterator"})
        return out
    tp = _strip_annotated(tp)
    origin = typing.get_origin(tp)
    concat = tuple(c for c in (_cog_attr("ConcatenateIterator"), _cog_attr("AsyncConcatenateIterator")) if c is not None)
    if concat and (tp in concat or origin in concat):
        args = typing.get_args(tp)
        item = _primitive(args[0], where) if args else {"type": "string"}
        out.update({"type": "array", "items": item, "x-cog-array-type": "iterator", "x-cog-array-display": "concatenate"})
        return out
    iterators = (
        collections.abc.Iterator,
        collections.abc.AsyncIterator,
        collections.abc.Generator,
        collections.abc.AsyncGenerator,
        collections.abc.Iterable,
        collections.abc.AsyncIterable,
    )
    if origin in iterators:
        args = typing.get_args(tp)
        item = _primitive(args[0], where) if args else {}
        out.update({"type": "array", "items": item, "x-cog-array-type": "iterator"})
        return out
    if isinstance(tp, type) and _is_object_model(tp):
        props: dict[str, Any] = {}
        req: list[str] = []
        for fname, ftp in typing.get_type_hints(tp).items():
            if fname.startswith("_"):
                continue
            jt, nullable = _json_type(ftp, f"{where} output field {fname!r}")
            prop = dict(jt)
            if nullable:
                prop["nullable"] = True
            else:
                req.append(fname)
            prop["title"] = title_case(fname)
            props[fname] = prop
        out.update({"type": "object", "properties": props})
        if req:
            out["required"] = req
        return out
    jt, _nullable = _json_type(tp, f"{where} output")
    out.update(jt)
    return out


def _is_object_model(tp: type) -> bool:
    base = _cog_attr("BaseModel")
    if base is not None and issubclass(tp, base):
        return True
    pyd = sys.modules.get("pydantic")
    pbase = getattr(pyd, "BaseModel", None) if pyd is not None else None
    return bool(pbase is not None and issubclass(tp, pbase))


# --------------------------------------------------------------------------------------------
# building: the document
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
            "detail": {"title": "Detail", "type": "array", "items": {"$ref": _REF_PREFIX + "ValidationError"}}
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
    schema = {"$ref": _REF_PREFIX + ref} if ref else {}
    return {"content": {"application/json": {"schema": schema}}}


def _build(predictor: Any, name: str | None) -> dict:
    fn, takes_self = predict_function(predictor)
    fn = inspect.unwrap(fn)
    owner = predictor if isinstance(predictor, type) else type(predictor)
    where = getattr(owner, "__qualname__", None) if not inspect.isfunction(predictor) else predictor.__qualname__
    where = f"{where}.{fn.__name__}" if where and not inspect.isfunction(predictor) else (where or fn.__name__)
    inp, enums = _inputs(fn, takes_self, where)
    output = _output_schema(fn, where)

    comps: dict[str, Any] = {"Input": inp, "Output": output}
    for ename, comp in enums:
        comps.setdefault(ename, comp)
    comps["PredictionRequest"] = {
        "title": "PredictionRequest",
        "type": "object",
        "properties": {"id": {"title": "Id", "type": "string"}, "input": {"$ref": _REF_PREFIX + "Input"}},
    }
    comps["PredictionResponse"] = {
        "title": "PredictionResponse",
        "type": "object",
        "properties": {
            "input": {"$ref": _REF_PREFIX + "Input"},
            "output": {"$ref": _REF_PREFIX + "Output"},
            "id": {"title": "Id", "type": "string"},
            "version": {"title": "Version", "type": "string"},
            "created_at": {"title": "Created At", "type": "string", "format": "date-time"},
            "started_at": {"title": "Started At", "type": "string", "format": "date-time"},
            "completed_at": {"title": "Completed At", "type": "string", "format": "date-time"},
            "status": {"$ref": _REF_PREFIX + "Status"},
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
                    {"required": True, "schema": {"title": "Prediction Id", "type": "string"}, "name": "prediction_id", "in": "path"}
                ],
                "responses": {"200": {**ok, **_json_response(None)}, "422": copy.deepcopy(invalid)},
            }
        },
    }
    info: dict[str, Any] = {"title": "Cog", "version": "0.1.0"}
    if name:
        info["x-replicate-model"] = name
    return {"openapi": "3.0.2", "info": info, "paths": paths, "components": {"schemas": comps}}

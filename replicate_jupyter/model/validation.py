"""Input dict → coerced input dict, checked against a model's schema before anything runs.

Every problem is collected and raised as ONE `errors.InputError` (field, rule, value given, what
is allowed), so a bad cell never costs money and the user fixes everything in one go. The rules
are Cog's server's: `null` only where the schema says `nullable`; union inputs tried in Cog's
order (`str | float` given 1 stays a number); list items held to their type (`list[int]` given
`["3"]` is refused); numbers finite. The single values are coerced leniently, the way YAML and
forms produce them (`model.coerce`).

This runs on every prediction, so each schema is compiled once into a list of small closures
(cached by schema identity) and validating a few fields costs microseconds.
"""
from __future__ import annotations

import re
import threading
from typing import Any, Callable

from replicate_jupyter.errors import InputError, Problem, shown_value
from replicate_jupyter.model.coerce import (
    Bad,
    Coerce,
    short,
    strict_bool,
    strict_float,
    strict_int,
    strict_str,
    to_any,
    to_bool,
    to_file,
    to_float,
    to_int,
    to_object,
    to_secret,
    to_str,
)
from replicate_jupyter.prediction.redact import MASK

__all__ = ["validate", "compile_schema", "Validator"]

_SECRET_SHOWN = "***"

_LENIENT = {"integer": (to_int, "an integer"), "number": (to_float, "a number"),
            "boolean": (to_bool, "a boolean (true/false)"), "string": (to_str, "a string"),
            "object": (to_object, "an object (dict)")}
_STRICT = {"integer": (strict_int, "an integer"), "number": (strict_float, "a number"),
           "boolean": (strict_bool, "a boolean (true/false)"), "string": (strict_str, "a string"),
           "object": (to_object, "an object (dict)")}


def _fmt(x: Any) -> str:
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return str(x)


# --------------------------------------------------------------------------------------------
# unions, as cog._adt tries them
# --------------------------------------------------------------------------------------------

_PRIORITY = {"boolean": 0, "integer": 1, "number": 2, "string": 3, "object": 4}


def _accepts(value: Any, t: str) -> bool:
    """cog's `_union_primitive_accepts_value`: exact JSON types, an int is also a number."""
    if t == "boolean":
        return type(value) is bool
    if t == "integer":
        return type(value) is int
    if t == "number":
        return type(value) in (float, int)
    if t == "string":
        return type(value) is str
    if t == "object":
        return isinstance(value, dict)
    return False


def _union(variants: list[dict]) -> tuple[Coerce, str]:
    shapes: list[tuple[str, bool]] = []  # (JSON type of the scalar, is a list)
    for v in variants:
        if v.get("type") == "array":
            shapes.append(((v.get("items") or {}).get("type", "object"), True))
        elif v.get("type") != "null":
            shapes.append((v.get("type", "object"), False))
    allowed = " or ".join(("a list of " if is_list else "") + _LENIENT.get(t, (None, t))[1] for t, is_list in shapes)

    def exact(value: Any, shape: tuple[str, bool]) -> bool:
        t, is_list = shape
        if is_list:
            return isinstance(value, list)
        return _accepts(value, t) and (t != "number" or type(value) is float)

    def normalise(value: Any, t: str) -> Any:
        out = _STRICT.get(t, (to_any, ""))[0](value)
        return out

    def union(value: Any) -> Any:
        order = sorted(range(len(shapes)), key=lambda i: (
            not exact(value, shapes[i]), _PRIORITY.get(shapes[i][0], 100) + (10 if shapes[i][1] else 0), i))
        for i in order:
            t, is_list = shapes[i]
            try:
                if is_list:
                    if isinstance(value, list) and all(_accepts(x, t) for x in value):
                        return [normalise(x, t) for x in value]
                elif _accepts(value, t):
                    return normalise(value, t)
            except Bad:
                continue
        raise Bad("type", allowed)

    return union, allowed


# --------------------------------------------------------------------------------------------
# per-field compilation
# --------------------------------------------------------------------------------------------


def _base_coercer(prop: dict, strict: bool) -> tuple[Coerce, str]:
    """(coercer for one value, the kind of value it wants, for messages)."""
    if "anyOf" in prop:
        return _union(list(prop["anyOf"]))
    t = prop.get("type")
    if t == "string":
        if prop.get("format") == "uri":
            return to_file, "a file"
        if prop.get("format") == "password" or prop.get("x-cog-secret"):
            return to_secret, "a string (secret)"
    table = _STRICT if strict else _LENIENT
    if t in table:
        return table[t]
    return to_any, "any value"


def _checks(prop: dict) -> list[Callable[[Any], None]]:
    """The constraint checks of one value (enum, bounds, lengths, pattern)."""
    checks: list[Callable[[Any], None]] = []
    enum = prop.get("enum")
    if enum is not None:
        choices = list(enum)
        choice_set = set(choices)
        allowed = "one of: " + ", ".join(str(c) for c in choices)

        def check_enum(v: Any) -> None:
            if v not in choice_set:
                msg = ""
                if isinstance(v, str):
                    near = {str(c).lower(): c for c in choices}.get(v.lower())
                    if near is None:
                        import difflib

                        close = difflib.get_close_matches(v, [str(c) for c in choices], n=1, cutoff=0.6)
                        near = close[0] if close else None
                    if near is not None:
                        msg = f"did you mean {near!r}?"
                raise Bad("choices", allowed, message=msg)

        checks.append(check_enum)
    lo, hi = prop.get("minimum"), prop.get("maximum")
    if lo is not None:
        def check_min(v: Any, lo: Any = lo) -> None:
            if isinstance(v, (int, float)) and v < lo:
                raise Bad("minimum", f">= {_fmt(lo)}")

        checks.append(check_min)
    if hi is not None:
        def check_max(v: Any, hi: Any = hi) -> None:
            if isinstance(v, (int, float)) and v > hi:
                raise Bad("maximum", f"<= {_fmt(hi)}")

        checks.append(check_max)
    mn, mx = prop.get("minLength"), prop.get("maxLength")
    if mn is not None:
        def check_minlen(v: Any, mn: int = mn) -> None:
            if isinstance(v, str) and len(v) < mn:
                raise Bad("minLength", f"at least {mn} character{'s' if mn != 1 else ''}")

        checks.append(check_minlen)
    if mx is not None:
        def check_maxlen(v: Any, mx: int = mx) -> None:
            if isinstance(v, str) and len(v) > mx:
                raise Bad("maxLength", f"at most {mx} character{'s' if mx != 1 else ''}")

        checks.append(check_maxlen)
    pattern = prop.get("pattern")
    if pattern is not None:
        rx = re.compile(pattern)

        def check_pattern(v: Any) -> None:
            if isinstance(v, str) and rx.match(v) is None:
                raise Bad("pattern", f"matching {pattern}")

        checks.append(check_pattern)
    return checks


def _checker(prop: dict, strict: bool) -> Coerce:
    """The coercer of one value plus its constraint checks, every broken rule reported."""
    coerce, _ = _base_coercer(prop, strict)
    checks = _checks(prop)
    if not checks:
        return coerce

    def checked(v: Any) -> Any:
        out = coerce(v)
        first = None
        for c in checks:
            try:
                c(out)
            except Bad as bad:
                if first is None:
                    first = bad
                else:
                    first.also.append(bad)
        if first is not None:
            raise first
        return out

    return checked


def _nullable(prop: dict) -> bool:
    return bool(prop.get("nullable")) or any(isinstance(v, dict) and v.get("type") == "null"
                                             for v in prop.get("anyOf") or ())


class _Field:
    __slots__ = ("name", "coerce", "is_list", "nullable", "has_default", "default", "required", "secret", "wants")

    def __init__(self, name: str, prop: dict, required: bool):
        self.name = name
        self.is_list = prop.get("type") == "array"
        item = (prop.get("items") or {}) if self.is_list else prop
        self.coerce = _checker(item, strict=self.is_list)
        self.wants = _base_coercer(item, strict=self.is_list)[1]
        self.nullable = _nullable(prop)
        self.default: Any = prop.get("default")
        self.has_default = "default" in prop and self.default is not None  # a null default: left out
        self.required = required and "default" not in prop
        self.secret = item.get("format") == "password" or bool(item.get("x-cog-secret"))
        if self.has_default and item.get("format") == "uri":
            try:  # a file default (usually a URL) becomes an InputFile like any given file
                self.default = [self.coerce(d) for d in (self.default or ())] if self.is_list else self.coerce(self.default)
            except Bad:
                pass

    def default_value(self) -> Any:
        d = self.default
        return list(d) if isinstance(d, list) else d


class Validator:
    """A schema compiled for validation: one `_Field` per input, in `x-order`."""

    def __init__(self, schema: dict):
        from replicate_jupyter.model.reading import input_component, input_properties

        required = set(input_component(schema).get("required") or ())
        self.fields: list[_Field] = [_Field(n, p, n in required) for n, p in input_properties(schema)]
        self.by_name: dict[str, _Field] = {f.name: f for f in self.fields}
        self.names: list[str] = [f.name for f in self.fields]

    def __call__(self, given: dict | None, model: str | None = None) -> dict:
        given = {} if given is None else given
        if not isinstance(given, dict):
            raise InputError(
                [Problem("input", "type", type(given).__name__, "a dict of input values",
                         message="input must be a dict of {name: value}")],
                model=model,
            )
        problems: list[Problem] = []
        for key in given:
            if key not in self.by_name:
                problems.append(self._unknown(key, given[key]))
        out: dict[str, Any] = {}
        for f in self.fields:
            name = f.name
            if name in given and given[name] is not None:
                v = given[name]
                try:
                    out[name] = self._coerce(f, v, problems)
                except Bad as bad:
                    problems.extend(self._problems(f, name, v, bad))
            elif name in given and f.nullable:
                out[name] = None
            elif f.required:
                problems.append(Problem(name, "required", None, f"{f.wants} (required)",
                                        message=f"required — input {name!r} is missing, allowed: {f.wants} (required)"))
            elif name in given:  # an explicit null where Cog's server refuses it
                problems.append(Problem(name, "type", None, f.wants, message=(
                    f"type — got None, allowed: {f.wants} (null is not allowed for {name!r}; leave it out to use "
                    "its default)")))
            elif f.has_default:
                out[name] = f.default_value()
        if problems:
            raise InputError(problems, model=model)
        return out

    def _coerce(self, f: _Field, v: Any, problems: list[Problem]) -> Any:
        if not f.is_list:
            return f.coerce(v)
        items = list(v) if isinstance(v, (list, tuple)) else [v]  # one value for a list input: a list of one
        result = []
        failed = False
        for i, item in enumerate(items):
            try:
                result.append(f.coerce(item))
            except Bad as bad:
                failed = True
                problems.extend(self._problems(f, f"{f.name}[{i}]", item, bad))
        return None if failed else result

    @staticmethod
    def _problems(f: _Field, field: str, value: Any, bad: Bad) -> list[Problem]:
        out = []
        for b in [bad, *bad.also]:
            if f.secret:  # never echo a secret, not even in a hint
                out.append(Problem(field, b.rule, _SECRET_SHOWN, b.allowed))
                continue
            note = f" ({b.note})" if b.note else ""
            msg = f"{b.rule} — got {short(value)}{note}, allowed: {b.allowed}"
            out.append(Problem(field, b.rule, value, b.allowed, message=msg))
        return out

    def _unknown(self, key: Any, value: Any) -> Problem:
        import difflib  # only on the error path

        name = str(key)
        near = difflib.get_close_matches(name, self.names, n=1, cutoff=0.6)
        if not near:
            folded = {n.lower().replace("-", "_"): n for n in self.names}
            hit = folded.get(name.lower().replace("-", "_").replace(" ", "_"))
            near = [hit] if hit else []
        known = ", ".join(self.names) or "(none)"
        hint = f" — did you mean {near[0]!r}?" if near else ""
        # a misspelled secret (`api_kee`) is still a secret: never echoed, nor any long value
        secret = bool(near) and self.by_name[near[0]].secret
        shown = MASK if secret else shown_value(name, value)
        kept = value if shown == " ".join(repr(value).split()) else shown  # what the Problem may hold
        return Problem(
            name, "unknown", kept, f"one of: {known}",
            message=f"unknown input {name!r}{hint} (got {shown}; rule: unknown). Known inputs: {known}",
        )


# --------------------------------------------------------------------------------------------
# cache + entry point
# --------------------------------------------------------------------------------------------

_validators: dict[int, tuple[dict, Validator]] = {}
_lock = threading.Lock()
_MAX = 256


def compile_schema(schema: dict) -> Validator:
    """The validator of a schema, compiled once per schema object (treat schemas as read-only)."""
    hit = _validators.get(id(schema))
    if hit is not None and hit[0] is schema:
        return hit[1]
    v = Validator(schema)
    with _lock:
        if len(_validators) >= _MAX:
            _validators.pop(next(iter(_validators)))
        _validators[id(schema)] = (schema, v)
    return v


def validate(schema: dict, input: dict | None, model: str | None = None) -> dict:
    """`input` coerced against `schema` (the OpenAPI document or its `Input` component), with
    defaults filled in; fields with neither a value nor a default are left out. Raises one
    `InputError` naming every problem."""
    return compile_schema(schema)(input, model)

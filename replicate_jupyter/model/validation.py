"""Input dict → coerced input dict, checked against a model's schema before anything runs.

Every problem is collected and raised as ONE `errors.InputError` (field, rule, value given, what
is allowed), so a bad cell never costs money and the user fixes everything in one go. Values
are coerced the way YAML and forms produce them (`"4"` or `4.0` for an integer, `"yes"` for a
boolean, `42` for a prompt), and files in any form (path, `pathlib.Path`, PIL image, numpy array,
bytes, open file, data URI, URL, another model's `FileOutput`) become `files.InputFile`.

This runs on every prediction, so each schema is compiled once into a list of small closures
(cached by schema identity) and validating a few fields costs microseconds. numpy and PIL are
never imported here unless the value handed in already is one of theirs.
"""
from __future__ import annotations

import io
import math
import operator
import mimetypes
import os
import pathlib
import re
import threading
from typing import Any, Callable

from replicate_jupyter.errors import InputError, Problem
from replicate_jupyter.prediction.files import FileOutput, InputFile, guess_type, parse_data_uri

__all__ = ["validate", "compile_schema", "Validator"]

_SECRET_SHOWN = "***"


class _Bad(Exception):
    """Raised by a coercer: one broken rule of one value; `note` adds a hint to the message."""

    def __init__(self, rule: str, allowed: str, message: str = ""):
        self.rule = rule
        self.allowed = allowed
        self.note = message
        self.also: list[_Bad] = []  # further rules the same value broke


def _short(value: Any, limit: int = 60) -> str:
    """A one-line description of a value for messages (arrays and images by shape, not content)."""
    mod = type(value).__module__ or ""
    if mod == "numpy" and hasattr(value, "shape"):
        return f"<numpy array shape={tuple(value.shape)} dtype={value.dtype}>"
    if mod.startswith("PIL."):
        return f"<PIL image {getattr(value, 'size', '?')} {getattr(value, 'mode', '')}>"
    if isinstance(value, (bytes, bytearray)) and len(value) > 32:
        return f"<{len(value)} bytes>"
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


_Coerce = Callable[[Any], Any]

# --------------------------------------------------------------------------------------------
# scalar coercers
# --------------------------------------------------------------------------------------------

_TRUE = frozenset({"true", "yes", "y", "on", "1", "t"})
_FALSE = frozenset({"false", "no", "n", "off", "0", "f"})


def _to_int(v: Any) -> int:
    t = type(v)
    if t is int:
        return v
    if t is bool:
        raise _Bad("type", "an integer")
    if t is float or isinstance(v, float):
        if v.is_integer():
            return int(v)
        raise _Bad("type", "an integer")
    if isinstance(v, str):
        s = v.strip()
        try:
            return int(s)
        except ValueError:
            try:
                f = float(s)
            except ValueError:
                raise _Bad("type", "an integer") from None
            if f.is_integer():
                return int(f)
        raise _Bad("type", "an integer")
    if isinstance(v, int):  # int subclasses (IntEnum…)
        return int(v)
    if type(v).__module__ == "numpy":  # numpy scalars: integers, or integral floats
        try:
            return operator.index(v)
        except TypeError:
            if hasattr(v, "is_integer") and v.is_integer():
                return int(v)
    raise _Bad("type", "an integer")


def _to_float(v: Any) -> float:
    t = type(v)
    if t is float:
        return v
    if t is int:
        return float(v)
    if t is bool:
        raise _Bad("type", "a number")
    if isinstance(v, str):
        try:
            f = float(v.strip())
        except ValueError:
            raise _Bad("type", "a number") from None
        return f
    if isinstance(v, (int, float)) or type(v).__module__ == "numpy":
        try:
            return float(v)
        except (TypeError, ValueError):
            pass
    raise _Bad("type", "a number")


def _to_bool(v: Any) -> bool:
    if type(v) is bool:
        return v
    if isinstance(v, str):
        s = v.strip().lower()
        if s in _TRUE:
            return True
        if s in _FALSE:
            return False
    elif type(v) is int and v in (0, 1):
        return bool(v)
    elif type(v).__module__ == "numpy" and type(v).__name__ == "bool_":
        return bool(v)
    raise _Bad("type", "a boolean (true/false)")


def _to_str(v: Any) -> str:
    if type(v) is str:
        return v
    if isinstance(v, str):
        return str(v)
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(v)  # YAML turns `prompt: 42` into an int
    raise _Bad("type", "a string")


def _to_secret(v: Any) -> Any:
    if isinstance(v, str):
        return v
    if hasattr(v, "get_secret_value"):  # cog.Secret
        return v
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(v)  # a numeric token read from YAML
    raise _Bad("type", "a string (secret)")


def _to_any(v: Any) -> Any:
    return v


def _to_object(v: Any) -> Any:
    if isinstance(v, dict):
        return v
    raise _Bad("type", "an object (dict)")


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------

_FILE_ALLOWED = "a file: a path, URL, data URI, bytes, open file, PIL image or numpy array"


def _name_for(data: bytes, stem: str = "input") -> tuple[str, str]:
    ctype = guess_type(stem, data)
    ext = (mimetypes.guess_extension(ctype) or "") if ctype != "application/octet-stream" else ""
    return stem + ext, ctype


def _png(image: Any) -> bytes:
    buf = io.BytesIO()
    img = image
    if img.mode not in ("RGB", "RGBA", "L", "LA", "P", "I", "I;16", "1"):
        img = img.convert("RGBA" if "A" in img.getbands() else "RGB")
    img.save(buf, format="PNG")
    return buf.getvalue()


def _array_to_png(arr: Any) -> bytes:
    import numpy as np
    from PIL import Image

    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))):
        raise _Bad("type", "an image array of shape HxW, HxWx3 or HxWx4", message=f"unsupported array shape {tuple(a.shape)}")
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif np.issubdtype(a.dtype, np.floating):
        if a.size and (np.nanmin(a) < 0.0 or np.nanmax(a) > 1.0):
            raise _Bad("type", "a float image array with values in 0..1", message="float image arrays must hold values in 0..1")
        a = np.clip(np.nan_to_num(a) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    elif a.dtype != np.uint8:
        if a.size and (a.min() < 0 or a.max() > 255):
            raise _Bad("type", "a uint8 image array (0..255)", message="integer image arrays must hold values in 0..255")
        a = a.astype(np.uint8)
    return _png(Image.fromarray(a))


def _from_path(p: Any, shown: Any) -> InputFile:
    path = pathlib.Path(os.fspath(p)).expanduser()
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise _Bad("file", "an existing file, a URL or a data URI", message=f"file {str(shown)!r} {what}")
    data = path.read_bytes()
    return InputFile(data, name=path.name)


def _to_file(v: Any) -> InputFile:
    if isinstance(v, InputFile):
        return v
    if isinstance(v, FileOutput):  # chain one model's output into another
        return InputFile(v.read(), name=v.name, content_type=v.content_type)
    if isinstance(v, str):
        s = v.strip()
        low = s[:8].lower()
        if low.startswith("http://") or low.startswith("https://"):
            from urllib.parse import unquote, urlparse

            name = os.path.basename(unquote(urlparse(s).path)) or "input"
            return InputFile(url=s, name=name)
        if low.startswith("data:"):
            try:
                data, ctype = parse_data_uri(s)
            except Exception:
                raise _Bad("file", "a valid data URI", message="malformed data URI") from None
            ext = mimetypes.guess_extension(ctype) or ""
            return InputFile(data, name="input" + ext, content_type=ctype)
        if not s:
            raise _Bad("type", _FILE_ALLOWED)
        return _from_path(s, v)
    if isinstance(v, (bytes, bytearray, memoryview)):
        data = bytes(v)
        name, ctype = _name_for(data)
        return InputFile(data, name=name, content_type=ctype)
    if isinstance(v, os.PathLike):
        return _from_path(v, os.fspath(v))
    mod = type(v).__module__ or ""
    if mod.startswith("PIL."):
        from PIL import Image

        if isinstance(v, Image.Image):
            return InputFile(_png(v), name="image.png", content_type="image/png")
    if mod == "numpy" and type(v).__name__ == "ndarray":
        return InputFile(_array_to_png(v), name="image.png", content_type="image/png")
    read = getattr(v, "read", None)
    if callable(read):  # an open file
        data = read()
        if isinstance(data, str):
            data = data.encode("utf-8")
        if not isinstance(data, (bytes, bytearray)):
            raise _Bad("type", _FILE_ALLOWED)
        raw_name = getattr(v, "name", None)
        if isinstance(raw_name, (str, os.PathLike)) and os.fspath(raw_name):
            return InputFile(bytes(data), name=os.path.basename(os.fspath(raw_name)))
        name, ctype = _name_for(bytes(data))
        return InputFile(bytes(data), name=name, content_type=ctype)
    raise _Bad("type", _FILE_ALLOWED)


# --------------------------------------------------------------------------------------------
# per-field compilation
# --------------------------------------------------------------------------------------------


def _fmt(x: Any) -> str:
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return str(x)


def _base_coercer(prop: dict) -> tuple[_Coerce, str]:
    """(coercer for one scalar, the kind of value it wants, for messages)."""
    if "anyOf" in prop:
        variants = [_base_coercer(v) for v in prop["anyOf"]]
        allowed = " or ".join(a for _, a in variants)

        def union(v: Any) -> Any:
            # exact type match first, then coercion in declared order
            for coerce, _ in variants:
                try:
                    out = coerce(v)
                except _Bad:
                    continue
                if type(out) is type(v):
                    return out
            for coerce, _ in variants:
                try:
                    return coerce(v)
                except _Bad:
                    continue
            raise _Bad("type", allowed)

        return union, allowed
    t = prop.get("type")
    fmt = prop.get("format")
    if t == "string":
        if fmt == "uri":
            return _to_file, "a file"
        if fmt == "password" or prop.get("x-cog-secret"):
            return _to_secret, "a string (secret)"
        return _to_str, "a string"
    if t == "integer":
        return _to_int, "an integer"
    if t == "number":
        return _to_float, "a number"
    if t == "boolean":
        return _to_bool, "a boolean (true/false)"
    if t == "object":
        return _to_object, "an object (dict)"
    return _to_any, "any value"


def _scalar_checker(prop: dict) -> _Coerce:
    """The coercer of one scalar plus its constraint checks (enum, bounds, lengths, pattern)."""
    coerce, _ = _base_coercer(prop)
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
                    folded = {str(c).lower(): c for c in choices}
                    near = folded.get(v.lower())
                    if near is None:
                        import difflib

                        close = difflib.get_close_matches(v, [str(c) for c in choices], n=1, cutoff=0.6)
                        near = close[0] if close else None
                    if near is not None:
                        msg = f"did you mean {near!r}?"
                raise _Bad("choices", allowed, message=msg)

        checks.append(check_enum)
    lo, hi = prop.get("minimum"), prop.get("maximum")
    if lo is not None:

        def check_min(v: Any, lo: Any = lo) -> None:
            if isinstance(v, (int, float)) and v < lo:
                raise _Bad("minimum", f">= {_fmt(lo)}")

        checks.append(check_min)
    if hi is not None:

        def check_max(v: Any, hi: Any = hi) -> None:
            if isinstance(v, (int, float)) and v > hi:
                raise _Bad("maximum", f"<= {_fmt(hi)}")

        checks.append(check_max)
    if prop.get("type") == "number" and (lo is not None or hi is not None):

        def check_nan(v: Any) -> None:
            if isinstance(v, float) and math.isnan(v):
                raise _Bad("type", "a number (not NaN)")

        checks.insert(0, check_nan)
    mn, mx = prop.get("minLength"), prop.get("maxLength")
    if mn is not None:

        def check_minlen(v: Any, mn: int = mn) -> None:
            if isinstance(v, str) and len(v) < mn:
                raise _Bad("minLength", f"at least {mn} character{'s' if mn != 1 else ''}")

        checks.append(check_minlen)
    if mx is not None:

        def check_maxlen(v: Any, mx: int = mx) -> None:
            if isinstance(v, str) and len(v) > mx:
                raise _Bad("maxLength", f"at most {mx} character{'s' if mx != 1 else ''}")

        checks.append(check_maxlen)
    pattern = prop.get("pattern")
    if pattern is not None:
        rx = re.compile(pattern)

        def check_pattern(v: Any) -> None:
            if isinstance(v, str) and rx.match(v) is None:
                raise _Bad("pattern", f"matching {pattern}")

        checks.append(check_pattern)
    if not checks:
        return coerce

    def checked(v: Any) -> Any:
        out = coerce(v)
        first = None
        for c in checks:
            try:
                c(out)
            except _Bad as bad:
                if first is None:
                    first = bad
                else:
                    first.also.append(bad)
        if first is not None:
            raise first
        return out

    return checked


class _Field:
    __slots__ = ("name", "coerce", "is_list", "nullable", "has_default", "default", "required", "secret", "is_file", "wants")

    def __init__(self, name: str, prop: dict, required: bool):
        self.name = name
        self.is_list = prop.get("type") == "array"
        item = (prop.get("items") or {}) if self.is_list else prop
        self.coerce = _scalar_checker(item)
        self.wants = _base_coercer(item)[1]
        self.nullable = bool(prop.get("nullable"))
        self.has_default = "default" in prop
        self.default = prop.get("default")
        self.required = required and not self.has_default
        self.secret = item.get("format") == "password" or bool(item.get("x-cog-secret"))
        self.is_file = item.get("format") == "uri"
        if self.has_default and self.is_file and self.default is not None:
            try:  # a file default (usually a URL) becomes an InputFile like any given file
                self.default = self._one(self.default) if not self.is_list else [self._one(d) for d in self.default]
            except _Bad:
                pass

    def _one(self, v: Any) -> Any:
        return self.coerce(v)

    def default_value(self) -> Any:
        d = self.default
        return list(d) if isinstance(d, list) else d


class Validator:
    """A schema compiled for validation: one `_Field` per input, in `x-order`."""

    def __init__(self, schema: dict):
        from replicate_jupyter.model.schema import _input_component, input_properties

        inp = _input_component(schema)
        required = set(inp.get("required") or ())
        self.fields: list[_Field] = [_Field(n, p, n in required) for n, p in input_properties(schema)]
        self.by_name: dict[str, _Field] = {f.name: f for f in self.fields}
        self.names: list[str] = [f.name for f in self.fields]

    def __call__(self, given: dict | None, model: str | None = None) -> dict:
        given = {} if given is None else given
        if not isinstance(given, dict):
            raise InputError(
                [Problem("input", "type", type(given).__name__, "a dict of input values", message="input must be a dict of {name: value}")],
                model=model,
            )
        problems: list[Problem] = []
        by_name = self.by_name
        for key in given:
            if key not in by_name:
                problems.append(self._unknown(key, given[key]))
        out: dict[str, Any] = {}
        for f in self.fields:
            name = f.name
            if name in given:
                v = given[name]
                if v is None:
                    if f.nullable:
                        out[name] = None
                        continue
                    # a blank value means "not given" (forms, YAML `seed:`)
                else:
                    try:
                        out[name] = self._coerce(f, v, problems)
                    except _Bad as bad:
                        problems.extend(self._problems(f, name, v, bad))
                    continue
            if f.has_default:
                out[name] = f.default_value()
            elif f.required:
                problems.append(
                    Problem(
                        name, "required", None, f"{f.wants} (required)",
                        message=f"required — input {name!r} is missing, allowed: {f.wants} (required)",
                    )
                )
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
            except _Bad as bad:
                failed = True
                problems.extend(self._problems(f, f"{f.name}[{i}]", item, bad))
        if failed:
            return None
        return result

    @staticmethod
    def _problems(f: _Field, field: str, value: Any, bad: _Bad) -> list[Problem]:
        out = []
        for b in [bad, *bad.also]:
            if f.secret:  # never echo a secret, not even in a hint
                out.append(Problem(field, b.rule, _SECRET_SHOWN, b.allowed))
                continue
            note = f" ({b.note})" if b.note else ""
            msg = f"{b.rule} — got {_short(value)}{note}, allowed: {b.allowed}"
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
        return Problem(
            name, "unknown", value, f"one of: {known}",
            message=f"unknown input {name!r}{hint} (got {_short(value)}; rule: unknown). Known inputs: {known}",
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

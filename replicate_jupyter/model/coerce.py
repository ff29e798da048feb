"""One value → the type a Cog input wants, or `Bad` saying which rule it broke.

Scalars are coerced the way YAML and forms produce them (`"4"` or `4.0` for an integer, `"yes"`
for a boolean, `42` for a prompt); list items and union members are held to their JSON type, as
Cog's server holds them (`list[int]` given `["3"]` is refused). Numbers must be finite (JSON has
no NaN or infinity). Files in any form (path, `pathlib.Path`, PIL image, numpy array, bytes, open
file, data URI, URL, another model's `FileOutput`) become `files.InputFile`.

numpy and PIL are never imported here unless the value handed in already is one of theirs.
"""
from __future__ import annotations

import io
import math
import mimetypes
import operator
import os
import pathlib
from typing import Any, Callable

from replicate_jupyter.prediction.files import FileOutput, InputFile, guess_type, parse_data_uri

__all__ = ["Bad", "Coerce", "short", "to_int", "to_float", "to_bool", "to_str", "to_secret", "to_any", "to_object",
           "to_file", "HOLD_BYTES", "strict_int", "strict_float", "strict_bool", "strict_str", "FILE_ALLOWED"]


class Bad(Exception):
    """Raised by a coercer: one broken rule of one value; `note` adds a hint to the message."""

    def __init__(self, rule: str, allowed: str, message: str = ""):
        self.rule = rule
        self.allowed = allowed
        self.note = message
        self.also: list["Bad"] = []  # further rules the same value broke


def short(value: Any, limit: int = 60) -> str:
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


Coerce = Callable[[Any], Any]

# --------------------------------------------------------------------------------------------
# scalar coercers
# --------------------------------------------------------------------------------------------

_TRUE = frozenset({"true", "yes", "y", "on", "1", "t"})
_FALSE = frozenset({"false", "no", "n", "off", "0", "f"})


def to_int(v: Any) -> int:
    t = type(v)
    if t is int:
        return v
    if t is bool:
        raise Bad("type", "an integer")
    if t is float or isinstance(v, float):
        if v.is_integer():
            return int(v)
        raise Bad("type", "an integer")
    if isinstance(v, str):
        s = v.strip()
        try:
            return int(s)
        except ValueError:
            try:
                f = float(s)
            except ValueError:
                raise Bad("type", "an integer") from None
            if f.is_integer():
                return int(f)
        raise Bad("type", "an integer")
    if isinstance(v, int):  # int subclasses (IntEnum…)
        return int(v)
    if type(v).__module__ == "numpy":  # numpy scalars: integers, or integral floats
        try:
            return operator.index(v)
        except TypeError:
            if hasattr(v, "is_integer") and v.is_integer():
                return int(v)
    raise Bad("type", "an integer")


def _finite(f: float) -> float:
    if not math.isfinite(f):
        raise Bad("type", "a finite number", message="NaN and infinity are not numbers JSON or Cog accept")
    return f


def to_float(v: Any) -> float:
    t = type(v)
    if t is float:
        return _finite(v)
    if t is int:
        return float(v)
    if t is bool:
        raise Bad("type", "a number")
    if isinstance(v, str):
        try:
            f = float(v.strip())
        except ValueError:
            raise Bad("type", "a number") from None
        return _finite(f)
    if isinstance(v, (int, float)) or type(v).__module__ == "numpy":
        try:
            return _finite(float(v))
        except (TypeError, ValueError):
            pass
    raise Bad("type", "a number")


def to_bool(v: Any) -> bool:
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
    raise Bad("type", "a boolean (true/false)")


def to_str(v: Any) -> str:
    if type(v) is str:
        return v
    if isinstance(v, str):
        return str(v)
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(v)  # YAML turns `prompt: 42` into an int
    raise Bad("type", "a string")


def to_secret(v: Any) -> Any:
    if isinstance(v, str):
        return v
    if hasattr(v, "get_secret_value"):  # cog.Secret
        return v
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(v)  # a numeric token read from YAML
    raise Bad("type", "a string (secret)")


def to_any(v: Any) -> Any:
    return v


def to_object(v: Any) -> Any:
    if isinstance(v, dict):
        return v
    raise Bad("type", "an object (dict)")


# --------------------------------------------------------------------------------------------
# strict: list items and union members keep their JSON type (no text → number)
# --------------------------------------------------------------------------------------------


def strict_int(v: Any) -> int:
    if isinstance(v, bool):
        raise Bad("type", "an integer")
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if type(v).__module__ == "numpy" and not isinstance(v, str):
        try:
            return operator.index(v)
        except TypeError:
            pass
    raise Bad("type", "an integer")


def strict_float(v: Any) -> float:
    if isinstance(v, bool) or isinstance(v, str):
        raise Bad("type", "a number")
    if isinstance(v, (int, float)) or (type(v).__module__ == "numpy" and type(v).__name__ != "bool_"):
        try:
            return _finite(float(v))
        except (TypeError, ValueError):
            pass
    raise Bad("type", "a number")


def strict_bool(v: Any) -> bool:
    if type(v) is bool or (type(v).__module__ == "numpy" and type(v).__name__ == "bool_"):
        return bool(v)
    raise Bad("type", "a boolean (true/false)")


def strict_str(v: Any) -> str:
    if isinstance(v, str):
        return str(v)
    raise Bad("type", "a string")


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------

FILE_ALLOWED = "a file: a path, URL, data URI, bytes, open file, PIL image or numpy array"


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
        raise Bad("type", "an image array of shape HxW, HxWx3 or HxWx4", message=f"unsupported array shape {tuple(a.shape)}")
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif np.issubdtype(a.dtype, np.floating):
        if a.size and (np.nanmin(a) < 0.0 or np.nanmax(a) > 1.0):
            raise Bad("type", "a float image array with values in 0..1", message="float image arrays must hold values in 0..1")
        a = np.clip(np.nan_to_num(a) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    elif a.dtype != np.uint8:
        if a.size and (a.min() < 0 or a.max() > 255):
            raise Bad("type", "a uint8 image array (0..255)", message="integer image arrays must hold values in 0..255")
        a = a.astype(np.uint8)
    return _png(Image.fromarray(a))


#: a file input up to this many bytes is read at validation and kept (a snapshot): it is what
#: the record embeds (`record.EMBED_LIMIT`), so the run, the saved record and a rerun all have
#: the bytes that were given even when the file changes or goes; larger ones stay file-backed
HOLD_BYTES = 32 * 1024


def _from_path(p: Any, shown: Any, field: str = "file", cap: int | None = None) -> InputFile:
    """A file on disk as an input backed by the file itself (`InputFile.from_path`): never read
    whole here (a 512 MB input used to be), its size checked against `cap` (None: the current
    `files.MAX_INPUT_BYTES`), its hash and the predictor's copy streamed. Over the cap is a
    `Bad("max_size")`, so validation names the field as for any other broken rule."""
    from replicate_jupyter.errors import InputError

    path = pathlib.Path(os.fspath(p)).expanduser()
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise Bad("file", "an existing file, a URL or a data URI", message=f"file {str(shown)!r} {what}")
    try:
        f = InputFile.from_path(path.resolve(), field, cap)  # absolute: a later chdir still finds it
        if f.size is not None and f.size <= HOLD_BYTES:  # small: its bytes as given, kept (see HOLD_BYTES)
            held = InputFile(f.read(), name=f.name, content_type=f.content_type)
            held.source = f.source
            return held
        return f
    except InputError as exc:
        first = exc.problems[0]
        raise Bad(first.rule, str(first.allowed), message=first.message or "") from None
    except OSError as exc:  # unreadable (permissions) or gone between the check and the open
        raise Bad("file", "a readable file", message=f"file {str(shown)!r} cannot be read: {exc.strerror}") from None


def to_file(v: Any) -> InputFile:
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
                raise Bad("file", "a valid data URI", message="malformed data URI") from None
            ext = mimetypes.guess_extension(ctype) or ""
            return InputFile(data, name="input" + ext, content_type=ctype)
        if not s:
            raise Bad("type", FILE_ALLOWED)
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
            raise Bad("type", FILE_ALLOWED)
        raw_name = getattr(v, "name", None)
        if isinstance(raw_name, (str, os.PathLike)) and os.fspath(raw_name):
            return InputFile(bytes(data), name=os.path.basename(os.fspath(raw_name)))
        name, ctype = _name_for(bytes(data))
        return InputFile(bytes(data), name=name, content_type=ctype)
    raise Bad("type", FILE_ALLOWED)

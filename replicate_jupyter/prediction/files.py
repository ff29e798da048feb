"""Files in and out of a model.

`FileOutput` holds the bytes of a file a model produced. Bytes are kept in memory (not a path
or a URL) because temporary files vanish and Replicate deletes its outputs after an hour, while a
notebook must keep showing them. `InputFile` is a file the user gave as input, in whatever form,
normalised once so every backend can send it its own way (a path, a data URI) and the record of
the run can name it by name and hash.
"""
from __future__ import annotations

import base64
import hashlib
import mimetypes
import os
import pathlib
import tempfile
from typing import Any, Iterator

from replicate_jupyter.errors import BackendError, InputError, Problem
from replicate_jupyter.prediction import registry

__all__ = ["FileOutput", "InputFile", "data_uri", "parse_data_uri", "guess_type"]


def guess_type(name: str, data: bytes | None = None) -> str:
    """A file's content type: sniffed from its first bytes when given (outputs are often named
    `output`), else from its name."""
    if data is not None:
        sniffed = _sniff(data)
        if sniffed:
            return sniffed
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def _sniff(data: bytes) -> str | None:
    head = data[:16]
    if head.startswith(b"\x89PNG"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    if head.startswith(b"GIF8"):
        return "image/gif"
    if head[4:8] == b"ftyp":
        return "video/mp4"
    if head.startswith(b"ID3") or head[:2] == b"\xff\xfb":
        return "audio/mpeg"
    return None


def data_uri(data: bytes, content_type: str) -> str:
    return f"data:{content_type};base64,{base64.b64encode(data).decode('ascii')}"


def parse_data_uri(uri: str) -> tuple[bytes, str]:
    """`data:[<type>][;base64],<payload>` → (bytes, content type)."""
    if not uri.startswith("data:") or "," not in uri:
        raise InputError([Problem("uri", "format", uri[:60], "a data: URI (data:[<type>][;base64],<payload>)")])
    header, payload = uri[5:].split(",", 1)
    parts = header.split(";")
    ctype = parts[0] or "text/plain"
    if "base64" in parts[1:]:
        try:
            return base64.b64decode(payload, validate=False), ctype
        except ValueError as exc:  # binascii.Error: bad padding or length
            raise InputError([Problem("uri", "base64", uri[:40], f"valid base64 after the comma ({exc})")]) from None
    from urllib.parse import unquote_to_bytes

    return unquote_to_bytes(payload), ctype


class FileOutput:
    """A file produced by a model, embedded in the notebook."""

    def __init__(self, data: bytes, name: str = "output", content_type: str | None = None,
                 url: str | None = None) -> None:
        self._data = bytes(data)
        self.name = name
        self.content_type = content_type or guess_type(name, self._data)
        self._url = url

    @classmethod
    def from_path(cls, path: str | os.PathLike[str]) -> FileOutput:
        p = pathlib.Path(path)
        return cls(p.read_bytes(), name=p.name)

    @classmethod
    def from_data_uri(cls, uri: str, name: str = "output") -> FileOutput:
        data, ctype = parse_data_uri(uri)
        ext = mimetypes.guess_extension(ctype) or ""
        if not pathlib.Path(name).suffix and ext:
            name = name + ext
        return cls(data, name=name, content_type=ctype)

    # replicate-python's FileOutput surface
    def read(self) -> bytes:
        return self._data

    @property
    def url(self) -> str:
        """The original URL when there was one, else a data URI (which never expires)."""
        return self._url or data_uri(self._data, self.content_type)

    @property
    def size(self) -> int:
        return len(self._data)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self._data).hexdigest()

    def save(self, path: str | os.PathLike[str] | None = None) -> pathlib.Path:
        target = pathlib.Path(path) if path is not None else pathlib.Path(self.name)
        if target.is_dir():
            target = target / self.name
        target.write_bytes(self._data)
        return target

    def __iter__(self) -> Iterator[bytes]:  # replicate-python's FileOutput iterates over chunks
        yield self._data

    @property
    def is_image(self) -> bool:
        return self.content_type.startswith("image/")

    def image(self) -> Any:
        """The output as a PIL image (for image outputs)."""
        import io

        from PIL import Image

        return Image.open(io.BytesIO(self._data))

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "file",
            "url": data_uri(self._data, self.content_type),
            "name": self.name,
            "content_type": self.content_type,
            "size": self.size,
        }

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return registry.mimebundle(self)  # the look the notebook layer registered (registry.py)

    def __repr__(self) -> str:
        return f"FileOutput(name={self.name!r}, content_type={self.content_type!r}, size={self.size})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FileOutput) and other._data == self._data and other.content_type == self.content_type

    __hash__ = None  # type: ignore[assignment]


class InputFile:
    """A file given as input, normalised to bytes + name, with its hash for the record.

    Built by validation from a path, `pathlib.Path`, PIL image, numpy array, bytes, open file,
    data URI or URL (URLs are kept as URLs and fetched only by a backend that needs bytes).
    """

    def __init__(self, data: bytes | None = None, name: str = "input", content_type: str | None = None,
                 url: str | None = None) -> None:
        if data is None and url is None:
            raise InputError([Problem(name, "required", None, "the file's bytes or a URL")])
        self._data = data
        self.name = name
        self.url = url
        self.content_type = content_type or (guess_type(name, data) if data is not None else guess_type(name))
        self._path: pathlib.Path | None = None

    def read(self) -> bytes:
        """The bytes, fetched once from the URL when the file was given as one (an unreachable
        or failing URL is a `BackendError` naming it)."""
        if self._data is None:
            import httpx

            url = str(self.url)
            try:
                resp = httpx.get(url, follow_redirects=True, timeout=60)
                resp.raise_for_status()
            except httpx.HTTPError as exc:
                raise BackendError(f"Could not fetch the input file {url}: {exc}", url=url, tried=[f"GET {url}"]) from None
            self._data = resp.content
        return self._data

    @property
    def sha256(self) -> str | None:
        return hashlib.sha256(self._data).hexdigest() if self._data is not None else None

    def as_data_uri(self) -> str:
        if self._data is None and self.url and not self.url.startswith("data:"):
            return self.url
        return data_uri(self.read(), self.content_type)

    def as_path(self) -> pathlib.Path:
        """A local file holding the bytes (for predictors that take `cog.Path`)."""
        if self._path is None or not self._path.exists():
            suffix = pathlib.Path(self.name).suffix or (mimetypes.guess_extension(self.content_type) or "")
            fd, name = tempfile.mkstemp(prefix="rj-in-", suffix=suffix)
            with os.fdopen(fd, "wb") as fh:
                fh.write(self.read())
            self._path = pathlib.Path(name)
        return self._path

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "file", "name": self.name, "content_type": self.content_type}
        if self._data is not None:
            out["sha256"] = self.sha256
            out["size"] = len(self._data)
        if self.url and not self.url.startswith("data:"):
            out["url"] = self.url
        return out

    def __repr__(self) -> str:
        size = len(self._data) if self._data is not None else "?"
        return f"InputFile(name={self.name!r}, content_type={self.content_type!r}, size={size})"

"""Files in and out of a model.

`FileOutput` holds the bytes of a file a model produced. Bytes are kept in memory (not a path
or a URL) because temporary files vanish and Replicate deletes its outputs after an hour, while a
notebook must keep showing them. `InputFile` is a file the user gave as input, in whatever form,
normalised once so every backend can send it its own way (a path, a data URI) and the record of
the run can name it by name and hash. The temp files either may need on disk are
`tempfiles.py`'s (`kernel_tmp`, `remove_kernel_tmp` are re-exported here).
"""
from __future__ import annotations

import base64
import hashlib
import mimetypes
import os
import pathlib
import shutil
import threading
from typing import Any, AsyncIterator, Callable, Iterator

from replicate_jupyter.errors import BackendError, InputError, Problem
from replicate_jupyter.prediction import registry, tempfiles
from replicate_jupyter.prediction.tempfiles import kernel_tmp, remove_kernel_tmp, temp_file

__all__ = ["FileOutput", "InputFile", "data_uri", "parse_data_uri", "guess_type", "kernel_tmp",
           "remove_kernel_tmp", "MAX_INPUT_BYTES"]

#: the largest file input accepted by default (`InputFile.from_path`'s `cap`; the session's
#: `max_input_bytes` setting passes its own)
MAX_INPUT_BYTES = 256 * 1024 * 1024


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
    """A file produced by a model, embedded in the notebook.

    It behaves as replicate-python's `FileOutput` (`read()`, `aread()`, iteration in chunks,
    `.url`, `str()` is the URL) and renders in a notebook. The bytes are held in memory; a file
    that came from Replicate also keeps the URL Replicate delivered it at (`.url`, `str()`), so
    code that hands the URL on to another model or service works as with replicate-python,
    while the notebook keeps its own copy (`to_json()` embeds the bytes, never the link, which
    expires an hour on). A file known only by its URL (a remote prediction listed or fetched by
    id) is read on first use, through `fetch`.
    """

    #: bytes per chunk when iterated (replicate-python yields httpx's chunks)
    CHUNK = 64 * 1024

    def __init__(self, data: bytes | None = None, name: str = "output", content_type: str | None = None,
                 url: str | None = None, *, fetch: Callable[[str], tuple[bytes, str | None]] | None = None) -> None:
        if data is None and not url:
            raise InputError([Problem(name, "required", None, "the file's bytes or its URL")])
        self._data = None if data is None else bytes(data)
        self.name = name
        self._url = url
        self._fetch = fetch
        self._lock = threading.Lock()
        self._path: pathlib.Path | None = None  # the bytes on disk, once a path was asked for
        if content_type:
            self.content_type = content_type
        elif self._data is not None:
            self.content_type = guess_type(name, self._data)
        else:
            self.content_type = guess_type(name)

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], adopt: bool = True) -> FileOutput:
        """The file's bytes; with `adopt`, a file under the system temp dir (a predictor's
        output) is removed once read (see `tempfiles.adopt`)."""
        p = pathlib.Path(path)
        out = cls(p.read_bytes(), name=p.name)
        if adopt:
            tempfiles.adopt(p)
        return out

    @classmethod
    def from_data_uri(cls, uri: str, name: str = "output") -> FileOutput:
        data, ctype = parse_data_uri(uri)
        ext = mimetypes.guess_extension(ctype) or ""
        if not pathlib.Path(name).suffix and ext:
            name = name + ext
        return cls(data, name=name, content_type=ctype)

    # ----- replicate-python's FileOutput surface -----------------------------------------------
    def read(self) -> bytes:
        """The bytes (fetched from the URL on first use for a file known only by its URL)."""
        data = self._data
        if data is None:
            with self._lock:
                if self._data is None:
                    self._data, ctype = self._get()
                    if ctype and ctype != "application/octet-stream":
                        self.content_type = ctype
                    else:
                        self.content_type = guess_type(self.name, self._data)
                data = self._data
        return data

    def _get(self) -> tuple[bytes, str | None]:
        url = str(self._url)
        if url.startswith("data:"):
            return parse_data_uri(url)
        if self._fetch is not None:
            return self._fetch(url)
        import httpx

        try:
            resp = httpx.get(url, follow_redirects=True, timeout=120)
            resp.raise_for_status()
        except httpx.HTTPError as exc:
            raise BackendError(f"Could not fetch the output {url}: {exc}", url=url, tried=[f"GET {url}"]) from None
        return resp.content, (resp.headers.get("content-type") or "").split(";")[0].strip() or None

    async def aread(self) -> bytes:
        """`read()` for async code: a file not yet held is fetched on a worker thread."""
        if self._data is not None:
            return self._data
        import asyncio

        return await asyncio.to_thread(self.read)

    def __iter__(self) -> Iterator[bytes]:
        """The bytes in chunks, as replicate-python's FileOutput iterates."""
        data = self.read()
        for i in range(0, len(data), self.CHUNK):
            yield data[i:i + self.CHUNK]

    async def __aiter__(self) -> AsyncIterator[bytes]:
        data = await self.aread()
        for i in range(0, len(data), self.CHUNK):
            yield data[i:i + self.CHUNK]

    @property
    def url(self) -> str:
        """The URL the backend delivered it at when there was one (Replicate's delivery URL),
        else a data URI of the bytes (which never expires)."""
        return self._url or data_uri(self.read(), self.content_type)

    @property
    def remote_url(self) -> str | None:
        """The backend's URL of this file, or None when it never had one."""
        return self._url if self._url and not self._url.startswith("data:") else None

    def __str__(self) -> str:
        return self.url

    def __fspath__(self) -> str:
        """A path to the bytes on disk (written on first use), so `open(output)`, PIL and
        libraries that take paths accept it, as replicate-python 1.1's `use()` outputs."""
        if self._path is None or not self._path.exists():
            suffix = pathlib.Path(self.name).suffix or (mimetypes.guess_extension(self.content_type) or "")
            self._path = temp_file("rj-out-", suffix, self, lambda fh: fh.write(self.read()))
        return str(self._path)

    # ----- ours --------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return len(self.read())

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.read()).hexdigest()

    def save(self, path: str | os.PathLike[str] | None = None) -> pathlib.Path:
        target = pathlib.Path(path) if path is not None else pathlib.Path(self.name)
        if target.is_dir():
            target = target / self.name
        target.write_bytes(self.read())
        return target

    @property
    def is_image(self) -> bool:
        return self.content_type.startswith("image/")

    def image(self) -> Any:
        """The output as a PIL image (for image outputs)."""
        import io

        from PIL import Image

        return Image.open(io.BytesIO(self.read()))

    def to_json(self) -> dict[str, Any]:
        """The record of the file: its bytes as a data URI (a saved notebook keeps showing it;
        the backend's URL is left out, it expires)."""
        data = self.read()
        return {
            "type": "file",
            "url": data_uri(data, self.content_type),
            "name": self.name,
            "content_type": self.content_type,
            "size": len(data),
        }

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return registry.mimebundle(self)  # the look the notebook layer registered (registry.py)

    def __repr__(self) -> str:
        size = len(self._data) if self._data is not None else "?"
        return f"FileOutput(name={self.name!r}, content_type={self.content_type!r}, size={size})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FileOutput) and other.read() == self.read() and other.content_type == self.content_type

    def __getstate__(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_fetch", "_path")}
        state["_data"] = self.read()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._fetch = None
        self._path = None

    __hash__ = None  # type: ignore[assignment]


class InputFile:
    """A file given as input, normalised to bytes + name, with its hash for the record.

    Built by validation from a path, `pathlib.Path`, PIL image, numpy array, bytes, open file,
    data URI or URL (URLs are kept as URLs and fetched only by a backend that needs bytes).
    One made by `from_path` is backed by the file itself: its size checked against a cap, its
    hash streamed, its bytes never held unless a backend asks for them (`read()`), and the
    predictor's copy streamed into the kernel's temp folder.
    """

    #: bytes per read when hashing or copying a file-backed input
    CHUNK = 1 << 20
    #: the path it was made from (`from_path`), for the record; None for any other form
    source: str | None = None

    def __init__(self, data: bytes | None = None, name: str = "input", content_type: str | None = None,
                 url: str | None = None) -> None:
        if data is None and url is None:
            raise InputError([Problem(name, "required", None, "the file's bytes or a URL")])
        self._data = data
        self.name = name
        self.url = url
        self.content_type = content_type or (guess_type(name, data) if data is not None else guess_type(name))
        self._path: pathlib.Path | None = None
        self._file: pathlib.Path | None = None  # the file it is backed by (from_path)
        self._size: int | None = None if data is None else len(data)
        self._sha: str | None = None

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], field: str = "file", cap: int | None = None) -> InputFile:
        """A file on disk as an input, never read whole: past `cap` bytes (default
        `MAX_INPUT_BYTES`) an InputError names the field, the size and the cap."""
        p = pathlib.Path(path)
        size = p.stat().st_size
        cap = MAX_INPUT_BYTES if cap is None else cap
        if size > cap:
            raise InputError([Problem(field, "max_size", f"{p.name} ({size:,} bytes)", f"at most {cap:,} bytes",
                                      message=f"file {p.name!r} is {size:,} bytes, over the {cap:,}-byte cap "
                                      "on file inputs (session.max_input_bytes)")])
        with open(p, "rb") as fh:
            head = fh.read(16)
        self = cls.__new__(cls)
        self._data, self.url, self.name, self._path, self._sha = None, None, p.name, None, None
        self._file, self._size = p, size
        self.content_type = guess_type(p.name, head)
        self.source = str(p)
        return self

    def read(self) -> bytes:
        """The bytes, fetched once from the URL when the file was given as one (an unreachable
        or failing URL is a `BackendError` naming it); a file-backed input is read each time
        (not kept: a backend that needs bytes sends them and lets them go)."""
        if self._data is None and self._file is not None:
            return self._file.read_bytes()
        if self._data is None:
            import httpx

            url = str(self.url)
            try:
                resp = httpx.get(url, follow_redirects=True, timeout=60)
                resp.raise_for_status()
            except httpx.HTTPError as exc:
                raise BackendError(f"Could not fetch the input file {url}: {exc}", url=url, tried=[f"GET {url}"]) from None
            self._data = resp.content
            self._size = len(self._data)
        return self._data

    @property
    def size(self) -> int | None:
        return self._size

    @property
    def sha256(self) -> str | None:
        if self._sha is None:
            if self._data is not None:
                self._sha = hashlib.sha256(self._data).hexdigest()
            elif self._file is not None:
                h = hashlib.sha256()
                with open(self._file, "rb") as fh:
                    while chunk := fh.read(self.CHUNK):
                        h.update(chunk)
                self._sha = h.hexdigest()
        return self._sha

    def as_data_uri(self) -> str:
        if self._data is None and self._file is None and self.url and not self.url.startswith("data:"):
            return self.url
        return data_uri(self.read(), self.content_type)

    def as_path(self) -> pathlib.Path:
        """A local file holding the bytes (for predictors that take `cog.Path`): a copy in the
        kernel's temp folder (streamed for a file-backed input), removed with this object."""
        if self._path is None or not self._path.exists():
            suffix = pathlib.Path(self.name).suffix or (mimetypes.guess_extension(self.content_type) or "")
            src = self._file

            def write(fh: Any) -> None:
                if src is not None:
                    with open(src, "rb") as inp:
                        shutil.copyfileobj(inp, fh, self.CHUNK)
                else:
                    fh.write(self.read())

            self._path = temp_file("rj-in-", suffix, self, write)
        return self._path

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "file", "name": self.name, "content_type": self.content_type}
        if self._data is not None or self._file is not None:
            out["sha256"] = self.sha256
            out["size"] = self._size
        if self.url and not self.url.startswith("data:"):
            out["url"] = self.url
        return out

    def __repr__(self) -> str:
        size = self._size if self._size is not None else "?"
        return f"InputFile(name={self.name!r}, content_type={self.content_type!r}, size={size})"

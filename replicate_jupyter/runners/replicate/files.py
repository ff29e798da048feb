"""Files to and from Replicate: inputs uploaded, outputs fetched and embedded.

Inputs: a public URL is passed as it is (Replicate fetches it), a small file goes inline as a
data URI, a large one through `POST /v1/files` and its `urls.get` — a data URI of megabytes
would make the create request itself the slow part. Outputs: Replicate deletes them about an
hour after the prediction ends, and a saved notebook must keep showing them, so every output
URL the schema marks as a file is fetched now and kept as a `FileOutput` with its bytes and
its URL (`str()` gives the URL, as replicate-python's FileOutput; a fetch that fails keeps the
link and says so in the logs). A prediction this kernel did not run (`predictions.get/list` of
an id from elsewhere) is decoded lazily (`lazy=True`): its files are fetched when first read.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable
from urllib.parse import unquote, urlparse

from replicate_jupyter.errors import BackendError
from replicate_jupyter.prediction.files import FileOutput, InputFile, data_uri
from replicate_jupyter.runners.remote import encode_values
from replicate_jupyter.runners.replicate.api import ReplicateAPI

__all__ = ["Files", "is_uri"]

NOTE = "[replicate-jupyter] "
_URL_PREFIXES = ("https://", "http://", "data:")

#: where a note for the user goes (the prediction's logs)
Note = Callable[[str], None]


def is_uri(schema: dict | None) -> bool:
    """A schema for a file: a string with `format: uri`."""
    return isinstance(schema, dict) and schema.get("type") == "string" and schema.get("format") == "uri"


class Files:
    """Uploads and downloads through one Replicate API client."""

    def __init__(self, api: ReplicateAPI, upload_threshold: int = 256 * 1024) -> None:
        self.api = api
        self.upload_threshold = int(upload_threshold)

    # ----- in --------------------------------------------------------------------------------
    def encode(self, value: Any, strategy: str | None = None) -> Any:
        """Validated input → JSON for Replicate (files as URLs or data URIs, secrets as values).
        `strategy` is replicate-python's `file_encoding_strategy`: "base64" sends every file
        inline, "url" uploads every one; by default a small file goes inline (no extra request)."""
        threshold = {"base64": float("inf"), "url": 0}.get(strategy or "", self.upload_threshold)
        return encode_values(value, lambda f: self._send(f, threshold))

    def _send(self, f: InputFile, threshold: float) -> str:
        if f._data is None and f.url and not f.url.startswith("data:"):
            return f.url  # Replicate fetches public URLs itself
        data = f.read()
        if len(data) < threshold:
            return data_uri(data, f.content_type)
        return self.api.upload(data, f.name, f.content_type)["urls"]["get"]

    # ----- out -------------------------------------------------------------------------------
    def decode(self, value: Any, schema: dict | None, name: str, note: Note, lazy: bool = False) -> Any:
        """Output JSON → our values: file URLs fetched now and embedded as FileOutput (`lazy`:
        fetched on first read). With no schema to say, a string that is a URL is a file."""
        if isinstance(value, str):
            untyped = not schema or "type" not in schema
            if (is_uri(schema) or untyped) and value.startswith(_URL_PREFIXES):
                return self.later(value, name) if lazy else self.fetch(value, name, note)
            return value
        if isinstance(value, list):
            items = schema.get("items") if isinstance(schema, dict) else None
            return [self.decode(v, items, f"{name}-{i}", note, lazy) for i, v in enumerate(value)]
        if isinstance(value, dict):
            props = (schema or {}).get("properties") or {}
            return {k: self.decode(v, props.get(k), k, note, lazy) for k, v in value.items()}
        return value

    def later(self, url: str, name: str) -> FileOutput:
        """A file known by its URL, fetched (with this client, retried) when first read."""
        if url.startswith("data:"):
            return FileOutput.from_data_uri(url, name=name)
        fname = os.path.basename(unquote(urlparse(url).path)) or name
        return FileOutput(None, name=fname, url=url, fetch=self.api.fetch)

    def fetch(self, url: str, name: str, note: Note) -> Any:
        """One output file as a FileOutput holding its bytes (the link itself when that fails)."""
        if url.startswith("data:"):
            return FileOutput.from_data_uri(url, name=name)
        fname = os.path.basename(unquote(urlparse(url).path)) or name
        try:
            data, ctype = self.api.fetch(url)
        except BackendError as exc:
            note(f"{NOTE}could not embed output {url}: {exc}; it is kept as a link, "
                 "which Replicate deletes after an hour\n")
            return url
        return FileOutput(data, name=fname, content_type=ctype if ctype not in (None, "application/octet-stream") else None,
                          url=url)

    def chunk(self, text: str, items: dict, index: int, note: Note) -> Any:
        """One streamed `output` event of an iterator whose items have schema `items`."""
        name = f"output-{index}"
        if items.get("type") == "string" and not is_uri(items):
            return text
        if is_uri(items):
            return self.fetch(text, name, note)
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        return self.decode(value, items, name, note)

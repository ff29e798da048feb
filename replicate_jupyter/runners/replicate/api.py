"""A small client for Replicate's HTTP API (https://replicate.com/docs/reference/http).

Only what the `replicate` backend needs: models and versions, predictions (create, get, cancel,
SSE stream), file uploads and fetching output files. The token is read from the environment
(`REPLICATE_API_TOKEN`, where `%replicate login` puts it) on every request and never kept on an
object, so it cannot end up in a repr, a pickled object, an error message or a notebook. Every
text that comes back from the server passes through `scrub()` before it is shown, in case a
server ever echoes the header.
"""
from __future__ import annotations

import os
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Iterator

import httpx

from replicate_jupyter.errors import BackendError
from replicate_jupyter.runners.http import http_errors
from replicate_jupyter.runners.sse import SSEEvent, iter_sse

__all__ = ["ReplicateAPI", "APIError", "DEFAULT_BASE_URL", "TOKEN_ENV", "scrub"]

DEFAULT_BASE_URL = "https://api.replicate.com/v1"
TOKEN_ENV = "REPLICATE_API_TOKEN"
LOGIN_HINT = "run `%replicate login` (or set REPLICATE_API_TOKEN in the kernel's environment)"


def _token() -> str | None:
    token = os.environ.get(TOKEN_ENV, "").strip()
    return token or None


def scrub(text: Any) -> str:
    """`text` with the current token (if any) blanked out."""
    text = str(text)
    token = _token()
    if token and token in text:
        text = text.replace(token, "r8_***")
    return text


class APIError(BackendError):
    """A non-2xx answer from Replicate, with its problem JSON (`title`, `detail`, `status`)."""

    def __init__(self, status: int, title: str, detail: str, url: str, body: Any = None) -> None:
        self.status = status
        self.title = scrub(title)
        self.detail = scrub(detail)
        self.body = body
        text = f"{self.title}: {self.detail}" if self.title and self.detail else (self.title or self.detail)
        super().__init__(f"Replicate answered {status} for {url}: {text}", url=url, tried=[url])


class ReplicateAPI:
    """Thread-safe (one pooled httpx.Client). Raises `APIError` for answers, `BackendError` (or
    BackendTimeout) for a service that cannot be reached or a client already closed: every httpx
    failure is translated here, at the edge (`runners/http.py`)."""

    def __init__(self, base_url: str = DEFAULT_BASE_URL, timeout: float = 30.0, connect_timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._http = httpx.Client(timeout=httpx.Timeout(timeout, connect=connect_timeout), follow_redirects=True,
                                  headers={"User-Agent": "replicate-jupyter"})

    def __repr__(self) -> str:
        return f"ReplicateAPI({self.base_url!r})"

    # ----- plumbing --------------------------------------------------------------------------
    def _auth(self) -> dict[str, str]:
        token = _token()
        if token is None:
            raise BackendError(f"No Replicate API token in this kernel: {LOGIN_HINT}.", url=self.base_url)
        return {"Authorization": f"Bearer {token}"}

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else f"{self.base_url}/{path.lstrip('/')}"

    def _edge(self, method: str, url: str) -> AbstractContextManager[None]:
        """httpx failures → BackendError/BackendTimeout naming the URL (token blanked)."""
        return http_errors("Replicate", method, url, clean=scrub)

    def request(self, method: str, path: str, *, json: Any = None, headers: dict[str, str] | None = None,
                timeout: float | None = None, **kw: Any) -> httpx.Response:
        url = self.url(path)
        h = {**self._auth(), **(headers or {})}
        with self._edge(method, url):
            resp = self._http.request(method, url, json=json, headers=h,
                                      timeout=self.timeout if timeout is None else timeout, **kw)
        if resp.status_code >= 400:
            raise self._error(resp, url)
        return resp

    def _json(self, method: str, path: str, **kw: Any) -> dict:
        """A request whose answer is a JSON object (anything else is the service misbehaving)."""
        resp = self.request(method, path, **kw)
        try:
            data = resp.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            url = self.url(path)
            raise BackendError(f"Replicate answered {method} {url} with {resp.status_code} but no JSON object "
                               f"({scrub(resp.text[:200])!r})", url=url, tried=[url])
        return data

    def _error(self, resp: httpx.Response, url: str) -> APIError:
        try:
            body = resp.json()
        except ValueError:
            body = resp.text[:500]
        if isinstance(body, dict):
            title = str(body.get("title") or "")
            detail = body.get("detail")
            if isinstance(detail, list):  # FastAPI-style validation list
                detail = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
            detail = str(detail or body.get("error") or "")
        else:
            title, detail = "", str(body)
        if resp.status_code == 401:
            err = APIError(401, title or "Unauthenticated", detail or "invalid token", url, body)
            err.args = (f"Replicate rejected the API token (401 {err.title}: {err.detail}). "
                        f"Check it and {LOGIN_HINT}.",)
            return err
        return APIError(resp.status_code, title, detail, url, body)

    # ----- endpoints -------------------------------------------------------------------------
    def get_model(self, owner: str, name: str) -> dict:
        return self._json("GET", f"models/{owner}/{name}")

    def get_version(self, owner: str, name: str, version: str) -> dict:
        return self._json("GET", f"models/{owner}/{name}/versions/{version}")

    def create_prediction(self, body: dict, model: str | None = None, wait: float | None = None) -> dict:
        """`POST /v1/predictions` (with `version` in `body`) or, given `model`, the model's own
        endpoint. `wait` adds `Prefer: wait=N` (Replicate holds the request up to N ≤ 60 s)."""
        headers = {}
        if wait:
            headers["Prefer"] = f"wait={max(1, min(60, int(wait)))}"
        path = f"models/{model}/predictions" if model else "predictions"
        return self._json("POST", path, json=body, headers=headers, timeout=(self.timeout + (wait or 0)))

    def get_prediction(self, id_or_url: str) -> dict:
        return self._json("GET", id_or_url if "/" in id_or_url else f"predictions/{id_or_url}")

    def cancel_prediction(self, id_or_url: str) -> dict:
        return self._json("POST", id_or_url if "/" in id_or_url else f"predictions/{id_or_url}/cancel", timeout=10.0)

    def upload(self, data: bytes, name: str, content_type: str) -> dict:
        """`POST /v1/files` (multipart, field `content`) → the file object; pass `urls.get` as input."""
        return self._json("POST", "files", files={"content": (name, data, content_type)}, timeout=None)

    @contextmanager
    def stream(self, url: str) -> Iterator[Iterator[SSEEvent]]:
        """The prediction's SSE (`urls.stream`). Only the wait for the headers is bounded; a model
        may be silent for minutes between events."""
        headers = {**self._auth(), "Accept": "text/event-stream", "Cache-Control": "no-store"}
        with self._edge("GET", url):  # also around the caller's reading of the events
            with self._http.stream("GET", url, headers=headers,
                                   timeout=httpx.Timeout(self.timeout, read=None)) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise self._error(resp, url)
                yield iter_sse(resp.iter_lines())

    def fetch(self, url: str, timeout: float = 120.0) -> tuple[bytes, str | None]:
        """An output file's bytes and content type. replicate.delivery needs no token; URLs on the
        API's own host get it (and no other host ever does)."""
        headers = {}
        if url.startswith(self.base_url):
            headers = self._auth()
        with http_errors("the output's host", "GET", url, clean=scrub):
            resp = self._http.get(url, headers=headers, timeout=timeout)
        if resp.status_code >= 400:
            raise BackendError(f"Fetching output {url} answered {resp.status_code}", url=url, tried=[url])
        ctype = (resp.headers.get("content-type") or "").split(";")[0].strip() or None
        return resp.content, ctype

    def close(self) -> None:
        self._http.close()

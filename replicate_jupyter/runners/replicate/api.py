"""A client for Replicate's HTTP API (https://replicate.com/docs/reference/http), as robust as
replicate-python's and then some.

- The token comes from a `Token` (a client's own, or the kernel's login, or the environment the
  user set: `token.py`) on every request; it is never kept in a repr, an error or a notebook, and
  every text from the server passes through `scrub()`.
- Retries (tenacity): requests that are safe to repeat (GETs, a cancel) are retried with
  exponential backoff and jitter on 429, 500, 502, 503, 504 and dropped connections, waiting
  what `Retry-After` asks when it is given. The create POST is never retried blindly: only when
  the request provably created nothing — a 429 (rate limited) or a connection that could not
  even be opened. A 5xx or a connection lost after the body was sent might have created the
  prediction, so it is not sent again (the caller learns the outcome from the server instead).
- Every httpx failure becomes a BackendError/BackendTimeout naming the URL (`runners/http.py`).
- SSE through httpx-sse, whose line splitting follows the spec (CR, LF, CRLF only): a token
  holding U+2028 or U+0085 arrives whole (`str.splitlines`, which httpx's `iter_lines` uses,
  would cut it there).
"""
from __future__ import annotations

import email.utils
import time
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Iterator

import httpx

from replicate_jupyter.errors import BackendError, ReplicateError
from replicate_jupyter.runners.http import http_errors
from replicate_jupyter.runners.replicate.token import TOKEN_ENV, Token, current, scrub

__all__ = ["ReplicateAPI", "APIError", "DEFAULT_BASE_URL", "TOKEN_ENV", "scrub", "RETRY_STATUSES", "retry_after"]

DEFAULT_BASE_URL = "https://api.replicate.com/v1"
LOGIN_HINT = "run `%replicate login` (or set REPLICATE_API_TOKEN in the kernel's environment)"
#: answers worth another try of a request that is safe to repeat
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: the longest Retry-After honoured (a longer one is waited this long, then tried)
MAX_RETRY_AFTER = 60.0


class APIError(BackendError, ReplicateError):
    """A non-2xx answer from Replicate, with its problem JSON: replicate-python's ReplicateError
    (`type`, `title`, `status`, `detail`, `instance`), and a BackendError naming the URL."""

    status: int  # always the answer's (ReplicateError's may be None)
    title: str
    detail: str

    def __init__(self, status: int, title: str, detail: str, url: str, body: Any = None) -> None:
        title, detail = scrub(title), scrub(detail)
        text = f"{title}: {detail}" if title and detail else (title or detail)
        super().__init__(f"Replicate answered {status} for {url}: {text}", url=url, tried=[url])
        self.status, self.title, self.detail = status, title, detail
        problem = body if isinstance(body, dict) else {}
        self.type = scrub(str(problem["type"])) if problem.get("type") else None
        self.instance = scrub(str(problem["instance"])) if problem.get("instance") else None
        self.body = body


class _Again(Exception):
    """An answer worth another try (raised inside a retry attempt, never outside this module)."""

    def __init__(self, resp: httpx.Response) -> None:
        super().__init__(resp.status_code)
        self.resp = resp
        self.wait = retry_after(resp.headers.get("Retry-After"))


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a `Retry-After` header (a number of seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, min(float(value), MAX_RETRY_AFTER))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, min(when.timestamp() - time.time(), MAX_RETRY_AFTER))


def _safe_hook(exc: Exception) -> bool | float:
    """Whether to try a repeatable request again: the seconds Retry-After asks, True (backoff), or False."""
    if isinstance(exc, _Again):
        return exc.wait if exc.wait is not None else True
    return isinstance(exc, httpx.TransportError)


def _create_hook(exc: Exception) -> bool | float:
    """For the create POST: again only when nothing can have been created."""
    if isinstance(exc, _Again):
        if exc.resp.status_code != 429:
            return False
        return exc.wait if exc.wait is not None else True
    return isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))


class ReplicateAPI:
    """Thread-safe (one pooled httpx.Client). Raises `APIError` for answers, `BackendError` (or
    BackendTimeout) for a service that cannot be reached or a client already closed."""

    def __init__(self, base_url: str = DEFAULT_BASE_URL, timeout: float | httpx.Timeout = 30.0,
                 connect_timeout: float = 5.0, token: Token | None = None, retries: int = 8,
                 retry_timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(float(timeout), connect=connect_timeout)
        self.retries = int(retries)
        self.retry_timeout = float(retry_timeout)
        self._token = token
        self._http = self._client()

    def _client(self, headers: dict[str, str] | None = None, transport: httpx.BaseTransport | None = None) -> httpx.Client:
        merged = httpx.Headers({"User-Agent": "replicate-jupyter"})
        merged.update(headers or {})  # by name, case-insensitively: a user-agent of theirs replaces ours
        return httpx.Client(timeout=self.timeout, follow_redirects=True, headers=merged, transport=transport)

    def configure(self, headers: dict[str, str] | None = None, transport: httpx.BaseTransport | None = None) -> None:
        """A Client's own headers (sent on every request, a `User-Agent` of its own included) and
        httpx transport, as replicate-python's `Client(headers=, transport=)` passes them to httpx.
        The token is never one of them: it is added per request from the `Token`."""
        old, self._http = self._http, self._client(headers, transport)
        old.close()

    def __repr__(self) -> str:
        return f"ReplicateAPI({self.base_url!r})"

    # ----- plumbing --------------------------------------------------------------------------
    def _auth(self) -> dict[str, str]:
        token = current(self._token)
        if token is None:
            raise BackendError(f"No Replicate API token in this kernel: {LOGIN_HINT}.", url=self.base_url)
        return {"Authorization": f"Bearer {token}"}

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else f"{self.base_url}/{path.lstrip('/')}"

    def _edge(self, method: str, url: str) -> AbstractContextManager[None]:
        """httpx failures → BackendError/BackendTimeout naming the URL (token blanked)."""
        return http_errors("Replicate", method, url, clean=scrub)

    def _retrying(self, hook: Any, within: float | None = None) -> Any:
        """tenacity's retry loop: `hook(exc)` says whether to try again (a float: wait that
        long, as Retry-After asks), else exponential backoff with jitter; bounded by attempts
        and by total time. (tenacity rather than stamina: stamina logs every retry through
        structlog to stdout, which in a kernel lands in the cell's output.)"""
        import tenacity

        backoff = tenacity.wait_exponential(multiplier=0.2, max=5.0) + tenacity.wait_random(0, 0.3)

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome is not None else None
            asked = hook(exc) if isinstance(exc, Exception) else None
            return float(asked) if isinstance(asked, (int, float)) and not isinstance(asked, bool) else backoff(state)

        return tenacity.Retrying(
            retry=tenacity.retry_if_exception(lambda exc: isinstance(exc, Exception) and hook(exc) is not False),
            stop=tenacity.stop_after_attempt(self.retries) | tenacity.stop_before_delay(
                self.retry_timeout if within is None else within),
            wait=wait, reraise=True)

    def request(self, method: str, path: str, *, retry: str = "safe", headers: dict[str, str] | None = None,
                timeout: float | httpx.Timeout | None = None, retry_for: float | None = None,
                **kw: Any) -> httpx.Response:
        """One request. `retry`: "safe" (repeatable: GET, cancel), "create" (only when nothing was
        created), "never"; `retry_for`: seconds of retrying at most (default `retry_timeout`)."""
        url = self.url(path)
        h = {**self._auth(), **(headers or {})}
        t = self.timeout if timeout is None else timeout
        with self._edge(method, url):
            if retry == "never":
                resp = self._http.request(method, url, headers=h, timeout=t, **kw)
            else:
                resp = self._send_retrying(method, url, h, t, _safe_hook if retry == "safe" else _create_hook, kw,
                                           retry_for)
        if resp.status_code >= 400:
            raise self._error(resp, url)
        return resp

    def _send_retrying(self, method: str, url: str, headers: dict, timeout: Any, hook: Any, kw: dict,
                       within: float | None = None) -> httpx.Response:
        try:
            for attempt in self._retrying(hook, within):
                with attempt:
                    resp = self._http.request(method, url, headers=headers, timeout=timeout, **kw)
                    if resp.status_code in RETRY_STATUSES:
                        raise _Again(resp)
        except _Again as last:  # every try answered so: the last answer is the answer
            return last.resp
        return resp

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        """A request whose answer is JSON (an object, or a list for `/hardware`)."""
        resp = self.request(method, path, **kw)
        try:
            data = resp.json()
        except ValueError:
            data = None
        if not isinstance(data, (dict, list)):
            url = self.url(path)
            raise BackendError(f"Replicate answered {method} {url} with {resp.status_code} but no JSON "
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

    # ----- models, versions, deployments, hardware --------------------------------------------
    def get_model(self, owner: str, name: str) -> dict:
        return self._json("GET", f"models/{owner}/{name}")

    def get_version(self, owner: str, name: str, version: str) -> dict:
        return self._json("GET", f"models/{owner}/{name}/versions/{version}")

    def list_versions(self, owner: str, name: str) -> dict:
        return self._json("GET", f"models/{owner}/{name}/versions")

    def list_models(self, cursor: str | None = None) -> dict:
        return self._json("GET", cursor or "models")

    def get_deployment(self, owner: str, name: str) -> dict:
        return self._json("GET", f"deployments/{owner}/{name}")

    def list_hardware(self) -> list:
        return self._json("GET", "hardware")

    def webhook_secret(self) -> dict:
        return self._json("GET", "webhooks/default/secret")

    # ----- predictions -----------------------------------------------------------------------
    def create_prediction(self, body: dict, path: str = "predictions", wait: bool | float | None = None,
                          cancel_after: str | None = None) -> dict:
        """`POST` a prediction to `path` (`predictions` with `version` in the body, a model's or a
        deployment's own `.../predictions`). `wait`: True adds `Prefer: wait` (Replicate holds
        the request up to 60 s), a number `Prefer: wait=N`; `cancel_after` the `Cancel-After`
        header (Replicate ends it past that: canceled, or aborted if it never started)."""
        headers = {}
        hold = 0.0
        if wait is True:
            headers["Prefer"] = "wait"
            hold = 60.0
        elif wait:
            hold = float(max(1, min(60, int(wait))))
            headers["Prefer"] = f"wait={int(hold)}"
        if cancel_after:
            headers["Cancel-After"] = cancel_after
        timeout = self.timeout if not hold else httpx.Timeout(self.timeout.connect or 5.0, read=hold + 5.0,
                                                                 write=self.timeout.write, pool=self.timeout.pool)
        return self._json("POST", path, json=body, headers=headers, timeout=timeout, retry="create")

    def get_prediction(self, id_or_url: str, retry_for: float | None = None) -> dict:
        return self._json("GET", id_or_url if "/" in id_or_url else f"predictions/{id_or_url}", retry_for=retry_for)

    def list_predictions(self, cursor: str | None = None) -> dict:
        return self._json("GET", cursor or "predictions")

    def cancel_prediction(self, id_or_url: str) -> dict:
        return self._json("POST", id_or_url if "/" in id_or_url else f"predictions/{id_or_url}/cancel",
                          timeout=10.0)

    # ----- files -----------------------------------------------------------------------------
    def upload(self, data: bytes, name: str, content_type: str, metadata: dict | None = None) -> dict:
        """`POST /v1/files` (multipart, field `content`) → the file object; pass `urls.get` as
        input. Not retried past a connection that never opened (an upload that was received
        twice would only leave a second copy, but it is not ours to decide)."""
        import json as _json

        data_fields = {"metadata": _json.dumps(metadata)} if metadata else {}
        return self._json("POST", "files", files={"content": (name, data, content_type)}, data=data_fields,
                          timeout=None, retry="create")

    def get_file(self, file_id: str) -> dict:
        return self._json("GET", f"files/{file_id}")

    def list_files(self) -> dict:
        return self._json("GET", "files")

    def delete_file(self, file_id: str) -> bool:
        return self.request("DELETE", f"files/{file_id}").status_code == 204

    # ----- streams and output files ----------------------------------------------------------
    @contextmanager
    def stream(self, url: str, last_event_id: str | None = None) -> Iterator[Iterator[Any]]:
        """The prediction's SSE (`urls.stream`) as httpx-sse events (`.event .data .id`).
        Opening is retried like a GET; once open, only the wait for the headers is bounded (a
        model may be silent for minutes). `last_event_id` resumes after that event."""
        from httpx_sse import EventSource

        headers = {**self._auth(), "Accept": "text/event-stream", "Cache-Control": "no-store"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        timeout = httpx.Timeout(self.timeout.connect or 5.0, read=None, write=self.timeout.write, pool=self.timeout.pool)
        with self._edge("GET", url):  # also around the caller's reading of the events
            resp = None
            try:
                for attempt in self._retrying(_safe_hook):
                    with attempt:
                        resp = self._http.send(self._http.build_request("GET", url, headers=headers, timeout=timeout),
                                               stream=True)
                        if resp.status_code in RETRY_STATUSES:
                            resp.close()
                            raise _Again(resp)
            except _Again as last:
                resp = last.resp
            assert resp is not None
            try:
                if resp.status_code >= 400:
                    resp.read()
                    raise self._error(resp, url)
                yield EventSource(resp).iter_sse()
            finally:
                resp.close()

    def fetch(self, url: str, timeout: float = 120.0) -> tuple[bytes, str | None]:
        """An output file's bytes and content type (retried like any GET). replicate.delivery
        needs no token; URLs on the API's own host get it (and no other host ever does)."""
        headers = self._auth() if url.startswith(self.base_url) else {}
        with http_errors("the output's host", "GET", url, clean=scrub):
            resp = self._send_retrying("GET", url, headers, timeout, _safe_hook, {})
        if resp.status_code >= 400:
            raise BackendError(f"Fetching output {url} answered {resp.status_code}", url=url, tried=[url])
        ctype = (resp.headers.get("content-type") or "").split(";")[0].strip() or None
        return resp.content, ctype

    def close(self) -> None:
        self._http.close()

"""The HTTP edge of the remote backends: every httpx failure becomes a BackendError here.

httpx raises its own tree (`TimeoutException`, `TransportError`, `HTTPStatusError`,
`DecodingError`, `InvalidURL`, the `StreamError`s) and, once a client has been closed, a bare
`RuntimeError` ("Cannot send a request, as the client has been closed"). None of that is ours to
show a user, and a runner that catches httpx by name sooner or later misses one and lets it
escape `execute()`. So the two HTTP clients (`workers/cog_client.py`, `replicate/api.py`) run
every call inside `http_errors(...)`, the way httpx runs httpcore inside
`map_httpcore_exceptions()`, and above them nothing knows httpx:

    httpx.TimeoutException                    → BackendTimeout  (no answer in time)
    any other httpx failure, a closed client  → BackendError    (the request was not answered)

Both name the service, the method and the URL that was tried; the httpx exception is kept as
`__cause__` (`cause_name()` gives its class name for messages).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import httpx

from replicate_jupyter.errors import BackendError, BackendTimeout

__all__ = ["http_errors", "cause_name"]

#: httpx's words when a request is sent on a closed Client (a RuntimeError, not an HTTPError)
_CLOSED = "client has been closed"


@contextmanager
def http_errors(service: str, method: str, url: str, clean: Callable[[str], str] = str) -> Iterator[None]:
    """Translate httpx failures raised inside the block. `service` names who was asked ("worker
    http://gpu1:5000", "Replicate"); `clean` runs over every text taken from the exception (the
    Replicate client blanks its token with it)."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise BackendTimeout(f"{service} did not answer in time: tried {method} {url} ({type(exc).__name__})",
                             url=url, tried=[url]) from exc
    except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as exc:
        detail = clean(str(exc))
        raise BackendError(f"Cannot reach {service}: tried {method} {url} ({type(exc).__name__}"
                           + (f": {detail})" if detail else ")"), url=url, tried=[url]) from exc
    except RuntimeError as exc:
        if _CLOSED not in str(exc):
            raise
        raise BackendError(f"Cannot use {service}: tried {method} {url} on a closed HTTP client "
                           "(it was closed with its runner or worker)", url=url, tried=[url]) from exc


def cause_name(exc: BaseException | None) -> str:
    """The class name of what went wrong underneath an edge error (`ReadTimeout`, `ConnectError`),
    for the short reasons runners put in a prediction's error or logs."""
    if exc is None:
        return "connection lost"
    cause = exc.__cause__
    return type(cause if cause is not None else exc).__name__

"""One webhook POST over a kept-alive connection, with the standard library's http.client.

Why not httpx: a delivery runs beside a prediction in the same process, so every bit of its CPU
is taken from the model through the GIL. httpx's async client spends ~1 ms of Python per POST,
its sync client ~0.4 ms; http.client ~0.09 ms (measured on loopback). Webhooks need none of
httpx's extras: one POST, no redirects (Replicate follows none), a timeout, the status and
Retry-After of the answer. Connections are pooled per origin and reused, as a consumer expects.
"""
from __future__ import annotations

import atexit
import http.client
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["Answer", "DeliveryFailed", "post", "shown", "close_idle"]

_idle: dict[tuple[str, str, int], list[tuple[float, http.client.HTTPConnection]]] = {}
_lock = threading.Lock()
_MAX_IDLE = 8  # per origin
_IDLE_SECONDS = 30.0  # older idle connections are closed, not reused (servers drop them too)
_tls: ssl.SSLContext | None = None


@dataclass(frozen=True)
class Answer:
    code: int
    retry_after: str | None


class DeliveryFailed(Exception):
    """No answer: `reason` says why in words (refused, timed out, host not found, TLS)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def shown(url: str) -> str:
    """The URL as messages may show it: a password in it (`https://user:pw@host/`) is masked."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return parts._replace(netloc=f"{parts.username}:****@{host}").geturl()


def _basic_auth(url: str) -> str | None:
    import base64
    from urllib.parse import unquote

    parts = urlsplit(url)
    if parts.username is None:
        return None
    pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


def _origin(url: str) -> tuple[tuple[str, str, int], str]:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return (parts.scheme, parts.hostname or "", port), target


def _take(origin: tuple[str, str, int]) -> http.client.HTTPConnection | None:
    """A kept-alive connection to `origin` that has not idled too long, or None."""
    stale = []
    with _lock:
        pool = _idle.get(origin, [])
        while pool and time.monotonic() - pool[0][0] > _IDLE_SECONDS:
            stale.append(pool.pop(0)[1])
        conn = pool.pop()[1] if pool else None
    for old in stale:
        old.close()
    return conn


@atexit.register
def close_idle() -> None:
    """Close every kept-alive connection (at exit, so none is left to the garbage collector)."""
    with _lock:
        conns = [c for pool in _idle.values() for _, c in pool]
        _idle.clear()
    for c in conns:
        c.close()


def _connect(origin: tuple[str, str, int], timeout: float) -> http.client.HTTPConnection:
    global _tls
    scheme, host, port = origin
    if scheme == "https":
        if _tls is None:
            _tls = ssl.create_default_context()
        return http.client.HTTPSConnection(host, port, timeout=timeout, context=_tls)
    return http.client.HTTPConnection(host, port, timeout=timeout)


def post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> Answer:
    """POST `body`; the answer's status, or DeliveryFailed. `timeout` bounds the connect and
    each wait for the consumer's bytes. A kept-alive connection the consumer had closed is
    retried once on a fresh one (that is not a second delivery: nothing was answered)."""
    origin, target = _origin(url)
    auth = _basic_auth(url)
    if auth:  # credentials in the URL, as browsers and curl send them
        headers = {**headers, "authorization": auth}
    while True:
        conn = _take(origin)
        reused = conn is not None
        if conn is None:
            conn = _connect(origin, timeout)
        elif conn.sock is not None:
            conn.sock.settimeout(timeout)
        try:
            conn.request("POST", target, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()  # drained, so the connection can carry the next delivery
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
            conn.close()
            if reused:
                continue
            raise DeliveryFailed(f"the connection was closed without an answer ({type(exc).__name__})") from None
        except (TimeoutError, socket.timeout):
            conn.close()
            raise DeliveryFailed(f"no answer within {timeout:g} s") from None
        except ConnectionRefusedError:
            conn.close()
            raise DeliveryFailed("connection refused (nothing listens there)") from None
        except socket.gaierror as exc:
            conn.close()
            raise DeliveryFailed(f"host not found ({exc.strerror})") from None
        except ssl.SSLError as exc:
            conn.close()
            raise DeliveryFailed(f"TLS failed: {exc.reason or exc}") from None
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from None
        if resp.will_close:
            conn.close()
        else:
            with _lock:
                pool = _idle.setdefault(origin, [])
                if len(pool) < _MAX_IDLE:
                    pool.append((time.monotonic(), conn))
                    conn = None
            if conn is not None:
                conn.close()
        return Answer(resp.status, resp.getheader("retry-after"))

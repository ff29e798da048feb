"""One webhook POST over a kept-alive connection: the request written by hand, the answer read by
the standard library's http.client parser.

Why not httpx: a delivery runs beside a prediction in the same process, so every bit of its CPU
is taken from the model through the GIL. httpx's async client spends ~1 ms of Python per POST,
its sync client ~0.4 ms; http.client ~0.09 ms, most of it parsing the answer, which comes when
the consumer has answered (usually after the prediction's burst of work). The request itself is
one `sendall` of bytes built here. Webhooks need nothing more: one POST, no redirects (Replicate
follows none), a timeout, the status and Retry-After of the answer. Sockets are pooled per
origin and reused, as a consumer expects.
"""
from __future__ import annotations

import atexit
import base64
import http.client
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

__all__ = ["Answer", "DeliveryFailed", "post", "shown", "close_idle"]

Origin = tuple[str, str, int]
_idle: dict[Origin, list[tuple[float, socket.socket]]] = {}
_lock = threading.Lock()
_MAX_IDLE = 8  # per origin
_IDLE_SECONDS = 30.0  # older idle sockets are closed, not reused (servers drop them too)
_tls: ssl.SSLContext | None = None
_parsed: dict[str, tuple[Origin, bytes]] = {}  # url → (origin, the request's first lines)


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


def _parse(url: str) -> tuple[Origin, bytes]:
    """The origin to connect to, and `POST <target>`, `Host` and (for credentials in the URL,
    as browsers and curl send them) `Authorization` lines. URLs are checked by `attach` (http
    or https, a host, no whitespace), so they go on the wire as given."""
    hit = _parsed.get(url)
    if hit is None:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        head = f"POST {target} HTTP/1.1\r\nHost: {parts.netloc.rsplit('@', 1)[-1]}\r\n"
        if parts.username is not None:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            head += f"Authorization: Basic {base64.b64encode(pair).decode('ascii')}\r\n"
        hit = ((parts.scheme, parts.hostname or "", port), head.encode("latin-1"))
        if len(_parsed) < 256:
            _parsed[url] = hit
    return hit


def _take(origin: Origin) -> socket.socket | None:
    """A kept-alive socket to `origin` that has not idled too long, or None."""
    stale = []
    with _lock:
        pool = _idle.get(origin, [])
        while pool and time.monotonic() - pool[0][0] > _IDLE_SECONDS:
            stale.append(pool.pop(0)[1])
        sock = pool.pop()[1] if pool else None
    for old in stale:
        old.close()
    return sock


def _keep(origin: Origin, sock: socket.socket) -> None:
    with _lock:
        pool = _idle.setdefault(origin, [])
        if len(pool) < _MAX_IDLE:
            pool.append((time.monotonic(), sock))
            return
    sock.close()


@atexit.register
def close_idle() -> None:
    """Close every kept-alive socket (at exit, so none is left to the garbage collector)."""
    with _lock:
        socks = [s for pool in _idle.values() for _, s in pool]
        _idle.clear()
    for s in socks:
        s.close()


def _connect(origin: Origin, timeout: float) -> socket.socket:
    global _tls
    scheme, host, port = origin
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # one write per request: send it now
    if scheme == "https":
        if _tls is None:
            _tls = ssl.create_default_context()
        sock = _tls.wrap_socket(sock, server_hostname=host)
    return sock


def post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> Answer:
    """POST `body` with `headers` (generated values: no CR/LF); the answer's status, or
    DeliveryFailed. `timeout` bounds the connect and each wait for the consumer's bytes. A
    kept-alive socket the consumer had closed is retried once on a fresh one (not a second
    delivery: nothing was answered on it)."""
    origin, head = _parse(url)
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = b"".join((head, f"Content-Length: {len(body)}\r\n{lines}\r\n".encode("latin-1"), body))
    while True:
        sock = _take(origin)
        reused = sock is not None
        try:
            if sock is None:
                sock = _connect(origin, timeout)
            else:
                sock.settimeout(timeout)
            sock.sendall(request)
            resp = http.client.HTTPResponse(sock, method="POST")
            resp.begin()
            resp.read()  # drained, so the socket can carry the next delivery
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
            _close(sock)
            if reused:
                continue
            raise DeliveryFailed(f"the connection was closed without an answer ({type(exc).__name__})") from None
        except (TimeoutError, socket.timeout):
            _close(sock)
            raise DeliveryFailed(f"no answer within {timeout:g} s") from None
        except ConnectionRefusedError:
            _close(sock)
            raise DeliveryFailed("connection refused (nothing listens there)") from None
        except socket.gaierror as exc:
            _close(sock)
            raise DeliveryFailed(f"host not found ({exc.strerror})") from None
        except ssl.SSLError as exc:
            _close(sock)
            raise DeliveryFailed(f"TLS failed: {exc.reason or exc}") from None
        except (OSError, http.client.HTTPException) as exc:
            _close(sock)
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from None
        if resp.will_close:
            sock.close()
        else:
            _keep(origin, sock)
        return Answer(resp.status, resp.getheader("retry-after"))


def _close(sock: socket.socket | None) -> None:
    if sock is not None:
        sock.close()

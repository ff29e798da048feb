"""One webhook POST over a kept-alive connection: the request written by hand, the answer's
status line and headers read by hand too.

Why not httpx, nor http.client: a delivery runs beside a prediction in the same process, so
every bit of its CPU is taken from the model through the GIL. httpx's async client spends ~1 ms
of Python per POST, its sync client ~0.4 ms; http.client ~0.35 ms of a cold CPU just to parse
the answer (its header parser is the email package), and the answer comes while the prediction
streams. Here the request is one `sendall` of bytes built here and the answer one or two
`recv`s and a split (~0.03 ms). Webhooks need nothing more: one POST, no redirects (Replicate
follows none), a timeout, the status and Retry-After of the answer. Sockets are pooled per
origin and reused, as a consumer expects, when the answer says how long its body is. Where the
environment names a proxy for the URL (HTTP(S)_PROXY, NO_PROXY), httpx delivers instead.
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
from urllib.parse import quote, unquote, urlsplit

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
        target = quote((parts.path or "/") + (f"?{parts.query}" if parts.query else ""), safe=_TARGET_SAFE)
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
    if _proxy_for(url):
        return _post_via_proxy(url, body, headers, timeout)
    try:
        origin, head = _parse(url)
    except (ValueError, UnicodeError) as exc:  # e.g. a port out of range, a host IDNA refuses
        raise DeliveryFailed(f"the URL cannot be used ({type(exc).__name__}: {exc})") from None
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
            code, retry_after, reusable = _answer(sock)
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
        if reusable:
            _keep(origin, sock)
        else:
            sock.close()
        return Answer(code, retry_after)


#: what stays as written in a request target (RFC 3986 reserved and unreserved, and `%` of an
#: escape already there); anything else, a non-ASCII character above all, is percent-encoded
_TARGET_SAFE = "/?#[]@!$&'()*+,;=:%-._~"
_MAX_HEAD = 65536  # an answer's status line and headers; longer is not an HTTP server


def _answer(sock: socket.socket) -> tuple[int, str | None, bool]:
    """Read one answer: its status, Retry-After, and whether the socket can carry the next
    request (HTTP/1.1 without `Connection: close`, a body of known length, which is drained).
    1xx answers are skipped. Raises RemoteDisconnected for a socket closed before any byte of
    it (a kept-alive socket the consumer had dropped), HTTPException for one that is not HTTP."""
    buf = b""
    while True:
        end, sep = _head_end(buf)
        while end < 0:
            if len(buf) > _MAX_HEAD:
                raise http.client.LineTooLong("the answer's headers")
            chunk = sock.recv(8192)
            if not chunk:
                if buf:
                    raise http.client.IncompleteRead(buf)
                raise http.client.RemoteDisconnected("closed without an answer")
            buf += chunk
            end, sep = _head_end(buf)
        head, buf = [line.rstrip("\r") for line in buf[:end].decode("latin-1").split("\n")], buf[end + sep:]
        version, _, rest = head[0].partition(" ")
        status = rest[:3]
        if not version.startswith("HTTP/1.") or not status.isdigit():
            raise http.client.BadStatusLine(head[0])
        code = int(status)
        if code >= 200 or code < 100:
            break
    fields: dict[str, str] = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    keep = version != "HTTP/1.0" and "close" not in fields.get("connection", "").lower()
    if code in (204, 304):
        length = 0
    elif "transfer-encoding" in fields:
        length = -1  # chunked: not worth reading for a webhook's answer; the socket is not reused
    else:
        try:
            length = int(fields.get("content-length", "-1"))
        except ValueError:
            length = -1
    if keep and 0 <= length <= _MAX_HEAD:
        try:
            while len(buf) < length:  # drained, so the socket can carry the next delivery
                chunk = sock.recv(length - len(buf))
                if not chunk:
                    break
                buf += chunk
        except OSError:  # slow or cut after its status: delivered all the same, the socket not reused
            pass
        keep = len(buf) == length
    else:
        keep = False
    return code, fields.get("retry-after"), keep


def _proxy_for(url: str) -> str | None:
    """The proxy the environment names for `url` (HTTP_PROXY/HTTPS_PROXY/ALL_PROXY, minus
    NO_PROXY), read as curl and httpx read them; None for a direct connection. Loopback is
    never proxied (as Go's ProxyFromEnvironment): a receiver in this notebook stays reachable
    behind a proxy configured for everything else."""
    import ipaddress
    import urllib.request

    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        if host == "localhost" or ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        pass
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass_environment(host, proxies):  # type: ignore[attr-defined]  # not in typeshed
        return None
    return proxy


def _post_via_proxy(url: str, body: bytes, headers: dict[str, str], timeout: float) -> Answer:
    """A delivery through the environment's proxy: httpx does it (CONNECT for https, absolute
    targets for http). Rare, so its extra CPU does not matter; the direct path stays light."""
    import httpx

    try:
        with httpx.Client(timeout=timeout, trust_env=True, follow_redirects=False) as client:
            r = client.post(url, content=body, headers=headers)
    except httpx.TimeoutException:
        raise DeliveryFailed(f"no answer within {timeout:g} s (through the proxy)") from None
    except httpx.HTTPError as exc:
        raise DeliveryFailed(f"through the proxy: {type(exc).__name__}: {exc}") from None
    return Answer(r.status_code, r.headers.get("retry-after"))


def _head_end(buf: bytes) -> tuple[int, int]:
    """Where an answer's head ends and how long its blank line is: CRLF as HTTP says, or bare
    LF, which servers send and http.client accepts; (-1, 0) while it has not come."""
    crlf, lf = buf.find(b"\r\n\r\n"), buf.find(b"\n\n")
    if crlf >= 0 and (lf < 0 or crlf <= lf):
        return crlf, 4
    return (lf, 2) if lf >= 0 else (-1, 0)


def _close(sock: socket.socket | None) -> None:
    if sock is not None:
        sock.close()

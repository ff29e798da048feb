"""serve's small authenticating front: the only socket a worker opens to the network.

coglet has no authentication, so it listens on a private loopback port and every request reaches
it through this streaming reverse proxy (asyncio + h11, one thread), which

- answers 401 to a request without `Authorization: Bearer <token>` or with a wrong one, when
  serve has a token (required on any non-loopback address): nothing reaches coglet, nothing runs;
- passes SSE through event by event, unbuffered (TCP_NODELAY towards the client, TCP_QUICKACK
  towards coglet, which otherwise waits ~40 ms per event on a delayed ACK: see cog_client.py);
- drops the upstream connection when the client's drops, so coglet cancels a prediction whose
  stream went away exactly as it does when spoken to directly, and cuts the client's stream
  short (never a clean end) when coglet dies mid-prediction;
- fails a prediction whose output comes back null where the schema promises one, fills in the
  logs coglet's answer to a failed one lacks, and names the version each one ran (outputs.py);
- refuses `/shutdown` (the supervisor owns coglet's lifetime); holds new predictions while coglet
  restarts on its folder's edited code (serve/reload.py).

Measured here (2 shared cores, coglet 0.23.1): the front adds ~0.3 ms to a sync request and
~1 ms to a prediction through the workers runner (TTFT the same), at ~5 µs of CPU per SSE event;
a 2,000-token stream is no slower than read from coglet directly.

The token is compared in constant time and never printed: refusals log the method, path and
peer only. It comes from `RJ_WORKER_TOKEN` or `--token-file` (serve/tokens.py), never from the
command line.
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import pathlib
import socket
import threading
from typing import Any, Callable

import h11

from replicate_jupyter.serve.coglog import size
from replicate_jupyter.serve.outputs import checked_answer, checked_events, finished
from replicate_jupyter.serve.reload import Gate, Ticket

__all__ = ["Front"]

_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)
_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"proxy-authenticate", b"proxy-authorization",
                  b"te", b"trailer", b"transfer-encoding", b"upgrade", b"content-length", b"host", b"authorization"})
_READ = 65536
_MAX_JSON = 256 << 20  # a sync prediction's answer is buffered to be checked
_CLIENT_BUFFER = 8 << 20  # bytes the front holds for one slow client before it waits


def _nodelay(sock: Any) -> None:
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _Upstream:
    """One keep-alive connection to coglet, with quick ACKs after every read."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.conn = h11.Connection(h11.CLIENT)
        self.sock = writer.get_extra_info("socket")
        _nodelay(self.sock)

    @classmethod
    async def open(cls, port: int) -> "_Upstream":
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def next_event(self) -> Any:
        while True:
            ev = self.conn.next_event()
            if ev is not h11.NEED_DATA:
                return ev
            await self._receive()

    async def next_events(self) -> list:
        """Every event parseable from what has arrived (at least one; reads only when none is):
        Data events, ending early at the first other event."""
        out: list = []
        while True:
            ev = self.conn.next_event()
            if ev is h11.NEED_DATA:
                if out:
                    return out
                await self._receive()
                continue
            out.append(ev)
            if type(ev) is not h11.Data:
                return out

    async def _receive(self) -> None:
        data = await self.reader.read(_READ)
        if _QUICKACK is not None and self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        self.conn.receive_data(data)

    @property
    def fresh(self) -> bool:
        """Between two exchanges and still open: fit to carry the next request."""
        return (self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE
                and not self.reader.at_eof() and not self.writer.transport.is_closing())

    def abort(self) -> None:
        self.writer.transport.abort()

    def close(self) -> None:
        self.writer.close()


class Front:
    """The proxy on `host:port` in front of coglet on `127.0.0.1:upstream_port`."""

    def __init__(self, host: str, port: int, upstream_port: int, token: str | None, schema: dict,
                 log_path: pathlib.Path | None = None, cwd: Callable[[], str] | None = None,
                 say: Callable[[str], None] = print, gate: Gate | None = None) -> None:
        self.host, self.upstream_port, self.schema = host, upstream_port, schema
        self.log_path, self.cwd, self.say, self.gate = log_path, cwd, say, gate
        self._expected = f"Bearer {token}".encode() if token else None
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.create_server((host.strip("[]"), port), family=family, backlog=256)
        self.port = self.sock.getsockname()[1]
        self.refused = 0
        self._idle: list[_Upstream] = []  # kept-alive connections to coglet nobody is using
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()

    def start(self) -> "Front":
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="rj-serve-front", daemon=True)
        self._thread.start()
        self._started.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stopped is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stopped.set)
        if self._thread is not None:
            self._thread.join(5)
        with contextlib.suppress(OSError):
            self.sock.close()

    async def _main(self) -> None:
        self._loop, self._stopped = asyncio.get_running_loop(), asyncio.Event()
        server = await asyncio.start_server(self._serve, sock=self.sock, limit=_READ)
        self._started.set()
        async with server:
            await self._stopped.wait()
            server.close()
            for task in [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]:
                task.cancel()

    def _checker(self, offset: int) -> Callable[[dict], dict | None]:
        cwd = self.cwd() if self.cwd else None
        return lambda pred: finished(self.schema, pred, self.log_path, offset, cwd)

    # ----- one client connection ---------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        _nodelay(writer.get_extra_info("socket"))
        # keep reading coglet while a client is slow: coglet ends a stream whose reader falls
        # ~a few hundred events behind ("SSE stream lagged"), so the front buffers for it
        writer.transport.set_write_buffer_limits(high=_CLIENT_BUFFER)
        peer = (writer.get_extra_info("peername") or ("?",))[0]
        up: _Upstream | None = None
        clean = True
        try:
            while True:
                req = await _next(conn, reader)
                if not isinstance(req, h11.Request):
                    break
                action, up = await self._exchange(conn, reader, writer, req, up, peer)
                if action != "keep" or conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    clean = action != "abort"
                    break
                conn.start_next_cycle()
        except (h11.ProtocolError, OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            clean = False
        finally:
            if up is not None:
                if clean and up.fresh and len(self._idle) < 16:
                    self._idle.append(up)  # the next client connection skips a connect to coglet
                else:
                    up.close()
            if clean:
                writer.close()
            else:
                writer.transport.abort()  # a cut stream, never one that looks complete

    async def _exchange(self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        req: h11.Request, up: _Upstream | None, peer: str) -> tuple[str, _Upstream | None]:
        """One request and its answer: ("keep" | "close" | "abort", the upstream connection); a
        prediction passes the reload gate first (`ticket`), then goes to coglet (`_relay`)."""
        path = req.target.split(b"?", 1)[0]
        if self._expected is not None:
            given = next((v for k, v in req.headers if k == b"authorization"), b"")
            if not hmac.compare_digest(given, self._expected):
                self.refused += 1
                self.say(f"refused {req.method.decode()} {path.decode(errors='replace')} from {peer}: "
                         f"{'a wrong' if given else 'no'} token (401)")
                await _reply(conn, reader, writer, 401,
                             {"detail": "a valid worker token is required (Authorization: Bearer ...)"},
                             [(b"www-authenticate", b'Bearer realm="replicate-jupyter serve"')])
                return "close", up
        if path.rstrip(b"/") == b"/shutdown":
            await _reply(conn, reader, writer, 403, {"detail": "serve owns this server's lifetime: stop serve instead"})
            return "close", up
        is_prediction = req.method in (b"POST", b"PUT") and path.startswith(b"/predictions") \
            and not path.rstrip(b"/").endswith(b"/cancel")
        if self.gate is None or not is_prediction:
            return await self._relay(conn, reader, writer, req, up, is_prediction, Ticket(None))
        ticket = await self.gate.enter(req.method, path)  # waits while coglet reloads edited code
        if not isinstance(ticket, Ticket):  # an attach to a held prediction, or edited code that does not load
            await _reply(conn, reader, writer, *ticket)
            return "close", up
        try:
            return await self._relay(conn, reader, writer, req, up, is_prediction, ticket)
        finally:
            self.gate.leave(ticket)

    async def _relay(self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: h11.Request,
                     up: _Upstream | None, is_prediction: bool, ticket: Ticket) -> tuple[str, _Upstream | None]:
        if up is None or not up.fresh:
            if up is not None:
                up.close()
            up = self._idle.pop() if self._idle else None
            while up is not None and not up.fresh:
                up.close()
                up = self._idle.pop() if self._idle else None
            if up is None:
                try:
                    up = await _Upstream.open(self.upstream_port)
                except OSError:
                    await _reply(conn, reader, writer, 502,
                                 {"detail": "the model server is not running (it is being restarted)"})
                    return "close", None
        if up.conn.our_state is h11.DONE:
            up.conn.start_next_cycle()
        offset = size(self.log_path) if is_prediction else 0
        version = (self.schema.get("info") or {}).get("x-replicate-version")  # what coglet runs (no reload meanwhile)
        await self._forward_request(conn, reader, req, up)
        resp = await up.next_event()
        while isinstance(resp, h11.InformationalResponse):
            resp = await up.next_event()
        if not isinstance(resp, h11.Response):
            raise h11.RemoteProtocolError("no response from coglet")
        ticket.status = resp.status_code  # a 202 (respond-async) leaves its prediction running
        headers = [(k, v) for k, v in resp.headers if k not in _HOP]
        ctype = next((v for k, v in resp.headers if k == b"content-type"), b"")
        length = next((v for k, v in resp.headers if k == b"content-length"), None)
        if is_prediction and resp.status_code == 200 and ctype.startswith(b"application/json") and length is not None:
            body = await _read_body(up)
            body = await checked_answer(body, self._checker(offset), version, self.log_path, offset)
            head = h11.Response(status_code=200, headers=headers + [(b"content-length", b"%d" % len(body))],
                                reason=resp.reason)
            writer.write(conn.send(head) + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
            await writer.drain()
            return "keep", up
        sse = is_prediction and ctype.startswith(b"text/event-stream")
        if length is not None and not sse:
            headers.append((b"content-length", length))
        writer.write(conn.send(h11.Response(status_code=resp.status_code, headers=headers, reason=resp.reason)))
        ok = await self._stream_body(conn, reader, writer, up, sse, offset, version)
        return ("keep" if ok else "abort"), up

    async def _forward_request(self, conn: h11.Connection, reader: asyncio.StreamReader, req: h11.Request,
                               up: _Upstream) -> None:
        headers = [(k, v) for k, v in req.headers if k not in _HOP]
        headers.append((b"host", b"127.0.0.1:%d" % self.upstream_port))
        length = next((v for k, v in req.headers if k == b"content-length"), None)
        if length is not None:
            headers.append((b"content-length", length))
        elif any(k == b"transfer-encoding" for k, _ in req.headers):
            headers.append((b"transfer-encoding", b"chunked"))
        out = bytearray(up.conn.send(h11.Request(method=req.method, target=req.target, headers=headers)))
        while True:
            ev = await _next(conn, reader)
            if isinstance(ev, h11.Data):
                out += up.conn.send(h11.Data(data=ev.data))
                if len(out) >= _READ:
                    up.writer.write(bytes(out))
                    out.clear()
                    await up.writer.drain()
            elif isinstance(ev, h11.EndOfMessage):
                out += up.conn.send(h11.EndOfMessage())
                up.writer.write(bytes(out))
                await up.writer.drain()
                return
            else:
                raise h11.RemoteProtocolError("the request ended early")

    async def _stream_body(self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           up: _Upstream, sse: bool, offset: int, version: str | None) -> bool:
        """Pass the body on as it arrives; False when either side went away (connection dropped)."""
        gone = False

        def client_said(task: asyncio.Task) -> None:
            nonlocal gone
            if task.cancelled():
                return
            if task.exception() is not None or not task.result():
                gone = True
                up.abort()  # coglet sees the stream drop, as it would without us

        watch = asyncio.ensure_future(reader.read(_READ))
        watch.add_done_callback(client_said)
        checker = self._checker(offset) if sse else None
        pending = b""
        try:
            while True:
                try:
                    events = await up.next_events()
                except (h11.ProtocolError, OSError):
                    return False
                if gone:
                    return False
                # everything that arrived together goes on as one write
                body = b"".join(ev.data for ev in events if type(ev) is h11.Data)
                last = events[-1]
                if checker is not None:
                    body, pending = checked_events(pending + body, checker, version)
                out = conn.send(h11.Data(data=body)) if body else b""
                if type(last) is h11.EndOfMessage:
                    if pending:
                        out += conn.send(h11.Data(data=pending))
                    writer.write(out + conn.send(h11.EndOfMessage()))
                    await writer.drain()
                    return True
                if type(last) is not h11.Data:
                    return False
                if out:
                    writer.write(out)
                    await writer.drain()
        finally:
            data = None
            if not watch.done():
                watch.remove_done_callback(client_said)
                watch.cancel()  # and wait for it: the next read of this connection must not overlap it
                with contextlib.suppress(asyncio.CancelledError, OSError):
                    data = await watch
            elif not watch.cancelled() and watch.exception() is None:
                data = watch.result()
            if data:
                conn.receive_data(data)  # a pipelined next request


async def _next(conn: h11.Connection, reader: asyncio.StreamReader) -> Any:
    while True:
        ev = conn.next_event()
        if ev is not h11.NEED_DATA:
            return ev
        conn.receive_data(await reader.read(_READ))


async def _read_body(up: _Upstream) -> bytes:
    body = bytearray()
    while True:
        ev = await up.next_event()
        if isinstance(ev, h11.Data):
            body += ev.data
            if len(body) > _MAX_JSON:
                raise h11.RemoteProtocolError("answer too large to check")
        elif isinstance(ev, h11.EndOfMessage):
            return bytes(body)
        else:
            raise h11.RemoteProtocolError("the answer ended early")


async def _reply(conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, status: int,
                 body: dict, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    """Answer, then read (a bounded part of) the request body before closing: closing a socket
    with unread data sends a reset, which can cost the client the answer."""
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data)),
               (b"connection", b"close"), *(extra or [])]
    writer.write(conn.send(h11.Response(status_code=status, headers=headers)) + conn.send(h11.Data(data=data))
                 + conn.send(h11.EndOfMessage()))
    await writer.drain()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(_discard(conn, reader, 1 << 20), 2.0)


async def _discard(conn: h11.Connection, reader: asyncio.StreamReader, limit: int) -> None:
    seen = 0
    while seen < limit and conn.their_state is h11.SEND_BODY:
        ev = await _next(conn, reader)
        if isinstance(ev, h11.Data):
            seen += len(ev.data)
        else:
            return

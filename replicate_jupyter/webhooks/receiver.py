"""A webhook receiver to try webhooks from a notebook: `listen()` → `Receiver`.

A small HTTP server on a daemon thread (127.0.0.1 unless told otherwise) that checks each
delivery's signature with the kernel's secret, answers 2xx for a good one and 401 for a bad one
(as a real consumer should, so the sender sees it), and keeps every delivery. Shown in a
notebook it is a table that fills in as deliveries arrive (one display, updated in place a few
times a second at most).

Replicate's wire format names no event, so the receiver infers it as a consumer would: a
terminal status is `completed`; a first delivery with no output and no logs is `start`; after
that, a changed output is `output`, else `logs`. A retry (same `webhook-id`) counts as one
delivery with one more attempt.
"""
from __future__ import annotations

import html
import json
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from replicate_jupyter.errors import InputError, Problem
from replicate_jupyter.webhooks.body import TERMINAL
from replicate_jupyter.webhooks.signing import Secret, WebhookValidationError, default_secret, validate

__all__ = ["Delivery", "Receiver", "listen"]

_MAX_BODY = 64 * 1024 * 1024
_KEEP = 1000  # deliveries kept (oldest dropped first)
_REFRESH = 0.25  # seconds between live-table redraws, at least


@dataclass
class Delivery:
    """One webhook message as received."""

    time: float  # time.time() of the last attempt received
    prediction: str | None
    status: str | None
    event: str  # start | output | logs | completed | ? (not a prediction)
    verified: bool
    webhook_id: str | None
    attempts: int = 1
    error: str | None = None  # why it did not verify
    body: Any = None  # the parsed JSON


class Receiver:
    """A running receiver; `url` is where to point a webhook, `deliveries` what came."""

    def __init__(self, port: int | None = None, host: str = "127.0.0.1", secret: Secret | str | None = None,
                 tolerance: float = 300) -> None:
        from http.server import ThreadingHTTPServer

        self.secret = secret if secret is not None else default_secret()
        self.tolerance = tolerance
        self._deliveries: list[Delivery] = []
        self._by_id: dict[str, Delivery] = {}
        self._last_body: dict[str, Any] = {}  # prediction id → its previous body (to name events)
        self._cond = threading.Condition()
        self._handles: list[Any] = []
        self._conns: set[Any] = set()  # open keep-alive connections, closed by stop()
        self._drawn_at = 0.0
        self._timer: threading.Timer | None = None
        try:
            self._server = ThreadingHTTPServer((host, port or 0), _handler(self))
        except OSError as exc:
            allowed = f"a free port on {host} (or none: one is picked) — {exc.strerror}"
            raise InputError([Problem("port", "available", port, allowed)]) from None
        self._server.daemon_threads = True
        self.host = host
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name=f"rj-webhook-receiver-{self.port}", daemon=True)
        self._thread.start()
        self.running = True

    @property
    def url(self) -> str:
        shown = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"http://{shown}:{self.port}/"

    @property
    def deliveries(self) -> list[Delivery]:
        with self._cond:
            return list(self._deliveries)

    def stop(self) -> None:
        """Stop listening and free the port; the deliveries stay readable."""
        if self.running:
            self.running = False
            self._server.shutdown()
            self._server.server_close()
            for sock in list(self._conns):  # a kept-alive sender must not reach a stopped receiver
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self._thread.join(5)
            self._redraw()

    def __enter__(self) -> "Receiver":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def wait(self, prediction: str | None = None, event: str = "completed", timeout: float = 60) -> Delivery:
        """Block until a delivery of `event` (for `prediction`'s id, if given) has arrived."""
        deadline = time.monotonic() + timeout

        def found() -> Delivery | None:
            for d in self._deliveries:
                if d.event == event and (prediction is None or d.prediction == prediction):
                    return d
            return None

        with self._cond:
            while (hit := found()) is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    who = prediction or "any prediction"
                    raise TimeoutError(f"no {event!r} delivery for {who} at {self.url} in {timeout:g} s")
                self._cond.wait(left)
            return hit

    # ----- the server's threads ----------------------------------------------------------
    def _receive(self, headers: dict[str, str], data: bytes) -> int:
        error = None
        try:
            validate(headers=headers, body=data, secret=self.secret, tolerance=self.tolerance)
            verified = True
        except WebhookValidationError as exc:
            verified, error = False, str(exc)
        try:
            body = json.loads(data)
        except ValueError:
            body = None
        pid = body.get("id") if isinstance(body, dict) else None
        status = body.get("status") if isinstance(body, dict) else None
        wid = {k.lower(): v for k, v in headers.items()}.get("webhook-id")
        with self._cond:
            seen = self._by_id.get(wid) if wid else None
            if seen is not None:  # a retry of a message already here
                seen.attempts += 1
                seen.time = time.time()
                if verified and not seen.verified:
                    seen.verified, seen.error = True, None
            else:
                d = Delivery(time.time(), pid, status, self._event(pid, body), verified, wid, error=error, body=body)
                self._deliveries.append(d)
                if wid:
                    self._by_id[wid] = d
                if len(self._deliveries) > _KEEP:
                    old = self._deliveries.pop(0)
                    self._by_id.pop(old.webhook_id or "", None)
            self._cond.notify_all()
        self._redraw_soon()
        return 200 if verified else 401

    def _event(self, pid: str | None, body: Any) -> str:
        if not isinstance(body, dict) or pid is None:
            return "?"
        before = self._last_body.get(pid)
        self._last_body[pid] = body
        if body.get("status") in TERMINAL:
            return "completed"
        if before is None and not body.get("output"):  # logs from setup may come with the start
            return "start"
        if before is None or body.get("output") != before.get("output"):
            return "output"
        return "logs"

    # ----- display -----------------------------------------------------------------------
    def _redraw_soon(self) -> None:
        if not self._handles:
            return
        wait = self._drawn_at + _REFRESH - time.monotonic()
        if wait <= 0:
            self._redraw()
        elif self._timer is None:
            self._timer = threading.Timer(wait, self._redraw)
            self._timer.daemon = True
            self._timer.start()

    def _redraw(self) -> None:
        self._timer = None
        self._drawn_at = time.monotonic()
        for h in list(self._handles):
            try:
                h.update(self._repr_mimebundle_(), raw=True)
            except Exception:  # a closed frontend must not break receiving
                self._handles.remove(h)

    def _ipython_display_(self) -> None:
        """Shown in a notebook: one display that the receiver redraws as deliveries come."""
        from IPython.display import display

        handle = display(self._repr_mimebundle_(), raw=True, display_id=True)
        if handle is not None:
            self._handles.append(handle)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        rows = self.deliveries
        ok = sum(d.verified for d in rows)
        state = "listening" if self.running else "stopped"
        head = f"Webhook receiver {state} at {self.url}: {len(rows)} deliver{'y' if len(rows) == 1 else 'ies'}, {ok} verified"
        cols = ("time", "prediction", "status", "event", "verified")

        def cells(d: Delivery) -> tuple[str, ...]:
            t = time.strftime("%H:%M:%S", time.localtime(d.time)) + f".{int(d.time * 1000) % 1000:03d}"
            mark = "✓" if d.verified else "✗"
            if d.attempts > 1:
                mark += f" ({d.attempts} tries)"
            return (t, d.prediction or "", d.status or "", d.event, mark)

        table = [cells(d) for d in rows]
        widths = [max([len(c)] + [len(r[i]) for r in table]) for i, c in enumerate(cols)]
        plain = [head, "  ".join(c.ljust(w) for c, w in zip(cols, widths))]
        plain += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in table]
        th = "".join(f"<th style='text-align:left;padding:0 .8em 0 0'>{c}</th>" for c in cols)
        trs = []
        for d, r in zip(rows, table):
            title = f" title='{html.escape(d.error, quote=True)}'" if d.error else ""
            tds = "".join(f"<td style='padding:0 .8em 0 0'>{html.escape(v)}</td>" for v in r[:-1])
            trs.append(f"<tr>{tds}<td{title}>{html.escape(r[-1])}</td></tr>")
        page = (f"<div class='rj-webhooks'><div><b>{html.escape(head)}</b></div>"
                f"<table><thead><tr>{th}</tr></thead><tbody>{''.join(trs)}</tbody></table></div>")
        return {"text/plain": "\n".join(plain), "text/html": page}

    def __repr__(self) -> str:
        return f"<Receiver {self.url} {'listening' if self.running else 'stopped'}, {len(self._deliveries)} deliveries>"


def _handler(receiver: Receiver) -> type:
    from http.server import BaseHTTPRequestHandler

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the sender reuses its connection

        def setup(self) -> None:
            super().setup()
            receiver._conns.add(self.connection)

        def finish(self) -> None:
            receiver._conns.discard(self.connection)
            super().finish()

        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            try:
                length = int(self.headers.get("content-length") or 0)
            except ValueError:
                length = -1
            if not 0 <= length <= _MAX_BODY:
                return self._answer(413, {"error": "body missing or too large"})
            data = self.rfile.read(length)
            code = receiver._receive(dict(self.headers.items()), data)
            self._answer(code, {"ok": True} if code < 300 else {"error": "signature did not verify"})

        def do_GET(self) -> None:  # noqa: N802
            self._answer(200, {"receiver": receiver.url, "deliveries": len(receiver._deliveries)})

        def _answer(self, code: int, payload: dict) -> None:
            out = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, format: str, *args: Any) -> None:  # quiet: the table is the log
            pass

    return Handler


def listen(port: int | None = None, host: str = "127.0.0.1", secret: Secret | str | None = None) -> Receiver:
    """Start a receiver (on a free port unless `port` is given) that verifies deliveries with
    `secret` (the kernel's own by default) and shows them as a live table."""
    return Receiver(port, host, secret)

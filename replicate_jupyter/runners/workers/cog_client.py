"""Cog's HTTP prediction API, as coglet 0.23 actually speaks it.

Measured against coglet 0.23.1 (the `cog` 0.23.1 wheel), which the pool is built on:

- `PUT /predictions/{id}` with `Accept: text/event-stream` streams `start`, `output`
  (`{"chunk", "index"}`), `log` (`{"data", "source"}`) and `completed` (the whole prediction:
  status, output, error, logs, `metrics.predict_time`). Only when the schema has
  `x-cog-streaming`; otherwise 406.
- A second PUT with the same id while it runs attaches to it: with SSE it replays the events
  from the start (at most 1024: past that the replay is one `error` event, "SSE stream replay
  truncated", and the stream ends), without it answers 202 at once with the state so far. A PUT
  for an id it no longer holds (finished, canceled) starts a NEW run — coglet forgets
  predictions when they end, and has no GET. An attach therefore sends an input that cannot
  validate (`REATTACH_PROBE`, a string): an in-flight prediction is attached to, a forgotten
  one gets 422 and nothing runs.
- A stream whose reader falls behind by more than its buffer (1024 events; a fast token stream
  on a loaded machine, or a slow reader) gets one `error` event ("SSE stream lagged; events
  were dropped", `skipped`: N) and ends. When the request that *created* a prediction drops —
  that lagged stream included — coglet cancels the prediction. So the workers runner creates a
  prediction with a blocking PUT (`start_blocking`: its answer is the final state, whole) and
  follows it on a second, attached stream, which may lag or drop without harm.
- 409 "At capacity" when every slot is busy, and also forever after its predictor process died
  (health UNHEALTHY), until the server is restarted. A crash mid-prediction ends the stream with
  `completed` status failed, error "Worker crashed".
- Files come back as data URIs (no upload URL configured); file inputs may be data URIs.
- `POST /predictions/{id}/cancel` → 200 if running, 404 otherwise.
- coglet writes each SSE event as its own small TCP segment and waits (Nagle) for the ACK of
  the last before sending the next. On a kept-alive connection the client's kernel delays that
  ACK up to 40 ms (it expects to piggyback it on a request), so every event stalls ~40 ms
  (44 ms per prediction, loopback); a fresh connection starts in quick-ACK mode and does not.
  A stream is therefore closed after its `completed` event (its connection is not reused: the
  body's last bytes come a moment later and waiting for them cannot be bounded through
  httpcore, which fixes a body's read timeout when it starts reading it), and on Linux it sets
  TCP_QUICKACK after the headers and after every chunk, so a stream that does land on a
  kept-alive connection (after a 409 on it) or runs long never waits on a delayed ACK.

Every httpx failure is translated here, at the edge (`runners/http.py`): callers see
BackendTimeout (no answer in time) or BackendError naming the worker, the method and the URL,
and hold a `CogResponse`, never an httpx object.
"""
from __future__ import annotations

import codecs
import json
import os
import socket
import threading
from contextlib import AbstractContextManager
from typing import Any, Iterator

import httpx

from replicate_jupyter.runners.http import http_errors
from replicate_jupyter.runners.sse import SSEEvent, iter_sse

__all__ = ["CogClient", "CogResponse", "PendingAnswer", "iter_json_sse", "REATTACH_PROBE"]

_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)  # Linux only

#: an input no schema accepts (not an object): attaches to a live prediction, never starts one
REATTACH_PROBE = "__replicate_jupyter_reattach__"


def iter_json_sse(lines: Iterator[str]) -> Iterator[SSEEvent]:
    """Cog's SSE: every event's data is JSON (kept as text if it is not); empty events skipped."""
    for ev in iter_sse(lines):
        if not ev.data:
            continue
        try:
            ev.data = json.loads(ev.data)
        except ValueError:
            pass
        yield ev


class CogResponse:
    """A worker's answer to a prediction request. Reading it goes through the same edge as
    sending it, so a body that breaks off raises BackendError/BackendTimeout, never httpx."""

    def __init__(self, resp: httpx.Response, service: str, method: str, url: str) -> None:
        self._resp = resp
        self._where = (service, method, url)

    def _edge(self) -> AbstractContextManager[None]:
        return http_errors(*self._where)

    @property
    def status_code(self) -> int:
        return self._resp.status_code

    def read(self) -> None:
        """Read the whole body (a short JSON answer), so its connection goes back to the pool."""
        with self._edge():
            self._resp.read()

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not JSON."""
        self.read()
        return self._resp.json()

    @property
    def text(self) -> str:
        self.read()
        return self._resp.text

    def error_text(self) -> str:
        """What a refusal says: coglet's `detail` list (one `field: message` per problem), its
        `error`/`detail` text, or the start of the body."""
        try:
            data = self.json()
        except ValueError:
            return self.text[:300]
        if isinstance(data, dict):
            if isinstance(data.get("detail"), list):
                return "; ".join(f"{'.'.join(str(x) for x in d.get('loc', [])[2:]) or 'input'}: {d.get('msg')}"
                                 for d in data["detail"] if isinstance(d, dict))
            return str(data.get("error") or data.get("detail") or data)
        return str(data)

    def events(self) -> Iterator[SSEEvent]:
        """The SSE events of a streamed answer, as they arrive."""
        with self._edge():
            yield from iter_json_sse(_acked_lines(self._resp))

    def close(self) -> None:
        with self._edge():
            self._resp.close()


class CogClient:
    """One worker's HTTP endpoints. Thread-safe (one httpx.Client, pooled connections)."""

    def __init__(self, url: str, token_env: str | None = None, connect_timeout: float = 3.0,
                 response_timeout: float = 30.0, stream_timeout: float | None = None) -> None:
        self.url = url.rstrip("/")
        self.token_env = token_env
        self.connect_timeout = connect_timeout
        self.response_timeout = response_timeout
        self.stream_timeout = stream_timeout
        self.service = f"worker {self.url}"
        self._http = httpx.Client(
            timeout=httpx.Timeout(response_timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
        )

    def headers(self, **extra: str) -> dict[str, str]:
        h = dict(extra)
        if self.token_env:
            token = os.environ.get(self.token_env)
            if token:
                h["Authorization"] = f"Bearer {token}"  # read at request time, never stored
        return h

    def _edge(self, method: str, url: str) -> AbstractContextManager[None]:
        return http_errors(self.service, method, url)

    # ----- plain endpoints -----------------------------------------------------------------
    def health(self, timeout: float = 2.0) -> dict:
        """`/health-check`'s JSON (coglet's `status`: READY, BUSY, STARTING, …)."""
        url = self.url + "/health-check"
        with self._edge("GET", url):
            r = self._http.get(url, headers=self.headers(),
                               timeout=httpx.Timeout(timeout, connect=min(timeout, self.connect_timeout)))
            r.raise_for_status()
        return r.json()

    def openapi(self, timeout: float = 5.0) -> dict:
        """The worker's schema: the model it serves (`info.x-replicate-model`), its inputs, outputs."""
        url = self.url + "/openapi.json"
        with self._edge("GET", url):
            r = self._http.get(url, headers=self.headers(), timeout=timeout)
            r.raise_for_status()
        return r.json()

    def cancel(self, prediction_id: str, timeout: float = 5.0) -> int:
        """`POST /predictions/{id}/cancel`: 200 while it runs, 404 once the worker forgot it."""
        url = f"{self.url}/predictions/{prediction_id}/cancel"
        with self._edge("POST", url):
            return self._http.post(url, headers=self.headers(), timeout=timeout).status_code

    # ----- predictions ---------------------------------------------------------------------
    def open_stream(self, prediction_id: str, input: Any, response_timeout: float | None = None,
                    stream_timeout: float | None = -1.0) -> CogResponse:
        """PUT with SSE; the caller reads `response.events()` and must close the response.
        Waits `response_timeout` for the headers (a worker that never answers), then
        `stream_timeout` (None: no limit) between events."""
        url = f"{self.url}/predictions/{prediction_id}"
        with self._edge("PUT", url):
            req = self._http.build_request(
                "PUT", url, json={"id": prediction_id, "input": input},
                headers=self.headers(Accept="text/event-stream"),
                timeout=httpx.Timeout(self.response_timeout if response_timeout is None else response_timeout,
                                      connect=self.connect_timeout),
            )
            resp = self._http.send(req, stream=True)
        # httpx reads the body with the request's timeout dict: a prediction may run silently
        # for minutes once it has started, so only the wait for the headers is bounded.
        timeout = req.extensions.get("timeout")
        if isinstance(timeout, dict):
            timeout["read"] = self.stream_timeout if stream_timeout == -1.0 else stream_timeout
        return CogResponse(resp, self.service, "PUT", url)

    def predict_sync(self, prediction_id: str, input: Any, timeout: float | None = -1.0) -> CogResponse:
        """One blocking PUT, answered when the prediction has ended (or refused at once). `timeout`
        bounds the wait for the answer (-1: `stream_timeout`; None: no limit)."""
        url = f"{self.url}/predictions/{prediction_id}"
        with self._edge("PUT", url):
            resp = self._http.put(url, json={"id": prediction_id, "input": input}, headers=self.headers(),
                                  timeout=httpx.Timeout(self.stream_timeout if timeout == -1.0 else timeout,
                                                        connect=self.connect_timeout))
        return CogResponse(resp, self.service, "PUT", url)

    def start_blocking(self, prediction_id: str, input: Any) -> PendingAnswer:
        """Create the prediction with a blocking PUT on a thread of its own, and return at once.
        The request stays open until the prediction ends (no read limit: closing it would cancel
        the prediction), so its answer is the final state however its streams fared."""
        return PendingAnswer(lambda: self.predict_sync(prediction_id, input, timeout=None), prediction_id)

    def close(self) -> None:
        self._http.close()


class PendingAnswer:
    """A blocking request running on its own thread: its CogResponse (body read) or the
    BackendError it raised, once `done`. `wait` is interruptible (a kernel interrupt in the
    waiting thread raises KeyboardInterrupt there; the request goes on)."""

    def __init__(self, send: Any, prediction_id: str) -> None:
        self.response: CogResponse | None = None
        self.error: BaseException | None = None
        self._done = threading.Event()
        threading.Thread(target=self._run, args=(send,), name=f"rj-create {prediction_id}", daemon=True).start()

    def _run(self, send: Any) -> None:
        try:
            self.response = send()
        except BaseException as exc:  # noqa: BLE001 — BackendError/BackendTimeout from the edge; kept for the waiter
            self.error = exc
        finally:
            self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until answered (True) or `timeout` passes (False)."""
        return self._done.wait(timeout)


def _acked_lines(resp: httpx.Response) -> Iterator[str]:
    """The body's lines, ACKing each chunk as it arrives (TCP_QUICKACK, where there is one),
    so coglet's next event is never held back by a delayed ACK."""
    sock = None
    if _QUICKACK is not None:
        stream = resp.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
    decode = codecs.getincrementaldecoder("utf-8")("replace").decode
    rest = ""
    chunks = resp.iter_bytes()
    while True:
        if sock is not None:  # first for the headers' segment: the first event waits on its ACK
            try:
                sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
            except OSError:
                sock = None
        chunk = next(chunks, None)
        if chunk is None:
            break
        *lines, rest = (rest + decode(chunk)).split("\n")
        yield from lines
    rest += decode(b"", True)
    if rest:
        yield rest

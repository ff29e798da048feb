"""The pool of Cog HTTP workers: what each one serves, whether it is alive, who is using it.

One pool per kernel (`runners.workers.pool()`), shared by every WorkersRunner, so `rj.workers.add(url)`
and `%replicate use workers` see the same machines. Liveness comes from a background thread
polling `/health-check`; the model and schema from `/openapi.json` (re-read whenever a worker
comes back, since a restarted worker may serve something else, and whenever its health says its
server started again: `setup.started_at`, coglet's own, which is how a `replicate-jupyter serve`
that reloaded edited code between two polls is noticed). A worker takes as many predictions at once
as its slots: the user's `add(url, slots=K)`, else what its schema says (`x-rj-concurrency`:
cog.yaml's `concurrency.max` under serve), else 1. Dispatch hands out idle workers to waiting
predictions in arrival order; a prediction waiting here stays `starting`.
"""
from __future__ import annotations

import builtins
import html
import re
import threading
import time
import urllib.parse
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from replicate_jupyter.errors import BackendError, InputError, Problem
from replicate_jupyter.runners.workers.cog_client import CogClient
from replicate_jupyter.runners.workers.wire import batching, concurrency

__all__ = ["Pool", "Worker"]

HEALTHY = frozenset({"READY", "BUSY"})


@dataclass(eq=False)
class Worker:
    url: str
    client: CogClient
    token_env: str | None = None
    hardware_override: str | None = None
    slots: int = 1
    slots_given: int | None = None  # the user's; else the schema's x-rj-concurrency
    model: str | None = None
    version: str | None = None
    schema: dict | None = None
    status: str = "UNKNOWN"  # coglet's health status, or UNREACHABLE
    inflight: int = 0  # our predictions on it right now
    done: int = 0
    failed: int = 0
    seconds: float = 0.0  # sum of predict_time
    last_error: str | None = None
    setup_started: Any = None  # coglet's setup.started_at when the schema was read
    busy_until: float = 0.0  # after a 409: skip it for a moment
    conflicts: int = 0  # 409s in a row
    removed: bool = False
    active: dict[str, Any] = field(default_factory=dict)  # remote id → open response
    keys: Counter = field(default_factory=Counter)  # batch key → our predictions of it on this worker now

    @property
    def batching(self) -> dict | None:
        """How it batches (a `replicate-jupyter serve` of a batchable model), else None."""
        return batching(self.schema)

    @property
    def capacity(self) -> int:
        """Predictions it takes at once: its slots, or a batching worker's concurrency."""
        b = self.batching
        return max(self.slots, int(b.get("concurrency") or b["max_batch"])) if b else self.slots

    @property
    def hardware(self) -> str | None:
        if self.hardware_override:
            return self.hardware_override
        return ((self.schema or {}).get("info") or {}).get("x-replicate-hardware")

    @property
    def alive(self) -> bool:
        return self.status in HEALTHY

    def idle(self, now: float) -> bool:
        return self.alive and self.inflight < self.capacity and now >= self.busy_until and self.schema is not None

    def row(self) -> dict[str, Any]:
        return {
            "url": self.url, "model": self.model, "status": self.status,
            "busy": self.inflight > 0 or self.status == "BUSY", "inflight": self.inflight, "slots": self.capacity,
            "hardware": self.hardware, "predictions": self.done, "failed": self.failed,
            "gpu_seconds": round(self.seconds, 3), "token_env": self.token_env, "last_error": self.last_error,
        }


class Pool:
    """Workers by URL. `add/remove/list` for users; `acquire/release` for the runner."""

    def __init__(self, poll: float = 0.5, max_queue: int = 4096, health_timeout: float = 1.5) -> None:
        self.poll = poll
        self.max_queue = max_queue
        self.health_timeout = health_timeout
        self._workers: dict[str, Worker] = {}
        self._cond = threading.Condition()
        self._queue: deque = deque()  # waiting tickets, FIFO
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.client_options: dict[str, Any] = {}

    # ----- user surface --------------------------------------------------------------------
    def add(self, url: str, token_env: str | None = None, hardware: str | None = None,
            slots: int | None = None) -> dict:
        """Add a worker (a `replicate-jupyter serve` or any Cog server) by its base URL.
        `token_env` names an environment variable holding a bearer token (the token itself is
        never stored); `hardware` sets the price SKU when the worker's schema does not say;
        `slots` the predictions sent to it at once (default: what its schema says, else 1)."""
        url = _worker_url(url)
        given = None if slots is None else max(1, int(slots))
        with self._cond:
            w = self._workers.get(url)
            if w is None:
                w = Worker(url=url, client=CogClient(url, token_env, **self.client_options), token_env=token_env,
                           hardware_override=hardware, slots=given or 1, slots_given=given)
                self._workers[url] = w
            else:
                w.hardware_override = hardware or w.hardware_override
                w.slots_given = given
                w.slots = given or concurrency(w.schema) or 1
                if token_env != w.token_env:
                    w.token_env = w.client.token_env = token_env
        self._check(w)
        self._ensure_thread()
        return w.row()

    def remove(self, url: str) -> None:
        url = url.rstrip("/")
        with self._cond:
            w = self._workers.pop(url, None) or self._workers.pop("http://" + url, None)
            if w is None:
                raise KeyError(f"No worker {url!r} in the pool (workers: {', '.join(self._workers) or 'none'})")
            w.removed = True
            self._cond.notify_all()
        if not w.inflight:
            w.client.close()

    def clear(self) -> None:
        for url in list(self._workers):
            self.remove(url)

    def list(self) -> builtins.list[dict]:
        with self._cond:
            return [w.row() for w in self._workers.values()]

    def workers(self) -> builtins.list[Worker]:
        with self._cond:
            return list(self._workers.values())

    def __len__(self) -> int:
        return len(self._workers)

    def __repr__(self) -> str:
        rows = self.list()
        lines = [f"<workers pool: {len(rows)} worker(s)>"]
        for r in rows:
            lines.append(f"  {r['url']}  {r['model'] or '?'}  {r['status']}  busy={r['busy']}  "
                         f"hw={r['hardware'] or '?'}  done={r['predictions']}  {r['gpu_seconds']:.2f}s")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        head = ["URL", "model", "status", "busy", "hardware", "predictions done", "GPU seconds"]
        cells = []
        for r in self.list():
            status = r["status"]
            colour = "#1a7f37" if status == "READY" else "#9a6700" if status == "BUSY" else "#cf222e"
            cells.append("<tr>" + "".join(f"<td>{c}</td>" for c in (
                html.escape(r["url"]), html.escape(r["model"] or "?"),
                f'<span style="color:{colour}">{html.escape(status)}</span>',
                "yes" if r["busy"] else "no", html.escape(r["hardware"] or "?"),
                r["predictions"], f"{r['gpu_seconds']:.2f}")) + "</tr>")
        if not cells:
            cells.append(f'<tr><td colspan="{len(head)}">no workers — <code>rj.workers.add("http://host:port")</code></td></tr>')
        return ('<table class="rj-workers"><thead><tr>' + "".join(f"<th>{h}</th>" for h in head)
                + "</tr></thead><tbody>" + "".join(cells) + "</tbody></table>")

    def _repr_mimebundle_(self, include=None, exclude=None):
        return {"text/plain": repr(self), "text/html": self._repr_html_()}

    # ----- liveness ------------------------------------------------------------------------
    def _check(self, w: Worker) -> None:
        """One health poll; re-read the schema when the worker was not known healthy, or its
        server started again since (a serve that reloaded edited code: a new version, new inputs)."""
        err: str | None
        started = None
        try:
            health = w.client.health(self.health_timeout)
            status = health.get("status", "UNKNOWN")
            started = (health.get("setup") or {}).get("started_at")
        except (BackendError, ValueError, AttributeError) as exc:  # BackendError names the URL and the failure
            status = "UNREACHABLE"
            err = str(exc) or type(exc).__name__
        else:
            err = None
        restarted = started is not None and w.setup_started is not None and started != w.setup_started
        need_schema = status in HEALTHY and (w.schema is None or not w.alive or restarted)
        schema = None
        if need_schema:
            try:
                schema = w.client.openapi(max(self.health_timeout, 3.0))
            except (BackendError, ValueError) as exc:
                status, err = "UNREACHABLE", f"/openapi.json: {exc}"
        with self._cond:
            if schema is not None:
                info = schema.get("info") or {}
                w.schema = schema
                w.model = info.get("x-replicate-model") or w.model or "unknown"
                w.version = info.get("x-replicate-version")
                w.slots = w.slots_given or concurrency(schema) or 1
                w.setup_started = started
            w.status = status
            if err:
                w.last_error = err
            if status == "READY":
                w.busy_until = 0.0
            self._cond.notify_all()

    def refresh(self) -> None:
        for w in self.workers():
            self._check(w)

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="rj-workers-health", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.poll):
            for w in self.workers():
                if self._stop.is_set():
                    return
                self._check(w)

    def mark(self, w: Worker, status: str, error: str | None = None) -> None:
        """What a prediction just learned about a worker (crashed, unreachable), before the poller."""
        with self._cond:
            w.status = status
            if error:
                w.last_error = error
            self._cond.notify_all()

    def backoff(self, w: Worker) -> None:
        """After a 409. coglet frees a slot a moment *after* it sends `completed`, so the first
        retries come quickly (1 ms, doubling); a worker someone else keeps busy settles at 0.25 s."""
        with self._cond:
            w.conflicts += 1
            w.busy_until = time.monotonic() + min(0.25, 0.001 * 2 ** (w.conflicts - 1))
            self._cond.notify_all()

    # ----- dispatch ------------------------------------------------------------------------
    def serving(self, model: str) -> builtins.list[Worker]:
        with self._cond:
            return [w for w in self._workers.values() if w.model == model]

    def acquire(self, model: str, cancel: threading.Event, exclude: set[str] | frozenset = frozenset(),
                unavailable_timeout: float = 30.0, key: Any = None) -> Worker | None:
        """Block until an idle worker serving `model` is free (FIFO among waiters); None if
        canceled. Raises BackendError when the queue is full or no worker serving the model
        has been alive for `unavailable_timeout` seconds. `key`: the prediction's batch key
        (wire.batch_key): a batching worker already running predictions of that key is taken
        first, so the members of a sweep meet in one batch; release with the same key."""
        ticket = (object(), model)
        with self._cond:
            if len(self._queue) >= self.max_queue:
                raise BackendError(f"the workers queue is full ({self.max_queue} predictions waiting)")
            self._queue.append(ticket)
        dead_since: float | None = None
        try:
            with self._cond:
                while True:
                    if cancel.is_set():
                        return None
                    now = time.monotonic()
                    candidates = [w for w in self._workers.values() if w.model == model and w.url not in exclude]
                    first = next(t for t in self._queue if t[1] == model)
                    if first is ticket:
                        idle = [w for w in candidates if w.idle(now)]
                        if idle:
                            w = _pick(idle, key)
                            w.inflight += 1
                            if key is not None:
                                w.keys[key] += 1
                            return w
                    if any(w.alive for w in candidates):
                        dead_since = None
                    else:
                        dead_since = dead_since or now
                        if now - dead_since >= unavailable_timeout:
                            tried = [w.url for w in candidates] or [w.url for w in self._workers.values()]
                            detail = "; ".join(f"{w.url}: {w.status}" + (f" ({w.last_error})" if w.last_error else "")
                                               for w in candidates)
                            raise BackendError(
                                f"No worker serving {model} is reachable after {unavailable_timeout:.0f}s"
                                + (f" — {detail}" if detail else f" (excluded after failing: {', '.join(sorted(exclude))})"),
                                url=tried[0] if tried else None, tried=tried)
                    # wake when a worker's 409 back-off ends, not a poll later (a 1 ms back-off
                    # waited out by a 100 ms poll was most of a quick prediction's dispatch time)
                    backoffs = [w.busy_until - now for w in candidates if w.busy_until > now]
                    self._cond.wait(min([0.1, *backoffs]))
        finally:
            with self._cond:
                try:
                    self._queue.remove(ticket)
                except ValueError:
                    pass
                self._cond.notify_all()

    def release(self, w: Worker, predict_time: float | None = None, ok: bool | None = None, key: Any = None) -> None:
        with self._cond:
            w.inflight = max(0, w.inflight - 1)
            if key is not None and w.keys.get(key):
                w.keys[key] -= 1
                if not w.keys[key]:
                    del w.keys[key]
            if ok is not None:
                w.conflicts = 0
                if ok:
                    w.done += 1
                else:
                    w.failed += 1
            if predict_time:
                w.seconds += float(predict_time)
            self._cond.notify_all()
        if w.removed and not w.inflight:
            w.client.close()

    def close(self) -> None:
        self._stop.set()


def _pick(idle: builtins.list[Worker], key: Any) -> Worker:
    """The worker for the next prediction: a batching one already running its batch key (the
    fullest, so members gather rather than spread), else the least busy, as for any model."""
    if key is not None:
        joining = [w for w in idle if w.keys.get(key) and w.batching is not None]
        if joining:
            return max(joining, key=lambda x: x.keys[key])
    return min(idle, key=lambda x: (x.inflight, x.done))


_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$")


def _worker_url(text: str) -> str:
    """`http://host:port` from what a user typed (`host:port` gets `http://`); InputError for
    anything that is not a worker's base URL, so `%replicate workers add not-a-url` is refused
    at once instead of failing health checks forever. A bare word needs a port or a scheme."""
    raw = str(text).strip().rstrip("/")
    explicit = raw.startswith(("http://", "https://"))
    url = raw if explicit else "http://" + raw
    try:
        parts = urllib.parse.urlsplit(url)
        port, host = parts.port, parts.hostname or ""
    except ValueError:
        port, host, parts = None, "", None
    ok_host = bool(_HOST.match(host)) or (":" in host)  # a name, an IPv4 address, or [IPv6]
    if parts is None or not ok_host or not (explicit or port is not None) or parts.query or parts.fragment:
        raise InputError([Problem("url", "url", text, "a worker's base URL: http://HOST:PORT or HOST:PORT",
                                  message=f"{text!r} is not a worker URL: give http://HOST:PORT (or HOST:PORT)")])
    return url

"""Deliver a prediction's webhooks from its event stream, as Replicate does.

`attach(prediction, url)` subscribes a `Deliverer` to the prediction. Its listener runs in the
prediction's own thread for every token, so it only sets flags and, when it has something new,
wakes the delivery loop: one asyncio loop on one daemon thread for the whole kernel, where every
deliverer is a task (a slow consumer never holds up another). The pending work of a deliverer is
at most a start, one "state changed" flag and a completed: a queue that cannot grow, whatever
the model emits.

Replicate's rules: `start` first; `output`/`logs` at most one per `throttle` seconds, each the
latest state (a delivery waiting for its retry is dropped once a newer state is there);
`completed` last, for succeeded, failed and canceled alike. Each delivery is signed per Standard
Webhooks with a `webhook-id` kept across its retries; non-2xx and timeouts are retried with
backoff (`Retry-After` honoured). A delivery that never got through is recorded in `failures`
and warned about, naming the URL; the prediction itself is never touched.
"""
from __future__ import annotations

import secrets
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Any, Iterable
from urllib.parse import urlsplit

from replicate_jupyter.errors import InputError, Problem
from replicate_jupyter.prediction.events import Completed, Log, Output, Started
from replicate_jupyter.webhooks import body as wire
from replicate_jupyter.webhooks.signing import Secret, default_secret, sign

__all__ = ["EVENTS", "RetryPolicy", "Record", "Deliverer", "WebhookDeliveryWarning", "attach"]

EVENTS = ("start", "output", "logs", "completed")
_USER_AGENT = "replicate-jupyter-webhooks/1"


class WebhookDeliveryWarning(UserWarning):
    """A webhook could not be delivered after every retry."""


@dataclass(frozen=True)
class RetryPolicy:
    """When to try a delivery again: after each of `delays` seconds (5 tries over ~1 min by
    default), each attempt given `timeout` seconds. A `Retry-After` answer replaces the next
    delay, up to `max_retry_after`."""

    delays: tuple[float, ...] = (2.0, 5.0, 15.0, 40.0)
    timeout: float = 10.0
    max_retry_after: float = 120.0

    @property
    def tries(self) -> int:
        return len(self.delays) + 1


@dataclass
class Record:
    """One webhook message (all its attempts): what it was, whether and how it got through."""

    event: str
    webhook_id: str
    status: str  # the prediction's status in the body
    attempts: int = 0
    ok: bool = False
    code: int | None = None  # the consumer's last HTTP status
    error: str | None = None  # why the last attempt failed
    superseded: bool = False  # dropped for a newer state before it got through
    given_up: bool = False  # every try failed
    sent_at: float = 0.0  # time.time() of the first attempt


def _check(url: str, events_filter: Iterable[str] | None) -> frozenset[str]:
    problems = []
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        problems.append(Problem("webhook", "format", url, "an http:// or https:// URL"))
    events = frozenset(EVENTS if events_filter is None else events_filter)
    if isinstance(events_filter, str) or not events or not events <= set(EVENTS):
        problems.append(Problem("webhook_events_filter", "choices", events_filter,
                                "a list of: " + ", ".join(EVENTS)))
    if problems:
        raise InputError(problems)
    return events


class _Loop:
    """The kernel's one delivery thread: an asyncio loop and one pooled httpx client."""

    _instance: "_Loop | None" = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        import asyncio

        self.loop = asyncio.new_event_loop()
        self.client: Any = None
        threading.Thread(target=self.loop.run_forever, name="rj-webhooks", daemon=True).start()

    @classmethod
    def get(cls) -> "_Loop":
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def http(self) -> Any:
        if self.client is None:  # made in the loop's thread, where it is used
            import httpx

            self.client = httpx.AsyncClient(follow_redirects=False, headers={"user-agent": _USER_AGENT})
        return self.client


class Deliverer:
    """Sends one prediction's webhooks to one URL. `records` lists every message, `failures`
    those that never got through; `wait()` blocks until the last one is settled."""

    def __init__(self, prediction: Any, url: str, events_filter: Iterable[str] | None = None,
                 secret: Secret | str | None = None, *, throttle: float = 0.5,
                 retry: RetryPolicy | None = None) -> None:
        self.events = _check(url, events_filter)
        self.prediction = prediction
        self.url = url
        self.throttle = throttle
        self.retry = retry or RetryPolicy()
        self._secret = secret if secret is not None else default_secret()
        sign(self._secret, "msg_check", int(time.time()), "{}")  # a bad key fails here, not later
        self.records: list[Record] = []
        self._body = wire.Builder(prediction)
        self._start: dict[str, Any] | None = None  # the state at Started, waiting to be sent
        self._changed: str | None = None  # "output" or "logs": a newer state than the last sent
        self._final = False
        self._armed = False  # a wake-up is on its way to the loop
        self._settled = threading.Event()
        self._loop = _Loop.get()
        import asyncio

        self._wake = asyncio.Event()  # something new to send (set through the loop)
        self._finished = asyncio.Event()  # the Completed arrived
        self._task = asyncio.run_coroutine_threadsafe(self._run(), self._loop.loop)
        prediction.subscribe(self._listen)

    # ----- the prediction's thread: flags and a wake-up, nothing else ---------------------
    def _listen(self, p: Any, e: Any) -> None:
        cls = e.__class__
        if cls is Output or cls is Log:
            kind = "output" if cls is Output else "logs"
            if kind not in self.events:
                return
            if self._changed != "output":  # one delivery carries both; it is named for the output
                self._changed = kind
        elif cls is Started:
            if "start" not in self.events:
                return
            self._start = wire.light_state(p)
        elif cls is Completed:
            self._final = True
            self._loop.loop.call_soon_threadsafe(self._finished.set)
        else:
            return  # progress, previews, metrics are not webhook events
        if not self._armed:
            self._armed = True
            self._loop.loop.call_soon_threadsafe(self._wake.set)

    # ----- the delivery thread -----------------------------------------------------------
    async def _run(self) -> None:
        import asyncio

        last = -1e9  # monotonic time of the last start/output/logs dispatch
        completed = "completed" in self.events
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                self._armed = False  # from here on, anything new wakes the loop again
                if self._start is not None:
                    state, self._start = self._start, None
                    last = time.monotonic()
                    await self._send("start", self._body.build(state))
                if self._changed:
                    if not self._final:  # the throttle window; a completed ends it early
                        try:
                            await asyncio.wait_for(self._finished.wait(), last + self.throttle - time.monotonic())
                        except asyncio.TimeoutError:
                            pass
                    kind, self._changed = self._changed, None
                    if not (self._final and completed):  # else the completed carries this state
                        await asyncio.sleep(max(0.0, last + self.throttle - time.monotonic()))
                        body = self._body.build()
                        if not (body.status in wire.TERMINAL and completed):
                            last = time.monotonic()
                            await self._send(kind, body, supersedable=True)
                if self._final and self._start is None and not self._changed:
                    if completed:
                        await self._send("completed", self._body.build())
                    return
                if self._final or self._changed or self._start is not None:
                    self._wake.set()  # more came while this round was sending
        finally:
            self._settled.set()

    async def _send(self, kind: str, body: "wire.Body", supersedable: bool = False) -> None:
        import asyncio

        import httpx

        rec = Record(kind, "msg_" + secrets.token_hex(13), body.status, sent_at=time.time())
        self.records.append(rec)
        policy = self.retry
        for attempt in range(policy.tries):
            ts = int(time.time())  # each attempt is signed at its own time; the id stays
            headers = {"content-type": "application/json", "webhook-id": rec.webhook_id, "webhook-timestamp": str(ts),
                       "webhook-signature": sign(self._secret, rec.webhook_id, ts, body.text)}
            rec.attempts = attempt + 1
            retry_after = None
            try:
                resp = await self._loop.http().post(self.url, content=body.data, headers=headers, timeout=policy.timeout)
                rec.code = resp.status_code
                if 200 <= resp.status_code < 300:
                    rec.ok, rec.error = True, None
                    return
                rec.error = f"HTTP {resp.status_code}"
                retry_after = _retry_after(resp.headers.get("retry-after"), policy.max_retry_after)
            except httpx.TimeoutException:
                rec.error = f"no answer within {policy.timeout:g} s"
            except httpx.HTTPError as exc:
                rec.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if attempt == policy.tries - 1:
                break
            delay = retry_after if retry_after is not None else policy.delays[attempt]
            if supersedable:  # newer state (or the completed) replaces this one
                try:
                    await asyncio.wait_for(self._wake.wait(), delay)
                    rec.superseded = True
                    return
                except asyncio.TimeoutError:
                    pass
            else:
                await asyncio.sleep(delay)
        rec.given_up = True
        warnings.warn(f"webhook {kind!r} of prediction {self.prediction.id} could not be delivered to {self.url} "
                      f"after {rec.attempts} tries: {rec.error}", WebhookDeliveryWarning, stacklevel=1)

    # ----- the caller's side -------------------------------------------------------------
    @property
    def failures(self) -> list[Record]:
        """Messages given up after every try (one dropped for a newer state is not a failure)."""
        return [r for r in self.records if r.given_up]

    @property
    def done(self) -> bool:
        return self._settled.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the completed delivery is settled (sent or given up); True if it is."""
        return self._settled.wait(timeout)

    def detach(self) -> None:
        """Stop: no further deliveries for this prediction."""
        self.prediction.unsubscribe(self._listen)
        self._task.cancel()

    def __repr__(self) -> str:
        sent = sum(r.ok for r in self.records)
        return f"<Deliverer {self.prediction.id} → {self.url}: {sent}/{len(self.records)} delivered>"


def _retry_after(value: str | None, cap: float) -> float | None:
    """Seconds from a Retry-After header: a number, or an HTTP date."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), cap)


def attach(prediction: Any, url: str, events_filter: Iterable[str] | None = None,
           secret: Secret | str | None = None, *, throttle: float = 0.5,
           retry: RetryPolicy | None = None) -> Deliverer:
    """Deliver `prediction`'s webhooks to `url` (Replicate's format, signed with `secret`, by
    default the kernel's). Call before running it, or after: missed events are replayed.
    Raises InputError for a URL that is not http(s) or an unknown event name."""
    return Deliverer(prediction, url, events_filter, secret, throttle=throttle, retry=retry)

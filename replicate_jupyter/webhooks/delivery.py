"""Deliver a prediction's webhooks from its event stream, as Replicate does.

`attach(prediction, url)` subscribes a `Deliverer` to the prediction, but only until the start:
its listener runs in the prediction's own thread, so it takes the state at Started (or notes the
first output/logs when no start is wanted), wakes the deliverer's worker and unsubscribes; a
token then costs the prediction nothing of ours. The worker (a reused idle thread, from then
until the completed is settled) reads the prediction's state itself when a throttle slot opens,
and `on_done` tells it of the end, so a slow consumer holds up no prediction and no other
webhook. Its pending work is at most a start, the state (read, not queued) and a completed.

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
from replicate_jupyter.runners import threads
from replicate_jupyter.webhooks import body as wire
from replicate_jupyter.webhooks import transport
from replicate_jupyter.webhooks.signing import Secret, check_secret, default_secret, sign

__all__ = ["EVENTS", "RetryPolicy", "Record", "Deliverer", "WebhookDeliveryWarning", "attach", "check"]

EVENTS = ("start", "output", "logs", "completed")
_USER_AGENT = "replicate-jupyter-webhooks/1"
_FINAL_GRACE = 5.0  # seconds a terminal status may precede its Completed's listeners (an interrupted dispatch)


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


_checked: dict[Any, frozenset[str]] = {}  # (url, filter) → its events, once found valid


def _check(url: str, events_filter: Iterable[str] | None) -> frozenset[str]:
    """The events to send, or InputError naming a URL that is not http(s) or an unknown event.
    A webhook URL is usually the same for every run, so a valid one is remembered."""
    if events_filter is not None and not isinstance(events_filter, str):
        try:
            events_filter = tuple(events_filter)  # once: a generator is read only once
        except TypeError:
            pass  # not iterable: _validate names it
    memo: Any = (url, events_filter)
    try:
        hit = _checked.get(memo)
    except TypeError:  # unhashable parts: checked every time
        memo = hit = None
    if hit is not None:
        return hit
    events = _validate(url, events_filter)
    if memo is not None and len(_checked) < 256:
        _checked[memo] = events
    return events


def _validate(url: str, events_filter: Iterable[str] | None) -> frozenset[str]:
    problems = []
    try:
        parts = urlsplit(url) if isinstance(url, str) else None
        ok = (parts is not None and parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
              and not any(c.isspace() or ord(c) < 32 for c in url))
    except ValueError:  # a port that is not a number
        ok = False
    if not ok:
        shown = transport.shown(url) if isinstance(url, str) and "@" in url else url
        problems.append(Problem("webhook", "format", shown, "an http:// or https:// URL"))
    try:
        events = frozenset(EVENTS if events_filter is None else events_filter)
    except TypeError:
        events = frozenset()
    if isinstance(events_filter, str) or not events or not events <= set(EVENTS):
        problems.append(Problem("webhook_events_filter", "choices", events_filter,
                                "a list of: " + ", ".join(EVENTS)))
    if problems:
        raise InputError(problems)
    return events


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
        check_secret(self._secret)  # a bad key fails here, not later
        self.records: list[Record] = []
        self._body = wire.Builder(prediction)
        self._start: dict[str, Any] | None = None  # the state at Started, waiting to be sent
        self._final = False  # the Completed arrived
        self._stopped = False
        self._woken = False  # the worker was started
        self._quiet = False  # the listener has done its part (the worker reads the state itself)
        self._before_start = "start" in self.events  # output/logs wait for the start body
        self._n_out = self._n_logs = 0  # iterator items and log characters seen before Started
        out = prediction.output  # nothing sent yet: the empty state is what a change is seen against
        self._seen: tuple[Any, int | None, int] = (out, 0 if isinstance(out, list) else None, 0)  # output, items, log chars
        self._cv = threading.Condition()
        self._settled = threading.Event()
        self._listening = bool(self.events - {"completed"})
        self._listener = self._listen  # one bound method: unsubscribe finds a listener by identity
        if self._listening:
            prediction.subscribe(self._listener)
        prediction.on_done(self._on_done)

    # ----- the prediction's thread: until the start is captured, then nothing per event ----
    def _listen(self, p: Any, e: Any) -> None:
        if self._quiet:
            return  # not unsubscribed yet (a replay adds the listener after it ran)
        cls = e.__class__
        if cls is Output:
            self._n_out += e.index is not None  # what the start body shows, even when replayed
            wanted = "output" in self.events and not self._before_start
        elif cls is Log:
            self._n_logs += len(e.text)
            wanted = "logs" in self.events and not self._before_start
        elif cls is Started:
            wanted, self._before_start = self._before_start, False
            if wanted:
                self._start = wire.start_state(p, self._n_out, self._n_logs)
        elif cls is Completed:
            self._final = True
            self._wake()
            return
        else:
            return  # progress, previews, metrics are not webhook events
        if wanted:  # from here on the worker reads the state when a throttle slot opens
            self._quiet = True
            p.unsubscribe(self._listener)
            self._wake()

    def _on_done(self, p: Any) -> None:
        """After the Completed's listeners: the one that stopped listening learns of it here
        (one still listening saw it, in history order, or will in its replay)."""
        if self._quiet or not self._listening:
            self._final = True
            self._wake()

    def _wake(self) -> None:
        with self._cv:  # two emitting threads (a cancel's log) must not start two workers
            if self._woken:
                self._cv.notify()
                return
            self._woken = True
        threads.submit(self._work)

    # ----- the worker thread -------------------------------------------------------------
    def _work(self) -> None:
        try:
            self._deliver()
        except Exception as exc:  # a bug here must not pass silently, nor touch the prediction
            warnings.warn(f"webhook delivery to {transport.shown(self.url)} stopped: {exc!r}", WebhookDeliveryWarning,
                          stacklevel=1)
        finally:
            self._settled.set()

    def _moved(self) -> str | None:
        """What changed since the last body sent ("output" or "logs", as the filter wants), or
        None. A few reads of the prediction, once per throttle slot, not once per token."""
        p, (out, n_out, n_logs) = self.prediction, self._seen
        now = p.output
        if "output" in self.events and (now is not out or (n_out is not None and len(now) != n_out)):
            return "output"
        if "logs" in self.events and len(p.logs) != n_logs:
            return "logs"  # one delivery carries output and logs; named for what moved
        return None

    def _mark(self, body: "wire.Body", output: Any) -> None:
        """Remember what `body` showed: `output` is the prediction's output as read just before
        it was built (the object, so a whole new output is seen; the list's length in `body`)."""
        self._seen = (output, body.n_output, body.n_logs)

    def _deliver(self) -> None:
        completed = "completed" in self.events
        streams = bool(self.events & {"output", "logs"})
        due = 0.0  # monotonic time the next output/logs may go (and the state is looked at)
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._final or self._stopped or self._start is not None,
                                  due - time.monotonic() if streams else None)
            if self._stopped:
                return
            if self._start is not None:
                state, self._start = self._start, None
                due = time.monotonic() + self.throttle
                output = self.prediction.output
                body = self._body.build(state)
                self._mark(body, output if body.n_output is not None else None)  # a whole output is not in it
                self._send("start", body)
                continue
            final = self._final
            if final and completed:
                break  # the completed carries the latest state
            kind = self._moved()
            if kind is not None:
                output = self.prediction.output
                body = self._body.build()
                if body.status in wire.TERMINAL and completed:
                    break
                self._mark(body, output)
                due = time.monotonic() + self.throttle
                self._send(kind, body, supersedable=True)
            elif final:
                return  # no completed wanted and nothing newer to send
            else:
                due = time.monotonic() + self.throttle  # nothing moved: look again a slot later
        with self._cv:  # the body is read unlocked: wait until the Completed is applied in full
            self._cv.wait_for(lambda: self._final or self._stopped, _FINAL_GRACE)
        if not self._stopped:
            self._send("completed", self._body.build())

    def _send(self, kind: str, body: "wire.Body", supersedable: bool = False) -> None:
        rec = Record(kind, "msg_" + secrets.token_hex(13), body.status, sent_at=time.time())
        self.records.append(rec)
        policy, completes = self.retry, "completed" in self.events
        for attempt in range(policy.tries):
            ts = int(time.time())  # each attempt is signed at its own time; the id stays
            headers = {"content-type": "application/json", "user-agent": _USER_AGENT, "webhook-id": rec.webhook_id,
                       "webhook-timestamp": str(ts), "webhook-signature": sign(self._secret, rec.webhook_id, ts, body.text)}
            rec.attempts = attempt + 1
            retry_after = None
            try:
                answer = transport.post(self.url, body.data, headers, policy.timeout)
                rec.code = answer.code
                if 200 <= answer.code < 300:
                    rec.ok, rec.error = True, None
                    return
                rec.error = f"HTTP {answer.code}"
                retry_after = _retry_after(answer.retry_after, policy.max_retry_after)
            except transport.DeliveryFailed as exc:
                rec.error = exc.reason
            if attempt == policy.tries - 1 or self._stopped:
                break
            delay = retry_after if retry_after is not None else policy.delays[attempt]
            with self._cv:  # the completed (or a newer state) replaces an output/logs delivery
                self._cv.wait_for(lambda: self._stopped or (supersedable and self._final and completes), delay)
            if self._stopped:
                break
            if supersedable and ((self._final and completes) or self._moved() is not None):
                rec.superseded = True
                return
        rec.given_up = True
        where = transport.shown(self.url)
        warnings.warn(f"webhook {kind!r} of prediction {self.prediction.id} could not be delivered to {where} "
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
        """Stop: no further deliveries (one in flight still gets its answer)."""
        self.prediction.unsubscribe(self._listener)
        with self._cv:
            self._stopped = True
            self._cv.notify()
            if not self._woken:
                self._woken = True  # none will start now
                self._settled.set()

    def __repr__(self) -> str:
        sent = sum(r.ok for r in self.records)
        return f"<Deliverer {self.prediction.id} → {transport.shown(self.url)}: {sent}/{len(self.records)} delivered>"


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


check = _check  # public name: api.prepare checks `webhook=`/`webhook_events_filter=` before dispatch


def attach(prediction: Any, url: str, events_filter: Iterable[str] | None = None,
           secret: Secret | str | None = None, *, throttle: float = 0.5,
           retry: RetryPolicy | None = None) -> Deliverer:
    """Deliver `prediction`'s webhooks to `url` (Replicate's format, signed with `secret`, by
    default the kernel's). Call before running it, or after: missed events are replayed.
    Raises InputError for a URL that is not http(s) or an unknown event name."""
    return Deliverer(prediction, url, events_filter, secret, throttle=throttle, retry=retry)

"""Following a prediction that runs on Replicate, from its create answer to Completed.

The prediction bills on Replicate whatever happens to our connection, so following it never
gives up on a hiccup:

- With a stream URL it is followed on its SSE: `output` events become Output items for
  iterator models, `logs` Log events, `done` ends it. A stream that is cut (a dropped
  connection, a proxy timeout, a server restart) is opened again with `Last-Event-ID`, so
  nothing is missed or repeated; after a few failed reopenings it is polled instead.
- Polling (`GET /v1/predictions/{id}`, each one retried with backoff by the API client) goes on
  through 5xx answers, refused connections and restarts until the service has been out of
  reach for `lost_after` seconds in a row. Only then does it stop: it asks Replicate to cancel
  the prediction (so nothing goes on billing unseen) and ends it `failed`, saying so.
- The final prediction is fetched and its outputs decoded (files embedded, `files.py`) before
  Completed, so the Completed prediction is whole, with Replicate's own predict_time.

Started comes from whichever sees it first: the stream's first event, a poll, or a light
watcher thread while the stream is quiet (a cold boot can keep a model `starting` for minutes).
Completed comes from whichever sees the end first: the follower, or a `reload()`/`cancel()`
whose answer is final (`complete` is once, under the follower's lock, so the stream thread
never adds a line or an item behind it). Replicate sends no progress events: a tqdm line in
the logs becomes a Progress event after its Log, as replicate-python reads progress from them.
"""
from __future__ import annotations

import json
import threading
import time
from typing import TYPE_CHECKING, Any

from replicate_jupyter.errors import BackendError
from replicate_jupyter.prediction.events import TERMINAL, Completed, Log, Output, Progress
from replicate_jupyter.prediction.progress_info import parse_line
from replicate_jupyter.runners.remote import RemoteRun, is_iterator, output_schema
from replicate_jupyter.runners.replicate.api import APIError, ReplicateAPI, scrub
from replicate_jupyter.runners.replicate.files import Files

if TYPE_CHECKING:
    from replicate_jupyter.prediction.prediction import Prediction

__all__ = ["ReplicateRun", "Follower", "TERMINAL", "NOTE", "Lost"]

NOTE = "[replicate-jupyter] "
#: how many times a cut stream is opened again before polling takes over
STREAM_REOPENS = 3


class Lost(BackendError):
    """Replicate stayed out of reach for longer than the follower waits."""


def _transient(exc: BackendError) -> bool:
    """A failure worth waiting out: no answer at all, or a 429/5xx (an APIError of 4xx is final)."""
    status = exc.status if isinstance(exc, APIError) else None
    return status is None or status == 429 or status >= 500


class ReplicateRun(RemoteRun):
    """One prediction's remote state: Replicate's prediction JSON and the log text emitted."""

    def __init__(self, p: Prediction, api: ReplicateAPI) -> None:
        super().__init__(p)
        self.api = api
        self.remote: dict | None = None
        self.logs = ""  # log text already emitted
        self.log_lines = 0
        self.finishing = False
        self.created = False  # the create request has returned (with an id, or failed)
        self.interrupted = False  # a Ctrl-C came while the create request was out
        self.last_event_id: str | None = None
        self.stream_error: str | None = None  # the detail of a stream's `error` event
        self.follower: Follower | None = None

    @property
    def id(self) -> str | None:
        return (self.remote or {}).get("id")

    def note(self, text: str) -> None:
        self.p.emit(Log(text=text))

    def log(self, line: str) -> None:
        """One of the model's log lines, and its progress when it is a tqdm line."""
        self.p.emit(Log(text=line))
        got = parse_line(line)
        if got is not None:
            self.p.emit(Progress(step=got.current, total=got.total))

    def send_cancel(self) -> dict | None:
        """`POST` its `urls.cancel` once (retried by the API client); Replicate then ends it as
        `canceled`, billed to there. Returns Replicate's answer (the prediction as it is now)."""
        with self.lock:
            if self.cancel_sent or not self.id:
                return None
            self.cancel_sent = True
        url = ((self.remote or {}).get("urls") or {}).get("cancel") or str(self.id)
        try:
            return self.api.cancel_prediction(url)
        except BackendError as exc:
            self.note(f"{NOTE}cancel of {self.id} failed: {scrub(exc)}\n")
            return None


class Follower:
    """Follows one created prediction (`run.remote` set) to exactly one Completed."""

    def __init__(self, run: ReplicateRun, files: Files, sku: str, poll_interval: float = 0.5,
                 lost_after: float = 600.0) -> None:
        self.run = run
        self.api = run.api
        self.files = files
        self.sku = sku
        self.poll_interval = poll_interval
        self.lost_after = lost_after
        self._out_since: float | None = None  # when the service went out of reach, if it is
        self._lock = threading.RLock()  # the stream's events vs a Completed from another thread
        run.follower = self

    # ----- the whole way -----------------------------------------------------------------------
    def follow(self) -> None:
        run = self.run
        remote = run.remote or {}
        try:
            if remote.get("status") in ("processing", *TERMINAL):
                run.start(self.sku)
            if remote.get("status") in TERMINAL:
                return self.complete(remote)
            stream_url = (remote.get("urls") or {}).get("stream")
            if stream_url and self._stream(stream_url):
                return self.complete(self.final())
            self.poll()
        except Lost as exc:
            self.give_up(exc)

    # ----- streaming ---------------------------------------------------------------------------
    def _stream(self, url: str) -> bool:
        """Follow the SSE to `done` (True), opening it again after a cut; False: poll instead."""
        run, p = self.run, self.run.p
        stop = threading.Event()
        threading.Thread(target=self._watch_start, args=(stop,), daemon=True,
                         name=f"rj-replicate-start-{p.id}").start()
        try:
            for attempt in range(STREAM_REOPENS + 1):
                if attempt:
                    time.sleep(min(0.25 * 2 ** attempt, 2.0))
                    if p.done:
                        return False
                try:
                    with self.api.stream(url, last_event_id=run.last_event_id) as events:
                        for ev in events:
                            if self._on_event(ev):
                                return True
                    why = "ended before `done`"
                except BackendError as exc:
                    if not _transient(exc):
                        run.note(f"{NOTE}the stream of {run.id} answered {scrub(exc)}; following it by polling\n")
                        return False
                    why = f"broke ({scrub(exc)})"
                if attempt < STREAM_REOPENS:
                    run.note(f"{NOTE}the stream of {run.id} {why}; opening it again after event "
                             f"{run.last_event_id or '(none)'}\n")
            run.note(f"{NOTE}the stream of {run.id} {why}; following it by polling\n")
            return False
        finally:
            stop.set()

    def _on_event(self, ev: Any) -> bool:
        """One SSE event; True once it is `done`."""
        with self._lock:
            if self.run.finishing:  # completed from a reload() or cancel(): its answer had it all
                return True
            return self._on_event_locked(ev)

    def _on_event_locked(self, ev: Any) -> bool:
        run, p = self.run, self.run.p
        if ev.id:
            run.last_event_id = ev.id
        if ev.event == "output":
            run.start(self.sku)
            if is_iterator(p.schema):
                items = output_schema(p.schema).get("items") or {}
                p.emit(Output(value=self.files.chunk(ev.data, items, run.next_index, run.note), index=run.next_index))
                run.next_index += 1
        elif ev.event == "logs":
            run.start(self.sku)
            text = ev.data + "\n"
            run.logs += text
            run.log_lines += 1
            run.log(text)
        elif ev.event == "error":
            try:
                run.stream_error = json.loads(ev.data).get("detail")
            except (ValueError, AttributeError):
                run.stream_error = ev.data
        elif ev.event == "done":
            return True
        return False

    def _watch_start(self, stop: threading.Event) -> None:
        """While the stream is quiet, poll lightly (backing off to 2 s: Replicate rate-limits)
        until Replicate says `processing`."""
        run = self.run
        delay = self.poll_interval
        while not stop.wait(delay):
            delay = min(delay * 1.5, max(2.0, self.poll_interval))
            if run.started or run.p.done:
                return
            try:
                data = self.api.get_prediction(str(run.id))
            except BackendError:
                continue
            if data.get("status") in ("processing", *TERMINAL):
                run.start(self.sku)
                return

    # ----- polling -----------------------------------------------------------------------------
    def get(self) -> dict | None:
        """The prediction now, or None while Replicate is out of reach (each GET is already
        retried with backoff); `Lost` once that has lasted `lost_after` seconds."""
        asked = time.monotonic()
        left = self.lost_after - (0.0 if self._out_since is None else asked - self._out_since)
        try:  # retried with backoff, for no longer than the time left before giving up
            data = self.api.get_prediction(str(self.run.id), retry_for=max(0.2, min(left, 30.0)))
        except BackendError as exc:
            if not _transient(exc):
                raise
            now = time.monotonic()
            if self._out_since is None:
                self._out_since = asked
                self.run.note(f"{NOTE}Replicate is out of reach ({scrub(exc)}); still following {self.run.id} "
                              f"(for up to {self.lost_after:g} s)\n")
            if now - self._out_since > self.lost_after:
                raise Lost(f"Replicate was out of reach for {now - self._out_since:.0f} s: {scrub(exc)}",
                           url=exc.url, tried=exc.tried) from exc
            return None
        if self._out_since is not None:
            self._out_since = None
            self.run.note(f"{NOTE}Replicate answers again; following {self.run.id}\n")
        self.run.remote = {**(self.run.remote or {}), **data}
        return data

    def final(self) -> dict:
        """The prediction once Replicate has written its terminal state (just after `done`)."""
        delay = 0.05
        while True:
            data = self.get()
            if data is not None and data.get("status") in TERMINAL:
                return data
            time.sleep(delay)
            delay = min(delay * 2, max(self.poll_interval, 0.05))

    def poll(self) -> None:
        """Poll until a final state, turning new log text and new iterator items into events."""
        run, p = self.run, self.run.p
        items = output_schema(p.schema).get("items") or {}
        delay = self.poll_interval
        while True:
            data = self.get()
            if data is None:
                delay = min(max(delay, 0.1) * 2, 5.0)
            else:
                delay = self.poll_interval
                status = data.get("status")
                if status in ("processing", *TERMINAL):
                    run.start(self.sku)
                if status in TERMINAL:
                    return self.complete(data)
                self.catch_up(data, items)
            if p.done:
                return
            time.sleep(delay)

    def catch_up(self, data: dict, items: dict | None = None) -> None:
        """Emit the log text and iterator items `data` has beyond what was emitted."""
        run, p = self.run, self.run.p
        with self._lock:
            if run.finishing:
                return
            self._catch_up_logs(data.get("logs") or "")
            if is_iterator(p.schema):
                items = items if items is not None else (output_schema(p.schema).get("items") or {})
                run.emit_items(data.get("output"), lambda v, i: self.files.decode(v, items, f"output-{i}", run.note))

    def _catch_up_logs(self, logs: str) -> None:
        run = self.run
        logs = scrub(logs)
        if not logs or logs == run.logs:
            return
        if logs.startswith(run.logs):
            extra = logs[len(run.logs):]
        elif run.log_lines:
            # streamed lines were re-joined with newlines; keep whatever lines came after them
            lines = logs.splitlines(keepends=True)
            extra = "".join(lines[run.log_lines:])
        else:
            extra = logs
        if extra:
            run.logs += extra
            for line in extra.splitlines(keepends=True):  # one Log per line, as the stream sends them
                run.log(line)
        run.log_lines = len(logs.splitlines())

    # ----- the end -----------------------------------------------------------------------------
    def metrics(self, data: dict | None) -> dict[str, Any]:
        """Replicate's predict_time (our clock when it gave none) and the SKU it is costed at."""
        m = (data or {}).get("metrics") or {}
        pt = m.get("predict_time")
        if pt is None:
            pt = round(self.run.p.elapsed, 6) if self.run.started else 0.0
        out: dict[str, Any] = {"predict_time": round(float(pt), 6), "hardware": self.sku}
        for key in ("total_time", "input_token_count", "output_token_count", "tokens_per_second",
                    "time_to_first_token"):
            if key in m:
                out[key] = m[key]
        return out

    def complete(self, data: dict, lazy: bool = False) -> None:
        """Replicate's final prediction → the outputs not yet emitted, then Completed (once)."""
        with self._lock:
            self._complete(data, lazy)

    def _complete(self, data: dict, lazy: bool) -> None:
        run, p = self.run, self.run.p
        with run.lock:
            if run.finishing or p.finished:
                return
            run.finishing = True
        raw = data.get("status")
        status = raw if raw in TERMINAL else "failed"
        self._catch_up_logs(data.get("logs") or "")
        error = data.get("error") or run.stream_error
        if status == "succeeded":
            out_schema = output_schema(p.schema)
            output = data.get("output")
            if is_iterator(p.schema):
                items = out_schema.get("items") or {}
                # the items the stream never carried
                run.emit_items(output, lambda v, i: self.files.decode(v, items, f"output-{i}", run.note, lazy))
            else:
                p.emit(Output(value=self.files.decode(output, out_schema, "output", run.note, lazy), index=None))
            error = None
        elif status == "canceled":
            error = p.cancel_reason or error
        elif status == "aborted":
            error = error or "aborted by Replicate before it ran (its Cancel-After deadline passed)"
        elif raw not in TERMINAL:
            error = f"Replicate prediction {run.id} is still {raw!r}; stopped following it"
        p.emit(Completed(status=str(status), error=None if error is None else scrub(error), metrics=self.metrics(data)))

    def give_up(self, exc: BaseException) -> None:
        """Out of reach past `lost_after`: ask it to cancel (so it does not bill unseen), end it."""
        run = self.run
        run.send_cancel()
        if not run.p.finished:
            run.p.emit(Completed(status="failed", metrics=self.metrics(run.remote),
                                 error=f"Stopped following Replicate prediction {run.id}: {scrub(exc)}. "
                                       f"It was asked to cancel; see {((run.remote or {}).get('urls') or {}).get('web', '')}"))

    def finish_later(self) -> None:
        """After a kernel interrupt: cancel, then wait for Replicate's final state (its
        predict_time is what is billed), on a thread of its own."""
        try:
            self.run.send_cancel()
            self.complete(self.final())
        except BackendError as exc:
            if not self.run.p.finished:
                self.run.p.emit(Completed(status="canceled", metrics=self.metrics(None),
                                          error=f"cancel requested; Replicate did not confirm ({scrub(exc)})"))

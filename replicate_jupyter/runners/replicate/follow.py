"""Following a prediction that runs on Replicate, from its create answer to Completed.

A prediction created with `stream: true` is followed on its `urls.stream` (SSE): `output`
events become Output items for iterator models, `logs` become Log events, `done` ends it; the
final prediction is then fetched and its outputs decoded (files embedded, `files.py`) *before*
Completed, so the Completed prediction is whole. A prediction without a stream URL, or whose
stream breaks or ends before `done`, is polled instead. Started comes from whichever sees it
first: the stream's first event, the poll, or a light watcher thread while the stream is quiet
(a model may be `starting` for minutes on a cold boot, and the display should say so).
"""
from __future__ import annotations

import json
import threading
import time
from typing import TYPE_CHECKING, Any

from replicate_jupyter.errors import BackendError
from replicate_jupyter.prediction.events import Completed, Log, Output
from replicate_jupyter.runners.remote import RemoteRun, is_iterator, output_schema
from replicate_jupyter.runners.replicate.api import ReplicateAPI, scrub
from replicate_jupyter.runners.replicate.files import Files

if TYPE_CHECKING:
    from replicate_jupyter.prediction.prediction import Prediction

__all__ = ["ReplicateRun", "Follower", "TERMINAL"]

TERMINAL = ("succeeded", "failed", "canceled")
NOTE = "[replicate-jupyter] "


class ReplicateRun(RemoteRun):
    """One prediction's remote state: Replicate's prediction JSON and the log text emitted."""

    def __init__(self, p: Prediction, api: ReplicateAPI) -> None:
        super().__init__(p)
        self.api = api
        self.remote: dict | None = None
        self.logs = ""  # log text already emitted
        self.log_lines = 0
        self.finishing = False

    @property
    def id(self) -> str | None:
        return (self.remote or {}).get("id")

    def note(self, text: str) -> None:
        self.p.emit(Log(text=text))

    def send_cancel(self) -> None:
        """`POST` its `urls.cancel` once; Replicate then ends it as `canceled` (billed to there)."""
        if self.cancel_sent or not self.id:
            return
        self.cancel_sent = True
        url = ((self.remote or {}).get("urls") or {}).get("cancel") or self.id
        try:
            self.api.cancel_prediction(url)
        except BackendError as exc:
            self.note(f"{NOTE}cancel of {self.id} failed: {scrub(exc)}\n")


class Follower:
    """Follows one created prediction (`run.remote` set) to exactly one Completed."""

    def __init__(self, run: ReplicateRun, files: Files, sku: str, poll_interval: float = 0.5) -> None:
        self.run = run
        self.api = run.api
        self.files = files
        self.sku = sku
        self.poll_interval = poll_interval

    # ----- streaming -------------------------------------------------------------------------
    def follow(self) -> None:
        run, p = self.run, self.run.p
        remote = run.remote or {}
        if remote.get("status") in ("processing",) + TERMINAL:
            run.start(self.sku)
        if remote.get("status") in TERMINAL:
            return self.complete(remote)
        stream_url = (remote.get("urls") or {}).get("stream")
        if not stream_url:
            return self.poll()
        stop = threading.Event()
        threading.Thread(target=self._watch_start, args=(stop,), daemon=True,
                         name=f"rj-replicate-start-{p.id}").start()
        iterator = is_iterator(p.schema)
        items = output_schema(p.schema).get("items") or {}
        error_detail = None
        saw_done = False
        try:
            with self.api.stream(stream_url) as events:
                for ev in events:
                    if ev.event == "output":
                        run.start(self.sku)
                        if iterator:
                            p.emit(Output(value=self.files.chunk(ev.data, items, run.next_index, run.note),
                                          index=run.next_index))
                            run.next_index += 1
                    elif ev.event == "logs":
                        run.start(self.sku)
                        text = ev.data + "\n"
                        run.logs += text
                        run.log_lines += 1
                        p.emit(Log(text=text))
                    elif ev.event == "error":
                        try:
                            error_detail = json.loads(ev.data).get("detail")
                        except (ValueError, AttributeError):
                            error_detail = ev.data
                    elif ev.event == "done":
                        saw_done = True
                        break
        finally:
            stop.set()
        if not saw_done:  # the stream ended early: the prediction may still be running
            run.note(f"{NOTE}the stream of {run.id} ended before `done`; following it by polling\n")
            return self.poll()
        final = self.final()
        if error_detail and not final.get("error"):
            final["error"] = error_detail
        self.complete(final)

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
            if data.get("status") in ("processing",) + TERMINAL:
                run.start(self.sku)
                return

    # ----- polling ---------------------------------------------------------------------------
    def final(self, timeout: float = 30.0) -> dict:
        """The prediction once Replicate has written its terminal state (just after `done`)."""
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            data = self.api.get_prediction(str(self.run.id))
            if data.get("status") in TERMINAL or time.monotonic() > deadline:
                return data
            time.sleep(delay)
            delay = min(delay * 2, self.poll_interval)

    def poll(self) -> None:
        """No stream URL (or it broke): poll `GET /v1/predictions/{id}` until a final state,
        turning new log text and new iterator items into events as they appear."""
        run, p = self.run, self.run.p
        iterator = is_iterator(p.schema)
        items = output_schema(p.schema).get("items") or {}
        while True:
            data = self.api.get_prediction(str(run.id))
            status = data.get("status")
            if status in ("processing",) + TERMINAL:
                run.start(self.sku)
            if status in TERMINAL:
                return self.complete(data)
            self._catch_up_logs(data.get("logs") or "")
            if iterator:
                run.emit_items(data.get("output"), lambda v, i: self.files.decode(v, items, f"output-{i}", run.note))
            time.sleep(self.poll_interval)

    def _catch_up_logs(self, logs: str) -> None:
        """Emit what the server's full log text has beyond what was already emitted."""
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
            run.note(extra)
        run.log_lines = len(logs.splitlines())

    # ----- the end ---------------------------------------------------------------------------
    def metrics(self, data: dict | None) -> dict[str, Any]:
        """Replicate's predict_time (our clock when it gave none) and the SKU it is costed at."""
        m = (data or {}).get("metrics") or {}
        pt = m.get("predict_time")
        if pt is None:
            pt = round(self.run.p.elapsed, 6) if self.run.started else 0.0
        return {"predict_time": round(float(pt), 6), "hardware": self.sku}

    def complete(self, data: dict) -> None:
        """Replicate's final prediction → the outputs not yet emitted, then Completed (once)."""
        run, p = self.run, self.run.p
        with run.lock:
            if run.finishing or p.done:
                return
            run.finishing = True
        status = data.get("status") if data.get("status") in TERMINAL else "failed"
        self._catch_up_logs(data.get("logs") or "")
        error = data.get("error")
        if status == "succeeded":
            out_schema = output_schema(p.schema)
            output = data.get("output")
            if is_iterator(p.schema):
                items = out_schema.get("items") or {}
                # the items the stream never carried
                run.emit_items(output, lambda v, i: self.files.decode(v, items, f"output-{i}", run.note))
            else:
                p.emit(Output(value=self.files.decode(output, out_schema, "output", run.note), index=None))
        elif status == "canceled":
            error = p.cancel_reason or error
        elif status == "failed" and data.get("status") not in TERMINAL:
            error = f"Replicate prediction {run.id} is still {data.get('status')!r}; stopped following it"
        p.emit(Completed(status=str(status), error=None if error is None else scrub(error), metrics=self.metrics(data)))

    def finish_later(self) -> None:
        """After a kernel interrupt: cancel, then wait for Replicate's final state (its
        predict_time is what is billed), on a thread of its own."""
        try:
            self.run.send_cancel()
            self.complete(self.final(timeout=30.0))
        except BackendError as exc:
            if not self.run.p.done:
                self.run.p.emit(Completed(status="canceled", metrics=self.metrics(None),
                                          error=f"cancel requested; Replicate did not confirm ({scrub(exc)})"))

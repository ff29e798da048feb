"""One prediction on one worker: created, followed on its SSE stream, its final state checked,
and every way that try can end.

The runner (`workers/runner.py`) picks the worker and decides what to do next; an `Attempt`
runs the prediction there to a final state — emitting Started, Output, Log and exactly one
Completed — or raises `Retry` when the worker could not take it and nothing ran, so the runner
can try another worker without anything running twice.

Two requests per prediction (cog_client.py says why): a blocking PUT creates it and holds the
final state, whole (`PendingAnswer`); a second PUT with SSE attaches to it and carries the live
events. The stream may fall behind and be ended by coglet ("SSE stream lagged"), have its replay
truncated, or drop: the prediction goes on (only the creating request's drop cancels it), the
stream is attached again while its replay can be whole, and whatever no event carried — items,
log text — is filled in from the final state. So a 2,000-token output is exact however far the
reader fell behind.

coglet's events become ours: start → Started, output → Output (iterator items by index, so
replayed events after a re-attach are dropped), log → Log (with the progress and previews a
predictor relays through its output: `context.parse_relayed`; replayed log text skipped by
position), completed → the final outputs and Completed with predict_time, the worker's hardware
and the metrics the predictor recorded. A `succeeded` whose output is null where the schema
promises a value (coglet's answer for a file output it could not read) becomes a failure naming
the cause, whether or not the worker is behind our serve front (serve/outputs.py). The version
serve's front names in the final state is the prediction's: the one that ran, which the first
prediction after an edit of a served folder's code resolved before serve reloaded it.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

from replicate_jupyter.errors import BackendError, BackendTimeout
from replicate_jupyter.prediction.events import Completed, Log, Metric, Output
from replicate_jupyter.runners.context import parse_relayed
from replicate_jupyter.runners.http import cause_name
from replicate_jupyter.runners.remote import RemoteRun, is_iterator
from replicate_jupyter.runners.sse import SSEEvent
from replicate_jupyter.runners.workers.cog_client import REATTACH_PROBE, CogClient, CogResponse, PendingAnswer
from replicate_jupyter.runners.workers.wire import SHARE_METRIC, decode_output, streams, strip_prefix
from replicate_jupyter.runners.workers.worker_pool import Pool, Worker
from replicate_jupyter.serve.outputs import null_output_error

if TYPE_CHECKING:
    from replicate_jupyter.prediction.prediction import Prediction

__all__ = ["Attempt", "Limits", "Retry", "WorkerRun"]

NOTE = "[replicate-jupyter] "
#: coglet's words on the `error` event that ends a stream whose replay cannot be whole
_TRUNCATED = "replay truncated"
#: the longest pause between attach tries while the creating request is not registered yet
_ATTACH_BACKOFF = 0.1
#: how long the creating request alone is waited for before a stream is attached: most quick
#: predictions are answered by then, whole, and cost one request instead of two (0 s sleep on a
#: loaded 2-core machine, medians: 3.1-3.8 ms per prediction with it, 3.9-5.3 ms without)
FIRST_ATTACH_DELAY = 0.002

#: how an attempt ended: (predict_time if the worker reported one, whether it succeeded)
Outcome = tuple[float | None, bool]


class Retry(Exception):
    """This worker cannot take the prediction and nothing ran: try another (or, `busy`, the
    same one after its 409 back-off)."""

    def __init__(self, reason: str, busy: bool = False) -> None:
        super().__init__(reason)
        self.busy = busy


@dataclass(frozen=True)
class Limits:
    """The runner's patience: for the headers, between events, and with a dropping stream."""

    response_timeout: float = 30.0
    stream_timeout: float | None = None
    reattach_attempts: int = 3


class WorkerRun(RemoteRun):
    """One prediction's state across workers, attempts and re-attaches. Its remote id is ours,
    so re-attaching names the same prediction on the worker. `log_chars` counts the raw log
    text received (replays skip that much), `log_tail` ends it (to check the final logs begin
    with what was seen before filling in the rest)."""

    def __init__(self, p: Prediction) -> None:
        super().__init__(p)
        self.remote_id = f"rj-{p.id}-{secrets.token_hex(3)}"
        self.log_chars = 0
        self.log_tail = ""
        self.worker: Worker | None = None

    def metrics(self, predict_time: float | None) -> dict[str, Any]:
        """The worker's predict_time when it gave one, else our clock once it started."""
        m: dict[str, Any] = {}
        if predict_time is not None:
            m["predict_time"] = predict_time
        elif self.started:
            m["predict_time"] = round(self.p.elapsed, 6)
        w = self.worker
        if w is not None:
            if w.hardware:
                m["hardware"] = w.hardware
            m["worker"] = w.url
        return m

    def send_cancel(self) -> None:
        """`POST /predictions/{id}/cancel` on the worker running it; the worker's `completed`
        then closes the prediction. Still waiting for a worker: `Pool.acquire` sees the cancel."""
        w = self.worker
        if w is None:
            return
        self.cancel_sent = True
        try:
            w.client.cancel(self.remote_id, timeout=5.0)
        except BackendError as exc:
            self.p.emit(Log(text=f"{NOTE}cancel on {w.url} failed: {exc}\n"))

    def log_text(self, text: str) -> None:
        """Emit raw log text from the worker: relayed progress/previews as their events, the
        rest as a Log."""
        if not text:
            return
        self.log_chars += len(text)
        self.log_tail = (self.log_tail + text)[-64:]
        relayed, text = parse_relayed(text)
        for event in relayed:
            if self.p.cancel_event.is_set():
                break
            self.p.emit(event)
        if text:
            self.p.emit(Log(text=text))

    def missed_logs(self, logs: Any) -> str:
        """The part of the final `logs` no event carried ('' when it does not begin with what was seen)."""
        if not isinstance(logs, str) or len(logs) <= self.log_chars:
            return ""
        seen_end = logs[max(0, self.log_chars - len(self.log_tail)):self.log_chars]
        return logs[self.log_chars:] if seen_end == self.log_tail else ""


class Attempt:
    """Run `run` on worker `w` to a final state (`run()`), or raise Retry when nothing ran there."""

    def __init__(self, pool: Pool, w: Worker, run: WorkerRun, limits: Limits) -> None:
        self.pool = pool
        self.w = w
        self.run_ = run
        self.limits = limits
        self.gap: str | None = None  # why the current stream ended early (coglet's `error` event)
        self.attached = False  # a stream replayed it from its start: no `start` seen means it never started

    def run(self, payload: Any) -> Outcome:
        w, run, client = self.w, self.run_, self.w.client
        if not streams(w.schema):
            return self._run_sync(client, payload)
        created = client.start_blocking(run.remote_id, payload)
        attaches = tries = 0
        if FIRST_ATTACH_DELAY and created.wait(FIRST_ATTACH_DELAY):
            return self._answered(created)
        while True:
            if created.done:
                return self._answered(created)
            try:
                resp = client.open_stream(run.remote_id, REATTACH_PROBE, self.limits.response_timeout,
                                          self.limits.stream_timeout)
            except BackendTimeout as exc:
                return self._no_answer(exc)
            except BackendError as exc:  # the creating request knows whether anything ran
                if created.wait(self.limits.response_timeout):
                    return self._answered(created)
                return self._dead(exc) if run.started else self._no_answer(exc)
            if resp.status_code != 200:
                _read_quietly(resp)
                if resp.status_code == 406:  # schema changed under us: the blocking PUT is all there is
                    w.schema = dict(w.schema or {}, paths={})
                    created.wait()
                    return self._answered(created)
                # 422/404/409/503: not attached — not registered yet, refused, or already over
                if created.wait(min(0.002 * 2 ** tries, _ATTACH_BACKOFF)):
                    return self._answered(created)
                tries += 1
                continue
            error: BaseException | None = None
            self.gap, self.attached = None, True
            try:
                if run.p.cancel_event.is_set():
                    run.send_cancel()
                result = self._consume(resp.events())
                if result is not None:
                    return result
            except BackendError as exc:  # BackendTimeout too: nothing for stream_timeout
                error = exc
            finally:
                _close_quietly(resp)
            # the stream ended without `completed`: lagged, its replay truncated, or dropped
            attaches += 1
            why = self.gap or (f"dropped: {cause_name(error)}" if error is not None else "ended without a result")
            final = (self.gap is None and error is None and created.wait(1.0)) or attaches > self.limits.reattach_attempts
            if final or (self.gap is not None and _TRUNCATED in self.gap):
                run.p.emit(Log(text=f"{NOTE}stream from {w.url} {why}; the rest comes with the final state\n"))
                created.wait()
                return self._answered(created)
            run.p.emit(Log(text=f"{NOTE}stream from {w.url} {why}; re-attaching\n"))

    def _consume(self, events: Iterator[SSEEvent]) -> Outcome | None:
        """Events until `completed` (its outcome), or None when the stream ends without it
        (`gap` says why when coglet said: lagged, replay truncated)."""
        w, run = self.w, self.run_
        p = run.p
        iterator = is_iterator(p.schema)
        seen = 0  # raw log text of this stream so far: a replay repeats what run.log_chars counts
        for ev in events:
            data = ev.data if isinstance(ev.data, dict) else {}
            if ev.event == "start":
                run.start(w.hardware)
                if p.cancel_event.is_set():
                    run.send_cancel()
            elif ev.event == "output":
                idx = data.get("index")
                if iterator and isinstance(idx, int) and idx >= run.next_index:
                    run.start(w.hardware)
                    p.emit(Output(value=decode_output(data.get("chunk"), idx), index=idx))
                    run.next_index = idx + 1
            elif ev.event == "log":
                text = data.get("data") if data else (ev.data if isinstance(ev.data, str) else "")
                if text:
                    start, seen = seen, seen + len(text)
                    if seen > run.log_chars:
                        run.log_text(text[max(0, run.log_chars - start):])
            elif ev.event == "metric" and data.get("name") in ("batch_size", "batch_id"):
                p.emit(Metric(name=data["name"], value=data.get("value")))  # billed as a share while it runs
            elif ev.event == "error":
                detail = data.get("error") or ev.data
                skipped = data.get("skipped")
                self.gap = f"ended early ({detail}{f', {skipped} skipped' if skipped is not None else ''})"
            elif ev.event == "completed":
                return self._complete(data)
        return None

    def _complete(self, data: dict) -> Outcome:
        """The worker's final prediction → the outputs and logs no event carried, then Completed."""
        w, run = self.w, self.run_
        p = run.p
        status = data.get("status") or "failed"
        error = data.get("error")
        reported: dict[str, Any] = dict(data["metrics"]) if isinstance(data.get("metrics"), dict) else {}
        predict_time = reported.get("predict_time")
        share = reported.pop(SHARE_METRIC, None)  # a batch member: its share of the batch's device time
        if isinstance(share, (int, float)) and not isinstance(share, bool):
            predict_time = share
        run.log_text(run.missed_logs(data.get("logs")))
        crashed = status == "failed" and "crash" in str(error or "").lower()
        if status == "failed" and not crashed:
            # coglet words a dead predictor process several ways; the worker's health says it plainly
            try:
                crashed = w.client.health(2.0).get("status") not in ("READY", "BUSY")
            except (BackendError, ValueError):
                crashed = True
        if crashed:
            self.pool.mark(w, "UNHEALTHY", str(error))
            if not run.started and self.attached:
                # known not to have started (its stream, replayed from the start, had no `start`):
                # safe on another worker. A blocking PUT's answer alone cannot tell: not re-run.
                raise Retry(f"worker crashed before the prediction started: {error}")
            error = f"Worker {w.url} crashed mid-prediction ({error}); not re-run."
        elif status == "failed" and error:
            error = strip_prefix(str(error))
        run.start(w.hardware)
        output = data.get("output")
        broken = null_output_error(w.schema or p.schema or {}, data)
        if broken is not None:
            status, error = "failed", f"{broken} (worker {w.url} reported it succeeded)"
        if status == "succeeded":
            if is_iterator(p.schema):
                run.emit_items(output, decode_output)  # items we never saw as events
            else:
                p.emit(Output(value=decode_output(output), index=None))
        if status == "canceled":
            error = p.cancel_reason or error
        metrics = {k: v for k, v in reported.items() if k != "predict_time"}  # what the predictor recorded
        metrics.update(run.metrics(round(float(predict_time), 6) if predict_time is not None else None))
        ran = data.get("version")
        if isinstance(ran, str) and ran and ran != p.version:
            p.version = ran
        p.emit(Completed(status=status, error=error, metrics=metrics))
        return predict_time, status == "succeeded"

    def _answered(self, created: PendingAnswer) -> Outcome:
        """The creating request's answer: the final state, a refusal (Retry when nothing ran), or
        the connection it lost."""
        w, run = self.w, self.run_
        if created.response is not None:
            return self._settle(created.response)
        exc = created.error
        if isinstance(exc, BackendTimeout):
            return self._no_answer(exc)
        if run.p.cancel_event.is_set() and run.cancel_sent:
            run.p.emit(Completed(status="canceled", error=run.p.cancel_reason, metrics=run.metrics(None)))
            return None, False
        try:
            w.client.health(2.0)
        except (BackendError, ValueError):
            if run.started:
                return self._dead(exc)
            self.pool.mark(w, "UNREACHABLE", str(exc))
            raise Retry(f"connection lost before start: {cause_name(exc)}") from None
        return self._lost(f"the request that created it dropped ({cause_name(exc)})")

    def _settle(self, resp: CogResponse) -> Outcome:
        """A blocking PUT's answer: 409/503 → Retry (nothing ran), 422 → failed naming the
        worker's reasons, else the final prediction."""
        w = self.w
        if resp.status_code == 409:
            raise Retry("409 at capacity", busy=True)
        if resp.status_code == 503:
            self.pool.mark(w, "STARTING")
            raise Retry("503 not ready", busy=True)
        if resp.status_code == 422:
            return self._complete({"status": "failed", "error": f"{w.url} rejected the input: {resp.error_text()}"})
        try:
            data = resp.json()
        except (ValueError, BackendError):
            data = None
        if not isinstance(data, dict) or "status" not in data:
            data = {"status": "failed", "error": f"{w.url} answered {resp.status_code}: {resp.error_text()}"}
        return self._complete(data)

    def _run_sync(self, client: CogClient, payload: Any) -> Outcome:
        """A worker that does not stream (schema without x-cog-streaming): one blocking PUT."""
        w, run = self.w, self.run_
        try:
            resp = client.predict_sync(run.remote_id, payload, self.limits.stream_timeout)
        except BackendTimeout as exc:
            return self._no_answer(exc)
        except BackendError as exc:
            self.pool.mark(w, "UNREACHABLE", str(exc))
            raise Retry(str(exc)) from None
        return self._settle(resp)

    # ----- ways to end ---------------------------------------------------------------------
    def _no_answer(self, exc: BaseException) -> Outcome:
        w, run, limit = self.w, self.run_, self.limits.response_timeout
        err = BackendTimeout(
            f"Worker {w.url} did not answer within {limit:g}s ({cause_name(exc)}); "
            "the prediction was not run elsewhere because the worker may have started it. "
            "Raise the limit with %replicate use workers --response-timeout S.", url=w.url, tried=[w.url])
        self.pool.mark(w, "UNREACHABLE", f"no answer within {limit:g}s")
        if run.started:
            run.send_cancel()
        run.p.emit(Completed(status="failed", error=str(err), metrics=run.metrics(None)))
        return None, False

    def _dead(self, exc: BaseException | None) -> Outcome:
        w, run = self.w, self.run_
        self.pool.mark(w, "UNREACHABLE", str(exc) if exc is not None else "connection lost")
        run.p.emit(Completed(status="failed", metrics=run.metrics(None), error=(
            f"Worker {w.url} went away mid-prediction ({cause_name(exc)}); not re-run.")))
        return None, False

    def _lost(self, why: str) -> Outcome:
        w, run = self.w, self.run_
        run.p.emit(Completed(status="failed", metrics=run.metrics(None), error=(
            f"The connection to worker {w.url} dropped mid-prediction ({why}; coglet cancels a prediction whose "
            "creating request drops); not re-run.")))
        return None, False


def _read_quietly(resp: CogResponse) -> None:
    """Read a short refusal, so its connection goes back to the pool (gone either way on error)."""
    try:
        resp.read()
    except BackendError:
        pass


def _close_quietly(resp: CogResponse) -> None:
    try:
        resp.close()
    except BackendError:
        pass  # the connection is gone either way

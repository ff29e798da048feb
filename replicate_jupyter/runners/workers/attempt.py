"""One prediction on one worker: the SSE stream turned into events, re-attaching when it drops,
and every way that try can end.

The runner (`workers/runner.py`) picks the worker and decides what to do next; an `Attempt`
runs the prediction there to a final state — emitting Started, Output, Log and exactly one
Completed — or raises `Retry` when the worker could not take it and nothing ran, so the runner
can try another worker without anything running twice.

coglet's events become ours: start → Started, output → Output (iterator items by index, so
replayed events after a re-attach are dropped), log → Log (with the progress and previews a
predictor relays through its output: `context.parse_relayed`), completed → the final outputs
and Completed with predict_time and the worker's hardware.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

from replicate_jupyter.errors import BackendError, BackendTimeout
from replicate_jupyter.prediction.events import Completed, Log, Output
from replicate_jupyter.runners.context import parse_relayed
from replicate_jupyter.runners.http import cause_name
from replicate_jupyter.runners.remote import RemoteRun, is_iterator
from replicate_jupyter.runners.sse import SSEEvent
from replicate_jupyter.runners.workers.cog_client import REATTACH_PROBE, CogClient
from replicate_jupyter.runners.workers.wire import decode_output, streams, strip_prefix
from replicate_jupyter.runners.workers.worker_pool import Pool, Worker

if TYPE_CHECKING:
    from replicate_jupyter.prediction.prediction import Prediction

__all__ = ["Attempt", "Limits", "Retry", "WorkerRun"]

NOTE = "[replicate-jupyter] "

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
    so re-attaching names the same prediction on the worker."""

    def __init__(self, p: Prediction) -> None:
        super().__init__(p)
        self.remote_id = f"rj-{p.id}-{secrets.token_hex(3)}"
        self.saw_logs = False
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


class Attempt:
    """Run `run` on worker `w` to a final state (`run()`), or raise Retry when nothing ran there."""

    def __init__(self, pool: Pool, w: Worker, run: WorkerRun, limits: Limits) -> None:
        self.pool = pool
        self.w = w
        self.run_ = run
        self.limits = limits

    def run(self, payload: Any) -> Outcome:
        w, run, client = self.w, self.run_, self.w.client
        if not streams(w.schema):
            return self._run_sync(client, payload)
        attempts = 0
        body: Any = payload
        while True:
            error: BaseException | None = None
            try:
                resp = client.open_stream(run.remote_id, body, self.limits.response_timeout, self.limits.stream_timeout)
            except BackendTimeout as exc:
                return self._no_answer(exc)
            except BackendError as exc:
                if run.started:
                    return self._dead(exc)
                self.pool.mark(w, "UNREACHABLE", str(exc))
                raise Retry(str(exc)) from None
            try:
                if resp.status_code != 200:
                    resp.read()  # a short JSON answer: read, its connection stays in the pool
                if body is REATTACH_PROBE and resp.status_code in (409, 422, 404):
                    return self._lost("the worker no longer holds it")
                if resp.status_code == 409:
                    raise Retry("409 at capacity", busy=True)
                if resp.status_code == 503:
                    self.pool.mark(w, "STARTING")
                    raise Retry("503 not ready", busy=True)
                if resp.status_code == 406:  # schema changed under us: fall back to one blocking call
                    w.schema = dict(w.schema or {}, paths={})
                    return self._run_sync(client, payload)
                if resp.status_code != 200:
                    run.p.emit(Completed(status="failed", metrics=run.metrics(None),
                                         error=f"{w.url} refused the prediction ({resp.status_code}): {resp.error_text()}"))
                    return None, False
                if run.p.cancel_event.is_set():
                    run.send_cancel()
                result = self._consume(resp.events())
                if result is not None:
                    return result
            except BackendTimeout as exc:
                if not run.started:
                    return self._no_answer(exc)
                error = exc
            except BackendError as exc:
                error = exc
            finally:
                try:
                    resp.close()
                except BackendError:
                    pass  # the connection is gone either way
            # the stream ended without `completed`, or broke
            if run.p.cancel_event.is_set() and run.cancel_sent:
                run.p.emit(Completed(status="canceled", error=run.p.cancel_reason, metrics=run.metrics(None)))
                return None, False
            why = cause_name(error) if error is not None else "stream ended"
            try:
                client.health(2.0)
            except (BackendError, ValueError):
                if run.started:
                    return self._dead(error)
                self.pool.mark(w, "UNREACHABLE", str(error) if error is not None else "stream ended")
                raise Retry(f"connection lost before start: {why}") from None
            attempts += 1
            if attempts > self.limits.reattach_attempts:
                return self._lost(f"the stream kept dropping ({why if error is not None else 'ended early'})")
            run.p.emit(Log(text=f"{NOTE}stream from {w.url} dropped "
                                f"({why if error is not None else 'ended without a result'}); re-attaching\n"))
            body = REATTACH_PROBE

    def _consume(self, events: Iterator[SSEEvent]) -> Outcome | None:
        """Events until `completed` (its outcome), or None when the stream ends without it."""
        w, run = self.w, self.run_
        p = run.p
        iterator = is_iterator(p.schema)
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
                    run.saw_logs = True
                    relayed, text = parse_relayed(text)
                    for event in relayed:
                        if p.cancel_event.is_set():
                            break
                        p.emit(event)
                    if text:
                        p.emit(Log(text=text))
            elif ev.event == "completed":
                return self._complete(data)
        return None

    def _complete(self, data: dict) -> Outcome:
        """The worker's final prediction → the outputs no event carried, then Completed."""
        w, run = self.w, self.run_
        p = run.p
        status = data.get("status") or "failed"
        error = data.get("error")
        predict_time = (data.get("metrics") or {}).get("predict_time")
        if not run.saw_logs and data.get("logs"):
            logs = parse_relayed(data["logs"])[1]
            if logs:
                p.emit(Log(text=logs))
        crashed = status == "failed" and "crash" in str(error or "").lower()
        if status == "failed" and not crashed:
            # coglet words a dead predictor process several ways; the worker's health says it plainly
            try:
                crashed = w.client.health(2.0).get("status") not in ("READY", "BUSY")
            except (BackendError, ValueError):
                crashed = True
        if crashed:
            self.pool.mark(w, "UNHEALTHY", str(error))
            if not run.started:
                raise Retry(f"worker crashed before the prediction started: {error}")
            error = f"Worker {w.url} crashed mid-prediction ({error}); not re-run."
        elif status == "failed" and error:
            error = strip_prefix(str(error))
        run.start(w.hardware)
        output = data.get("output")
        if status == "succeeded":
            if is_iterator(p.schema):
                run.emit_items(output, decode_output)  # items we never saw as events
            else:
                p.emit(Output(value=decode_output(output), index=None))
        if status == "canceled":
            error = p.cancel_reason or error
        metrics = run.metrics(round(float(predict_time), 6) if predict_time is not None else None)
        p.emit(Completed(status=status, error=error, metrics=metrics))
        return predict_time, status == "succeeded"

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
        if resp.status_code == 409:
            raise Retry("409 at capacity", busy=True)
        if resp.status_code == 503:
            raise Retry("503 not ready", busy=True)
        try:
            data = resp.json()
        except ValueError:
            data = {"status": "failed", "error": resp.text[:500]}
        if resp.status_code == 422:
            data = {"status": "failed", "error": f"{w.url} rejected the input: {resp.error_text()}"}
        return self._complete(data)

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
        if not run.started:
            raise Retry(f"stream lost before start; {why}")
        run.p.emit(Completed(status="failed", metrics=run.metrics(None), error=(
            f"The connection to worker {w.url} dropped mid-prediction and could not be re-attached ({why}; "
            "coglet cancels a prediction whose stream drops); not re-run.")))
        return None, False

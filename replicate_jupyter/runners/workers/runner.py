"""The `workers` backend: predictions dispatched to a pool of Cog HTTP servers.

Each prediction goes to an idle worker serving its model, as one `PUT /predictions/{id}` with
`Accept: text/event-stream`, under an id of ours so that reconnecting names the same prediction
(`workers/attempt.py` runs it there). Where a prediction can end up:

- 409 (every slot busy) → the next idle worker; the prediction stays `starting` while it waits.
- the worker unreachable, refusing, or crashing *before* the prediction started → another
  worker; nothing ran, so nothing runs twice.
- the worker dies *after* it started (predictor process or whole server) → failed, naming the
  worker; never silently re-run.
- the stream drops or lags while the worker lives → re-attach (PUT with the same id and an input
  that cannot start a new run: see cog_client.REATTACH_PROBE), replayed events de-duplicated;
  what no stream carried comes from the final state (workers/attempt.py).
- no answer within `response_timeout` → failed with a BackendTimeout message naming the worker.
- cancel / kernel interrupt → `POST /predictions/{id}/cancel`; the worker's `completed` closes it.

A worker that batches (`replicate-jupyter serve` of a model declaring batching: its schema's
`x-rj-batching`) takes as many predictions at once as it may batch, and the pool sends the
compatible members of a sweep to the worker already running their batch key (wire.batch_key),
so they meet in one batch there; each is still its own prediction, stream, cancel and cost
(the worker reports its share of the batch's device time: attempt.py).
"""
from __future__ import annotations

import difflib
import threading
from typing import TYPE_CHECKING, Any

from replicate_jupyter.errors import BackendError, ModelNotFound
from replicate_jupyter.prediction.events import Completed, Log
from replicate_jupyter.runners.base import ModelHandle, Runner
from replicate_jupyter.runners.remote import RunTable
from replicate_jupyter.runners.workers.attempt import Attempt, Limits, Retry, WorkerRun
from replicate_jupyter.runners.workers.wire import batch_key, decode_output, encode_input
from replicate_jupyter.runners.workers.worker_pool import Pool

if TYPE_CHECKING:
    from replicate_jupyter.prediction.prediction import Prediction

__all__ = ["WorkersRunner", "pool", "encode_input", "decode_output"]

NOTE = "[replicate-jupyter] "

_pool: Pool | None = None
_pool_lock = threading.Lock()


def pool() -> Pool:
    """The process-wide pool (`rj.workers`): one per kernel, so every runner and the user's
    `rj.workers.add(url)` see the same machines."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = Pool()
        return _pool


class WorkersRunner(Runner):
    """Predictions on the pool's workers. Options (`%replicate use workers --opt v`):
    response_timeout (s to wait for a worker's answer), connect_timeout, stream_timeout (s
    between events; None: no limit), unavailable_timeout (s with no live worker for the model
    before failing), reattach_attempts (a dropping stream re-attached this often)."""

    name = "workers"
    concurrent = True

    def __init__(self, response_timeout: float = 30.0, connect_timeout: float = 3.0,
                 stream_timeout: float | None = None, unavailable_timeout: float = 30.0,
                 reattach_attempts: int = 3) -> None:
        self.response_timeout = response_timeout
        self.connect_timeout = connect_timeout
        self.stream_timeout = stream_timeout
        self.unavailable_timeout = unavailable_timeout
        self.reattach_attempts = reattach_attempts
        self.limits = Limits(response_timeout, stream_timeout, reattach_attempts)
        self.pool = pool()
        self._runs: RunTable[WorkerRun] = RunTable()

    # ----- models --------------------------------------------------------------------------
    def resolve(self, ref: Any) -> ModelHandle:
        if isinstance(ref, ModelHandle):
            ref = ref.name
        if not isinstance(ref, str):
            raise ModelNotFound(repr(ref), backend="workers",
                                detail="the workers backend takes model names (owner/name) served by its workers")
        workers = self.pool.workers()
        if not workers:
            raise ModelNotFound(ref, backend="workers",
                                detail="the pool has no workers — start one with `replicate-jupyter serve PREDICTOR "
                                       "--port N` and add it with rj.workers.add('http://host:N')")
        serving = [w for w in workers if w.model == ref and w.schema is not None]
        if not serving and any(w.schema is None or not w.alive for w in workers):
            self.pool.refresh()  # a worker may just have come up
            serving = [w for w in self.pool.workers() if w.model == ref and w.schema is not None]
        if serving:
            best = next((w for w in serving if w.alive), None)
            if best is None:
                raise BackendError(
                    f"No worker serving {ref} is reachable: "
                    + "; ".join(f"{w.url} ({w.status}{': ' + w.last_error if w.last_error else ''})" for w in serving),
                    url=serving[0].url, tried=[w.url for w in serving])
            return ModelHandle(name=ref, version=best.version, schema=best.schema or {},
                               description=((best.schema or {}).get("info") or {}).get("description", ""),
                               extra={"workers": [w.url for w in serving]})
        known = sorted({w.model for w in self.pool.workers() if w.model})
        unreachable = [w for w in self.pool.workers() if w.schema is None]
        if not known and unreachable:
            raise BackendError("No worker in the pool is reachable: "
                               + "; ".join(f"{w.url} ({w.last_error or w.status})" for w in unreachable),
                               url=unreachable[0].url, tried=[w.url for w in unreachable])
        detail = f"no worker serves it (served: {', '.join(known) or 'nothing yet'})"
        if unreachable:
            detail += f"; unreachable: {', '.join(w.url for w in unreachable)}"
        raise ModelNotFound(ref, suggestions=difflib.get_close_matches(ref, known, n=3, cutoff=0.4),
                            backend="workers", detail=detail)

    def models(self) -> list[ModelHandle]:
        out: dict[str, ModelHandle] = {}
        for w in self.pool.workers():
            if w.model and w.schema is not None:
                h = out.setdefault(w.model, ModelHandle(name=w.model, version=w.version, schema=w.schema,
                                                        extra={"workers": []}))
                h.extra["workers"].append(w.url)
        return list(out.values())

    # ----- running -------------------------------------------------------------------------
    def execute(self, p: Prediction) -> None:
        with self._runs.track(p.id, WorkerRun(p)) as run:
            try:
                self._dispatch(run)
            except KeyboardInterrupt:
                run.send_cancel()
                if not p.done:
                    p.emit(Completed(status="canceled", error=p.cancel_reason, metrics=run.metrics(None)))
                raise

    def _dispatch(self, run: WorkerRun) -> None:
        """Worker after worker until the prediction reaches a final state: a busy one after its
        back-off, one that could not take it (nothing ran) excluded until every one has failed."""
        p = run.p
        payload = encode_input(p.input)
        key = batch_key(p.schema, p.input)  # a batching model: compatible members go to one worker
        tried: list[str] = []
        excluded: set[str] = set()
        while not p.done:
            try:
                w = self.pool.acquire(p.model, p.cancel_event, exclude=excluded,
                                      unavailable_timeout=self.unavailable_timeout, key=key)
            except BackendError as exc:
                msg = str(exc)
                if tried:
                    msg += f" (tried: {', '.join(tried)})"
                p.emit(Completed(status="failed", error=msg, metrics=run.metrics(None)))
                return
            if w is None:  # canceled while waiting for a worker
                p.emit(Completed(status="canceled", error=p.cancel_reason, metrics={"predict_time": 0.0}))
                return
            run.worker = w
            if w.url not in tried:
                tried.append(w.url)
            ok = None
            predict_time = None
            try:
                predict_time, ok = Attempt(self.pool, w, run, self.limits).run(payload)
            except KeyboardInterrupt:
                run.send_cancel()  # while the worker is known: its creating request stays open, so say it
                raise
            except Retry as r:
                if r.busy:
                    self.pool.backoff(w)
                else:
                    excluded.add(w.url)
                    p.emit(Log(text=f"{NOTE}{w.url} could not take the prediction ({r}); trying another worker\n"))
                    if len(excluded) >= len(self.pool.serving(p.model)):
                        excluded.clear()  # every one failed once: wait for any to come back
            finally:
                run.worker = None if not p.done else run.worker
                self.pool.release(w, predict_time, ok, key=key)

    # ----- cancel --------------------------------------------------------------------------
    def cancel(self, p: Prediction) -> None:
        run = self._runs.get(p.id)
        if run is not None:
            run.send_cancel()

    def close(self) -> None:
        """The pool outlives a runner (it is the kernel's); nothing to release here."""

"""The `workers` backend: predictions dispatched to a pool of Cog HTTP servers.

Each prediction goes to an idle worker serving its model, as one `PUT /predictions/{id}` with
`Accept: text/event-stream`, under an id of ours so that reconnecting names the same prediction.
coglet's events become ours (start → Started, output → Output, log → Log, completed →
Completed with predict_time and the worker's hardware). Where a prediction can end up:

- 409 (every slot busy) → the next idle worker; the prediction stays `starting` while it waits.
- the worker unreachable, refusing, or crashing *before* the prediction started → another
  worker; nothing ran, so nothing runs twice.
- the worker dies *after* it started (predictor process or whole server) → failed, naming the
  worker; never silently re-run.
- the stream drops while the worker lives → re-attach (PUT with the same id and an input that
  cannot start a new run: see cog_client.REATTACH_PROBE), replayed events de-duplicated by index.
- no answer within `response_timeout` → failed with a BackendTimeout message naming the worker.
- cancel / kernel interrupt → `POST /predictions/{id}/cancel`; the worker's `completed` closes it.
"""
from __future__ import annotations

import difflib
import secrets
import threading
from typing import Any, Iterator

import httpx

from replicate_jupyter.errors import BackendError, BackendTimeout, ModelNotFound
from replicate_jupyter.prediction.events import Completed, Log, Output, Started
from replicate_jupyter.runners.context import parse_relayed
from replicate_jupyter.prediction.files import FileOutput, InputFile
from replicate_jupyter.runners.base import ModelHandle, Runner
from replicate_jupyter.runners.workers.cog_client import REATTACH_PROBE, CogClient
from replicate_jupyter.runners.workers.pool import Pool, Worker
from replicate_jupyter.runners.sse import SSEEvent

__all__ = ["WorkersRunner", "pool", "encode_input", "decode_output"]

_pool: Pool | None = None
_pool_lock = threading.Lock()


def pool() -> Pool:
    """The process-wide pool (`rj.workers`)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = Pool()
        return _pool


# ----- values across the wire ------------------------------------------------------------------
def encode_input(value: Any) -> Any:
    """Validated input → JSON for Cog: files as data URIs, secrets as their value."""
    if isinstance(value, InputFile):
        return value.as_data_uri()
    if isinstance(value, dict):
        return {k: encode_input(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode_input(v) for v in value]
    if hasattr(value, "get_secret_value"):
        return value.get_secret_value()
    return value


def decode_output(value: Any, index: int | None = None) -> Any:
    """Cog output JSON → our values: data URIs become FileOutput (named out-<i>)."""
    if isinstance(value, str) and value.startswith("data:") and "," in value[:200]:
        try:
            return FileOutput.from_data_uri(value, name=f"output-{index or 0}")
        except ValueError:
            return value
    if isinstance(value, list):
        return [decode_output(v, i) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: decode_output(v) for k, v in value.items()}
    return value


def _is_iterator(schema: dict | None) -> bool:
    out = ((schema or {}).get("components") or {}).get("schemas", {}).get("Output", {})
    return out.get("x-cog-array-type") == "iterator"


def _streams(schema: dict | None) -> bool:
    post = ((schema or {}).get("paths") or {}).get("/predictions", {}).get("post", {})
    return bool(post.get("x-cog-streaming"))


class _Retry(Exception):
    """This worker cannot take the prediction and nothing ran: try another."""

    def __init__(self, reason: str, busy: bool = False) -> None:
        super().__init__(reason)
        self.busy = busy


class _Run:
    """One prediction's state across attempts and re-attaches."""

    def __init__(self, p) -> None:
        self.p = p
        self.remote_id = f"rj-{p.id}-{secrets.token_hex(3)}"
        self.started = False
        self.next_index = 0
        self.saw_logs = False
        self.worker: Worker | None = None
        self.response: httpx.Response | None = None
        self.cancel_sent = False


class WorkersRunner(Runner):
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
        self.pool = pool()
        self._runs: dict[str, _Run] = {}
        self._lock = threading.Lock()
        self._clients: dict[str, CogClient] = {}

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
            return ModelHandle(name=ref, version=best.version, schema=best.schema,
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
    def execute(self, p) -> None:
        run = _Run(p)
        with self._lock:
            self._runs[p.id] = run
        try:
            self._execute(run)
        except KeyboardInterrupt:
            self._send_cancel(run)
            if not p.done:
                p.emit(Completed(status="canceled", error=p.cancel_reason, metrics=self._metrics(run, None)))
            raise
        finally:
            with self._lock:
                self._runs.pop(p.id, None)

    def _execute(self, run: _Run) -> None:
        p = run.p
        payload = encode_input(p.input)
        tried: list[str] = []
        excluded: set[str] = set()
        while not p.done:
            try:
                w = self.pool.acquire(p.model, p.cancel_event, exclude=excluded,
                                      unavailable_timeout=self.unavailable_timeout)
            except BackendError as exc:
                msg = str(exc)
                if tried:
                    msg += f" (tried: {', '.join(tried)})"
                p.emit(Completed(status="failed", error=msg, metrics=self._metrics(run, None)))
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
                predict_time, ok = self._run_on(w, run, payload)
            except _Retry as r:
                if r.busy:
                    self.pool.backoff(w)
                else:
                    excluded.add(w.url)
                    p.emit(Log(text=f"[replicate-jupyter] {w.url} could not take the prediction ({r}); trying another worker\n"))
                    if len(excluded) >= len(self.pool.serving(p.model)):
                        excluded.clear()  # every one failed once: wait for any to come back
            finally:
                run.worker = None if not p.done else run.worker
                self.pool.release(w, predict_time, ok)

    def _metrics(self, run: _Run, predict_time: float | None) -> dict[str, Any]:
        m: dict[str, Any] = {}
        if predict_time is not None:
            m["predict_time"] = predict_time
        elif run.started:
            m["predict_time"] = round(run.p.elapsed, 6)
        hw = run.worker.hardware if run.worker else None
        if hw:
            m["hardware"] = hw
        if run.worker is not None:
            m["worker"] = run.worker.url
        return m

    def _client(self, w: Worker) -> CogClient:
        return w.client

    def _run_on(self, w: Worker, run: _Run, payload: Any) -> tuple[float | None, bool]:
        """Run on one worker to a final state, or raise _Retry when nothing ran there."""
        client = self._client(w)
        if not _streams(w.schema):
            return self._run_sync(w, client, run, payload)
        attempts = 0
        body: Any = payload
        while True:
            error: BaseException | None = None
            try:
                resp = client.open_stream(run.remote_id, body, self.response_timeout, self.stream_timeout)
            except httpx.TimeoutException as exc:
                return self._no_answer(w, run, exc)
            except httpx.TransportError as exc:
                if run.started:
                    return self._dead(w, run, exc)
                self.pool.mark(w, "UNREACHABLE", f"{type(exc).__name__}: {exc}")
                raise _Retry(f"{type(exc).__name__}: {exc}") from None
            try:
                if resp.status_code != 200:
                    resp.read()  # a short JSON answer: read, its connection stays in the pool
                if body is REATTACH_PROBE and resp.status_code in (409, 422, 404):
                    return self._lost(w, run, "the worker no longer holds it")
                if resp.status_code == 409:
                    raise _Retry("409 at capacity", busy=True)
                if resp.status_code == 503:
                    self.pool.mark(w, "STARTING")
                    raise _Retry("503 not ready", busy=True)
                if resp.status_code == 406:  # schema changed under us: fall back to one blocking call
                    w.schema = dict(w.schema or {}, paths={})
                    return self._run_sync(w, client, run, payload)
                if resp.status_code != 200:
                    msg = _error_text(resp)
                    run.p.emit(Completed(status="failed", error=f"{w.url} refused the prediction ({resp.status_code}): {msg}",
                                         metrics=self._metrics(run, None)))
                    return None, False
                run.response = resp
                if run.p.cancel_event.is_set():
                    self._send_cancel(run)
                events = client.iter_events(resp)
                result = self._consume(w, run, events)
                if result is not None:
                    return result
            except httpx.TimeoutException as exc:
                if not run.started:
                    return self._no_answer(w, run, exc)
                error = exc
            except httpx.TransportError as exc:
                error = exc
            finally:
                run.response = None
                resp.close()
            # the stream ended without `completed`, or broke
            if run.p.cancel_event.is_set() and run.cancel_sent:
                run.p.emit(Completed(status="canceled", error=run.p.cancel_reason, metrics=self._metrics(run, None)))
                return None, False
            try:
                client.health(2.0)
            except (httpx.HTTPError, ValueError):
                if run.started:
                    return self._dead(w, run, error)
                self.pool.mark(w, "UNREACHABLE", f"{type(error).__name__}: {error}")
                raise _Retry(f"connection lost before start: {type(error).__name__ if error else 'stream ended'}") from None
            attempts += 1
            if attempts > self.reattach_attempts:
                return self._lost(w, run, f"the stream kept dropping ({type(error).__name__ if error else 'ended early'})")
            run.p.emit(Log(text=f"[replicate-jupyter] stream from {w.url} dropped "
                                f"({type(error).__name__ if error else 'ended without a result'}); re-attaching\n"))
            body = REATTACH_PROBE

    def _consume(self, w: Worker, run: _Run, events: Iterator[SSEEvent]) -> tuple[float | None, bool] | None:
        p = run.p
        iterator = _is_iterator(p.schema)
        for ev in events:
            data = ev.data if isinstance(ev.data, dict) else {}
            if ev.event == "start":
                if not run.started:
                    run.started = True
                    p.emit(Started(hardware=w.hardware))
                if p.cancel_event.is_set():
                    self._send_cancel(run)
            elif ev.event == "output":
                idx = data.get("index")
                if iterator and isinstance(idx, int) and idx >= run.next_index:
                    if not run.started:
                        run.started = True
                        p.emit(Started(hardware=w.hardware))
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
                return self._complete(w, run, data)
        return None

    def _complete(self, w: Worker, run: _Run, data: dict) -> tuple[float | None, bool]:
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
            except (httpx.HTTPError, ValueError):
                crashed = True
        if crashed:
            self.pool.mark(w, "UNHEALTHY", str(error))
            if not run.started:
                raise _Retry(f"worker crashed before the prediction started: {error}")
            error = f"Worker {w.url} crashed mid-prediction ({error}); not re-run."
        elif status == "failed" and error:
            error = _strip_prefix(str(error))
        if not run.started:
            run.started = True
            p.emit(Started(hardware=w.hardware))
        output = data.get("output")
        if status == "succeeded":
            if _is_iterator(p.schema):
                items = output if isinstance(output, list) else []
                for i in range(run.next_index, len(items)):  # events we never saw
                    p.emit(Output(value=decode_output(items[i], i), index=i))
                run.next_index = max(run.next_index, len(items))
            else:
                p.emit(Output(value=decode_output(output), index=None))
        if status == "canceled":
            error = p.cancel_reason or error
        metrics = self._metrics(run, round(float(predict_time), 6) if predict_time is not None else None)
        p.emit(Completed(status=status, error=error, metrics=metrics))
        return predict_time, status == "succeeded"

    def _run_sync(self, w: Worker, client: CogClient, run: _Run, payload: Any) -> tuple[float | None, bool]:
        """A worker that does not stream (schema without x-cog-streaming): one blocking PUT."""
        try:
            resp = client.predict_sync(run.remote_id, payload, self.stream_timeout)
        except httpx.TimeoutException as exc:
            return self._no_answer(w, run, exc)
        except httpx.TransportError as exc:
            self.pool.mark(w, "UNREACHABLE", str(exc))
            raise _Retry(f"{type(exc).__name__}: {exc}") from None
        if resp.status_code == 409:
            raise _Retry("409 at capacity", busy=True)
        if resp.status_code == 503:
            raise _Retry("503 not ready", busy=True)
        try:
            data = resp.json()
        except ValueError:
            data = {"status": "failed", "error": resp.text[:500]}
        if resp.status_code == 422:
            data = {"status": "failed", "error": f"{w.url} rejected the input: {_error_text(resp)}"}
        return self._complete(w, run, data)

    # ----- ways to end ---------------------------------------------------------------------
    def _no_answer(self, w: Worker, run: _Run, exc: BaseException) -> tuple[None, bool]:
        err = BackendTimeout(
            f"Worker {w.url} did not answer within {self.response_timeout:g}s ({type(exc).__name__}); "
            "the prediction was not run elsewhere because the worker may have started it. "
            "Raise the limit with %replicate use workers --response-timeout S.", url=w.url, tried=[w.url])
        self.pool.mark(w, "UNREACHABLE", f"no answer within {self.response_timeout:g}s")
        if run.started:
            self._send_cancel(run)
        run.p.emit(Completed(status="failed", error=str(err), metrics=self._metrics(run, None)))
        return None, False

    def _dead(self, w: Worker, run: _Run, exc: BaseException | None) -> tuple[None, bool]:
        self.pool.mark(w, "UNREACHABLE", f"{type(exc).__name__}: {exc}" if exc else "connection lost")
        run.p.emit(Completed(status="failed", metrics=self._metrics(run, None), error=(
            f"Worker {w.url} went away mid-prediction ({type(exc).__name__ if exc else 'connection lost'}); "
            "not re-run.")))
        return None, False

    def _lost(self, w: Worker, run: _Run, why: str) -> tuple[float | None, bool]:
        if not run.started:
            raise _Retry(f"stream lost before start; {why}")
        run.p.emit(Completed(status="failed", metrics=self._metrics(run, None), error=(
            f"The connection to worker {w.url} dropped mid-prediction and could not be re-attached ({why}; "
            "coglet cancels a prediction whose stream drops); not re-run.")))
        return None, False

    # ----- cancel --------------------------------------------------------------------------
    def cancel(self, p) -> None:
        with self._lock:
            run = self._runs.get(p.id)
        if run is not None:
            self._send_cancel(run)

    def _send_cancel(self, run: _Run) -> None:
        w = run.worker
        if w is None:
            return  # still waiting for a worker: acquire() sees the cancel event
        run.cancel_sent = True
        try:
            w.client.cancel(run.remote_id, timeout=5.0)
        except httpx.HTTPError as exc:
            run.p.emit(Log(text=f"[replicate-jupyter] cancel on {w.url} failed: {exc}\n"))

    def close(self) -> None:
        """The pool outlives a runner (it is the kernel's); nothing to release here."""


def _error_text(resp: httpx.Response) -> str:
    try:
        data = resp.json()
    except ValueError:
        return resp.text[:300]
    if isinstance(data, dict):
        if isinstance(data.get("detail"), list):
            return "; ".join(f"{'.'.join(str(x) for x in d.get('loc', [])[2:]) or 'input'}: {d.get('msg')}"
                             for d in data["detail"] if isinstance(d, dict))
        return str(data.get("error") or data.get("detail") or data)
    return str(data)


def _strip_prefix(error: str) -> str:
    """coglet says 'Prediction failed: Prediction failed: ValueError: …'; keep the model's words."""
    while error.startswith("Prediction failed: "):
        error = error[len("Prediction failed: "):]
    return error

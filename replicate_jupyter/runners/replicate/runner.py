"""The `replicate` backend: Replicate's cloud through its HTTP API, with the user's token.

A prediction is created with `stream: true`, then followed on its `urls.stream` (SSE): `output`
events become Output chunks for iterator models, `logs` become Log events, `done` ends it. The
final prediction is then fetched, and every output file is downloaded and embedded as a
`FileOutput` *before* Completed is emitted, because Replicate deletes outputs after an hour and a
saved notebook must keep showing them. A model without a stream URL is polled instead.

- Started: when Replicate reports `processing` (a light poll while `starting`) or at the first
  streamed event, whichever comes first.
- Metrics: `predict_time` from Replicate. Replicate does not say which hardware ran a model, so
  the SKU comes from the `hardware` option (one SKU, or a map model → SKU), else `default_hardware`
  (gpu-t4) with a log line saying so; cost = predict_time × that SKU's price.
- Files in: data URIs below `upload_threshold` bytes (256 KB), else `POST /v1/files` and its `urls.get`.
- Cancel / kernel interrupt: `POST /v1/predictions/{id}/cancel`; the run is then followed to
  Replicate's `canceled` state (its predict_time is what is billed).
- Errors: 401 → a BackendError telling the user to `%replicate login` (the token is never echoed);
  404 → ModelNotFound; unreachable → BackendError naming the URL; 422 at create → a failed
  prediction carrying Replicate's detail; a failed model → its error and logs.
"""
from __future__ import annotations

import difflib
import json
import os
import threading
import time
from typing import Any
from urllib.parse import unquote, urlparse

from replicate_jupyter.errors import BackendError, ModelNotFound
from replicate_jupyter.prediction.events import Completed, Log, Output, Started
from replicate_jupyter.prediction.files import FileOutput, InputFile, data_uri
from replicate_jupyter.runners.base import ModelHandle, Runner
from replicate_jupyter.runners.replicate.api import DEFAULT_BASE_URL, APIError, ReplicateAPI, scrub

__all__ = ["ReplicateRunner", "parse_ref"]

TERMINAL = ("succeeded", "failed", "canceled")
NOTE = "[replicate-jupyter] "

#: (base_url, ref) → ModelHandle, for the whole process: a version's schema never changes, and
#: resolving is on every run's path (a pinned `owner/name:version` is cached for good; a bare
#: `owner/name` keeps the latest version seen until the kernel restarts or `forget()` is called).
_HANDLES: dict[tuple[str, str], ModelHandle] = {}
_HANDLES_LOCK = threading.Lock()


def forget() -> None:
    """Drop the cached model versions (to pick up a newly pushed latest version)."""
    with _HANDLES_LOCK:
        _HANDLES.clear()


def parse_ref(ref: str) -> tuple[str, str, str | None]:
    """`owner/name` or `owner/name:version` → (owner, name, version)."""
    base, _, version = ref.partition(":")
    owner, _, name = base.partition("/")
    if not owner or not name or "/" in name or any(c.isspace() for c in ref):
        raise ModelNotFound(ref, backend="replicate",
                            detail="Replicate models are named owner/name or owner/name:version")
    return owner, name, version or None


def _output_schema(schema: dict | None) -> dict:
    return ((schema or {}).get("components") or {}).get("schemas", {}).get("Output", {}) or {}


def _is_iterator(schema: dict | None) -> bool:
    return _output_schema(schema).get("x-cog-array-type") == "iterator"


def _is_uri(s: dict | None) -> bool:
    return bool(s) and s.get("type") == "string" and s.get("format") == "uri"


class _Run:
    """One prediction's remote state."""

    def __init__(self, p) -> None:
        self.p = p
        self.remote: dict | None = None
        self.started = False
        self.next_index = 0
        self.logs = ""  # log text already emitted
        self.log_lines = 0
        self.lock = threading.Lock()
        self.finishing = False
        self.cancel_sent = False

    @property
    def id(self) -> str | None:
        return (self.remote or {}).get("id")


class ReplicateRunner(Runner):
    name = "replicate"
    concurrent = True

    def __init__(self, base_url: str | None = None, hardware: str | dict[str, str] | None = None,
                 default_hardware: str = "gpu-t4", upload_threshold: int = 256 * 1024,
                 poll_interval: float = 0.5, wait: float | None = None, timeout: float = 30.0,
                 token: Any = None, **unknown: Any) -> None:
        if token is not None:
            raise ValueError("The replicate backend never takes a token as an option (it would be kept in the "
                             "notebook): run %replicate login, or set REPLICATE_API_TOKEN.")
        if unknown:
            raise ValueError(f"Unknown option(s) for the replicate backend: {', '.join(sorted(unknown))} (options: "
                             "base_url, hardware, default_hardware, upload_threshold, poll_interval, wait, timeout)")
        self.base_url = (base_url or os.environ.get("REPLICATE_API_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.hardware = hardware
        self.default_hardware = default_hardware
        self.upload_threshold = int(upload_threshold)
        self.poll_interval = float(poll_interval)
        self.wait = float(wait) if wait else None
        self.api = ReplicateAPI(self.base_url, timeout=float(timeout))
        self._runs: dict[str, _Run] = {}
        self._lock = threading.Lock()
        self._hardware_noted: set[str] = set()

    def __repr__(self) -> str:
        return f"<ReplicateRunner {self.base_url}>"

    # ----- models ----------------------------------------------------------------------------
    def resolve(self, ref: Any) -> ModelHandle:
        if isinstance(ref, ModelHandle):
            ref = ref.name if ref.version is None else f"{ref.name}:{ref.version}"
        if not isinstance(ref, str):
            raise ModelNotFound(repr(ref), backend="replicate",
                                detail="the replicate backend takes model names (owner/name[:version])")
        ref = ref.strip()
        cached = _HANDLES.get((self.base_url, ref))
        if cached is not None:
            return cached
        owner, name, version = parse_ref(ref)
        model_name = f"{owner}/{name}"
        try:
            if version:
                v = self.api.get_version(owner, name, version)
                model: dict = {}
            else:
                model = self.api.get_model(owner, name)
                v = model.get("latest_version") or {}
        except APIError as exc:
            if exc.status == 404:
                what = f"version {version} of {model_name}" if version else model_name
                known = sorted({h.name for h in self.models()})
                raise ModelNotFound(ref, suggestions=difflib.get_close_matches(model_name, known, n=3, cutoff=0.5),
                                    backend="replicate",
                                    detail=f"Replicate has no {what} at {self.base_url} "
                                           f"({exc.detail or exc.title}); check the name on replicate.com") from None
            raise
        schema = v.get("openapi_schema")
        if not isinstance(schema, dict) or not schema:
            raise BackendError(f"Replicate gave no input schema for {ref} (no published version)",
                               url=self.api.url(f"models/{owner}/{name}"))
        handle = ModelHandle(name=model_name, version=v.get("id") or version, schema=schema,
                             description=str(model.get("description") or ""),
                             extra={"pinned": bool(version), "url": model.get("url"), "cog_version": v.get("cog_version")})
        with _HANDLES_LOCK:
            _HANDLES[(self.base_url, ref)] = handle
        return handle

    def models(self) -> list[ModelHandle]:
        """The models resolved on this service so far (Replicate has no short list of "all models")."""
        with _HANDLES_LOCK:
            mine = [h for (base, _), h in _HANDLES.items() if base == self.base_url]
        return list({h.name + (h.version or ""): h for h in mine}.values())

    # ----- hardware --------------------------------------------------------------------------
    def hardware_for(self, model: str) -> tuple[str, bool]:
        """(SKU, whether it is the fallback default)."""
        if isinstance(self.hardware, str) and self.hardware:
            return self.hardware, False
        if isinstance(self.hardware, dict) and model in self.hardware:
            return self.hardware[model], False
        return self.default_hardware, True

    # ----- inputs ----------------------------------------------------------------------------
    def encode_input(self, value: Any) -> Any:
        if isinstance(value, InputFile):
            if value._data is None and value.url and not value.url.startswith("data:"):
                return value.url  # Replicate fetches public URLs itself
            data = value.read()
            if len(data) < self.upload_threshold:
                return data_uri(data, value.content_type)
            f = self.api.upload(data, value.name, value.content_type)
            return f["urls"]["get"]
        if isinstance(value, dict):
            return {k: self.encode_input(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.encode_input(v) for v in value]
        if hasattr(value, "get_secret_value"):
            return value.get_secret_value()
        return value

    # ----- outputs ---------------------------------------------------------------------------
    def _decode(self, value: Any, schema: dict | None, name: str, run: _Run) -> Any:
        """Output JSON → our values: file URLs fetched now and embedded as FileOutput."""
        if isinstance(value, str):
            fileish = _is_uri(schema) or (not schema or "type" not in (schema or {})) and value.startswith(
                ("https://", "http://", "data:"))
            if fileish and value.startswith(("https://", "http://", "data:")):
                return self._file(value, name, run)
            return value
        if isinstance(value, list):
            items = (schema or {}).get("items") if isinstance(schema, dict) else None
            return [self._decode(v, items, f"{name}-{i}", run) for i, v in enumerate(value)]
        if isinstance(value, dict):
            props = (schema or {}).get("properties") or {}
            return {k: self._decode(v, props.get(k), k, run) for k, v in value.items()}
        return value

    def _file(self, url: str, name: str, run: _Run) -> Any:
        if url.startswith("data:"):
            return FileOutput.from_data_uri(url, name=name)
        fname = os.path.basename(unquote(urlparse(url).path)) or name
        try:
            data, ctype = self.api.fetch(url)
        except BackendError as exc:
            run.p.emit(Log(text=f"{NOTE}could not embed output {url}: {exc}; it is kept as a link, "
                                "which Replicate deletes after an hour\n"))
            return url
        return FileOutput(data, name=fname, content_type=ctype if ctype not in (None, "application/octet-stream") else None,
                          url=None)

    def _chunk(self, text: str, run: _Run) -> Any:
        """One streamed `output` event → one iterator item."""
        items = _output_schema(run.p.schema).get("items") or {}
        if items.get("type") == "string" and not _is_uri(items):
            return text
        if _is_uri(items):
            return self._file(text, f"output-{run.next_index}", run)
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        return self._decode(value, items, f"output-{run.next_index}", run)

    # ----- execute ---------------------------------------------------------------------------
    def execute(self, p) -> None:
        run = _Run(p)
        with self._lock:
            self._runs[p.id] = run
        sku, fallback = self.hardware_for(p.model)
        try:
            try:
                self._create(run)
            except APIError as exc:
                if exc.status == 422:  # Replicate's own validation: a failed prediction with its detail
                    p.emit(Completed(status="failed", error=f"Replicate rejected the input: {exc.detail or exc.title}",
                                     metrics={"hardware": sku}))
                    return
                raise
            if fallback and p.model not in self._hardware_noted:
                self._hardware_noted.add(p.model)
                p.emit(Log(text=f"{NOTE}Replicate does not report the hardware of {p.model}; costing it as {sku} "
                                f"(set it with %replicate use replicate --hardware SKU)\n"))
            if p.cancel_event.is_set():
                self._send_cancel(run)
            self._follow(run, sku)
        except KeyboardInterrupt:
            # the kernel's interrupt: api.execute cancels; someone must still see the final state
            if run.id and not p.done:
                threading.Thread(target=self._finish_later, args=(run, sku), daemon=True,
                                 name=f"rj-replicate-finish-{p.id}").start()
            raise
        except BackendError as exc:
            if p.done:
                return
            if run.id is None:
                raise  # nothing was created: the error is the whole story
            if run.started or run.id:
                p.emit(Log(text=f"{NOTE}{scrub(exc)}; following prediction {run.id} by polling\n"))
            try:
                self._poll(run, sku)
            except BackendError as exc2:
                if not p.done:
                    p.emit(Completed(status="failed", metrics=self._metrics(run, sku, None),
                                     error=f"Lost track of Replicate prediction {run.id}: {scrub(exc2)}"))
        finally:
            with self._lock:
                self._runs.pop(p.id, None)

    def _create(self, run: _Run) -> None:
        p = run.p
        body: dict[str, Any] = {"input": {k: self.encode_input(v) for k, v in p.input.items()}, "stream": True}
        pinned = bool((getattr(p, "handle", None) and p.handle.extra.get("pinned")))
        if pinned or not p.version:
            if p.version:
                body["version"] = p.version
                run.remote = self.api.create_prediction(body, wait=self.wait)
            else:
                run.remote = self.api.create_prediction(body, model=p.model, wait=self.wait)
        else:
            # `owner/name` runs the model's latest version by its own endpoint (official models need
            # it); a model that only runs by version answers 404 there, so fall back to the version.
            try:
                run.remote = self.api.create_prediction(body, model=p.model, wait=self.wait)
            except APIError as exc:
                if exc.status != 404:
                    raise
                body["version"] = p.version
                run.remote = self.api.create_prediction(body, wait=self.wait)
        if run.remote.get("version") and run.remote["version"] != p.version:
            p.version = run.remote["version"]

    def _start(self, run: _Run, sku: str) -> None:
        with run.lock:
            if run.started:
                return
            run.started = True
        run.p.emit(Started(hardware=sku))

    def _watch_start(self, run: _Run, sku: str, stop: threading.Event) -> None:
        """While the stream is quiet, poll lightly (backing off to 2 s: Replicate rate-limits)
        until Replicate says `processing`."""
        delay = self.poll_interval
        while not stop.wait(delay):
            delay = min(delay * 1.5, max(2.0, self.poll_interval))
            if run.started or run.p.done:
                return
            try:
                data = self.api.get_prediction(run.id)
            except BackendError:
                continue
            if data.get("status") in ("processing",) + TERMINAL:
                self._start(run, sku)
                return

    def _follow(self, run: _Run, sku: str) -> None:
        p = run.p
        remote = run.remote or {}
        if remote.get("status") in ("processing",) + TERMINAL:
            self._start(run, sku)
        if remote.get("status") in TERMINAL:
            return self._complete(run, sku, remote)
        stream_url = (remote.get("urls") or {}).get("stream")
        if not stream_url:
            return self._poll(run, sku)
        stop = threading.Event()
        threading.Thread(target=self._watch_start, args=(run, sku, stop), daemon=True,
                         name=f"rj-replicate-start-{p.id}").start()
        iterator = _is_iterator(p.schema)
        error_detail = None
        saw_done = False
        try:
            with self.api.stream(stream_url) as events:
                for ev in events:
                    if ev.event == "output":
                        self._start(run, sku)
                        if iterator:
                            p.emit(Output(value=self._chunk(ev.data, run), index=run.next_index))
                            run.next_index += 1
                    elif ev.event == "logs":
                        self._start(run, sku)
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
            p.emit(Log(text=f"{NOTE}the stream of {run.id} ended before `done`; following it by polling\n"))
            return self._poll(run, sku)
        final = self._final(run)
        if error_detail and not final.get("error"):
            final["error"] = error_detail
        self._complete(run, sku, final)

    def _final(self, run: _Run, timeout: float = 30.0) -> dict:
        """The prediction once Replicate has written its terminal state (just after `done`)."""
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            data = self.api.get_prediction(run.id)
            if data.get("status") in TERMINAL or time.monotonic() > deadline:
                return data
            time.sleep(delay)
            delay = min(delay * 2, self.poll_interval)

    def _poll(self, run: _Run, sku: str) -> None:
        """No stream URL (or it broke): poll `GET /v1/predictions/{id}` until a final state,
        turning new log text and new iterator items into events as they appear."""
        p = run.p
        iterator = _is_iterator(p.schema)
        items = _output_schema(p.schema).get("items") or {}
        while True:
            data = self.api.get_prediction(run.id)
            status = data.get("status")
            if status in ("processing",) + TERMINAL:
                self._start(run, sku)
            if status in TERMINAL:
                return self._complete(run, sku, data)
            self._catch_up_logs(run, data.get("logs") or "")
            out = data.get("output")
            if iterator and isinstance(out, list):
                for i in range(run.next_index, len(out)):
                    p.emit(Output(value=self._decode(out[i], items, f"output-{i}", run), index=i))
                run.next_index = max(run.next_index, len(out))
            time.sleep(self.poll_interval)

    def _catch_up_logs(self, run: _Run, logs: str) -> None:
        """Emit what the server's full log text has beyond what was already emitted."""
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
            run.p.emit(Log(text=extra))
        run.log_lines = len(logs.splitlines())

    def _metrics(self, run: _Run, sku: str, data: dict | None) -> dict:
        m = (data or {}).get("metrics") or {}
        pt = m.get("predict_time")
        if pt is None:
            pt = round(run.p.elapsed, 6) if run.started else 0.0
        out = {"predict_time": round(float(pt), 6), "hardware": sku}
        return out

    def _complete(self, run: _Run, sku: str, data: dict) -> None:
        p = run.p
        with run.lock:
            if run.finishing or p.done:
                return
            run.finishing = True
        status = data.get("status") if data.get("status") in TERMINAL else "failed"
        self._catch_up_logs(run, data.get("logs") or "")
        error = data.get("error")
        if status == "succeeded":
            out_schema = _output_schema(p.schema)
            output = data.get("output")
            if _is_iterator(p.schema):
                items = out_schema.get("items") or {}
                values = output if isinstance(output, list) else []
                for i in range(run.next_index, len(values)):  # items the stream never carried
                    p.emit(Output(value=self._decode(values[i], items, f"output-{i}", run), index=i))
                run.next_index = max(run.next_index, len(values))
            else:
                p.emit(Output(value=self._decode(output, out_schema, "output", run), index=None))
        elif status == "canceled":
            error = p.cancel_reason or error
        elif status == "failed" and data.get("status") not in TERMINAL:
            error = f"Replicate prediction {run.id} is still {data.get('status')!r}; stopped following it"
        p.emit(Completed(status=status, error=None if error is None else scrub(error),
                         metrics=self._metrics(run, sku, data)))

    def _finish_later(self, run: _Run, sku: str) -> None:
        try:
            self._send_cancel(run)
            self._complete(run, sku, self._final(run, timeout=30.0))
        except BackendError as exc:
            if not run.p.done:
                run.p.emit(Completed(status="canceled", error=f"cancel requested; Replicate did not confirm ({scrub(exc)})",
                                     metrics=self._metrics(run, sku, None)))

    # ----- cancel ----------------------------------------------------------------------------
    def cancel(self, p) -> None:
        with self._lock:
            run = self._runs.get(p.id)
        if run is not None and run.id:
            self._send_cancel(run)
        # not yet created: execute() sees the cancel event right after creating it

    def _send_cancel(self, run: _Run) -> None:
        if run.cancel_sent or not run.id:
            return
        run.cancel_sent = True
        url = ((run.remote or {}).get("urls") or {}).get("cancel") or run.id
        try:
            self.api.cancel_prediction(url)
        except BackendError as exc:
            run.p.emit(Log(text=f"{NOTE}cancel of {run.id} failed: {scrub(exc)}\n"))

    def reload(self, p) -> None:
        """Nothing to fetch: events keep the prediction live."""

    def close(self) -> None:
        self.api.close()

"""A local server that speaks Replicate's HTTP API, running real predictors in-process.

Replicate's cloud is out of reach from here, so the `replicate` backend is tested against this.
It follows the public API reference (https://replicate.com/docs/reference/http) and the responses
recorded in replicate-python's test cassettes (tests/cassettes/*.yaml: models-get, predictions-create,
predictions-stream, run__invalid-token, file-operations):

- `GET  /v1/models/{owner}/{name}`                 model + `latest_version` (id, cog_version, openapi_schema)
- `GET  /v1/models/{owner}/{name}/versions/{id}`   one version
- `POST /v1/models/{owner}/{name}/predictions`     run the model's latest version ("official model" style)
- `POST /v1/predictions`                           run `{"version", "input", "stream"}`; 201 + the prediction
- `Prefer: wait` / `Prefer: wait=N`                hold the create request up to N s (default and max 60)
- `"stream": true`                                 `urls.stream`; SSE with `output` (plain text), `logs`,
                                                   `error` (`{"detail"}`) and `done` (`{}` or `{"reason"}`),
                                                   every event with an `id:` (replicate-python needs it)
- `GET  /v1/predictions/{id}`, `POST /v1/predictions/{id}/cancel`
- `POST /v1/files` (multipart, field `content`)    201 + file object with `urls.get`; such URLs are accepted
                                                   as file inputs (resolved server-side, as Replicate does)
- `Authorization: Bearer <token>` on every /v1 call; 401 `{"title":"Unauthenticated","detail":"You did
  not pass a valid authentication token","status":401}` (application/problem+json) otherwise
- 404 / 422 as problem JSON (`title`, `detail`, `status`; 422 adds `invalid_fields`)
- outputs: files become URLs under `/delivery/...` (replicate.delivery); `expire_outputs()` deletes them
  like Replicate does after an hour, so tests can prove a client embedded them in time.

- `GET /v1/predictions` (newest first, `?cursor=` pages of `page_size`), `GET /v1/models`,
  `GET /v1/models/{owner}/{name}/versions`, `GET /v1/deployments/{owner}/{name}`,
  `POST /v1/deployments/{owner}/{name}/predictions`, `GET|DELETE /v1/files/{id}`, `GET /v1/files`,
  `GET /v1/hardware`, `GET /v1/webhooks/default/secret`
- `Cancel-After: 30s|5m|1h2m3s|N` sets the prediction's `deadline`: past it a prediction still
  `starting` is `aborted`, one `processing` is `canceled`

Every request is recorded in `requests` (method, path) so tests can count calls, and in `log`
with what a client chose to send (`Call`: method, path, body keys, `Prefer`, `Cancel-After`,
`Last-Event-ID`), so two clients' requests can be compared.

Faults, for the robustness tests: `fail(status, count, ...)` answers the next matching requests
with that status (and `Retry-After`), `drop_streams_after` / `stream_cuts` cut SSE connections
mid-stream, `restart(down)` takes the API off the network for a while (predictions keep
running, as Replicate's do while its front restarts), `create_delay` holds the create answer
(the prediction exists meanwhile: a client interrupted then must still cancel it).

    with FakeReplicate({"acme/echo": "tests/predictors/echo.py:Predictor"}, token="r8_x") as fake:
        fake.url   # "http://127.0.0.1:PORT/v1"
"""
from __future__ import annotations

import base64
import contextlib
import email.parser
import email.policy
import hashlib
import inspect
import json
import mimetypes
import os
import pathlib
import secrets
import socket
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator
from urllib.parse import parse_qs, urlparse

from replicate_jupyter.errors import Canceled, InputError
from replicate_jupyter.model import predictors
from replicate_jupyter.model.schema import build_schema
from replicate_jupyter.prediction.files import InputFile
from replicate_jupyter.runners.capture import capture
from replicate_jupyter.runners.context import RunContext
from replicate_jupyter.runners.context import activate as _set_context

__all__ = ["FakeReplicate", "Call", "HARDWARE"]

TERMINAL = ("succeeded", "failed", "canceled", "aborted")
HARDWARE = [{"name": "CPU", "sku": "cpu"}, {"name": "Nvidia T4 GPU", "sku": "gpu-t4"},
            {"name": "Nvidia A40 GPU", "sku": "gpu-a40-small"}, {"name": "Nvidia A40 (Large) GPU", "sku": "gpu-a40-large"}]


@dataclass(frozen=True)
class Call:
    """One request as a client chose to send it (what two clients' requests are compared by)."""

    method: str
    path: str
    keys: tuple[str, ...] = ()  # the JSON body's keys (multipart: the form's field names)
    prefer: str | None = None
    cancel_after: str | None = None
    last_event_id: str | None = None
    status: int = 0
    t: float = field(default=0.0, compare=False)


@dataclass
class _Fault:
    status: int
    count: int
    method: str | None
    prefix: str
    retry_after: str | None
_B32 = "abcdefghijklmnopqrstuvwxyz234567"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _pred_id() -> str:
    return "".join(secrets.choice(_B32) for _ in range(26))


class _Model:
    def __init__(self, name: str, ref: Any) -> None:
        self.name = name
        self.owner, self.short = name.split("/", 1)
        self.spec = predictors.load(ref, name=name)
        self.schema = build_schema(self.spec.cls, name=name)
        text = json.dumps(self.schema, sort_keys=True, default=str)
        self.version = hashlib.sha256(f"{name}\n{text}".encode()).hexdigest()
        self.created_at = _now()
        self.instance = None
        self.lock = threading.Lock()

    def version_json(self) -> dict:
        return {"id": self.version, "created_at": self.created_at, "cog_version": "0.23.1",
                "openapi_schema": self.schema}

    def model_json(self, base: str) -> dict:
        return {"url": f"{base}/{self.name}", "owner": self.owner, "name": self.short,
                "description": (self.schema.get("info") or {}).get("description") or f"{self.name} (fake)",
                "visibility": "public", "github_url": None, "paper_url": None, "license_url": None,
                "run_count": 0, "cover_image_url": None, "default_example": None,
                "latest_version": self.version_json()}

    def predictor(self):
        with self.lock:
            if self.instance is None:
                inst = self.spec.make()
                setup = getattr(inst, "setup", None)
                if setup is not None:
                    setup()
                self.instance = inst
            return self.instance


class _Prediction:
    def __init__(self, fake: "FakeReplicate", model: _Model, input: dict, stream: bool) -> None:
        self.id = _pred_id()
        self.model = model
        self.input = input
        self.stream = stream
        self.status = "starting"
        self.output: Any = None
        self.logs = ""
        self.error: str | None = None
        self.created_at = _now()
        self.started_at: str | None = None
        self.completed_at: str | None = None
        self.metrics: dict[str, Any] = {}
        self.events: list[tuple[str, str]] = []
        self.cond = threading.Condition()
        self.cancel_event = threading.Event()
        self.fake = fake
        self.deadline: str | None = None
        self.webhook = None
        self.deployment: str | None = None

    # events are appended under the condition so streams wake up
    def push(self, event: str, data: str) -> None:
        with self.cond:
            self.events.append((event, data))
            self.cond.notify_all()

    def to_json(self) -> dict:
        base = self.fake.url
        urls = {"get": f"{base}/predictions/{self.id}", "cancel": f"{base}/predictions/{self.id}/cancel",
                "web": f"{self.fake.root}/p/{self.id}"}
        if self.stream:
            urls["stream"] = f"{self.fake.root}/stream/{self.id}"
        out = {"id": self.id, "model": self.model.name, "version": self.model.version, "input": self.input,
               "logs": self.logs, "output": self.output, "data_removed": False, "error": self.error,
               "status": self.status, "created_at": self.created_at, "urls": urls, "source": "api"}
        if self.started_at:
            out["started_at"] = self.started_at
        if self.completed_at:
            out["completed_at"] = self.completed_at
            out["metrics"] = dict(self.metrics)
        if self.deadline:
            out["deadline"] = self.deadline
        if self.deployment:
            out["deployment"] = self.deployment
        return out


class FakeReplicate:
    """Replicate's HTTP API on 127.0.0.1, for tests. `models` maps "owner/name" → predictor reference."""

    def __init__(self, models: dict[str, Any], token: str = "r8_fake_token", boot_delay: float = 0.05,
                 no_stream: set[str] | frozenset = frozenset(), deployments: dict[str, str] | None = None,
                 page_size: int = 100) -> None:
        self.token = token
        self.no_stream = set(no_stream)  # models without streaming support: no urls.stream, clients must poll
        self.drop_streams_after: int | None = None  # cut SSE connections after this many events
        self.stream_cuts: int | None = None  # how many connections drop_streams_after cuts (None: all)
        self.create_delay = 0.0  # hold each create answer this long (the prediction exists meanwhile)
        self.boot_delays: dict[str, float] = {}  # model → its own cold boot (else boot_delay)
        self.deployments = dict(deployments or {})  # "owner/name" → the model it serves
        self.page_size = page_size
        self.webhook_secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        self.log: list[Call] = []
        self._faults: list[_Fault] = []
        self._streams: set[socket.socket] = set()  # open connections (a restart cuts them all)
        self._generation = 0
        self._port = 0
        self.boot_delay = boot_delay
        self.models = {name: _Model(name, ref) for name, ref in models.items()}
        self.predictions: dict[str, _Prediction] = {}
        self.files: dict[str, tuple[bytes, str, str]] = {}  # id → (data, name, content type)
        self.delivery: dict[str, tuple[bytes, str]] = {}  # path → (data, content type)
        self.requests: list[tuple[str, str]] = []
        self.uploads: list[dict] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.root = ""

    # ----- lifecycle -------------------------------------------------------------------------
    def start(self) -> "FakeReplicate":
        fake = self

        class Handler(_Handler):
            server_fake = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), Handler)
        self._server.daemon_threads = True
        self._port = self._server.server_address[1]
        self.root = f"http://127.0.0.1:{self._port}"
        self._generation += 1
        threading.Thread(target=self._server.serve_forever, daemon=True, name="fake-replicate").start()
        return self

    def restart(self, down: float = 1.0) -> None:
        """Take the API off the network for `down` seconds (refused connections; open streams
        cut), then serve again on the same port. Predictions keep running meanwhile."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        with self._lock:
            streams, self._streams = set(self._streams), set()
        for sock in streams:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        time.sleep(down)
        self.start()

    def fail(self, status: int, count: int = 1, *, method: str | None = None, prefix: str = "/v1/",
             retry_after: float | str | None = None) -> None:
        """Answer the next `count` requests matching `method` and path `prefix` with `status`
        (and `Retry-After`), before they do anything."""
        with self._lock:
            self._faults.append(_Fault(status, count, method, prefix, None if retry_after is None else str(retry_after)))

    def _fault_for(self, method: str, path: str) -> _Fault | None:
        with self._lock:
            for f in self._faults:
                if f.count > 0 and (f.method is None or f.method == method) and path.startswith(f.prefix):
                    f.count -= 1
                    return f
        return None

    def calls(self, since: int = 0) -> list[Call]:
        """The requests recorded from index `since` of `log` on."""
        return list(self.log[since:])

    def stop(self) -> None:
        if self._server is not None:
            for p in list(self.predictions.values()):
                p.cancel_event.set()
            self._server.shutdown()
            self._server.server_close()
            self._server = None
            self._generation += 1

    def __enter__(self) -> "FakeReplicate":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return self.root + "/v1"

    # ----- test helpers ----------------------------------------------------------------------
    def expire_outputs(self) -> int:
        """Delete every output file, as Replicate does an hour after a prediction ends."""
        with self._lock:
            n = len(self.delivery)
            self.delivery.clear()
        return n

    def count(self, method: str | None = None, prefix: str = "") -> int:
        return sum(1 for m, p in list(self.requests) if (method is None or m == method) and p.startswith(prefix))

    def wait_status(self, pid: str, statuses=TERMINAL, timeout: float = 10.0) -> str:
        p = self.predictions[pid]
        deadline = time.monotonic() + timeout
        with p.cond:
            while p.status not in statuses and time.monotonic() < deadline:
                p.cond.wait(0.05)
        return p.status

    # ----- running ---------------------------------------------------------------------------
    def create(self, model: _Model, body: dict, cancel_after: str | None = None,
               deployment: str | None = None) -> _Prediction:
        raw_input = body.get("input") or {}
        if not isinstance(raw_input, dict):
            raise _Problem(422, "Input validation failed", "- input: Invalid type. Expected: object\n",
                           [{"type": "invalid_type", "field": "input", "description": "Invalid type. Expected: object"}])
        from replicate_jupyter.model.validation import validate

        resolved = {k: self._resolve_file_url(v) for k, v in raw_input.items()}
        try:
            clean = validate(model.schema, resolved, model=model.name)
        except InputError as exc:
            fields = [{"type": pr.rule, "field": f"input.{pr.field}",
                       "description": pr.message or f"{pr.rule}: allowed {pr.allowed}"} for pr in exc.problems]
            detail = "".join(f"- {f['field']}: {f['description']}\n" for f in fields)
            raise _Problem(422, "Input validation failed", detail, fields) from None
        p = _Prediction(self, model, raw_input, bool(body.get("stream")) and model.name not in self.no_stream)
        p.webhook = body.get("webhook")
        p.deployment = deployment
        if cancel_after:
            seconds = _duration(cancel_after)
            p.deadline = (datetime.now(timezone.utc) + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")
            threading.Thread(target=self._watch_deadline, args=(p, seconds), daemon=True).start()
        with self._lock:
            self.predictions[p.id] = p
        threading.Thread(target=self._run, args=(p, clean), daemon=True, name=f"fake-replicate-{p.id}").start()
        return p

    def _watch_deadline(self, p: _Prediction, seconds: float) -> None:
        """Cancel-After: past the deadline a prediction still starting is aborted (it never ran,
        nothing is billed), one processing is canceled."""
        with p.cond:
            p.cond.wait_for(lambda: p.status in TERMINAL, timeout=seconds)
            status = p.status
        if status == "starting":
            p.cancel_event.set()
            self._finish(p, "aborted", None, None, 0.0)
        elif status == "processing":
            self.cancel(p)

    def _resolve_file_url(self, value: Any) -> Any:
        """A `urls.get` of an uploaded file is resolved here, server-side, as Replicate does."""
        if isinstance(value, str) and value.startswith(self.url + "/files/"):
            fid = value.rsplit("/", 1)[-1]
            if fid in self.files:
                data, name, ctype = self.files[fid]
                return InputFile(data, name=name, content_type=ctype)
        return value

    def _run(self, p: _Prediction, clean: dict) -> None:
        boot = self.boot_delays.get(p.model.name, self.boot_delay)
        if boot:
            p.cancel_event.wait(boot)
        if p.cancel_event.is_set():
            return
        with p.cond:
            if p.status != "starting":
                return
            p.status = "processing"
            p.started_at = _now()
            p.cond.notify_all()
        t0 = time.monotonic()
        ctx = RunContext(emit=lambda _e: None, cancel_event=p.cancel_event, wants_preview=lambda: False)
        pending = [""]

        def sink(text: str) -> None:
            # one `logs` event per line, like Replicate; the prediction's logs keep the exact text
            with p.cond:
                if p.status in TERMINAL:
                    return
                p.logs += text
            pending[0] += text
            while "\n" in pending[0]:
                line, pending[0] = pending[0].split("\n", 1)
                p.push("logs", line)

        status, error, output = "succeeded", None, None
        prev = _set_context(ctx)
        try:
            with capture(sink):
                inst = self._predictor(p)
                call = predictors.predict_method(inst)
                kwargs = self._kwargs(call, clean)
                result = call(**kwargs)
                if inspect.isgenerator(result) or inspect.isasyncgen(result):
                    output = []
                    for item in _iterate(result):
                        if p.cancel_event.is_set():
                            raise Canceled("canceled")
                        value = self._encode_output(p, item, len(output))
                        with p.cond:
                            if p.status in TERMINAL:
                                return
                            output.append(value)
                            p.output = list(output)
                        p.push("output", value if isinstance(value, str) else json.dumps(value))
                else:
                    if inspect.iscoroutine(result):
                        import asyncio

                        result = asyncio.run(result)
                    output = self._encode_output(p, result, 0)
        except Canceled:
            status = "canceled"
        except Exception as exc:
            status = "failed"
            error = str(exc)
            frames = exc.__traceback__
            while frames is not None and frames.tb_frame.f_code.co_filename == __file__:
                frames = frames.tb_next  # the model's own frames, not this server's
            tb = "".join(traceback.format_exception(type(exc), exc, frames))
            with p.cond:
                if p.status not in TERMINAL:
                    p.logs += tb
            for line in tb.rstrip("\n").split("\n"):
                p.push("logs", line)
        finally:
            _set_context(prev)
        if pending[0]:
            p.push("logs", pending[0])
        if p.cancel_event.is_set():
            status = "canceled"
        self._finish(p, status, error, output, time.monotonic() - t0)

    def _predictor(self, p: _Prediction):
        return p.model.predictor()

    def _kwargs(self, call, clean: dict) -> dict:
        kwargs = {}
        for name, param in inspect.signature(call).parameters.items():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            if name in clean:
                v = clean[name]
                if isinstance(v, InputFile):
                    from cog import Path

                    v = Path(v.as_path())
                elif isinstance(v, str) and _is_secret(param):
                    from cog import Secret

                    v = Secret(v)
                kwargs[name] = v
            else:
                default = param.default
                if type(default).__name__ == "FieldInfo":
                    default = default.default
                kwargs[name] = None if default is inspect.Parameter.empty else default
        return kwargs

    def _encode_output(self, p: _Prediction, value: Any, index: int) -> Any:
        if isinstance(value, os.PathLike):
            path = pathlib.Path(value)
            data = path.read_bytes()
            key = f"{p.id}/{index}/{path.name}"
            ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            with self._lock:
                self.delivery[key] = (data, ctype)
            return f"{self.root}/delivery/{key}"
        if isinstance(value, (list, tuple)):
            return [self._encode_output(p, v, i) for i, v in enumerate(value)]
        if isinstance(value, dict):
            return {k: self._encode_output(p, v, index) for k, v in value.items()}
        if hasattr(value, "model_dump"):
            return self._encode_output(p, value.model_dump(), index)
        return value

    def _finish(self, p: _Prediction, status: str, error: str | None, output: Any, seconds: float) -> None:
        with p.cond:
            if p.status in TERMINAL:
                return
            p.status = status
            p.error = error
            if status == "succeeded":
                p.output = output
            p.completed_at = _now()
            boot = 0.0 if status == "aborted" else self.boot_delays.get(p.model.name, self.boot_delay)
            p.metrics = {"predict_time": round(seconds, 6), "total_time": round(seconds + boot, 6)}
            p.cond.notify_all()
        if status == "failed":
            p.push("error", json.dumps({"detail": error}))
            p.push("done", json.dumps({"reason": "error"}))
        elif status in ("canceled", "aborted"):
            p.push("done", json.dumps({"reason": status}))
        else:
            if not isinstance(p.output, list) and output is not None:
                p.push("output", output if isinstance(output, str) else json.dumps(output))
            p.push("done", "{}")

    def cancel(self, p: _Prediction) -> None:
        p.cancel_event.set()
        self._finish(p, "canceled", None, None, _since(p.started_at) if p.started_at else 0.0)


def _duration(text: str) -> float:
    """Cancel-After's value: `30s`, `5m`, `1h2m3s`, or a bare number of seconds."""
    import re

    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    m = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?", text)
    if not text or not m:
        raise _Problem(400, "Bad request", f"Invalid Cancel-After: {text!r}")
    h, mi, sec = m.groups()
    return int(h or 0) * 3600 + int(mi or 0) * 60 + float(sec or 0)


def _deployment_json(name: str, model: _Model) -> dict:
    owner, short = name.split("/", 1)
    return {"owner": owner, "name": short,
            "current_release": {"number": 1, "model": model.name, "version": model.version, "created_at": model.created_at,
                                "created_by": {"type": "organization", "username": owner, "name": owner},
                                "configuration": {"hardware": "gpu-t4", "min_instances": 0, "max_instances": 1}}}


def _since(iso: str) -> float:
    t = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return max(0.0, (datetime.now(timezone.utc) - t).total_seconds())


def _is_secret(param) -> bool:
    ann = param.annotation
    return getattr(ann, "__name__", str(ann)).endswith("Secret")


def _iterate(result):
    if inspect.isasyncgen(result):
        import asyncio

        loop = asyncio.new_event_loop()
        try:
            while True:
                try:
                    yield loop.run_until_complete(result.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            loop.close()
    else:
        yield from result


class _Problem(Exception):
    def __init__(self, status: int, title: str, detail: str, invalid_fields: list | None = None) -> None:
        super().__init__(detail)
        self.body = {"title": title, "detail": detail, "status": status}
        if invalid_fields is not None:
            self.body["invalid_fields"] = invalid_fields
        self.status = status


class _Handler(BaseHTTPRequestHandler):
    server_fake: FakeReplicate
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    # ----- plumbing ---------------------------------------------------------------------------
    def _send_json(self, status: int, body: Any, content_type: str = "application/json") -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _problem(self, exc: _Problem) -> None:
        self._send_json(exc.status, exc.body, "application/problem+json")

    def _body(self) -> bytes:
        """The request body, read once."""
        if getattr(self, "_raw", None) is None:
            n = int(self.headers.get("Content-Length") or 0)
            self._raw = self.rfile.read(n) if n else b""
        return self._raw or b""

    def _authorized(self) -> bool:
        auth = self.headers.get("Authorization") or ""
        scheme, _, token = auth.partition(" ")
        return scheme in ("Bearer", "Token") and bool(token) and token == self.server_fake.token

    def send_response(self, code: int, message: str | None = None) -> None:
        self._code = code
        super().send_response(code, message)

    def handle(self) -> None:
        """Every connection is known to the server, so a restart can cut kept-alive ones too."""
        fake = self.server_fake
        with fake._lock:
            fake._streams.add(self.connection)
        try:
            super().handle()
        finally:
            with fake._lock:
                fake._streams.discard(self.connection)

    def _dispatch(self, method: str) -> None:
        fake = self.server_fake
        url = urlparse(self.path)
        path = url.path
        self._code = 0
        self._raw: bytes | None = None
        fake.requests.append((method, path))
        try:
            self._route(method, path, parse_qs(url.query))
        except _Problem as exc:
            self._body()  # read what the client sent, answered or not: on a kept-alive connection
            self._problem(exc)  # an unread body would be taken for the next request
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            fake.log.append(Call(method, path, self._keys(), self.headers.get("Prefer"), self.headers.get("Cancel-After"),
                                 self.headers.get("Last-Event-ID"), self._code, time.monotonic()))

    def _keys(self) -> tuple[str, ...]:
        """The body's keys as the client sent them: a JSON object's, or a form's field names."""
        raw = self._raw or b""
        if not raw:
            return ()
        ctype = self.headers.get("Content-Type") or ""
        if ctype.startswith("multipart/form-data"):
            import re

            return tuple(sorted(set(m.decode() for m in re.findall(rb'[; ]name="([^"]+)"', raw[:1 << 16]))))
        try:
            body = json.loads(raw)
        except ValueError:
            return ()
        return tuple(sorted(body)) if isinstance(body, dict) else ()

    def _route(self, method: str, path: str, query: dict) -> None:
        fake = self.server_fake
        if path.startswith("/delivery/") and method == "GET":
            return self._delivery(path[len("/delivery/"):])
        if not (path.startswith("/v1/") or path.startswith("/stream/")):
            raise _Problem(404, "Not found", "Not found.")
        fault = fake._fault_for(method, path)
        if fault is not None:
            self._body()
            return self._fail(fault)
        if not self._authorized():
            self._body()
            raise _Problem(401, "Unauthenticated", "You did not pass a valid authentication token")
        parts = [x for x in path.split("/") if x]
        if parts[0] == "stream" and len(parts) == 2 and method == "GET":
            return self._stream(parts[1])
        parts = parts[1:]
        if parts[:1] == ["models"] and len(parts) == 1 and method == "GET":
            return self._page([m.model_json(fake.root) for m in fake.models.values()], query, "models")
        if parts[:1] == ["models"] and len(parts) >= 3:
            model = fake.models.get(f"{parts[1]}/{parts[2]}")
            if model is None:
                raise _Problem(404, "Not found", "Not found.")
            if len(parts) == 3 and method == "GET":
                return self._send_json(200, model.model_json(fake.root))
            if len(parts) == 4 and parts[3] == "versions" and method == "GET":
                return self._send_json(200, {"next": None, "previous": None, "results": [model.version_json()]})
            if len(parts) == 5 and parts[3] == "versions" and method == "GET":
                if parts[4] != model.version:
                    raise _Problem(404, "Not found", "Not found.")
                return self._send_json(200, model.version_json())
            if len(parts) == 4 and parts[3] == "predictions" and method == "POST":
                return self._create(model, self._json_body())
        if parts[:1] == ["deployments"] and len(parts) >= 3:
            name = f"{parts[1]}/{parts[2]}"
            model = fake.models.get(fake.deployments.get(name, ""))
            if model is None:
                raise _Problem(404, "Not found", "Not found.")
            if len(parts) == 3 and method == "GET":
                return self._send_json(200, _deployment_json(name, model))
            if len(parts) == 4 and parts[3] == "predictions" and method == "POST":
                return self._create(model, self._json_body(), deployment=name)
        if parts == ["predictions"] and method == "POST":
            body = self._json_body()
            version = str(body.get("version") or "")
            vid = version.split(":", 1)[-1]
            model = next((m for m in fake.models.values() if m.version == vid), None)
            if model is None:
                raise _Problem(422, "Invalid version or not permitted",
                               "The specified version does not exist (or perhaps you don't have permission to use it?)")
            return self._create(model, body)
        if parts == ["predictions"] and method == "GET":
            with fake._lock:
                preds = sorted(fake.predictions.values(), key=lambda p: p.created_at, reverse=True)
            return self._page([p.to_json() for p in preds], query, "predictions")
        if parts[:1] == ["predictions"] and len(parts) >= 2:
            p = fake.predictions.get(parts[1])
            if p is None:
                raise _Problem(404, "Not found", "Not found.")
            if len(parts) == 2 and method == "GET":
                with p.cond:
                    return self._send_json(200, p.to_json())
            if len(parts) == 3 and parts[2] == "cancel" and method == "POST":
                self._body()
                fake.cancel(p)
                with p.cond:
                    return self._send_json(200, p.to_json())
        if parts == ["files"] and method == "POST":
            return self._upload()
        if parts == ["files"] and method == "GET":
            return self._send_json(200, {"next": None, "previous": None,
                                         "results": [self._file_json(fid, *f) for fid, f in fake.files.items()]})
        if parts[:1] == ["files"] and len(parts) == 2 and method in ("GET", "DELETE"):
            f = fake.files.get(parts[1])
            if f is None:
                raise _Problem(404, "Not found", "Not found.")
            if method == "DELETE":
                del fake.files[parts[1]]
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            return self._send_json(200, self._file_json(parts[1], *f))
        if parts == ["hardware"] and method == "GET":
            return self._send_json(200, HARDWARE)
        if parts == ["webhooks", "default", "secret"] and method == "GET":
            return self._send_json(200, {"key": fake.webhook_secret})
        raise _Problem(404, "Not found", "Not found.")

    def _json_body(self) -> dict:
        try:
            body = json.loads(self._body() or b"{}")
        except ValueError:
            raise _Problem(400, "Bad request", "The body is not JSON") from None
        if not isinstance(body, dict):
            raise _Problem(400, "Bad request", "The body is not a JSON object")
        return body

    def _page(self, items: list, query: dict, what: str) -> None:
        """Replicate's pagination: `{next, previous, results}`, cursors as full URLs."""
        size = self.server_fake.page_size
        start = int((query.get("cursor") or ["0"])[0] or 0)
        base = f"{self.server_fake.url}/{what}"
        nxt = f"{base}?cursor={start + size}" if start + size < len(items) else None
        prev = f"{base}?cursor={max(0, start - size)}" if start > 0 else None
        self._send_json(200, {"next": nxt, "previous": prev, "results": items[start:start + size]})

    def _fail(self, fault: _Fault) -> None:
        body = json.dumps({"title": "Too many requests" if fault.status == 429 else "Service unavailable",
                           "detail": f"injected {fault.status}", "status": fault.status}).encode()
        self.send_response(fault.status)
        self.send_header("Content-Type", "application/problem+json")
        self.send_header("Content-Length", str(len(body)))
        if fault.retry_after is not None:
            self.send_header("Retry-After", fault.retry_after)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # ----- endpoints ---------------------------------------------------------------------------
    def _create(self, model: _Model, body: dict, deployment: str | None = None) -> None:
        fake = self.server_fake
        p = fake.create(model, body, cancel_after=self.headers.get("Cancel-After"), deployment=deployment)
        if fake.create_delay:
            time.sleep(fake.create_delay)
        prefer = (self.headers.get("Prefer") or "").strip()
        if prefer.startswith("wait"):
            _, _, n = prefer.partition("=")
            try:
                wait = min(60.0, float(n)) if n else 60.0
            except ValueError:
                wait = 60.0
            fake.wait_status(p.id, TERMINAL, wait)
        with p.cond:
            body = p.to_json()
        self.send_response(201)
        data = json.dumps(body).encode()
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Location", body["urls"]["get"])
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, pid: str) -> None:
        p = self.server_fake.predictions.get(pid)
        if p is None or not p.stream:
            raise _Problem(404, "Not found", "Not found.")
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        fake = self.server_fake
        start = int(str(self.headers.get("Last-Event-ID") or "-1").rsplit(":", 1)[-1] or -1) + 1
        stamp = int(time.time())
        generation = fake._generation
        drop = fake.drop_streams_after
        with fake._lock:
            if drop is not None and fake.stream_cuts is not None:
                if fake.stream_cuts <= 0:
                    drop = None
                else:
                    fake.stream_cuts -= 1
        self._events(p, start, stamp, generation, drop)

    def _events(self, p: _Prediction, start: int, stamp: int, generation: int, drop: int | None) -> None:
        i = start
        fake = self.server_fake
        while True:
            with p.cond:
                while i >= len(p.events):
                    p.cond.wait(0.5)
                    if fake._server is None or fake._generation != generation:
                        return
                batch = p.events[i:]
            for event, data in batch:
                if drop is not None and i - start >= drop:
                    self.wfile.flush()
                    return  # the connection just ends, as a flaky network would
                lines = "".join(f"data: {line}\n" for line in data.split("\n"))
                self.wfile.write(f"event: {event}\nid: {stamp}:{i}\n{lines}\n".encode())
                i += 1
                if event == "done":
                    self.wfile.flush()
                    return
            self.wfile.flush()

    def _delivery(self, key: str) -> None:
        item = self.server_fake.delivery.get(key)
        if item is None:
            raise _Problem(404, "Not found", "This file has expired or does not exist.")
        data, ctype = item
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _upload(self) -> None:
        fake = self.server_fake
        ctype = self.headers.get("Content-Type") or ""
        raw = self._body()
        if not ctype.startswith("multipart/form-data"):
            raise _Problem(400, "Bad request", "Expected multipart/form-data with a 'content' field")
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {ctype}\r\n\r\n".encode() + raw)
        content = None
        for part in msg.iter_parts():
            if part.get_param("name", header="content-disposition") == "content":
                content = part
        if content is None:
            raise _Problem(400, "Bad request", "Missing 'content' field")
        data = content.get_payload(decode=True) or b""
        name = content.get_filename() or "file"
        ctype = content.get_content_type() or "application/octet-stream"
        fid = base64.urlsafe_b64encode(secrets.token_bytes(27)).decode().rstrip("=")
        fake.files[fid] = (data, name, ctype)
        body = self._file_json(fid, data, name, ctype)
        fake.uploads.append(body)
        self._send_json(201, body)

    def _file_json(self, fid: str, data: bytes, name: str, ctype: str) -> dict:
        return {"id": fid, "name": name, "content_type": ctype, "size": len(data),
                "etag": hashlib.md5(data).hexdigest(),
                "checksums": {"sha256": hashlib.sha256(data).hexdigest(), "md5": hashlib.md5(data).hexdigest()},
                "metadata": {}, "created_at": _now(), "expires_at": None,
                "urls": {"get": f"{self.server_fake.url}/files/{fid}"}}


# ----- models of our own, under the names the code on Replicate's pages uses ------------------------
# Tiny real predictors (no weights): the snippets and replicate-python's README examples run
# against these unchanged. Images are 8×8 PNGs colored from the prompt, the "video" an MP4
# header with the input's bytes, the LLM's tokens words of a fixed text.
def _png(seed: str, size: int = 8) -> Any:
    from PIL import Image

    h = hashlib.sha256(seed.encode()).digest()
    path = Path(tempfile.mkdtemp()) / "out-0.png"
    Image.new("RGB", (size, size), (h[0], h[1], h[2])).save(path)
    return path


from cog import BasePredictor, ConcatenateIterator, Input, Path  # noqa: E402  (the seed models' SDK)


class FluxPro(BasePredictor):
    def predict(self, prompt: str = Input(description="Text prompt"),
                width: int = Input(default=1024, ge=256, le=1440), height: int = Input(default=1024, ge=256, le=1440),
                num_outputs: int = Input(default=1, ge=1, le=4), seed: int = Input(default=None)) -> list[Path]:
        return [_png(f"{prompt}{width}{height}{seed}{i}") for i in range(num_outputs)]


class Schnell(BasePredictor):
    def predict(self, prompt: str = Input(description="Text prompt"),
                num_outputs: int = Input(default=1, ge=1, le=4)) -> list[Path]:
        return [_png(f"{prompt}{i}") for i in range(num_outputs)]


class VideoDiffusion(BasePredictor):
    def predict(self, image: Path = Input(description="Input image"),
                frames: int = Input(default=14, ge=1, le=25)) -> Path:
        data = pathlib.Path(image).read_bytes()
        out = Path(tempfile.mkdtemp()) / "output.mp4"
        out.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes([frames]) + hashlib.sha256(data).digest())
        return out


class Llama(BasePredictor):
    WORDS = ("Quantum computing uses qubits, which can be zero and one at once; "
             "entangled qubits let some problems be solved far faster than on classical machines.").split()

    def predict(self, prompt: str = Input(description="Prompt"), max_tokens: int = Input(default=512, ge=1, le=4096),
                temperature: float = Input(default=0.6, ge=0, le=5),
                delay: float = Input(default=0.0, ge=0, le=2)) -> ConcatenateIterator[str]:
        print(f"prompt tokens: {len(prompt.split())}")
        for i in range(min(max_tokens, 200)):
            if delay:
                time.sleep(delay)
            yield ("" if i == 0 else " ") + self.WORDS[i % len(self.WORDS)]


class ClipDraw(BasePredictor):
    def predict(self, prompt: str = Input(description="Prompt"),
                iterations: int = Input(default=4, ge=1, le=100), delay: float = Input(default=0.05, ge=0, le=5)) -> Path:
        for i in range(iterations):
            print(f"iteration: {i * 10}, render:loss: {-0.6 - i / 10:.4f}", flush=True)
            time.sleep(delay)
        return _png(prompt, 16)


class Pixray(BasePredictor):
    def predict(self, prompts: str = Input(description="Prompts"),
                steps: int = Input(default=3, ge=1, le=20)) -> Iterator[Path]:
        for i in range(steps):
            yield _png(f"{prompts}{i}")


def seed_models() -> dict[str, Any]:
    """The models above, by the Replicate names the snippets and the README use."""
    return {
        "black-forest-labs/flux-1.1-pro": FluxPro,
        "black-forest-labs/flux-schnell": Schnell,
        "stability-ai/stable-video-diffusion": VideoDiffusion,
        "meta/meta-llama-3-8b-instruct": Llama,
        "stability-ai/sdxl": Schnell,
        "ai-forever/kandinsky-2.2": Schnell,
        "kvfrans/clipdraw": ClipDraw,
        "pixray/text2image": Pixray,
    }


#: a deployment of one of them, as the README's `replicate/my-app-image-generator`
SEED_DEPLOYMENTS = {"replicate/my-app-image-generator": "stability-ai/sdxl"}


@contextlib.contextmanager
def fresh_replicate_backend() -> Iterator[None]:
    """A fresh kernel's view of Replicate for one test: a new `replicate` runner (it reads the
    environment the test set), no backend chosen (bare `owner/name` routes to Replicate), and
    the session's default backend as it was afterwards."""
    from replicate_jupyter.runners.replicate import routing
    from replicate_jupyter.session import session

    old = session._runners.pop("replicate", None)
    if old is not None:
        old.close()
    saved = session.default_backend
    routing.reset_choice()
    try:
        yield
    finally:
        session.default_backend = saved
        routing.reset_choice()
        r = session._runners.pop("replicate", None)
        if r is not None:
            r.close()

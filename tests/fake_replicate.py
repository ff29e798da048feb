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

Every request is recorded in `requests` (method, path) so tests can count calls.

    with FakeReplicate({"acme/echo": "tests/predictors/echo.py:Predictor"}, token="r8_x") as fake:
        fake.url   # "http://127.0.0.1:PORT/v1"
"""
from __future__ import annotations

import base64
import email.parser
import email.policy
import hashlib
import inspect
import json
import mimetypes
import os
import pathlib
import secrets
import threading
import time
import traceback
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlparse

from replicate_jupyter.errors import Canceled, InputError
from replicate_jupyter.model import predictors
from replicate_jupyter.model.schema import build_schema
from replicate_jupyter.prediction.files import InputFile
from replicate_jupyter.runners.capture import capture
from replicate_jupyter.runners.context import RunContext
from replicate_jupyter.runners.context import activate as _set_context

__all__ = ["FakeReplicate"]

TERMINAL = ("succeeded", "failed", "canceled")
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
        return out


class FakeReplicate:
    """Replicate's HTTP API on 127.0.0.1, for tests. `models` maps "owner/name" → predictor reference."""

    def __init__(self, models: dict[str, Any], token: str = "r8_fake_token", boot_delay: float = 0.05,
                 no_stream: set[str] | frozenset = frozenset()) -> None:
        self.token = token
        self.no_stream = set(no_stream)  # models without streaming support: no urls.stream, clients must poll
        self.drop_streams_after: int | None = None  # cut every SSE connection after this many events
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

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.root = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True, name="fake-replicate").start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            for p in list(self.predictions.values()):
                p.cancel_event.set()
            self._server.shutdown()
            self._server.server_close()
            self._server = None

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
    def create(self, model: _Model, body: dict) -> _Prediction:
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
        with self._lock:
            self.predictions[p.id] = p
        threading.Thread(target=self._run, args=(p, clean), daemon=True, name=f"fake-replicate-{p.id}").start()
        return p

    def _resolve_file_url(self, value: Any) -> Any:
        """A `urls.get` of an uploaded file is resolved here, server-side, as Replicate does."""
        if isinstance(value, str) and value.startswith(self.url + "/files/"):
            fid = value.rsplit("/", 1)[-1]
            if fid in self.files:
                data, name, ctype = self.files[fid]
                return InputFile(data, name=name, content_type=ctype)
        return value

    def _run(self, p: _Prediction, clean: dict) -> None:
        if self.boot_delay:
            time.sleep(self.boot_delay)
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
            p.metrics = {"predict_time": round(seconds, 6), "total_time": round(seconds + self.boot_delay, 6)}
            p.cond.notify_all()
        if status == "failed":
            p.push("error", json.dumps({"detail": error}))
            p.push("done", json.dumps({"reason": "error"}))
        elif status == "canceled":
            p.push("done", json.dumps({"reason": "canceled"}))
        else:
            if not isinstance(p.output, list) and output is not None:
                p.push("output", output if isinstance(output, str) else json.dumps(output))
            p.push("done", "{}")

    def cancel(self, p: _Prediction) -> None:
        p.cancel_event.set()
        self._finish(p, "canceled", None, None, _since(p.started_at) if p.started_at else 0.0)


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
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _authorized(self) -> bool:
        auth = self.headers.get("Authorization") or ""
        scheme, _, token = auth.partition(" ")
        return scheme in ("Bearer", "Token") and bool(token) and token == self.server_fake.token

    def _dispatch(self, method: str) -> None:
        fake = self.server_fake
        path = urlparse(self.path).path
        fake.requests.append((method, path))
        try:
            if path.startswith("/delivery/") and method == "GET":
                return self._delivery(path[len("/delivery/"):])
            if not (path.startswith("/v1/") or path.startswith("/stream/")):
                raise _Problem(404, "Not found", "Not found.")
            if not self._authorized():
                self._body()
                raise _Problem(401, "Unauthenticated", "You did not pass a valid authentication token")
            parts = [x for x in path.split("/") if x]
            if parts[0] == "stream" and len(parts) == 2 and method == "GET":
                return self._stream(parts[1])
            parts = parts[1:]
            if parts[:1] == ["models"] and len(parts) >= 3:
                model = fake.models.get(f"{parts[1]}/{parts[2]}")
                if model is None:
                    raise _Problem(404, "Not found", "Not found.")
                if len(parts) == 3 and method == "GET":
                    return self._send_json(200, model.model_json(fake.root))
                if len(parts) == 5 and parts[3] == "versions" and method == "GET":
                    if parts[4] != model.version:
                        raise _Problem(404, "Not found", "Not found.")
                    return self._send_json(200, model.version_json())
                if len(parts) == 4 and parts[3] == "predictions" and method == "POST":
                    return self._create(model, json.loads(self._body() or b"{}"))
            if parts == ["predictions"] and method == "POST":
                body = json.loads(self._body() or b"{}")
                version = str(body.get("version") or "")
                vid = version.split(":", 1)[-1]
                model = next((m for m in fake.models.values() if m.version == vid), None)
                if model is None:
                    raise _Problem(422, "Invalid version or not permitted",
                                   "The specified version does not exist (or perhaps you don't have permission to use it?)")
                return self._create(model, body)
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
            if parts[:1] == ["files"] and len(parts) == 2 and method == "GET":
                f = fake.files.get(parts[1])
                if f is None:
                    raise _Problem(404, "Not found", "Not found.")
                return self._send_json(200, self._file_json(parts[1], *f))
            raise _Problem(404, "Not found", "Not found.")
        except _Problem as exc:
            self._problem(exc)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    # ----- endpoints ---------------------------------------------------------------------------
    def _create(self, model: _Model, body: dict) -> None:
        fake = self.server_fake
        p = fake.create(model, body)
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
        start = int(str(self.headers.get("Last-Event-ID") or "-1").rsplit(":", 1)[-1] or -1) + 1
        stamp = int(time.time())
        i = start
        while True:
            with p.cond:
                while i >= len(p.events):
                    p.cond.wait(0.5)
                    if self.server_fake._server is None:
                        return
                batch = p.events[i:]
            for event, data in batch:
                drop = self.server_fake.drop_streams_after
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

"""The `replicate` backend: Replicate's cloud through its HTTP API, with the user's token.

The runner resolves models (a version's schema is cached for the process), creates the
prediction with the parameters replicate-python sends (`webhook`, `webhook_events_filter`,
`stream`, `Prefer: wait`, `Cancel-After`, by version, by model or by deployment) and hands it to
`follow.py`, which follows it to Completed; `files.py` moves files both ways (outputs embedded
before Replicate deletes them, an hour on); `remote.py` wraps predictions this kernel did not
create (`predictions.get/list`).

- Metrics: `predict_time` from Replicate. Replicate does not say which hardware ran a model, so
  the SKU comes from the `hardware` option (one SKU, or a map model → SKU), else `default_hardware`
  (gpu-t4), said once per model as a Python warning (and on every prediction in its bill's
  assumptions and the cost line's "(assumed)"), never in `logs`, which hold only what the model
  printed; cost = predict_time × that SKU's price.
- Cancel / kernel interrupt: `POST /v1/predictions/{id}/cancel`; when Replicate answers that it
  is over (`canceled`), that answer is its Completed at once, as replicate-python copies it into
  the prediction; otherwise the run is followed to Replicate's final state (its predict_time
  is what is billed). `reload()` likewise ends a run whose answer is final. A Ctrl-C while the create
  request is still out does not cut that request: it goes on in its own thread, and the
  prediction is canceled the moment its id is known (nothing is left running unseen).
- Errors: 401 → a BackendError telling the user to `%replicate login` (the token is never echoed);
  404 → ModelNotFound; unreachable → BackendError naming the URL; 422 at create → a failed
  prediction carrying Replicate's detail; a failed model → its error and logs.
"""
from __future__ import annotations

import difflib
import os
import threading
import warnings
from typing import TYPE_CHECKING, Any

from replicate_jupyter.errors import BackendError, InputError, ModelNotFound, Problem
from replicate_jupyter.prediction.events import TERMINAL, Completed
from replicate_jupyter.runners import threads
from replicate_jupyter.runners.base import ModelHandle, Runner
from replicate_jupyter.runners.remote import RunTable
from replicate_jupyter.runners.replicate.api import DEFAULT_BASE_URL, APIError, ReplicateAPI, scrub
from replicate_jupyter.runners.replicate.files import Files
from replicate_jupyter.runners.replicate.follow import NOTE, Follower, Lost, ReplicateRun
from replicate_jupyter.runners.replicate.remote import Remote
from replicate_jupyter.runners.replicate.token import Token

if TYPE_CHECKING:
    from replicate_jupyter.prediction.prediction import Prediction

__all__ = ["ReplicateRunner", "HardwareAssumed", "parse_ref", "forget", "is_version_id"]

OPTIONS = ("base_url", "hardware", "default_hardware", "upload_threshold", "poll_interval", "wait", "timeout",
           "lost_after")

#: (base_url, ref) → ModelHandle, for the whole process: a version's schema never changes, and
#: resolving is on every run's path (a pinned `owner/name:version` is cached for good; a bare
#: `owner/name` keeps the latest version seen until the kernel restarts or `forget()` is called).
_HANDLES: dict[tuple[str, str], ModelHandle] = {}
_HANDLES_LOCK = threading.Lock()

_BODY_KEYS = ("webhook", "webhook_completed", "webhook_events_filter")


class HardwareAssumed(UserWarning):
    """A model's cost rests on an assumed SKU: Replicate does not say which hardware runs it."""


def forget() -> None:
    """Drop the cached model versions (to pick up a newly pushed latest version)."""
    with _HANDLES_LOCK:
        _HANDLES.clear()


def is_version_id(ref: str) -> bool:
    """A bare version id (64 hex digits), as `predictions.create(version="5c7d…")` takes it."""
    return len(ref) == 64 and all(c in "0123456789abcdef" for c in ref)


def parse_ref(ref: str) -> tuple[str, str, str | None]:
    """`owner/name` or `owner/name:version` → (owner, name, version)."""
    base, _, version = ref.partition(":")
    owner, _, name = base.partition("/")
    if not owner or not name or "/" in name or any(c.isspace() for c in ref):
        raise ModelNotFound(ref, backend="replicate",
                            detail="Replicate models are named owner/name or owner/name:version")
    return owner, name, version or None


def _check_options(token: Any, unknown: dict[str, Any]) -> None:
    """Options are settings kept in the notebook: a token must never be one."""
    problems = []
    if token is not None:
        problems.append(Problem("token", "forbidden", "<hidden>", "no token option", message=(
            "the replicate backend never takes a token as an option (it would be kept in the notebook): "
            "run %replicate login, or set REPLICATE_API_TOKEN")))
    problems += [Problem(k, "unknown", v, "one of: " + ", ".join(OPTIONS), message=(
        f"unknown option for the replicate backend (options: {', '.join(OPTIONS)})")) for k, v in sorted(unknown.items())]
    if problems:
        raise InputError(problems, model="the replicate backend")


class ReplicateRunner(Runner):
    name = "replicate"
    concurrent = True
    max_inflight = 32  # one SSE stream each: well inside the client's connection pool

    def __init__(self, base_url: str | None = None, hardware: str | dict[str, str] | None = None,
                 default_hardware: str = "gpu-t4", upload_threshold: int = 256 * 1024,
                 poll_interval: float | None = None, wait: float | None = None, timeout: Any = 30.0,
                 lost_after: float = 600.0, token: Any = None, credentials: Token | None = None,
                 **unknown: Any) -> None:
        """`credentials`: a `Token` object (what `Client(api_token=...)` passes; never a
        setting). Without it the kernel's login token or REPLICATE_API_TOKEN is used."""
        _check_options(token, unknown)
        host = os.environ.get("REPLICATE_BASE_URL", "").rstrip("/")  # replicate-python's (the host, no /v1)
        from_host = (host if host.endswith("/v1") else host + "/v1") if host else None
        self.base_url = (base_url or os.environ.get("REPLICATE_API_BASE_URL") or from_host or DEFAULT_BASE_URL).rstrip("/")
        self.hardware = hardware
        self.default_hardware = default_hardware
        self.upload_threshold = int(upload_threshold)
        if poll_interval is None:  # replicate-python's setting, and its default
            poll_interval = float(os.environ.get("REPLICATE_POLL_INTERVAL", "0.5"))
        self.poll_interval = float(poll_interval)
        self.wait = float(wait) if wait else None
        self.lost_after = float(lost_after)
        self.credentials = credentials
        self.api = ReplicateAPI(self.base_url, timeout=timeout, token=credentials)
        self.files = Files(self.api, self.upload_threshold)
        self.remote = Remote(self)
        self._runs: RunTable[ReplicateRun] = RunTable()
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
        if is_version_id(ref):  # a bare version id: Replicate knows its model, we learn it from the answer
            return ModelHandle(name=f"version {ref[:12]}", version=ref, schema={}, extra={"pinned": True, "bare": True})
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
        return self.remember(model_name, v, model, pinned=bool(version), ref=ref)

    def remember(self, model_name: str, version: dict, model: dict | None = None, *, pinned: bool,
                 ref: str | None = None) -> ModelHandle:
        """Cache the handle of a version Replicate described (by `resolve`, or by a user's
        `models.get(...)` / `versions.get(...)`, so running it next asks nothing again)."""
        schema = version.get("openapi_schema")
        if not isinstance(schema, dict) or not schema:
            raise BackendError(f"Replicate gave no input schema for {ref or model_name} (no published version)",
                               url=self.api.url(f"models/{model_name}"))
        model = model or {}
        handle = ModelHandle(name=model_name, version=version.get("id"), schema=schema,
                             description=str(model.get("description") or ""),
                             extra={"pinned": pinned, "url": model.get("url"), "cog_version": version.get("cog_version"),
                                    "model": model, "version": version})
        key = ref or (f"{model_name}:{version.get('id')}" if pinned else model_name)
        with _HANDLES_LOCK:
            _HANDLES[(self.base_url, key)] = handle
        return handle

    def resolve_deployment(self, name: str) -> ModelHandle:
        """A deployment `owner/name`: its current release's model and schema."""
        key = (self.base_url, f"deployment:{name}")
        cached = _HANDLES.get(key)
        if cached is not None:
            return cached
        owner, _, short = name.partition("/")
        try:
            dep = self.api.get_deployment(owner, short)
        except APIError as exc:
            if exc.status == 404:
                raise ModelNotFound(name, backend="replicate", detail=f"Replicate has no deployment {name}") from None
            raise
        release = dep.get("current_release") or {}
        model = self.resolve(f"{release.get('model')}:{release.get('version')}")
        handle = ModelHandle(name=model.name, version=model.version, schema=model.schema,
                             extra={**model.extra, "deployment": name, "deployment_json": dep})
        with _HANDLES_LOCK:
            _HANDLES[key] = handle
        return handle

    def models(self) -> list[ModelHandle]:
        """The models resolved on this service so far (Replicate has no short list of "all models")."""
        with _HANDLES_LOCK:
            mine = [h for (base, _), h in _HANDLES.items() if base == self.base_url]
        return list({h.name + (h.version or ""): h for h in mine}.values())

    def known_handle(self, model: str | None, version: str | None) -> ModelHandle | None:
        """A handle already resolved for this model/version (for predictions made elsewhere)."""
        with _HANDLES_LOCK:
            for (base, _), h in _HANDLES.items():
                if base == self.base_url and h.name == model and (version is None or h.version == version):
                    return h
        return None

    # ----- hardware --------------------------------------------------------------------------
    def hardware_for(self, model: str) -> tuple[str, bool]:
        """(SKU, whether it is the fallback default)."""
        if isinstance(self.hardware, str) and self.hardware:
            return self.hardware, False
        if isinstance(self.hardware, dict) and model in self.hardware:
            return self.hardware[model], False
        return self.default_hardware, True

    # ----- execute ---------------------------------------------------------------------------
    def execute(self, p: Prediction) -> None:
        sku, fallback = self.hardware_for(p.model)
        with self._runs.track(p.id, ReplicateRun(p, self.api)) as run:
            follower = Follower(run, self.files, sku, self.poll_interval, self.lost_after)
            try:
                try:
                    self._create_guarded(run, follower)
                except APIError as exc:
                    if exc.status == 422:  # Replicate's own validation: a failed prediction with its detail
                        p.emit(Completed(status="failed", metrics={"hardware": sku},
                                         error=f"Replicate rejected the input: {exc.detail or exc.title}"))
                        return
                    raise
                if fallback and p.model not in self._hardware_noted:
                    self._hardware_noted.add(p.model)
                    warnings.warn(f"[replicate-jupyter] Replicate does not report the hardware of {p.model}; costing "
                                  f"it as {sku} (set it with %replicate use replicate --hardware SKU)",
                                  HardwareAssumed, stacklevel=2)
                if p.cancel_event.is_set():
                    run.send_cancel()
                follower.follow()
            except KeyboardInterrupt:
                # the kernel's interrupt: api.execute cancels; someone must still see the final state
                if run.id and not p.finished:
                    threads.submit(follower.finish_later)
                raise
            except BackendError as exc:
                if p.finished:
                    return
                if run.id is None:
                    raise  # nothing was created: the error is the whole story
                run.note(f"{NOTE}{scrub(exc)}; following prediction {run.id} by polling\n")
                try:
                    follower.poll()
                except Lost as lost:
                    follower.give_up(lost)
                except BackendError as exc2:
                    if not p.finished:
                        p.emit(Completed(status="failed", metrics=follower.metrics(None),
                                         error=f"Lost track of Replicate prediction {run.id}: {scrub(exc2)}"))

    def _create_guarded(self, run: ReplicateRun, follower: Follower) -> None:
        """The create request on a thread of its own, waited for here: a Ctrl-C in this thread
        does not cut the request (which may already have created the prediction); the thread
        cancels the prediction as soon as its id is known, and follows it to its final state."""
        outcome: dict[str, BaseException] = {}
        sent = threading.Event()

        def create() -> None:
            try:
                self._create(run)
            except BaseException as exc:  # noqa: BLE001 — handed to the waiting thread
                outcome["error"] = exc
            with run.lock:
                run.created = True
                late = run.interrupted
            sent.set()
            if late:
                self._after_interrupted_create(run, follower, outcome.get("error"))

        threads.submit(create)
        try:
            while not sent.wait(0.5):
                pass
        except KeyboardInterrupt:
            with run.lock:
                run.interrupted = not run.created
            raise
        if "error" in outcome:
            raise outcome["error"]

    def _after_interrupted_create(self, run: ReplicateRun, follower: Follower, error: BaseException | None) -> None:
        p = run.p
        if run.id:
            run.note(f"{NOTE}interrupted while Replicate was creating {run.id}; canceling it\n")
            follower.finish_later()
        elif not p.finished:
            why = f" ({scrub(error)})" if error is not None else ""
            p.emit(Completed(status="canceled", metrics=follower.metrics(None),
                             error=f"interrupted before Replicate created the prediction{why}"))

    def _create(self, run: ReplicateRun) -> None:
        p = run.p
        params = p.params
        strategy = params.get("file_encoding_strategy")
        body: dict[str, Any] = {"input": {k: self.files.encode(v, strategy) for k, v in p.input.items()}}
        for key in _BODY_KEYS:
            if params.get(key) is not None:
                body[key] = params[key]
        stream = params.get("stream", True)  # ours: live tokens and logs unless the caller said
        if stream is not None:
            body["stream"] = bool(stream)
        wait = params.get("wait", self.wait)
        cancel_after = params.get("cancel_after")

        def send(path: str, with_version: bool) -> dict:
            b = {**body, "version": p.version} if with_version else body
            return self.api.create_prediction(b, path=path, wait=wait, cancel_after=cancel_after)

        handle = p.handle
        deployment = params.get("deployment") or (handle.extra.get("deployment") if handle is not None else None)
        pinned = bool(handle is not None and handle.extra.get("pinned"))
        if deployment:
            run.remote = send(f"deployments/{deployment}/predictions", False)
        elif pinned or not p.version:
            run.remote = send("predictions", True) if p.version else send(f"models/{p.model}/predictions", False)
        else:
            # `owner/name` runs the model's latest version by its own endpoint (official models need
            # it); a model that only runs by version answers 404 there, so fall back to the version.
            try:
                run.remote = send(f"models/{p.model}/predictions", False)
            except APIError as exc:
                if exc.status != 404:
                    raise
                run.remote = send("predictions", True)
        remote = run.remote
        p.remote_id = remote.get("id")
        p.urls = dict(remote.get("urls") or {})
        if remote.get("version") and remote["version"] != p.version:
            p.version = remote["version"]
        if handle is not None and handle.extra.get("bare") and remote.get("model"):
            p.model = remote["model"]  # a bare version id: Replicate says which model it is

    # ----- cancel, reload, remote predictions ---------------------------------------------------
    def cancel(self, p: Prediction) -> None:
        run = self._runs.get(p.id)
        if run is not None and run.id:
            self._fold_final(run, run.send_cancel())
        elif run is None:
            self.remote.cancel(p)
        # not yet created: execute() sees the cancel event right after creating it

    def reload(self, p: Prediction) -> None:
        """Ask Replicate for the prediction now. A run this runner follows is live already (its
        follower turns every log line and item into an event), so from the answer it takes a
        start not yet seen, and a final state not yet seen (the Completed, through the one
        event stream: `status` is `canceled` right after `cancel(); reload()`, as with
        replicate-python); a prediction from elsewhere is brought up to date (`remote.py`)."""
        run = self._runs.get(p.id)
        if run is None or run.follower is None:
            self.remote.reload(p)
            return
        if not run.id or p.finished:
            return
        data = run.follower.get()
        if data is not None and data.get("status") != "starting":
            run.start(run.follower.sku)
        self._fold_final(run, data)

    @staticmethod
    def _fold_final(run: ReplicateRun, data: dict | None) -> None:
        """Replicate's answer (to a cancel or a GET) saying the prediction is over: its
        Completed now, once (the follower skips what comes after)."""
        follower = run.follower
        if data is None or data.get("status") not in TERMINAL or follower is None or run.p.finished:
            return
        run.start(follower.sku)
        follower.complete(data)

    def watch(self, p: Prediction) -> None:
        """Someone waits for `p`: make sure something follows it (predictions from elsewhere)."""
        self.remote.watch(p)

    def close(self) -> None:
        self.api.close()

"""The `replicate` backend: Replicate's cloud through its HTTP API, with the user's token.

The runner resolves models (a version's schema is cached for the process), creates the
prediction with `stream: true` and hands it to `follow.py`, which follows it to Completed;
`files.py` moves files both ways (outputs embedded before Replicate deletes them, an hour on).

- Metrics: `predict_time` from Replicate. Replicate does not say which hardware ran a model, so
  the SKU comes from the `hardware` option (one SKU, or a map model → SKU), else `default_hardware`
  (gpu-t4) with a log line saying so; cost = predict_time × that SKU's price.
- Cancel / kernel interrupt: `POST /v1/predictions/{id}/cancel`; the run is then followed to
  Replicate's `canceled` state (its predict_time is what is billed).
- Errors: 401 → a BackendError telling the user to `%replicate login` (the token is never echoed);
  404 → ModelNotFound; unreachable → BackendError naming the URL; 422 at create → a failed
  prediction carrying Replicate's detail; a failed model → its error and logs.
"""
from __future__ import annotations

import difflib
import os
import threading
from typing import TYPE_CHECKING, Any

from replicate_jupyter.errors import BackendError, InputError, ModelNotFound, Problem
from replicate_jupyter.prediction.events import Completed
from replicate_jupyter.runners.base import ModelHandle, Runner
from replicate_jupyter.runners.remote import RunTable
from replicate_jupyter.runners.replicate.api import DEFAULT_BASE_URL, APIError, ReplicateAPI, scrub
from replicate_jupyter.runners.replicate.files import Files
from replicate_jupyter.runners.replicate.follow import NOTE, Follower, ReplicateRun

if TYPE_CHECKING:
    from replicate_jupyter.prediction.prediction import Prediction

__all__ = ["ReplicateRunner", "parse_ref", "forget"]

OPTIONS = ("base_url", "hardware", "default_hardware", "upload_threshold", "poll_interval", "wait", "timeout")

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

    def __init__(self, base_url: str | None = None, hardware: str | dict[str, str] | None = None,
                 default_hardware: str = "gpu-t4", upload_threshold: int = 256 * 1024,
                 poll_interval: float = 0.5, wait: float | None = None, timeout: float = 30.0,
                 token: Any = None, **unknown: Any) -> None:
        _check_options(token, unknown)
        self.base_url = (base_url or os.environ.get("REPLICATE_API_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.hardware = hardware
        self.default_hardware = default_hardware
        self.upload_threshold = int(upload_threshold)
        self.poll_interval = float(poll_interval)
        self.wait = float(wait) if wait else None
        self.api = ReplicateAPI(self.base_url, timeout=float(timeout))
        self.files = Files(self.api, self.upload_threshold)
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

    # ----- execute ---------------------------------------------------------------------------
    def execute(self, p: Prediction) -> None:
        sku, fallback = self.hardware_for(p.model)
        with self._runs.track(p.id, ReplicateRun(p, self.api)) as run:
            follower = Follower(run, self.files, sku, self.poll_interval)
            try:
                try:
                    self._create(run)
                except APIError as exc:
                    if exc.status == 422:  # Replicate's own validation: a failed prediction with its detail
                        p.emit(Completed(status="failed", metrics={"hardware": sku},
                                         error=f"Replicate rejected the input: {exc.detail or exc.title}"))
                        return
                    raise
                if fallback and p.model not in self._hardware_noted:
                    self._hardware_noted.add(p.model)
                    run.note(f"{NOTE}Replicate does not report the hardware of {p.model}; costing it as {sku} "
                             f"(set it with %replicate use replicate --hardware SKU)\n")
                if p.cancel_event.is_set():
                    run.send_cancel()
                follower.follow()
            except KeyboardInterrupt:
                # the kernel's interrupt: api.execute cancels; someone must still see the final state
                if run.id and not p.done:
                    threading.Thread(target=follower.finish_later, daemon=True,
                                     name=f"rj-replicate-finish-{p.id}").start()
                raise
            except BackendError as exc:
                if p.done:
                    return
                if run.id is None:
                    raise  # nothing was created: the error is the whole story
                run.note(f"{NOTE}{scrub(exc)}; following prediction {run.id} by polling\n")
                try:
                    follower.poll()
                except BackendError as exc2:
                    if not p.done:
                        p.emit(Completed(status="failed", metrics=follower.metrics(None),
                                         error=f"Lost track of Replicate prediction {run.id}: {scrub(exc2)}"))

    def _create(self, run: ReplicateRun) -> None:
        p = run.p
        body: dict[str, Any] = {"input": {k: self.files.encode(v) for k, v in p.input.items()}, "stream": True}
        pinned = bool(p.handle is not None and p.handle.extra.get("pinned"))
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

    # ----- cancel ----------------------------------------------------------------------------
    def cancel(self, p: Prediction) -> None:
        run = self._runs.get(p.id)
        if run is not None and run.id:
            run.send_cancel()
        # not yet created: execute() sees the cancel event right after creating it

    def reload(self, p: Prediction) -> None:
        """Nothing to fetch: events keep the prediction live."""

    def close(self) -> None:
        self.api.close()

"""The `ray` backend: one Ray actor per model, predictions streamed back as generator items.

    %replicate use ray --address 10.0.0.5:6379 --num-gpus 1
    rj.run("local/shapes", input={...}, on="ray")

The kernel connects as a Ray *driver* (not Ray Client: `ray://` cannot stream generator items
as they are produced). Each model gets a named actor (`runners/ray_actor.py`) that loads the
predictor on its worker, runs `setup()` once and serves predictions as streaming generator
calls; every event of a run is one item, turned into the same events the other backends emit.

Where a prediction can end up:
- the predictor returns / raises / is canceled → the actor's own Completed (predict_time and
  setup_time measured on the actor, hardware from the worker's device).
- cancel or kernel interrupt → the actor's cancel flag (a step loop stops at its next
  `progress()`, an iterator after its current item) and `ray.cancel` on the stream; the actor
  then reports the partial predict_time.
- the actor's worker or node dies *before* the run started → Ray restarts the actor
  (`max_restarts`) and the run is submitted again (`start_retries`); nothing ran twice.
- it dies *after* the run started → failed, naming the node and process; never re-run
  silently (Ray's own task retry is off for the stream for that reason). Ray restarts the
  actor for the next prediction.
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from typing import Any

from replicate_jupyter.model import predictors
from replicate_jupyter.errors import BackendError, ModelNotFound
from replicate_jupyter.prediction.events import Completed, Log, Started
from replicate_jupyter.runners.base import ModelHandle, Runner

__all__ = ["RayRunner"]

_ACTOR_PREFIX = "rj-model-"
_current_address: str | None = None  # the cluster this process is a driver of (set by our ray.init)


class _Run:
    def __init__(self, p, actor, entry: "_ActorEntry") -> None:
        self.p = p
        self.actor = actor
        self.entry = entry
        self.stream: Any = None
        self.started = False
        self.cancel_sent = False


class _ActorEntry:
    """One model's actor as the driver knows it."""

    def __init__(self, name: str, handle: Any, model: str, version: str | None) -> None:
        self.name = name
        self.handle = handle
        self.model = model
        self.version = version
        self.info: dict[str, Any] | None = None  # where it lives (node_ip, pid): refreshed after failures


class RayRunner(Runner):
    """Predictions on a Ray cluster. Options (all optional, all `%replicate use ray --opt v`):

    address     the cluster's GCS address `host:port` (default: $RAY_ADDRESS, else a local
                Ray started in this kernel)
    num_gpus    GPUs per model actor (default: 1 when the cluster has GPUs, else 0)
    num_cpus    CPUs per model actor (default: Ray's, 1 to place and 0 while running)
    hardware    the SKU billed (default: from the worker's device, as the local runner does)
    namespace   Ray namespace for the model actors (default: one private to this kernel)
    resources   extra Ray resources per actor, e.g. {"node:10.0.0.7": 0.01} to pin a node
    max_restarts         how often Ray restarts a model's actor after its worker/node is lost
    start_retries        how often a run that had not started is submitted again after a loss
    placement_timeout    seconds to wait for an actor to be placed before failing the run
    runtime_env          passed to the actors (e.g. {"pip": [...]} on a cluster without the package)
    """

    name = "ray"
    concurrent = True

    def __init__(self, address: str | None = None, num_gpus: float | None = None, num_cpus: float | None = None,
                 hardware: str | None = None, namespace: str | None = None, resources: dict | None = None,
                 max_restarts: int = 3, start_retries: int = 2, placement_timeout: float = 120.0,
                 preview_rate: float = 4.0, runtime_env: dict | None = None, max_concurrency: int = 8) -> None:
        if address is not None and not isinstance(address, str):
            raise ValueError(f"address must be host:port, got {address!r}")
        if address and address.startswith("ray://"):
            raise ValueError("Ray Client addresses (ray://) cannot stream results as they are produced; "
                             "give the cluster's GCS address instead, e.g. --address HEAD_IP:6379, "
                             "and run the kernel where it can reach the cluster as a driver")
        for opt, val in (("num_gpus", num_gpus), ("num_cpus", num_cpus)):
            if val is not None and (not isinstance(val, (int, float)) or isinstance(val, bool) or val < 0):
                raise ValueError(f"{opt} must be a number >= 0, got {val!r}")
        if resources is not None and not isinstance(resources, dict):
            raise ValueError(f"resources must be a mapping of resource name to amount, got {resources!r}")
        self.address = address
        self.num_gpus = num_gpus
        self.num_cpus = num_cpus
        self.hardware = hardware
        self.namespace = namespace
        self.resources = dict(resources or {})
        self.max_restarts = int(max_restarts)
        self.start_retries = int(start_retries)
        self.placement_timeout = float(placement_timeout)
        self.preview_rate = float(preview_rate)
        self.runtime_env = runtime_env
        self.max_concurrency = int(max_concurrency)
        self._lock = threading.RLock()
        self._actors: dict[str, _ActorEntry] = {}
        self._runs: dict[str, _Run] = {}
        self._owns_ray = False
        self._connected_to: str | None = None
        self._remote_tried: str | None = None  # the last ref looked for on the cluster (for the message)

    # ----- connection ----------------------------------------------------------------------
    def _ray(self):
        """Connect on first use (so `%replicate use ray --address …` never blocks or fails on a
        typo in another option), and return the ray module."""
        import ray

        global _current_address
        with self._lock:
            address = self.address or os.environ.get("RAY_ADDRESS") or None
            if ray.is_initialized():
                if not self.address or self.address == _current_address or _current_address is None:
                    if self._connected_to is None:
                        self._connected_to = _current_address or "existing"
                    return ray
                # another cluster than the one this kernel is connected to: a process is the
                # driver of one cluster at a time, so switch (the previous runner was closed by use())
                _check_reachable(self.address)
                ray.shutdown()
            if address and address.startswith("ray://"):
                raise BackendError("Ray Client addresses (ray://) cannot stream results; set the cluster's "
                                   "GCS address (HEAD_IP:6379) instead", url=address)
            if address and address != "auto":
                _check_reachable(address)
            kwargs: dict[str, Any] = dict(namespace=self.namespace, log_to_driver=False,
                                          logging_level=logging.WARNING, ignore_reinit_error=True)
            try:
                if address:
                    ray.init(address=address, **kwargs)
                else:  # never attach to whatever cluster someone else last started on this machine
                    ray.init(address="local", include_dashboard=False, **kwargs)
            except Exception as exc:
                where = address or "a local Ray instance"
                raise BackendError(f"Could not connect to the Ray cluster at {where}: {type(exc).__name__}: "
                                   f"{str(exc).splitlines()[0] if str(exc) else ''}",
                                   url=address, tried=[f"ray.init(address={address or 'local'!r})"]) from None
            self._owns_ray = True
            self._connected_to = _current_address = address or "local"
            return ray

    def _gpus_per_actor(self, ray) -> float:
        if self.num_gpus is not None:
            return float(self.num_gpus)
        try:
            return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
        except Exception:
            return 0.0

    # ----- models --------------------------------------------------------------------------
    def resolve(self, ref: Any) -> ModelHandle:
        if isinstance(ref, ModelHandle):
            ref = ref.name
        self._ray()  # connect here, on the caller's (main) thread, so a bad address fails before dispatch
        try:
            spec = predictors.load(ref)
        except ModelNotFound as exc:
            if not isinstance(ref, str):
                raise
            remote = self._resolve_remote(ref)  # a path that exists only on the cluster
            if remote is None:
                raise ModelNotFound(exc.ref, suggestions=exc.suggestions, backend="ray",
                                    detail="no such predictor here nor on the Ray cluster"
                                    if self._remote_tried == ref else "") from None
            return remote
        return ModelHandle(name=spec.name, version=spec.version, schema=spec.schema,
                           extra={"spec": spec, "ray_ref": _remote_ref(spec, ref), "key": spec.key})

    def _resolve_remote(self, ref: str) -> ModelHandle | None:
        # only paths (a file on the cluster's filesystem): an unknown owner/name is a typo, not remote
        if not (ref.endswith(".py") or ".py:" in ref or ref.startswith(("/", "./", "../")) or ref.endswith("cog.yaml")):
            return None
        ray = self._ray()
        self._remote_tried = ref
        key = f"remote:{ref}"
        try:
            entry = self._actor(key, ref, None, None)
            desc = ray.get(entry.handle.describe.remote(), timeout=self.placement_timeout)
        except Exception:
            self._drop(key)
            return None
        entry.model, entry.version = desc["name"], desc["version"]
        return ModelHandle(name=desc["name"], version=desc["version"], schema=desc["schema"],
                           extra={"spec": None, "ray_ref": ref, "key": key})

    def models(self) -> list[ModelHandle]:
        """The embedded models plus every model with an actor on the cluster (in our namespace)."""
        from replicate_jupyter.models import DESCRIPTIONS, EMBEDDED

        loaded: dict[str, dict] = {}
        try:
            ray = self._ray()
            names = [n for n in ray.util.list_named_actors() if str(n).startswith(_ACTOR_PREFIX)]
            handles = {n: ray.get_actor(n) for n in names}
            infos = ray.get([h.info.remote() for h in handles.values()], timeout=10)
            for info in infos:
                loaded[info["name"]] = info
        except BackendError:
            raise
        except Exception:
            pass
        out = []
        for name in sorted(set(predictors.known_names()) | set(loaded)):
            info = loaded.get(name)
            out.append(ModelHandle(name=name, version=(info or {}).get("version"), schema={},
                                   description=DESCRIPTIONS.get(name, ""),
                                   extra={"warm": bool(info and info.get("ready")), "loaded": info is not None,
                                          "node_ip": (info or {}).get("node_ip"), "source": EMBEDDED.get(name)}))
        return out

    # ----- actors --------------------------------------------------------------------------
    def _actor(self, key: str, ref: Any, model: str | None, version: str | None) -> _ActorEntry:
        ray = self._ray()
        from replicate_jupyter.runners.ray.actor import actor_class

        with self._lock:
            entry = self._actors.get(key)
            if entry is not None and entry.version == version:
                return entry
            if entry is not None:  # the predictor changed on disk: a fresh actor loads the new code
                self._drop(key)
            # the placement is part of the name: a runner pinned elsewhere gets its own actor
            placement = (self._gpus_per_actor(ray), self.num_cpus, sorted(self.resources.items()), self.hardware)
            name = _ACTOR_PREFIX + hashlib.sha1(f"{key}@{version}|{placement}".encode()).hexdigest()[:16]
            options: dict[str, Any] = dict(
                name=name, get_if_exists=True, max_restarts=self.max_restarts, max_task_retries=3,
                num_gpus=self._gpus_per_actor(ray),
            )
            if self.num_cpus is not None:
                options["num_cpus"] = self.num_cpus
            if self.resources:
                options["resources"] = dict(self.resources)
            if self.runtime_env:
                options["runtime_env"] = self.runtime_env
            cls = ray.remote(concurrency_groups={"control": 4, "predict": max(1, self.max_concurrency)})(
                actor_class())
            handle = cls.options(**options).remote(ref, model, self.hardware, self.preview_rate)
            entry = self._actors[key] = _ActorEntry(name, handle, model or str(ref), version)
            return entry

    def _drop(self, key: str) -> None:
        entry = self._actors.pop(key, None)
        if entry is not None:
            try:
                import ray

                ray.kill(entry.handle, no_restart=True)
            except Exception:
                pass

    def actor_info(self, ref: Any) -> dict[str, Any]:
        """Where a model's actor lives now (node_ip, node_id, pid, actor_id, ready, …)."""
        handle = ref if isinstance(ref, ModelHandle) else self.resolve(ref)
        ray = self._ray()
        entry = self._actor(handle.extra["key"], handle.extra["ray_ref"], handle.name, handle.version)
        entry.info = ray.get(entry.handle.info.remote(), timeout=self.placement_timeout)
        return dict(entry.info)

    def actor(self, ref: Any):
        """The Ray actor handle serving a model (for `ray.get(actor.pid.remote())` and friends)."""
        handle = ref if isinstance(ref, ModelHandle) else self.resolve(ref)
        return self._actor(handle.extra["key"], handle.extra["ray_ref"], handle.name, handle.version).handle

    def _wait_placed(self, ray, entry: _ActorEntry, p) -> bool:
        """Wait until the actor answers (placed, constructed), or the run is canceled. Raises
        BackendError past `placement_timeout` naming what the actor asked for."""
        ref = entry.handle.info.remote()
        deadline = time.monotonic() + self.placement_timeout
        while True:
            ready, _ = ray.wait([ref], timeout=0.2)
            if ready:
                entry.info = ray.get(ref)
                return True
            if p.cancel_event.is_set():
                return False
            if time.monotonic() > deadline:
                asked = {"GPU": self._gpus_per_actor(ray), "CPU": self.num_cpus if self.num_cpus is not None else 1,
                         **self.resources}
                raise BackendError(f"No Ray node could take the actor for {entry.model} within "
                                   f"{self.placement_timeout:.0f}s (it asks for {asked}; the cluster has "
                                   f"{ray.cluster_resources()})", url=self._connected_to)

    # ----- running -------------------------------------------------------------------------
    def execute(self, p) -> None:
        from ray import exceptions as rex

        handle = p.handle
        try:
            ray = self._ray()
            entry = self._actor(handle.extra["key"], handle.extra["ray_ref"], handle.name, handle.version)
            if entry.info is None and not self._wait_placed(ray, entry, p):
                p.emit(Completed(status="canceled", error=p.cancel_reason, metrics={"predict_time": 0.0}))
                return
        except BackendError as exc:
            p.emit(Completed(status="failed", error=str(exc)))
            return
        except rex.RayActorError as exc:
            self._drop(handle.extra["key"])
            p.emit(Completed(status="failed", error=f"the Ray actor for {p.model} could not start: {_first_line(exc)}",
                             traceback=_creation_traceback(exc)))
            return
        run = _Run(p, entry.handle, entry)
        with self._lock:
            self._runs[p.id] = run
        try:
            self._run(ray, run)
        except KeyboardInterrupt:
            self._send_cancel(run)
            self._finish_canceled(ray, run)
            raise
        finally:
            with self._lock:
                self._runs.pop(p.id, None)

    def _run(self, ray, run: _Run) -> None:
        from ray import exceptions as rex

        p = run.p
        attempts = 0
        while not p.done:
            if p.cancel_event.is_set():
                p.emit(Completed(status="canceled", error=p.cancel_reason,
                                 metrics={"predict_time": 0.0, "hardware": (run.entry.info or {}).get("hardware")}))
                return
            run.stream = run.actor.predict.remote(p.id, p.input, p.secret_fields)
            if p.cancel_event.is_set():
                self._send_cancel(run)
            try:
                for ref in run.stream:
                    event = ray.get(ref)
                    if event.__class__ is Started:
                        run.started = True
                    elif event.__class__ is Completed and event.status == "canceled" and p.cancel_reason:
                        event = Completed(status="canceled", error=p.cancel_reason, metrics=event.metrics)
                    p.emit(event)
                return
            except rex.TaskCancelledError:
                self._finish_canceled(ray, run)
                return
            except (rex.RayActorError, rex.WorkerCrashedError, rex.NodeDiedError, rex.ObjectLostError) as exc:
                where = self._where(run.entry)
                run.entry.info = None  # it will be somewhere else (or another process) after the restart
                if p.cancel_event.is_set():
                    self._finish_canceled(ray, run, fallback_only=True)
                    return
                if not run.started and attempts < self.start_retries:
                    attempts += 1
                    p.emit(Log(text=f"[replicate-jupyter] the Ray actor for {p.model} was lost before the run "
                                    f"started ({where}: {_first_line(exc)}); submitting it again "
                                    f"({attempts}/{self.start_retries})\n"))
                    if not self._wait_placed(ray, run.entry, p):
                        continue  # canceled meanwhile: the loop's first check ends it
                    continue
                what = "during setup" if not run.started else "mid-prediction"
                p.emit(Completed(
                    status="failed",
                    error=(f"The Ray actor running {p.model} died {what} ({where}): {_first_line(exc)}. "
                           f"The run was not retried because it had already started; Ray restarts the actor "
                           f"for the next prediction."),
                    metrics={"predict_time": round(p.elapsed, 6), "hardware": p.metrics.get("hardware")}))
                return
            except rex.RayTaskError as exc:  # the actor method itself broke (not the model: that is Completed)
                p.emit(Completed(status="failed", error=f"the Ray actor for {p.model} failed: {_first_line(exc)}",
                                 traceback=str(exc),
                                 metrics={"predict_time": round(p.elapsed, 6), "hardware": p.metrics.get("hardware")}))
                return

    def _where(self, entry: _ActorEntry) -> str:
        info = entry.info or {}
        parts = []
        if info.get("node_ip"):
            parts.append(f"node {info['node_ip']}")
        if info.get("node_id"):
            parts.append(f"node id {info['node_id'][:12]}")
        if info.get("pid"):
            parts.append(f"worker pid {info['pid']}")
        return ", ".join(parts) or f"actor {entry.name}"

    def _finish_canceled(self, ray, run: _Run, fallback_only: bool = False) -> None:
        """The stream was cut by ray.cancel: ask the actor for the predict_time it measured once
        the predictor stopped (it stops at its next step); fall back to the driver's clock."""
        p = run.p
        if p.done:
            return
        metrics = None
        if not fallback_only:
            try:
                result = ray.get(run.actor.result.remote(p.id, 5.0), timeout=8)
                metrics = (result or {}).get("metrics")
            except Exception:
                metrics = None
        if not metrics:
            metrics = {"predict_time": round(p.elapsed, 6), "hardware": p.metrics.get("hardware")}
        p.emit(Completed(status="canceled", error=p.cancel_reason, metrics=metrics))

    def _send_cancel(self, run: _Run) -> None:
        if run.cancel_sent:
            return
        run.cancel_sent = True
        try:
            import ray

            run.actor.cancel.remote(run.p.id)  # the flag first: the step loop stops at its next step
            if run.stream is not None:
                ray.cancel(run.stream)  # then the stream itself
        except Exception as exc:
            run.p.emit(Log(text=f"[replicate-jupyter] ray.cancel failed: {exc}\n"))

    def cancel(self, p) -> None:
        with self._lock:
            run = self._runs.get(p.id)
        if run is not None and run.stream is not None:
            self._send_cancel(run)
        # otherwise the run is not submitted yet: execute() sees p.cancel_event before submitting

    def close(self) -> None:
        with self._lock:
            keys = list(self._actors)
        for k in keys:
            self._drop(k)
        if self._owns_ray:  # only a connection this runner made
            try:
                import ray

                ray.shutdown()
            except Exception:
                pass
            self._owns_ray = False
            self._connected_to = None
            _forget_connection()


def _forget_connection() -> None:
    global _current_address
    _current_address = None


def _remote_ref(spec: predictors.PredictorSpec, ref: Any) -> Any:
    """What the actor loads: a file reference (same path on the cluster), `hf:…`, or the class /
    object itself (pickled by Ray) for predictors defined in the notebook."""
    if spec.source:
        return spec.source
    if isinstance(ref, str) and ref.startswith("hf:"):
        return ref
    if spec.instance is not None:
        return spec.instance
    return spec.cls


def _check_reachable(address: str, timeout: float = 3.0) -> None:
    """Fail in seconds on a wrong address: ray.init itself retries an unreachable GCS for minutes."""
    import socket

    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise BackendError(f"The Ray address {address!r} is not host:port (the head's GCS port, 6379 by default)",
                           url=address)
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise BackendError(f"Could not reach the Ray cluster at {address}: {exc.strerror or exc} "
                           f"(is `ray start --head` running there, and is this its GCS port?)",
                           url=address, tried=[f"TCP connect {address}"]) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    for line in text.splitlines():
        line = line.strip()
        if line:
            return line
    return type(exc).__name__


def _creation_traceback(exc: BaseException) -> str | None:
    cause = getattr(exc, "cause", None) or getattr(exc, "__cause__", None)
    return str(cause) if cause is not None else None


"""The driver's table of model actors: naming, creating, placing and dropping them.

(`actor.py` is what runs *inside* an actor; this module is the driver's side of it.) Each
model gets one named actor, created with `get_if_exists`, so two runners — or a kernel restarted
onto the same cluster — share it instead of loading the model twice. The name holds everything
that makes an actor different: the model's key and version (a predictor changed on disk gets a
fresh actor that loads the new code) and its placement (GPUs, CPUs, resources, hardware), so a
runner pinned to another node gets its own.
"""
from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

from replicate_jupyter.errors import BackendError
from replicate_jupyter.model import predictors
from replicate_jupyter.runners.ray.cluster import Cluster

if TYPE_CHECKING:
    from replicate_jupyter.prediction.prediction import Prediction

__all__ = ["ACTOR_PREFIX", "ActorEntry", "ActorOptions", "Actors", "remote_ref"]

ACTOR_PREFIX = "rj-model-"


@dataclass(frozen=True)
class ActorOptions:
    """What every model actor of a runner is created with (see RayRunner's options)."""

    num_gpus: float | None = None
    num_cpus: float | None = None
    resources: dict[str, float] = field(default_factory=dict)
    hardware: str | None = None
    max_restarts: int = 3
    placement_timeout: float = 120.0
    preview_rate: float = 4.0
    runtime_env: dict | None = None
    max_concurrency: int = 8


class ActorEntry:
    """One model's actor as the driver knows it."""

    def __init__(self, name: str, handle: Any, model: str, version: str | None) -> None:
        self.name = name
        self.handle = handle
        self.model = model
        self.version = version
        self.info: dict[str, Any] | None = None  # where it lives (node_ip, pid): refreshed after failures

    def where(self) -> str:
        """Where it lived when last asked: node, node id, worker pid (for failure messages)."""
        info = self.info or {}
        parts = []
        if info.get("node_ip"):
            parts.append(f"node {info['node_ip']}")
        if info.get("node_id"):
            parts.append(f"node id {info['node_id'][:12]}")
        if info.get("pid"):
            parts.append(f"worker pid {info['pid']}")
        return ", ".join(parts) or f"actor {self.name}"


class Actors:
    """Model key → ActorEntry, for one runner. Thread-safe."""

    def __init__(self, cluster: Cluster, options: ActorOptions) -> None:
        self.cluster = cluster
        self.options = options
        self._entries: dict[str, ActorEntry] = {}
        self._lock = threading.RLock()

    def gpus_per_actor(self, ray: ModuleType) -> float:
        """The `num_gpus` option, else 1 when the cluster has GPUs, else 0."""
        if self.options.num_gpus is not None:
            return float(self.options.num_gpus)
        try:
            return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
        except Exception:
            return 0.0

    def get(self, key: str, ref: Any, model: str | None, version: str | None, slots: int | None = None) -> ActorEntry:
        """The actor serving `key` at `version`, created (or found on the cluster) if needed;
        `slots`: predict calls it takes at once, when more than `max_concurrency` (a batching model)."""
        ray = self.cluster.connect()
        from replicate_jupyter.runners.ray.actor import actor_class

        o = self.options
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.version == version:
                return entry
            if entry is not None:  # the predictor changed on disk: a fresh actor loads the new code
                self.drop(key)
            gpus = self.gpus_per_actor(ray)
            # the placement is part of the name: a runner pinned elsewhere gets its own actor
            placement = (gpus, o.num_cpus, sorted(o.resources.items()), o.hardware)
            name = ACTOR_PREFIX + hashlib.sha1(f"{key}@{version}|{placement}".encode()).hexdigest()[:16]
            options: dict[str, Any] = dict(name=name, get_if_exists=True, max_restarts=o.max_restarts,
                                           max_task_retries=3, num_gpus=gpus)
            if o.num_cpus is not None:
                options["num_cpus"] = o.num_cpus
            if o.resources:
                options["resources"] = dict(o.resources)
            if o.runtime_env:
                options["runtime_env"] = o.runtime_env
            cls = ray.remote(concurrency_groups={"control": 4, "predict": max(1, o.max_concurrency, slots or 0)})(actor_class())
            handle = cls.options(**options).remote(ref, model, o.hardware, o.preview_rate)
            entry = self._entries[key] = ActorEntry(name, handle, model or str(ref), version)
            return entry

    def drop(self, key: str) -> None:
        """Forget the actor and kill it for good (no restart)."""
        with self._lock:
            entry = self._entries.pop(key, None)
        if entry is not None:
            try:
                import ray

                ray.kill(entry.handle, no_restart=True)
            except Exception:
                pass

    def drop_all(self) -> None:
        with self._lock:
            keys = list(self._entries)
        for k in keys:
            self.drop(k)

    def wait_placed(self, ray: ModuleType, entry: ActorEntry, p: Prediction) -> bool:
        """Wait until the actor answers (placed, constructed), or the run is canceled (False).
        Raises BackendError past `placement_timeout` naming what the actor asked for."""
        ref = entry.handle.info.remote()
        deadline = time.monotonic() + self.options.placement_timeout
        while True:
            ready, _ = ray.wait([ref], timeout=0.2)
            if ready:
                entry.info = ray.get(ref)
                return True
            if p.cancel_event.is_set():
                return False
            if time.monotonic() > deadline:
                o = self.options
                asked = {"GPU": self.gpus_per_actor(ray), "CPU": o.num_cpus if o.num_cpus is not None else 1,
                         **o.resources}
                raise BackendError(f"No Ray node could take the actor for {entry.model} within "
                                   f"{o.placement_timeout:.0f}s (it asks for {asked}; the cluster has "
                                   f"{ray.cluster_resources()})", url=self.cluster.connected_to)


def remote_ref(spec: predictors.PredictorSpec, ref: Any) -> Any:
    """What the actor loads: a file reference (same path on the cluster), `hf:…`, or the class /
    object itself (pickled by Ray) for predictors defined in the notebook."""
    if spec.source:
        return spec.source
    if isinstance(ref, str) and ref.startswith("hf:"):
        return ref
    if spec.instance is not None:
        return spec.instance
    return spec.cls

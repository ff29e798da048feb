"""The `ray` backend: one Ray actor per model, predictions streamed back as generator items.

    %replicate use ray --address 10.0.0.5:6379 --num-gpus 1
    rj.run("local/shapes", input={...}, on="ray")

The kernel connects as a Ray *driver* (`ray/cluster.py`). Each model gets a named actor
(`ray/actors.py` keeps the driver's table of them; `ray/actor.py` is what runs inside one) that
loads the predictor on its worker, runs `setup()` once and serves predictions as streaming
generator calls; every event of a run is one item, turned into the same events the other
backends emit.

Where a prediction can end up:
- the predictor returns / raises / is canceled → the actor's own Completed (predict_time and
  setup_time measured on the actor, hardware from the worker's device).
- cancel or kernel interrupt → the actor's cancel flag (a step loop stops at its next
  `progress()`, an iterator after its current item, any other code by cog's
  CancelationException raised in the model's thread) and `ray.cancel` on the stream; the actor
  then reports the partial predict_time.
- the actor's worker or node dies *before* the run started → Ray restarts the actor
  (`max_restarts`) and the run is submitted again (`start_retries`); nothing ran twice.
- it dies *after* the run started → failed, naming the node and process; never re-run
  silently (Ray's own task retry is off for the stream for that reason). Ray restarts the
  actor for the next prediction.

A model that declares batching gets an actor that takes twice its max batch of calls at once
and runs those that arrive together as one batch (ray/batched.py); every member is still its own
stream, cancel and cost (its share of the batch's device time).
"""
from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any

from replicate_jupyter.errors import BackendError, InputError, ModelNotFound, Problem
from replicate_jupyter.model import predictors
from replicate_jupyter.prediction.events import Completed, Log, Started
from replicate_jupyter.runners.base import ModelHandle, Runner
from replicate_jupyter.runners.ray.actors import ACTOR_PREFIX, ActorEntry, ActorOptions, Actors, remote_ref
from replicate_jupyter.runners.ray.cluster import Cluster
from replicate_jupyter.runners.remote import RemoteRun, RunTable

if TYPE_CHECKING:
    from replicate_jupyter.prediction.prediction import Prediction

__all__ = ["RayRunner"]

NOTE = "[replicate-jupyter] "


class _Run(RemoteRun):
    """One prediction followed on its model's actor: the shared remote bookkeeping plus the
    actor and the stream of the current submission."""

    def __init__(self, p: Prediction, entry: ActorEntry) -> None:
        super().__init__(p)
        self.actor = entry.handle
        self.entry = entry
        self.stream: Any = None


def _so_far(p: Prediction) -> dict[str, Any]:
    """Metrics of a run the actor could not report on: the driver's clock and the hardware seen."""
    return {"predict_time": round(p.elapsed, 6), "hardware": p.metrics.get("hardware")}


def _check_options(address: Any, num_gpus: Any, num_cpus: Any, resources: Any) -> None:
    """Bad options fail at `%replicate use ray …`, all at once, before anything connects."""
    problems = []
    if address is not None and not isinstance(address, str):
        problems.append(Problem("address", "type", address, "host:port"))
    elif address and address.startswith("ray://"):
        problems.append(Problem("address", "scheme", address, "the cluster's GCS address host:port", message=(
            "Ray Client addresses (ray://) cannot stream results as they are produced; give the cluster's GCS "
            "address instead, e.g. --address HEAD_IP:6379, and run the kernel where it can reach the cluster "
            "as a driver")))
    for opt, val in (("num_gpus", num_gpus), ("num_cpus", num_cpus)):
        if val is not None and (not isinstance(val, (int, float)) or isinstance(val, bool) or val < 0):
            problems.append(Problem(opt, "minimum", val, "a number >= 0"))
    if resources is not None and not isinstance(resources, dict):
        problems.append(Problem("resources", "type", resources, "a mapping of resource name to amount"))
    if problems:
        raise InputError(problems, model="the ray backend")


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
        _check_options(address, num_gpus, num_cpus, resources)
        self.address = address
        self.start_retries = int(start_retries)
        self.placement_timeout = float(placement_timeout)
        self.cluster = Cluster(address, namespace)
        self.actors = Actors(self.cluster, ActorOptions(
            num_gpus=num_gpus, num_cpus=num_cpus, resources=dict(resources or {}), hardware=hardware,
            max_restarts=int(max_restarts), placement_timeout=self.placement_timeout,
            preview_rate=float(preview_rate), runtime_env=runtime_env, max_concurrency=int(max_concurrency)))
        self._runs: RunTable[_Run] = RunTable()
        self._remote_tried: str | None = None  # the last ref looked for on the cluster (for the message)

    def _ray(self) -> ModuleType:
        """The ray module, connected on first use (so `%replicate use ray --address …` never
        blocks or fails on a typo in another option)."""
        return self.cluster.connect()

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
        from replicate_jupyter.serve.batched import batching_info

        batch = batching_info(spec)  # a batchable model's actor takes a whole batch's calls at once
        return ModelHandle(name=spec.name, version=spec.version, schema=spec.schema,
                           extra={"spec": spec, "ray_ref": remote_ref(spec, ref), "key": spec.key,
                                  "slots": 2 * batch["max_batch"] if batch else None})

    def _resolve_remote(self, ref: str) -> ModelHandle | None:
        # only paths (a file on the cluster's filesystem): an unknown owner/name is a typo, not remote
        if not (ref.endswith(".py") or ".py:" in ref or ref.startswith(("/", "./", "../")) or ref.endswith("cog.yaml")):
            return None
        ray = self._ray()
        self._remote_tried = ref
        key = f"remote:{ref}"
        try:
            entry = self.actors.get(key, ref, None, None)
            desc = ray.get(entry.handle.describe.remote(), timeout=self.placement_timeout)
        except Exception:
            self.actors.drop(key)
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
            names = [n for n in ray.util.list_named_actors() if str(n).startswith(ACTOR_PREFIX)]
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
    def _entry(self, ref: Any) -> ActorEntry:
        handle = ref if isinstance(ref, ModelHandle) else self.resolve(ref)
        return self.actors.get(handle.extra["key"], handle.extra["ray_ref"], handle.name, handle.version,
                               handle.extra.get("slots"))

    def actor_info(self, ref: Any) -> dict[str, Any]:
        """Where a model's actor lives now (node_ip, node_id, pid, actor_id, ready, …)."""
        entry = self._entry(ref)
        entry.info = self._ray().get(entry.handle.info.remote(), timeout=self.placement_timeout)
        return dict(entry.info or {})

    def actor(self, ref: Any) -> Any:
        """The Ray actor handle serving a model (for `ray.get(actor.pid.remote())` and friends)."""
        return self._entry(ref).handle

    # ----- running -------------------------------------------------------------------------
    def execute(self, p: Prediction) -> None:
        from ray import exceptions as rex

        handle = p.handle if p.handle is not None else self.resolve(p.model)  # api.prepare sets it
        try:
            ray = self._ray()
            entry = self.actors.get(handle.extra["key"], handle.extra["ray_ref"], handle.name, handle.version,
                                    handle.extra.get("slots"))
            if entry.info is None and not self.actors.wait_placed(ray, entry, p):
                p.emit(Completed(status="canceled", error=p.cancel_reason, metrics={"predict_time": 0.0}))
                return
        except BackendError as exc:
            p.emit(Completed(status="failed", error=str(exc)))
            return
        except rex.RayActorError as exc:
            self.actors.drop(handle.extra["key"])
            p.emit(Completed(status="failed", error=f"the Ray actor for {p.model} could not start: {_first_line(exc)}",
                             traceback=_creation_traceback(exc)))
            return
        with self._runs.track(p.id, _Run(p, entry)) as run:
            try:
                self._run(ray, run)
            except KeyboardInterrupt:
                self._send_cancel(run)
                self._finish_canceled(ray, run)
                raise

    def _run(self, ray: ModuleType, run: _Run) -> None:
        from ray import exceptions as rex

        p = run.p
        attempts = 0
        while not p.done:
            if p.cancel_event.is_set():
                p.emit(Completed(status="canceled", error=p.cancel_reason,
                                 metrics={"predict_time": 0.0, "hardware": (run.entry.info or {}).get("hardware")}))
                return
            run.stream = run.actor.predict.remote(p.id, p.input)  # secrets travel masked, revealed to the predictor only
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
                where = run.entry.where()
                run.entry.info = None  # it will be somewhere else (or another process) after the restart
                if p.cancel_event.is_set():
                    self._finish_canceled(ray, run, fallback_only=True)
                    return
                if not run.started and attempts < self.start_retries:
                    attempts += 1
                    p.emit(Log(text=f"{NOTE}the Ray actor for {p.model} was lost before the run "
                                    f"started ({where}: {_first_line(exc)}); submitting it again "
                                    f"({attempts}/{self.start_retries})\n"))
                    self.actors.wait_placed(ray, run.entry, p)  # canceled meanwhile: the loop's first check ends it
                    continue
                what = "during setup" if not run.started else "mid-prediction"
                p.emit(Completed(
                    status="failed",
                    error=(f"The Ray actor running {p.model} died {what} ({where}): {_first_line(exc)}. "
                           f"The run was not retried because it had already started; Ray restarts the actor "
                           f"for the next prediction."),
                    metrics=_so_far(p)))
                return
            except rex.RayTaskError as exc:  # the actor method itself broke (not the model: that is Completed)
                p.emit(Completed(status="failed", error=f"the Ray actor for {p.model} failed: {_first_line(exc)}",
                                 traceback=str(exc),
                                 metrics=_so_far(p)))
                return

    def _finish_canceled(self, ray: ModuleType, run: _Run, fallback_only: bool = False) -> None:
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
            metrics = _so_far(p)
        p.emit(Completed(status="canceled", error=p.cancel_reason, metrics=metrics))

    # ----- cancel --------------------------------------------------------------------------
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
            run.p.emit(Log(text=f"{NOTE}ray.cancel failed: {exc}\n"))

    def cancel(self, p: Prediction) -> None:
        run = self._runs.get(p.id)
        if run is not None and run.stream is not None:
            self._send_cancel(run)
        # otherwise the run is not submitted yet: execute() sees p.cancel_event before submitting

    def close(self) -> None:
        self.actors.drop_all()
        self.cluster.close()  # only a connection this runner made


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

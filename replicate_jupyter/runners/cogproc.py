"""The kernel-side Cog process for folder-based models (a folder with cog.yaml, or a file in one).

A kernel has one working directory, one environment and one `sys.path`, all the user's; a Cog
model expects its folder as working directory, cog.yaml's `environment`, and nothing else. So a
folder model runs out of process, exactly as a worker runs it: one `replicate-jupyter serve
<folder> --host 127.0.0.1 --port 0` per model (serve/), kept warm between cells, every prediction
going through a private `WorkersRunner` pointed at it (streaming, cancel, files, relayed progress:
the workers code, unchanged). Predictions keep a `local` look: no `worker` metric; the first one
after a start carries `setup_time` (process, imports, `setup()`) and the setup's prints as logs.
What coglet's HTTP answers leave out (setup prints after READY, a failed prediction's prints) is
read from coglet's own log file, which serve names when it is ready.

Costs (2 shared cores, tests/predictors/echo.py as a folder): a cold start of ~0.7–1.1 s; then
~2.5 ms per prediction (~0.1 ms in process), ~3.7 ms to the first streamed token (~0.15 ms).

Lifetimes: a process is replaced when the folder's code changes, once its running predictions
finish; killed on `evict`, `close` and at interpreter exit; and it dies with the kernel however
the kernel dies (serve runs with `--exit-with-stdin` on a pipe only this process holds; coglet
dies with serve). serve gets its own session, so a kernel interrupt does not stop it.
"""
from __future__ import annotations

import atexit
import collections
import dataclasses
import os
import pathlib
import re
import subprocess
import sys
import threading
import time
import weakref
from typing import Any

import httpx

from replicate_jupyter.prediction.events import Completed, Log
from replicate_jupyter.runners.context import parse_relayed
from replicate_jupyter.serve.coglog import entries as _coglet_log
from replicate_jupyter.serve.coglog import wait_prints
from replicate_jupyter.serve.folder import ModelFolder, code_signature, find_folder

__all__ = ["CogProcesses", "folder_of"]

_READY = re.compile(r"ready at (http://\S+) ")
_LOG_PATH = re.compile(r", logs (.+)\)\s*$")  # the end of serve's ready line: coglet's log file
_instances: "weakref.WeakSet[CogProcesses]" = weakref.WeakSet()
_by_spec: "weakref.WeakKeyDictionary[Any, ModelFolder | None]" = weakref.WeakKeyDictionary()


def folder_of(spec: Any) -> ModelFolder | None:
    """The Cog folder a PredictorSpec (or a reference) runs from; None when it is not a folder model.
    Reads `spec.folder` when the spec has it, else the file it came from (`spec.source`). Asked
    on every prediction, so answered once per spec (a new spec comes with every edit)."""
    if isinstance(spec, (str, os.PathLike)):
        return _find(spec)
    try:
        return _by_spec[spec]
    except (KeyError, TypeError):
        pass
    found = next((f for c in (getattr(spec, "folder", None), getattr(spec, "source", None))
                  if c is not None and (f := _find(c)) is not None), None)
    try:
        _by_spec[spec] = found
    except TypeError:
        pass
    return found


def _find(ref: Any) -> ModelFolder | None:
    try:
        return find_folder(ref)
    except Exception:  # noqa: BLE001 — not a folder we can read: not a folder model
        return None


@dataclasses.dataclass(eq=False)
class _Proc:
    key: str  # folder + target + name: one process each
    spec_key: str | None
    name: str
    version: str
    folder: ModelFolder
    proc: subprocess.Popen
    lines: collections.deque = dataclasses.field(default_factory=lambda: collections.deque(maxlen=200))
    url: str | None = None
    log: pathlib.Path | None = None  # coglet's own log (JSON lines), where setup prints may land instead
    runner: Any = None
    pool: Any = None
    ready: threading.Event = dataclasses.field(default_factory=threading.Event)
    inflight: int = 0
    retired: bool = False
    cold: bool = True  # its first prediction reports the cold start
    start_time: float = 0.0

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return "".join(self.lines)


class _LocalView:
    """The prediction as the workers code sees it, so that what reaches the real one looks local:
    no `worker` metric, the cold start as `setup_time`, errors naming the model's process, and a
    failed one's prints whole (coglet's blocking answer to a failure has `logs: ''`)."""

    def __init__(self, p: Any, proc: _Proc, extra: dict[str, Any], setup_seen: str | None = None,
                 log_offset: int = 0) -> None:
        self._p, self._proc, self._extra = p, proc, extra
        self._setup_seen = setup_seen  # the setup prints already shown (cold run only)
        self._offset, self._logs = log_offset, list[str]()  # where its lines start in coglet's log; text shown

    def __getattr__(self, name: str) -> Any:
        return getattr(self._p, name)

    def emit(self, event: Any) -> None:
        if event.__class__ is Log:
            self._logs.append(event.text)
        elif event.__class__ is Completed:
            rest = _unseen_prints(self._proc.log, self._offset, self._p.id, self._logs) if event.status != "succeeded" else ""
            if rest:
                self._p.emit(Log(text=rest))
            if self._setup_seen is not None:
                # setup()'s prints still on their way at the start are shown before the end
                later = _setup_prints(self._proc, wait=2.0)
                if len(later) > len(self._setup_seen) and later.startswith(self._setup_seen):
                    self._p.emit(Log(text=later[len(self._setup_seen):]))
            metrics = {k: v for k, v in event.metrics.items() if k != "worker"}
            metrics.update(self._extra)
            error = event.error
            if error and self._proc.url:
                error = error.replace(f"Worker {self._proc.url}", f"The Cog process of {self._proc.name}")
                error = error.replace(self._proc.url, f"the Cog process of {self._proc.name}")
            event = dataclasses.replace(event, metrics=metrics, error=error)
        self._p.emit(event)


class CogProcesses:
    """Warm Cog processes of folder models, one per model version, shared by every thread."""

    def __init__(self, start_timeout: float = 600.0, python: str | None = None) -> None:
        self.start_timeout = start_timeout
        self.python = python or sys.executable
        self._procs: dict[str, _Proc] = {}
        self._running: dict[str, _Proc] = {}  # prediction id → its process
        self._lock = threading.Lock()
        self._start_locks: dict[str, threading.Lock] = {}
        _instances.add(self)

    @property
    def warm(self) -> list[str]:
        with self._lock:
            return [k for k, pr in self._procs.items() if pr.alive and pr.ready.is_set()]

    # ----- running -------------------------------------------------------------------------
    def execute(self, p: Any, spec: Any = None) -> None:
        """Run `p` to a final state in its model's Cog process, emitting its events (exactly one
        Completed), blocking like any runner's execute. Starts the process on first use."""
        spec = spec if spec is not None else p.handle.extra["spec"]
        folder = folder_of(spec)
        if folder is None:
            p.emit(Completed(status="failed", error=f"{p.model} is not a Cog folder model (no cog.yaml found)"))
            return
        if p.cancel_event.is_set():
            p.emit(Completed(status="canceled", error=p.cancel_reason, metrics={"predict_time": 0.0}))
            return
        pr = self._get(p, spec, folder)
        if pr is None:
            return  # _get emitted why
        extra: dict[str, Any] = {}
        with self._lock:
            cold, pr.cold = pr.cold, False
            pr.inflight += 1
            self._running[p.id] = pr
        seen, offset = None, pr.log.stat().st_size if pr.log is not None and pr.log.exists() else 0  # its log start
        if cold:
            extra["setup_time"] = round(pr.start_time, 4)
            seen = _setup_prints(pr, wait=0.5)
            if seen:
                p.emit(Log(text=seen))
        try:
            pr.runner.execute(_LocalView(p, pr, extra, seen, offset))
        finally:
            with self._lock:
                pr.inflight -= 1
                self._running.pop(p.id, None)
                done_with = pr.retired and pr.inflight == 0
            if done_with:
                self._stop(pr)

    def cancel(self, p: Any) -> None:
        """Ask the model's process to stop `p` (the cancel event is already set; a prediction
        still waiting for its process to start sees that)."""
        with self._lock:
            pr = self._running.get(p.id)
        if pr is not None and pr.runner is not None:
            pr.runner.cancel(p)

    # ----- processes -----------------------------------------------------------------------
    def _get(self, p: Any, spec: Any, folder: ModelFolder) -> _Proc | None:
        key = f"{folder.root}::{folder.target}::{p.model}"
        # the loader's hash of the code its import ran, and every .py by stat (~20-70 us): a helper imported in setup()
        version = f"{getattr(spec, 'version', None) or ''}-{code_signature(folder.root)}"
        with self._lock:
            start_lock = self._start_locks.setdefault(key, threading.Lock())
        with start_lock:
            with self._lock:
                pr = self._procs.get(key)
                if pr is not None and pr.version == version and pr.alive:
                    return pr
                old, stop_old = pr, False
                if old is not None:  # a new version, or a dead process: replace it
                    del self._procs[key]
                    old.retired = True
                    stop_old = old.inflight == 0 or not old.alive  # else the last prediction stops it
            if old is not None and stop_old:
                self._stop(old)
            return self._start(p, spec, folder, key, version)

    def _start(self, p: Any, spec: Any, folder: ModelFolder, key: str, version: str) -> _Proc | None:
        target_file = folder.target_file.resolve()
        source = getattr(spec, "source", None)
        source_file = source.rpartition(":")[0] if isinstance(source, str) and ":" in source else source
        ref = str(folder.root) if source_file is None or os.path.realpath(source_file) == str(target_file) else source
        cmd = [self.python, "-m", "replicate_jupyter.serve.cli", "serve", ref, "--host", "127.0.0.1", "--port", "0",
               "--name", p.model, "--exit-with-stdin"]
        if folder.concurrency:
            cmd += ["--concurrency", str(folder.concurrency)]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1, start_new_session=True)
        pr = _Proc(key=key, spec_key=getattr(spec, "key", None), name=p.model, version=version, folder=folder, proc=proc)
        threading.Thread(target=self._drain, args=(pr,), name="rj-cogproc-out", daemon=True).start()
        deadline = time.monotonic() + self.start_timeout
        while not pr.ready.wait(0.05):
            if p.cancel_event.is_set():
                self._stop(pr)
                p.emit(Completed(status="canceled", error=p.cancel_reason or "canceled while its Cog process started",
                                 metrics={"predict_time": 0.0}))
                return None
            if not pr.alive or time.monotonic() > deadline:
                self._stop(pr)
                why = _setup_error(pr.output()) if not pr.alive else f"not ready after {self.start_timeout:.0f}s"
                p.emit(Completed(status="failed", error=f"setup failed: {why}", metrics={"predict_time": 0.0}))
                return None
        pr.start_time = time.perf_counter() - t0
        assert pr.url is not None  # set with `ready`
        pr.pool, pr.runner = _private_runner(pr.url, folder.concurrency or 1)
        with self._lock:
            self._procs[key] = pr
        return pr

    def _drain(self, pr: _Proc) -> None:
        for line in pr.proc.stdout:  # type: ignore[union-attr]
            pr.lines.append(line)
            if not pr.ready.is_set():
                m = _READY.search(line)
                if m:
                    pr.url = m.group(1)
                    log = _LOG_PATH.search(line)
                    pr.log = pathlib.Path(log.group(1)) if log else None
                    pr.ready.set()

    def _stop(self, pr: _Proc, grace: float = 10.0) -> None:
        """Close serve's stdin (it stops coglet and cleans up), then SIGTERM, then SIGKILL."""
        if pr.pool is not None:
            for url in [w["url"] for w in pr.pool.list()]:
                try:
                    pr.pool.remove(url)
                except KeyError:
                    pass
            pr.pool.close()
        proc = pr.proc
        if proc.poll() is None:
            try:
                proc.stdin.close()  # type: ignore[union-attr]
            except OSError:
                pass
            for action, wait in ((None, grace), (proc.terminate, 5.0), (proc.kill, 5.0)):
                if action is not None:
                    try:
                        action()
                    except ProcessLookupError:
                        pass
                try:
                    proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue

    def evict(self, key: str | None = None) -> None:
        """Stop the process of one model (`key`: a spec key, a folder path, or our key; all of
        them with None). Its running predictions end as a killed worker's do: failed, named."""
        with self._lock:
            chosen = [pr for k, pr in self._procs.items()
                      if key is None or key in (k, pr.spec_key, str(pr.folder.root))]
            for pr in chosen:
                self._procs.pop(pr.key, None)
        for pr in chosen:
            self._stop(pr)

    def close(self) -> None:
        self.evict()


def _private_runner(url: str, slots: int) -> tuple[Any, Any]:
    """A WorkersRunner whose pool holds this one worker (never the kernel's `rj.workers`)."""
    from replicate_jupyter.runners.workers import Pool, WorkersRunner

    private, runner = Pool(), WorkersRunner()
    private.add(url, slots=slots)
    runner.pool = private
    return private, runner


def _setup_prints(pr: _Proc, wait: float = 0.0) -> str:
    """What setup() printed. coglet 0.23.1 files each line, by a race, in its health's setup logs
    (while it still collects them) or, once READY, only in its log file: both are read, waiting
    up to `wait` s for the file to show setup() ended (cold starts only: rarely felt)."""
    if not pr.url:
        return ""
    logs = ""
    for attempt in range(3):  # a loaded machine can keep a just-started worker slow to answer
        try:
            logs = httpx.get(pr.url + "/health-check", timeout=10).json().get("setup", {}).get("logs", "")
            break
        except (httpx.HTTPError, ValueError, AttributeError):
            time.sleep(0.2 * (attempt + 1))
    out = [line[len("[coglet::setup] "):] for line in str(logs).splitlines() if line.startswith("[coglet::setup] ")]
    deadline = time.monotonic() + wait
    while not (late := _late_setup_lines(pr.log))[1] and time.monotonic() < deadline:
        time.sleep(0.02)
    out = [line for line in out + late[0] if not line.startswith("<string>:")]  # cog's own deprecation notes
    return "".join(line + "\n" for line in out)


def _late_setup_lines(log: pathlib.Path | None) -> tuple[list[str], bool]:
    """Setup prints coglet logged after READY (its last start only), and whether setup() ended."""
    lines: list[str] = []
    ready = ended = False
    for target, fields in _coglet_log(log, 0):
        message = str(fields.get("message", ""))
        if target == "coglet::worker_bridge" and message == "Loading predictor":
            lines, ready, ended = [], False, False  # coglet (re)started: a new setup
        elif target == "coglet" and message.startswith("Setup complete, now accepting"):
            ready = True
        elif (target == "coglet::worker_bridge" and message == "Setup complete") or target == "coglet::prediction":
            ended = True
        elif target == "coglet::user" and ready and not ended:
            lines.append(message)
    return lines, ended or log is None


def _unseen_prints(log: pathlib.Path | None, offset: int, pid: str, shown: list[str], wait: float = 1.0) -> str:
    """What prediction `pid` (remote id `rj-{pid}-…`) printed, from coglet's log after `offset`,
    less what `shown` has ('' if they do not begin so); waits up to `wait` s for its end there."""
    got = wait_prints(log, offset, lambda rid: rid.startswith(f"rj-{pid}-"), wait)
    text = parse_relayed(got.text)[1]
    seen = "".join(t for t in shown if not t.startswith("[replicate-jupyter] "))  # not the runner's notes
    return text[len(seen):] if text.startswith(seen) else ""


def _setup_error(output: str) -> str:
    lines = [line.rstrip() for line in output.splitlines() if line.strip()]
    lines = [line.removeprefix("replicate-jupyter serve: ") for line in lines if "[replicate-jupyter serve] stopped" not in line]
    return "\n".join(lines[-30:]) or "the Cog process exited before it was ready"


@atexit.register
def _close_all() -> None:
    for procs in list(_instances):
        try:
            procs.close()
        except Exception:  # noqa: BLE001 — exiting anyway
            pass

"""`replicate-jupyter serve`: run one predictor under Cog's own HTTP server (coglet), no Docker.

coglet needs what `cog build` would have left in its working directory: the schema at
`.cog/openapi_schema.json` (it validates input against it and only streams SSE when
`x-cog-streaming` is set) and a predictor reference. The predictor may live somewhere read-only
(site-packages for `local/...`) or not be a file at all (`hf:...`), so a private working directory
holds the schema and a two-line shim module that loads the class through `predictors.load`.

coglet keeps answering after its predictor process dies (health UNHEALTHY, every prediction 409),
so a supervisor polls `/health-check` and restarts the server when it exits or goes bad; a pool
client then finds the worker READY again at the same URL.
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, TextIO

import httpx

__all__ = ["Server", "prepare_workdir", "free_port"]

SHIM_MODULE = "rj_serve_predict"
BAD_STATES = frozenset({"UNHEALTHY", "DEFUNCT"})
_PKG_PARENT = str(pathlib.Path(__file__).resolve().parent.parent)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (for `--port 0`)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _absolute_ref(ref: str) -> str:
    """File references must survive the change of working directory."""
    if ref.startswith(("hf:", "local/")):
        return ref
    path_part, sep, cls = ref.rpartition(":") if ref.count(":") and not ref.endswith(".py") else (ref, "", "")
    if os.path.exists(path_part):
        return os.path.abspath(path_part) + (sep + cls if sep else "")
    return ref


def prepare_workdir(ref: str, name: str | None = None, hardware: str | None = None,
                    workdir: str | os.PathLike | None = None) -> tuple[pathlib.Path, dict]:
    """Write `.cog/openapi_schema.json` and the shim module into a working directory.

    Loads the predictor here first, so a bad reference fails in the terminal with our error
    message rather than as a coglet SETUP_FAILED later.
    """
    from replicate_jupyter.runners import devices
    from replicate_jupyter.model import predictors

    ref = _absolute_ref(ref)
    spec = predictors.load(ref, name)
    schema = json.loads(json.dumps(spec.schema))  # build_schema's dict is shared: copy before editing
    info = schema.setdefault("info", {})
    info["x-replicate-model"] = spec.name
    info["x-replicate-hardware"] = hardware or devices.current_sku()
    if spec.version:
        info.setdefault("x-replicate-version", spec.version)
    # coglet answers 406 to SSE unless the schema says x-cog-streaming; with it, every model
    # streams its start, logs and completion (a non-iterator output still arrives whole in
    # `completed`), so the pool sees logs live and knows when a prediction really started.
    post = schema.setdefault("paths", {}).setdefault("/predictions", {}).setdefault("post", {})
    post["x-cog-streaming"] = True
    wd = pathlib.Path(workdir) if workdir else pathlib.Path(tempfile.mkdtemp(prefix="rj-serve-"))
    (wd / ".cog").mkdir(parents=True, exist_ok=True)
    (wd / ".cog" / "openapi_schema.json").write_text(json.dumps(schema, indent=1))
    (wd / f"{SHIM_MODULE}.py").write_text(
        '"""Written by replicate-jupyter serve: the predictor class, loaded the way every runner loads it."""\n'
        "from replicate_jupyter.model import predictors as _predictors\n\n"
        f"Predictor = _predictors.load({ref!r}, {spec.name!r}).cls\n"
    )
    return wd, schema


class Server:
    """One coglet server for one predictor, kept alive: restarted when it exits or turns
    UNHEALTHY/DEFUNCT. `run()` blocks until `stop()` (or SIGTERM/SIGINT via the CLI)."""

    def __init__(self, ref: str, host: str = "127.0.0.1", port: int = 5000, concurrency: int = 1,
                 name: str | None = None, hardware: str | None = None, poll: float = 0.5,
                 ready_timeout: float = 300.0, out: TextIO | None = None) -> None:
        self.ref = ref
        self.host = host
        self.port = port or free_port(host)
        self.concurrency = max(1, int(concurrency))
        self.poll = poll
        self.ready_timeout = ready_timeout
        self.out = out or sys.stdout
        self.workdir, self.schema = prepare_workdir(ref, name, hardware)
        self.name = self.schema["info"]["x-replicate-model"]
        self.hardware = self.schema["info"]["x-replicate-hardware"]
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self._stop = threading.Event()
        self._log_fh: Any = None
        self._http = httpx.Client(timeout=httpx.Timeout(5.0, connect=2.0))

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def log_path(self) -> pathlib.Path:
        return self.workdir / "server.log"

    def say(self, text: str) -> None:
        print(f"[replicate-jupyter serve] {text}", file=self.out, flush=True)

    # ----- child process -------------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        bindir = os.path.dirname(sys.executable)
        env["PATH"] = bindir + os.pathsep + env.get("PATH", "")  # coglet spawns `python -c ...`
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PKG_PARENT, env.get("PYTHONPATH", "")) if p)
        env["COG_PREDICT_TYPE_STUB"] = f"{SHIM_MODULE}.py:Predictor"
        env["PORT"] = str(self.port)
        env["COG_MAX_CONCURRENCY"] = str(self.concurrency)
        env["RJ_PROGRESS_RELAY"] = "1"  # progress/previews travel as tagged log lines (progress.py)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def _spawn(self) -> None:
        self._wait_port_free()
        if self._log_fh is None:
            self._log_fh = open(self.log_path, "ab", buffering=0)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cog.server.http", "--host", self.host],
            cwd=self.workdir, env=self._env(), stdin=subprocess.DEVNULL,
            stdout=self._log_fh, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the predictor process dies with it
        )

    def _wait_port_free(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind((self.host, self.port))
                    return
                except OSError:
                    time.sleep(0.1)

    def _kill_child(self, grace: float = 5.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # the predictor process may outlive a SIGKILLed server in the same group
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    # ----- health --------------------------------------------------------------------------
    def health(self) -> dict | None:
        try:
            r = self._http.get(self.url + "/health-check")
            return r.json()
        except (httpx.HTTPError, ValueError):
            return None

    def wait_ready(self) -> dict:
        """Block until READY; raise with coglet's setup logs on SETUP_FAILED or an early exit."""
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline and not self._stop.is_set():
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"the coglet server exited with code {self.proc.returncode}; see {self.log_path}\n"
                                   + self._log_tail())
            h = self.health()
            status = (h or {}).get("status")
            if status in ("READY", "BUSY"):
                return h  # type: ignore[return-value]
            if status == "SETUP_FAILED":
                logs = ((h or {}).get("setup") or {}).get("logs", "")
                raise RuntimeError(f"setup() of {self.name} failed:\n{logs}")
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} was not READY after {self.ready_timeout:.0f}s; see {self.log_path}")

    def _log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    # ----- lifecycle -----------------------------------------------------------------------
    def start(self) -> "Server":
        self._spawn()
        try:
            self.wait_ready()
        except BaseException:
            self._kill_child()
            raise
        self.say(f"{self.name} ready at {self.url} (hardware {self.hardware}, pid {self.proc.pid}, logs {self.log_path})")
        return self

    def supervise(self) -> None:
        """Poll health every `poll` seconds; restart on exit, UNHEALTHY/DEFUNCT, or silence."""
        silent_since: float | None = None
        while not self._stop.wait(self.poll):
            proc = self.proc
            reason = None
            if proc is None or proc.poll() is not None:
                reason = f"the server exited (code {None if proc is None else proc.returncode})"
            else:
                h = self.health()
                status = (h or {}).get("status")
                if status in BAD_STATES:
                    reason = f"health-check says {status}"
                elif h is None:
                    silent_since = silent_since or time.monotonic()
                    if time.monotonic() - silent_since > 15:
                        reason = "health-check has not answered for 15 s"
                else:
                    silent_since = None
            if reason is None or self._stop.is_set():
                continue
            silent_since = None
            self.say(f"restarting {self.name} at {self.url}: {reason}")
            self._kill_child()
            self.restarts += 1
            while not self._stop.is_set():
                try:
                    self._spawn()
                    self.wait_ready()
                    self.say(f"{self.name} back at {self.url} (restart #{self.restarts}, pid {self.proc.pid})")
                    break
                except Exception as exc:  # noqa: BLE001 — keep trying; the predictor may come back
                    self._kill_child()
                    self.say(f"restart failed: {exc}; retrying in 2 s")
                    self._stop.wait(2.0)

    def stop(self) -> None:
        self._stop.set()
        self._kill_child()
        self._http.close()
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)

    def run(self) -> int:
        """start + supervise until SIGTERM/SIGINT; the child process group is always killed."""
        def on_signal(signum, _frame):
            self._stop.set()

        old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            self.supervise()
            return 0
        finally:
            self.stop()
            self.say(f"stopped {self.name} at {self.url}")
            self.cleanup()
            for s, h in old.items():
                signal.signal(s, h)

"""`replicate-jupyter serve`: run one predictor under Cog's own HTTP server (coglet), no Docker.

Three parts, one process tree:

- coglet (`python -m cog.server.http`) on a private loopback port, started from the directory a
  Cog model expects (serve/workdir.py: the model's own folder for a folder with cog.yaml), with
  the model's environment only (serve/folder.py: the parent's scrubbed of credentials, plus
  cog.yaml's `environment`). It dies with serve: PR_SET_PDEATHSIG (serve/lifetime.py), and its
  predictor process dies with it.
- the front (serve/auth.py) on `--host:--port`: the only socket open to the network. A token is
  required on any non-loopback address (`RJ_WORKER_TOKEN` or `--token-file`; `--insecure` opts
  out, loudly); it streams SSE through and fails null outputs the schema does not allow.
- the supervisor (this module): coglet keeps answering after its predictor process dies (health
  UNHEALTHY, every prediction 409), so it polls `/health-check` and restarts coglet when it exits
  or goes bad; a pool client then finds the worker READY again at the same URL. It also restarts
  coglet on the model's edited code, between predictions, when the front asks (serve/reload.py).
  Every start of coglet happens on this (the main) thread: PR_SET_PDEATHSIG is tied to it.
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Iterable, TextIO

import httpx

from replicate_jupyter.serve import workdir
from replicate_jupyter.serve.auth import Front
from replicate_jupyter.serve.folder import model_environment
from replicate_jupyter.serve.lifetime import die_with_parent, exit_when_stdin_closes
from replicate_jupyter.serve.reload import CodeWatch, Gate, still_running
from replicate_jupyter.serve.tokens import is_loopback

__all__ = ["Server", "free_port", "InsecureBind"]

BAD_STATES = frozenset({"UNHEALTHY", "DEFUNCT"})
_PKG_PARENT = str(pathlib.Path(__file__).resolve().parent.parent.parent)


class InsecureBind(ValueError):
    """A non-loopback address without a token (and without --insecure)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Server:
    """One coglet server for one predictor, behind the front, kept alive: restarted when it exits
    or turns UNHEALTHY/DEFUNCT. `run()` blocks until `stop()` (or SIGTERM/SIGINT via the CLI)."""

    def __init__(self, ref: str, host: str = "127.0.0.1", port: int = 5000, concurrency: int = 1,
                 name: str | None = None, hardware: str | None = None, poll: float = 0.5,
                 ready_timeout: float = 300.0, out: TextIO | None = None, token: str | None = None,
                 insecure: bool = False, pass_env: Iterable[str] = (), exit_with_stdin: bool = False,
                 batching: bool = True, batch_window: float | None = None) -> None:
        self.host = host
        self.port = port
        self.poll = poll
        self.ready_timeout = ready_timeout
        self.out = out or sys.stdout
        self.token = token
        self.insecure = insecure
        self.pass_env = tuple(pass_env)
        self.exit_with_stdin = exit_with_stdin
        self.batch_window = batch_window  # a batching model: seconds of quiet that close a batch
        if not is_loopback(host) and not token and not insecure:
            raise InsecureBind(
                f"serving on {host} lets anyone who can reach it run predictions on this machine: give a worker "
                "token (set RJ_WORKER_TOKEN, or --token-file PATH) and add the worker with it, or pass --insecure")
        self.rundir = workdir.prepare(ref, name, hardware, concurrency=concurrency, batching=batching)
        self.watch = CodeWatch(self.rundir.watch, recursive=self.rundir.folder is not None)
        self.schema = self.rundir.schema
        self.name = self.schema["info"]["x-replicate-model"]
        self.hardware = self.schema["info"]["x-replicate-hardware"]
        self.concurrency = self.rundir.slots  # cog.yaml's concurrency.max unless asked; a batching model's slots
        self.upstream_port = free_port("127.0.0.1")
        self.front: Front | None = None
        self.proc: subprocess.Popen | None = None
        self.restarts = self.reloads = 0
        self._stop = threading.Event()
        self._wake = threading.Event()  # the supervisor's: stop, or a reload asked for
        self._reload_waiters: list[tuple[threading.Event, list[str | None]]] = []
        self._reload_lock = threading.Lock()
        self._log_fh: Any = None
        self._http = httpx.Client(timeout=httpx.Timeout(5.0, connect=2.0))

    @property
    def url(self) -> str:
        """The front's URL, as a client on this machine reaches it."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else "::1" if self.host == "::" else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def upstream(self) -> str:
        return f"http://127.0.0.1:{self.upstream_port}"

    @property
    def log_path(self) -> pathlib.Path:
        return self.rundir.log_path

    @property
    def workdir(self) -> pathlib.Path:
        return self.rundir.cwd

    def say(self, text: str) -> None:
        print(f"[replicate-jupyter serve] {text}", file=self.out, flush=True)

    # ----- child process -------------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        """The model's environment only: the parent's without credentials, then cog.yaml's."""
        env = model_environment(self.rundir.folder, os.environ, keep=self.pass_env)
        bindir = os.path.dirname(sys.executable)
        env["PATH"] = bindir + os.pathsep + env.get("PATH", "")  # coglet spawns `python -c ...`
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PKG_PARENT, env.get("PYTHONPATH", "")) if p)
        env["COG_PREDICT_TYPE_STUB"] = self.rundir.stub
        env["PORT"] = str(self.upstream_port)
        env["COG_MAX_CONCURRENCY"] = str(self.concurrency)
        if self.batch_window is not None:
            env["RJ_BATCH_WINDOW"] = str(self.batch_window)
        env["RJ_PROGRESS_RELAY"] = "1"  # progress/previews travel as tagged log lines (progress.py)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def _boot(self) -> None:
        """Start coglet and wait until READY, the folder's schema ours meanwhile (workdir.starting)."""
        with self.rundir.starting():
            self._spawn()
            self.wait_ready()

    def _spawn(self) -> None:
        self._wait_port_free()
        if self._log_fh is None:
            self._log_fh = open(self.log_path, "ab", buffering=0)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cog.server.http", "--host", "127.0.0.1"],
            cwd=self.rundir.cwd, env=self._env(), stdin=subprocess.DEVNULL,
            stdout=self._log_fh, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killpg takes the predictor process too
            preexec_fn=die_with_parent(),  # and SIGKILL reaches it when serve dies, however serve died
        )

    def _wait_port_free(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(("127.0.0.1", self.upstream_port))
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
            return self._http.get(self.upstream + "/health-check").json()
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
        gate = Gate(self.watch.changed, self.request_reload, self.still_running) if self.watch.root else None
        self.front = Front(self.host, self.port, self.upstream_port, self.token, self.schema,
                           log_path=self.log_path, cwd=lambda: str(self.rundir.cwd), say=self.say, gate=gate)
        self.port = self.front.port
        if not is_loopback(self.host) and not self.token:
            self.say(f"WARNING: --insecure: {self.host}:{self.port} takes predictions from anyone who can reach it, "
                     "on this machine's hardware and bill")
        self.front.start()  # answers 502 until coglet is up, rather than leaving clients hanging
        try:
            self._boot()
        except BaseException:
            self._kill_child()
            self.front.stop()
            raise
        auth = "token required" if self.token else "no token"
        if self.rundir.batch:
            auth += f", batches up to {self.rundir.batch['max_batch']}"
        pid = self.proc.pid if self.proc is not None else None
        self.say(f"{self.name} ready at {self.url} (hardware {self.hardware}, pid {pid}, {auth}, "
                 f"runs in {self.rundir.cwd} [{self.rundir.mode}], logs {self.log_path})")
        return self

    def supervise(self) -> None:
        """Poll health every `poll` seconds; restart on exit, UNHEALTHY/DEFUNCT, or silence."""
        silent_since: float | None = None
        while not self._stop.is_set():
            self._wake.wait(self.poll)
            self._wake.clear()
            if self._stop.is_set():
                break
            if self._reload_waiters:
                self._serve_reloads()
                continue
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
                    if self.watch.changed():  # edited meanwhile: start the new code, with its schema
                        self._load_new(self.watch.now())
                    self._boot()
                    pid = self.proc.pid if self.proc is not None else None
                    self.say(f"{self.name} back at {self.url} (restart #{self.restarts}, pid {pid})")
                    break
                except Exception as exc:  # noqa: BLE001 — keep trying; the predictor may come back
                    self._kill_child()
                    self.say(f"restart failed: {exc}; retrying in 2 s")
                    self._stop.wait(2.0)

    # ----- reloads (serve/reload.py) -------------------------------------------------------
    def request_reload(self) -> str | None:
        """(the front's worker thread) Have the supervisor restart coglet on the edited code, and
        wait: None once it runs the new code, else the error the held predictions fail with."""
        done, box = threading.Event(), list[str | None]()
        with self._reload_lock:
            self._reload_waiters.append((done, box))
        self._wake.set()
        while not done.wait(0.5):
            if self._stop.is_set():
                return f"{self.name}'s serve is stopping"
        return box[0]

    def _serve_reloads(self) -> None:
        with self._reload_lock:
            waiters, self._reload_waiters = self._reload_waiters, []
        try:
            error = self._reload()
        except Exception as exc:  # noqa: BLE001 — the held predictions must hear of it
            error = f"reloading {self.name} failed: {exc}"
        for done, box in waiters:
            box.append(error)
            done.set()

    def _reload(self) -> str | None:
        """The folder's code changed and nothing runs: load the model again (the schema, a new
        version), then restart coglet from the new code. Edited code that does not load leaves
        the running coglet alone and is reported until the code changes again."""
        sig, old = self.watch.now(), self.rundir.version
        if sig == self.watch.running:
            return None
        if self.watch.failed is not None and self.watch.failed[0] == sig:
            return self.watch.failed[1]
        try:
            self._load_new(sig)
        except Exception as exc:  # noqa: BLE001 — a syntax error, a missing name: the user's to fix
            error = (f"the edited code of {self.name} in {self.watch.root} does not load ({type(exc).__name__}: {exc}); "
                     "the previous code keeps running until it is fixed")
            self.watch.failed = (sig, error)
            self._note(error)
            return error
        self._note(f"reloading {self.name}: its code in {self.watch.root} changed (version {old} -> {self.rundir.version})")
        self._kill_child()
        self.reloads += 1
        try:
            self._boot()
        except Exception as exc:  # noqa: BLE001 — then restarted as any failed server is
            self._kill_child()
            self._note(f"{self.name} did not start on its edited code: {exc}")
            return f"{self.name} did not start on its edited code: {exc}"
        pid = self.proc.pid if self.proc is not None else None
        self._note(f"{self.name} reloaded at {self.url} (reload #{self.reloads}, pid {pid}, version {self.rundir.version})")
        return None

    def _load_new(self, sig: str | None) -> None:
        self.rundir.load()
        self.schema = self.rundir.schema
        self.concurrency = self.rundir.slots
        if self.front is not None:
            self.front.schema = self.schema
        self.watch.running, self.watch.failed = sig, None

    def still_running(self, pid: str) -> bool:
        """Whether coglet still runs prediction `pid` (an async-created one, before a reload)."""
        return still_running(self._http, self.upstream, pid)

    def _note(self, text: str) -> None:
        """Said, and written to the server's log beside coglet's own lines."""
        self.say(text)
        if self._log_fh is not None:
            with contextlib.suppress(OSError):
                self._log_fh.write(f"[replicate-jupyter serve] {text}\n".encode())

    def stop(self) -> None:
        self.stop_soon()
        if self.front is not None:
            self.front.stop()
        self._kill_child()
        self._http.close()
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None

    def stop_soon(self) -> None:
        """From any thread: the supervisor returns, and `run` stops everything."""
        self._stop.set()
        self._wake.set()

    def cleanup(self) -> None:
        self.rundir.cleanup()

    def run(self) -> int:
        """start + supervise until SIGTERM/SIGINT (or stdin's EOF with `exit_with_stdin`); the
        child process group is always killed and what serve wrote is removed."""
        def on_signal(signum, _frame):
            self.stop_soon()

        old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        if self.exit_with_stdin:
            exit_when_stdin_closes(self.stop_soon)
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

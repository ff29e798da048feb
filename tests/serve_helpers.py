"""A real `replicate-jupyter serve` process for tests: one helper for every test module that
starts workers (test_workers, test_serve_auth, test_serve, the cog-examples and rerun runs)."""
from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import threading

import psutil

ROOT = pathlib.Path(__file__).resolve().parent.parent
READY = re.compile(r"ready at (http://\S+) .*logs (\S+)\)")

__all__ = ["ROOT", "READY", "Serve"]


class Serve:
    """A `replicate-jupyter serve REF` process (port 0: it says where it listens); its output is
    kept in `lines`. `env` adds to (or, with a None value, removes from) the environment;
    `host` binds elsewhere than serve's default; `wait=False` returns before it is ready."""

    def __init__(self, ref: str, *args: str, env: dict | None = None, host: str | None = None,
                 wait: bool = True, timeout: float = 90.0) -> None:
        full_env = dict(os.environ)
        for key, value in (env or {}).items():
            if value is None:
                full_env.pop(key, None)
            else:
                full_env[key] = value
        where = ["--host", host] if host else []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "replicate_jupyter.serve.cli", "serve", ref, *where, "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=full_env)
        self.lines: list[str] = []
        self._ready = threading.Event()
        self.url: str | None = None
        self.log: pathlib.Path | None = None
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        if wait and not self._ready.wait(timeout):
            self.stop()
            raise RuntimeError("serve did not become ready:\n" + "".join(self.lines))

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            m = READY.search(line)
            if m and not self._ready.is_set():
                self.url, self.log = m.group(1), pathlib.Path(m.group(2))
                self._ready.set()

    def tree(self) -> list[psutil.Process]:
        me = psutil.Process(self.proc.pid)
        return [me] + me.children(recursive=True)

    def server(self) -> psutil.Process | None:
        """The coglet server serve supervises (None while it restarts)."""
        for c in psutil.Process(self.proc.pid).children():
            try:
                if "cog.server.http" in " ".join(c.cmdline()):
                    return c
            except psutil.Error:
                pass
        return None

    def coglet(self) -> psutil.Process:
        s = self.server()
        assert s is not None, "no coglet server under serve"
        return s

    def predictor_process(self) -> psutil.Process | None:
        s = self.server()
        if s is None:
            return None
        for c in s.children():
            try:
                if "_run_worker" in " ".join(c.cmdline()):
                    return c
            except psutil.Error:
                pass
        return None

    def _log_lines(self) -> list[str]:
        assert self.log is not None
        return self.log.read_text(errors="replace").splitlines()

    def started(self) -> int:
        """How many predictions coglet started, from its own log."""
        return sum('"Starting prediction"' in line for line in self._log_lines())

    def started_ids(self) -> list[str]:
        """Prediction ids coglet started, from its own log (survives restarts: appended)."""
        out = []
        for line in self._log_lines():
            if '"Starting prediction"' in line:
                try:
                    out.append(json.loads(line)["fields"]["prediction_id"])
                except (ValueError, KeyError):
                    pass
        return out

    def restarts(self) -> int:
        return sum("back at" in line for line in self.lines)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._reader.join(5)

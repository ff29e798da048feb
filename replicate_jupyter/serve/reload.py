"""Edit and rerun on a worker: serve restarts coglet with its folder's new code, between predictions.

Cog users edit predict.py and run again, and `cog predict` starts from the files each time. A
`replicate-jupyter serve FOLDER` keeps one coglet warm, so before each new prediction the front
compares the folder's code (serve/folder.code_signature: names, sizes and mtimes of every .py
and cog.yaml, as the kernel's own Cog processes do in runners/cogproc.py; for a loose
`file.py:Class`, the .py files beside it) with what coglet was started from. When it changed,
that prediction and any after it wait at the front while the running ones finish; then the
supervisor loads the model again (a new schema, and a new `x-replicate-version` when the code the
loader hashes changed), restarts coglet from the new code and says so in its output and its log,
and the waiting predictions go on to the new coglet. The pool notices by coglet's
`setup.started_at` (runners/workers/worker_pool.py).

- The check runs on the front's loop, once per new prediction: ~50-90 µs for a cog-examples
  folder of a few files, ~0.4 ms for a loose file beside 25 others (2 shared cores, loaded).
- An attach is told apart from a new prediction by its id: a `PUT /predictions/{id}` while a
  request with that id is open here attaches (cog_client.REATTACH_PROBE) and is never held (it
  would wait for itself); one for an id being held gets 503 at once, which the workers runner
  retries until the held prediction reached the new coglet.
- A prediction created with `PUT` and `Prefer: respond-async` (202) counts as running until
  coglet forgets it (probed with that same attach input: 202 while it runs, 422 after). One
  created by `POST` with respond-async has no id here and is not waited for.
- New code that does not load (a syntax error) leaves the old coglet running and fails the held
  prediction, and each later one, with the error, until the code changes again. New code whose
  setup() fails is restarted like any failed server (server.py).
"""
from __future__ import annotations

import asyncio
import collections
import pathlib
import re
from dataclasses import dataclass
from typing import Callable

import httpx

from replicate_jupyter.runners.workers.cog_client import REATTACH_PROBE
from replicate_jupyter.serve.folder import code_signature

__all__ = ["CodeWatch", "Gate", "Ticket", "still_running"]

_PREDICTION_ID = re.compile(rb"^/predictions/([^/]+)/?$")


class CodeWatch:
    """The code a served model runs: `running` is the signature coglet was started from;
    `failed` the signature (and error) of an edit that did not load."""

    def __init__(self, root: pathlib.Path | None, recursive: bool = True) -> None:
        self.root, self.recursive = root, recursive
        self.running = self.now()
        self.failed: tuple[str | None, str] | None = None

    def now(self) -> str | None:
        return code_signature(self.root, self.recursive) if self.root is not None else None

    def changed(self) -> bool:
        return self.root is not None and self.now() != self.running


@dataclass(eq=False)
class Ticket:
    """One prediction request let through the gate (`attach`: to one already running)."""

    pid: str | None
    attach: bool = False
    status: int | None = None  # the answer's status, set by the front


class Gate:
    """The front's side, on its event loop. `changed()` is the cheap check; `reload()` (blocking,
    run on a thread) restarts coglet on new code and returns an error, or None; `running(pid)`
    (blocking) says whether coglet still runs an async-created prediction."""

    def __init__(self, changed: Callable[[], bool], reload: Callable[[], str | None],
                 running: Callable[[str], bool]) -> None:
        self.changed, self.reload, self.running = changed, reload, running
        self._creating = 0  # open requests that created a prediction
        self._ids: collections.Counter[str] = collections.Counter()  # open requests by prediction id
        self._held: set[str] = set()
        self._detached: set[str] = set()  # created with respond-async, maybe still running
        self._idle = asyncio.Event()
        self._reloading: asyncio.Future | None = None

    async def enter(self, method: bytes, path: bytes) -> Ticket | tuple[int, dict]:
        """Let a prediction request through (a Ticket, to `leave` when answered), once coglet runs
        the current code; or the answer to give instead: (status, JSON body)."""
        m = _PREDICTION_ID.match(path) if method == b"PUT" else None
        pid = m.group(1).decode(errors="replace") if m else None
        if pid is not None and (self._ids[pid] or pid in self._detached):
            self._ids[pid] += 1
            return Ticket(pid, attach=True)
        if pid is not None and pid in self._held:
            return 503, {"detail": "the model's edited code is being loaded; attach again"}
        if pid is not None:
            self._held.add(pid)
        try:
            while True:
                if self._reloading is not None:
                    await asyncio.shield(self._reloading)
                    continue
                if not self.changed():
                    break
                error = await self._reload()
                if error is not None:
                    return 200, {"id": pid, "status": "failed", "error": error, "logs": "", "output": None}
        finally:
            if pid is not None:
                self._held.discard(pid)
        self._creating += 1
        if pid is not None:
            self._ids[pid] += 1
        return Ticket(pid)

    def leave(self, ticket: Ticket) -> None:
        if ticket.pid is not None:
            self._ids[ticket.pid] -= 1
            if self._ids[ticket.pid] <= 0:
                del self._ids[ticket.pid]
        if ticket.attach:
            return
        if ticket.status == 202 and ticket.pid is not None:
            self._detached.add(ticket.pid)
        self._creating -= 1
        if self._creating == 0:
            self._idle.set()

    async def _reload(self) -> str | None:
        loop = asyncio.get_running_loop()
        self._reloading = loop.create_future()
        try:
            while self._creating or self._detached:  # a running prediction finishes first
                if self._creating:
                    self._idle.clear()
                    await self._idle.wait()
                    continue
                for pid in list(self._detached):
                    if not self._ids[pid] and not await loop.run_in_executor(None, self.running, pid):
                        self._detached.discard(pid)
                if self._detached:
                    await asyncio.sleep(0.1)
            return await loop.run_in_executor(None, self.reload)
        finally:
            self._reloading.set_result(None)
            self._reloading = None


def still_running(http: httpx.Client, upstream: str, pid: str) -> bool:
    """Whether coglet at `upstream` still runs prediction `pid`: an attach with an input that
    cannot start a run answers 202 while it runs and 422 once coglet forgot it."""
    try:
        r = http.put(f"{upstream}/predictions/{pid}", json={"id": pid, "input": REATTACH_PROBE})
    except httpx.HTTPError:
        return False
    return r.status_code == 202

"""Predictions this kernel did not create: `predictions.get(id)` and `predictions.list()` on Replicate.

Such a prediction is wrapped in the same `Prediction` as the ones run here, so `wait()`,
`reload()`, `cancel()`, `stream()` and `output_iterator()` work on it as on any other. What it
has done so far becomes its events at once (a finished one is Completed, its files kept by URL
and fetched only when read, so listing a page of predictions downloads nothing). One still
running is followed by polling only once someone waits for it or reads its events (`watch`):
a page of a hundred predictions starts no pollers. It is not in this kernel's ledger: it was
not run from here.
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from replicate_jupyter.errors import BackendError
from replicate_jupyter.prediction.events import TERMINAL
from replicate_jupyter.runners import threads
from replicate_jupyter.runners.replicate.follow import Follower, Lost, ReplicateRun

if TYPE_CHECKING:
    from replicate_jupyter.prediction.prediction import Prediction

__all__ = ["Remote"]


class Remote:
    """The remote predictions one runner has wrapped, by our prediction id."""

    def __init__(self, runner: Any) -> None:
        """`runner`: the ReplicateRunner (typed Any: runner.py imports this module)."""
        self.runner = runner
        self._runs: dict[str, tuple[ReplicateRun, Follower]] = {}
        self._following: set[str] = set()
        self._lock = threading.Lock()

    def adopt(self, data: dict) -> Prediction:
        """A Prediction standing for Replicate's prediction `data` (a `GET` or a list item)."""
        from replicate_jupyter.prediction.prediction import Prediction

        runner = self.runner
        model, version = data.get("model"), data.get("version")
        handle = runner.known_handle(model, version)
        p = Prediction(str(model or "?"), dict(data.get("input") or {}), version=version, backend="replicate",
                       schema=handle.schema if handle is not None else None, runner=runner, handle=handle)
        p.remote_id = data.get("id")
        p.urls = dict(data.get("urls") or {})
        run = ReplicateRun(p, runner.api)
        run.remote = dict(data)
        sku, _ = runner.hardware_for(p.model)
        follower = Follower(run, runner.files, sku, runner.poll_interval, runner.lost_after)
        with self._lock:
            self._runs[p.id] = (run, follower)
        self._fold(run, follower, data)
        p.created_at = data.get("created_at") or p.created_at
        return p

    def _fold(self, run: ReplicateRun, follower: Follower, data: dict) -> None:
        """What `data` says beyond the events already emitted."""
        p = run.p
        status = data.get("status")
        if status != "starting":
            run.start(follower.sku)
            p.started_at = data.get("started_at") or p.started_at
        if status in TERMINAL:
            follower.complete(data, lazy=True)
            p.completed_at = data.get("completed_at") or p.completed_at
            with self._lock:
                self._runs.pop(p.id, None)
        else:
            follower.catch_up(data)

    def _entry(self, p: Prediction) -> tuple[ReplicateRun, Follower] | None:
        with self._lock:
            return self._runs.get(p.id)

    def reload(self, p: Prediction) -> None:
        entry = self._entry(p)
        if entry is None or p.finished:
            return
        run, follower = entry
        data = follower.get()
        if data is not None:
            self._fold(run, follower, data)

    def cancel(self, p: Prediction) -> None:
        entry = self._entry(p)
        if entry is None:
            return
        entry[0].send_cancel()
        self.watch(p)  # its final state comes from Replicate

    def watch(self, p: Prediction) -> None:
        """Follow `p` by polling (once) until it is final."""
        entry = self._entry(p)
        if entry is None or p.finished:
            return
        with self._lock:
            if p.id in self._following:
                return
            self._following.add(p.id)
        run, follower = entry

        def follow() -> None:
            try:
                follower.poll()
            except Lost as exc:
                follower.give_up(exc)
            except BackendError as exc:
                follower.give_up(exc)
            finally:
                with self._lock:
                    self._runs.pop(p.id, None)
                    self._following.discard(p.id)

        threads.submit(follow)

    def list(self, cursor: str | None = None) -> tuple[list[Prediction], str | None, str | None]:
        """One page of the account's predictions: (results, next cursor, previous cursor)."""
        page: dict[str, Any] = self.runner.api.list_predictions(cursor)
        results = [self.adopt(item) for item in page.get("results") or []]
        return results, page.get("next"), page.get("previous")

    def get(self, remote_id: str) -> Prediction:
        return self.adopt(self.runner.api.get_prediction(remote_id))

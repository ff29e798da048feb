"""The kernel-wide state: which backend is in use, the runners, the predictions, the ledger.

One Session per kernel because a notebook is one workspace: the budget, the ledger and the
prediction list span all its cells. The magics' traitlets write their settings here.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from replicate_jupyter.cost.ledger import Ledger
from replicate_jupyter.runners import Runner, create

__all__ = ["Session", "session"]


class Session:
    def __init__(self) -> None:
        self.default_backend = "local"
        self.default_model = "local/shapes"
        self.budget: float | None = None
        self.preview_rate = 4.0  # previews per second, at most
        self.text_rate = 10.0  # streamed-text display updates per second, at most
        self.backend_options: dict[str, dict[str, Any]] = {}
        self.ledger = Ledger()
        self.predictions: "OrderedDict[str, Any]" = OrderedDict()
        self.current_cell: int | None = None
        self._runners: dict[str, Runner] = {}
        self._lock = threading.Lock()

    def runner(self, name: str | None = None) -> Runner:
        name = name or self.default_backend
        with self._lock:
            r = self._runners.get(name)
            if r is None:
                options = dict(self.backend_options.get(name, {}))
                if name == "local":
                    options.setdefault("preview_rate", self.preview_rate)
                r = self._runners[name] = create(name, **options)
            return r

    def use(self, name: str, **options: Any) -> Runner:
        """Make `name` the default backend, (re)configured with `options` when given. Options
        are kept only if the runner accepts them, so a bad option never sticks."""
        if options:
            merged = {**self.backend_options.get(name, {}), **options}
            runner = create(name, **merged)  # raises on a bad option: nothing changes
            with self._lock:
                self.backend_options[name] = merged
                old, self._runners[name] = self._runners.get(name), runner
            if old is not None:
                old.close()
        runner = self.runner(name)
        self.default_backend = name
        return runner

    def track(self, prediction) -> None:
        with self._lock:
            self.predictions[prediction.id] = prediction
            while len(self.predictions) > 1000:  # keep memory bounded in long sessions
                oldest = next(iter(self.predictions))
                if not self.predictions[oldest].done:
                    break
                self.predictions.pop(oldest)

    def close(self) -> None:
        with self._lock:
            runners, self._runners = list(self._runners.values()), {}
        for r in runners:
            r.close()


session = Session()

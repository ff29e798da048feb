"""The local runner's model setups, which a cancel or a kernel interrupt never breaks off.

Why: a setup often imports (tiny-lm's imports transformers, an `hf:` pipeline's diffusers), and
stopping it as a prediction is stopped, by raising an exception into its model thread
(model_thread.py), can land inside such an import and leave the module half-imported for the
rest of the kernel ("partially initialized module"). Cog never meets this: it loads a model in a
child process. So a setup is never stopped. The prediction waiting for it is canceled at once
(a cancel is seen within `POLL` seconds, an interrupt at once) and the setup goes on in the
background; once it is done its model joins the warm cache, and a run that comes meanwhile
waits for that setup instead of starting another.
"""
from __future__ import annotations

import functools
import threading
from typing import Any, Callable

from replicate_jupyter.runners import threads
from replicate_jupyter.runners import warm as warm_mod
from replicate_jupyter.runners.model_thread import Call, ModelThread

__all__ = ["Setups", "POLL"]

#: seconds between looks at a waiting prediction's cancel flag
POLL = 0.05


class Setups:
    """Setups under way that nobody waits for any more, by model key, and the predictions
    waiting for one now. `install(key, thread, call, is_async)` puts a finished one in the
    runner's warm cache, under `lock` (the runner's cache lock)."""

    def __init__(self, lock: threading.RLock, install: Callable[[str, ModelThread, Call, bool], Any]) -> None:
        self._lock = lock
        self._install = install
        self._left: dict[str, tuple[ModelThread, Call]] = {}
        self._waiting: dict[str, Any] = {}  # prediction id → the prediction, while it waits for a setup

    def take(self, key: str) -> tuple[ModelThread, Call] | None:
        """The setup of `key` left running by an earlier run, for this run to wait for."""
        with self._lock:
            return self._left.pop(key, None)

    def wait(self, p: Any, call: Call) -> BaseException | None:
        """Wait until the setup ends or `p` is canceled. A KeyboardInterrupt meanwhile is
        returned (the caller re-raises it once the prediction is recorded); the setup runs on."""
        self._waiting[p.id] = p
        try:
            while not call.wait(POLL):
                if p.cancel_event.is_set():
                    return None
            return None
        except KeyboardInterrupt as exc:
            return exc
        finally:
            self._waiting.pop(p.id, None)

    def leave(self, key: str, thread: ModelThread, call: Call, is_async: bool) -> None:
        """Nobody waits for this setup now: let it finish, then put its model in the cache."""
        with self._lock:
            self._left[key] = (thread, call)
        threads.submit(self._adopt, key, thread, call, is_async)

    def _adopt(self, key: str, thread: ModelThread, call: Call, is_async: bool) -> None:
        call.wait()
        with self._lock:
            if self._left.get(key) != (thread, call):
                return  # a run took it over (it installs it), or it was dropped
            del self._left[key]
            if call.error is None and call.state == "done" and call.value is not None:
                self._install(key, thread, call, is_async)
                return
            call.error = None  # a failed setup: the next run sets up again and sees the error itself
        thread.close()

    def cancel_waiting(self, reason: str) -> None:
        """Cancel the predictions waiting for a setup (the runner is closing)."""
        for p in list(self._waiting.values()):
            p.cancel(reason=reason)

    def drop(self, key: str | None = None) -> None:
        """Forget the setups left running (of `key`, or all): their models are released as soon
        as they are set up, and never join the cache."""
        with self._lock:
            keys = [key] if key else list(self._left)
            for k in keys:
                left = self._left.pop(k, None)
                if left is not None:
                    thread, call = left
                    thread.close(final=functools.partial(_release, call), timeout=0.0)


def _release(call: Call) -> None:
    """Tear down what a dropped setup made (on its model thread, after the setup)."""
    value, call.value = call.value, None
    if value is not None:
        warm_mod.release(value[0])

"""Route a predictor's prints to its prediction's logs, per thread.

`sys.stdout` is shared by every thread in a kernel, so `redirect_stdout` would steal the output
of other cells running at the same time. Instead one proxy is installed once; writes from a
thread that is running a prediction go to that prediction's sink, all others pass through.
"""
from __future__ import annotations

import sys
import threading
from contextlib import contextmanager
from typing import Callable, Iterator

__all__ = ["capture"]

_local = threading.local()
_install_lock = threading.Lock()


class _Proxy:
    def __init__(self, target, which: str):
        self._target = target
        self._which = which

    def write(self, text: str) -> int:
        sink = getattr(_local, "sink", None)
        if sink is not None and text:
            sink(text)
            return len(text)
        return self._target.write(text)

    def flush(self) -> None:
        if getattr(_local, "sink", None) is not None:
            return
        t = self._target
        # ipykernel's OutStream.flush from a non-IO thread waits for a round trip through its IO
        # thread even with nothing buffered; IPython flushes both streams before every display
        # message, so a live display would pay that per update. Nothing pending: nothing to do.
        if getattr(t, "_flush_pending", True) is False and getattr(t, "_subprocess_flush_pending", False) is False \
                and getattr(t, "echo", None) is None:
            return
        t.flush()

    def __getattr__(self, name):
        return getattr(self._target, name)


def _ensure_installed() -> None:
    with _install_lock:
        for which in ("stdout", "stderr"):
            stream = getattr(sys, which)
            if not isinstance(stream, _Proxy):
                setattr(sys, which, _Proxy(stream, which))


@contextmanager
def capture(sink: Callable[[str], None]) -> Iterator[None]:
    """Within the block, this thread's stdout/stderr writes go to `sink`."""
    _ensure_installed()
    prev = getattr(_local, "sink", None)
    _local.sink = sink
    try:
        yield
    finally:
        _local.sink = prev

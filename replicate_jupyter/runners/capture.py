"""Route a predictor's prints to its prediction's logs, per context.

`sys.stdout` is shared by every thread in a kernel, so `redirect_stdout` would steal the output
of other cells running at the same time. Instead one proxy is installed once; a write goes to
the sink of the `contextvars` context it is made in, and passes through when there is none.
A context, not a thread: an async predictor's coroutines share the loop thread with others, but
each asyncio task has its own context, so each prediction's prints reach its own logs.
"""
from __future__ import annotations

import contextvars
import sys
import threading
from contextlib import contextmanager
from typing import Callable, Iterator

__all__ = ["capture", "set_sink"]

_sink: contextvars.ContextVar[Callable[[str], None] | None] = contextvars.ContextVar("rj_print_sink", default=None)
_install_lock = threading.Lock()


class _Proxy:
    def __init__(self, target, which: str):
        self._target = target
        self._which = which

    def write(self, text: str) -> int:
        sink = _sink.get()
        if sink is not None and text:
            sink(text)
            return len(text)
        return self._target.write(text)

    def flush(self) -> None:
        if _sink.get() is not None:
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


def set_sink(sink: Callable[[str], None] | None) -> None:
    """Prints of the current context go to `sink` from now on (None: to the real streams).
    For a fresh context a runner builds for one call (`context.fresh_context`)."""
    if sink is not None:
        _ensure_installed()
    _sink.set(sink)


@contextmanager
def capture(sink: Callable[[str], None]) -> Iterator[None]:
    """Within the block, this context's stdout/stderr writes go to `sink`."""
    _ensure_installed()
    prev = _sink.get()
    _sink.set(sink)
    try:
        yield
    finally:
        _sink.set(prev)

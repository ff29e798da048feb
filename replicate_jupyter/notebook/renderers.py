"""The notebook gives the data its looks: the renderers of `display.py`, handed to IPython.

Data objects (`Prediction`, `FileOutput`, a list of files `FileOutputs`, `Ledger`) never
import rendering. Two hooks bring
their looks to a notebook, both filled from the one table below:

- `install()` fills `prediction.registry`, which the objects' one-line `_repr_mimebundle_`
  consults. It runs when `replicate_jupyter.notebook` is first imported (its `__init__`), so
  `%load_ext`, a form, a live display — or the package root, which imports the notebook layer
  when it runs inside IPython — make a plain `import replicate_jupyter` render richly too.
- `register(ipython)` (from `load_ipython_extension`) also registers the same functions with
  the shell's display formatter (`mimebundle_formatter.for_type`), which IPython consults
  before `_repr_mimebundle_`; `unregister(ipython)` takes them out again and leaves the
  registry, so an unloaded extension's objects still render.

This adapter is the one place that asks the kernel something for a renderer: which cell is
running now (`session.current_cell`), passed to the pure `display.prediction_bundle`.

It also makes the kernel's display publisher flush only the streams with output pending
(`flush_pending`): ipykernel flushes stdout and stderr before every display, each a round trip
to its IO thread (~0.05–0.2 ms a display, most of a `%%replicate` cell's final draw when
nothing was printed). Order is kept: a stream with pending text is flushed as before, and a
display's send is queued on the same IO thread behind any flush already running.
"""
from __future__ import annotations

import sys
from typing import Any, Callable

from replicate_jupyter.cost.ledger import Ledger
from replicate_jupyter.notebook import display
from replicate_jupyter.prediction import registry
from replicate_jupyter.prediction.files import FileOutput
from replicate_jupyter.prediction.outputs import FileOutputs
from replicate_jupyter.prediction.prediction import Prediction

__all__ = ["RENDERERS", "prediction_value", "install", "register", "unregister", "flush_pending"]


def prediction_value(p: Prediction) -> dict[str, Any]:
    """A Prediction as a cell's value, knowing which cell runs now (one line where its live
    display already shows it). A card shown here counts as that cell's display of it: shown
    again in the same cell it is one line, and the cell needs no extra cost line for it."""
    from replicate_jupyter.session import session

    cell = session.current_cell
    bundle = display.prediction_bundle(p, current_cell=cell)
    if p.display_cell is None and p.done and display.MIME in bundle:
        p.display_cell = cell
    return bundle


#: type → bundle function (one argument: the object)
RENDERERS: dict[type, Callable[[Any], dict[str, Any]]] = {
    Prediction: prediction_value,
    FileOutput: display.file_bundle,
    FileOutputs: display.files_bundle,
    Ledger: display.ledger_bundle,
}


def install() -> None:
    """Give every data type its renderer in `prediction.registry` (idempotent)."""
    for cls, fn in RENDERERS.items():
        registry.set_renderer(cls, fn)


def register(ipython: Any) -> None:
    """`install()`, and register the renderers with `ipython`'s display formatter."""
    install()
    formatter = ipython.display_formatter.mimebundle_formatter
    for cls, fn in RENDERERS.items():
        formatter.for_type(cls, fn)
    pub: Any = getattr(ipython, "display_pub", None)
    if pub is not None and _flushes_both(pub) and "_flush_streams" not in vars(pub):
        pub._flush_streams = flush_pending


def unregister(ipython: Any) -> None:
    """Take the renderers out of `ipython`'s display formatter (the registry keeps them)."""
    formatter = ipython.display_formatter.mimebundle_formatter
    for cls in RENDERERS:
        formatter.pop(cls, None)
    pub = getattr(ipython, "display_pub", None)
    if pub is not None and vars(pub).get("_flush_streams") is flush_pending:
        del pub._flush_streams


def _flushes_both(pub: Any) -> bool:
    """`pub` is ipykernel's display publisher with its own flush (stdout, then stderr)."""
    flush = getattr(type(pub), "_flush_streams", None)
    return flush is not None and getattr(flush, "__qualname__", "") == "ZMQDisplayPublisher._flush_streams"


def _pending(stream: Any) -> bool:
    """Whether `stream` may hold output not yet sent: an ipykernel OutStream says so (its
    flags are set by every write before it returns, and cleared by the IO thread's flush);
    any other stream (a redirect, a file) is flushed as before."""
    if type(stream).__name__ != "OutStream" or type(stream).__module__ != "ipykernel.iostream":
        return True
    return bool(getattr(stream, "_flush_pending", True) or getattr(stream, "_subprocess_flush_pending", True))


def flush_pending() -> None:
    """The display publisher's flush before a display: stdout then stderr, as ipykernel's, but
    only a stream with output pending (an empty one costs a round trip to the IO thread)."""
    for stream in (sys.stdout, sys.stderr):
        if _pending(stream):
            stream.flush()

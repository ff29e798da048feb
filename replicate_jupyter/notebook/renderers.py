"""The notebook gives the data its looks: the renderers of `display.py`, handed to IPython.

Data objects (`Prediction`, `FileOutput`, `Ledger`) never import rendering. Two hooks bring
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
"""
from __future__ import annotations

from typing import Any, Callable

from replicate_jupyter.cost.ledger import Ledger
from replicate_jupyter.notebook import display
from replicate_jupyter.prediction import registry
from replicate_jupyter.prediction.files import FileOutput
from replicate_jupyter.prediction.prediction import Prediction

__all__ = ["RENDERERS", "prediction_value", "install", "register", "unregister"]


def prediction_value(p: Prediction) -> dict[str, Any]:
    """A Prediction as a cell's value, knowing which cell runs now (one line where its live
    display already shows it)."""
    from replicate_jupyter.session import session

    return display.prediction_bundle(p, current_cell=session.current_cell)


#: type → bundle function (one argument: the object)
RENDERERS: dict[type, Callable[[Any], dict[str, Any]]] = {
    Prediction: prediction_value,
    FileOutput: display.file_bundle,
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


def unregister(ipython: Any) -> None:
    """Take the renderers out of `ipython`'s display formatter (the registry keeps them)."""
    formatter = ipython.display_formatter.mimebundle_formatter
    for cls in RENDERERS:
        formatter.pop(cls, None)

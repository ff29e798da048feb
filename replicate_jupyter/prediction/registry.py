"""Where a data object finds how it looks, without importing how it looks.

`Prediction`, `FileOutput`, `FileOutputs` (a list output holding files) and `Ledger` are data:
they never import the notebook's rendering code (that would tie the core to IPython and make
import circles). Each keeps a one-line
`_repr_mimebundle_` that asks this registry for the renderer of its type. The notebook layer
fills the registry (`notebook/renderers.py`, run whenever `replicate_jupyter.notebook` is
imported: by `%load_ext`, by a form, by a live display, or by the package root inside
IPython), and also registers the same functions with IPython's display formatter
(`for_type`), which IPython consults before `_repr_mimebundle_`.

With the registry empty (the notebook layer never imported, e.g. a plain script), objects
show as their `repr`: the arrow from data to its look is a lookup at display time, never an
import.
"""
from __future__ import annotations

from typing import Any, Callable

__all__ = ["Renderer", "set_renderer", "remove_renderer", "renderer_for", "mimebundle"]

#: a function of one object to its mime bundle (`{"text/plain": ..., "text/html": ..., ...}`)
Renderer = Callable[[Any], dict[str, Any]]

_renderers: dict[type, Renderer] = {}


def set_renderer(cls: type, fn: Renderer) -> None:
    """Make `fn(obj)` the bundle of every `cls` (and subclass) instance."""
    _renderers[cls] = fn


def remove_renderer(cls: type) -> None:
    _renderers.pop(cls, None)


def renderer_for(cls: type) -> Renderer | None:
    """The renderer registered for `cls` or its nearest base class."""
    for base in cls.__mro__:
        fn = _renderers.get(base)
        if fn is not None:
            return fn
    return None


def mimebundle(obj: Any) -> dict[str, Any]:
    """`obj`'s bundle by its registered renderer, else its repr as text."""
    fn = renderer_for(type(obj))
    return fn(obj) if fn is not None else {"text/plain": repr(obj)}

"""`FileOutputs`: the list `run()` returns when a model made several files (flux-schnell, sdxl
and most image models), which renders as its images when it is a cell's value.

It is a `list` and nothing else to the user's code: `isinstance(out, list)`, `==` against
replicate-python's list, `json.dumps`, iteration, indexing and slicing (a slice is a plain
list) all behave as a list's, and its repr is a list's. A pickle or a copy of it is a plain
list, so nothing saved needs this package to load. The one addition is the one-line
`_repr_mimebundle_` that data objects have here: it asks `prediction.registry` for the look
the notebook layer registered (`notebook/renderers.py`), and without one it is the repr.
"""
from __future__ import annotations

from typing import Any

from replicate_jupyter.prediction import registry
from replicate_jupyter.prediction.files import FileOutput

__all__ = ["FileOutputs", "with_looks"]


class FileOutputs(list):
    """A list output holding files; shown as its files in a notebook (see the module doc)."""

    __slots__ = ()

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return registry.mimebundle(self)  # the look the notebook layer registered (registry.py)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:  # pickled and copied as the plain list it is
        return list, (list(self),)


def with_looks(value: Any) -> Any:
    """`value` as the user gets it: a list holding a file becomes a `FileOutputs` (equal to it);
    anything else is returned as it is."""
    if type(value) is list and any(isinstance(x, FileOutput) for x in value):
        return FileOutputs(value)
    return value

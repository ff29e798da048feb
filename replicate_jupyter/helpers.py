"""replicate-python's `replicate.helpers` where its README imports from it
(`from replicate.helpers import FileOutput`): the same class `run()` returns files as."""
from __future__ import annotations

from replicate_jupyter.prediction.files import FileOutput

__all__ = ["FileOutput"]

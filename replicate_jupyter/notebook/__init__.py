"""The notebook layer: magics, cell parsing, display, live displays, forms.

It sits on top: it uses the API, the session and the data objects, and nothing below imports
it (tests/test_layout.py holds that). Importing it gives the data objects their looks
(`renderers.install()`), so a Prediction, a file output or the ledger renders richly wherever
the notebook layer is loaded, while the data modules never import rendering.
"""
from __future__ import annotations

from replicate_jupyter.notebook import renderers as _renderers

__all__: list[str] = []

_renderers.install()

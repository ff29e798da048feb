"""Where JupyterLab finds the prebuilt extension.

The wheel installs it under share/jupyter/labextensions/replicate-jupyter (no
import needed); this hook serves `jupyter labextension develop` and tools that
ask the Python package for its labextension paths.
"""

from __future__ import annotations


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """The built extension's folder inside the package, and its npm name."""
    return [{"src": "labextension", "dest": "replicate-jupyter"}]

"""replicate-jupyter: any model one cell away.

    import replicate_jupyter as rj
    rj.run("local/shapes", input={"prompt": "a red square"})

Importing this package stays light (no torch, diffusers, ray or cog): they load when a model or
a backend needs them, so `%load_ext replicate_jupyter` is instant.
"""
from __future__ import annotations

from typing import Any

# The submodules `schema` and `models` share their names with API functions. Python sets a
# submodule as a package attribute when it is first imported, which would replace the function;
# importing them here first, then binding the functions, keeps `rj.schema(...)` callable.
from . import models as _models_pkg, schema as _schema_mod  # noqa: F401  (light modules)
from .api import create, form, ledger, models, predictions, run, schema, stream
from .errors import (
    BackendError,
    BudgetExceeded,
    Canceled,
    InputError,
    ModelError,
    ModelNotFound,
    ReplicateJupyterError,
)
from ._labextension import _jupyter_labextension_paths  # noqa: F401  (JupyterLab finds the prebuilt extension)
from .files import FileOutput
from .prediction import Prediction
from .session import session

__version__ = "0.1.0"

__all__ = [
    "run", "stream", "predictions", "create", "schema", "models", "ledger", "form", "use", "workers",
    "Prediction", "FileOutput", "session",
    "ReplicateJupyterError", "InputError", "ModelNotFound", "ModelError", "BackendError", "BudgetExceeded", "Canceled",
]


def use(backend: str, **options: Any):
    """Make `backend` the default (`local`, `workers`, …), optionally configured."""
    return session.use(backend, **options)


def __getattr__(name: str) -> Any:
    if name == "workers":  # the worker pool loads httpx and threads only when asked for
        from .runners.workers import pool

        return pool()
    raise AttributeError(f"module 'replicate_jupyter' has no attribute {name!r}")


def load_ipython_extension(ipython) -> None:
    from .magics import load_ipython_extension as _load

    _load(ipython)


def unload_ipython_extension(ipython) -> None:
    from .magics import unload_ipython_extension as _unload

    _unload(ipython)

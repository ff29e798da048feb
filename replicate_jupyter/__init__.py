"""replicate-jupyter: any model one cell away.

    import replicate_jupyter as rj
    rj.run("local/shapes", input={"prompt": "a red square"})

Importing this package stays light (no torch, diffusers, ray or cog): they load when a model or
a backend needs them, so `%load_ext replicate_jupyter` is instant.
"""
from __future__ import annotations

import sys
import warnings
from typing import TYPE_CHECKING, Any

# The embedded models package `models` shares its name with API functions. Python sets a
# submodule as a package attribute when it is first imported, which would replace the function;
# importing them here first, then binding the functions, keeps `rj.schema(...)` callable.
from replicate_jupyter import models as _models_pkg  # noqa: F401  (before the API binds `models`)
from replicate_jupyter._labextension import _jupyter_labextension_paths  # noqa: F401  (JupyterLab finds the prebuilt extension)
from replicate_jupyter.api import create, ledger, models, predictions, run, schema, stream
from replicate_jupyter.errors import (
    BackendError,
    BudgetExceeded,
    Canceled,
    InputError,
    ModelError,
    ModelNotFound,
    ReplicateJupyterError,
)
from replicate_jupyter.prediction.files import FileOutput
from replicate_jupyter.prediction.prediction import Prediction
from replicate_jupyter.session import session

if TYPE_CHECKING:
    from replicate_jupyter.runners import Runner

__version__ = "0.1.0"

__all__ = [
    "run", "stream", "predictions", "create", "schema", "models", "ledger", "form", "backend", "use", "workers",
    "Prediction", "FileOutput", "session",
    "ReplicateJupyterError", "InputError", "ModelNotFound", "ModelError", "BackendError", "BudgetExceeded", "Canceled",
]


if "IPython" in sys.modules:  # in a kernel: give the data objects their looks (the notebook layer's renderers)
    import replicate_jupyter.notebook  # noqa: E402,F401


def form(ref: Any = None, *, on: str | None = None) -> Any:
    """The model's inputs as a form (the same as `%replicate form MODEL`); loads ipywidgets."""
    from replicate_jupyter.notebook.forms import form as _form

    return _form(ref, on=on)


def backend(name: str, **options: Any) -> Runner:
    """Make `name` the default backend (`local`, `workers`, `ray`, `replicate`), configured with
    `options` when given (the same as `%replicate use NAME --opt value`). A bad name or option
    raises InputError and changes nothing."""
    return session.use(name, **options)


def use(ref: str, **options: Any) -> Runner:
    """Deprecated for choosing a backend: call `backend(name)`. `use` is kept thin because it
    is to take replicate-python 1.1's meaning (`use(ref)`: a model as a function)."""
    warnings.warn(f"rj.use({ref!r}) to choose a backend is deprecated: call rj.backend({ref!r}) "
                  "(rj.use(ref) will mean replicate-python's use(): a model as a function)",
                  DeprecationWarning, stacklevel=2)
    return backend(ref, **options)


def __getattr__(name: str) -> Any:
    if name == "workers":  # the worker pool loads httpx and threads only when asked for
        from replicate_jupyter.runners.workers.runner import pool

        return pool()
    raise AttributeError(f"module 'replicate_jupyter' has no attribute {name!r}")


def load_ipython_extension(ipython) -> None:
    from replicate_jupyter.notebook.magics import load_ipython_extension as _load

    _load(ipython)


def unload_ipython_extension(ipython) -> None:
    from replicate_jupyter.notebook.magics import unload_ipython_extension as _unload

    _unload(ipython)

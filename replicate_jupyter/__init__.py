"""replicate-jupyter: any model one cell away.

    import replicate_jupyter as rj
    rj.run("local/shapes", input={"prompt": "a red square"})

    import replicate_jupyter as replicate          # replicate-python 1.0.7's API, and 1.1's use()
    replicate.run("black-forest-labs/flux-schnell", input={"prompt": "..."})   # on Replicate, by name

Importing this package stays light (no torch, diffusers, ray or cog): they load when a model or
a backend needs them, so `%load_ext replicate_jupyter` is instant.
"""
from __future__ import annotations

import sys
import warnings
from typing import Any

# The embedded models package `models` shares its name with API functions. Python sets a
# submodule as a package attribute when it is first imported, which would replace the function;
# importing them here first, then binding the functions, keeps `rj.schema(...)` callable.
from replicate_jupyter import exceptions  # replicate-python's `replicate.exceptions` (`helpers`: below)
from replicate_jupyter import models as _models_pkg  # noqa: F401  (before the API binds `models`)
from replicate_jupyter import use as _use_module  # noqa: F401  (before `use` below is bound: see `models`)
from replicate_jupyter._labextension import _jupyter_labextension_paths  # noqa: F401  (JupyterLab finds the prebuilt extension)
from replicate_jupyter.api import async_run, async_stream, create, ledger, predictions, run, schema, stream
from replicate_jupyter.client import Client, deployments, files, hardware, models
from replicate_jupyter.errors import (
    BackendError,
    BudgetExceeded,
    Canceled,
    InputError,
    ModelError,
    ModelNotFound,
    ReplicateError,
    ReplicateJupyterError,
)
from replicate_jupyter.prediction.files import FileOutput
from replicate_jupyter.prediction.prediction import Prediction
from replicate_jupyter.runners.replicate import routing as _routing
from replicate_jupyter.runners.replicate.resources import Page
from replicate_jupyter.session import session
from replicate_jupyter.use import get_path_url

__version__ = "0.1.0"

__all__ = [
    "run", "stream", "async_run", "async_stream", "predictions", "create", "schema", "models", "ledger", "form",
    "backend", "use", "workers", "Client", "deployments", "files", "hardware", "webhooks", "paginate",
    "async_paginate", "Page", "Prediction", "FileOutput", "session", "rerun", "replay", "records",
    "ReplicateJupyterError", "InputError", "ModelNotFound", "ModelError", "BackendError", "BudgetExceeded", "Canceled",
    "ReplicateError", "exceptions", "helpers", "get_path_url",
]


if "IPython" in sys.modules:  # in a kernel: give the data objects their looks (the notebook layer's renderers)
    import replicate_jupyter.notebook  # noqa: E402,F401


def form(ref: Any = None, *, on: str | None = None) -> Any:
    """The model's inputs as a form (the same as `%replicate form MODEL`); loads ipywidgets."""
    from replicate_jupyter.notebook.forms import form as _form

    return _form(ref, on=on)


def rerun(id: str | None = None, **kwargs: Any) -> Any:
    """Run a recorded prediction again (`%replicate rerun`): by id, `cell=N` or `last=True`,
    optionally `on=` another backend, `compare=True` for old vs new."""
    from replicate_jupyter.notebook.rerun import rerun as _rerun

    return _rerun(id, **kwargs)


def replay(path: str, **kwargs: Any) -> Any:
    """Rerun every recorded prediction of a saved notebook (`%replicate replay`): `on=`,
    `budget=`, `dry_run=`."""
    from replicate_jupyter.notebook.rerun import replay as _replay

    return _replay(path, **kwargs)


def records(notebook: str | None = None) -> Any:
    """The records of a saved .ipynb (no kernel state needed), or of this kernel's predictions."""
    from replicate_jupyter.notebook.records import records as _records

    return _records(notebook)


def backend(name: str | None = None, **options: Any) -> str:
    """Make `name` the default backend (`local`, `workers`, `ray`, `replicate`), configured with
    `options` when given (the same as `%replicate use NAME --opt value`). A bad name or option
    raises InputError and changes nothing. From then on a call without `on=` runs there (no
    routing of bare names to Replicate). Returns the default backend's name (with no `name`:
    only that, as `%replicate use` alone says it); the runner itself is `session.runner()`."""
    if name is None and not options:
        return session.default_backend
    session.use(name if name is not None else session.default_backend, **options)
    _routing.note_choice()
    return session.default_backend


def use(ref: Any, *, streaming: bool = False, hint: Any = None, use_async: bool = False, on: str | None = None,
        **options: Any) -> Any:
    """replicate-python 1.1's `use(ref)`: the model as a function (`use.py`).

    A backend name (`local`, `workers`, `ray`, `replicate`) still chooses the default backend,
    as `use` did before, with a DeprecationWarning: call `backend(name)`."""
    from replicate_jupyter.runners import BACKENDS

    if isinstance(ref, str) and ref in BACKENDS:
        warnings.warn(f"rj.use({ref!r}) to choose a backend is deprecated: call rj.backend({ref!r}) "
                      "(rj.use(ref) is replicate-python's use(): a model as a function)",
                      DeprecationWarning, stacklevel=2)
        return backend(ref, **options)
    if options:
        from replicate_jupyter.errors import InputError, Problem

        raise InputError([Problem(k, "unknown", v, "streaming, hint, use_async, on")
                          for k, v in sorted(options.items())])
    if use_async:
        return _use_module.use(ref, streaming=streaming, hint=hint, use_async=True, on=on)
    return _use_module.use(ref, streaming=streaming, hint=hint, on=on)


def paginate(list_method: Any) -> Any:
    """replicate-python's `paginate(replicate.predictions.list)`: every page, following `next`."""
    cursor: Any = ...
    while cursor is not None:
        page = list_method(cursor)
        yield page
        cursor = page.next


async def async_paginate(list_method: Any) -> Any:
    cursor: Any = ...
    while cursor is not None:
        page = await list_method(cursor)
        yield page
        cursor = page.next


def __getattr__(name: str) -> Any:
    if name == "workers":  # the worker pool loads httpx and threads only when asked for
        from replicate_jupyter.runners.workers.runner import pool

        return pool()
    if name == "helpers":  # replicate-python's `replicate.helpers.FileOutput` (after the API: import order)
        import importlib

        return importlib.import_module("replicate_jupyter.helpers")
    if name == "webhooks":  # replicate-python's `replicate.webhooks` (default.secret(), validate())
        import importlib

        return importlib.import_module("replicate_jupyter.webhooks")
    raise AttributeError(f"module 'replicate_jupyter' has no attribute {name!r}")


def load_ipython_extension(ipython) -> None:
    from replicate_jupyter.notebook.magics import load_ipython_extension as _load

    _load(ipython)


def unload_ipython_extension(ipython) -> None:
    from replicate_jupyter.notebook.magics import unload_ipython_extension as _unload

    _unload(ipython)

"""Backends. Each lives in its own module and is imported only when first used, so choosing
`local` never imports httpx or ray, and `import replicate_jupyter` stays light."""
from __future__ import annotations

import importlib
from typing import Any

from replicate_jupyter.errors import UnknownBackend
from replicate_jupyter.runners.base import ModelHandle, Runner

__all__ = ["ModelHandle", "Runner", "BACKENDS", "create"]

#: backend name → "module:Class"
BACKENDS: dict[str, str] = {
    "local": "replicate_jupyter.runners.local:LocalRunner",
    "workers": "replicate_jupyter.runners.workers.runner:WorkersRunner",
    "ray": "replicate_jupyter.runners.ray.runner:RayRunner",
    "replicate": "replicate_jupyter.runners.replicate.runner:ReplicateRunner",
}


def create(name: str, **options: Any) -> Runner:
    """A new runner for backend `name` with `options`. An unknown name raises `UnknownBackend`
    (a ValueError too) naming the closest backend."""
    try:
        target = BACKENDS[name]
    except (KeyError, TypeError):
        raise UnknownBackend(str(name), list(BACKENDS)) from None
    module_name, _, cls_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise UnknownBackend(name, list(BACKENDS), detail="is not available in this version") from None
        raise
    runner: Runner = getattr(module, cls_name)(**options)
    return runner

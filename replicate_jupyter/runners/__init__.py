"""Backends. Each lives in its own module and is imported only when first used."""
from __future__ import annotations

import importlib

from replicate_jupyter.runners.base import ModelHandle, Runner

__all__ = ["ModelHandle", "Runner", "BACKENDS", "create"]

#: backend name → "module:Class"
BACKENDS: dict[str, str] = {
    "local": "replicate_jupyter.runners.local:LocalRunner",
    "workers": "replicate_jupyter.runners.workers.runner:WorkersRunner",
    "ray": "replicate_jupyter.runners.ray.runner:RayRunner",
    "replicate": "replicate_jupyter.runners.replicate.runner:ReplicateRunner",
}


def create(name: str, **options) -> Runner:
    try:
        target = BACKENDS[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, list(BACKENDS), n=1)
        hint = f" — did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"Unknown backend {name!r}{hint} (backends: {', '.join(BACKENDS)})") from None
    module_name, _, cls_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise ValueError(f"The {name!r} backend is not available in this version") from None
        raise
    return getattr(module, cls_name)(**options)

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


_UNSET = object()


def _limit(value: Any) -> int | None:
    """`max_inflight` as given (an int ≥ 1, or None for no limit); anything else is a ValueError
    the settings turn into an InputError naming the backend's option."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"max_inflight must be a whole number ≥ 1 or None (no limit), got {value!r}")
    return value


def create(name: str, **options: Any) -> Runner:
    """A new runner for backend `name` with `options`. An unknown name raises `UnknownBackend`
    (a ValueError too) naming the closest backend.

    `max_inflight` is an option of every backend (`%replicate use replicate --max-inflight 8`,
    `c.ReplicateMagics.backend_options = {"replicate": {"max_inflight": 8}}`): it replaces the
    runner's own limit, so it is handled here and no runner has to know about it."""
    limit: Any = options.pop("max_inflight", _UNSET)
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
    runner_cls = getattr(module, cls_name)
    if limit is not _UNSET:
        limit = _limit(limit)  # checked before the runner starts anything
    runner: Runner = runner_cls(**options)
    if limit is not _UNSET:
        runner.max_inflight = limit
    return runner

"""The `replicate` backend: Replicate's cloud through its HTTP API, with the user's token.

    runner.py     ReplicateRunner: resolve (schemas cached per version), create, cancel, reload
    follow.py     following a created prediction: SSE stream (reopened after a cut), polling, the end
    remote.py     predictions this kernel did not create (`predictions.get/list`)
    files.py      files in (data URIs or uploads) and out (fetched, embedded before they expire)
    api.py        the HTTP client: retries (tenacity), SSE (httpx-sse), httpx translated at the edge
    token.py      where the token lives: memory only, masked, never pickled
    routing.py    which backend runs a call; when a bare owner/name goes to Replicate
    resources.py  Replicate's API objects (Page, Model, Version, Deployment, File, Hardware)

Names are loaded when first asked for, so `routing`/`token` (read on every call's path) do not
pull in httpx until the backend is used.
"""
from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ReplicateRunner", "ReplicateAPI", "APIError", "forget", "parse_ref"]

_WHERE = {"ReplicateRunner": "runner", "forget": "runner", "parse_ref": "runner", "ReplicateAPI": "api",
          "APIError": "api"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

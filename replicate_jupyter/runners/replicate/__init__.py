"""The `replicate` backend: Replicate's cloud through its HTTP API, with the user's token.

    runner.py   ReplicateRunner: resolve (schemas cached per version), create, cancel
    follow.py   following a created prediction: SSE stream, polling, the final state
    files.py    files in (data URIs or uploads) and out (fetched, embedded before they expire)
    api.py      the HTTP client: token read per request, never kept; httpx translated at the edge
"""
from __future__ import annotations

from replicate_jupyter.runners.replicate.api import APIError, ReplicateAPI
from replicate_jupyter.runners.replicate.runner import ReplicateRunner, forget, parse_ref

__all__ = ["ReplicateRunner", "ReplicateAPI", "APIError", "forget", "parse_ref"]

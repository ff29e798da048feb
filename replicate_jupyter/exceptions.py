"""replicate-python's `replicate.exceptions`, so `from replicate.exceptions import ModelError`
(its README) and `except replicate.exceptions.ReplicateError as e: e.status` run unchanged with
`import replicate_jupyter as replicate`.

These are the classes of the one tree in `errors.py`, under replicate-python's names:
`ReplicateException` is our base (`ReplicateJupyterError`), so it catches every error the
package raises on purpose, as replicate-python's catches all of its own.
"""
from __future__ import annotations

from replicate_jupyter.errors import ModelError, ReplicateError
from replicate_jupyter.errors import ReplicateJupyterError as ReplicateException

__all__ = ["ReplicateException", "ModelError", "ReplicateError"]

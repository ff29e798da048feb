"""`ModelHandle`: a model reference resolved by a backend (name, version, schema).

It lives beside the Prediction, not with the runners, because a Prediction carries the handle
it runs (`p.handle`) and data sits below the code that produces it: runners import this,
never the reverse. `runners.base` re-exports it under its old name.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ModelHandle"]


@dataclass
class ModelHandle:
    """What `Runner.resolve(ref)` returns. `extra` is the resolving runner's own (e.g. the
    local runner's `PredictorSpec` under `"spec"`, Replicate's `"pinned"` flag); other code
    reads only `name`, `version`, `schema` and `description`."""

    name: str
    version: str | None
    schema: dict[str, Any]
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

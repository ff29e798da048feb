"""A webhook's body: the prediction as Replicate's API returns it.

Built from `Prediction.to_json()` (secret inputs already masked there), minus what only our
display uses (progress, preview, output_display, backend), with files as URLs: a data URI for a
file the kernel holds, the remote URL when there is one. As a last guard every secret input's
value is masked wherever else it may appear (a model that printed it into its logs), because a
webhook body leaves the machine.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from replicate_jupyter.prediction.files import InputFile

__all__ = ["TERMINAL", "Body", "Builder", "start_state", "MASK"]

TERMINAL = frozenset({"succeeded", "failed", "canceled", "aborted"})
MASK = "**********"
_OURS = ("progress", "preview", "output_display", "backend")


@dataclass(frozen=True)
class Body:
    status: str
    text: str  # what is signed
    data: bytes  # what is sent (the same text, UTF-8)
    n_output: int | None = None  # iterator items in it (None: the output is not a list)
    n_logs: int = 0  # characters of logs in it


def start_state(p: Any, n_output: int, n_logs: int) -> dict[str, Any]:
    """The prediction as it was at its Started event, from what the deliverer had seen by then
    (`n_output` iterator items, `n_logs` characters of logs): the `start` body shows it so even
    when the delivery thread builds it after the first tokens, or when the events are replayed
    to a webhook attached later. A few reads, in the prediction's thread."""
    hardware = p.metrics.get("hardware")
    return {"status": "processing", "started_at": p.started_at, "logs": p.logs[:n_logs],
            "metrics": {"hardware": hardware} if hardware else {},
            "n_output": n_output if isinstance(p.output, list) else None}


def _file_url(value: Any) -> Any:
    if isinstance(value, dict):
        if value.get("type") == "file" and "url" in value:
            return value["url"]
        return {k: _file_url(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_file_url(v) for v in value]
    return value


def _input_value(value: Any) -> Any:
    if isinstance(value, InputFile):
        return value.as_data_uri()
    if isinstance(value, (list, tuple)):
        return [_input_value(v) for v in value]
    return value


class Builder:
    """Builds the bodies of one prediction. The input never changes, so it is converted once."""

    def __init__(self, prediction: Any) -> None:
        self.p = prediction
        self._input: dict[str, Any] | None = None
        self._secrets: list[str] | None = None

    def _clean_input(self, shown: dict[str, Any]) -> dict[str, Any]:
        if self._input is None:
            raw, hidden = self.p.input, getattr(self.p, "secret_fields", ())
            self._input = {k: _input_value(raw[k]) if k not in hidden and isinstance(raw.get(k), (InputFile, list, tuple))
                           else v for k, v in shown.items()}
        return self._input

    def _secret_values(self) -> list[str]:
        if self._secrets is None:
            import json

            found: list[str] = []
            for k in getattr(self.p, "secret_fields", ()):
                v = self.p.input.get(k)
                if v is None:
                    continue
                raw = v.get_secret_value() if hasattr(v, "get_secret_value") else str(v)
                if len(raw) >= 4:  # shorter would mask ordinary text
                    found += {raw, json.dumps(raw, ensure_ascii=False)[1:-1]}
            self._secrets = sorted(found, key=len, reverse=True)
        return self._secrets

    def build(self, state: dict[str, Any] | None = None) -> Body:
        """The body now, or as it was at Started (`state` from `start_state`)."""
        d = self.p.to_json()
        for k in _OURS:
            d.pop(k, None)
        d["input"] = self._clean_input(d.get("input") or {})
        if state is not None:
            n = state["n_output"]
            d.update(status=state["status"], started_at=state["started_at"], logs=state["logs"],
                     metrics=state["metrics"], completed_at=None, error=None,
                     output=d["output"][:n] if n is not None and isinstance(d["output"], list) else None)
        out, logs = d["output"], d.get("logs") or ""
        d["output"] = _file_url(out)
        d.setdefault("urls", {})
        d.setdefault("data_removed", False)
        text = _dumps(d)
        for secret in self._secret_values():
            if secret in text:
                text = text.replace(secret, MASK)
        return Body(d["status"], text, text.encode("utf-8"), len(out) if isinstance(out, list) else None, len(logs))


def _dumps(d: dict[str, Any]) -> str:
    try:
        import orjson

        return orjson.dumps(d, default=str).decode("utf-8")
    except ImportError:  # orjson is a dependency; this is for a broken install only
        import json

        return json.dumps(d, default=str, separators=(",", ":"), ensure_ascii=False)

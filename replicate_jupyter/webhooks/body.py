"""A webhook's body: the prediction as Replicate's API returns it.

Built from the prediction's fields as `Prediction.to_json()` shows them (secret inputs masked,
values through `jsonable`), minus what only our display uses (progress, preview, output_display,
backend), with files as URLs: a data URI for a file the kernel holds, the remote URL when there
is one. Not through `to_json()` itself: it PNG-encodes the current step preview (50 ms for a
noisy 512 px one) under the prediction's lock, which blocked the model's every event while a
body was built, for a field the body drops. As a last guard every secret input's
value is masked wherever else it may appear (a model that printed it into its logs), because a
webhook body leaves the machine.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from replicate_jupyter.prediction.files import InputFile
from replicate_jupyter.prediction.jsonable import jsonable
from replicate_jupyter.prediction.redact import MASK as _INPUT_MASK

__all__ = ["TERMINAL", "Body", "Builder", "start_state", "MASK"]

TERMINAL = frozenset({"succeeded", "failed", "canceled", "aborted"})
MASK = "**********"


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

    def _clean_input(self) -> dict[str, Any]:
        """The input as `to_json()` shows it (secrets masked, session tokens redacted), with
        files as data URIs."""
        if self._input is None:
            p = self.p
            raw, hidden = p.input, p.secret_fields
            shown = p.redact({k: (_INPUT_MASK if k in hidden else jsonable(v)) for k, v in raw.items()})
            self._input = {k: _input_value(raw[k]) if k not in hidden and isinstance(raw.get(k), (InputFile, list, tuple))
                           else v for k, v in shown.items()}
        return self._input

    def _secret_values(self) -> list[str]:
        if self._secrets is None:
            import json

            found: list[str] = []
            for k in self.p.secret_fields:
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
        p = self.p
        out = p.output
        if state is not None:
            n = state["n_output"]
            out = out[:n] if n is not None and isinstance(out, list) else None
        out = jsonable(out)
        d = {"id": p.id, "model": p.model, "version": p.version, "status": p.status, "input": self._clean_input(),
             "output": _file_url(out), "logs": p.logs, "error": p.error, "created_at": p.created_at,
             "started_at": p.started_at, "completed_at": p.completed_at, "metrics": shared_metrics(p.metrics),
             "urls": {}, "data_removed": False}
        if state is not None:
            d.update(status=state["status"], started_at=state["started_at"], logs=state["logs"],
                     metrics=state["metrics"], completed_at=None, error=None)
        logs = d["logs"] or ""
        text = _dumps(d)
        for secret in self._secret_values():
            if secret in text:
                text = text.replace(secret, MASK)
        return Body(d["status"], text, text.encode("utf-8"), len(out) if isinstance(out, list) else None, len(logs))


#: what the kernel adds to a prediction's metrics for itself (its ledger, its pool), which
#: Replicate's body never carries and a third party's endpoint has no business seeing (the
#: notebook's running spend, a worker's address)
KERNEL_METRICS = frozenset({"cost_usd", "cost_estimate", "billing", "notebook_total_usd", "worker"})


def shared_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The metrics a webhook body carries: the model's and the run's (predict_time, the model's
    own recorded metrics), not the kernel's bookkeeping."""
    return {k: v for k, v in metrics.items() if k not in KERNEL_METRICS}


def _dumps(d: dict[str, Any]) -> str:
    try:
        import orjson

        return orjson.dumps(d, default=str).decode("utf-8")
    except ImportError:  # orjson is a dependency; this is for a broken install only
        import json

        return json.dumps(d, default=str, separators=(",", ":"), ensure_ascii=False)

"""The billable units of a prediction, measured from what it returned.

Each unit comes from the best source there is, and says which (`Measured.how`):

- the metrics the backend or the model reported — Replicate's `input_token_count`,
  `output_token_count` and `predict_time`, or a metric the model recorded with Cog's
  `record_metric` (a unit `X` reads `X_count`, then `X`, so a model can report any unit) —
  are exact;
- the outputs themselves — the number of images and videos, the pixels of each image, the
  duration of a WAV or MP4 — are exact too: they are what was delivered;
- what can only be guessed — the tokens of a prompt nobody counted (≈ 4 characters a token),
  the output tokens of a stream that reported none (one streamed piece ≈ one token), the length
  of audio in a format read here only as bytes — is `assumed`, and the guess is named, so the
  cost is marked as an estimate with its assumption.
"""
from __future__ import annotations

import io
import math
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from replicate_jupyter.prediction.files import FileOutput

if TYPE_CHECKING:
    from replicate_jupyter.prediction.prediction import Prediction

__all__ = ["Measured", "measure", "files_of", "asked", "asked_outputs", "asked_tokens", "asked_steps", "prompt_of",
           "CHARS_PER_TOKEN"]

#: the guess for text nobody tokenized (English averages about 4 characters a token)
CHARS_PER_TOKEN = 4
_OUTPUTS = ("num_outputs", "num_images", "number_of_images", "batch_size")
_MAX_TOKENS = ("max_tokens", "max_new_tokens", "max_length")
#: a sampler's step count (diffusers' `num_inference_steps`, and the names other pipelines use)
_STEPS = ("num_inference_steps", "steps", "num_steps", "inference_steps", "sampling_steps", "sample_steps", "ddim_steps")
_PROMPTS = ("prompt", "text", "input", "message")


@dataclass(frozen=True)
class Measured:
    """How many of a unit, and how that is known: `exact` or the assumption made."""

    qty: float
    exact: bool = True
    how: str = ""


def files_of(output: Any) -> list[FileOutput]:
    """The file outputs of a prediction, wherever they sit in its output (lists, dicts)."""
    if isinstance(output, FileOutput):
        return [output]
    if isinstance(output, (list, tuple)):
        return [f for item in output for f in files_of(item)]
    if isinstance(output, dict):
        return [f for item in output.values() for f in files_of(item)]
    return []


def _kind(f: FileOutput, major: str) -> bool:
    return (f.content_type or "").split("/")[0] == major


def _megapixels(f: FileOutput) -> float | None:
    try:
        from PIL import Image

        with Image.open(io.BytesIO(f.read())) as img:  # reads the header, not the pixels
            w, h = img.size
        return w * h / 1e6
    except Exception:
        return None


def _mp4_seconds(data: bytes) -> float | None:
    """Duration from an MP4/MOV `mvhd` box (timescale and duration), no decoder needed."""
    at = data.find(b"mvhd")
    if at < 4 or len(data) < at + 32:
        return None
    version = data[at + 4]
    try:
        if version == 1:
            scale, duration = struct.unpack(">IQ", data[at + 24:at + 36])
        else:
            scale, duration = struct.unpack(">II", data[at + 16:at + 24])
    except struct.error:
        return None
    return duration / scale if scale else None


def _wav_seconds(data: bytes) -> float | None:
    import wave

    try:
        with wave.open(io.BytesIO(data)) as w:
            return w.getnframes() / float(w.getframerate())
    except Exception:
        return None


def _seconds(f: FileOutput) -> float | None:
    data = f.read()
    ct = f.content_type or ""
    if ct in ("audio/wav", "audio/x-wav", "audio/wave") or data[:4] == b"RIFF":
        return _wav_seconds(data)
    if data[4:8] == b"ftyp" or ct in ("video/mp4", "video/quicktime", "audio/mp4"):
        return _mp4_seconds(data)
    return None


def prompt_of(input: dict[str, Any]) -> str:
    """The prompt text of an input (its first text field of the usual names)."""
    for key in _PROMPTS:
        value = input.get(key)
        if isinstance(value, str):
            return value
    return ""


def _input_default(schema: dict | None, names: tuple[str, ...]) -> tuple[str, Any] | None:
    props = ((schema or {}).get("components", {}).get("schemas", {}).get("Input", {}) or {}).get("properties") or {}
    for name in names:
        if name in props and "default" in props[name]:
            return name, props[name]["default"]
    return None


def _asked(input: dict[str, Any], schema: dict | None, names: tuple[str, ...]) -> tuple[str, int] | None:
    for name in names:
        value = input.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return name, int(value)
    found = _input_default(schema, names)
    if found and isinstance(found[1], (int, float)) and not isinstance(found[1], bool) and found[1] > 0:
        return found[0], int(found[1])
    return None


def asked_outputs(input: dict[str, Any], schema: dict | None = None) -> tuple[str, int] | None:
    """(input name, how many outputs were asked for), e.g. ("num_outputs", 4); None: not asked."""
    return _asked(input, schema, _OUTPUTS)


def asked_tokens(input: dict[str, Any], schema: dict | None = None) -> tuple[str, int] | None:
    """(input name, the most output tokens asked for), e.g. ("max_tokens", 512)."""
    return _asked(input, schema, _MAX_TOKENS)


def asked_steps(input: dict[str, Any], schema: dict | None = None) -> tuple[str, int] | None:
    """(input name, the steps asked for), e.g. ("num_inference_steps", 50), when the model has a
    steps-like input (its default when not given); None: it has none. A run's time grows with it."""
    return _asked(input, schema, _STEPS)


def asked(input: dict[str, Any], schema: dict | None = None) -> tuple[str, str, int]:
    """(unit, input name, how many) the input asks for: outputs, else tokens, else 1 prediction
    (what a forecast multiplies, and what the ledger records beside each cost)."""
    out = asked_outputs(input, schema)
    if out:
        return "output", out[0], out[1]
    tok = asked_tokens(input, schema)
    if tok:
        return "token", tok[0], tok[1]
    return "prediction", "", 1


def _recorded(metrics: dict[str, Any], unit: str) -> float | None:
    for key in (f"{unit}_count", unit, f"{unit}s"):
        value = metrics.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    return None


def measure(p: Prediction, unit: str, *, running: bool = False) -> Measured:
    """How many `unit`s `p` used (so far, when `running`)."""
    m = p.metrics
    recorded = _recorded(m, unit)
    if recorded is not None:
        return Measured(recorded, True, "reported" if unit in ("input_token", "output_token") else "recorded")
    if unit == "second":
        return Measured(float(p.elapsed if running else (m.get("predict_time") or 0.0)))
    if unit == "prediction":
        return Measured(1.0)
    files = files_of(p.output) if unit in ("image", "video", "megapixel", "video_second", "audio_second") else []
    if unit == "image":
        return Measured(float(sum(1 for f in files if _kind(f, "image"))))
    if unit == "video":
        return Measured(float(sum(1 for f in files if _kind(f, "video"))))
    if unit == "megapixel":
        sizes = [_megapixels(f) for f in files if _kind(f, "image")]
        if any(s is None for s in sizes):
            return Measured(float(sum(s or 1.0 for s in sizes)), False, "an image PIL cannot read counted as 1 MP")
        return Measured(float(sum(sizes)))  # type: ignore[arg-type]
    if unit in ("video_second", "audio_second"):
        major = unit.split("_")[0]
        secs = [_seconds(f) for f in files if _kind(f, major)]
        if any(s is None for s in secs):
            known = sum(s for s in secs if s is not None)
            return Measured(known, False, f"the length of {sum(s is None for s in secs)} {major} output(s) "
                                          "could not be read here (counted as 0 s)")
        return Measured(float(sum(secs)))  # type: ignore[arg-type]
    if unit == "input_token":
        n = math.ceil(len(prompt_of(p.input)) / CHARS_PER_TOKEN)
        return Measured(float(n), False, f"input tokens not reported: ≈ {CHARS_PER_TOKEN} characters a token")
    if unit == "output_token":
        out = p.output
        pieces = len(out) if isinstance(out, list) else (1 if out else 0)
        if isinstance(out, str):
            pieces = math.ceil(len(out) / CHARS_PER_TOKEN)
        return Measured(float(pieces), False, "output tokens not reported: one streamed piece counted as a token")
    return Measured(0.0, False, f"the model reported no {unit!r} metric (counted as 0)")

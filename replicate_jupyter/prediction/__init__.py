"""A prediction, its events and its files: the data every other part reads.

    events.py     the one event model every backend speaks (Started … Completed)
    dispatch.py   one event order: events recorded under one lock, delivered in that order
    prediction.py `Prediction`, Replicate's object, kept up to date by its events
    files.py      `FileOutput` (bytes a model produced), `InputFile` (a file given as input)
    handle.py     `ModelHandle`, a model resolved by a backend
    jsonable.py   values as JSON; what a schema says about outputs and secrets
    redact.py     the one redaction step: secrets and session tokens out of every event; `Secret`
    registry.py   where data finds its look without importing it (the notebook fills it)

Nothing here imports the notebook layer, a runner or the session (tests/test_layout.py).
"""
from __future__ import annotations

from replicate_jupyter.prediction.events import (
    Completed,
    Error,
    Event,
    Log,
    Metric,
    Output,
    Preview,
    Progress,
    Started,
)
from replicate_jupyter.prediction.files import FileOutput, InputFile
from replicate_jupyter.prediction.handle import ModelHandle
from replicate_jupyter.prediction.prediction import TERMINAL, Prediction, plain_output

__all__ = [
    "Prediction", "TERMINAL", "plain_output", "ModelHandle", "FileOutput", "InputFile",
    "Event", "Started", "Log", "Output", "Progress", "Preview", "Metric", "Completed", "Error",
]

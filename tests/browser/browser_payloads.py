"""Realistic prediction bundles, and the cells that produce them.

The main browser tests run the real `%%replicate local/shapes` magic; the others emit the bundle
themselves from a cell, exactly as `display.py` does: an IPython display of
`application/vnd.replicate.prediction+json` (with text/plain beside it) and a
display id for live updates.

Switching the tests to the real magic is the one line `DRIVER = "magic"`.
"""

from __future__ import annotations

import base64
import io
import json
import os
from datetime import datetime, timedelta, timezone

from PIL import Image, ImageDraw

MIME = "application/vnd.replicate.prediction+json"

# "emit": cells display a bundle built here. "magic": cells run `%%replicate local/shapes`.
DRIVER = os.environ.get("RJ_BROWSER_DRIVER", "magic")

T4_USD_PER_S = 0.000225


def png_data_uri(color: str, background: str, size: int = 96) -> str:
    """A small real PNG (a filled circle), as a data URI."""
    img = Image.new("RGB", (size, size), background)
    ImageDraw.Draw(img).ellipse((size // 6, size // 6, size * 5 // 6, size * 5 // 6), fill=color)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def prediction(
    pid: str,
    prompt: str,
    seed: int,
    *,
    status: str = "succeeded",
    predict_time: float = 1.0,
    setup_time: float | None = None,
    output: object = None,
    logs: str | None = None,
    progress: dict | None = None,
    preview: str | None = None,
    model: str = "local/shapes",
) -> dict:
    """A prediction as `Prediction.to_json()` returns it (docs/ARCHITECTURE.md)."""
    created = datetime(2025, 11, 25, 12, 0, 0, tzinfo=timezone.utc)
    final = status in ("succeeded", "failed", "canceled")
    metrics: dict = {"hardware": "gpu-t4"}
    if final:
        metrics["predict_time"] = predict_time
        metrics["cost_usd"] = round(predict_time * T4_USD_PER_S, 10)
    if setup_time is not None:
        metrics["setup_time"] = setup_time
    if output is None and status == "succeeded":
        output = [
            {
                "type": "file",
                "url": png_data_uri("red", "blue"),
                "name": "out-0.png",
                "content_type": "image/png",
                "size": 412,
            }
        ]
    return {
        "id": pid,
        "model": model,
        "version": "5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa",
        "status": status,
        "backend": "local",
        "input": {"prompt": prompt, "seed": seed},
        "output": output,
        "output_display": None,
        "logs": logs if logs is not None else f"Using seed: {seed}\nrendering {prompt!r}\n",
        "error": None,
        "created_at": created.isoformat(),
        "started_at": (created + timedelta(seconds=setup_time or 0)).isoformat(),
        "completed_at": (created + timedelta(seconds=predict_time)).isoformat() if final else None,
        "metrics": metrics,
        "progress": progress,
        "preview": preview,
    }


def bundle(pred: dict) -> dict:
    """The display bundle: our mime type plus a plain-text fallback."""
    cost = pred["metrics"].get("cost_usd")
    text = f"{pred['model']} {pred['status']}" + (f" ${cost:.4f}" if cost is not None else "")
    return {MIME: pred, "text/plain": text}


def display_source(pred: dict, display_id: str | None = None, update: bool = False) -> str:
    """Python source of a cell that displays (or updates) a prediction bundle."""
    payload = json.dumps(bundle(pred))
    call = "update_display" if update else "display"
    did = f", display_id={display_id!r}" if display_id else ""
    return (
        f"from IPython.display import {call}\nimport json\n"
        f"{call}(json.loads({payload!r}), raw=True{did});"
    )


def setup_cell() -> str:
    """The first cell of a test notebook."""
    if DRIVER == "magic":
        return "%load_ext replicate_jupyter"
    return "import IPython; IPython.__version__"


def prediction_cell(prompt: str, seed: int) -> str:
    """A cell that runs one prediction of local/shapes and shows its card."""
    if DRIVER == "magic":
        return f"%%replicate local/shapes --seed {seed}\n{prompt}"
    pred = prediction(
        f"p-test-{seed}",
        prompt,
        seed,
        predict_time=round(1.0 + seed * 0.35, 3),
        setup_time=1.2 if seed == 1 else None,
    )
    return display_source(pred, display_id=f"p-test-{seed}")


SWEEP_MIME = "application/vnd.replicate.sweep+json"


def sweep_source(preds: list[tuple[str, dict]]) -> str:
    """A cell displaying a `--sweep` grid bundle (labels and predictions)."""
    payload = json.dumps(
        {
            SWEEP_MIME: {"predictions": [{"label": label, "prediction": p} for label, p in preds]},
            "text/plain": "\n".join(label for label, _ in preds),
        }
    )
    return f"from IPython.display import display\nimport json\ndisplay(json.loads({payload!r}), raw=True);"

"""The models that ship inside the package (owner `local`), trained here from scratch, CPU-friendly.

Each entry is a predictor reference `"<abs path>/predict.py:Predictor"` that any runner can load
(and `replicate-jupyter serve` can serve under coglet). Kept free of heavy imports on purpose:
listing models must not import torch.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["EMBEDDED", "DESCRIPTIONS"]

_HERE = Path(__file__).resolve().parent

EMBEDDED: dict[str, str] = {
    "local/shapes": f"{_HERE / 'shapes' / 'predict.py'}:Predictor",
    "local/tiny-lm": f"{_HERE / 'tiny_lm' / 'predict.py'}:Predictor",
}

DESCRIPTIONS: dict[str, str] = {
    "local/shapes": ("Text-to-image: 'a red star on a black background' (8 colours, 5 shapes, 4 backgrounds), "
                     "1M-param diffusion, CPU"),
    "local/tiny-lm": "Streaming text: 1M-param GPT-2 trained on Python's documentation (pydoc topics), CPU",
}

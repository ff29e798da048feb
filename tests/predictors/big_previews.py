"""A diffusion-like step loop with full-size (512 px) step previews, returning a PNG file.

For benchmarks/soak.py: each step offers a `size`×`size` noisy preview through
`replicate_jupyter.progress.preview` (noise, like a sampler's early steps, so the PNG a display
encodes is as large as a real preview's can get: ~790 KB at 512 px), then the output is written
where a Cog predictor writes it (a `tempfile.mkdtemp()` folder) and returned as a `cog.Path`:
so the soak sees what the project does with previews and output files, run after run.
`out_size` sets the returned PNG's side (noise too: 512 gives a ~790 KB PNG, 64 a ~12 KB one).
"""
from __future__ import annotations

import os
import tempfile
import time
from typing import Any

from cog import BasePredictor, Input, Path

from replicate_jupyter import progress

__all__ = ["Predictor"]


def _noise(side: int, seed: int) -> Any:
    """A `side`×`side` RGB image of noise (PIL), different per seed."""
    import random

    from PIL import Image

    rng = random.Random(seed)
    return Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))


class Predictor(BasePredictor):
    def predict(self, steps: int = Input(description="Steps, each with a preview", default=4, ge=1, le=100),
                size: int = Input(description="Side of each preview in px", default=512, ge=8, le=2048),
                out_size: int = Input(description="Side of the returned PNG in px", default=64, ge=8, le=2048),
                delay: float = Input(description="Seconds each step sleeps", default=0.0, ge=0, le=5),
                seed: int = Input(description="Seed of the noise", default=0)) -> Path:
        for i in range(steps):
            if delay:
                time.sleep(delay)
            progress.progress(i + 1, steps)
            progress.preview(lambda i=i: _noise(size, seed * 1000 + i), step=i + 1)
        out = Path(os.path.join(tempfile.mkdtemp(prefix="big-previews-"), "out.png"))
        _noise(out_size, seed).save(out, format="PNG")
        return out

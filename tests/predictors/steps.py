"""A step loop like a diffusion sampler: progress each step, a preview, a sleep per step."""
import time

from cog import BasePredictor, Input

from replicate_jupyter import progress


class Predictor(BasePredictor):
    def predict(self, steps: int = Input(default=10, ge=1, le=1000),
                delay: float = Input(default=0.05, ge=0, le=5)) -> str:
        from PIL import Image

        for i in range(steps):
            time.sleep(delay)
            progress.progress(i + 1, steps)
            progress.preview(lambda i=i: Image.new("RGB", (8, 8), (i * 20 % 255, 0, 0)), step=i + 1)
        return f"done {steps}"

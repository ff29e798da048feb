import time

from cog import BasePredictor, ConcatenateIterator, Input

from replicate_jupyter import progress


class Predictor(BasePredictor):
    def predict(self, prompt: str = Input(default="count"),
                n: int = Input(default=5, ge=1, le=5000),
                delay: float = Input(default=0.0, ge=0, le=5)) -> ConcatenateIterator[str]:
        for i in range(n):
            if delay:
                time.sleep(delay)
            progress.progress(i + 1, n)
            yield f"t{i} "

"""A busy loop that never reports progress and never sleeps (pure bytecode, one core)."""
import time

from cog import BasePredictor, Input


class Predictor(BasePredictor):
    def predict(self, seconds: float = Input(default=10.0, ge=0, le=60)) -> int:
        end = time.perf_counter() + seconds
        n = 0
        while time.perf_counter() < end:
            n += 1
        return n

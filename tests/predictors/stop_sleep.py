"""A loop of short sleeps that never reports progress: only an interrupt of its thread stops it."""
import time

from cog import BasePredictor, Input


class Predictor(BasePredictor):
    def predict(self, seconds: float = Input(default=10.0, ge=0, le=60)) -> str:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(0.01)
        return "finished"

"""Sleeps, then answers: for dispatch and overhead measurements (no CPU used while it waits)."""
import time

from cog import BasePredictor, Input


class Predictor(BasePredictor):
    def predict(self, seconds: float = Input(default=0.5, ge=0, le=60), tag: str = Input(default="")) -> str:
        if seconds:
            time.sleep(seconds)
        return f"slept {seconds} {tag}".strip()

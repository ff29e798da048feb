"""An async predictor that never awaits inside its loop: canceling its task cannot reach it (it
never yields to the loop), so the stop has to be raised in the loop's thread, in this task."""
import time

from cog import BasePredictor, Input


class Predictor(BasePredictor):
    async def predict(self, seconds: float = Input(default=10.0, ge=0, le=60)) -> int:
        end = time.perf_counter() + seconds
        n = 0
        while time.perf_counter() < end:
            n += 1
        return n

"""@cog.concurrent(max=3): an async predictor that records how many of its predictions overlap."""
import asyncio

import cog
from cog import BasePredictor, Input


class Predictor(BasePredictor):
    active = 0
    peak = 0

    @cog.concurrent(max=3)
    async def predict(self, seconds: float = Input(default=0.4, ge=0, le=10)) -> int:
        cls = type(self)
        cls.active += 1
        cls.peak = max(cls.peak, cls.active)
        try:
            await asyncio.sleep(seconds)
        finally:
            cls.active -= 1
        return cls.peak

"""An async predictor looping on asyncio.sleep, never reporting progress: its task must be canceled."""
import asyncio

from cog import BasePredictor, Input


class Predictor(BasePredictor):
    cancelled = 0

    async def predict(self, seconds: float = Input(default=10.0, ge=0, le=60)) -> str:
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        try:
            while loop.time() < end:
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            type(self).cancelled += 1  # Cog's contract: CancelledError at the await
            raise
        return "finished"

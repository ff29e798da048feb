import asyncio
from typing import AsyncIterator

from cog import BasePredictor, Input


class Predictor(BasePredictor):
    async def predict(self, n: int = Input(default=3)) -> AsyncIterator[str]:
        for i in range(n):
            await asyncio.sleep(0.001)
            yield f"a{i}"

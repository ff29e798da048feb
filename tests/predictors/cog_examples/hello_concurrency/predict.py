import asyncio
import logging
import time
from typing import Optional

from cog import AsyncConcatenateIterator, BasePredictor, Input, Path, current_scope, emit_metric

try:  # the example traces with opentelemetry when its packages are installed
    from opentelemetry import trace
except ImportError:
    trace = None


class Predictor(BasePredictor):
    async def setup(self, weights: Optional[Path] = None) -> None:
        self.weights = weights
        self.started = time.time()
        logging.info("setup done")

    async def predict(
        self,
        total: int = Input(default=5),
        interval: int = Input(default=3),
    ) -> AsyncConcatenateIterator[str]:
        fruits = ["Apple", "Banana", "Orange", "Grape", "Strawberry", "Mango", "Pineapple", "Blueberry",
                  "Watermelon", "Peach"][:total]
        for index, fruit in enumerate(fruits):
            yield fruit if index + 1 == total else f"{fruit}\n"
            await asyncio.sleep(interval)
        emit_metric("output_tokens", total)
        current_scope().record_metric("output_tokens", total)

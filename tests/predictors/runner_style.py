import asyncio

from cog import BaseRunner, Input


class Runner(BaseRunner):
    async def run(self, a: int = Input(default=2), b: int = Input(default=3)) -> int:
        await asyncio.sleep(0.01)
        return a * b

"""An async predictor that prints, logs, reports progress and a preview from its coroutine, from
a thread it starts with copy_context(), and from asyncio.to_thread."""
import asyncio
import contextvars
import threading

from cog import BasePredictor, Input

from replicate_jupyter import progress


def _from_thread(label: str, step: int) -> None:
    print(f"print from {label}")
    progress.progress(step, 4)


class Predictor(BasePredictor):
    async def setup(self) -> None:
        print("async setup ran")

    async def predict(self, word: str = Input(default="hi")) -> str:
        from PIL import Image

        print(f"print from coroutine: {word}")
        progress.log("log from coroutine")
        progress.progress(1, 4)
        progress.preview(Image.new("RGB", (4, 4), (255, 0, 0)), step=1)
        await asyncio.sleep(0)
        t = threading.Thread(target=contextvars.copy_context().run, args=(_from_thread, "copied thread", 2))
        t.start()
        t.join()
        await asyncio.to_thread(_from_thread, "to_thread", 3)
        progress.progress(4, 4)
        return word.upper()

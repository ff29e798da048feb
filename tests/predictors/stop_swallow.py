"""A predictor that swallows every Exception in its loop (and Canceled is one): a stop must still
end it, and the prediction must not come out `succeeded`."""
import time

from cog import BasePredictor, Input

from replicate_jupyter import progress


class Predictor(BasePredictor):
    def predict(self, seconds: float = Input(default=10.0, ge=0, le=60)) -> str:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                time.sleep(0.01)
                progress.progress(1, None)
            except Exception:
                pass
        return "finished"

"""Thread-local state from setup: grad mode off (as both embedded models set it) and a
threading.local value. predict reports whether both still hold, and on which thread it runs."""
import threading

from cog import BasePredictor, Input

_local = threading.local()


class Predictor(BasePredictor):
    def setup(self) -> None:
        import torch

        torch.set_grad_enabled(False)
        _local.mark = "from setup"
        self.setup_thread = threading.get_ident()

    def predict(self, tag: str = Input(default="")) -> dict:
        import torch

        return {
            "grad": torch.is_grad_enabled(),
            "mark": getattr(_local, "mark", None),
            "same_thread": threading.get_ident() == self.setup_thread,
            "tag": tag,
        }

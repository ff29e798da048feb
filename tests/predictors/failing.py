from cog import BasePredictor, Input


def helper(x):
    raise ValueError(f"model exploded on {x!r}")


class Predictor(BasePredictor):
    def predict(self, text: str = Input(default="boom")) -> str:
        print("about to fail")
        helper(text)
        return "unreachable"

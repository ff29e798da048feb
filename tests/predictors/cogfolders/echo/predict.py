from cog import BasePredictor, Input


class Predictor(BasePredictor):
    def setup(self) -> None:
        print("loading echo")
        self.prefix = ">"

    def predict(self, text: str = Input(description="What to echo", default="hi"),
                times: int = Input(description="Repeat count", default=1, ge=1, le=10)) -> str:
        print(f"echoing {times} times")
        return " ".join([self.prefix + text] * times)

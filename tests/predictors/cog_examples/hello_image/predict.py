from cog import BasePredictor, Path


class Predictor(BasePredictor):
    def predict(self) -> Path:
        return Path("hello.webp")  # beside this file: Cog runs a model from its folder

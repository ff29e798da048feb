from cog import BasePredictor, Path


class Predictor(BasePredictor):
    def predict(self) -> Path:
        # relative to the model's folder, which Cog makes the working directory
        return Path("hello.webp")

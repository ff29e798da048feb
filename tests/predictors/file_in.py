from cog import BasePredictor, Input, Path


class Predictor(BasePredictor):
    def predict(self, image: Path = Input(description="Any file")) -> str:
        data = open(image, "rb").read()
        return f"{len(data)} bytes"

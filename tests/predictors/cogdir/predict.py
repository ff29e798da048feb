from cog import BasePredictor, Input
from helper import shout  # sibling import, as Cog allows


class Predictor(BasePredictor):
    def predict(self, word: str = Input(default="cog")) -> str:
        return shout(word)

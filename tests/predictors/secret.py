from cog import BasePredictor, Input, Secret


class Predictor(BasePredictor):
    def predict(self, api_key: Secret = Input(description="A token"), word: str = Input(default="w")) -> str:
        # proves the predictor got a real cog.Secret, without echoing it
        return f"{word}:{len(api_key.get_secret_value())}:{type(api_key).__name__}"

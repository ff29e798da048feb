import json
import os

from cog import BasePredictor, Input
from scaling import times  # a sibling module: the folder is first on sys.path


class Predictor(BasePredictor):
    def setup(self) -> None:
        print("loading weights from", os.environ["SCALE_FILE"])
        with open(os.environ["SCALE_FILE"]) as fh:  # relative to the model's folder
            self.scale = int(fh.read())
        with open("weights/scale.txt") as fh:
            assert int(fh.read()) == self.scale

    def predict(self, x: int = Input(default=2)) -> str:
        env = os.environ
        return json.dumps({
            "scaled": times(x, self.scale),
            "cwd": os.getcwd(),
            "greeting": env.get("GREETING"),
            "listed_token": env.get("LISTED_TOKEN"),
            "leaked": sorted(k for k in env if k in ("REPLICATE_API_TOKEN", "RJ_WORKER_TOKEN", "SOME_SERVICE_KEY",
                                                     "MY_SECRET_THING", "ANOTHER_TOKEN")),
        })

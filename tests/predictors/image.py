import tempfile

from cog import BasePredictor, Input, Path


class Predictor(BasePredictor):
    def predict(self, color: str = Input(default="red", choices=["red", "green", "blue"]),
                count: int = Input(default=1, ge=1, le=4)) -> list[Path]:
        from PIL import Image

        rgb = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}[color]
        out = []
        for i in range(count):
            path = Path(tempfile.mkdtemp()) / f"out-{i}.png"
            Image.new("RGB", (16, 16), rgb).save(path)
            out.append(path)
        return out

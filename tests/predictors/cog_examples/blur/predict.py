import tempfile

from cog import BasePredictor, Input, Path
from PIL import Image, ImageFilter


class Predictor(BasePredictor):
    def predict(self, image: Path = Input(description="Input image"),
                blur: float = Input(description="Blur radius", default=5)) -> Path:
        if blur == 0:
            return image
        im = Image.open(str(image)).filter(ImageFilter.BoxBlur(blur))
        out = Path(tempfile.mkdtemp()) / "out.png"
        im.save(str(out))
        return out

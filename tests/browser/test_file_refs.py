"""A saved final bundle holding its PNG once (`image/png`, the payload's file `{"ref": "image/png"}`):
the extension's card still shows the full image, read from the bundle."""
from __future__ import annotations

import io
import random

import nbformat
from browser_helpers import TIMEOUT_MS, cell, open_notebook, write_notebook
from PIL import Image

from replicate_jupyter.notebook import display as d
from replicate_jupyter.prediction.events import Completed, Output, Started
from replicate_jupyter.prediction.files import FileOutput
from replicate_jupyter.prediction.prediction import Prediction


def test_card_shows_an_image_the_payload_only_points_at(lab, page, artifacts):
    rng = random.Random(3)
    buf = io.BytesIO()
    Image.frombytes("RGB", (300, 200), rng.randbytes(300 * 200 * 3)).save(buf, format="PNG")
    p = Prediction("test/model", {"prompt": "noise"})
    p.emit(Started(hardware="cpu"))
    p.emit(Output(value=FileOutput(buf.getvalue(), "out.png")))
    p.emit(Completed(status="succeeded", metrics={"predict_time": 0.5, "hardware": "cpu"}))
    data = d.prediction_bundle(p)
    assert data[d.MIME]["output"]["ref"] == "image/png" and "url" not in data[d.MIME]["output"]
    name = "refs.ipynb"
    write_notebook(lab.root, name, ["pass"])
    nb = nbformat.read(lab.root / name, as_version=4)
    nb.cells[0].outputs = [nbformat.v4.new_output("display_data", data=data)]
    nbformat.write(nb, lab.root / name)
    open_notebook(page, lab, name, wait_kernel=False)
    img = cell(page, 0).locator(".rj-card img").first
    img.wait_for(timeout=TIMEOUT_MS)
    page.wait_for_function("(el) => el.complete && el.naturalWidth > 0", arg=img.element_handle(), timeout=TIMEOUT_MS)
    assert img.get_attribute("src").startswith("data:image/png;base64,")
    assert img.evaluate("el => [el.naturalWidth, el.naturalHeight]") == [300, 200]  # the full image, not the thumbnail
    page.screenshot(path=str(artifacts / "file-refs.png"))

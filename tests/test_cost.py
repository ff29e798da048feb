"""Cost that matches the bill: the price table, units measured from predictions, exact figures
and named estimates, forecasts and the budget, the ledger's API, and the magics that show them.

Against real parts: the project's Replicate-API server (tests/fake_replicate.py) running
official-model-style predictors under the official names (an image model billed per image, an
LLM billed per input/output token), the local runner, real kernels for the magics, and a real
`replicate-jupyter serve` worker for the sweep across backends.
"""
from __future__ import annotations

import csv
import json
import math
import pathlib
import re
import struct
import subprocess
import sys
import tempfile
import threading
import time
import wave

import pytest
from cog import BasePredictor, ConcatenateIterator, Input, Path
from fake_replicate import FakeReplicate
from kernel_helpers import text_of
from PIL import Image

import replicate_jupyter as rj
from replicate_jupyter.cost import billing, units
from replicate_jupyter.cost import prices as cost
from replicate_jupyter.cost.guard import check_forecast
from replicate_jupyter.cost.ledger import Ledger
from replicate_jupyter.errors import BudgetExceeded, InputError
from replicate_jupyter.notebook import display as d
from replicate_jupyter.notebook.commands import run_line
from replicate_jupyter.prediction.events import Completed, Output, Started
from replicate_jupyter.prediction.files import FileOutput
from replicate_jupyter.prediction.prediction import Prediction
from replicate_jupyter.session import session

ROOT = pathlib.Path(__file__).resolve().parent.parent
TOKEN = "r8_CostTestToken0123456789abcdef"
FLUX, LLAMA = "black-forest-labs/flux-schnell", "meta/meta-llama-3-8b-instruct"
MIME = "application/vnd.replicate.prediction+json"


class FluxLike(BasePredictor):
    """An official text-to-image model's shape: num_outputs images, billed per image."""

    def predict(self, prompt: str = Input(default="a cat"), num_outputs: int = Input(default=1, ge=1, le=4),
                width: int = Input(default=64, ge=16, le=512)) -> list[Path]:
        out = []
        for i in range(num_outputs):
            path = Path(tempfile.mkdtemp()) / f"out-{i}.png"
            Image.new("RGB", (width, width), (i * 40, 90, 200)).save(path)
            out.append(path)
        return out


class LlamaLike(BasePredictor):
    """An official LLM's shape: streamed tokens, billed per input and output token."""

    def predict(self, prompt: str = Input(default="Hi"), max_tokens: int = Input(default=16, ge=1, le=512),
                delay: float = Input(default=0.0, ge=0, le=1)) -> ConcatenateIterator[str]:
        for i in range(max_tokens):
            if delay:
                time.sleep(delay)
            yield f"w{i} "


class Unpriced(BasePredictor):
    def predict(self, text: str = Input(default="x")) -> str:
        time.sleep(0.05)
        return text.upper()


class TokenCounting(FakeReplicate):
    """Replicate's answer for official LLMs: metrics with input/output token counts (its own
    tokenizer; here one word of the prompt is one token, one streamed piece one token)."""

    def _finish(self, p, status, error, output, seconds):
        with p.cond:  # held until the counts are in: nobody reads the final state without them
            super()._finish(p, status, error, output, seconds)
            if p.model.name == LLAMA and p.status in ("succeeded", "canceled", "failed"):
                p.metrics.update(input_token_count=len(str(p.input.get("prompt", "")).split()),
                                 output_token_count=len(output or []))


MODELS = {FLUX: FluxLike, LLAMA: LlamaLike, "acme/unpriced": Unpriced}


@pytest.fixture(scope="module")
def fake():
    with TokenCounting(MODELS, token=TOKEN) as server:
        yield server


@pytest.fixture
def on(fake, monkeypatch):
    monkeypatch.setenv("REPLICATE_API_TOKEN", TOKEN)
    previous = session.default_backend
    session.use("replicate", base_url=fake.url, poll_interval=0.1)
    session.default_backend = previous
    session.ledger.reset()
    yield "replicate"
    session.backend_options.pop("replicate", None)
    old = session._runners.pop("replicate", None)
    if old is not None:
        old.close()
    cost.prices.reset()
    session.budget = None
    session.ledger.reset()


def png(size=(8, 8)) -> bytes:
    import io

    buf = io.BytesIO()
    Image.new("RGB", size, "red").save(buf, format="PNG")
    return buf.getvalue()


def done(model="test/model", output=None, metrics=None, backend="local", input=None) -> Prediction:
    p = Prediction(model, input or {}, backend=backend)
    p.emit(Started(hardware=(metrics or {}).get("hardware", "cpu")))
    if output is not None:
        p.emit(Output(value=output))
    p.emit(Completed(status="succeeded", metrics={"predict_time": 2.0, "hardware": "cpu", **(metrics or {})}))
    return p


# ----- the price table -----------------------------------------------------------------------------
def test_shipped_table_has_every_mode_and_a_source_and_date_per_entry():
    t = cost.PriceTable()
    assert t.price("gpu-t4") == 0.000225 and t.price("gpu-h100-8x") == pytest.approx(8 * 0.001525)
    assert t.model(FLUX).units == {"image": 0.003}
    assert t.model(LLAMA).units == {"input_token": 1.0e-7, "output_token": 3.0e-7}
    for sku in t.table():
        source, when = t.hardware_source(sku)
        assert source and re.match(r"\d{4}-\d\d-\d\d$", when), sku
    for ref, e in t.models().items():
        assert e.source and re.match(r"\d{4}-\d\d-\d\d$", e.date) and e.units, ref
        assert set(e.units) <= set(cost.UNITS), ref


def test_model_prices_override_hardware_and_bad_prices_change_nothing(tmp_path):
    t = cost.PriceTable()
    t.set_model("acme/img", {"image": 0.02})
    t.set_model("acme/img:v2", {"image": 0.03})
    assert t.model("acme/img").units == {"image": 0.02} and t.model("acme/img", "v2").units == {"image": 0.03}
    for ref, spec, field, rule in (("acme/img", {"image": math.nan}, "acme/img.image", "finite"),
                                   ("acme/img", {"image": -1}, "acme/img.image", "minimum"),
                                   ("acme/img", {"Image!": 1}, "acme/img.Image!", "unit"),
                                   ("acme/img", {"image": "lots"}, "acme/img.image", "number"),
                                   ("not a model", {"image": 1}, "model", "format")):
        with pytest.raises(InputError) as info:
            t.set_model(ref, spec)
        (problem,) = info.value.problems
        assert (problem.field, problem.rule) == (field, rule)
    assert t.model("acme/img").units == {"image": 0.02}
    # a user's table file: over the shipped one, under this kernel's overrides; all or nothing
    good = tmp_path / "prices.json"
    good.write_text(json.dumps({"hardware": {"gpu-t4": {"usd_per_second": 0.0003, "source": "our invoice",
                                                        "date": "2026-11-30"}},
                                "models": {"acme/img": {"image": 0.5}, "acme/tts": {"audio_second": 0.001}}}))
    assert t.load(good) == 3
    assert t.price("gpu-t4") == 0.0003 and t.hardware_source("gpu-t4") == ("our invoice", "2026-11-30")
    assert t.model("acme/img").units == {"image": 0.02}  # the kernel's override still wins
    assert t.model("acme/tts").units == {"audio_second": 0.001}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"hardware": {"cpu": 0.2}, "models": {"acme/x": {"token": -3}}}))
    with pytest.raises(InputError):
        t.load(bad)
    assert t.price("cpu") == 0.0001  # nothing of the bad file was taken


# ----- units measured from outputs ---------------------------------------------------------------
def _mp4(seconds: float, scale: int = 600) -> bytes:
    """The boxes an MP4 player reads the duration from (ftyp, then moov/mvhd version 0)."""
    mvhd = struct.pack(">B3xIIII", 0, 0, 0, scale, int(seconds * scale)) + b"\0" * 80
    moov_body = struct.pack(">I4s", 8 + len(mvhd), b"mvhd") + mvhd
    ftyp = struct.pack(">I4s4sI4s", 20, b"ftyp", b"isom", 512, b"isom")
    return ftyp + struct.pack(">I4s", 8 + len(moov_body), b"moov") + moov_body


def _wav(seconds: float, rate: int = 8000) -> bytes:
    import io

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\0\0" * int(seconds * rate))
    return buf.getvalue()


def test_units_from_outputs_images_pixels_video_and_audio_seconds():
    p = done(output=[FileOutput(png((1000, 500)), "a.png"), FileOutput(png((200, 100)), "b.png"),
                     FileOutput(_mp4(4.5), "v.mp4", content_type="video/mp4"),
                     FileOutput(_wav(2.25), "s.wav", content_type="audio/wav")])
    assert units.measure(p, "image").qty == 2
    assert units.measure(p, "megapixel").qty == pytest.approx(0.52)
    assert units.measure(p, "video") == units.Measured(1.0)
    assert units.measure(p, "video_second").qty == pytest.approx(4.5)
    assert units.measure(p, "audio_second").qty == pytest.approx(2.25)
    mp3 = done(output=FileOutput(b"ID3\x03\x00" + b"\0" * 64, "s.mp3", content_type="audio/mpeg"))
    got = units.measure(mp3, "audio_second")
    assert not got.exact and "could not be read" in got.how


def test_units_reported_or_recorded_are_exact_guesses_are_named():
    p = done(output=["a", "b", "c"], input={"prompt": "twelve chars"},
             metrics={"input_token_count": 7, "output_token_count": 31, "steps_count": 4})
    assert units.measure(p, "input_token") == units.Measured(7.0, True, "reported")
    assert units.measure(p, "output_token").qty == 31
    assert units.measure(p, "steps").qty == 4  # any metric the model records can be a unit
    guess = done(output=["a", "b", "c"], input={"prompt": "twelve chars"})
    assert units.measure(guess, "output_token") == units.Measured(3.0, False, units.measure(guess, "output_token").how)
    assert units.measure(guess, "input_token").qty == 3 and not units.measure(guess, "input_token").exact


# ----- bills: exact and estimated ----------------------------------------------------------------
def test_hardware_bill_is_exact_and_per_unit_bill_is_units_times_prices():
    ledger = Ledger()
    p = done()
    ledger.record(p)
    assert p.metrics["cost_usd"] == cost.cost_of(2.0, "cpu") and p.metrics["cost_estimate"] is False
    assert d.cost_line(p).startswith("test/model · succeeded · 2.00 s · cpu · $0.0002 ·")
    cost.prices.set_model("acme/tts", {"audio_second": 0.0125, "prediction": 0.001})
    try:
        q = done("acme/tts", output=FileOutput(_wav(3.0), "s.wav", content_type="audio/wav"))
        entry = ledger.record(q)
        assert entry.cost_usd == pytest.approx(3.0 * 0.0125 + 0.001, abs=1e-9) and not entry.estimate
        assert entry.mode == "per-unit" and entry.units == {"audio_second": 3.0, "prediction": 1.0}
        assert "3 s of audio × $0.0125 + 1 prediction × $0.001 · $0.0385" in d.cost_line(q)
    finally:
        cost.prices.reset()


def test_unknown_sku_and_unreported_hardware_are_estimates_that_say_so():
    p = done(metrics={"hardware": "gpu-b300"})
    b = billing.bill(p)
    assert b.estimate and b.usd == 0 and "no price for gpu-b300" in b.assumptions[0]
    Ledger().record(p)
    assert "≈ $0.00 est." in d.cost_line(p)
    html = d.render(p)["text/html"]
    assert "Cost details (estimate)" in html and "no price for gpu-b300" in html


# ----- against the Replicate API server -------------------------------------------------------
def test_image_model_billed_per_image_is_exact(fake, on):
    p = rj.predictions.create(FLUX, input={"prompt": "a lighthouse", "num_outputs": 3}, on=on).wait(30)
    assert p.status == "succeeded", p.error
    (entry,) = list(session.ledger)
    assert entry.units == {"image": 3.0} and entry.prices == {"image": 0.003}
    assert abs(entry.cost_usd - 3 * cost.prices.model(FLUX).units["image"]) < 1e-9
    assert entry.estimate is False and entry.mode == "per-unit" and p.metrics["cost_estimate"] is False
    line = d.cost_line(p)
    assert "3 images × $0.003 · $0.009 ·" in line and "est." not in line and "gpu-t4" not in line
    # %replicate price per unit changes the next cost
    run_line(f"price {FLUX} image=0.05")
    q = rj.predictions.create(FLUX, input={"prompt": "again", "num_outputs": 2}, on=on).wait(30)
    assert abs(q.metrics["cost_usd"] - 2 * 0.05) < 1e-9 and session.ledger.total() == pytest.approx(0.109)


def test_a_model_with_no_price_is_an_estimate_naming_the_assumption(fake, on):
    p = rj.predictions.create("acme/unpriced", input={"text": "hi"}, on=on).wait(30)
    (entry,) = list(session.ledger)
    assert entry.estimate and entry.mode == "hardware" and entry.hardware == "gpu-t4"
    assert entry.cost_usd == cost.cost_of(p.metrics["predict_time"], "gpu-t4")
    assert "Replicate reports no hardware: costed as gpu-t4 seconds" in entry.assumptions[0]
    assert "gpu-t4 (assumed)" in d.cost_line(p) and "≈ $" in d.cost_line(p) and "est." in d.cost_line(p)
    assert "costed as gpu-t4" in d.render(p)["text/html"]


def test_token_model_billed_from_replicates_token_counts_is_exact(fake, on):
    p = rj.predictions.create(LLAMA, input={"prompt": "tell me a story", "max_tokens": 40}, on=on).wait(30)
    (entry,) = list(session.ledger)
    assert p.metrics["input_token_count"] == 4 and p.metrics["output_token_count"] == 40
    assert entry.units == {"input_token": 4.0, "output_token": 40.0}
    assert abs(entry.cost_usd - (4 * 1.0e-7 + 40 * 3.0e-7)) < 1e-9 and not entry.estimate


def test_token_model_with_recorded_token_metrics_is_exact_on_the_local_runner(tmp_path):
    src = tmp_path / "tokenlm.py"
    src.write_text(
        "from cog import BasePredictor, ConcatenateIterator, Input, current_scope\n"
        "class Predictor(BasePredictor):\n"
        "    def predict(self, prompt: str = Input(default='Hi'),\n"
        "                max_tokens: int = Input(default=8)) -> ConcatenateIterator[str]:\n"
        "        current_scope().record_metric('input_token_count', len(prompt.split()))\n"
        "        for i in range(max_tokens):\n"
        "            yield f'w{i} '\n"
        "        current_scope().record_metric('output_token_count', max_tokens)\n")
    cost.prices.set_model("local/tokenlm", {"input_token": 2e-7, "output_token": 9e-7})
    session.ledger.reset()
    try:
        p = rj.predictions.create(f"{src}:Predictor", input={"prompt": "one two three", "max_tokens": 25}).wait(60)
        (entry,) = list(session.ledger)
        assert entry.units == {"input_token": 3.0, "output_token": 25.0} and not entry.estimate
        assert abs(entry.cost_usd - (3 * 2e-7 + 25 * 9e-7)) < 1e-9 and p.metrics["cost_usd"] == entry.cost_usd
    finally:
        cost.prices.reset()
        session.ledger.reset()


def test_max_cost_with_per_token_prices_cancels_mid_stream(fake, on):
    run_line(f"price {LLAMA} input_token=0 output_token=0.001")
    p = rj.predictions.create(LLAMA, input={"prompt": "go", "max_tokens": 300, "delay": 0.02}, on=on,
                              max_cost=0.01).wait(30)
    assert p.status == "canceled" and "max-cost" in (p.error or "")
    assert 5 <= len(p.output) < 100  # stopped at about ten tokens' worth, not at 300


def test_a_forecast_over_the_budget_is_refused_before_dispatch(fake, on):
    run_line(f"price {FLUX} image=0.05")
    session.budget = 0.12
    rj.predictions.create(FLUX, input={"prompt": "x", "num_outputs": 1}, on=on).wait(30)  # $0.05 spent
    posts = fake.count("POST", "/v1/models/")
    p = Prediction(FLUX, {"prompt": "y", "num_outputs": 2}, backend="replicate")
    with pytest.raises(BudgetExceeded) as info:
        check_forecast(p, session.budget, session.ledger)
    assert "forecast at ≈ $0.1" in str(info.value) and "budget of $0.12" in str(info.value)
    assert "1 image per output × $0.05 × 2 (num_outputs)" in str(info.value)
    assert fake.count("POST", "/v1/models/") == posts
    with pytest.raises(BudgetExceeded) as info:  # and its own --max-cost, from the price alone
        check_forecast(Prediction(LLAMA, {"prompt": "hello", "max_tokens": 500}, backend="replicate"), None,
                       Ledger(), max_cost=1e-5)
    assert "--max-cost" in str(info.value) and "up to 500 output tokens (max_tokens)" in str(info.value)


# ----- the ledger, readable ---------------------------------------------------------------------
def test_ledger_iterates_and_exports_rows_csv_and_pandas(tmp_path, monkeypatch):
    ledger = Ledger()
    cost.prices.set_model("acme/img", {"image": 0.04})
    try:
        a = done("acme/img", output=[FileOutput(png(), "a.png"), FileOutput(png(), "b.png")])
        a.cell = 3
        b = done(metrics={"hardware": "gpu-t4"}, backend="workers")
        b.cell = 4
        ledger.record(a)
        ledger.record(b)
    finally:
        cost.prices.reset()
    assert [e.id for e in ledger] == [a.id, b.id] and ledger[0].units == {"image": 2.0}
    rows = ledger.rows()
    assert rows[0]["prices"] == {"image": 0.04} and rows[1]["mode"] == "hardware"
    assert set(ledger.by("backend")) == {"local", "workers"} and set(ledger.by_cell()) == {3, 4}
    (day,) = ledger.by_day()
    assert re.match(r"\d{4}-\d\d-\d\d$", day) and ledger.by_day()[day]["predictions"] == 2
    path = tmp_path / "ledger.csv"
    assert ledger.to_csv(path) == 2
    with open(path, newline="") as fh:
        read = list(csv.DictReader(fh))
    assert [r["id"] for r in read] == [a.id, b.id]
    assert float(read[0]["cost_usd"]) == pytest.approx(0.08) and read[0]["units.image"] == "2.0"
    assert read[1]["price.second"] == str(0.000225) and read[1]["units.image"] == ""
    frame = ledger.to_pandas()
    assert list(frame["model"]) == ["acme/img", "test/model"] and frame["cost_usd"].sum() == pytest.approx(ledger.total())
    assert frame.groupby("backend")["cost_usd"].sum().to_dict() == pytest.approx({"local": 0.08, "workers": 0.00045})
    monkeypatch.setitem(sys.modules, "pandas", None)  # as in an install without pandas
    with pytest.raises(ModuleNotFoundError, match="pip install pandas"):
        ledger.to_pandas()
    with pytest.raises(InputError) as info:
        ledger.by("colour")
    assert info.value.problems[0].rule == "choices"


def test_pandas_is_not_a_dependency_of_the_base_install():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if d.lower().startswith("pandas")]
    code = "import sys, replicate_jupyter as rj; rj.ledger().rows(); print('pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.stdout.strip() == "False", out.stderr[-2000:]


# ----- the magics, in a real kernel, against the Replicate API server --------------------------------
def _displays(cell) -> list[dict]:
    return [o for o in cell.get("outputs", []) if o.get("output_type") in ("display_data", "execute_result")]


def test_magics_price_estimate_budget_and_ledger_in_a_kernel(fake, run_cells, tmp_path):
    table = tmp_path / "team-prices.json"
    table.write_text(json.dumps({"models": {"acme/unpriced": {"prediction": 0.002, "source": "our contract",
                                                              "date": "2026-11-01"}}}))
    flux_posts = f"/v1/models/{FLUX}/predictions"
    before = (fake.count("POST", flux_posts), fake.count("POST", f"/v1/models/{LLAMA}/predictions"))
    nb = run_cells([
        "%load_ext replicate_jupyter\nimport json, replicate_jupyter as rj",
        f"%replicate use replicate --base-url {fake.url} --poll-interval 0.1",
        f"%%replicate {FLUX} -o a\nprompt: a lighthouse\nnum_outputs: 2",                       # 2
        f"%replicate price {FLUX} image=0.05",
        f"%%replicate {FLUX} -o b\nprompt: a boat",                                              # 4
        f"%replicate estimate {FLUX} num_outputs=3",
        "%replicate budget 0.12",
        (f"%%replicate {FLUX}\nprompt: two boats\nnum_outputs: 2", ["raises-exception"]),         # 7
        f"%%replicate estimate {FLUX}\nprompt: one boat",
        "%replicate budget off",
        (f"%%replicate {LLAMA} --max-cost 0.00001\nprompt: hello there\nmax_tokens: 500", ["raises-exception"]),
        "%%replicate acme/unpriced -o c\nhello",                                                 # 11
        f"%config ReplicateMagics.price_file = {str(table)!r}",
        "%%replicate acme/unpriced -o e\nhello again",                                           # 13
        "%replicate cost --csv ledger.csv",
        "%replicate cost",                                                                       # 15
        "print(json.dumps([[x.model, x.cost_usd, x.estimate, x.mode] for x in rj.ledger()]))",
    ], cwd=tmp_path, env={"REPLICATE_API_TOKEN": TOKEN}, timeout=120)
    card = lambda i: _displays(nb.cells[i])[0]["data"]  # noqa: E731
    assert "2 images × $0.003 · $0.006 ·" in card(2)["text/plain"]
    assert card(2)[MIME]["metrics"]["billing"]["units"] == {"image": 2.0}
    assert "1 image × $0.05 · $0.0500 ·" in card(4)["text/plain"]
    assert "≈ $0.1500 expected for black-forest-labs/flux-schnell (median over 2 earlier runs" in text_of(nb.cells[5])
    (err,) = nb.cells[7].outputs
    assert err["ename"] == "BudgetExceeded" and "forecast at ≈ $0.1" in err["evalue"]
    assert "budget of $0.12" in err["evalue"] and "Nothing was run" in err["evalue"]
    assert "≈ $0.0500 expected" in text_of(nb.cells[8])
    (err,) = nb.cells[10].outputs
    assert err["ename"] == "BudgetExceeded" and "--max-cost" in err["evalue"] and "500 output tokens" in err["evalue"]
    assert (fake.count("POST", flux_posts), fake.count("POST", f"/v1/models/{LLAMA}/predictions")) == (
        before[0] + 2, before[1])  # the refused runs never reached the server
    assert "gpu-t4 (assumed)" in card(11)["text/plain"] and "est." in card(11)["text/plain"]
    assert "Cost details (estimate)" in card(11)["text/html"] and "costed as gpu-t4" in card(11)["text/html"]
    assert "1 prediction × $0.002 · $0.002 ·" in card(13)["text/plain"] and "est." not in card(13)["text/plain"]
    assert "our contract (2026-11-01)" in card(13)["text/html"]
    ledger_out = _displays(nb.cells[15])[0]["data"]
    assert "application/json" not in ledger_out and "application/vnd.replicate.ledger+json" in ledger_out
    assert "<table" in ledger_out["text/html"] and "By backend" in ledger_out["text/html"]
    rows = json.loads(text_of(nb.cells[16]))
    assert [r[0] for r in rows] == [FLUX, FLUX, "acme/unpriced", "acme/unpriced"]
    assert abs(rows[0][1] - 0.006) < 1e-9 and abs(rows[1][1] - 0.05) < 1e-9 and abs(rows[3][1] - 0.002) < 1e-9
    assert [r[2] for r in rows] == [False, False, True, False]
    with open(tmp_path / "ledger.csv", newline="") as fh:
        assert [r["model"] for r in csv.DictReader(fh)] == [r[0] for r in rows]
    assert "Wrote 4 predictions" in text_of(nb.cells[14])


class _Serve:
    """A `replicate-jupyter serve` worker (coglet behind the project's front)."""

    READY = re.compile(r"ready at (http://\S+) ")

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "replicate_jupyter.serve.cli", "serve", *args,
                                      "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     cwd=ROOT)
        self.url: str | None = None
        self.lines: list[str] = []
        ready = threading.Event()

        def drain() -> None:
            for line in self.proc.stdout:
                self.lines.append(line)
                m = self.READY.search(line)
                if m and not ready.is_set():
                    self.url = m.group(1)
                    ready.set()

        threading.Thread(target=drain, daemon=True).start()
        if not ready.wait(90):
            self.stop()
            raise RuntimeError("serve did not become ready:\n" + "".join(self.lines))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def test_sweep_over_models_on_two_backends_is_one_grid_whose_summary_is_the_ledger(run_cells):
    worker = _Serve(f"{ROOT / 'tests' / 'predictors' / 'echo.py'}:Predictor", "--name", "acme/echo",
                    "--hardware", "cpu")
    try:
        nb = run_cells([
            "%load_ext replicate_jupyter\nimport json, replicate_jupyter as rj",
            f"%replicate workers add {worker.url}",
            "%%replicate --sweep model=local/shapes,local/tiny-lm,workers:acme/echo\na red circle on a cream background",
            "print(json.dumps([rj.ledger().total(), [[e.model, e.backend, e.cost_usd, e.estimate] for e in rj.ledger()]]))",
        ], timeout=300)
    finally:
        worker.stop()
    grids = [o for o in _displays(nb.cells[2]) if "application/vnd.replicate.sweep+json" in o["data"]]
    assert len(grids) == 1  # one labelled grid for the three models
    data = grids[0]["data"]
    entries = data["application/vnd.replicate.sweep+json"]["predictions"]
    assert [e["label"] for e in entries] == ["model=local/shapes", "model=local/tiny-lm", "model=workers:acme/echo"]
    assert [(e["prediction"]["model"], e["prediction"]["backend"], e["prediction"]["status"]) for e in entries] == [
        ("local/shapes", "local", "succeeded"), ("local/tiny-lm", "local", "succeeded"),
        ("acme/echo", "workers", "succeeded")]
    assert entries[2]["prediction"]["output"] == ">a red circle on a cream background"
    total, rows = json.loads(text_of(nb.cells[3]))
    assert sorted(r[0] for r in rows) == ["acme/echo", "local/shapes", "local/tiny-lm"] and not any(r[3] for r in rows)
    assert [e["prediction"]["metrics"]["cost_usd"] for e in entries] == [
        next(r[2] for r in rows if r[0] == e["prediction"]["model"]) for e in entries]
    for e in entries:  # each cell of the grid carries its own cost line
        assert e["prediction"]["metrics"]["cost_usd"] > 0
    summary = data["text/plain"].splitlines()[-1]
    assert summary.startswith("cell total: 3 predictions · 3 succeeded")
    assert f"· {d.usd(total)} · notebook total {d.usd(total)}" in summary
    assert data["text/html"].count('class="rj-cost"') == 3 and "rj-summary" in data["text/html"]  # 3 lines + summary


# ----- the quickstart asks only for what local/shapes can draw ------------------------------------
def test_quickstart_prompts_are_in_the_vocabulary_and_shapes_names_what_it_ignored():
    from replicate_jupyter.models.shapes import prompt

    nb = json.loads((ROOT / "notebooks" / "quickstart.ipynb").read_text())
    bodies = ["".join(c["source"]).split("\n", 1)[1] for c in nb["cells"]
              if c["cell_type"] == "code" and "".join(c["source"]).startswith("%%replicate local/shapes")]
    first = bodies[0].strip()
    assert first == "a red circle on a cream background"
    assert prompt.parse(first).ignored == [] and prompt.parse(first).background == "cream"
    p = rj.predictions.create("local/shapes", input={"prompt": "a red circle on a blue background",
                                                     "num_inference_steps": 2, "seed": 1}, on="local").wait(120)
    assert p.status == "succeeded", p.error
    assert "ignored word (not in this model's vocabulary, or not where it can use it): 'blue'" in p.logs
    assert "on a background of white, black, gray, cream" in p.logs


def test_the_budget_reserves_what_every_running_prediction_has_cost():
    """Three predictions running at once under one budget: each alone is far from it, together
    they pass it, so all are canceled when their sum reaches it (not each at the whole budget)."""
    import time

    from replicate_jupyter.cost import prices as cost_prices
    from replicate_jupyter.cost.guard import CostGuard, reserved


    cost_prices.prices.set("gpu-test-reserve", 1.0)  # USD per second
    try:
        ledger = Ledger()
        ps = [Prediction("test/reserve", {}, backend="local") for _ in range(3)]
        for p in ps:
            CostGuard(p, None, budget=lambda: 0.6, ledger=ledger).attach()
            p.emit(Started(hardware="gpu-test-reserve"))
        t0 = time.monotonic()
        while not all(p.cancel_event.is_set() for p in ps) and time.monotonic() - t0 < 2:
            time.sleep(0.01)
        elapsed = time.monotonic() - t0
        assert all(p.cancel_event.is_set() for p in ps)
        assert elapsed < 0.45  # together at ~0.2 s; alone each would run to 0.6 s
        assert all("budget" in (p.cancel_reason or "") for p in ps)
        assert reserved() > 0.5
        for p in ps:
            p.emit(Completed(status="canceled", metrics={"predict_time": 0.2}))
        assert reserved() == 0.0  # finished: nothing held any more
    finally:
        cost_prices.prices.overrides.pop("gpu-test-reserve", None)


def test_every_cell_that_ran_predictions_ends_with_one_cost_line(run_cells):
    """DESIGN 7: a cell of Python API calls (no card) gets one cost line after its output; a cell
    whose predictions show a card (the magic, a Prediction as the value) gets none extra."""
    from kernel_helpers import outputs_of

    echo = f"{ROOT / 'tests' / 'predictors' / 'echo.py'}:Predictor"
    nb = run_cells([
        "%load_ext replicate_jupyter\nimport replicate_jupyter as rj",
        f"out = rj.run({echo!r}, input={{'text': 'one'}})",                                       # 1
        f"for t in ('a', 'b', 'c'):\n    rj.run({echo!r}, input={{'text': t}})\nprint('looped')",  # 2
        f"rj.predictions.create({echo!r}, input={{'text': 'card'}}).wait()",                     # 3
        f"%%replicate {echo}\nmagic",                                                            # 4
        "print(rj.ledger().total())",                                                            # 5
        "x = 1",                                                                                 # 6
    ], timeout=120)

    def cost_lines(i):
        return [o for o in outputs_of(nb.cells[i]) if o.get("output_type") == "display_data"
                and o["data"].get("text/plain", "").startswith("cost: ")]

    (one,) = cost_lines(1)
    text = one["data"]["text/plain"]
    assert text.startswith("cost: local/echo · succeeded · ") and "notebook total" in text
    assert "rj-cost" in one["data"]["text/html"]
    (loop,) = cost_lines(2)
    assert loop["data"]["text/plain"].startswith("cost: 3 predictions · 3 succeeded · ")
    assert outputs_of(nb.cells[2])[0].get("name") == "stdout" and outputs_of(nb.cells[2])[-1] == loop  # after its output
    assert not cost_lines(3) and not cost_lines(4) and not cost_lines(5) and not cost_lines(6)
    # each line's notebook total is the ledger's as of that cell: the loop's is the 4th prediction's
    totals = [float(m) for m in re.findall(r"notebook total \$([0-9.]+)", text + loop["data"]["text/plain"])]
    ledger_total = float(text_of(nb.cells[5]).strip().splitlines()[-1])
    assert len(totals) == 2 and 0 < totals[0] < totals[1] <= ledger_total

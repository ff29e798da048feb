"""display.py without a kernel: bundles, escaping, throttling (real Predictions, real events)."""
from __future__ import annotations

import base64
import hashlib
import io
import time

import pytest
from PIL import Image

from replicate_jupyter.cost.ledger import Ledger
from replicate_jupyter.notebook import display as d
from replicate_jupyter.notebook import live as live_mod
from replicate_jupyter.prediction.events import Completed, Log, Output, Preview, Progress, Started
from replicate_jupyter.prediction.files import FileOutput
from replicate_jupyter.prediction.prediction import Prediction

STREAM = {"components": {"schemas": {"Output": {"type": "array", "items": {"type": "string"},
                                                "x-cog-array-type": "iterator", "x-cog-array-display": "concatenate"}}}}


def png(color=(255, 0, 0), size=(8, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def finished(output, **kw) -> Prediction:
    p = Prediction("test/model", {"prompt": "<b>x</b>"}, **kw)
    p.emit(Started(hardware="cpu"))
    p.emit(Output(value=output))
    p.emit(Completed(status="succeeded", metrics={"predict_time": 0.5, "hardware": "cpu"}))
    return p


def test_final_bundle_has_every_mime_type_and_the_image():
    p = finished([FileOutput(png(), "a.png"), FileOutput(png((0, 255, 0)), "b.png")])
    b = d.prediction_bundle(p)
    assert set(b) >= {d.MIME, "text/html", "text/plain", "image/png"}
    payload = dict(b[d.MIME])
    record = payload.pop("record")  # the final payload is the prediction plus its record (rerun)
    assert payload == p.to_json()
    from replicate_jupyter.prediction.record import record_of
    assert record == record_of(p) and record["model"]["name"] == "test/model"
    assert [o["sha256"] for o in record["outputs"]] == [hashlib.sha256(f.read()).hexdigest() for f in p.output]
    grid = Image.open(io.BytesIO(base64.b64decode(b["image/png"])))
    assert grid.width > 16  # two 8px images composed side by side
    assert "cost: test/model · succeeded" in b["text/plain"]
    assert 'class="rj-cost"' in b["text/html"]


def test_single_image_is_sent_as_is():
    data = png()
    b = d.prediction_bundle(finished(FileOutput(data, "a.png")))
    assert base64.b64decode(b["image/png"]) == data


def test_model_strings_are_escaped_and_no_script():
    p = Prediction("evil/<script>", {"x": 1})
    p.emit(Started(hardware="cpu"))
    p.emit(Log(text="<script>alert(1)</script>\n"))
    p.emit(Output(value="<img src=x onerror=alert(1)>"))
    p.emit(Completed(status="failed", error="<script>boom</script>", traceback="<script>tb</script>",
                     metrics={"predict_time": 0.1, "hardware": "cpu"}))
    h = d.prediction_bundle(p)["text/html"]
    assert "<script" not in h.lower()
    assert "<img src=x" not in h
    assert "&lt;script&gt;boom" in h and "Model traceback" in h


def test_file_bundles_by_kind():
    assert "image/png" in d.file_bundle(FileOutput(png(), "a.png"))
    audio = FileOutput(b"RIFF\x00\x00\x00\x00WAVEfmt ", "a.wav")
    assert "<audio" in d.file_bundle(audio)["text/html"]
    video = FileOutput(b"\x00\x00\x00\x18ftypmp42", "v.mp4")
    assert "<video" in d.file_bundle(video)["text/html"]
    other = d.file_bundle(FileOutput(b"\x00\x01", "w.bin", content_type="application/octet-stream"))
    assert 'download="w.bin"' in other["text/html"]


def test_ledger_bundle_by_cell_and_model():
    ledger = Ledger()
    for cell in (1, 1, 2):
        p = finished("ok")
        p.cell = cell
        ledger.record(p)
    b = d.ledger_bundle(ledger)
    for title in ("By cell", "By model", "By backend", "By day"):
        assert title in b["text/plain"] and title in b["text/html"]
    assert "Total: 3 predictions" in b["text/plain"]
    # JupyterLab ranks application/json above text/html: it would show a JSON tree, not the table
    assert "application/json" not in b and set(b) == {"text/html", "text/plain", d.LEDGER_MIME}
    assert b[d.LEDGER_MIME]["total_usd"] == ledger.total()
    assert [e["cell"] for e in b[d.LEDGER_MIME]["entries"]] == [1, 1, 2]
    assert "<table" in b["text/html"] and "[1]" in b["text/html"] and "[2]" in b["text/html"]


def test_text_is_coalesced_and_exact_at_the_end():
    sent: list[dict] = []
    p = Prediction("test/stream", {}, schema=STREAM)
    live = live_mod.LiveDisplay(p, text_rate=10, preview_rate=4, publish=sent.append).attach()
    p.emit(Started(hardware="cpu"))
    t0 = time.monotonic()
    expected = ""
    for i in range(2000):
        tok = f"t{i} "
        expected += tok
        p.emit(Output(value=tok, index=i))
        if i % 100 == 0:
            time.sleep(0.02)
    elapsed = time.monotonic() - t0
    p.emit(Completed(status="succeeded", metrics={"predict_time": elapsed, "hardware": "cpu"}))
    assert live.updates == len(sent)
    assert len(sent) <= 10 * elapsed + 3  # first display + ≤10/s + final
    assert sent[-1][d.MIME]["output"] == [f"t{i} " for i in range(2000)]
    assert expected in sent[-1]["text/plain"]


def test_previews_are_throttled_latest_wins():
    sent: list[dict] = []
    p = Prediction("test/steps", {})
    live_mod.LiveDisplay(p, text_rate=10, preview_rate=4, publish=sent.append).attach()
    p.emit(Started(hardware="cpu"))
    t0 = time.monotonic()
    for i in range(50):
        p.emit(Progress(step=i + 1, total=50))
        p.emit(Preview(image=Image.new("RGB", (4, 4), (i * 5, 0, 0)), step=i + 1))
        time.sleep(0.02)
    elapsed = time.monotonic() - t0
    time.sleep(0.15)  # let a trailing update land
    p.emit(Completed(status="succeeded", metrics={"predict_time": elapsed, "hardware": "cpu"}))
    previews = [b[d.MIME]["preview"] for b in sent if b[d.MIME].get("preview")]
    changes = sum(1 for a, b in zip([None] + previews, previews) if a != b)
    assert 1 <= changes <= 4 * elapsed + 2
    assert sent[-1][d.MIME]["preview"] is None and sent[-1][d.MIME]["status"] == "succeeded"
    # the last live update before the end shows the last step reached (the trailing flush)
    assert sent[-2][d.MIME]["progress"]["step"] == 50


def test_grid_display_labels_and_summary():
    sent: list[dict] = []
    preds = [Prediction("test/img", {"seed": s}) for s in (1, 2)]
    live_mod.GridDisplay(preds, ["seed=1", "seed=2"], publish=sent.append).attach()
    for p in preds:
        p.emit(Started(hardware="cpu"))
        p.emit(Output(value=[FileOutput(png(), "x.png")]))
        p.emit(Completed(status="succeeded", metrics={"predict_time": 0.1, "hardware": "cpu"}))
    final = sent[-1]
    assert "seed=1" in final["text/html"] and "seed=2" in final["text/html"]
    assert "cell total: 2 predictions" in final["text/plain"]
    assert "image/png" in final
    assert len(final[d.SWEEP_MIME]["predictions"]) == 2


def test_usd_format_round_trips_small_costs():
    assert d.usd(0) == "$0.00"
    assert d.usd(1.96e-06) == "$0.00000196"
    assert d.usd(0.5) == "$0.5000"


def test_an_async_display_that_ends_between_cells_is_sent_again_after_the_next():
    import gc

    sent: list[dict] = []
    p = Prediction("test/stream", {}, schema=STREAM)
    live = live_mod.LiveDisplay(p, publish=sent.append)
    live.async_mode = True
    live.attach()
    del live
    gc.collect()  # nothing but the pending list holds the display now
    p.emit(Started(hardware="cpu"))
    p.emit(Output(value="hi", index=0))
    p.emit(Completed(status="succeeded", metrics={"predict_time": 0.01, "hardware": "cpu"}))
    finals = len(sent)
    assert sent[-1][d.MIME]["status"] == "succeeded"
    assert live_mod.flush_finished() == 1  # what the next cell's post-run hook calls
    assert len(sent) == finals + 1 and sent[-1][d.MIME]["output"] == ["hi"]
    assert live_mod.flush_finished() == 0  # once


def test_a_sweep_summary_waits_for_every_cost_to_be_recorded():
    from replicate_jupyter.session import session

    session.ledger.reset()
    sent: list[dict] = []
    p1, p2 = (Prediction("test/img", {"seed": s}) for s in (1, 2))
    for p in (p1, p2):
        p.emit(Started(hardware="cpu"))
    live_mod.GridDisplay([p1, p2], ["seed=1", "seed=2"], publish=sent.append).attach()
    p1.subscribe(session.ledger.listen)
    # p2 ends first, and while its listeners run (its ledger entry not written yet), p1 ends
    p2.subscribe(lambda _p, e: isinstance(e, Completed) and p1.emit(
        Completed(status="succeeded", metrics={"predict_time": 1.0, "hardware": "cpu"})))
    p2.subscribe(session.ledger.listen)
    p2.emit(Completed(status="succeeded", metrics={"predict_time": 2.0, "hardware": "cpu"}))
    finals = [b for b in sent if "cell total" in b["text/plain"]]
    assert len(finals) == 1  # drawn once, after both were recorded
    total = session.ledger.total()
    assert len(session.ledger) == 2 and total == round(p1.metrics["cost_usd"] + p2.metrics["cost_usd"], 8)
    assert f"notebook total {d.usd(total)}" in finals[0]["text/plain"].splitlines()[-1]
    session.ledger.reset()


def test_a_live_display_marks_its_cell_and_its_final_draw_has_the_stamped_total():
    sent: list[dict] = []
    ledger = Ledger()
    p = Prediction("test/model", {})
    p.subscribe(ledger.listen)
    live_mod.LiveDisplay(p, publish=sent.append).attach(cell=5)
    assert p.display_cell == 5
    # the cell's value: one line, without the status (an --async cell's value is saved as drawn)
    assert d.prediction_bundle(p, current_cell=5) == {"text/plain": f"<Prediction {p.id} test/model>"}
    p.emit(Started(hardware="cpu"))
    p.emit(Output(value="done"))
    p.emit(Completed(status="succeeded", metrics={"predict_time": 2.0, "hardware": "cpu"}))
    assert len(sent) == 1  # ended within one interval: drawn once, final
    assert sent[-1]["text/plain"].splitlines()[-1].endswith(f"notebook total {d.usd(ledger.total())}")
    assert sent[-1][d.MIME]["metrics"]["notebook_total_usd"] == ledger.total() == 0.0002


def test_a_running_prediction_shows_its_cost_so_far_ticking_then_the_exact_final():
    """A predictor that reports nothing for 2.5 s still has its time and cost redrawn (the
    display's clock); the final draw has the ledger's exact figure and no running one."""
    sent: list[dict] = []
    ledger = Ledger()
    p = Prediction("test/quiet", {})
    p.subscribe(ledger.listen)
    live_mod.LiveDisplay(p, text_rate=10, publish=sent.append).attach(cell=1)
    p.emit(Started(hardware="cpu"))
    time.sleep(2.6)
    p.emit(Completed(status="succeeded", metrics={"predict_time": 2.6, "hardware": "cpu"}))
    running = [b[d.MIME]["running"] for b in sent if b[d.MIME].get("running")]
    assert 2 <= len(running) <= 4  # about once a second, not at the text rate
    costs = [r["cost_usd"] for r in running]
    assert costs[0] > 0 and all(b > a for a, b in zip(costs, costs[1:]))
    assert [r["hardware"] for r in running] == ["cpu"] * len(running)
    assert "running · " in sent[-2]["text/plain"] and "so far" in sent[-2]["text/html"]
    final = sent[-1]
    assert "running" not in final[d.MIME] and final[d.MIME]["metrics"]["cost_usd"] == 0.00026 == ledger.total()
    assert "cost: test/quiet · succeeded · 2.60 s · cpu · $0.00026" in final["text/plain"]


def test_the_forecast_shows_while_starting():
    from replicate_jupyter.session import session

    session.ledger.reset()
    try:
        for n in (1, 2):  # history: about 0.5 s per output on cpu
            q = Prediction("test/img", {"num_outputs": n})
            q.emit(Started(hardware="cpu"))
            q.emit(Completed(status="succeeded", metrics={"predict_time": 0.5 * n, "hardware": "cpu"}))
            session.ledger.record(q)
        sent: list[dict] = []
        p = Prediction("test/img", {"num_outputs": 4})
        live = live_mod.LiveDisplay(p, publish=sent.append)
        live.async_mode = True  # drawn at once, while still starting
        live.attach(cell=2)
        first = sent[0]
        assert first[d.MIME]["status"] == "starting"
        assert first[d.MIME]["forecast"]["cost_usd"] == pytest.approx(4 * 0.5 * 0.0001)
        assert "≈ $0.0002 expected (median 0.5 s per output over 2 earlier runs × 4 (num_outputs)" in first["text/plain"]
        p.emit(Completed(status="canceled", metrics={"predict_time": 0.0, "hardware": "cpu"}))
        assert "forecast" not in sent[-1][d.MIME]
    finally:
        session.ledger.reset()


def test_the_forecast_is_made_at_the_first_live_draw_not_in_the_cell():
    """A display works out its forecast when it first draws a run still starting (on the
    ticker, after one interval), so a run that ends within the interval never pays for one."""
    from replicate_jupyter.session import session

    session.ledger.reset()
    try:
        q = Prediction("test/img", {"num_outputs": 1})
        q.emit(Started(hardware="cpu"))
        q.emit(Completed(status="succeeded", metrics={"predict_time": 0.5, "hardware": "cpu"}))
        session.ledger.record(q)
        quick, slow = Prediction("test/img", {"num_outputs": 2}), Prediction("test/img", {"num_outputs": 2})
        sent_quick: list[dict] = []
        live = live_mod.LiveDisplay(quick, text_rate=1, publish=sent_quick.append).attach(cell=3)
        quick.emit(Completed(status="canceled", metrics={"predict_time": 0.0, "hardware": "cpu"}))
        assert len(sent_quick) == 1 and "forecast" not in sent_quick[0][d.MIME] and live._forecasts == {}
        sent: list[dict] = []
        live_mod.LiveDisplay(slow, text_rate=50, publish=sent.append).attach(cell=3)
        deadline = time.monotonic() + 10
        while not sent and time.monotonic() < deadline:  # the ticker's first draw, one interval on
            time.sleep(0.01)
        assert sent and sent[0][d.MIME]["status"] == "starting"
        assert sent[0][d.MIME]["forecast"]["cost_usd"] == pytest.approx(2 * 0.5 * 0.0001)
        slow.emit(Completed(status="canceled", metrics={"predict_time": 0.0, "hardware": "cpu"}))
        assert "forecast" not in sent[-1][d.MIME]
    finally:
        session.ledger.reset()


def test_a_cell_parsed_again_is_read_from_the_memo_but_filled_and_checked_afresh():
    """The option line's argparse reading and the body's YAML reading are memoised per text (a
    cell run again costs ~5 µs, not ~100); what they give is new each time, templates are filled
    from the namespace of this run, and a limit raised or lowered since applies at once."""
    from replicate_jupyter.errors import InputError
    from replicate_jupyter.notebook import cellparse
    from replicate_jupyter.notebook.cellparse import limits

    body = "prompt: a {style} cat\nsizes: [1, [2, [3]]]\nn: 2"
    first = cellparse.parse_body(body, {"style": "red"}, "prompt")
    first["sizes"].append(99)
    first["sizes"][1].append(98)
    again = cellparse.parse_body(body, {"style": "blue"}, "prompt")
    assert again == {"prompt": "a blue cat", "sizes": [1, [2, [3]]], "n": 2}
    assert cellparse.parse_body("a {style} dog", {"style": "green"}, "prompt") == {"prompt": "a green dog"}
    assert cellparse.parse_body("a {style} dog", {"style": "grey"}, "prompt") == {"prompt": "a grey dog"}
    with pytest.raises(InputError, match="interpolation"):
        cellparse.parse_body(body, {}, "prompt")  # a name gone from the notebook is still missed
    depth = limits.MAX_DEPTH
    try:
        limits.MAX_DEPTH = 2
        with pytest.raises(InputError, match="depth"):
            cellparse.parse_body(body, {"style": "red"}, "prompt")
    finally:
        limits.MAX_DEPTH = depth
    a = cellparse.parse_line("local/shapes --seed 3 --sweep n=1,2 -o pic")
    a.sweep.append(("x", [1]))
    b = cellparse.parse_line("local/shapes --seed 3 --sweep n=1,2 -o pic")
    assert (b.model, b.seed, b.out, b.sweep) == ("local/shapes", 3, "pic", [("n", [1, 2])])
    seed_range = limits.SEED_RANGE
    try:
        limits.SEED_RANGE = (0, 2)
        with pytest.raises(cellparse.LineError, match="--seed"):
            cellparse.parse_line("local/shapes --seed 3 --sweep n=1,2 -o pic")
    finally:
        limits.SEED_RANGE = seed_range

"""Memory, disk and saved-notebook size (issue 18, item 6): real Predictions, real files, a
real kernel running the soak's predictor (tests/predictors/big_previews.py)."""
from __future__ import annotations

import base64
import io
import json
import os
import pathlib
import random
import subprocess
import sys
import tracemalloc

import nbformat
import pytest
from PIL import Image

from replicate_jupyter.errors import InputError
from replicate_jupyter.notebook import display as d
from replicate_jupyter.prediction.events import Completed, Log, Output, Preview, Progress, Started
from replicate_jupyter.prediction.files import FileOutput, InputFile
from replicate_jupyter.prediction.prediction import Prediction

ROOT = pathlib.Path(__file__).resolve().parent.parent
MB = 1 << 20


def noise_png(side: int = 512, seed: int = 1) -> bytes:
    """A PNG as big as a real 512 px preview can get (noise does not compress): ~790 KB."""
    rng = random.Random(seed)
    buf = io.BytesIO()
    Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3)).save(buf, format="PNG")
    return buf.getvalue()


def finished(output, logs: str = "") -> Prediction:
    p = Prediction("test/model", {"prompt": "x"})
    p.emit(Started(hardware="cpu"))
    if logs:
        p.emit(Log(text=logs))
    p.emit(Output(value=output))
    p.emit(Completed(status="succeeded", metrics={"predict_time": 0.5, "hardware": "cpu"}))
    return p


def test_a_saved_notebook_holds_one_big_png_once_and_still_shows_it():
    data = noise_png()
    b = d.prediction_bundle(finished(FileOutput(data, "out.png")))
    assert base64.b64decode(b["image/png"]) == data  # the bytes, once
    ref = b[d.MIME]["output"]
    assert ref["ref"] == "image/png" and "url" not in ref and ref["size"] == len(data)
    html = b["text/html"]
    assert '<img class="rj-image rj-thumb"' in html  # the no-extension view shows the image
    thumb = html.split('src="', 1)[1].split('"', 1)[0]
    with Image.open(io.BytesIO(base64.b64decode(thumb.split(",", 1)[1]))) as img:
        assert max(img.size) == d.THUMB_SIDE
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "%%replicate ...", outputs=[nbformat.v4.new_output("display_data", data=b)])])
    saved = len(nbformat.writes(nb).encode())
    assert saved <= 1.5 * len(data), saved / len(data)


def test_a_small_image_stays_whole_in_the_html_and_several_keep_their_own_bytes():
    small = noise_png(16)
    b = d.prediction_bundle(finished(FileOutput(small, "s.png")))
    assert "rj-thumb" not in b["text/html"] and "data:image/png;base64," in b["text/html"]
    two = d.prediction_bundle(finished([FileOutput(noise_png(), "a.png"), FileOutput(noise_png(seed=2), "b.png")]))
    assert all(o["url"].startswith("data:image/png") for o in two[d.MIME]["output"])  # the grid is another picture
    assert two["text/html"].count("rj-thumb") == 2


def test_running_payloads_carry_the_log_tail_and_the_final_one_all_of_it():
    p = Prediction("test/model", {})
    p.emit(Started())
    for i in range(2000):
        p.emit(Log(text=f"line {i:05d}\n"))
    live = d.render(p, final=False)
    assert len(live[d.MIME]["logs"]) == d.LIVE_LOG_TAIL and live[d.MIME]["logs"].endswith("line 01999\n")
    assert live[d.MIME]["logs_truncated"] == 2000 * 11 - d.LIVE_LOG_TAIL
    assert len(live["text/html"]) < 3 * d.LIVE_LOG_TAIL + 2000
    p.emit(Completed(status="succeeded"))
    final = d.render(p, final=True)
    assert final[d.MIME]["logs"].startswith("line 00000") and "logs_truncated" not in final[d.MIME]


def test_the_history_keeps_step_counts_not_preview_images():
    p = Prediction("test/model", {})
    p.emit(Started())
    for i in range(5):
        p.emit(Progress(step=i + 1, total=5))
        p.emit(Preview(image=Image.new("RGB", (512, 512)), step=i + 1))
    previews = [e for e in p._history if isinstance(e, Preview)]
    assert [e.step for e in previews] == [1, 2, 3, 4, 5]
    assert [e.image is not None for e in previews] == [False] * 4 + [True]
    p.emit(Output(value="ok"))
    p.emit(Completed(status="succeeded"))
    assert all(e.image is None for e in p._history if isinstance(e, Preview)) and p.preview is None
    seen: list = []
    p.subscribe(lambda _p, e: seen.append(e))  # a late listener still sees every event, in order
    assert len(seen) == p.seq


def test_a_file_input_past_the_cap_is_refused_without_reading_it(tmp_path):
    big = tmp_path / "big.bin"
    with open(big, "wb") as fh:  # 512 MB, sparse: nothing is written
        fh.truncate(512 * MB)
    tracemalloc.start()
    try:
        with pytest.raises(InputError) as exc:
            InputFile.from_path(big, field="image", cap=256 * MB)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    (problem,) = exc.value.problems
    assert problem.field == "image" and problem.rule == "max_size"
    assert "536,870,912 bytes" in str(exc.value) and "268,435,456" in str(exc.value)
    assert peak < MB


def test_a_file_input_under_the_cap_is_hashed_and_copied_streamed(tmp_path):
    src = tmp_path / "mid.bin"
    with open(src, "wb") as fh:
        fh.write(os.urandom(1000))
        fh.truncate(64 * MB)
    import hashlib

    want = hashlib.sha256(src.read_bytes()).hexdigest()
    tracemalloc.start()
    try:
        f = InputFile.from_path(src, field="image")
        sha, path = f.sha256, f.as_path()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sha == want and path.stat().st_size == 64 * MB and f.to_json()["size"] == 64 * MB
    assert peak < 4 * MB  # never the 64 MB whole
    assert path.parent.name.startswith("rj-kernel-")
    del f
    import gc

    gc.collect()
    assert not path.exists()  # the copy goes with the input


_CHILD = r'''
import json, os, sys, tempfile
from cog import Path
from replicate_jupyter.prediction.files import FileOutput, InputFile, kernel_tmp
d = tempfile.mkdtemp(prefix="big-previews-")          # where a Cog predictor writes its output
out = Path(os.path.join(d, "out.png")); open(out, "wb").write(b"\x89PNG....")
f = FileOutput.from_path(out)                          # the runner reads it: ours from now on
inp = InputFile(b"12345", name="in.bin").as_path()
p = os.fspath(f)
print(json.dumps({"out_left": os.path.exists(d), "kernel": str(kernel_tmp()),
                  "in": str(inp), "fspath": p, "tmp": sorted(os.listdir(tempfile.gettempdir()))}))
'''


def test_temp_files_live_in_one_kernel_folder_gone_at_exit(tmp_path):
    env = dict(os.environ, TMPDIR=str(tmp_path))
    run = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert not got["out_left"]  # the predictor's temp folder went once its output was read
    assert [e for e in got["tmp"] if not e.startswith("rj-kernel-")] == []
    assert pathlib.Path(got["in"]).parent == pathlib.Path(got["fspath"]).parent == pathlib.Path(got["kernel"])
    assert os.listdir(tmp_path) == []  # and the kernel folder at exit


def test_a_kernel_running_the_soak_stays_small_and_leaves_no_temp_files(tmp_path):
    """40 runs with 512 px previews in a real kernel: the soak's own probe (benchmarks/soak.py)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import soak

    kernel_tmp = tmp_path / "tmp"
    kernel_tmp.mkdir()
    nb = soak.execute(soak.soak_notebook(40, 3, 0.06, 2), kernel_tmp, soak._Tally(512), timeout=120)
    base, after = soak._probe(nb, "baseline"), soak._probe(nb, "after")
    grow = (after["rss"] - base["rss"]) / MB
    assert grow <= 25, f"kernel RSS grew {grow:.0f} MB over 40 runs"  # was ~80 MB (2 MB a run)
    assert sorted(set(after["tmp_entries"]) - set(base["tmp_entries"])) == []
    assert os.listdir(kernel_tmp) == []  # nothing left after the kernel exited
    assert after["with_preview"] == 0


def test_the_session_keeps_predictions_by_bytes_not_count():
    from replicate_jupyter.session import Session, held_bytes

    s = Session()
    s.max_held_bytes = 3 * MB
    running = Prediction("test/model", {})
    s.track(running)
    big = []
    for i in range(6):
        p = finished(FileOutput(os.urandom(MB), f"{i}.bin"))
        s.track(p)
        big.append(p)
    assert held_bytes(big[0]) >= MB
    kept = list(s.predictions)
    assert running.id in kept  # a running one is never dropped
    assert [p.id for p in big[-2:]] == kept[-2:] and big[0].id not in kept
    assert sum(held_bytes(s.predictions[k]) for k in kept) <= 3 * MB
    for _ in range(50):  # small ones: many more than a count bound of the old kind would weigh
        s.track(finished("ok"))
    assert len(s.predictions) >= 50


def test_the_form_history_is_bounded_by_bytes():
    from replicate_jupyter.notebook.forms import history as h

    hist = h.History(lambda values: None)
    for i in range(12):
        hist.add({"image": InputFile(os.urandom(8 * MB), name=f"{i}.bin")}, {"seed": i}, finished("ok"))
    assert hist.count == 12 and 1 <= len(hist.entries) <= h.MAX_BYTES // (8 * MB)
    assert hist.entries[-1].number == 12 and "(12)" in hist.title.value


# ----- a path given as a model's file input (model/coerce.py → InputFile.from_path) ----------------
_FILE_SCHEMA = {"components": {"schemas": {"Input": {
    "type": "object", "required": ["image"],
    "properties": {"image": {"type": "string", "format": "uri", "x-order": 0}}}}}}


def test_a_512_mb_path_input_is_refused_by_validation_without_reading_it(tmp_path):
    from replicate_jupyter.model.validation import validate

    big = tmp_path / "big.bin"
    with open(big, "wb") as fh:  # 512 MB, sparse: nothing is written, so a read would be 512 MB of zeros
        fh.truncate(512 * MB)
    tracemalloc.start()
    try:
        with pytest.raises(InputError) as exc:
            validate(_FILE_SCHEMA, {"image": str(big)}, model="test/file-in")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    (problem,) = exc.value.problems
    assert problem.field == "image" and problem.rule == "max_size"
    assert "536,870,912 bytes" in str(exc.value) and "big.bin" in str(exc.value)
    assert peak < MB


def test_a_path_input_under_the_cap_is_backed_by_its_file_and_recorded_streamed(tmp_path):
    import hashlib

    from replicate_jupyter.model.validation import validate
    from replicate_jupyter.prediction.record import file_entry

    src = tmp_path / "mid.bin"
    with open(src, "wb") as fh:
        fh.write(os.urandom(1000))
        fh.truncate(64 * MB)
    want = hashlib.sha256(src.read_bytes()).hexdigest()
    tracemalloc.start()
    try:
        f = validate(_FILE_SCHEMA, {"image": str(src)})["image"]
        entry = file_entry(f)  # the record: size, sha256 and where it lives, no bytes (over EMBED_LIMIT)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(f, InputFile) and f._data is None and f.size == 64 * MB
    assert entry["size"] == 64 * MB and entry["sha256"] == want and entry["path"] == str(src) and "data" not in entry
    assert peak < 4 * MB  # never the 64 MB whole
    small = tmp_path / "small.txt"
    small.write_bytes(b"twelve bytes")
    e = file_entry(validate(_FILE_SCHEMA, {"image": str(small)})["image"])  # small: its bytes embedded
    assert e["size"] == 12 and e["data"] == "data:text/plain;base64," + base64.b64encode(b"twelve bytes").decode()


# ----- logs: chunks joined on read, the split-secret redaction intact (prediction.py) -------------
_SECRET = "sk-live-" + "Qx9" * 10
_SECRET_SCHEMA = {"components": {"schemas": {"Input": {"properties": {
    "api_key": {"type": "string", "format": "password", "x-order": 0}}}}}}


def _emit_lines(n: int, secret: bool) -> float:
    import time

    p = Prediction("test/model", {"api_key": _SECRET} if secret else {"prompt": "x"},
                   schema=_SECRET_SCHEMA if secret else None)
    p.emit(Started(hardware="cpu"))
    line = "step 1234: loss 0.1234 lr 0.0003 tokens/s 12345.6 " + "." * 48 + "\n"  # 100 characters
    t = time.perf_counter()
    for _ in range(n):
        p.emit(Log(text=line))
    spent = time.perf_counter() - t
    assert p.logs == line * n
    return spent


@pytest.mark.parametrize("secret", [False, True], ids=["plain", "with-a-secret"])
def test_ten_thousand_log_lines_cost_linear_time(secret):
    """`logs +=` copied the whole log per line: 10,000 lines took 1.6 s and 40,000 took 22 s
    here (quadratic); as chunks they take ~40 ms and ~160 ms. Four times the lines must cost
    well under the sixteen times a quadratic log would."""
    _emit_lines(2_000, secret)  # warm
    small, big = _emit_lines(5_000, secret), _emit_lines(20_000, secret)
    assert big < 1.5 and big / small < 8, (small, big)


def test_a_secret_printed_a_character_at_a_time_is_masked_in_the_joined_log():
    from replicate_jupyter.prediction.redact import MASK

    p = Prediction("test/model", {"api_key": _SECRET}, schema=_SECRET_SCHEMA)
    p.emit(Started(hardware="cpu"))
    p.emit(Log(text="x" * 5000 + " key="))  # a big chunk before: only its tail is re-read
    for i, ch in enumerate(_SECRET):
        p.emit(Log(text=ch))
        if i == 10:
            assert p.logs.endswith(_SECRET[:11])  # a read mid-secret joins the chunks ...
    p.emit(Log(text=" done\n" + _SECRET[:9]))
    p.emit(Log(text=_SECRET[9:] + "\n"))  # ... and the chunks after it still meet the tail
    assert _SECRET not in p.logs and p.logs == "x" * 5000 + f" key={MASK} done\n{MASK}\n"
    assert _SECRET not in json.dumps(p.to_json())

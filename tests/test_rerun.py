"""Shared notebooks that rerun: records, rerun, compare and replay against real parts.

One notebook is executed in a real kernel with the embedded models (seeds given and not, a
sweep), saved, and then: read back with no kernel; rerun record by record in a new kernel
(identical output hashes on local, the compare view says identical); replayed on workers (a
`replicate-jupyter serve` of each embedded model) with identical outputs and both costs;
refused before anything runs when the backend cannot resolve a model; a dry run that runs and
charges nothing; a budget that stops the replay before the prediction that would pass it. A
second, light notebook feeds a file to a model, for a file input that moved.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time

import pytest
from kernel_helpers import PREDICTORS, execute, make_notebook, text_of

from replicate_jupyter import api
from replicate_jupyter.errors import InputError
from replicate_jupyter.notebook.records import records
from replicate_jupyter.notebook.rerun import Comparison, replay, rerun
from replicate_jupyter.prediction.record import EMBED_LIMIT, draw_seed, record_from_payload, record_of
from replicate_jupyter.session import session

CELLS = [
    "%load_ext replicate_jupyter",
    # warm both models up first (a value not displayed leaves no record), so the recorded
    # predict times are the models' own, not the first call's start-up
    "import replicate_jupyter as rj\n_ = [rj.run('local/tiny-lm', {'max_new_tokens': 2}), "
    "rj.run('local/shapes', {'num_inference_steps': 1})]",
    "%%replicate local/tiny-lm --seed 3\nprompt: Once upon\nmax_new_tokens: 8",
    "%%replicate local/shapes --seed 7\nprompt: a red circle on a cream background\nnum_inference_steps: 8",
    "%%replicate local/shapes\nprompt: a blue star on a black background\nnum_inference_steps: 3",
    "%%replicate local/tiny-lm\nprompt: The\nmax_new_tokens: 12",
    "%%replicate local/shapes --seed 1 --sweep num_inference_steps=2,3\na green ring",
]
N_PREDICTIONS = 6  # one per cell, two in the sweep


def _wall(recs) -> float:
    """Seconds from created to completed, summed over records (the time the cells waited)."""
    from datetime import datetime

    def t(x: str) -> datetime:
        return datetime.fromisoformat(x.replace("Z", "+00:00"))

    return sum((t(r.record["completed_at"]) - t(r.record["created_at"])).total_seconds() for r in recs)


@pytest.fixture(scope="module")
def original(tmp_path_factory) -> dict:
    """The notebook as its author saved it, and how long its cells took."""
    folder = tmp_path_factory.mktemp("shared")
    path = folder / "original.ipynb"
    t0 = time.monotonic()
    execute(make_notebook(CELLS), cwd=folder, save_to=path, timeout=300)
    return {"path": path, "seconds": time.monotonic() - t0}


def test_a_saved_notebook_lists_its_records_with_no_kernel(original):
    recs = records(original["path"])
    assert [r.model for r in recs] == ["local/tiny-lm", "local/shapes", "local/shapes", "local/tiny-lm",
                                       "local/shapes", "local/shapes"]
    assert all(r.status == "succeeded" and r.backend == "local" for r in recs)
    assert [r.cell for r in recs] == [3, 4, 5, 6, 7, 7]
    assert [r.label for r in recs][-2:] == ["num_inference_steps=2", "num_inference_steps=3"]
    seeds = [(r.record["seed"], r.record["seed_source"]) for r in recs]
    assert seeds[0] == (3, "input") and seeds[1] == (7, "input") and seeds[4] == (1, "input")
    for i in (2, 3):  # no seed given: the kernel drew one before dispatch, so it is part of the input
        assert seeds[i][1] == "input" and isinstance(seeds[i][0], int)
        assert recs[i].record["input"]["seed"] == seeds[i][0]
    for r in recs:
        assert len(r.record["output_sha256"]) == 64
        assert r.record["model"]["version"] and r.record["model"]["ref"] == r.model
        for d in r.record["outputs"]:
            assert len(d["sha256"]) == 64
    files = recs[1].output()
    assert files[0].is_image and files[0].sha256 == recs[1].record["outputs"][0]["sha256"]
    sizes = [len(json.dumps(r.record)) for r in recs]
    print(f"\nrebuilt record size per output: {min(sizes)}–{max(sizes)} bytes")
    assert max(sizes) < 4000


def test_every_record_reruns_identically_on_local_in_a_new_kernel(original):
    """The notebook reopened in a new kernel (JPY_SESSION_NAME names it, as jupyter_server
    does): rerun by id, by cell and --last, each compared with its record."""
    folder = original["path"].parent
    cells = [
        "%load_ext replicate_jupyter",
        "import json, time\n"
        "from replicate_jupyter.notebook.records import records\n"
        "from replicate_jupyter.notebook.rerun import rerun\n"
        "recs = records('original.ipynb')\n"
        "t0 = time.monotonic()\n"
        "results = [rerun(r.id, compare=True) for r in recs[:4]]\n"
        "results += rerun(cell=7, compare=True)\n"
        "seconds = time.monotonic() - t0\n"
        "walls = [(c.new.metrics.get('setup_time') or 0, c.new.metrics['predict_time']) for c in results]\n"
        "print(json.dumps({'identical': [c.identical for c in results], 'seconds': seconds, 'walls': walls,\n"
        "                  'old': [c.old.record['output_sha256'] for c in results],\n"
        "                  'new': [c.new_record['output_sha256'] for c in results],\n"
        "                  'backend': [c.new.backend for c in results]}))",
        "results[1]",
        "last = rerun(last=True)\nprint('LAST', last.id, last.model, last.status)",
        "import replicate_jupyter as rj\nprint('LEDGER', len(rj.ledger()))",
    ]
    nb = execute(make_notebook(cells), cwd=folder, env={"JPY_SESSION_NAME": "original.ipynb"}, timeout=300)
    out = json.loads(text_of(nb.cells[1]).strip().splitlines()[-1])
    assert out["identical"] == [True] * N_PREDICTIONS
    assert out["old"] == out["new"] and out["backend"] == ["local"] * N_PREDICTIONS
    compare = text_of(nb.cells[2])
    assert "identical: every output hash matches" in compare and "output sha256" in compare
    html = next(o for o in nb.cells[2].outputs if "text/html" in o.get("data", {}))["data"]["text/html"]
    assert html.count("<img") == 2  # old and new side by side
    assert "LAST" in text_of(nb.cells[3]) and "local/shapes succeeded" in text_of(nb.cells[3])
    assert f"LEDGER {N_PREDICTIONS + 1}" in text_of(nb.cells[4])  # every rerun is in the ledger
    card = [o for o in nb.cells[1].outputs if "application/vnd.replicate.prediction+json" in o.get("data", {})]
    assert len(card) == N_PREDICTIONS  # displayed like any prediction
    setup = sum(w[0] for w in out["walls"])
    print(f"\nreruns on local in a new kernel: {out['seconds']:.2f} s for {N_PREDICTIONS} ({setup:.2f} s of it "
          f"loading the models, predict time {sum(w[1] for w in out['walls']):.2f} s); the original's predictions "
          f"{_wall(records(original['path'])):.2f} s (warm)")


# ----- workers ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shapes_worker():
    from test_workers import Serve

    from replicate_jupyter.runners.workers.runner import pool

    s = Serve("local/shapes")
    pool().add(s.url)
    yield s
    try:
        pool().remove(s.url)
    except KeyError:
        pass
    s.stop()


@pytest.fixture(scope="module")
def lm_worker(shapes_worker):
    from test_workers import Serve

    from replicate_jupyter.runners.workers.runner import pool

    s = Serve("local/tiny-lm")
    pool().add(s.url)
    yield s
    try:
        pool().remove(s.url)
    except KeyError:
        pass
    s.stop()


def _state() -> tuple[int, int]:
    return len(session.predictions), len(session.ledger)


def test_a_backend_that_cannot_resolve_a_model_refuses_the_replay_before_anything_runs(original, shapes_worker):
    before, started = _state(), list(shapes_worker.started_ids())
    dry = replay(original["path"], on="workers", dry_run=True)
    assert [s.state for s in dry.steps] == ["refused", "would run", "would run", "refused", "would run", "would run"]
    assert "local/tiny-lm" in dry.steps[0].note
    with pytest.raises(InputError) as err:
        replay(original["path"], on="workers")
    assert "local/tiny-lm" in str(err.value) and "nothing ran" in str(err.value)
    assert _state() == before and shapes_worker.started_ids() == started


def test_dry_run_runs_nothing_and_charges_nothing(original, lm_worker, shapes_worker):
    before, started = _state(), (list(shapes_worker.started_ids()), list(lm_worker.started_ids()))
    dry = replay(original["path"], on="workers", dry_run=True)
    assert [s.state for s in dry.steps] == ["would run"] * N_PREDICTIONS
    assert dry.forecast > 0 and all(s.estimate for s in dry.steps)  # from local records: an estimate
    text = dry.bundle()["text/plain"]
    assert "dry run" in text and "nothing ran, nothing charged" in text and "on workers" in text
    assert _state() == before
    assert (shapes_worker.started_ids(), lm_worker.started_ids()) == started


def test_replay_on_workers_gives_identical_outputs_and_both_costs(original, lm_worker):
    before = len(session.ledger)
    summary = replay(original["path"], on="workers")
    assert [s.state for s in summary.steps] == ["same"] * N_PREDICTIONS, summary.bundle()["text/plain"]
    assert summary.identical
    assert all(s.new.backend == "workers" and s.new.metrics.get("worker") for s in summary.steps)
    assert len(session.ledger) == before + N_PREDICTIONS
    assert summary.total_old > 0 and summary.total_new > 0
    text = summary.bundle()["text/plain"]
    assert "old total" in text and "new total" in text and text.count("same") >= N_PREDICTIONS
    grid = summary.bundle()["application/vnd.replicate.replay+json"]
    assert all(s["old_cost_usd"] and s["new_cost_usd"] for s in grid["steps"])
    print(f"\nreplay on workers: {summary.seconds:.2f} s for {N_PREDICTIONS}, the original's predictions "
          f"{_wall(records(original['path'])):.2f} s (predict time {summary.original_seconds:.2f} s)")


def test_a_replay_over_budget_stops_before_the_prediction_that_would_pass_it(original, lm_worker):
    forecast = [s.forecast for s in replay(original["path"], on="workers", dry_run=True).steps]
    budget = max(forecast[1:])  # reached by the time the replay gets to its costliest step
    assert 0 < forecast[0] <= budget  # 8 tokens cost less than an 8-step image: the first fits
    before = len(session.ledger)
    summary = replay(original["path"], on="workers", budget=budget)
    states = [s.state for s in summary.steps]
    stop = states.index("not run")
    assert stop >= 1 and states == ["same"] * stop + ["not run"] * (len(states) - stop), states
    spent = sum(s.cost for s in summary.steps[:stop])
    assert spent + forecast[stop] > budget and "would pass the budget" in summary.steps[stop].note
    for i in range(stop):  # each that ran fitted: what was spent before it + its forecast
        assert sum(s.cost for s in summary.steps[:i]) + forecast[i] <= budget
    assert len(session.ledger) == before + stop and summary.total_new <= budget
    with pytest.raises(InputError):
        replay(original["path"], on="workers", budget=float("nan"))


def test_compare_says_what_differs(original, lm_worker):
    """Another seed, on workers: the image's pixel difference, the text's word diff, both seeds."""
    path = original["path"]
    recs = records(path)
    img = rerun(recs[1].id, notebook=path, on="workers", input={"seed": 8}, compare=True)
    assert not img.identical and img.verdict() == "different: 1 of 1 outputs differ"
    px = img.outputs[0]["pixels"]
    assert px["mean_abs"] > 0 and 0 < px["changed_pixels"] <= 1 and px["max"] > 0
    assert ("seed", 7, 8) in img.facts() and ("backend", "local", "workers") in img.facts()
    txt = rerun(recs[0].id, notebook=path, on="workers", input={"seed": 4}, compare=True)
    row = txt.outputs[0]
    assert not txt.identical and 0 <= row["similarity"] < 1 and ("[-" in row["diff"] or "{+" in row["diff"])
    bundle = txt._repr_mimebundle_()
    assert ("<del" in bundle["text/html"] or "<ins" in bundle["text/html"]) and row["diff"] in bundle["text/plain"]
    assert bundle["application/vnd.replicate.compare+json"]["identical"] is False


# ----- files ------------------------------------------------------------------------------------
FILE_IN = f"{PREDICTORS / 'file_in.py'}:Predictor"


@pytest.fixture(scope="module")
def with_file(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("with_file")
    data = os.urandom(EMBED_LIMIT + 1000)
    (folder / "big.bin").write_bytes(data)
    path = folder / "files.ipynb"
    cells = ["%load_ext replicate_jupyter", f"%%replicate {FILE_IN}\nimage: big.bin"]
    execute(make_notebook(cells), cwd=folder, save_to=path, timeout=120)
    return {"path": path, "data": data, "sha256": hashlib.sha256(data).hexdigest()}


def test_a_file_input_that_moved_is_named_with_its_hash(with_file, tmp_path):
    path, sha = with_file["path"], with_file["sha256"]
    (rec,) = records(path)
    assert rec.record["input"]["image"]["sha256"] == sha and rec.record["model"]["ref"] == FILE_IN
    moved = tmp_path / "elsewhere.bin"
    shutil.move(path.parent / "big.bin", moved)
    before = _state()
    with pytest.raises(InputError) as err:
        rerun(rec.id, notebook=path)
    msg = str(err.value)
    assert "big.bin" in msg and sha in msg and "input={'image': PATH}" in msg
    assert err.value.problems[0].field == "image" and err.value.problems[0].rule == "file"
    with pytest.raises(InputError, match=sha):
        replay(path)
    assert _state() == before  # nothing prepared, nothing charged
    c = rerun(rec.id, notebook=path, input={"image": moved}, compare=True)
    assert isinstance(c, Comparison) and c.identical and c.new.output == f"{len(with_file['data'])} bytes"
    moved.unlink()  # gone from disk: now found by its hash among this kernel's files
    assert rerun(rec.id, notebook=path, compare=True).identical


# ----- records of live predictions ---------------------------------------------------------------
def test_record_of_embeds_small_files_and_masks_nothing_it_should_keep(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "small.txt").write_bytes(b"twelve bytes")
    p = api.execute(api.prepare(FILE_IN, {"image": "small.txt"}, on="local"))
    rec = record_of(p)
    entry = rec["input"]["image"]
    assert entry["data"].startswith("data:") and entry["size"] == 12
    assert entry["path"] == str(tmp_path / "small.txt")
    assert rec["outputs"] == [{"index": None, "kind": "text", "size": 8, "sha256": hashlib.sha256(b"12 bytes").hexdigest()}]
    assert rec["versions"]["cog"] and rec["hardware"]["sku"] == "cpu" and rec["backend"] == "local"
    assert record_from_payload(p.to_json())["output_sha256"] == rec["output_sha256"]
    print(f"\nfull record size: {len(json.dumps(rec))} bytes (12-byte input embedded)")
    (tmp_path / "small.txt").unlink()
    from replicate_jupyter.notebook.records import Record, input_of

    again = input_of(Record(rec))  # embedded: found with no file and no kernel cache needed
    assert again["image"].read() == b"twelve bytes"
    # saved as the bundle will carry it (the payload with its record): read back as is
    import nbformat

    from replicate_jupyter.notebook.display import MIME, render

    bundle = render(p)
    bundle[MIME]["record"] = rec
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(f"%%replicate {FILE_IN}\nimage: small.txt")])
    nb.cells[0].outputs = [nbformat.v4.new_output("display_data", data=bundle)]
    nbformat.write(nb, tmp_path / "saved.ipynb")
    (saved,) = records(tmp_path / "saved.ipynb")
    want = json.loads(json.dumps(rec))
    assert saved.record["model"].pop("ref") == FILE_IN  # p.model is its name; the cell says how it was written
    assert want["model"].pop("ref") == FILE_IN and saved.record == want and "rebuilt" not in saved.record


def test_draw_seed_fills_a_missing_seed_only():
    schema = api.schema(FILE_IN)
    assert draw_seed(schema, {"image": "x"}) == {"image": "x"}  # no seed input: unchanged
    sch = {"components": {"schemas": {"Input": {"properties": {"seed": {"type": "integer", "minimum": 5,
                                                                        "maximum": 6}}}}}}
    assert draw_seed(sch, {"seed": 1}) == {"seed": 1}
    drawn = {draw_seed(sch, {})["seed"] for _ in range(50)}
    assert drawn == {5, 6}
    assert draw_seed(sch, {"seed": None})["seed"] in (5, 6)


def test_an_unknown_id_names_the_closest(original):
    recs = records(original["path"])
    with pytest.raises(InputError) as err:
        rerun(recs[0].id[:-1] + "x", notebook=original["path"])
    assert recs[0].id in str(err.value)
    with pytest.raises(InputError):
        rerun(notebook=original["path"])  # neither id, cell nor last


def test_a_payload_pointing_at_its_bundles_png_is_hashed_from_those_bytes():
    """A final bundle holds a single PNG once: the payload's file says `"ref": "image/png"` and
    has no `url`. A payload saved without its record (rebuilt) is hashed from `data[ref]`, and
    the saved notebook's reader gives the file back as a FileOutput of those bytes."""
    import base64
    import io

    import nbformat
    from PIL import Image

    from replicate_jupyter.notebook.display import MIME
    from replicate_jupyter.prediction.files import FileOutput

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buf, format="PNG")
    png = buf.getvalue()
    b64 = base64.b64encode(png).decode()
    payload = {"id": "ref1", "model": "local/shapes", "status": "succeeded", "backend": "local",
               "output": [{"type": "file", "ref": "image/png", "name": "out-0.png", "content_type": "image/png",
                           "size": len(png)}]}
    lines = [b64[i:i + 76] + "\n" for i in range(0, len(b64), 76)]  # as a notebook may store it
    rec = record_from_payload(payload, {MIME: payload, "image/png": lines})
    assert rec["outputs"][0]["sha256"] == hashlib.sha256(png).hexdigest()
    assert record_from_payload(payload)["outputs"][0]["sha256"] is None  # no bundle: no hash of b""
    assert "url" not in payload["output"][0]  # the saved payload is not changed
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("%%replicate local/shapes\na dot")])
    nb.cells[0].outputs = [nbformat.v4.new_output("display_data", data={MIME: payload, "image/png": b64})]
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        nbformat.write(nb, os.path.join(d, "saved.ipynb"))
        (saved,) = records(os.path.join(d, "saved.ipynb"))
    (f,) = saved.output()
    assert isinstance(f, FileOutput) and f.is_image and f.read() == png
    assert saved.record["output_sha256"] == rec["output_sha256"]


def test_the_package_root_offers_rerun_replay_and_records(original):
    import replicate_jupyter as rj

    recs = rj.records(str(original["path"]))
    assert [r.model for r in recs] == [r.model for r in records(original["path"])] and len(recs) == 6
    before = len(rj.predictions.list())
    summary = rj.replay(str(original["path"]), dry_run=True)
    assert summary.dry_run and [s.state for s in summary.steps] == ["would run"] * 6
    assert len(rj.predictions.list()) == before  # a dry run runs nothing

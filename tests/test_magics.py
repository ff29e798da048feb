"""%%replicate and the line magics in a real kernel (nbclient), asserting on the saved notebook."""
from __future__ import annotations

import base64
import io
import json
import re
from datetime import datetime

from kernel_helpers import nb_json, text_of
from PIL import Image

MIME = "application/vnd.replicate.prediction+json"
P = "../tests/predictors"


def displays(cell) -> list[dict]:
    return [o for o in cell.outputs if o.output_type == "display_data" and MIME in o.data]


def last_json(nb, cell_index: int) -> dict:
    """The `print(json.dumps(...))` a check cell wrote."""
    text = text_of(nb.cells[cell_index]).strip().splitlines()[-1]
    return json.loads(text)


def test_main_flow_images_text_sweep_cost_lines(run_cells):
    nb = run_cells([
        "%load_ext replicate_jupyter\nimport json, sys, replicate_jupyter as rj\n"
        "from replicate_jupyter.notebook.display import usd",
        f"%%replicate {P}/image.py:Predictor -o pic\ncolor: green\ncount: 2",                       # 1
        "print(json.dumps([type(_).__name__, _ is pic, pic.status, len(pic.output)]))",             # 2
        "n = 300",                                                                                 # 3
        f"%%replicate {P}/tokens.py:Predictor\nprompt: hello\nn: {{n}}",                            # 4
        "print(json.dumps(''.join(_.output)))",                                                      # 5
        f"%%replicate {P}/image.py:Predictor --sweep color=red,blue --sweep count=1,2 -o grid\n# defaults",  # 6
        "print(json.dumps([len(grid), [p.status for p in grid], [p.input for p in grid]]))",         # 7
        "print(json.dumps({'n': len(rj.ledger()), 'total': usd(rj.ledger().total()),"
        " 'heavy': [m for m in ('torch', 'diffusers', 'ray') if m in sys.modules]}))",               # 8
    ], timeout=120)

    # image output embedded as image/png (two images composed into one grid image)
    (card,) = displays(nb.cells[1])
    img = Image.open(io.BytesIO(base64.b64decode(card["data"]["image/png"])))
    assert img.width >= 32
    assert card["data"][MIME]["status"] == "succeeded"
    assert {"text/html", "text/plain"} <= set(card["data"])
    assert last_json(nb, 2) == ["Prediction", True, "succeeded", 2]

    # streamed text: the display holds exactly the predictor's full output
    expected = "".join(f"t{i} " for i in range(300))
    (tok,) = displays(nb.cells[4])
    assert "".join(tok["data"][MIME]["output"]) == expected == last_json(nb, 5)
    assert expected in tok["data"]["text/plain"]

    # a 2×2 sweep: 4 predictions in one grid display
    sweep = [o for o in nb.cells[6].outputs if o.output_type == "display_data"]
    assert len(sweep) == 1
    grid = sweep[0]["data"]
    assert len(grid["application/vnd.replicate.sweep+json"]["predictions"]) == 4
    for label in ("color=red, count=1", "color=red, count=2", "color=blue, count=1", "color=blue, count=2"):
        assert label in grid["text/html"]
    assert "image/png" in grid and "cell total: 4 predictions" in grid["text/plain"]
    n, statuses, inputs = last_json(nb, 7)
    assert n == 4 and statuses == ["succeeded"] * 4
    assert {(i["color"], i["count"]) for i in inputs} == {("red", 1), ("red", 2), ("blue", 1), ("blue", 2)}

    # one cost line per prediction; the last total equals the ledger's
    ledger = last_json(nb, 8)

    def shown(cell) -> list[str]:
        return [ln for o in cell.outputs if o.output_type == "display_data"
                for ln in o.get("data", {}).get("text/plain", "").splitlines()]

    lines = [ln for c in nb.cells for ln in shown(c) if ln.startswith("cost: ")]
    assert len(lines) == ledger["n"] == 6
    # the sweep's members finish in any order but are listed in input order: their lines carry no
    # notebook total (it would read out of order); the grid's summary carries it once, the ledger's
    singles = [float(ln.rsplit("notebook total $", 1)[1]) for c in (nb.cells[1], nb.cells[4])
               for ln in shown(c) if ln.startswith("cost: ")]
    assert len(singles) == 2 and 0 < singles[0] < singles[1]
    members = [ln for ln in shown(nb.cells[6]) if ln.startswith("cost: ")]
    assert len(members) == 4 and not any("notebook total" in ln for ln in members)
    (summary,) = [ln for ln in shown(nb.cells[6]) if ln.startswith("cell total: ")]
    assert summary.endswith(f"notebook total {ledger['total']}")
    assert ledger["heavy"] == []  # the magics and these predictors never import torch/diffusers/ray


def test_bad_input_rules_name_the_field_and_charge_nothing(run_cells):
    bad = [
        ("color: pink", "color", "choices"),
        ("count: 9", "count", "maximum"),
        ("count: 0", "count", "minimum"),
        ("count: many", "count", "int"),
        ("colour: red", "colour", "unknown"),
        ("color: {nowhere}", "color", "interpolation"),
        ("color: $nowhere", "color", "reference"),
    ]
    cells = ["%load_ext replicate_jupyter\nimport replicate_jupyter as rj"]
    cells += [(f"%%replicate {P}/image.py:Predictor\n{body}", ["raises-exception"]) for body, _, _ in bad]
    cells += [(f"%%replicate {P}/file_in.py:Predictor\n# no image", ["raises-exception"]),
              ("%%replicate nope/unknown-model\nx: 1", ["raises-exception"]),
              (f"%%replicate {P}/image.py:Predictor --bogus\ncolor: red", ["raises-exception"]),
              "print(len(rj.ledger()), len(rj.predictions.list()))"]
    nb = run_cells(cells, timeout=60)
    for i, (_, field, rule) in enumerate(bad, start=1):
        errs = [o for o in nb.cells[i].outputs if o.output_type == "error"]
        assert len(errs) == 1, (i, nb.cells[i].outputs)
        assert errs[0]["ename"] == "InputError"
        assert f"{field}:" in errs[0]["evalue"] and rule in errs[0]["evalue"].lower()
        assert len(errs[0]["traceback"]) == 1  # the message, not a traceback of our internals
        assert "replicate_jupyter/" not in "".join(errs[0]["traceback"])
    k = len(bad) + 1
    (err,) = nb.cells[k].outputs
    assert err["ename"] == "InputError" and "image:" in err["evalue"] and "required" in err["evalue"]
    (err,) = nb.cells[k + 1].outputs
    assert err["ename"] == "ModelNotFound" and "nope/unknown-model" in err["evalue"]
    assert "UsageError" in text_of(nb.cells[k + 2]) and "--bogus" in text_of(nb.cells[k + 2])
    assert text_of(nb.cells[-1]).split() == ["0", "0"]  # nothing dispatched, nothing charged


def test_async_returns_at_once_and_fills_in_later(run_cells):
    nb = run_cells([
        "%load_ext replicate_jupyter\nimport time, json",
        f"%%replicate {P}/steps.py:Predictor --async -o slow\nsteps: 15\ndelay: 0.1",
        "print(json.dumps([slow.status, time.time()]))",
        "%replicate predictions",
        "slow.wait(); print(json.dumps([slow.status, time.time(), slow.completed_at]))",
    ], timeout=60)
    status_then, t_next = last_json(nb, 2)
    assert status_then in ("starting", "processing")  # the next cell ran before it finished
    final_status, t_wait, completed_at = last_json(nb, 4)
    assert final_status == "succeeded"
    done_at = datetime.fromisoformat(completed_at.replace("Z", "+00:00")).timestamp()
    assert t_next < done_at
    (card,) = displays(nb.cells[1])
    assert card["data"][MIME]["status"] == "succeeded"
    assert card["data"][MIME]["output"] == "done 15"
    assert "cost: local/steps · succeeded" in card["data"]["text/plain"]
    assert "processing" in text_of(nb.cells[3]) or "succeeded" in text_of(nb.cells[3])


def test_interrupt_cancels_within_one_step(run_cells):
    delay = 0.05
    nb = run_cells([
        "%load_ext replicate_jupyter\nimport json, replicate_jupyter as rj",
        (f"%%replicate {P}/steps.py:Predictor -o p\nsteps: 400\ndelay: {delay}", ["raises-exception"]),
        "print(json.dumps([p.status, p.progress, p.metrics['predict_time'], p.started_at, p.completed_at,"
        " [e.status for e in rj.ledger().entries]]))",
    ], timeout=60, interrupt={1: 2.5})
    (moment,) = nb.metadata["test_interrupts"]
    status, (step, total), predict_time, started, completed, ledger = last_json(nb, 2)
    assert status == "canceled" and ledger == ["canceled"]
    ts = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()  # noqa: E731
    # it stopped within one step of the interrupt
    assert ts(completed) - moment["at"] <= delay + 0.25
    per_step = predict_time / max(step, 1)
    steps_at_interrupt = (moment["at"] - ts(started)) / per_step
    assert step <= steps_at_interrupt + 1
    assert 0 < step < total and predict_time < 5
    # the cell shows the canceled prediction, then stops with one line (no traceback of ours),
    # so the cells queued after it are not run (test_run_all_stops_at_an_interrupt_or_a_failure)
    outs = nb.cells[1].outputs
    (card,) = displays(nb.cells[1])
    assert card["data"][MIME]["status"] == "canceled"
    assert "cost: local/steps · canceled" in card["data"]["text/plain"]
    (err,) = [o for o in outs if o.output_type == "error"]
    assert err.ename == "Interrupted" and len(err.traceback) == 1 and "the result is in `p`" in err.evalue
    assert outs.index(err) > outs.index(card)


def test_budget_and_max_cost_say_so(run_cells):
    nb = run_cells([
        "%load_ext replicate_jupyter\nimport json, replicate_jupyter as rj",
        "%replicate price cpu=0.01",
        f"%%replicate {P}/steps.py:Predictor --max-cost 0.005 -o capped\nsteps: 100\ndelay: 0.05",
        "%replicate budget 0.004",
        (f"%%replicate {P}/steps.py:Predictor\nsteps: 2", ["raises-exception"]),
        "print(json.dumps([capped.status, capped.cancel_reason, len(rj.ledger())]))",
    ], timeout=60)
    status, reason, n = last_json(nb, 5)
    assert status == "canceled" and "max-cost" in reason and n == 1
    (card,) = displays(nb.cells[2])
    assert "max-cost" in card["data"]["text/plain"]
    assert "Budget set to $0.004" in text_of(nb.cells[3])
    (err,) = nb.cells[4].outputs
    assert err["ename"] == "BudgetExceeded" and "budget" in err["evalue"]


def test_token_never_lands_in_the_notebook(run_cells):
    login_token = "r8_LOGINtokenAbc123SECRET"
    env_token = "r8_ENVtokenXyz789SECRET"
    nb = run_cells([
        "%load_ext replicate_jupyter\nimport os, getpass",
        # ipykernel installs its own getpass for every execution: patch it in the same cell
        "getpass.getpass = lambda prompt='': os.environ.pop('RJ_TEST_FEED')\n%replicate login",
        # the login token is used from the kernel's memory; os.environ (which every subprocess
        # and predictor inherits) keeps what the user set, never the token typed at the prompt
        "from replicate_jupyter.runners.replicate import token as _t\n"
        "print(_t.current() == os.environ['RJ_TEST_EXPECT'], os.environ['REPLICATE_API_TOKEN'] != os.environ['RJ_TEST_EXPECT'])",
        f"%%replicate {P}/echo.py:Predictor\ntext: hi",
        "%replicate predictions",
        "%replicate cost",
        ("%replicate login r8_inline", ["raises-exception"]),
    ], env={"RJ_TEST_FEED": login_token, "RJ_TEST_EXPECT": login_token, "REPLICATE_API_TOKEN": env_token},
        timeout=60)
    assert text_of(nb.cells[2]).strip() == "True True"
    assert "Token stored" in text_of(nb.cells[1])
    saved = nb_json(nb)
    assert login_token not in saved and env_token not in saved
    assert "r8_LOGIN" not in saved and "r8_ENV" not in saved
    assert "UsageError" in text_of(nb.cells[6])


def test_line_magics_help_models_schema_use(run_cells):
    nb = run_cells([
        "%load_ext replicate_jupyter",
        "%replicate",
        f"%replicate schema {P}/image.py:Predictor",
        "%replicate use local --memory-budget 100000000",
        "import replicate_jupyter as rj; print(rj.session.default_backend, rj.session.runner().memory_budget)",
        f"%%replicate {P}/echo.py:Predictor\nhello {{{{there}}}}",
        ("%replicate nonsense", ["raises-exception"]),
        ("%replicate budgt 1", ["raises-exception"]),
        "%config ReplicateMagics",
        "%replicate use",
        "name = 'echoed'",                                                                           # 10
        # the option line expands `$name` and `{expr}` as IPython expands any magic's line
        f"%%replicate {P}/echo.py:Predictor -o $name\nfirst",
        f"%%replicate {P}/echo.py:Predictor -o {{name + '2'}}\nsecond",
        "import json; print(json.dumps([echoed.output, echoed2.output]))",
    ], timeout=60)
    assert "%replicate cost" in text_of(nb.cells[1])
    for command in ("models", "schema MODEL", "form MODEL", "use BACKEND", "workers", "predictions", "cancel ID",
                    "cost", "budget", "price", "login"):
        assert f"%replicate {command}" in text_of(nb.cells[1]), command
    schema_text = text_of(nb.cells[2])
    assert re.search(r"color\s+string\s+'red'\s+one of: red, green, blue", schema_text)
    assert re.search(r"count\s+integer\s+1\s+1…4", schema_text)
    assert text_of(nb.cells[4]).split() == ["local", "100000000"]
    (card,) = displays(nb.cells[5])
    assert card["data"][MIME]["input"]["text"] == "hello {there}"
    assert "unknown command 'nonsense'" in text_of(nb.cells[6])
    assert "UsageError" in text_of(nb.cells[7]) and "Did you mean 'budget'?" in text_of(nb.cells[7])
    # %config lists the settings with their help and the session's current values
    config_help = text_of(nb.cells[8])
    for name in ("default_backend", "default_model", "budget", "preview_rate", "text_rate", "prices", "backend_options"):
        assert f"ReplicateMagics.{name}" in config_help, name
    assert "Current: 'local'" in config_help and "Current: {'local': {'memory_budget': 100000000}}" in config_help
    assert text_of(nb.cells[9]).strip() == "Using backend 'local'"
    assert last_json(nb, 13) == [">first", ">second"]
    assert displays(nb.cells[11]) and displays(nb.cells[12])  # each card still shows


def _replies(kc, cells: list[str], interrupt_after: float | None = None, km=None) -> list[tuple[str, list[dict]]]:
    """Send `cells` at once, as JupyterLab's Run All does; optionally interrupt the kernel that
    many seconds in. Each cell's reply status and its IOPub outputs."""
    import time

    ids = [kc.execute(c) for c in cells]
    if interrupt_after is not None:
        time.sleep(interrupt_after)
        km.interrupt_kernel()
    replies = {}
    while len(replies) < len(ids):
        msg = kc.get_shell_msg(timeout=60)
        replies[msg["parent_header"]["msg_id"]] = msg["content"]["status"]
    outputs: dict[str, list[dict]] = {i: [] for i in ids}
    while True:
        try:
            msg = kc.get_iopub_msg(timeout=2)
        except Exception:
            break
        pid = msg["parent_header"].get("msg_id")
        if pid in outputs and msg["msg_type"] in ("display_data", "execute_result", "error", "stream"):
            outputs[pid].append(msg)
    return [(replies[i], outputs[i]) for i in ids]


def test_run_all_stops_at_an_interrupt_or_a_failure():
    """Run All sends every cell at once; the kernel aborts the queue only after a cell whose reply
    is an error. An interrupted `%%replicate` cell and one whose model failed are errors (after
    their card), so the cells after them do not run; a canceled-by-cost run is not an error."""
    import os
    import pathlib

    from jupyter_client.manager import start_new_kernel

    root = pathlib.Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=str(root))
    km, kc = start_new_kernel(kernel_name="python3", env=env, cwd=str(root / "tests"))
    try:
        [(status, _)] = _replies(kc, ["%load_ext replicate_jupyter\nimport replicate_jupyter as rj"])
        assert status == "ok"
        steps = f"%%replicate {P}/steps.py:Predictor\nsteps: 400\ndelay: 0.05"
        after = "print('THE NEXT CELL RAN')"
        interrupted = _replies(kc, [steps, after, after], interrupt_after=1.5, km=km)
        assert [r for r, _ in interrupted] == ["error", "aborted", "aborted"]
        outs = interrupted[0][1]
        kinds = [m["msg_type"] for m in outs]
        assert "display_data" in kinds and kinds[-1] == "error" and outs[-1]["content"]["ename"] == "Interrupted"
        assert not any("THE NEXT CELL RAN" in m["content"].get("text", "") for _, o in interrupted for m in o)

        failing = f"%%replicate {P}/failing.py:Predictor -o bad\ntext: x"
        sweep = f"%%replicate {P}/failing.py:Predictor --sweep text=a,b\n# inputs from the sweep"
        for cell, message in ((failing, "model exploded on 'x'"), (sweep, "2 of 2 predictions failed")):
            failed = _replies(kc, [cell, after])
            assert [r for r, _ in failed] == ["error", "aborted"], cell
            err = failed[0][1][-1]["content"]
            assert err["ename"] == "ModelError" and message in err["evalue"] and len(err["traceback"]) == 1
            cards = [m for m in failed[0][1] if m["msg_type"] == "display_data"]
            assert cards and "failed" in cards[0]["content"]["data"]["text/plain"]
        [(status, outs)] = _replies(kc, ["print(bad.status, repr(bad.error))"])
        assert status == "ok" and "failed \"ValueError: model exploded on 'x'\"" in outs[0]["content"]["text"]

        capped = _replies(kc, ["%replicate price cpu=0.01", f"%%replicate {P}/steps.py:Predictor --max-cost 0.002\n"
                               "steps: 100\ndelay: 0.05", after])
        assert [r for r, _ in capped] == ["ok", "ok", "ok"]  # canceled by its cap: an answer, not an error
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)

"""What the magics say when a line is wrong or names nothing: in the magic's words, a secret never
echoed, a refused setting named as unchanged (review C §5, "magic errors speak Python API").

A real kernel for the magics (the messages are what a user reads in the saved notebook); the
Python API's own spelling is checked in process, since it must not change.
"""
from __future__ import annotations

import pytest
from kernel_helpers import PREDICTORS, nb_json, text_of

from replicate_jupyter.cost.prices import prices
from replicate_jupyter.errors import InputError
from replicate_jupyter.notebook.records import find

SECRET = "sk-magic-0123456789abcdef"
FAILS = ["raises-exception"]


@pytest.fixture(scope="module")
def nb(tmp_path_factory):
    from kernel_helpers import execute, make_notebook

    cells = [
        f"%load_ext replicate_jupyter\nKEY = {SECRET!r}",                                   # 0
        ("%replicate rerun", FAILS),                                                       # 1
        ("%replicate rerun abc123", FAILS),                                                # 2
        f"%%replicate {PREDICTORS}/secret.py:Predictor -o s\napi_key: $KEY\nword: hi",      # 3
        ("%replicate rerun {s.id}", FAILS),                                                # 4
        "r = %replicate rerun {s.id} --input api_key=$KEY\nprint(r.status, r.output)",    # 5
        ("%replicate cancel 123", FAILS),                                                  # 6
        ("%replicate budget -5", FAILS),                                                   # 7
        "%replicate budget 0.5",                                                           # 8
        ("%replicate budget 0", FAILS),                                                    # 9
        ("%replicate budget 1 api_key=" + "$KEY", FAILS),                                  # 10
        ("%replicate rerun --last --input $KEY", FAILS),                                   # 11
    ]
    # allow_errors: each test reads its own cells (an old message fails that test, not all of them)
    return execute(make_notebook(cells), cwd=tmp_path_factory.mktemp("magic"), timeout=120, allow_errors=True)


def test_rerun_with_nothing_named_says_the_magics_flags(nb):
    text = text_of(nb.cells[1])
    assert "%replicate rerun: give one of: an ID, --cell N or --last" in text
    assert "cell=N" not in text and "last=True" not in text and "{'id'" not in text


def test_an_unknown_id_reads_as_not_found_and_says_the_magics_option(nb):
    text = text_of(nb.cells[2])
    assert "no prediction 'abc123' recorded in this kernel (add --notebook PATH to look in a saved .ipynb)" in text
    assert "Invalid input" not in text and "notebook=PATH" not in text
    cancel = text_of(nb.cells[6])
    assert "No prediction '123' in this kernel" in cancel
    assert "(option line)" not in cancel and "Invalid input" not in cancel


def test_a_secret_is_asked_for_in_the_magics_words_and_can_be_given_there(nb):
    asked = text_of(nb.cells[4])
    assert "a secret is never recorded: give it again with --input api_key=$VAR" in asked
    assert "rerun(..., input=" not in asked
    assert text_of(nb.cells[5]).strip().splitlines()[-1] == f"succeeded hi:{len(SECRET)}:Secret"  # the real secret
    assert SECRET not in nb_json(nb).replace(f"KEY = {SECRET!r}", "")  # never echoed, never saved


def test_a_refused_budget_says_the_rule_and_that_nothing_changed(nb):
    text = text_of(nb.cells[7])
    assert "budget: minimum — got -5.0, allowed: a number of USD above 0, or off (the budget is unchanged: no budget)" \
        in text, text
    assert "still None" not in text and "or None" not in text and "(option line)" not in text
    assert "(the budget is unchanged: still $0.5000)" in text_of(nb.cells[9])


def test_a_secret_in_a_refused_line_is_masked(nb):
    text = text_of(nb.cells[10]) + text_of(nb.cells[11])
    assert "unrecognized arguments: api_key=**********" in text_of(nb.cells[10])
    assert "an input is KEY=VALUE" in text_of(nb.cells[11])
    assert SECRET not in text


def test_the_python_api_keeps_its_own_words():
    with pytest.raises(InputError) as err:
        find()
    assert str(err.value) == "rerun: give exactly one of: an id, cell=N, last=True"
    with pytest.raises(InputError) as err:
        find("nope-no-such-id", notebook=None)
    assert "(pass notebook=PATH to look in a saved .ipynb)" in str(err.value)
    assert "Invalid input" not in str(err.value)


# ----- the forecast counts steps (b) and a sweep's grid says the notebook total once (c) -----------
STEPS = f"{PREDICTORS}/steps.py:Predictor"


@pytest.fixture(scope="module")
def steps_nb(tmp_path_factory):
    from kernel_helpers import execute, make_notebook

    cells = [
        "%load_ext replicate_jupyter\nimport replicate_jupyter as rj",                     # 0
        f"%%replicate {STEPS}\nsteps: 10\ndelay: 0.02",                                    # 1
        f"%%replicate {STEPS}\nsteps: 10\ndelay: 0.02",                                    # 2
        f"%replicate estimate {STEPS} steps=10 delay=0.02",                                # 3
        f"%replicate estimate {STEPS} steps=100 delay=0.02",                               # 4
        "n = len(rj.ledger())",                                                            # 5
        "print(rj.ledger()[-1].steps)",                                                   # 6
        (f"%%replicate {STEPS} --max-cost {{3 * rj.ledger()[0].cost_usd}}\nsteps: 200\ndelay: 0.02", FAILS),  # 7
        "print(len(rj.ledger()) - n)",                                                     # 8
        f"%%replicate {STEPS} --sweep steps=6,1,3\ndelay: 0.02",                           # 9
        "print(rj.ledger().total())",                                                      # 10
        f"%replicate estimate {STEPS} steps=100 delay=0.02",                               # 11
    ]
    return execute(make_notebook(cells), cwd=tmp_path_factory.mktemp("steps"), timeout=120, allow_errors=True)


def _usd(text: str) -> float:
    import re

    return float(re.search(r"≈ \$([0-9.]+) expected", text)[1])


def test_the_forecast_scales_by_the_steps_asked(steps_nb):
    ten, hundred = text_of(steps_nb.cells[3]), text_of(steps_nb.cells[4])
    assert "s per step over 2 earlier runs × 100 steps (steps)" in hundred, hundred
    assert "× 10 steps (steps)" in ten
    assert _usd(hundred) == pytest.approx(10 * _usd(ten), rel=1e-3)  # one per-step median, × the steps
    assert text_of(steps_nb.cells[6]).strip() == "10"  # the ledger knows each run's steps
    # after the sweep's 6, 1 and 3 steps: a line through five runs' steps, ≈ 100 × 0.02 s of sleep
    fitted = text_of(steps_nb.cells[11])
    assert "× 100 steps (steps)" in fitted or "at 100 steps (steps)" in fitted, fitted
    assert 1.8 <= _usd(fitted) / prices.price("cpu") <= 3.0, fitted


def test_a_line_through_earlier_runs_steps_is_a_fixed_part_and_a_part_per_step():
    """Time = fixed + per step (a pipeline loads and decodes whatever its steps): with runs of
    several step counts the forecast fits that line, not a proportion (which would say 12.5 s)."""
    from replicate_jupyter.cost.forecast import forecast
    from replicate_jupyter.cost.ledger import Ledger
    from replicate_jupyter.prediction.events import Completed, Started
    from replicate_jupyter.prediction.prediction import Prediction

    props = {"num_inference_steps": {"type": "integer", "default": 20}, "num_outputs": {"type": "integer", "default": 1}}
    schema = {"components": {"schemas": {"Input": {"properties": props}}}}
    ledger = Ledger()
    for steps, seconds in ((10, 1.5), (20, 2.5), (40, 4.5)):
        p = Prediction("test/stepped", {"num_inference_steps": steps}, schema=schema)
        p.subscribe(ledger.listen)
        p.emit(Started(hardware="cpu"))
        p.emit(Completed(status="succeeded", metrics={"predict_time": seconds, "hardware": "cpu"}))
    f = forecast("test/stepped", {"num_inference_steps": 100, "num_outputs": 4}, schema=schema, backend="local",
                 ledger=ledger)
    assert f is not None and f.usd == pytest.approx(4 * 10.5 * prices.price("cpu"))
    assert f.basis.startswith("0.5 s + 0.1 s per step of an output, fitted to 3 earlier runs: 10.5 s at 100 steps "
                              "(num_inference_steps) × 4 (num_outputs) at $"), f.basis


def test_max_cost_refuses_a_run_of_many_steps_before_it_runs(steps_nb):
    text = text_of(steps_nb.cells[7])
    assert "Refused:" in text and "× 200 steps (steps)" in text and "Nothing was run" in text, text
    assert text_of(steps_nb.cells[8]).strip() == "0"  # nothing ran, nothing charged


def test_a_sweep_grid_shows_the_notebook_total_once(steps_nb):
    grid = next(o for o in steps_nb.cells[9].outputs if o.output_type == "display_data")
    text = grid["data"]["text/plain"]
    members = [ln for ln in text.splitlines() if ln.startswith("cost: ")]
    assert len(members) == 3 and not any("notebook total" in ln for ln in members), text
    summary = text.splitlines()[-1]
    total = float(text_of(steps_nb.cells[10]).strip())
    from replicate_jupyter.cost.text import usd

    assert summary.startswith("cell total: 3 predictions") and summary.endswith(f"notebook total {usd(total)}")
    assert grid["data"]["text/html"].count("notebook total") == 1

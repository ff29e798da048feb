"""One settings object: the session's traits, reached by `rj.backend`, the line magics, `%config`
and `c.ReplicateMagics.*` in a config file, with no copies that could reset each other.

The kernel tests set every setting through one path, then change the others through the other
paths, and check after every step that each setting holds exactly what was last set for it.
"""
from __future__ import annotations

import json
import math
import warnings

import pytest
from kernel_helpers import text_of
from traitlets.config import Config

import replicate_jupyter as rj
from replicate_jupyter.cost import prices as cost
from replicate_jupyter.errors import InputError
from replicate_jupyter.notebook.cellparse import LineError
from replicate_jupyter.notebook.commands import run_line
from replicate_jupyter.notebook.magics import ReplicateMagics
from replicate_jupyter.session import SETTINGS, Session, session

MIME = "application/vnd.replicate.prediction+json"
DEFAULTS = {"default_backend": "local", "default_model": "local/shapes", "budget": None, "preview_rate": 4.0,
            "text_rate": 10.0, "prices": {}, "backend_options": {}}

SNAP = """\
%load_ext replicate_jupyter
import json, replicate_jupyter as rj
from replicate_jupyter.session import SETTINGS
magics = get_ipython().magics_manager.registry['ReplicateMagics']
def snap():
    mine = {k: getattr(rj.session, k) for k in SETTINGS}
    seen = {k: getattr(magics, k) for k in SETTINGS}  # the magics' traits read the same object
    print(json.dumps([mine, mine == seen]))
snap()"""

#: (cell, what it sets): each step sets some settings through one path
STEPS = [
    ('rj.backend("replicate", poll_interval=0.2)',
     {"default_backend": "replicate", "backend_options": {"replicate": {"poll_interval": 0.2}}}),
    ("%replicate budget 1", {"budget": 1.0}),
    ('%config ReplicateMagics.default_model = "acme/model"', {"default_model": "acme/model"}),
    ("%replicate price cpu=0.01", {"prices": {"cpu": 0.01}}),
    ("%config ReplicateMagics.preview_rate = 2.0", {"preview_rate": 2.0}),
    ("rj.session.text_rate = 5", {"text_rate": 5.0}),
    ("%replicate use local --memory-budget 1000000",
     {"default_backend": "local",
      "backend_options": {"replicate": {"poll_interval": 0.2}, "local": {"memory_budget": 1000000}}}),
    ('%config ReplicateMagics.prices = {"cpu": 0.02, "gpu-t4": 0.5}', {"prices": {"cpu": 0.02, "gpu-t4": 0.5}}),
    ("%replicate budget off", {"budget": None}),
    ('rj.backend("replicate")', {"default_backend": "replicate"}),
    ("%config ReplicateMagics.budget = 0.5", {"budget": 0.5}),
    ('%config ReplicateMagics.backend_options = {"local": {"memory_budget": 2000000}}',
     {"backend_options": {"local": {"memory_budget": 2000000}}}),
    ("%replicate use workers", {"default_backend": "workers"}),
]


def snapshot(cell) -> tuple[dict, bool]:
    mine, same = json.loads(text_of(cell).strip().splitlines()[-1])
    return mine, same


def test_every_path_sets_one_object_and_no_setting_resets_another(run_cells):
    cells = [SNAP] + [f"{cell}\nsnap()" for cell, _ in STEPS]
    cells.append("print(json.dumps([rj.session.runner('local').memory_budget, rj.session.runner('local').preview_rate,"
                 " rj.session.runner('replicate').poll_interval]))")
    nb = run_cells(cells, timeout=60)
    expected = dict(DEFAULTS)
    assert snapshot(nb.cells[0]) == (expected, True)
    for i, (cell, sets) in enumerate(STEPS, start=1):
        expected.update(sets)
        assert snapshot(nb.cells[i]) == (expected, True), (cell, text_of(nb.cells[i]))
    # the local runner was rebuilt with its new options and took the session's preview rate; the
    # replicate one, whose options the last backend_options dropped, was rebuilt with its defaults
    assert json.loads(text_of(nb.cells[-1]).strip()) == [2000000, 2.0, 0.5]


CONFIG = """\
c.ReplicateMagics.default_model = "../tests/predictors/echo.py:Predictor"
c.ReplicateMagics.budget = 0.25
c.ReplicateMagics.text_rate = -1.0
c.ReplicateMagics.prices = {"cpu": 0.001}
"""


def test_config_file_and_percent_config_reach_the_session_and_bad_values_are_refused(run_cells, tmp_path):
    profile = tmp_path / "profile_default"
    profile.mkdir()
    (profile / "ipython_config.py").write_text(CONFIG)
    show = "print(json.dumps({k: getattr(rj.session, k) for k in ('default_model', 'budget', 'text_rate', 'prices')}))"
    nb = run_cells([
        "%load_ext replicate_jupyter\nimport json, replicate_jupyter as rj",            # 0: text_rate refused
        show,                                                                            # 1
        "%%replicate\ntext: from the config's model",                                    # 2
        "%config ReplicateMagics.budget = 0.5\n" + show,                                  # 3
        "%config ReplicateMagics.budget = float('nan')\n" + show,                         # 4
        ("%replicate budget nan", ["raises-exception"]),                                 # 5
        ("%replicate budget -2", ["raises-exception"]),                                  # 6
        ("%replicate price cpu=nan", ["raises-exception"]),                              # 7
        ("%replicate use nowhere", ["raises-exception"]),                                # 8
        show,                                                                            # 9
        "%%replicate\ntext: after the refusals",                                         # 10
        "%config ReplicateMagics.budget",                                                # 11
    ], env={"IPYTHONDIR": str(tmp_path)}, timeout=60)
    loaded = text_of(nb.cells[0])
    assert "text_rate" in loaded and "-1.0" in loaded and "unchanged: still 10.0" in loaded
    model = "../tests/predictors/echo.py:Predictor"
    assert json.loads(text_of(nb.cells[1])) == {"default_model": model, "budget": 0.25, "text_rate": 10.0,
                                                "prices": {"cpu": 0.001}}
    (card,) = [o for o in nb.cells[2].outputs if o.output_type == "display_data" and MIME in o.data]
    assert card["data"][MIME]["status"] == "succeeded" and card["data"][MIME]["output"] == ">from the config's model"
    after = {"default_model": model, "budget": 0.5, "text_rate": 10.0, "prices": {"cpu": 0.001}}
    assert json.loads(text_of(nb.cells[3]).strip().splitlines()[-1]) == after
    refused = text_of(nb.cells[4])
    assert "budget: finite" in refused and "nan" in refused and "unchanged: still 0.5" in refused
    assert json.loads(refused.strip().splitlines()[-1]) == after
    for i, words in ((5, ("budget: finite", "nan")), (6, ("budget: minimum", "-2.0")),
                     (7, ("prices.cpu: finite", "nan")), (8, ("backend", "nowhere", "local, workers, ray, replicate"))):
        (err,) = [o for o in nb.cells[i].outputs if o.output_type == "error"]
        assert err["ename"] == "InputError" and all(w in err["evalue"] for w in words), (i, err["evalue"])
        assert len(err["traceback"]) == 1  # the message, not a traceback of our internals
    assert json.loads(text_of(nb.cells[9])) == after
    (card,) = [o for o in nb.cells[10].outputs if o.output_type == "display_data" and MIME in o.data]
    assert card["data"][MIME]["status"] == "succeeded"  # a refused nan left the budget guard working
    assert text_of(nb.cells[11]).strip() == "0.5"


# ----- in process: the checks themselves --------------------------------------------------------
BAD = [
    ("budget", math.nan, "finite"), ("budget", math.inf, "finite"), ("budget", 0, "minimum"),
    ("budget", -1, "minimum"), ("budget", "1", "type"),
    ("default_backend", "rpelicate", "backend"), ("default_backend", 3, "type"),
    ("default_model", "", "format"), ("default_model", " acme/x", "format"), ("default_model", "a\nb", "format"),
    ("preview_rate", 0, "minimum"), ("preview_rate", math.nan, "finite"), ("text_rate", -1, "minimum"),
    ("text_rate", math.inf, "finite"), ("text_rate", None, "type"),
    ("prices", {"cpu": -0.1}, "minimum"), ("prices", {"cpu": math.nan}, "finite"), ("prices", {"cpu": "x"}, "type"),
    ("prices", {"": 0.1}, "sku"), ("prices", ["cpu"], "type"),
    ("backend_options", {"nope": {}}, "backend"), ("backend_options", {"local": {"bogus": 1}}, "option"),
    ("backend_options", {"local": 5}, "type"), ("backend_options", {"replicate": {"token": "r8_SECRETx"}}, "option"),
    ("backend_options", {"local": {"max_inflight": 0}}, "option"),
    ("backend_options", {"replicate": {"max_inflight": "many"}}, "option"),
    ("backend_options", {"workers": {"max_inflight": True}}, "option"),
    ("backend_options", {"ray": {"max_inflight": 2.5}}, "option"),
]


@pytest.mark.parametrize("name,value,rule", BAD, ids=[f"{n}={v!r}" for n, v, _ in BAD])
def test_a_bad_value_is_refused_with_its_rule_and_changes_nothing(name, value, rule):
    s = Session()
    s.backend_options = {"local": {"memory_budget": 10}}
    s.prices = {"gpu-t4": 0.3}
    before = {k: json.dumps(getattr(s, k)) for k in SETTINGS}
    local = s.runner("local")
    try:
        with pytest.raises(InputError) as info:
            setattr(s, name, value)
        (problem,) = info.value.problems
        assert problem.field.split(".")[0] == name
        assert problem.rule == rule and problem.allowed
        assert "r8_SECRETx" not in str(info.value)  # options are shown with secrets masked
        assert {k: json.dumps(getattr(s, k)) for k in SETTINGS} == before
        assert s.runner("local") is local  # the runner built from the old options is still the one used
    finally:
        cost.prices.reset()


def test_views_hold_nothing_and_config_applies_setting_by_setting():
    s = Session()
    magics = ReplicateMagics(shell=None, session=s)
    magics.budget = 2.0
    assert s.budget == 2.0 and session.budget is None  # the magics wrote the session they view
    s.default_model = "acme/m"
    assert magics.default_model == "acme/m"
    cfg = Config()
    cfg.ReplicateMagics.budget = math.nan
    cfg.ReplicateMagics.budgt = 1.0
    cfg.ReplicateMagics.text_rate = 3.0
    with pytest.raises(InputError) as info:
        magics.update_config(cfg)  # what %config does
    assert [(p.field, p.rule) for p in info.value.problems] == [("budget", "finite"), ("budgt", "unknown")]
    assert "did you mean 'budget'" in str(info.value)
    assert (s.budget, s.text_rate) == (2.0, 3.0)  # the good setting applied, the refused ones kept their value
    assert Session(config=Config({"ReplicateMagics": {"default_model": "x/y"}})).default_model == "x/y"


def test_backend_chooses_the_default_and_use_still_does_with_a_deprecation_warning():
    try:
        assert rj.backend("replicate") == "replicate" == session.default_backend == rj.backend()  # no name: reads it
        with pytest.warns(DeprecationWarning, match=r"rj\.backend\('local'\)"):
            chosen = rj.use("local")
        assert session.default_backend == "local" == chosen
        with pytest.raises(InputError, match="bogus"):
            rj.backend("workers", bogus=1)
        assert session.default_backend == "local" and "workers" not in session.backend_options
        with pytest.raises(InputError, match="did you mean 'ray'"):
            rj.backend("rya")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            rj.backend("local")  # the new name warns of nothing
    finally:
        session.default_backend = "local"


def test_line_commands_parse_typed_arguments_and_never_echo_a_token():
    for line, words in (("budget abc", ("budget", "'abc'")), ("price cpu", ("SKU=USD_PER_S", "'cpu'")),
                        ("cost --rest", ("--rest",)), ("cancel", ("ID",)), ("workers add", ("URL",)),
                        ("budgt 1", ("did you mean 'budget'?",)), ("schema", ("MODEL",))):
        with pytest.raises(LineError) as info:
            run_line(line)
        assert all(w.lower() in str(info.value).lower() for w in words), (line, str(info.value))
    for secret in ("r8_TOKENabc", "--token=r8_TOKENabc", "-t r8_TOKENabc"):
        with pytest.raises(LineError) as info:
            run_line(f"login {secret}")
        assert "r8_TOKENabc" not in str(info.value) and "paste it at the prompt" in str(info.value)
    try:
        run_line("budget $0.75")
        assert session.budget == 0.75
        with pytest.raises(InputError):
            run_line("price cpu=0.5 gpu-t4=-1")  # all or none: one bad price refuses the line
        assert "cpu" not in session.prices
    finally:
        session.budget = None
        cost.prices.reset()

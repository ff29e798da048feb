"""Secrets never leak (issue 18 item 5): a Secret input's value and the session's tokens are
absent from every output — logs, error, traceback, `to_json`, the saved notebook, webhook bodies,
`p.input`, error messages for misspelled fields, `%replicate use --token=`, and the environments
of the processes the kernel and `serve` start.

Every case runs a real predictor (tests/predictors/secret_leaky.py) on `local`, and on `workers`
against a real `replicate-jupyter serve`, in a real kernel whose notebook is saved and read back.
The secret reaches the kernel through a neutrally named environment variable (a secret-looking
name would be redacted as an environment token, hiding a broken input redaction)."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import cog
import pytest

import replicate_jupyter as rj
from replicate_jupyter.errors import InputError
from replicate_jupyter.model.validation import validate
from replicate_jupyter.prediction.events import Completed, Log, Output
from replicate_jupyter.prediction.prediction import Prediction
from replicate_jupyter.prediction.redact import MASK, Redactor, Secret
from replicate_jupyter.webhooks.body import Builder

ROOT = pathlib.Path(__file__).resolve().parent.parent
LEAKY = ROOT / "tests" / "predictors" / "secret_leaky.py"
S = "sk-live-" + "Zq7" * 12  # what the user passes as api_key
SCHEMA = {"components": {"schemas": {"Input": {"properties": {
    "api_key": {"type": "string", "format": "password", "x-cog-secret": True, "x-order": 0},
    "mode": {"type": "string", "x-order": 1}}}}}}


def _leaks(p: Prediction) -> list[str]:
    """Every place of `p` that still holds S."""
    places = {"logs": p.logs, "error": p.error or "", "traceback": p.traceback or "", "input": repr(p.input),
              "to_json": json.dumps(p.to_json(), default=str), "webhook": Builder(p).build().text,
              "history": repr(list(p._history)), "output": repr(p.output)}
    return [k for k, v in places.items() if S in v]


# ----- the redaction step itself ------------------------------------------------------------------

def test_events_are_redacted_before_they_are_recorded():
    p = Prediction("m", {"api_key": S, "mode": "x"}, schema=SCHEMA)
    assert repr(p.input["api_key"]) == "Secret(**********)" and S not in repr(p.input)
    assert p.secret_input()["api_key"] == S and p.input["api_key"].get_secret_value() == S
    seen = []
    p.subscribe(lambda _p, e: seen.append(e))
    p.emit(Log(text=f"key {S}\n"))
    p.emit(Log(text=S[:9]))  # printed in two writes: whole only in the joined log
    p.emit(Log(text=S[9:] + "\n"))
    p.emit(Output(value=[f"a {S}", {"k": S}]))
    p.emit(Completed(status="failed", error=f"bad {S}", traceback=f"Traceback:\n  ValueError: bad {S}\n"))
    assert _leaks(p) == []
    assert p.logs == f"key {MASK}\n{MASK}\n" and p.error == f"bad {MASK}"
    assert p.output == [f"a {MASK}", {"k": MASK}]
    assert all(S not in repr(e) for e in seen if not (isinstance(e, Log) and e.text.startswith(S[:9])))


def test_short_values_are_not_redacted_and_no_secret_costs_nothing():
    """Under 4 characters a value is not redacted (it would mangle ordinary text)."""
    assert Redactor.of(["abc"], session=False) is None
    assert Redactor(["abcd"]).text("xabcdx") == f"x{MASK}x"
    p = Prediction("m", {"api_key": "abc", "mode": "abc"}, schema=SCHEMA)
    p.emit(Log(text="abc\n"))
    assert p.logs == "abc\n"
    e = Log(text="plain")
    assert Redactor(["zzzz"]).event(e) is e  # nothing matched: the same event, no copy


def test_secret_pickles_by_value_for_ray_and_compares_by_value():
    import pickle

    s = pickle.loads(pickle.dumps(Secret(S)))
    assert s.get_secret_value() == S and s == Secret(S) and s != Secret("other")
    assert S not in str(s) and S not in repr([s])


def _predict(api_key: cog.Secret, mode: str = "x") -> str:
    return ""


def test_cog_receives_a_real_cog_secret():
    from replicate_jupyter.model.arguments import call_arguments
    from replicate_jupyter.runners.invoke import build_kwargs

    predict = _predict
    for kw in (call_arguments(predict, {"api_key": Secret(S)}),
               build_kwargs({"api_key": None, "mode": "x"}, predict, {"api_key": Secret(S)}, frozenset({"api_key"}))):
        assert isinstance(kw["api_key"], cog.Secret) and kw["api_key"].get_secret_value() == S


def test_a_misspelled_secret_field_is_never_echoed():
    with pytest.raises(InputError) as err:
        validate(SCHEMA, {"api_kee": S})
    text = str(err.value) + repr(err.value.problems)
    assert S not in text and "api_kee" in text and "did you mean 'api_key'" in text
    with pytest.raises(InputError) as err:  # not near a secret, but long: by type and size only
        validate(SCHEMA, {"mdoe": S, "api_key": S})
    assert S not in str(err.value) + repr(err.value.problems) and "<str, 44 chars>" in str(err.value)
    with pytest.raises(InputError) as err:  # a secret-looking name, whatever its length
        validate(SCHEMA, {"hf_token": "hf_abcd", "api_key": S})
    assert "hf_abcd" not in str(err.value) + repr(err.value.problems)
    with pytest.raises(InputError) as err:  # a short ordinary value is still shown, to help
        validate(SCHEMA, {"mdoe": "fast", "api_key": S})
    assert "'fast'" in str(err.value)


# ----- in this process, the local backend --------------------------------------------------------

@pytest.mark.parametrize("mode", ["print", "raise", "chain", "output"])
def test_local_run_leaks_nothing(mode):
    p = rj.predictions.create(f"{LEAKY}:Predictor", input={"api_key": S, "mode": mode}, on="local").wait(60)
    assert _leaks(p) == []
    if mode == "print":
        assert p.status == "succeeded" and f"using key {MASK}" in p.logs and f"stderr {MASK}" in p.logs
        assert f"\n{MASK}\n" in p.logs  # the two writes, joined then masked
    elif mode == "output":
        assert p.output == f"echo {MASK}"  # the predictor had the real value (it came back whole)
    else:
        assert p.status == "failed" and MASK in (p.error or "") + (p.traceback or "")


# ----- real kernels: local and workers; the saved notebook ---------------------------------------

@pytest.fixture(scope="module")
def worker():
    from test_workers import Serve

    s = Serve(f"{LEAKY}:Predictor")
    yield s
    s.stop()


def _cells(on: str) -> list:
    model = f"{LEAKY}:Predictor" if on == "local" else "local/secret-leaky"  # the name the worker serves it by
    run = f"%%replicate {model} --on {on}\napi_key: $S\nmode: "
    return [
        "%load_ext replicate_jupyter",
        "import os\nimport replicate_jupyter as rj\nS = os.environ.pop('RJ_PROBE_A')",
        run + "print",
        (run + "raise", ["raises-exception"]),
        (run + "chain", ["raises-exception"]),
        run + "output",
        (f"%%replicate {model} --on {on}\napi_kee: $S", ["raises-exception"]),
        "from replicate_jupyter.webhooks.body import Builder\n"
        "ps = rj.predictions.list()[:4][::-1]\n"
        "print([p.status for p in ps], [repr(p.input) for p in ps])\n"
        "print(*(p.logs + (p.error or '') + (p.traceback or '') + Builder(p).build().text for p in ps))\n"
        "ps[0]",
        ("%replicate use workers --token=$S", ["raises-exception"]),
        ("%replicate use local --api-key $S", ["raises-exception"]),
    ]


@pytest.mark.parametrize("on", ["local", "workers"])
def test_saved_notebook_holds_no_secret(on, run_cells, request):
    from kernel_helpers import nb_json, text_of

    cells = _cells(on)
    if on == "workers":
        cells.insert(1, f"%replicate workers add {request.getfixturevalue('worker').url}")
    nb = run_cells(cells, env={"RJ_PROBE_A": S}, timeout=120)
    saved = nb_json(nb)
    assert S not in saved
    off = 1 if on == "workers" else 0
    texts = [text_of(c) for c in nb.cells]
    assert "printed" in texts[2 + off] and MASK in saved
    assert f"echo {MASK}" in saved  # the predictor got the real value; its output came back masked
    assert "bad key" in texts[3 + off] and "did you mean 'api_key'" in texts[6 + off]
    check = texts[7 + off]
    assert "['succeeded', 'failed', 'failed', 'succeeded']" in check and "Secret(**********)" in check
    assert "--token: a token is never given as an option" in texts[8 + off]
    assert "--api-key: a token is never given" in texts[9 + off]


# ----- tokens: login in memory only, serve's predictor environment --------------------------------

def test_login_token_is_in_memory_only_and_redacted_from_predictions(run_cells):
    from kernel_helpers import nb_json

    token = "r8_" + "Lg9" * 13
    nb = run_cells([
        "%load_ext replicate_jupyter",
        "import getpass, os, subprocess\ngetpass.getpass = lambda prompt='': os.environ.pop('RJ_PROBE_B')\n"
        "%replicate login",
        "child = subprocess.Popen(['sleep', '30'])\n"
        "env = open(f'/proc/{child.pid}/environ', 'rb').read().decode(errors='replace')\n"
        "child.kill()\n"
        "from replicate_jupyter.runners.replicate import token as t\n"
        "T = t.current()\n"
        "print('in-environ', any(T in v for v in os.environ.values()), 'in-child', T in env, len(T))",
        f"%%replicate {ROOT / 'tests' / 'predictors' / 'echo.py'}:Predictor --on local\ntext: $T",
    ], env={"RJ_PROBE_B": token, "REPLICATE_API_TOKEN": ""})
    saved = nb_json(nb)
    assert "in-environ False in-child False 42" in saved
    assert f">{MASK}" in saved  # a model echoing the session's token: masked
    payload = next(o["data"]["application/vnd.replicate.prediction+json"] for o in nb.cells[3].outputs
                   if "application/vnd.replicate.prediction+json" in o.get("data", {}))
    payload.pop("record")  # prediction/record.py's own copy of the input: see the xfail below
    assert token not in json.dumps(payload)
    nb.cells[3].outputs = []
    assert token not in nb_json(nb)


def test_the_record_redacts_a_session_token_given_as_an_ordinary_value():
    from replicate_jupyter.prediction.record import record_of
    from replicate_jupyter.prediction.redact import remember

    token = "r8_" + "Rc4" * 13
    remember(token)
    p = rj.predictions.create(f"{ROOT / 'tests' / 'predictors' / 'echo.py'}:Predictor", input={"text": token},
                              on="local").wait(60)
    assert p.output == f">{MASK}" and token not in json.dumps(p.to_json())
    assert token not in json.dumps(record_of(p), default=str)


def test_serve_hands_the_predictor_no_token(monkeypatch):
    from test_workers import Serve

    monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_" + "Sv1" * 13)
    monkeypatch.setenv("RJ_WORKER_TOKEN", "wk_" + "Sv2" * 13)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-" + "Sv3" * 13)
    s = Serve(f"{LEAKY}:Predictor")
    try:
        procs = [s.server()] + s.server().children(recursive=True)
        assert s.predictor_process() in procs
        for proc in procs:
            environ = pathlib.Path(f"/proc/{proc.pid}/environ").read_bytes().decode(errors="replace")
            assert "Sv1Sv1" not in environ and "Sv2Sv2" not in environ and "Sv3Sv3" not in environ, proc.cmdline()
    finally:
        s.stop()


def test_a_child_of_this_process_never_sees_a_login_token():
    from replicate_jupyter.runners.replicate import token as tokens

    tokens.login("r8_" + "Ch1" * 13)
    try:
        child = subprocess.run([sys.executable, "-c", "import os; print(sorted(os.environ.items()))"],
                               capture_output=True, text=True, check=True, env=None)
        assert "Ch1Ch1" not in child.stdout and "Ch1Ch1" not in repr(dict(os.environ))
    finally:
        tokens.logout()


def test_a_token_put_in_the_environment_after_earlier_runs_is_still_redacted(monkeypatch):
    """The environment's secret-looking values are looked up again whenever it changed (the scan
    is cached between unchanged environments)."""
    from replicate_jupyter import api

    echo = "tests/predictors/echo.py:Predictor"
    first = api.execute(api.prepare(echo, {"text": "warm"}, on="local"))
    assert first.status == "succeeded"
    token = "hf_" + "Q7x" * 12
    monkeypatch.setenv("HF_TOKEN", token)
    p = api.execute(api.prepare(echo, {"text": f"my key is {token}"}, on="local"))
    assert token not in str(p.output) and "**********" in str(p.output)
    monkeypatch.delenv("HF_TOKEN")
    q = api.execute(api.prepare(echo, {"text": f"now {token}"}, on="local"))
    assert token in str(q.output)  # no longer a secret of this session: shown as given

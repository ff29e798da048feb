"""Bad cells are refused, fast, naming the field (or line) and the rule, before anything runs.

Each case is one a hostile test found sent to a model and charged, or hanging the kernel:
YAML tags, duplicate keys, a billion-laughs body, 3,000 levels of nesting, a huge body, an
unclosed `[`, `{fn.__globals__}`, `{x:>30000000}`, `--max-cost nan`. The last test runs them
in a real kernel: an error each, nothing dispatched, nothing charged, the kernel still working.
"""
from __future__ import annotations

import json
import time
import tracemalloc

import pytest
from kernel_helpers import text_of

from replicate_jupyter.errors import InputError
from replicate_jupyter.notebook.cellparse import LineError, limits, parse_body, parse_line, parse_options, parse_usd

BOMB = "a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]\n" + "".join(
    f"{c}: &{c} [{','.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")) + "prompt: *i"


def _fn() -> None:
    pass


NS = {"fn": _fn, "x": "a", "d": {"k": "v"}, "big": "y" * (limits.MAX_FILLED_CHARS + 1)}

BODIES = [  # (body, field, rule)
    ("prompt: !!python/object:os.system ls", "(cell body) line 1", "tag"),
    ("!!python/object/apply:os.system [ls]", "(cell body) line 1", "tag"),
    ("prompt: !!str 5", "(cell body) line 1", "tag"),
    ("steps: 2\nprompt: !custom {a: 1}", "(cell body) line 2", "tag"),
    ("prompt: a\nsteps: 2\nprompt: b", "prompt", "duplicate key"),
    ("\n\nprompt: a\nparams:\n  n: 1\n  n: 2", "n", "duplicate key"),
    (BOMB, "(cell body) line 6", "size"),
    ("p: &a [x]\n" + "\n".join(f"q{i}: *a" for i in range(limits.MAX_ALIASES + 1)), f"(cell body) line {limits.MAX_ALIASES + 2}",
     "aliases"),
    ("prompt: &a [*a]", "(cell body) line 1", "alias"),
    ("x: " + "[" * 3000 + "]" * 3000, "(cell body) line 1", "depth"),
    ("[" * 3000 + "]" * 3000, "(cell body) line 1", "depth"),
    ("x: " + "{a: " * 3000 + "1" + "}" * 3000, "(cell body) line 1", "depth"),
    ("- " * 3000 + "x", "(cell body) line 1", "depth"),
    ("".join("  " * i + f"k{i}:\n" for i in range(200)), f"(cell body) line {limits.MAX_DEPTH + 1}", "depth"),
    ("y" * (limits.MAX_BODY_CHARS + 1), "(cell body)", "size"),
    ("prompt: " + "y" * limits.MAX_BODY_CHARS, "(cell body)", "size"),
    ("prompt: [a red circle, a blue square", "(cell body) line 1", "yaml"),
    ("[a red circle", "(cell body) line 1", "yaml"),
    ("steps: 3\nparams: {n: 1", "(cell body) line 2", "yaml"),
    ("prompt: a red circle\nguidance: 7: 5", "(cell body) line 2", "yaml"),
    ("prompt: a\n steps: 2", "(cell body) line 2", "yaml"),
    ("prompt: {fn.__globals__}", "prompt", "private attribute"),
    ("{fn.__globals__}", "prompt", "private attribute"),  # prose is filled by the same rules
    ("prompt: {x.__class__.__mro__}", "prompt", "private attribute"),
    ("prompt: {d._private}", "prompt", "private attribute"),
    ("prompt: {__builtins__}", "prompt", "private attribute"),
    ("image: $fn.__globals__", "image", "private attribute"),
    ("prompt: {fn()}", "prompt", "call"),
    ("prompt: {x.upper()}", "prompt", "call"),
    ("prompt: {x:>30000000}", "prompt", "format width"),
    ("prompt: {x:.5000}", "prompt", "format width"),
    ("prompt: {x:%30000000d}", "prompt", "format width"),
    ("prompt: {x!z}", "prompt", "conversion"),
    ("prompt: {x:d}", "prompt", "format"),
    ("prompt: {big}", "prompt", "size"),
    ("prompt: " + "{x:>1000}" * (limits.MAX_FILLED_CHARS // 1000 + 1), "prompt", "size"),
]


@pytest.mark.parametrize("body, field, rule", BODIES, ids=[f"{r}-{i}" for i, (_, _, r) in enumerate(BODIES)])
def test_bad_bodies_are_refused_naming_field_and_rule(body, field, rule):
    tracemalloc.start()
    t = time.perf_counter()
    try:
        with pytest.raises(InputError) as info:
            parse_body(body, NS, "prompt", model="local/shapes")
        elapsed = time.perf_counter() - t
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [(p.field, p.rule) for p in info.value.problems] == [(field, rule)]
    assert f"{field}: {rule}" in str(info.value)
    assert len(str(info.value)) < 400  # never the body (or a filled megabyte) echoed back
    assert elapsed < 1.0
    assert peak < 3 * len(body) + 20_000_000  # a bomb builds nothing it would expand into


def test_a_body_meant_as_text_is_still_the_prompt():
    for text in ("Here is a plan; step two is unclear", "*sigh* [not yaml", "A cat: in a hat: again",
                 "[INST] a haiku [/INST]", "! hello", "!important: read this", "{a: 1} and more"):
        assert parse_body(text, NS, "prompt") == {"prompt": text}


LINES = [  # (line, field, rule)
    ("m --max-cost nan", "--max-cost", "finite"),
    ("m --max-cost inf", "--max-cost", "finite"),
    ("m --max-cost=-inf", "--max-cost", "finite"),
    ("m --max-cost -0.5", "--max-cost", "minimum"),
    ("m --max-cost 0", "--max-cost", "minimum"),
    ("m --max-cost abc", "--max-cost", "number"),
    ("m --seed x", "--seed", "integer"),
    ("m --seed 1.5", "--seed", "integer"),
    ("m --seed -1", "--seed", "range"),
    ("m --seed 99999999999999999999", "--seed", "range"),
    ("m -o 1x", "-o/--out", "identifier"),
    ("m -o class", "-o/--out", "identifier"),
    ("m --on nowhere", "--on", "choices"),
    ("m --on", "--on", "missing value"),
    ("m --sweep seed", "--sweep", "format"),
    ("m --sweep =1,2", "--sweep", "format"),
    ("m --sweep 'a b=1,2'", "--sweep", "format"),
    ("m --sweep seed=1,,2", "--sweep", "empty value"),
    ("m --sweep seed=1, --seed 2", "--sweep", "empty value"),
    ("m --sweep seed=1 --sweep seed=2", "--sweep", "repeated"),
    ("m --sweep a=" + ",".join(map(str, range(200))) + " --sweep b=" + ",".join(map(str, range(60))),
     "--sweep", "grid size"),
    ("m --bogus", "--bogus", "unknown option"),
    ("m --s 3", "--s", "ambiguous option"),
    ("m extra", "extra", "extra argument"),
    ("m 'unclosed", "(option line)", "quoting"),
]


@pytest.mark.parametrize("line, field, rule", LINES, ids=[f"{r}-{i}" for i, (_, _, r) in enumerate(LINES)])
def test_bad_option_lines_are_refused_naming_option_and_rule(line, field, rule):
    t = time.perf_counter()
    with pytest.raises(LineError) as info:
        parse_line(line)
    assert time.perf_counter() - t < 1.0
    assert [(p.field, p.rule) for p in info.value.problems] == [(field, rule)]
    assert str(info.value).startswith(f"{field}: {rule}")


def test_every_bad_option_is_named_at_once():
    with pytest.raises(LineError) as info:
        parse_line("m --seed x --max-cost nan -o 1x --on nowhere")
    assert [(p.field, p.rule) for p in info.value.problems] == [
        ("--seed", "integer"), ("--max-cost", "finite"), ("-o/--out", "identifier"), ("--on", "choices")]


@pytest.mark.parametrize("text, rule", [("nan", "finite"), ("inf", "finite"), ("-inf", "finite"), ("$nan", "finite"),
                                        ("0", "minimum"), ("-1", "minimum"), ("abc", "number"), ("", "number")])
def test_money_settings_refuse_what_would_switch_a_guard_off(text, rule):
    with pytest.raises(LineError) as info:
        parse_usd(text, "budget")
    assert [(p.field, p.rule) for p in info.value.problems] == [("budget", rule)]


def test_line_magic_options_are_checked_and_never_echo_values():
    for words, field, rule in ((["--num-gpus", ".nan"], "--num-gpus", "finite"),
                               (["--x", "1", "--x", "2"], "--x", "repeated"),
                               (["r8_secret_token_value"], "word 1", "option"),
                               (["--bad name"], "word 1", "option")):
        with pytest.raises(LineError) as info:
            parse_options(words)
        assert [(p.field, p.rule) for p in info.value.problems] == [(field, rule)]
        assert "r8_secret" not in str(info.value)


def test_refused_cells_run_nothing_charge_nothing_in_a_real_kernel(run_cells):
    bad = [
        "%%replicate local/shapes\nprompt: !!python/object:os.system ls",
        "%%replicate local/shapes --max-cost nan\nprompt: a red circle on a blue background",
        "%%replicate local/shapes\n" + BOMB,
        "%%replicate local/shapes\nprompt: [a red circle, a blue square",
        "%%replicate local/shapes\nprompt: a {fn.__globals__}",
        "%%replicate local/shapes\nprompt: {x:>30000000}",
        "%%replicate local/shapes --seed -1\nprompt: a red circle on a blue background",
    ]
    check = "print(json.dumps([len(rj.predictions.list()), len(rj.ledger()), rj.ledger().total()]))"
    nb = run_cells(
        ["%load_ext replicate_jupyter\nimport json, replicate_jupyter as rj\ndef fn(): pass\nx = 'a'"]
        + [(c, ["raises-exception"]) for c in bad]
        + [check, "%%replicate ../tests/predictors/echo.py:Predictor\nstill {x} working", check],
        timeout=180)
    expected = [("InputError", "(cell body) line 1: tag"), ("UsageError", "--max-cost: finite"),
                ("InputError", "(cell body) line 6: size"), ("InputError", "(cell body) line 1: yaml"),
                ("InputError", "prompt: private attribute"), ("InputError", "prompt: format width"),
                ("UsageError", "--seed: range")]
    for cell, (ename, words) in zip(nb.cells[1:], expected):
        (out,) = cell.outputs  # one error (UsageError: IPython's stderr line), no card: nothing started
        shown = text_of(cell)
        assert shown.startswith(f"{ename}: ") and words in shown, (cell.source[:40], shown)
        assert "replicate_jupyter/" not in json.dumps(out)  # a message, not a traceback of our internals
    n = len(bad) + 1
    assert json.loads(text_of(nb.cells[n]).strip().splitlines()[-1]) == [0, 0, 0]  # nothing ran or was charged
    assert "still a working" in text_of(nb.cells[n + 1])  # the kernel goes on
    assert json.loads(text_of(nb.cells[n + 2]).strip().splitlines()[-1])[:2] == [1, 1]

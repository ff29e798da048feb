"""The cell language as a user writes it: the option line, YAML bodies, prose, templates.

What the parser must refuse is in test_cell_input.py; this file holds what it must accept,
and that it reads it as argparse, YAML and `str.format` would.
"""
from __future__ import annotations

import datetime
import random

import pytest
import yaml

from replicate_jupyter.errors import InputError
from replicate_jupyter.notebook.cellparse import (
    CellArgs,
    LineError,
    parse_body,
    parse_line,
    parse_options,
    parse_sweep,
    parse_usd,
    safe_yaml,
    sweep_grid,
    yaml_scalar,
)


# ----- option line ------------------------------------------------------------------------------
@pytest.mark.parametrize("line, expected", [
    ("", CellArgs()),
    ("local/shapes", CellArgs(model="local/shapes")),
    ("local/shapes --seed 3 -o pic", CellArgs(model="local/shapes", seed=3, out="pic")),
    ("--on workers local/tiny-lm", CellArgs(model="local/tiny-lm", on="workers")),
    ("m --async --max-cost 0.5", CellArgs(model="m", run_async=True, max_cost=0.5)),
    ("--seed 3", CellArgs(seed=3)),
    ("m --out=pic", CellArgs(model="m", out="pic")),
    ("m -opic", CellArgs(model="m", out="pic")),
    ("m --se 3", CellArgs(model="m", seed=3)),  # an unambiguous prefix, as argparse allows
    ("m -o a -o b --seed 1 --seed 2", CellArgs(model="m", out="b", seed=2)),  # the last one wins
    ("'my model' --seed 4294967295", CellArgs(model="my model", seed=2**32 - 1)),
    ("m --max-cost 1e-3", CellArgs(model="m", max_cost=0.001)),
    ('m --sweep "prompt=a b,c d" --sweep seed=1,2',
     CellArgs(model="m", sweep=[("prompt", ["a b", "c d"]), ("seed", [1, 2])])),
])
def test_option_line(line, expected):
    assert parse_line(line) == expected


def test_sweep_values_are_typed_like_yaml_and_the_grid_is_row_major():
    assert parse_sweep("x=1, 0.5 ,true,red,007") == ("x", [1, 0.5, True, "red", 7])
    grid = sweep_grid(parse_line("m --sweep a=1,2 --sweep b=x,y").sweep)
    assert grid == [{"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 2, "b": "x"}, {"a": 2, "b": "y"}]
    assert sweep_grid([]) == [{}]


def test_yaml_scalar_keeps_text_it_cannot_type():
    assert [yaml_scalar(v) for v in ("7", "0.5", "true", "x", "", "[1, 2]", "!!str 5", "a: b")] == [
        7, 0.5, True, "x", "", "[1, 2]", "!!str 5", "a: b"]


def test_line_magic_options():
    assert parse_options(["--address", "ray://h:10001", "--num-gpus", "1", "--verbose", "--x=2"]) == {
        "address": "ray://h:10001", "num_gpus": 1, "verbose": True, "x": 2}
    assert parse_options([]) == {}


def test_money_values():
    assert [parse_usd(t) for t in ("0.5", "$0.5", "1e-3", " 2 ")] == [0.5, 0.5, 0.001, 2.0]


def test_line_errors_are_input_errors_and_value_errors():
    with pytest.raises(LineError) as info:
        parse_line("m --seed x")
    assert isinstance(info.value, InputError) and isinstance(info.value, ValueError)
    assert str(info.value).startswith("--seed: integer")


# ----- body: YAML ----------------------------------------------------------------------------
def test_mapping_body_types_like_yaml():
    body = ("prompt: a red circle, watercolor\nsteps: 20\nguidance: 7.5\nfast: yes\nnote: ~\n"
            "day: 2024-01-02\nsizes: [1, 2]\nparams: {steps: 5, mode: fast}\ntext: |\n  two\n  lines\n")
    assert parse_body(body, {}, "prompt") == {
        "prompt": "a red circle, watercolor", "steps": 20, "guidance": 7.5, "fast": True, "note": None,
        "day": datetime.date(2024, 1, 2), "sizes": [1, 2], "params": {"steps": 5, "mode": "fast"},
        "text": "two\nlines"}  # the body's trailing newline is not part of it


def test_comments_and_blank_bodies():
    assert parse_body("# the inputs\n\nprompt: go  # a comment\n", {}, "prompt") == {"prompt": "go"}
    assert parse_body("", {}, "prompt") == {} == parse_body("\n# only a comment\n", {}, "prompt")


def test_anchors_and_merges_read_as_yaml_reads_them():
    body = "base: &b {steps: 1, n: 3}\nrun:\n  <<: *b\n  n: 2\nagain: *b"
    got = parse_body(body, {}, "prompt")
    assert got == yaml.safe_load(body) == {"base": {"steps": 1, "n": 3}, "run": {"n": 2, "steps": 1},
                                           "again": {"steps": 1, "n": 3}}


KEYS = ["prompt", "n", "on", "yes", "null", "True", "_x"]
VALUES = [
    "go", "don't stop", 'say "hi" twice', "über café", "0", "7", "+5", "-3", "007", "0x1F", "1_000", "1e5",
    "1.5e3", "0.5", "-1.0", "2024-01-02", "2001-12-14t21:59:43.10-05:00", "12:30", "yes", "No", "off", "null",
    "~", ".inf", ".nan", "nan", "a # c", "a: b", "[1, 2]", "{a: 1}", "&x 5", "*alias", "|", "- item", "'q'",
    "%x", "@x", "tab\there", "50%", "[1, [2, {a: b}]]", "{a: [1, 2], b: {c: d}}",
]


def _both(text: str):
    try:
        expected = ("ok", repr(yaml.load(text, Loader=yaml.CSafeLoader)))
    except Exception:  # noqa: BLE001 - PyYAML's own errors are not all YAMLError
        expected = ("error",)
    try:
        got = ("ok", repr(safe_yaml.load(text)))
    except safe_yaml.Refused as r:
        if r.rule in ("tag", "duplicate key"):
            return None  # what the strict loader refuses on purpose
        got = ("error",)
    return expected, got


@pytest.mark.parametrize("key", KEYS)
def test_strict_loader_reads_what_yaml_reads(key):
    for value in VALUES:
        pair = _both(f"{key}: {value}\nother: 1")
        assert pair is None or pair[0] == pair[1], (key, value, pair)


def test_strict_loader_on_random_text_agrees_with_yaml():
    rng = random.Random(1234)
    common, special = "ab Z09_.,'$é-+ ", ":#\"!?&*%=;~@`|>[]{}\t/()\n"
    checked = 0
    for _ in range(3000):
        text = "".join(rng.choice(special if rng.random() < 0.15 else common) for _ in range(rng.randint(1, 25)))
        pair = _both(text)
        if pair is not None and "=" not in text and "<<" not in text:  # `=`/`<<` alone: text here, errors there
            checked += 1
            assert pair[0] == pair[1], (text, pair)
    assert checked > 2500


# ----- body: prose and templates --------------------------------------------------------------
@pytest.mark.parametrize("body", [
    "a red circle on a blue background", "A cat: in a hat", "- item one\n- item two", "*sigh* fine then",
    "Title\n---\nText", "50% off: today only", "hello #1 fan",
])
def test_text_that_is_not_an_input_mapping_is_the_prompt(body):
    assert parse_body(body, {}, "prompt") == {"prompt": body}


def test_templates_fill_plain_names_attributes_and_keys():
    class Style:
        name = "ink"
        weight = 0.25

    ns = {"style": Style(), "d": {"k": "v", 0: "zero"}, "xs": [1, 2], "n": 7, "w": "hi"}
    got = parse_body("prompt: {style.name} {d[k]} {d[0]} {xs[1]} {n:03d} {style.weight:.1%} {w!r} {w:>4}",
                     ns, "prompt")
    assert got == {"prompt": "ink v zero 2 007 25.0% 'hi'   hi"}
    assert parse_body("hello {w}", ns, "prompt") == {"prompt": "hello hi"}  # prose fills too
    assert parse_body("on {day:%Y-%m-%d}", {"day": datetime.date(2024, 5, 6)}, "prompt") == {"prompt": "on 2024-05-06"}


def test_literal_braces_and_dollars():
    ns = {"style": "a {{b}}", "img": object()}
    got = parse_body("prompt: {style} and {{literal}}\nimage: $img\nnote: $$img\nparams: {steps: 5}\n"
                     "text: a {red car}", ns, "prompt")
    # the cell's `{{` is a brace; a variable's `{{` is what the variable holds
    assert got == {"prompt": "a {{b}} and {literal}", "image": ns["img"], "note": "$img", "params": {"steps": 5},
                   "text": "a {red car}"}
    assert parse_body("{{literal}} first", {}, "prompt") == {"prompt": "{literal} first"}


def test_whole_body_reference_and_lazy_text_field():
    img = object()
    assert parse_body("$img", {"img": img}, "image")["image"] is img
    asked = []
    assert parse_body("steps: 3", {}, lambda: asked.append(1) or "prompt") == {"steps": 3}
    assert asked == []  # a mapping never needs the schema
    assert parse_body("hello", {}, lambda: asked.append(1) or "prompt") == {"prompt": "hello"} and asked == [1]


def test_missing_names_and_no_text_input_name_the_field():
    with pytest.raises(InputError) as info:
        parse_body("color: {nowhere}\nimage: $gone", {}, "prompt")
    (p,) = info.value.problems  # the first one met: filling stops there
    assert (p.field, p.rule) == ("color", "interpolation")
    with pytest.raises(InputError) as info:
        parse_body("just words", {}, None, model="m")
    assert [(p.field, p.rule) for p in info.value.problems] == [("(cell body)", "type")]

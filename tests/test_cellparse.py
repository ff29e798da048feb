"""The cell language's quick paths read exactly what YAML and argparse read.

`%%replicate` parses its option line and body on every run, so the common shapes take a
short path (`_quick_parse`, `_simple_mapping`); these tests hold those paths to the full
parsers, value by value and type by type, including on random text.
"""
from __future__ import annotations

import random

import pytest
import yaml

from replicate_jupyter.notebook import cellparse
from replicate_jupyter.notebook.cellparse import LineError, parse_body, parse_line

VALUES = [
    "go", "a lighthouse at dusk, oil painting", "don't stop", 'say "hi" twice', "über café", "x-ray", "a/b (c)",
    "0", "7", "+5", "-3", "2000", "007", "0x1F", "1_000", "1e5", "1.5e3", "0.5", "+0.25", "-1.0", "01.5",
    "2024-01-02", "12:30", "yes", "No", "TRUE", "off", "On", "null", "~", "Null", "y", "n", ".inf", ".nan",
    "nan", "inf", "$img", "$img.size", "$$literal", "a # not a comment?", "a #comment", "a: b", "[1, 2]",
    "{a: 1}", "&anchor", "*alias", "!tag x", "|", ">", "- item", "'quoted'", '"quoted"', "%x", "@x", "`x`",
    "ends with space   ", "tab\there", "a  b", "hello world!", "what?", "50%", "a=b; c~d", "a & b * c",
]
KEYS = ["prompt", "n", "seed", "on", "yes", "null", "True", "_x", "x1", "y"]


def yaml_read(text: str):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return "<yaml error>"


def same(a, b) -> bool:
    return a == b and type(a) is type(b) and all(type(a[k]) is type(b[k]) for k in a)


@pytest.mark.parametrize("value", VALUES)
@pytest.mark.parametrize("key", KEYS)
def test_simple_mapping_reads_what_yaml_reads(key, value):
    body = f"{key}: {value}\nother: 1"
    quick = cellparse._simple_mapping(body)
    if quick is not None:
        assert same(quick, yaml_read(body)), (body, quick, yaml_read(body))


def test_simple_mapping_takes_the_common_bodies():
    assert cellparse._simple_mapping("prompt: a red circle, watercolor\nsteps: 20\nguidance: 7.5") == {
        "prompt": "a red circle, watercolor", "steps": 20, "guidance": 7.5}
    # comments and blank lines are skipped as YAML skips them
    assert cellparse._simple_mapping("# the inputs\n\nprompt: go\n") == {"prompt": "go"}
    for body in ("prompt: |\n  two\n  lines", "a: [1, 2]", "on: 3", "n: 1\nn: 2", "seed: -1", "x: yes"):
        assert cellparse._simple_mapping(body) is None, body  # YAML decides these


def test_simple_mapping_on_random_text_never_disagrees_with_yaml():
    rng = random.Random(1234)
    common = "ab Z09_.,'$é\u2063-+ "  # mostly what prompts and numbers are made of…
    special = ":#\"!?&*%=;~@`|>[]{}\t/()"  # …with YAML's special characters mixed in
    checked = 0
    for _ in range(10000):
        lines = []
        for _ in range(rng.randint(1, 3)):
            key = rng.choice(KEYS + ["k" + str(rng.randint(0, 3))])
            value = "".join(rng.choice(special if rng.random() < 0.05 else common)
                            for _ in range(rng.randint(1, 12)))
            lines.append(f"{key}:{rng.choice([' ', '  ', ''])}{value}")
        body = "\n".join(lines)
        quick = cellparse._simple_mapping(body)
        if quick is not None:
            checked += 1
            assert same(quick, yaml_read(body)), (body, quick, yaml_read(body))
    assert checked > 400  # the quick path was really exercised


def test_body_values_keep_interpolation_and_references():
    ns = {"style": "ink", "img": object()}
    got = parse_body("prompt: a cat, {style}\nimage: $img\nnote: $$img\nn: 3", ns, "prompt")
    assert got == {"prompt": "a cat, ink", "image": ns["img"], "note": "$img", "n": 3}


LINES = [
    "", "local/shapes", "local/shapes --seed 3 -o pic", "--on workers local/tiny-lm", "m --async --max-cost 0.5",
    "m --sweep seed=1,2 --sweep prompt=a,b", "m -o a -o b", "m --seed 1 --seed 2", "--seed 3",
    "m --out=pic", "m --se 3", "m -opic", "m --seed -1", "m --seed x", "m --max-cost abc", "m extra",
    "m --bogus", "m --on", "m -o 1x", "'my model' --seed 2", 'm --sweep "prompt=a b,c d"', "m --sweep",
]


def full(line: str):
    import shlex

    try:
        ns = cellparse._PARSER.parse_args(shlex.split(line))
    except LineError as exc:
        return ("error", str(exc))
    return vars(ns)


@pytest.mark.parametrize("line", LINES)
def test_option_line_reads_what_argparse_reads(line):
    import shlex

    expected = full(line)
    quick = cellparse._quick_parse(shlex.split(line))
    if quick is not None:
        assert vars(quick) == expected
    try:
        got = parse_line(line)
    except LineError as exc:
        assert isinstance(expected, tuple) or "-o/--out" in str(exc)
        return
    assert not isinstance(expected, tuple), expected
    assert (got.model, got.on, got.run_async, got.seed, got.max_cost, got.out) == (
        expected["model"], expected["on"], expected["run_async"], expected["seed"], expected["max_cost"],
        expected["out"])
    assert [k for k, _ in got.sweep] == [s.partition("=")[0] for s in expected["sweep"]]


def test_bad_option_lines_say_what_is_wrong():
    with pytest.raises(LineError, match="invalid int value"):
        parse_line("m --seed x")
    with pytest.raises(LineError, match="unrecognized arguments"):
        parse_line("m --bogus")
    with pytest.raises(LineError, match="-o/--out needs a Python name"):
        parse_line("m -o 1x")

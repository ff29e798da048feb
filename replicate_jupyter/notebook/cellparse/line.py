"""The option line of `%%replicate` (and the `--opt value` words of `%replicate use`).

argparse reads the structure (options, abbreviations, `--opt=value`, repeats) from the
`shlex`-split line; every value is then checked by the rule of its option, and all broken
rules are reported at once as one `LineError`, before the model is even looked up:

    --seed N           an integer in limits.SEED_RANGE
    --max-cost USD     a finite number > 0 (`nan` and `inf` would switch the guard off)
    -o/--out NAME      a Python name that is not a keyword
    --on BACKEND       one of the backends (runners.BACKENDS)
    --sweep K=V1,V2    K an input name, no empty value, each K once, the grid ≤ limits.MAX_SWEEP
"""
from __future__ import annotations

import argparse
import functools
import itertools
import keyword
import math
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from replicate_jupyter.errors import InputError, Problem, looks_secret
from replicate_jupyter.notebook.cellparse import limits, safe_yaml
from replicate_jupyter.prediction.redact import Secret, remember

__all__ = ["CellArgs", "LineError", "parse_line", "model_axis", "parse_sweep", "sweep_grid", "parse_options", "secret_option",
           "parse_usd",
           "yaml_scalar"]


class LineError(InputError):
    """The option line is malformed or an option breaks its rule; nothing ran. An InputError
    (one `except` catches every bad cell), and so still the ValueError it always was."""

    def __init__(self, problems: list[Problem] | str, model: str | None = None) -> None:
        if isinstance(problems, str):
            problems = [Problem("(option line)", "syntax", None, "", message=problems)]
        super().__init__(problems, model=model)
        self.args = ("\n".join(str(p) for p in self.problems),)  # the line's own words, no "Invalid input" header


@dataclass
class CellArgs:
    """What the option line asks for; `None` means "the session's setting"."""

    model: str | None = None
    on: str | None = None
    run_async: bool = False
    seed: int | None = None
    max_cost: float | None = None
    out: str | None = None
    sweep: list[tuple[str, list[Any]]] = field(default_factory=list)


_FLAGS = ("--on", "--async", "--seed", "--max-cost", "-o/--out", "--sweep")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print and sys.exit(): raise, naming the option
        raise LineError([_argparse_problem(message)])


def _argparse_problem(message: str) -> Problem:
    """argparse's one-line complaint as a Problem on the option it names."""
    m = re.match(r"argument ([^:]+): (.*)", message)
    if m:
        rule = "missing value" if "expected one argument" in m.group(2) else "syntax"
        return Problem(m.group(1), rule, None, "", message=f"{rule} ({m.group(2)})")
    m = re.match(r"(unrecognized arguments|ambiguous option): (\S+)", message)
    if m and m.group(2).startswith("-"):
        import difflib

        word = m.group(2).partition("=")[0]
        names = [n for f in _FLAGS for n in f.split("/")]
        close = difflib.get_close_matches(word, names, n=1, cutoff=0.75)
        rule = "unknown option" if m.group(1).startswith("unrecognized") else "ambiguous option"
        hint = f"; did you mean {close[0]}?" if close and rule == "unknown option" else ""
        return Problem(word, rule, None, "", message=f"{rule} (the options are {', '.join(_FLAGS)}){hint}")
    if m:
        return Problem(m.group(2), "extra argument", None, "", message="extra argument (one MODEL, then options)")
    return Problem("(option line)", "syntax", None, "", message=message)


def _cell_parser() -> _Parser:
    p = _Parser(prog="%%replicate", add_help=False)
    p.add_argument("model", nargs="?", default=None)
    p.add_argument("--async", dest="run_async", action="store_true")
    for flags, dest in ((("--on",), "on"), (("--seed",), "seed"), (("--max-cost",), "max_cost"),
                        (("-o", "--out"), "out")):
        p.add_argument(*flags, dest=dest, default=None)  # kept as text: checked after, each by its rule
    p.add_argument("--sweep", dest="sweep", action="append", default=[])
    return p


_PARSER = _cell_parser()


def _seed(text: str, problems: list[Problem]) -> int | None:
    lo, hi = limits.SEED_RANGE
    try:
        value: int | None = int(text)
    except ValueError:
        value = None
    if value is None or not lo <= value <= hi:
        problems.append(Problem("--seed", "integer" if value is None else "range", text, f"an integer {lo} … {hi}"))
        return None
    return value


def _usd(text: str, problems: list[Problem], field: str = "--max-cost") -> float | None:
    try:
        value: float | None = float(text.removeprefix("$"))
    except ValueError:
        value = None
    rule = ("number" if value is None else "finite" if not math.isfinite(value)
            else "minimum" if value <= 0 else "")
    if rule:
        problems.append(Problem(field, rule, text, "a finite number of USD > 0 (not nan or inf)"))
        return None
    return value


def parse_usd(text: str, field: str = "USD") -> float:
    """`0.5` or `$0.5` → 0.5 for a money setting (`%replicate budget`, a price); LineError
    naming `field` for anything that is not a finite number > 0: a `nan` budget would switch
    every guard off."""
    problems: list[Problem] = []
    value = _usd(text, problems, field)
    if value is None:
        raise LineError(problems)
    return value


@functools.lru_cache(maxsize=256)
def _read(line: str) -> argparse.Namespace:
    """The line split by `shlex` and read by argparse: the costly step of a cell's option line
    (~0.15 ms in a running kernel), memoised per line, since it is a pure function of the text
    and a cell run again is the same text. Every rule is checked after it, on each call (the
    rules read `limits`). Callers read the namespace, never change it."""
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise LineError([Problem("(option line)", "quoting", line, f"shell quoting ({exc})")]) from None
    ns = _PARSER.parse_args(words)
    ns.sweep = tuple(ns.sweep)
    return ns


def parse_line(line: str) -> CellArgs:
    """`MODEL [options]` → CellArgs. Raises LineError naming each bad option and its rule."""
    ns = _read(line or "")
    problems: list[Problem] = []
    args = CellArgs(model=ns.model, on=ns.on, run_async=ns.run_async, out=ns.out,
                    seed=None if ns.seed is None else _seed(ns.seed, problems),
                    max_cost=None if ns.max_cost is None else _usd(ns.max_cost, problems))
    if ns.out is not None and not (ns.out.isidentifier() and not keyword.iskeyword(ns.out)):
        problems.append(Problem("-o/--out", "identifier", ns.out, "a Python name (not a keyword)"))
    if ns.on is not None:
        from replicate_jupyter.runners import BACKENDS

        if ns.on not in BACKENDS:
            problems.append(Problem("--on", "choices", ns.on, "one of: " + ", ".join(BACKENDS)))
    for spec in ns.sweep:
        try:
            key, values = parse_sweep(spec)
        except LineError as exc:
            problems += exc.problems
            continue
        if any(k == key for k, _ in args.sweep):
            problems.append(Problem("--sweep", "repeated", key, "each KEY in one --sweep (all its values there)"))
        args.sweep.append((key, values))
    size = math.prod(len(v) for _, v in args.sweep)
    if size > limits.MAX_SWEEP:
        problems.append(Problem("--sweep", "grid size", size, f"at most {limits.MAX_SWEEP:,} combinations"))
    if problems:
        raise LineError(problems)
    return args


def yaml_scalar(text: str) -> Any:
    """`7` → 7, `0.5` → 0.5, `true` → True, anything else stays the string given."""
    try:
        value = safe_yaml.load(text)
    except safe_yaml.Refused:
        return text
    return value if isinstance(value, (int, float, bool, str)) else text


def parse_sweep(spec: str) -> tuple[str, list[Any]]:
    """`KEY=V1,V2,...` → (key, [values]) with YAML-typed values (`seed=1,2` gives ints)."""
    key, sep, values = spec.partition("=")
    key = key.strip()
    items = [v.strip() for v in values.split(",")]
    if not sep or not key.isidentifier() or not values.strip():
        raise LineError([Problem("--sweep", "format", spec, "KEY=V1,V2,... with KEY an input name")])
    if not all(items):
        raise LineError([Problem("--sweep", "empty value", spec, "a value between every two commas")])
    return key, [yaml_scalar(v) for v in items]


def sweep_grid(sweep: list[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
    """Every combination of the sweep values, in row-major order (the last key varies fastest)."""
    if not sweep:
        return [{}]
    keys = [k for k, _ in sweep]
    return [dict(zip(keys, combo)) for combo in itertools.product(*(v for _, v in sweep))]


def model_axis(value: Any, on: str | None) -> tuple[str | None, str | None]:
    """A `--sweep model=` value: `MODEL`, or `BACKEND:MODEL` to run that one on BACKEND."""
    if value is None:
        return None, on
    from replicate_jupyter.runners import BACKENDS

    text = str(value)
    head, sep, tail = text.partition(":")
    if sep and head in BACKENDS and tail:
        return tail, head
    return text, on


def secret_option(name: str) -> bool:
    """An option whose value is a credential: its name looks secret (errors.looks_secret) and
    does not merely name one (`*_env`, `*_file`, `*_path`: where the token is kept)."""
    return looks_secret(name) and not name.lower().endswith(("_env", "_file", "_path", "_var"))


def parse_options(words: list[str]) -> dict[str, Any]:
    """`--address ray://h:10001 --num-gpus 1` → {"address": "ray://h:10001", "num_gpus": 1};
    a flag with no value is True. Raises LineError for a word that is not `--name`, a repeated
    option or a non-finite number; values are never echoed there (they may be tokens). The value
    of a secret-looking option (`--token`, `--api-key`; not `--token-env`, which names where one
    is) comes back as a masked `Secret` and is redacted from every later prediction's output."""
    out: dict[str, Any] = {}
    problems: list[Problem] = []
    i = 0
    while i < len(words):
        w = words[i]
        i += 1
        key, eq, val = w[2:].partition("=")
        name = key.replace("-", "_")
        if not w.startswith("--") or not name.isidentifier():
            problems.append(Problem(f"word {i}", "option", None, "", message="option (expected --name [value])"))
            continue
        if not eq and i < len(words) and not words[i].startswith("--"):
            val, eq, i = words[i], "=", i + 1
        value = yaml_scalar(val) if eq else True
        if eq and secret_option(name):  # a token typed on the line: masked from here on, and redacted
            remember(val)
            value = Secret(val)
        if name in out:
            problems.append(Problem(f"--{key}", "repeated", None, "", message="repeated (give each option once)"))
        elif isinstance(value, float) and not math.isfinite(value):
            problems.append(Problem(f"--{key}", "finite", value, "a finite number"))
        out[name] = value
    if problems:
        raise LineError(problems)
    return out

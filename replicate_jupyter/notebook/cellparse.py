"""Turn a `%%replicate` cell (its option line and its body) into typed values.

This module only parses: it never runs a model and never touches the display, so every rule of
the cell language is testable without a kernel.

    %%replicate hf:stabilityai/sdxl-turbo --on local -o pic --sweep seed=1,2
    prompt: a lighthouse at dusk, {style}
    image: $init_image

- The option line follows shell quoting (`shlex`); the first word is the model unless it is an
  option (then the session's default model is used).
- The body is a YAML mapping of inputs, or else plain text for the model's first string input.
- `{name}` in a string is filled from the user namespace (`{{`/`}}` give literal braces);
  a whole value written `$name` is that Python object itself (a PIL image, array, path, bytes…).
"""
from __future__ import annotations

import argparse
import itertools
import re
import shlex
from dataclasses import dataclass, field
from typing import Any, Mapping

from replicate_jupyter.errors import InputError, Problem

__all__ = ["CellArgs", "parse_line", "parse_body", "parse_sweep", "sweep_grid", "parse_options", "yaml_scalar", "LineError"]


class LineError(ValueError):
    """The option line itself is malformed (unknown option, missing value, bad quoting)."""


@dataclass
class CellArgs:
    model: str | None = None
    on: str | None = None
    run_async: bool = False
    seed: int | None = None
    max_cost: float | None = None
    out: str | None = None
    sweep: list[tuple[str, list[Any]]] = field(default_factory=list)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print and sys.exit(): raise instead
        raise LineError(message)


#: the options that take a value, written once for argparse and for the quick path:
#: (flags, dest, type, metavar); `--sweep` repeats, the others keep their last value
_VALUE_OPTIONS: list[tuple[tuple[str, ...], str, Any, str | None]] = [
    (("--on",), "on", str, "BACKEND"),
    (("--seed",), "seed", int, None),
    (("--max-cost",), "max_cost", float, "USD"),
    (("-o", "--out"), "out", str, "NAME"),
    (("--sweep",), "sweep", str, "KEY=V1,V2,..."),
]


def _cell_parser() -> _Parser:
    p = _Parser(prog="%%replicate", add_help=False)
    p.add_argument("model", nargs="?", default=None)
    p.add_argument("--async", dest="run_async", action="store_true")
    for flags, dest, kind, metavar in _VALUE_OPTIONS:
        if dest == "sweep":
            p.add_argument(*flags, dest=dest, action="append", default=[], metavar=metavar)
        else:
            p.add_argument(*flags, dest=dest, type=kind, default=None, metavar=metavar)
    return p


_PARSER = _cell_parser()

#: flag → (field, type), for the quick path
_OPTIONS: dict[str, tuple[str, Any]] = {flag: (dest, kind) for flags, dest, kind, _ in _VALUE_OPTIONS
                                        for flag in flags}


def _quick_parse(words: list[str]) -> argparse.Namespace | None:
    """The option line as argparse would read it, for lines of exact option names each with
    one value; None for anything else (abbreviations, `--opt=v`, values starting with `-`,
    bad numbers), which argparse then parses or explains. Runs on every cell, so it is kept
    to a loop over the words."""
    ns = argparse.Namespace(model=None, on=None, run_async=False, seed=None, max_cost=None, out=None, sweep=[])
    i, n = 0, len(words)
    while i < n:
        w = words[i]
        if w == "--async":
            ns.run_async = True
        elif w in _OPTIONS:
            if i + 1 >= n or words[i + 1].startswith("-"):
                return None
            name, kind = _OPTIONS[w]
            i += 1
            try:
                value = kind(words[i])
            except ValueError:
                return None
            if name == "sweep":
                ns.sweep.append(value)
            else:
                setattr(ns, name, value)
        elif w.startswith("-") or ns.model is not None:
            return None
        else:
            ns.model = w
        i += 1
    return ns


def parse_line(line: str) -> CellArgs:
    """`MODEL [options]` → CellArgs. Raises LineError with a one-line reason."""
    line = line or ""
    if line.isascii() and not any(c in line for c in "'\"\\\v\f\x1c\x1d\x1e\x1f"):
        words = line.split()  # what shlex.split gives: nothing quoted or escaped, only ' \t\r\n' between words
    else:
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise LineError(f"cannot split the option line: {exc}") from None
    ns = _quick_parse(words) or _PARSER.parse_args(words)
    if ns.out is not None and not ns.out.isidentifier():
        raise LineError(f"-o/--out needs a Python name, got {ns.out!r}")
    return CellArgs(model=ns.model, on=ns.on, run_async=ns.run_async, seed=ns.seed, max_cost=ns.max_cost,
                    out=ns.out, sweep=[parse_sweep(s) for s in ns.sweep])


def yaml_scalar(text: str) -> Any:
    """`7` → 7, `0.5` → 0.5, `true` → True, anything else stays the string given."""
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (int, float, bool, str)) else text


def parse_sweep(spec: str) -> tuple[str, list[Any]]:
    """`KEY=V1,V2,...` → (key, [values]) with YAML-typed values (`seed=1,2` gives ints)."""
    key, sep, values = spec.partition("=")
    key = key.strip()
    if not sep or not key or not values.strip():
        raise LineError(f"--sweep needs KEY=V1,V2,..., got {spec!r}")
    return key, [yaml_scalar(v.strip()) for v in values.split(",")]


def sweep_grid(sweep: list[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
    """Every combination of the sweep values, in row-major order (the last key varies fastest)."""
    if not sweep:
        return [{}]
    keys = [k for k, _ in sweep]
    return [dict(zip(keys, combo)) for combo in itertools.product(*(v for _, v in sweep))]


def parse_options(words: list[str]) -> dict[str, Any]:
    """`--address ray://h:10001 --num-gpus 1` → {"address": "ray://h:10001", "num_gpus": 1};
    a flag with no value is True."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(words):
        w = words[i]
        if not w.startswith("--") or len(w) == 2:
            raise LineError(f"expected --option [value], got {w!r}")
        key, eq, val = w[2:].partition("=")
        key = key.replace("-", "_")
        if eq:
            out[key] = yaml_scalar(val)
        elif i + 1 < len(words) and not words[i + 1].startswith("--"):
            out[key] = yaml_scalar(words[i + 1])
            i += 1
        else:
            out[key] = True
        i += 1
    return out


# ----- body ------------------------------------------------------------------------------------
_FIELD = re.compile(r"\{\{|\}\}|\{([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)(![rsa])?(:[^{}]*)?\}")
_OBJECT = re.compile(r"^\$([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)$")
_PLACEHOLDER = "\u2063rj{}\u2063"  # invisible separator: never typed by a user, kept by YAML
_LOADER = None
_PLACEHOLDER_RE = re.compile("\u2063rj(\\d+)\u2063")


def _loader():
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: ~10× faster


class _Missing(Exception):
    def __init__(self, name: str):
        self.name = name


def _lookup(path: str, ns: Mapping[str, Any]) -> Any:
    root, *attrs = path.split(".")
    if root not in ns:
        raise _Missing(root)
    value = ns[root]
    for a in attrs:
        try:
            value = getattr(value, a)
        except AttributeError:
            raise _Missing(path) from None
    return value


def _protect(text: str) -> tuple[str, list[re.Match]]:
    """Swap every `{name}` field for a placeholder so YAML never sees the braces
    (`prompt: {style}` would otherwise parse as a mapping)."""
    fields: list[re.Match] = []

    def sub(m: re.Match) -> str:
        if m.group(1) is None:
            return m.group(0)  # `{{` / `}}` stay until the values are filled
        fields.append(m)
        return _PLACEHOLDER.format(len(fields) - 1)

    return _FIELD.sub(sub, text), fields


def _fill(text: str, fields: list[re.Match], ns: Mapping[str, Any], where: str) -> str:
    def one(m: re.Match) -> str:
        f = fields[int(m.group(1))]
        try:
            value = _lookup(f.group(1), ns)
        except _Missing as miss:
            raise InputError([Problem(where, "interpolation", f.group(0),
                                      f"a name defined in the notebook ({miss.name!r} is not)")]) from None
        conv, spec = f.group(2), (f.group(3) or ":")[1:]
        if conv == "!r":
            value = repr(value)
        elif conv == "!a":
            value = ascii(value)
        return format(value, spec) if spec else str(value)

    filled = _PLACEHOLDER_RE.sub(one, text)
    return filled.replace("{{", "{").replace("}}", "}") if fields or "{{" in filled or "}}" in filled else filled


def _resolve(value: Any, fields: list[re.Match], ns: Mapping[str, Any], where: str) -> Any:
    if isinstance(value, str):
        m = _OBJECT.match(value.strip())
        if m:
            try:
                return _lookup(m.group(1), ns)
            except _Missing as miss:
                raise InputError([Problem(where, "reference", value,
                                          f"a name defined in the notebook ({miss.name!r} is not)")]) from None
        if value.startswith("$$"):
            value = value[1:]  # `$$name` is the literal text `$name`
        return _fill(value, fields, ns, where)
    if isinstance(value, list):
        return [_resolve(v, fields, ns, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _resolve(v, fields, ns, f"{where}.{k}") for k, v in value.items()}
    return value


def _is_input_mapping(value: Any) -> bool:
    """A YAML mapping whose keys look like input names. `A cat: in a hat` parses as a mapping
    too, but its key is prose, so the body is text for the prompt."""
    return isinstance(value, dict) and bool(value) and all(
        isinstance(k, str) and k.isidentifier() for k in value)


_SIMPLE_LINE = re.compile(r"([A-Za-z_]\w*):[ ]+([\w$\u2063][\w $/()+\-.,'!?\u2063&*%=;~\"]*)")
_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)")
_FLOAT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)\.[0-9]+")
_YAML_WORDS = frozenset({"yes", "no", "true", "false", "on", "off", "null"})


def _simple_mapping(text: str) -> dict[str, Any] | None:
    """`name: value` lines read exactly as YAML reads them, for the bodies people type most
    (plain words, prompts, decimal numbers); None for anything else, which YAML then parses.
    Every value this accepts is one YAML would give the same type and text, so the two paths
    never disagree (tests/test_cellparse.py checks them against each other)."""
    out: dict[str, Any] = {}
    for raw in text.split("\n"):
        if not raw.strip() or raw.startswith("#"):
            continue
        m = _SIMPLE_LINE.fullmatch(raw.rstrip(" "))
        if m is None:
            return None
        key, value = m.group(1), m.group(2)
        if key in out or key.lower() in _YAML_WORDS:  # `on:` is the key True to YAML
            return None
        if _INT.fullmatch(value):
            out[key] = int(value)
        elif _FLOAT.fullmatch(value):
            out[key] = float(value)
        elif value[0].isdigit() or value.lower() in _YAML_WORDS:
            return None  # octal, dates, 1_000, yes/no…: YAML's own rules
        else:
            out[key] = value
    return out or None


def parse_body(body: str, ns: Mapping[str, Any] | None = None, text_field: str | None = None,
               model: str | None = None) -> dict[str, Any]:
    """The cell body → an input dict (not yet validated).

    `text_field` is the model's first string input (by x-order), where a body that is not a
    mapping goes. Raises InputError naming the field for a missing `{name}`/`$name` and when
    text is given to a model without a string input.
    """
    import yaml

    global _LOADER
    if _LOADER is None:
        _LOADER = _loader()
    ns = ns if ns is not None else {}
    text = (body or "").strip("\n")
    if all(not ln.strip() or ln.lstrip().startswith("#") for ln in text.splitlines()):
        return {}  # blank or only comments: the model's defaults (a sweep may set the rest)
    protected, fields = _protect(text)
    parsed = _simple_mapping(protected)
    if parsed is None:
        try:
            parsed = yaml.load(protected, Loader=_LOADER)
        except yaml.YAMLError:
            parsed = None
    if _is_input_mapping(parsed):
        return {k: _resolve(v, fields, ns, k) for k, v in parsed.items()}
    if text_field is None:
        raise InputError([Problem("(cell body)", "type", text.strip(),
                                  "a YAML mapping of inputs (name: value); this model has no text input")], model=model)
    raw = text.strip()
    m = _OBJECT.match(raw)
    if m:  # the whole body is `$name`: that object goes to the text input
        return {text_field: _resolve(raw, fields, ns, text_field)}
    return {text_field: _fill(protected.strip(), fields, ns, text_field)}

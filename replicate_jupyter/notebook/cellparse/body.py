"""The body of a `%%replicate` cell → the input dict (not yet validated).

    prompt: a lighthouse at dusk, {style}
    image: $init_image

- A YAML mapping whose keys are input names gives those inputs; any other text goes, as
  written, to the model's first string input (its prompt). Which one a body is: it is YAML if
  the strict loader reads it as a mapping of input names. A body that does not parse is an error
  when it was plainly meant as YAML (it starts with `{` or `[`, or a line starts with `name:`),
  and the prompt otherwise (`A cat: in a hat`, prose with an odd `*`). Tags, alias bombs, deep
  nesting and huge bodies are refused whatever was meant.
- `{name}`, `{name.attr}` and `{name[key]}` in a string are filled from the user namespace,
  with `!r`/`!s`/`!a` and a format spec as in `str.format` (`{{`/`}}` give literal braces).
  Plain names only: no `_private` or `__dunder__` attribute (`{fn.__globals__}` would send the
  notebook's variables), no calls, widths and precisions up to `limits.MAX_FORMAT_WIDTH`, a
  filled string up to `limits.MAX_FILLED_CHARS`. Braces that are not a template (`{steps: 5}`,
  `{red car}`) stay text.
- A whole value written `$name` (or `$name.attr`) is that Python object itself (a PIL image,
  array, path, bytes…); `$$name` is the text `$name`.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from replicate_jupyter.errors import InputError, Problem
from replicate_jupyter.notebook.cellparse import limits, safe_yaml

__all__ = ["parse_body"]

_FIELD = re.compile(r"\{\{|\}\}|\{([A-Za-z_][^{}]*)\}")
_TEMPLATE = re.compile(r"(?P<path>[A-Za-z_]\w*(?:\.\w+|\[[^\[\]]+\])*)(?:!(?P<conv>[^:]*))?(?::(?P<spec>.*))?", re.S)
_PART = re.compile(r"\.(\w+)|\[([^\[\]]+)\]")
_SPEC = re.compile(r"(?:.?[<>=^])?[-+ ]?z?#?0?(?P<width>\d*)[,_]?(?:\.(?P<prec>\d+))?[bcdeEfFgGnosxX%]?", re.S)
_FLOW_MAPPING = re.compile(r"[\w-]+\s*:\s")  # `{steps: 5}` is YAML, not a template
_CALL = re.compile(r"[A-Za-z_][\w.\[\]]*\s*\(")
_OBJECT = re.compile(r"^\$([A-Za-z_]\w*(?:\.\w+)*)$")
_PLACEHOLDER = "\u2063rj{}\u2063"  # invisible separator: never typed by a user, kept by YAML
_FILL = re.compile("\u2063rj(\\d+)\u2063|\\{\\{|\\}\\}")
_FLOW_START = re.compile(r"[ \t]*(?:\[|\{(?!\{))")
_KEY_LINE = re.compile(r"^[A-Za-z_]\w*[ \t]*:(?:[ \t\r]|$)", re.M)

Path = tuple[str, tuple[tuple[str, Any], ...]]  # root name, then (".", attr) / ("[]", key) steps


@dataclass(frozen=True)
class _Template:
    source: str  # as written: `{name.attr:>10}`
    path: Path = ("", ())
    conv: str | None = None
    spec: str = ""
    problem: tuple[str, str] | None = None  # (rule, allowed) when the template breaks one


def _private(root: str, attrs: list[str]) -> tuple[str, str] | None:
    if root.startswith("__") or any(a.startswith("_") for a in attrs):
        return "private attribute", "plain names: no _private or __dunder__ attributes"
    return None


def _template(source: str, content: str) -> _Template | None:
    """`{…}` → a _Template (carrying the rule it breaks, if any), or None for braces that are
    not a template at all, which stay text for YAML."""
    m = None if _FLOW_MAPPING.match(content) else _TEMPLATE.fullmatch(content)
    if m is None:
        if _CALL.match(content):
            return _Template(source, problem=("call", "{name}, {name.attr} or {name[key]}: no calls"))
        return None
    root = m["path"].split(".", 1)[0].split("[", 1)[0]
    steps = _PART.findall(m["path"][len(root):])  # (attr, "") or ("", key)
    parts: tuple[tuple[str, Any], ...] = tuple((".", a) if a else ("[]", int(k) if k.isdigit() else k) for a, k in steps)
    problem = _private(root, [a for a, _ in steps if a])
    conv, spec = m["conv"], m["spec"] or ""
    if conv not in (None, "r", "s", "a"):
        problem = problem or ("conversion", "!r, !s or !a")
    s = _SPEC.fullmatch(spec)  # the standard mini-language; else a type's own (dates): every number counts
    sizes = [int(n) for n in ((s["width"], s["prec"]) if s else re.findall(r"\d+", spec)) if n]
    if any(n > limits.MAX_FORMAT_WIDTH for n in sizes):
        problem = problem or ("format width", f"width and precision up to {limits.MAX_FORMAT_WIDTH}")
    return _Template(source, (root, parts), conv, spec, problem)


class _Missing(Exception):
    def __init__(self, name: str):
        self.name = name


def _lookup(path: Path, ns: Mapping[str, Any]) -> Any:
    root, parts = path
    if root not in ns:
        raise _Missing(root)
    value, where = ns[root], root
    for kind, name in parts:
        where += f".{name}" if kind == "." else f"[{name!r}]"
        try:
            value = getattr(value, name) if kind == "." else value[name]
        except (AttributeError, LookupError, TypeError):
            raise _Missing(where) from None
    return value


@functools.lru_cache(maxsize=256)
def _protect(text: str, max_width: int) -> tuple[str, tuple[_Template, ...]]:
    """Swap every `{name}` template for a placeholder so YAML never sees its braces
    (`prompt: {style}` would otherwise parse as a mapping). Memoised with `_load`: a pure
    function of the text (and the width limit it checks), and a cell run again is the same text."""
    fields: list[_Template] = []

    def sub(m: re.Match) -> str:
        t = None if m.group(1) is None else _template(m.group(0), m.group(1))
        if t is None:
            return m.group(0)  # `{{` / `}}` stay until the values are filled
        fields.append(t)
        return _PLACEHOLDER.format(len(fields) - 1)

    return _FIELD.sub(sub, text), tuple(fields)


@functools.lru_cache(maxsize=256)
def _load(protected: str, depth: int, aliases: int, nodes: int) -> tuple[Any, safe_yaml.Refused | None]:
    """The strict loader's reading of a protected body, or its refusal; memoised per text and
    limits (the limits are arguments so a raised one is read). The YAML step is ~0.1 ms of a
    cell run in a kernel; what it returns is never changed (`_resolve` builds new containers)."""
    try:
        return safe_yaml.load(protected), None
    except safe_yaml.Refused as r:
        r.__traceback__ = None  # kept in the memo: not the loader's frames with it
        return None, r


#: bodies up to this many characters are memoised (a typed cell; a pasted book is parsed each time)
_MEMO_CHARS = 8192


def _fill(text: str, fields: Sequence[_Template], ns: Mapping[str, Any], where: str) -> str:
    """The placeholders filled and `{{`/`}}` made single braces (in the cell's own text, never in
    what a variable holds); the result is capped at MAX_FILLED_CHARS while it is built."""
    total = [len(text)]

    def one(m: re.Match) -> str:
        if m.group(1) is None:
            return m.group(0)[0]
        t = fields[int(m.group(1))]
        if t.problem:
            raise InputError([Problem(where, t.problem[0], t.source, t.problem[1])])
        try:
            value = _lookup(t.path, ns)
        except _Missing as miss:
            raise InputError([Problem(where, "interpolation", t.source,
                                      f"a name defined in the notebook ({miss.name!r} is not)")]) from None
        if isinstance(value, str) and len(value) > limits.MAX_FILLED_CHARS:
            out = value  # too long already: refused below without formatting a copy
        else:
            value = repr(value) if t.conv == "r" else ascii(value) if t.conv == "a" else value
            try:
                out = format(value, t.spec) if t.spec else str(value)
            except (ValueError, TypeError) as exc:
                raise InputError([Problem(where, "format", t.source, f"a format spec for this value ({exc})")]) from None
        total[0] += len(out)
        if total[0] > limits.MAX_FILLED_CHARS:
            raise InputError([Problem(where, "size", t.source, f"a filled text of at most "
                                      f"{limits.MAX_FILLED_CHARS:,} characters (pass big values as $name)")])
        return out

    return _FILL.sub(one, text)


def _resolve(value: Any, fields: Sequence[_Template], ns: Mapping[str, Any], where: str) -> Any:
    if isinstance(value, str):
        m = _OBJECT.match(value.strip())
        if m:
            root, *attrs = m.group(1).split(".")
            problem = _private(root, attrs)
            if problem:
                raise InputError([Problem(where, problem[0], value, problem[1])])
            try:
                return _lookup((root, tuple((".", a) for a in attrs)), ns)
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
    return isinstance(value, dict) and bool(value) and all(isinstance(k, str) and k.isidentifier() for k in value)


def _meant_as_yaml(text: str, r: safe_yaml.Refused) -> bool:
    """Whether a body the loader refused was written as YAML (then the refusal is the error)
    rather than as text that happens not to be YAML (then it is the prompt): it has a `name:`
    line, or starts with `[`/`{` that the error is inside of (`[1, 2` is YAML gone wrong,
    `[INST] hi` is text), or holds a `!!` tag (`!!python/object…`; `! hello` is text)."""
    if isinstance(r, safe_yaml.Malformed):
        first = next(ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#"))
        return bool(_KEY_LINE.search(text) or (_FLOW_START.match(first) and (r.in_flow or r.rule != "yaml")))
    return r.rule != "tag" or str(r.value).startswith("!!") or bool(_KEY_LINE.search(text))


def _refusal(r: safe_yaml.Refused, body: str, text: str, model: str | None) -> InputError:
    """The loader's refusal as an InputError naming the body line (as the user counts them,
    blank lines at the top included) and the rule; a duplicate key is named as the field."""
    skipped = len(body) - len(body.lstrip("\n"))
    line = r.line + 1 + skipped
    if r.first is not None:
        return InputError([Problem(str(r.value), r.rule, f"body line {line}",
                                   f"{r.allowed} (first on body line {r.first + 1 + skipped})")], model=model)
    lines = text.splitlines()
    shown = r.value if r.value is not None or r.line >= len(lines) else lines[r.line].strip()
    allowed = r.allowed + ("; quote a value that holds ': ' or ' #', or give text as `prompt: |` with the "
                           "text indented below" if r.rule == "yaml" else "")
    return InputError([Problem(f"(cell body) line {line}", r.rule, shown, allowed)], model=model)


def parse_body(body: str, ns: Mapping[str, Any] | None = None,
               text_field: str | Callable[[], str | None] | None = None, model: str | None = None) -> dict[str, Any]:
    """The cell body → an input dict (not yet validated).

    `text_field` is the model's first string input (by x-order), where a body that is not a
    mapping goes; or a function giving it, called only for such a body, so a caller can parse
    (and refuse) a body before it looks the model's schema up. Raises InputError naming the
    field (or the body line) and the rule, for YAML the strict loader refuses, a missing or
    private `{name}`/`$name`, a template past its limits, a body over MAX_BODY_CHARS, and text
    given to a model without a string input.
    """
    ns = ns if ns is not None else {}
    body = body or ""
    if len(body) > limits.MAX_BODY_CHARS:
        raise InputError([Problem("(cell body)", "size", f"{len(body):,} characters",
                                  f"at most {limits.MAX_BODY_CHARS:,} characters (pass big text as $name)")],
                         model=model)
    text = body.strip("\n")
    if all(not ln.strip() or ln.lstrip().startswith("#") for ln in text.splitlines()):
        return {}  # blank or only comments: the model's defaults (a sweep may set the rest)
    memo = len(text) <= _MEMO_CHARS
    protected, fields = (_protect if memo else _protect.__wrapped__)(text, limits.MAX_FORMAT_WIDTH)
    parsed, r = (_load if memo else _load.__wrapped__)(protected, limits.MAX_DEPTH, limits.MAX_ALIASES, limits.MAX_NODES)
    if r is not None and _meant_as_yaml(protected, r):
        raise _refusal(r, body, text, model) from None
    # else a refusal is text that is not YAML and was not meant as YAML: the prompt (parsed is None)
    if _is_input_mapping(parsed):
        return {k: _resolve(v, fields, ns, k) for k, v in parsed.items()}
    if callable(text_field):
        text_field = text_field()
    if text_field is None:
        raise InputError([Problem("(cell body)", "type", text.strip(),
                                  "a YAML mapping of inputs (name: value); this model has no text input")], model=model)
    raw = text.strip()
    if _OBJECT.match(raw):  # the whole body is `$name`: that object goes to the text input
        return {text_field: _resolve(raw, fields, ns, text_field)}
    return {text_field: _fill(protected.strip(), fields, ns, text_field)}

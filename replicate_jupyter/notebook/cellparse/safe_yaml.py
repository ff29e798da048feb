"""A strict YAML loader for cell bodies and option values.

`yaml.safe_load` is safe from code execution but not from a cell: it accepts any standard tag
(`!!binary`, `!!set`…), silently keeps the last of two equal keys, and builds what a
billion-laughs body asks for as soon as anything walks it (576 MB and growing after 20 s in the
kernel). This loader reads libyaml's event stream itself, so every rule is checked while
reading, before anything past a limit is built:

- no tags at all (`!!python/object`, `!!str`, `!foo`): values are plain YAML;
- no key given twice in one mapping (the refusal names the key and both lines);
- at most `limits.MAX_DEPTH` nested collections, `limits.MAX_ALIASES` alias uses and
  `limits.MAX_NODES` values counting every value an alias repeats.

Values are what `yaml.safe_load` gives for everything it accepts (ints, floats, bools, None,
dates, `<<` merges; an alias shares its anchor's object). A refusal is `Refused`, or its
subclass `Malformed` for text that is simply not valid YAML: the caller decides whether such
text was meant as YAML at all.
"""
from __future__ import annotations

from typing import Any

from replicate_jupyter.notebook.cellparse import limits

__all__ = ["load", "Refused", "Malformed"]


class Refused(Exception):
    """A rule of the loader (tag, depth, aliases, size) that holds whatever the text meant.
    `line` is 0-based in the text given; `first` is the earlier line of a duplicate key;
    `in_flow` says a syntax error is inside an unfinished `[…]`/`{…}`."""

    def __init__(self, line: int, rule: str, value: Any, allowed: str, first: int | None = None,
                 in_flow: bool = False) -> None:
        super().__init__(f"line {line + 1}: {rule}")
        self.line, self.rule, self.value, self.allowed, self.first = line, rule, value, allowed, first
        self.in_flow = in_flow


class Malformed(Refused):
    """Not valid YAML, or a key given twice: an error only for text meant as YAML."""


_MERGE = object()  # the `<<` key
_NO_KEY = object()
_YAML: dict[str, Any] = {}  # yaml, its event classes, loader, resolver, constructor: imported on first use


class _Open:
    """A collection being read: its value, anchor, size in values, and the key awaiting a value."""

    __slots__ = ("value", "anchor", "size", "key", "key_line", "lines", "merges")

    def __init__(self, value: Any, anchor: str | None) -> None:
        self.value, self.anchor, self.size = value, anchor, 1
        self.key: Any = _NO_KEY
        self.key_line = 0
        self.lines: dict[Any, int] = {}
        self.merges: list[Any] = []

    def awaits_key(self) -> bool:
        return isinstance(self.value, dict) and self.key is _NO_KEY

    def add(self, value: Any, size: int, line: int) -> None:
        self.size += size
        if isinstance(self.value, list):
            self.value.append(value)
        elif self.key is _NO_KEY:
            if isinstance(value, (list, dict)):
                raise Malformed(line, "key", "a collection", "plain keys (name: value)")
            self.key, self.key_line = value, line
        else:
            key, self.key = self.key, _NO_KEY
            if key is _MERGE:
                self.merges += value if isinstance(value, list) else [value]
            elif key in self.value:
                raise Malformed(self.key_line, "duplicate key", key, "each key once", first=self.lines[key])
            else:
                self.value[key] = value
                self.lines[key] = self.key_line

    def close(self, line: int) -> Any:
        for source in self.merges:  # `<<: *base`: the mapping's own keys win, then earlier sources
            if not isinstance(source, dict):
                raise Malformed(line, "merge", None, "a mapping (or list of mappings) after <<")
            for k, v in source.items():
                self.value.setdefault(k, v)
        return self.value


def _setup() -> None:
    import yaml
    from yaml import events

    implicit = yaml.resolver.Resolver.yaml_implicit_resolvers
    _YAML.update(yaml=yaml, ev=events, loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader),
                 implicit=implicit, wildcard=implicit.get(None, []), constructor=yaml.constructor.SafeConstructor())


def _scalar(e: Any) -> Any:
    """A scalar's value as `yaml.safe_load` types it (PyYAML's resolver, inlined: most values
    are words, which no resolver claims)."""
    value = e.value
    if not e.implicit[0]:  # quoted or block scalar: text
        return value
    resolvers = _YAML["implicit"].get(value[:1], []) + _YAML["wildcard"]
    tag = next((tag for tag, regexp in resolvers if regexp.match(value)), None)
    if tag is None:
        return value
    if tag.endswith((":str", ":value")):
        return value
    if tag.endswith(":merge"):
        return _MERGE
    yaml, constructor = _YAML["yaml"], _YAML["constructor"]
    try:
        return constructor.yaml_constructors[tag](constructor, yaml.ScalarNode(tag, e.value))
    except (yaml.YAMLError, ValueError, OverflowError) as exc:  # e.g. the date 2024-13-45
        raise Malformed(e.start_mark.line, "yaml", e.value, f"a valid {tag.rsplit(':', 1)[-1]} ({exc})") from None


def load(text: str) -> Any:
    """One YAML document → Python values; raises Refused/Malformed naming the line and rule.
    Runs in time and memory linear in the text: an alias adds its anchor's size to the count
    (never a copy), so a body of nested aliases is refused on its count before it is walked."""
    if not _YAML:
        _setup()
    yaml, ev = _YAML["yaml"], _YAML["ev"]
    scalar, alias, end = ev.ScalarEvent, ev.AliasEvent, (ev.SequenceEndEvent, ev.MappingEndEvent)
    collections: dict[type, type] = {ev.SequenceStartEvent: list, ev.MappingStartEvent: dict}
    loader = _YAML["loader"](text)
    stack: list[_Open] = []
    anchors: dict[str, tuple[Any, int]] = {}
    nodes = aliases = docs = 0
    result: Any = None
    try:
        while loader.check_event():
            e = loader.get_event()
            line = e.start_mark.line
            kind = type(e)
            if kind is scalar or kind in collections:
                if e.tag is not None:
                    raise Refused(line, "tag", e.tag.replace("tag:yaml.org,2002:", "!!"),
                                  "plain YAML values: no tags (quote the text to mean it as text)")
                nodes += 1
                if kind is not scalar:
                    if len(stack) >= limits.MAX_DEPTH:
                        raise Refused(line, "depth", f"{len(stack) + 1} levels", f"at most {limits.MAX_DEPTH} nested levels")
                    stack.append(_Open(collections[kind](), e.anchor))
                    continue
                value, size, anchor = _scalar(e), 1, e.anchor
                if value is _MERGE and not (stack and stack[-1].awaits_key()):
                    value = e.value  # `<<` merges only as a key
            elif kind is alias:
                if e.anchor not in anchors:  # undefined, or inside its own anchor (a cycle)
                    raise Malformed(line, "alias", f"*{e.anchor}", "an alias of an anchor (&name) completed before it")
                aliases += 1
                if aliases > limits.MAX_ALIASES:
                    raise Refused(line, "aliases", f"{aliases} alias uses", f"at most {limits.MAX_ALIASES} alias uses")
                (value, size), anchor = anchors[e.anchor], None
                nodes += size
            elif kind in end:
                o = stack.pop()
                value, size, anchor = o.close(line), o.size, o.anchor
            else:  # stream and document start/end
                docs += kind is ev.DocumentStartEvent
                if docs > 1:
                    raise Malformed(line, "documents", "---", "one YAML document")
                continue
            if nodes > limits.MAX_NODES:
                raise Refused(line, "size", f"over {limits.MAX_NODES:,} values",
                              f"at most {limits.MAX_NODES:,} values (an alias counts each value it repeats)")
            if anchor is not None:
                anchors[anchor] = (value, size)
            if stack:
                stack[-1].add(value, size, line)
            else:
                result = value
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc)
        mark = getattr(exc, "problem_mark", None)
        in_flow = "flow" in str(getattr(exc, "context", ""))
        if mark is None or in_flow:  # an unclosed [ or {: say where it opened
            mark = getattr(exc, "context_mark", None) or mark
        line = min(mark.line, text.count("\n")) if mark is not None else 0
        if "nesting depth" in problem:  # libyaml's own limit, met while it scans ahead
            raise Refused(line, "depth", None, f"at most {limits.MAX_DEPTH} nested levels") from None
        raise Malformed(line, "yaml", None, f"valid YAML ({problem})", in_flow=in_flow) from None
    finally:
        loader.dispose()
    return result

"""Reading a model's schema: its inputs in order, its prompt, its files, whether it streams.

Works on any OpenAPI document in Cog's shape, ours or one fetched from a worker or Replicate,
so forms, the magics and validation never ask where a schema came from.
"""
from __future__ import annotations

from replicate_jupyter.model.outputs import title_case

__all__ = ["input_properties", "first_string_input", "is_iterator", "is_concatenate", "file_fields",
           "input_component", "REF_PREFIX"]

REF_PREFIX = "#/components/schemas/"

_props_cache: dict[int, tuple[dict, list[tuple[str, dict]]]] = {}


def input_properties(schema: dict) -> list[tuple[str, dict]]:
    """Input properties in `x-order`, each a copy with `allOf`/`$ref` enums resolved into
    `enum` (+ `type`, `title`). Accepts the full document or the `Input` component alone."""
    hit = _props_cache.get(id(schema))
    if hit is not None and hit[0] is schema:
        return [(n, dict(p)) for n, p in hit[1]]
    comps = components(schema)
    props = input_component(schema).get("properties") or {}
    items: list[tuple[str, dict]] = []
    for fname, prop in props.items():
        p = dict(prop)
        ref = _enum_ref(p)
        if ref is not None:
            target = comps.get(ref) or {}
            p.pop("allOf", None)
            if "enum" in target:
                p["enum"] = list(target["enum"])
            if "type" in target and "type" not in p:
                p["type"] = target["type"]
        p.setdefault("title", title_case(fname))
        items.append((fname, p))
    order = {n: i for i, (n, _) in enumerate(items)}
    items.sort(key=lambda it: (it[1].get("x-order", 10**6 + order[it[0]]), order[it[0]]))
    if len(_props_cache) > 512:
        _props_cache.clear()
    _props_cache[id(schema)] = (schema, items)
    return [(n, dict(p)) for n, p in items]


def first_string_input(schema: dict) -> str | None:
    """The first free-text input by `x-order` (the prompt): a plain string, not a file, secret
    or choice."""
    for fname, prop in input_properties(schema):
        if prop.get("type") == "string" and "format" not in prop and "enum" not in prop:
            return fname
    return None


def is_iterator(schema: dict) -> bool:
    """Whether the model streams its output (`x-cog-array-type: iterator`)."""
    return _output(schema).get("x-cog-array-type") == "iterator"


def is_concatenate(schema: dict) -> bool:
    """Whether the streamed chunks join into one text (`ConcatenateIterator`)."""
    out = _output(schema)
    return out.get("x-cog-array-type") == "iterator" and out.get("x-cog-array-display") == "concatenate"


def file_fields(schema: dict) -> set[str]:
    """Inputs that take files (`format: uri`, or arrays of them)."""
    found = set()
    for fname, prop in (input_component(schema).get("properties") or {}).items():
        if prop.get("format") == "uri" or (prop.get("items") or {}).get("format") == "uri":
            found.add(fname)
    return found


def components(schema: dict) -> dict:
    return (schema.get("components") or {}).get("schemas") or {}


def input_component(schema: dict) -> dict:
    """The `Input` component of a document (or the component itself when given one)."""
    comps = components(schema)
    if "Input" in comps:
        return comps["Input"]
    if "properties" in schema:
        return schema
    return {}


def _output(schema: dict) -> dict:
    return components(schema).get("Output") or {}


def _enum_ref(prop: dict) -> str | None:
    for part in prop.get("allOf") or ():
        ref = part.get("$ref") if isinstance(part, dict) else None
        if isinstance(ref, str) and ref.startswith(REF_PREFIX):
            return ref[len(REF_PREFIX):]
    return None

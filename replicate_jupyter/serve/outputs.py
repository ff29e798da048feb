"""A null output where the schema promises a value is a failure, not a success.

coglet turns a file output it cannot read (`return Path("hello.webp")` resolved against the wrong
working directory, a file deleted before it was read) into `null`, logs "Failed to read FileOutput"
and reports the prediction `succeeded`. A wrong answer reported as success is the worst outcome,
so serve's front (serve/auth.py) checks every finished prediction it passes on with `check` and
rewrites such a one to `failed`, naming the cause from coglet's own log when it is there.
"""
from __future__ import annotations

import json
import pathlib
from typing import Any, Callable

__all__ = ["promises_value", "null_output_error", "check", "file_read_failures", "checked_json", "checked_events"]

_REF = "#/components/schemas/"


def _resolve(schema: dict, node: Any) -> dict:
    """Follow `$ref` and a one-member `allOf` to the node that says what the value is."""
    seen = 0
    while isinstance(node, dict) and seen < 8:
        seen += 1
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_REF):
            node = ((schema.get("components") or {}).get("schemas") or {}).get(ref[len(_REF):], {})
            continue
        all_of = node.get("allOf")
        if isinstance(all_of, list) and len(all_of) == 1:
            node = all_of[0]
            continue
        break
    return node if isinstance(node, dict) else {}


def promises_value(schema: dict, node: Any) -> bool:
    """True when a value of this schema node may not be null: it has a type, and nothing
    (nullable, a null member of anyOf/oneOf, type null) allows null. An untyped node (`Any`,
    a predictor returning None) promises nothing."""
    node = _resolve(schema, node)
    if not node or node.get("nullable") is True:
        return False
    for key in ("anyOf", "oneOf"):
        members = node.get(key)
        if isinstance(members, list):
            return all(promises_value(schema, m) for m in members)
    kind = node.get("type")
    if isinstance(kind, list):
        return "null" not in kind
    if kind == "null":
        return False
    return kind is not None or "properties" in node or "allOf" in node


def null_output_error(schema: dict, prediction: dict) -> str | None:
    """The reason a `succeeded` prediction must be failed, or None when its output is fine."""
    if not isinstance(prediction, dict) or prediction.get("status") != "succeeded":
        return None
    out = ((schema.get("components") or {}).get("schemas") or {}).get("Output")
    if out is None:
        return None
    output = prediction.get("output")
    node = _resolve(schema, out)
    if output is None and promises_value(schema, node):
        return f"the model's output came back null, but its schema promises {_describe(schema, node)}"
    if isinstance(output, list) and node.get("type") == "array" and promises_value(schema, node.get("items")):
        missing = [i for i, item in enumerate(output) if item is None]
        if missing:
            return (f"item{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing[:10]))} of the model's "
                    f"output came back null, but its schema promises {_describe(schema, node.get('items'))}")
    return None


def _describe(schema: dict, node: Any) -> str:
    node = _resolve(schema, node)
    if node.get("format") == "uri":
        return "a file"
    kind = node.get("type")
    if kind == "array":
        return f"a list of {_describe(schema, node.get('items'))}s"
    return f"a value of type {kind}" if kind else "a value"


def file_read_failures(log_path: pathlib.Path | None, offset: int) -> list[str]:
    """coglet's "Failed to read FileOutput" lines written since `offset`, as short phrases."""
    if log_path is None:
        return []
    try:
        with open(log_path, "rb") as fh:
            fh.seek(offset)
            text = fh.read(4 << 20).decode("utf-8", "replace")
    except OSError:
        return []
    found = []
    for line in text.splitlines():
        if "Failed to read FileOutput" not in line:
            continue
        try:
            fields = json.loads(line).get("fields") or {}
        except ValueError:
            fields = {}
        name, err = fields.get("filename"), fields.get("error")
        found.append(f"coglet could not read the file output {name!r}" + (f" ({err})" if err else "")
                     if name else "coglet could not read a file output")
    return found


def check(schema: dict, prediction: dict, log_path: pathlib.Path | None = None, offset: int = 0,
          cwd: str | None = None) -> dict | None:
    """The prediction rewritten as failed when its output is a broken promise; else None."""
    why = null_output_error(schema, prediction)
    if why is None:
        return None
    causes = file_read_failures(log_path, offset)
    if causes:
        why += "; " + "; ".join(dict.fromkeys(causes))
        if cwd:
            why += f" (a relative path is read from the model's working directory, {cwd})"
    else:
        why += " (coglet reports a file output it cannot read as null: see its log"
        why += f", {log_path})" if log_path else ")"
    fixed = dict(prediction)
    fixed["status"] = "failed"
    fixed["error"] = why
    return fixed


Checker = Callable[[dict], "dict | None"]


def checked_json(body: bytes, checker: Checker) -> bytes:
    """A sync prediction's JSON answer, rewritten when `checker` fails it."""
    try:
        data = json.loads(body)
    except ValueError:
        return body
    fixed = checker(data) if isinstance(data, dict) else None
    return body if fixed is None else json.dumps(fixed).encode()


def checked_events(buf: bytes, checker: Checker) -> tuple[bytes, bytes]:
    """SSE bytes → (the complete events, to send now; the incomplete rest). Events pass as they
    are except `completed`, whose prediction `checker` may rewrite."""
    end = buf.rfind(b"\n\n")
    if end < 0:
        return b"", buf
    ready, rest = buf[: end + 2], buf[end + 2:]
    if b"event: completed" not in ready:
        return ready, rest
    out = []
    for block in ready.split(b"\n\n")[:-1]:
        if block.startswith(b"event: completed"):
            block = _checked_event(block, checker)
        out.append(block + b"\n\n")
    return b"".join(out), rest


def _checked_event(block: bytes, checker: Checker) -> bytes:
    data = b"\n".join(line[5:].lstrip(b" ") for line in block.split(b"\n") if line.startswith(b"data:"))
    try:
        pred = json.loads(data)
    except ValueError:
        return block
    fixed = checker(pred) if isinstance(pred, dict) else None
    return block if fixed is None else b"event: completed\ndata: " + json.dumps(fixed).encode()

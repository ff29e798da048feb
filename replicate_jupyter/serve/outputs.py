"""What serve's front (serve/auth.py) does to a finished prediction coglet answers with.

- A null output where the schema promises a value is a failure, not a success. coglet turns a
  file output it cannot read (`return Path("hello.webp")` resolved against the wrong working
  directory, a file deleted before it was read) into `null`, logs "Failed to read FileOutput"
  and reports the prediction `succeeded`. A wrong answer reported as success is the worst
  outcome, so `check` rewrites such a one to `failed`, naming the cause from coglet's own log
  when it is there.
- A prediction that did not succeed keeps what it printed: coglet's blocking answer to it has
  `logs: ''`, so `lost_logs` fills them from coglet's log (serve/coglog.py), whole or not at all.
- Every finished prediction names the version that ran it (`version`, as Replicate's do): a
  prediction sent just before serve reloaded edited code runs the new version, not the one its
  client resolved (serve/reload.py).
"""
from __future__ import annotations

import json
import pathlib
from typing import Any, Callable

from replicate_jupyter.serve.coglog import logged_prints, prints

__all__ = ["promises_value", "null_output_error", "check", "file_read_failures", "lost_logs", "finished",
           "checked_answer", "checked_json", "checked_events"]

_REF = "#/components/schemas/"
_UNFINISHED = ("failed", "canceled")  # coglet's blocking answer to these has `logs: ''`


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


def lost_logs(prediction: dict, log_path: pathlib.Path | None, offset: int) -> str | None:
    """The logs of a prediction that did not succeed, from coglet's log after `offset` when its
    answer has less of them (None: nothing to add). Only a prediction started after `offset`
    (its text whole) and only text that begins with what the answer has."""
    if prediction.get("status") not in _UNFINISHED or log_path is None:
        return None
    logs = prediction.get("logs") or ""
    got = prints(log_path, offset, str(prediction.get("id")).__eq__)
    if not isinstance(logs, str) or not got.started or len(got.text) <= len(logs) or not got.text.startswith(logs):
        return None
    return got.text


def finished(schema: dict, prediction: dict, log_path: pathlib.Path | None = None, offset: int = 0,
             cwd: str | None = None) -> dict | None:
    """The prediction as the front passes it on (`check`, then `lost_logs`); None when unchanged."""
    fixed = check(schema, prediction, log_path, offset, cwd)
    logs = lost_logs(fixed if fixed is not None else prediction, log_path, offset)
    return fixed if logs is None else dict(fixed if fixed is not None else prediction, logs=logs)


Checker = Callable[[dict], "dict | None"]


async def checked_answer(body: bytes, checker: Checker, version: str | None = None,
                         log_path: pathlib.Path | None = None, offset: int = 0) -> bytes:
    """`checked_json` for a blocking answer, once coglet's log has the end of a prediction that
    did not succeed (its last lines may still be on their way to the file)."""
    try:
        data = json.loads(body)
    except ValueError:
        return body
    if isinstance(data, dict) and data.get("status") in _UNFINISHED and log_path is not None and data.get("id"):
        await logged_prints(log_path, offset, str(data["id"]))
    return _checked(body, data, checker, version)


def checked_json(body: bytes, checker: Checker, version: str | None = None) -> bytes:
    """A sync prediction's JSON answer, rewritten when `checker` changes it, naming `version`."""
    try:
        data = json.loads(body)
    except ValueError:
        return body
    return _checked(body, data, checker, version)


def _checked(body: bytes, data: Any, checker: Checker, version: str | None) -> bytes:
    if not isinstance(data, dict):
        return body
    fixed = checker(data)
    if fixed is not None:
        return json.dumps(fixed if version is None or "version" in fixed else dict(fixed, version=version)).encode()
    if version is None or "version" in data:
        return body
    # unchanged otherwise: the version goes in as bytes, not by encoding a large output again
    at = body.index(b"{") + 1
    return b"".join((body[:at], b'"version":', json.dumps(version).encode(), b"," if data else b"", memoryview(body)[at:]))


def checked_events(buf: bytes, checker: Checker, version: str | None = None) -> tuple[bytes, bytes]:
    """SSE bytes → (the complete events, to send now; the incomplete rest). Events pass as they
    are except `completed`, whose prediction `checker` may rewrite (naming `version`)."""
    end = buf.rfind(b"\n\n")
    if end < 0:
        return b"", buf
    ready, rest = buf[: end + 2], buf[end + 2:]
    if b"event: completed" not in ready:
        return ready, rest
    out = []
    for block in ready.split(b"\n\n")[:-1]:
        if block.startswith(b"event: completed"):
            block = _checked_event(block, checker, version)
        out.append(block + b"\n\n")
    return b"".join(out), rest


def _checked_event(block: bytes, checker: Checker, version: str | None) -> bytes:
    data = b"\n".join(line[5:].lstrip(b" ") for line in block.split(b"\n") if line.startswith(b"data:"))
    try:
        pred = json.loads(data)
    except ValueError:
        return block
    fixed = _checked(data, pred, checker, version)
    return block if fixed is data else b"event: completed\ndata: " + fixed

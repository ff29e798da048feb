"""The record of a prediction: everything needed to run it again, and to tell whether the rerun
gave the same result.

A shared notebook is only reproducible if each output says exactly what produced it, in a form
that survives the kernel: the model as written and as resolved (the version id, or the content
hash of the predictor's files), the backend, every input after validation and defaults (files
by name, size and sha256; their bytes only when small), the seed actually used, the package
versions and hardware, the metrics, and the sha256 of each output. Output hashes are what a
rerun is judged by: identical hashes mean identical bytes, whatever backend produced them.

Two ways to a record, one shape: `record_of(p)` from a live Prediction, and
`record_from_payload(d)` from a saved `application/vnd.replicate.prediction+json` payload that
carries no `"record"` (notebooks saved before records existed). Both hash outputs with the same
function, so a record built either way compares with any other.

This module is data: it imports no runner, no session and no rendering, and it reads a
Prediction by its public fields only (`prediction.py` calls it from `to_json`).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import pathlib
import platform
import re
import secrets as _secrets
import sys
from typing import Any, Mapping

from replicate_jupyter.prediction.files import FileOutput, InputFile, data_uri, parse_data_uri
from replicate_jupyter.prediction.jsonable import MASK, jsonable

__all__ = ["RECORD_VERSION", "EMBED_LIMIT", "record_of", "record_from_payload", "draw_seed", "seed_input",
           "digest_output", "output_sha256", "seed_from_logs", "versions", "file_entry", "pixel_difference",
           "text_difference", "resolve_refs"]

#: the shape of a record; bumped when a field changes meaning
RECORD_VERSION = 1
#: input files up to this many bytes are embedded in the record (a data URI), so a rerun never
#: needs the original file; larger ones are named by path, size and sha256
EMBED_LIMIT = 32 * 1024
#: metrics that describe this kernel's state rather than the run (left out of a record)
_KERNEL_METRICS = frozenset({"notebook_total_usd"})
#: packages whose versions a run depends on (only those installed are listed)
_PACKAGES = ("replicate-jupyter", "cog", "coglet", "torch", "diffusers", "transformers", "ray", "replicate")
#: how Cog models (and Replicate's) report the seed they drew: "Using seed: 1234"
_SEED_LOG = re.compile(r"using\s+seed\s*[:=]?\s*(-?\d+)", re.IGNORECASE)
_TERMINAL = frozenset({"succeeded", "failed", "canceled"})


# ----- seeds -----------------------------------------------------------------------------------
def _input_props(schema: Mapping[str, Any] | None) -> dict[str, Any]:
    comps = ((schema or {}).get("components") or {}).get("schemas") or {}
    props: dict[str, Any] = (comps.get("Input") or {}).get("properties") or {}
    return props


def seed_input(schema: Mapping[str, Any] | None) -> str | None:
    """The name of the model's seed input (`seed`, an integer), or None when it has none."""
    prop = _input_props(schema).get("seed")
    if prop is None or prop.get("type") not in (None, "integer"):
        return None
    return "seed"


def draw_seed(schema: Mapping[str, Any] | None, input: Mapping[str, Any]) -> dict[str, Any]:
    """`input` with a seed drawn when the model takes one and none was given, so the seed
    actually used is part of the input (and of the record) instead of being drawn, unseen, by
    the model. Respects the schema's minimum/maximum; never changes a seed that was given."""
    out = dict(input)
    name = seed_input(schema)
    if name is None or out.get(name) is not None:
        return out
    prop = _input_props(schema)[name]
    lo = max(int(prop.get("minimum", 0)), 0) if prop.get("minimum") is not None else 0
    hi = int(prop["maximum"]) if prop.get("maximum") is not None else 2**31 - 1
    out[name] = lo + _secrets.randbelow(max(hi - lo, 0) + 1)
    return out


def seed_from_logs(logs: str | None) -> int | None:
    """The seed a model said it used (`Using seed: N` in its logs), else None."""
    m = _SEED_LOG.search(logs or "")
    return int(m.group(1)) if m else None


def _seed(input: Mapping[str, Any], schema: Any, logs: str | None) -> tuple[int | None, str | None]:
    given = input.get("seed")
    if isinstance(given, int) and not isinstance(given, bool):
        return given, "input"
    logged = seed_from_logs(logs)
    if logged is not None:
        return logged, "logs"
    return None, None


# ----- outputs -----------------------------------------------------------------------------------
def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _is_file(v: Any) -> bool:
    return isinstance(v, FileOutput) or (isinstance(v, dict) and v.get("type") == "file")


def _file_digest(v: Any, index: int | None) -> dict[str, Any]:
    if isinstance(v, FileOutput):
        data, name, ctype = v.read(), v.name, v.content_type
    else:
        url = str(v.get("url") or "")
        data = parse_data_uri(url)[0] if url.startswith("data:") else b""
        name, ctype = v.get("name"), v.get("content_type")
        if not url.startswith("data:"):  # a link, not embedded: only the recorded hash can say
            return {"index": index, "kind": "file", "name": name, "content_type": ctype, "size": v.get("size"),
                    "sha256": v.get("sha256"), "url": url}
    return {"index": index, "kind": "file", "name": name, "content_type": ctype, "size": len(data),
            "sha256": _sha(data)}


def _text_digest(text: str, index: int | None = None) -> dict[str, Any]:
    data = text.encode("utf-8")
    return {"index": index, "kind": "text", "size": len(data), "sha256": _sha(data)}


def _json_digest(value: Any, index: int | None = None) -> dict[str, Any]:
    data = json.dumps(jsonable(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return {"index": index, "kind": "json", "size": len(data), "sha256": _sha(data)}


def digest_output(value: Any, concatenate: bool = False) -> list[dict[str, Any]]:
    """One digest per output item: files by sha256 of their bytes, text (a token stream joined
    as it displays) by sha256 of its UTF-8, anything else by sha256 of its canonical JSON.
    Takes a live output (FileOutput objects) or its saved JSON (files as data URIs) alike."""
    if value is None:
        return []
    if isinstance(value, list):
        if value and concatenate:
            try:  # join checks every item is a str, in C (2,000 tokens: ~15 µs, where a generator took ~90)
                return [_text_digest("".join(value))]
            except TypeError:
                pass
        if any(_is_file(v) for v in value):
            return [_file_digest(v, i) if _is_file(v) else _json_digest(v, i) for i, v in enumerate(value)]
        return [_json_digest(value)]
    if _is_file(value):
        return [_file_digest(value, None)]
    if isinstance(value, str):
        return [_text_digest(value)]
    return [_json_digest(value)]


def pixel_difference(a: FileOutput, b: FileOutput) -> dict[str, Any]:
    """How far two images are apart: mean and max absolute difference per channel (0–255) and
    the share of pixels that differ at all (`size` instead when their sizes differ)."""
    from PIL import ImageChops, ImageStat

    x, y = a.image().convert("RGB"), b.image().convert("RGB")
    if x.size != y.size:
        return {"size": [list(x.size), list(y.size)]}
    diff = ImageChops.difference(x, y)
    changed = diff.convert("L").point(lambda v: 255 if v else 0).histogram()[255]
    extrema: Any = diff.getextrema()  # one (lo, hi) per band of an RGB image
    return {"mean_abs": round(sum(ImageStat.Stat(diff).mean) / 3, 4), "max": max(hi for _, hi in extrema),
            "changed_pixels": round(changed / (x.size[0] * x.size[1]), 6)}


def text_difference(a: str, b: str) -> tuple[float, list[tuple[str, str, str]]]:
    """Similarity of two texts (0–1) and their word diff as (op, old words, new words) runs,
    op one of equal/replace/delete/insert (words: split on spaces, so the text rejoins)."""
    import difflib

    wa, wb = a.split(" "), b.split(" ")
    sm = difflib.SequenceMatcher(a=wa, b=wb, autojunk=False)
    runs: list[tuple[str, str, str]] = [(op, " ".join(wa[i1:i2]), " ".join(wb[j1:j2]))
                                        for op, i1, i2, j1, j2 in sm.get_opcodes()]
    return round(sm.ratio(), 4), runs


def output_sha256(digests: list[dict[str, Any]]) -> str | None:
    """One hash over every output item's hash (None when there is no output): equal exactly
    when every item is."""
    if not digests:
        return None
    return _sha("\n".join(f"{d['kind']}:{d.get('sha256')}" for d in digests).encode("ascii"))


# ----- inputs ------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=256)
def _hash_of_path(path: str, mtime_ns: int, size: int) -> str:
    h = hashlib.sha256()  # streamed: a large input is never read whole to be recorded
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _where(f: InputFile) -> str | None:
    """Where the file given as input lives now, when that can be told: the path it was read
    from when validation kept it (`source`), else a file of that name in the working directory
    with the same bytes. Reads `f.size`/`f.sha256` only (a file-backed input holds no bytes)."""
    size = f.size
    for candidate in (getattr(f, "source", None), f.name):
        if not candidate or size is None:
            continue
        try:
            st = os.stat(candidate)
            path = os.path.abspath(candidate)
            if st.st_size == size and _hash_of_path(path, st.st_mtime_ns, st.st_size) == f.sha256:
                return path
        except OSError:
            continue
    return None


def file_entry(f: InputFile) -> dict[str, Any]:
    """An input file in a record: name, type, size, sha256, and its bytes (a data URI) when it
    is at most EMBED_LIMIT; its path when it was found on disk; its URL when it was given as one.
    A file's size is known when its bytes are (held, or backed by a file on disk); a URL not
    yet fetched has none and is never fetched just to be recorded."""
    out: dict[str, Any] = {"type": "file", "name": f.name, "content_type": f.content_type}
    size = f.size
    if size is not None:
        out["size"] = size
        try:
            out["sha256"] = f.sha256
            if size <= EMBED_LIMIT:
                out["data"] = data_uri(f.read(), f.content_type)
        except OSError:  # file-backed and gone before it was hashed: the record says so, never crashes
            out["sha256"] = None
            out["missing"] = True
        path = _where(f)
        if path:
            out["path"] = path
    if f.url and not str(f.url).startswith("data:"):
        out["url"] = f.url
    return out


def _input_value(v: Any) -> Any:
    if isinstance(v, InputFile):
        return file_entry(v)
    if isinstance(v, FileOutput):
        return file_entry(InputFile(v.read(), name=v.name, content_type=v.content_type))
    if isinstance(v, list):
        return [_input_value(x) for x in v]
    return jsonable(v)


# ----- the environment -------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def versions() -> dict[str, str]:
    """Python's version and each relevant package's installed version (read from its metadata:
    nothing is imported)."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


@functools.lru_cache(maxsize=1)
def _machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"machine": platform.machine(), "system": platform.system(), "cpu": cpu, "cpus": os.cpu_count()}


def _hardware(backend: str, metrics: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"sku": metrics.get("hardware")}
    if backend == "local":  # the kernel is the hardware: say what it is (torch only if loaded)
        out.update(_machine())
        torch = sys.modules.get("torch")
        try:
            if torch is not None and torch.cuda.is_available():
                out["gpu"] = torch.cuda.get_device_name(0)
        except Exception:
            pass
    elif metrics.get("worker"):
        out["worker"] = metrics["worker"]
    return out


# ----- records ---------------------------------------------------------------------------------
def _model(p: Any) -> dict[str, Any]:
    handle = getattr(p, "handle", None)
    extra = getattr(handle, "extra", None) or {}
    spec = extra.get("spec")
    version = getattr(spec, "version", None) if spec is not None else None
    version = version or p.version
    ref = getattr(p, "ref", None) or extra.get("ref")
    out: dict[str, Any] = {"ref": ref if isinstance(ref, str) else p.model, "name": p.model, "version": version,
                           "version_kind": "content-hash" if p.backend in ("local", "workers", "ray")
                           else "version-id" if version else None}
    source = getattr(spec, "source", None)
    if source:
        out["source"] = source
    return out


def record_of(p: Any) -> dict[str, Any]:
    """The complete record of prediction `p` (JSON-serialisable; no secret, no token). Output
    hashes are taken as the output stands, so call it on a finished prediction."""
    secret: frozenset[str] = getattr(p, "secret_fields", frozenset())
    inputs = {k: (MASK if k in secret else _input_value(v)) for k, v in (p.input or {}).items()}
    inputs = p.redact(inputs)  # a session token given as a plain value is masked here too
    seed, seed_source = _seed(p.input or {}, p.schema, p.logs)
    digests = digest_output(p.output, bool(getattr(p, "concatenate", False)))
    metrics = {k: v for k, v in (p.metrics or {}).items() if k not in _KERNEL_METRICS}
    return {
        "record": RECORD_VERSION,
        "id": p.id,
        "model": _model(p),
        "backend": p.backend,
        "status": p.status,
        "input": inputs,
        "secrets": sorted(secret & set(inputs)),
        "seed": seed,
        "seed_source": seed_source,
        "versions": versions(),
        "hardware": _hardware(p.backend, metrics),
        "metrics": jsonable(metrics),
        "created_at": p.created_at,
        "completed_at": p.completed_at,
        "outputs": digests,
        "output_sha256": output_sha256(digests),
        "final": p.status in _TERMINAL,
    }


def resolve_refs(value: Any, bundle: Mapping[str, Any] | None) -> Any:
    """`value` (a saved payload, or part of one) with every file that points at its bundle
    (`{"type": "file", "ref": "image/png"}`, no `url`: a final bundle holds a single PNG's bytes
    once, in `image/png`) given back its bytes as a data-URI `url` read from `bundle[ref]` (a
    copy; `value` is not changed). A ref to a key the bundle lacks is left as it is."""
    if isinstance(value, list):
        return [resolve_refs(v, bundle) for v in value]
    if not isinstance(value, Mapping):
        return value
    if value.get("type") == "file" and isinstance(value.get("ref"), str) and "url" not in value:
        key = value["ref"]
        raw = (bundle or {}).get(key)
        if isinstance(raw, list):  # nbformat may save a mime string as a list of lines
            raw = "".join(raw)
        if isinstance(raw, str) and key.startswith("image/"):
            return {**value, "url": f"data:{key};base64,{''.join(raw.split())}"}
        return dict(value)
    return {k: resolve_refs(v, bundle) for k, v in value.items()}


def record_from_payload(payload: Mapping[str, Any], bundle: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The record of a saved prediction payload: its own `"record"` when it has one, else one
    rebuilt from the payload's fields (input files by name and hash, the seed from the input or
    the logs, output hashes from the embedded outputs). Rebuilt records know no package
    versions or machine (`"rebuilt": True` says so). `bundle` is the output's mime data the
    payload was saved in: a file that refers to it (`"ref"`) is hashed from its bytes there."""
    own = payload.get("record")
    if isinstance(own, Mapping) and own.get("record"):
        return dict(own)
    payload = resolve_refs(payload, bundle)
    metrics = {k: v for k, v in (payload.get("metrics") or {}).items() if k not in _KERNEL_METRICS}
    inputs = dict(payload.get("input") or {})
    seed, seed_source = _seed(inputs, None, payload.get("logs"))
    digests = digest_output(payload.get("output"), payload.get("output_display") == "concatenate")
    version = payload.get("version")
    backend = payload.get("backend") or "local"
    return {
        "record": RECORD_VERSION,
        "rebuilt": True,
        "id": payload.get("id"),
        "model": {"ref": payload.get("model"), "name": payload.get("model"), "version": version,
                  "version_kind": "content-hash" if backend in ("local", "workers", "ray")
                  else "version-id" if version else None},
        "backend": backend,
        "status": payload.get("status"),
        "input": inputs,
        "secrets": sorted(k for k, v in inputs.items() if v == MASK),
        "seed": seed,
        "seed_source": seed_source,
        "versions": {},
        "hardware": {"sku": metrics.get("hardware")},
        "metrics": metrics,
        "created_at": payload.get("created_at"),
        "completed_at": payload.get("completed_at"),
        "outputs": digests,
        "output_sha256": output_sha256(digests),
        "final": payload.get("status") in _TERMINAL,
    }

"""The records of a notebook: what each of its outputs says produced it, read with no kernel state.

A saved `.ipynb` carries every prediction's payload (`application/vnd.replicate.prediction+json`,
alone or inside a sweep's grid); `records(path)` reads them back as `Record`s in notebook order,
one per prediction id. `records()` with no path lists this kernel's finished predictions the
same way. A Record keeps the saved payload beside the record because the payload holds the old
outputs themselves (embedded), which the compare view shows next to the new ones.

`input_of(record)` turns a record's input back into a model input: file inputs are looked for
by their embedded bytes, their recorded path, their name beside the notebook, and by hash among
this kernel's files and the notebook's embedded outputs; a file found nowhere is an InputError
naming it, its size and its sha256, and what to pass instead.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import os
import pathlib
import sys
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping

from replicate_jupyter.errors import InputError, ModelNotFound, Problem
from replicate_jupyter.notebook.cellparse import parse_line
from replicate_jupyter.notebook.display import MIME, SWEEP_MIME
from replicate_jupyter.notebook.tables import records_bundle
from replicate_jupyter.prediction.files import FileOutput, InputFile, parse_data_uri
from replicate_jupyter.prediction.jsonable import MASK
from replicate_jupyter.prediction.record import record_from_payload, record_of, resolve_refs, seed_input
from replicate_jupyter.session import session

__all__ = ["Record", "Records", "records", "find", "current_notebook", "input_of", "resolve", "Spelling"]


@dataclass(frozen=True)
class Spelling:
    """How a rerun's errors name what to give: in the Python API's words (the default), or in
    the magic's (`record_commands.MAGIC`), so each reads as something its user can type."""

    name: str = "rerun"
    choose: str = "exactly one of: an id, cell=N, last=True"
    notebook: str = "pass notebook=PATH to look in a saved .ipynb"
    input: str = "rerun(..., input={{{key!r}: {value}}})"
    secret: str = "..."

    def given(self, key: str, value: str | None = None) -> str:
        """How to pass `key` again (`value`: a placeholder; None: the secret's)."""
        return self.input.format(key=key, value=self.secret if value is None else value)


def _plain(problem: Problem) -> InputError:
    """An InputError that reads as its message alone (a lookup that found nothing: no "Invalid input")."""
    exc = InputError([problem])
    exc.args = (problem.message,)
    return exc


@dataclass
class Record:
    """One recorded prediction: its record, the payload it was saved with (None for one of this
    kernel), the live Prediction (this kernel's only), and where it shows (cell = the In[n]
    number, index = the cell's position)."""

    record: dict[str, Any]
    payload: dict[str, Any] | None = None
    prediction: Any = None
    cell: int | None = None
    index: int | None = None
    notebook: pathlib.Path | None = None
    label: str | None = None
    cells: list[int | None] = field(default_factory=list)  # every cell showing it (a card may repeat)

    @property
    def id(self) -> str:
        return str(self.record.get("id"))

    @property
    def model(self) -> str:
        return str((self.record.get("model") or {}).get("name"))

    @property
    def backend(self) -> str:
        return str(self.record.get("backend"))

    @property
    def status(self) -> str | None:
        return self.record.get("status")

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.record.get("metrics") or {})

    def output(self) -> Any:
        """The old output as values: files as FileOutput (decoded from the saved data URIs),
        token streams as one string, the rest as saved."""
        if self.prediction is not None:
            p = self.prediction
            return p.text if p.text is not None and p.concatenate else p.output
        data = (self.payload or {}).get("output")
        if isinstance(data, list) and (self.payload or {}).get("output_display") == "concatenate" \
                and all(isinstance(x, str) for x in data):
            return "".join(data)
        return _files(data)

    def __repr__(self) -> str:
        return f"<Record {self.id} {self.model} {self.backend} cell {self.cell} {self.status}>"


def _files(value: Any) -> Any:
    if isinstance(value, dict) and value.get("type") == "file" and str(value.get("url", "")).startswith("data:"):
        return FileOutput.from_data_uri(value["url"], name=value.get("name") or "output")
    if isinstance(value, list):
        return [_files(v) for v in value]
    return value


class Records(list):
    """A list of Records with lookups and a table look."""

    def get(self, id: str) -> Record | None:
        return next((r for r in self if r.id == id), None)

    def by_cell(self, n: int) -> list[Record]:
        return [r for r in self if n in (r.cells or [r.cell])]

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """IPython's text for a list would win over the bundle's text/plain: give it the table."""
        printer.text(self._repr_mimebundle_()["text/plain"])

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return records_bundle(self)


def current_notebook() -> pathlib.Path | None:
    """The .ipynb this kernel belongs to, when the frontend said (JupyterLab/jupyter_server set
    JPY_SESSION_NAME, ipykernel copies it to `__session__`, VS Code sets `__vsc_ipynb_file__`)."""
    names: list[str] = []
    shell = sys.modules.get("IPython")  # only a process that imported IPython can be in a kernel
    ip = shell.get_ipython() if shell is not None else None
    if ip is not None:
        names += [str(ip.user_ns.get(k)) for k in ("__vsc_ipynb_file__", "__session__") if ip.user_ns.get(k)]
    if os.environ.get("JPY_SESSION_NAME"):
        names.append(os.environ["JPY_SESSION_NAME"])
    for name in names:
        path = pathlib.Path(name)
        for candidate in (path, pathlib.Path.cwd() / path.name):  # the server's path is relative to its root
            if candidate.suffix == ".ipynb" and candidate.is_file():
                return candidate.resolve()
    return None


def _payloads(output: Mapping[str, Any]) -> Iterator[tuple[dict[str, Any], str | None]]:
    """Each prediction payload of one saved output, files' bytes in place: a file pointing at
    the bundle (`"ref": "image/png"`, its one copy of a PNG) gets them from `data[ref]`."""
    data = output.get("data") or {}
    if isinstance(data.get(MIME), dict):
        yield resolve_refs(data[MIME], data), None
    sweep = data.get(SWEEP_MIME)
    if isinstance(sweep, dict):
        for item in sweep.get("predictions") or []:
            if isinstance(item, dict) and isinstance(item.get("prediction"), dict):
                yield resolve_refs(item["prediction"], data), item.get("label")


def _written_ref(source: Any) -> str | None:
    """The model as the cell wrote it (`%%replicate MODEL ...`), for records saved without one."""
    text = "".join(source) if isinstance(source, list) else str(source or "")
    first = text.lstrip().split("\n", 1)[0]
    if not first.startswith("%%replicate"):
        return None
    try:
        args = parse_line(first[len("%%replicate"):])
    except Exception:  # a cell that did not parse ran nothing: no record comes from it
        return None
    return None if any(k == "model" for k, _ in args.sweep) else args.model


def _from_notebook(path: pathlib.Path) -> Records:
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError([Problem("notebook", "file", str(path), "a saved .ipynb (JSON) that can be read",
                                  message=f"cannot read {path}: {exc}")]) from None
    out, seen = Records(), dict[Any, Any]()
    for index, cell in enumerate(nb.get("cells") or []):
        if cell.get("cell_type") != "code":
            continue
        for output in cell.get("outputs") or []:
            for payload, label in _payloads(output):
                if payload.get("status") not in ("succeeded", "failed", "canceled"):
                    continue  # a live display saved mid-run: its final state is elsewhere or lost
                pid = payload.get("id")
                if pid in seen:
                    seen[pid].cells.append(cell.get("execution_count"))
                    continue
                record = record_from_payload(payload, output.get("data"))
                model = record["model"]
                unknown = record.get("rebuilt") or model.get("ref") == model.get("name")  # as written: not said
                written = _written_ref(cell.get("source")) if unknown else None
                if written:
                    model["ref"] = written
                rec = Record(record, payload=payload, cell=cell.get("execution_count"),
                             index=index, notebook=path, label=label, cells=[cell.get("execution_count")])
                seen[pid] = rec
                out.append(rec)
    return out


def _from_kernel() -> Records:
    out = Records()
    for p in list(session.predictions.values()):
        if p.done:
            out.append(Record(record_of(p), prediction=p, cell=p.cell, cells=[p.cell]))
    return out


def records(notebook: str | os.PathLike[str] | None = None) -> Records:
    """The records of the saved notebook `notebook` (no kernel state read), in notebook order;
    with None, those of this kernel's finished predictions, in the order they were made."""
    if notebook is None:
        return _from_kernel()
    return _from_notebook(pathlib.Path(notebook).expanduser().resolve())


def find(id: str | None = None, *, cell: int | None = None, last: bool = False,
         notebook: str | os.PathLike[str] | None = None, words: Spelling = Spelling()) -> list[Record]:
    """The records to rerun: one `id`, every record of cell `cell` (In[n]), or the `last` one.
    Looked for in this kernel first, then in `notebook` (default: this kernel's own .ipynb,
    when the frontend says which), so an id from a reopened notebook is found in its file.
    `words`: how the errors say what to give (the API's or the magic's spelling)."""
    if sum(x is not None and x is not False for x in (id, cell, last or None)) != 1:
        raise _plain(Problem("rerun", "required", None, words.choose, message=f"{words.name}: give {words.choose}"))
    sources: list[Records] = [_from_kernel()]
    path = pathlib.Path(notebook) if notebook is not None else current_notebook()
    if path is not None:
        sources.append(records(path))
    for recs in sources:
        if id is not None and (hit := recs.get(id)) is not None:
            return [hit]
        if cell is not None and (hits := recs.by_cell(cell)):
            return hits
        if last and recs:
            return [recs[-1]]
    where = "this kernel" + (f" or {path}" if path is not None else f" ({words.notebook})")
    if id is not None:
        close = difflib.get_close_matches(id, [r.id for recs in sources for r in recs], n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise _plain(Problem("id", "unknown", id, "the id of a recorded prediction",
                             message=f"no prediction {id!r} recorded in {where}{hint}"))
    what = f"cell {cell}" if cell is not None else "last"
    raise _plain(Problem("cell" if cell is not None else "last", "unknown", cell, "a cell that ran a prediction",
                         message=f"no recorded prediction for {what} in {where}"))


# ----- the model and its input back from a record -----------------------------------------------------------------
def _refs(rec: Record, backend: str) -> list[str]:
    """References to try, best first: on Replicate the exact version; on the record's own
    backend the reference as written (a relative path read from the notebook's folder); the
    model's name; on local, the predictor file it was loaded from."""
    m = rec.record.get("model") or {}
    ref, name, version, source = m.get("ref"), m.get("name"), m.get("version"), m.get("source")
    out: list[str] = []
    if backend == "replicate" and m.get("version_kind") == "version-id" and version and ":" not in str(name):
        out.append(f"{name}:{version}")
    if ref and backend == rec.backend:
        head, sep, tail = str(ref).partition(":")
        if rec.notebook is not None and not ref.startswith("hf:") and (head.endswith((".py", ".yaml")) or "/" in head):
            candidate = rec.notebook.parent / head
            if candidate.exists():
                out.append(str(candidate.resolve()) + sep + tail)
        out.append(str(ref))
    if name:
        out.append(str(name))
    if source and backend == "local":
        out.append(str(source))
    return list(dict.fromkeys(out))


def resolve(rec: Record, backend: str) -> tuple[str, Any]:
    """(the reference that resolved, its handle) on `backend`; the first ModelNotFound if none."""
    first: Exception | None = None
    runner = session.runner(backend)
    for ref in _refs(rec, backend):
        try:
            return ref, runner.resolve(ref)
        except ModelNotFound as exc:
            first = first or exc
    raise first or ModelNotFound(rec.model, backend=backend)


def _kernel_files() -> Iterator[Any]:
    for p in list(session.predictions.values()):
        for v in (p.input or {}).values():
            for item in v if isinstance(v, list) else [v]:
                if isinstance(item, (InputFile, FileOutput)):
                    yield item
        yield from p.files


def _held(f: Any, sha: str) -> bytes | None:
    """One of this kernel's files' bytes if their sha256 is `sha`, without the network: held,
    read from the file an input is backed by (hashed streamed first), or (that gone) from the
    predictor's copy in the kernel's temp folder (`as_path()`, removed with the input)."""
    if isinstance(f, InputFile) and f.size is None:
        return None  # a URL: never fetched here
    try:
        return bytes(f.read()) if f.sha256 == sha else None
    except OSError:
        copy = getattr(f, "_path", None)
        data = copy.read_bytes() if copy is not None and copy.is_file() else None
        return data if data is not None and hashlib.sha256(data).hexdigest() == sha else None


def _by_hash(sha: str, pool: Iterable[Record]) -> bytes | None:
    """A file with this sha256 among this kernel's inputs and outputs, or the outputs embedded
    in the notebook's records (one model's output fed into the next)."""
    for f in _kernel_files():
        if (data := _held(f, sha)) is not None:
            return data
    for r in pool:
        if not any(d.get("sha256") == sha for d in r.record.get("outputs") or []):
            continue
        out = (r.payload or {}).get("output")
        for item in out if isinstance(out, list) else [out]:
            if isinstance(item, dict) and str(item.get("url", "")).startswith("data:"):
                data = parse_data_uri(item["url"])[0]
                if hashlib.sha256(data).hexdigest() == sha:
                    return data
    return None


def _file(field: str, e: Mapping[str, Any], folders: list[pathlib.Path], pool: Iterable[Record],
          problems: list[Problem], words: Spelling) -> Any:
    name, sha, size = e.get("name") or "input", e.get("sha256"), e.get("size")

    def ok(data: bytes) -> bool:
        return sha is None or hashlib.sha256(data).hexdigest() == sha

    if e.get("data"):
        data = parse_data_uri(e["data"])[0]
        if ok(data):
            return InputFile(data, name=name, content_type=e.get("content_type"))
    looked: list[str] = []
    paths = ([pathlib.Path(e["path"])] if e.get("path") else []) + [d / name for d in folders]
    for path in dict.fromkeys(paths):
        looked.append(str(path))
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if ok(data):
            return InputFile(data, name=name, content_type=e.get("content_type"))
        looked[-1] += " (there, but different bytes)"
    if sha:
        found = _by_hash(sha, pool)
        if found is not None:
            return InputFile(found, name=name, content_type=e.get("content_type"))
        looked.append("this kernel's files and the notebook's outputs, by sha256")
    if e.get("url") and not str(e["url"]).startswith("data:"):
        return InputFile(url=e["url"], name=name, content_type=e.get("content_type"))
    what = f"{name} ({size} bytes, sha256 {sha})" if sha else name
    problems.append(Problem(field, "file", name, f"the file {what}: put it back, or pass {words.given(field, 'PATH')}",
                            message=f"input file {what} not found; looked at: {'; '.join(looked)}. Put it back, or "
                                    f"pass it: {words.given(field, 'PATH')}"))
    return None


def input_of(rec: Record, overrides: Mapping[str, Any] | None = None, pool: Iterable[Record] = (),
             schema: Mapping[str, Any] | None = None, words: Spelling = Spelling()) -> dict[str, Any]:
    """The model input that reproduces `rec`: its recorded input, with files found again and
    its seed (read from its logs when the model drew it) made explicit when `schema` (the model
    it will run on) takes one; `overrides` win (a secret, a file found elsewhere). One
    InputError lists every file not found and every secret not given (in `words`' spelling)."""
    overrides = dict(overrides or {})
    folders = list(dict.fromkeys(([rec.notebook.parent] if rec.notebook else []) + [pathlib.Path.cwd()]))
    pool = list(pool)
    problems: list[Problem] = []
    out: dict[str, Any] = {}
    for key, value in (rec.record.get("input") or {}).items():
        if key in overrides:
            out[key] = overrides.pop(key)
        elif value == MASK:
            problems.append(Problem(key, "secret", MASK, f"the secret again: {words.given(key)}",
                                    message=f"a secret is never recorded: give it again with {words.given(key)}"))
        elif isinstance(value, dict) and value.get("type") == "file":
            out[key] = _file(key, value, folders, pool, problems, words)
        elif isinstance(value, list) and any(isinstance(v, dict) and v.get("type") == "file" for v in value):
            out[key] = [_file(f"{key}[{i}]", v, folders, pool, problems, words) if isinstance(v, dict) else v
                        for i, v in enumerate(value)]
        else:
            out[key] = value
    seed, name = rec.record.get("seed"), seed_input(schema)
    if seed is not None and name is not None and out.get(name) is None and name not in overrides:
        out[name] = seed  # the seed the model drew and logged: now given, so the rerun repeats it
    out.update(overrides)
    if problems:
        raise InputError(problems, model=rec.model)
    return out

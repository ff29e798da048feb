"""Run notebook cells in a real kernel (nbclient) and get the *saved* notebook.

    def test_something(run_cells):
        nb = run_cells(["%load_ext replicate_jupyter", "%%replicate ../tests/predictors/echo.py:Predictor\\nhi"])
        assert "hi" in text_of(nb.cells[1])

- `run_cells(cells, **kw)`: cells are source strings, or `(source, ["tag", ...])` for tags such as
  `raises-exception` (a cell expected to fail; the run goes on). Returns the notebook as it would
  be saved: executed, written to JSON and read back, so assertions see exactly what a reader sees.
- `run_notebook(path, **kw)`: the same for an .ipynb file.

Keywords: `cwd` (default: the repo's notebooks/ folder, as CI runs them), `timeout` per cell
(default 120 s), `env` (extra environment variables for the kernel), `allow_errors`,
`interrupt={cell_index: seconds}` (send the kernel an interrupt that many seconds after that
cell starts; the moments are recorded in `nb.metadata["test_interrupts"]`), `save_to` (also write
the result there, handy when debugging).

Helpers (plain functions: `from kernel_helpers import text_of, outputs_of, nb_json`; a module of
its own, not conftest, because tests/browser has a conftest too and both would be `conftest`):
`outputs_of(cell)`, `text_of(cell)` (every text/plain and stream text of a cell), `nb_json(nb)`.
"""
from __future__ import annotations

import asyncio
import os
import pathlib
import threading
import time
from typing import Any, Iterable

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
PREDICTORS = ROOT / "tests" / "predictors"


def make_notebook(cells: Iterable[str | tuple[str, list[str]]]):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for c in cells:
        src, tags = (c, []) if isinstance(c, str) else c
        cell = nbformat.v4.new_code_cell(src)
        if tags:
            cell.metadata["tags"] = list(tags)
        nb.cells.append(cell)
    return nb


def execute(nb, *, cwd: str | os.PathLike | None = None, timeout: int = 120, env: dict[str, str] | None = None,
            allow_errors: bool = False, interrupt: dict[int, float] | None = None,
            save_to: str | os.PathLike | None = None):
    """Execute `nb` in a fresh kernel of this Python; return the saved (JSON round-tripped) notebook."""
    import nbformat
    from nbclient import NotebookClient

    kernel_env = dict(os.environ)
    kernel_env["PYTHONPATH"] = os.pathsep.join([str(ROOT), kernel_env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    kernel_env.update(env or {})
    moments: list[dict[str, float]] = []
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=allow_errors,
                            resources={"metadata": {"path": str(cwd or NOTEBOOKS)}})

    def on_cell_execute(cell, cell_index):
        if interrupt and cell_index in interrupt:
            start = time.monotonic()

            def fire():
                time.sleep(interrupt[cell_index])
                moments.append({"cell": cell_index, "after_s": time.monotonic() - start, "at": time.time()})
                asyncio.run(client.km.interrupt_kernel())

            threading.Thread(target=fire, daemon=True).start()

    client.on_cell_execute = on_cell_execute
    client.execute(env=kernel_env)
    if moments:
        nb.metadata["test_interrupts"] = moments
    text = nbformat.writes(nb)
    if save_to:
        pathlib.Path(save_to).write_text(text)
    return nbformat.reads(text, as_version=4)


def outputs_of(cell) -> list[dict[str, Any]]:
    return list(cell.get("outputs", []))


def text_of(cell) -> str:
    """All the text a reader sees in a cell's outputs (text/plain, streams, error messages)."""
    parts = []
    for out in outputs_of(cell):
        if out.get("output_type") == "stream":
            parts.append(out.get("text", ""))
        elif out.get("output_type") == "error":
            parts.append(f"{out.get('ename')}: {out.get('evalue')}")
        else:
            parts.append(out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def nb_json(nb) -> str:
    import nbformat

    return nbformat.writes(nb)



"""Every notebooks/*.ipynb runs end to end in a real kernel (cwd = notebooks/), as CI does.

Generic on purpose: any notebook added to notebooks/ is executed too. A cell that is meant to
fail must carry the `raises-exception` tag; any other error fails the test. Saved outputs must
never hold a `replicate_jupyter/` traceback frame from an expected error (errors show as one
clear message)."""
from __future__ import annotations

import pathlib

import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(run_notebook, path):
    nb = run_notebook(path, timeout=600)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        tags = cell.metadata.get("tags", [])
        errors = [o for o in cell.get("outputs", []) if o.output_type == "error"]
        if "raises-exception" in tags:
            continue
        assert not errors, f"{path.name} cell {i} failed: {errors[0]['ename']}: {errors[0]['evalue']}"
        assert cell.execution_count is not None

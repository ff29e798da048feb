"""Fixtures shared by the real-kernel tests: `run_cells` and `run_notebook` (see kernel_helpers)."""
from __future__ import annotations

import pathlib
import sys

import pytest

if str(pathlib.Path(__file__).parent) not in sys.path:  # tests import kernel_helpers by name
    sys.path.insert(0, str(pathlib.Path(__file__).parent))

from kernel_helpers import execute, make_notebook  # noqa: E402


@pytest.fixture
def run_cells():
    """`run_cells(cells, **kw)` → the saved notebook (see the module docstring)."""
    def run(cells, **kw):
        return execute(make_notebook(cells), **kw)

    return run


@pytest.fixture
def run_notebook():
    """`run_notebook(path, **kw)` → the saved notebook, executed with cwd = its folder."""
    import nbformat

    def run(path, **kw):
        path = pathlib.Path(path)
        kw.setdefault("cwd", path.parent)
        return execute(nbformat.read(str(path), as_version=4), **kw)

    return run


"""Runs the extension's TypeScript unit tests (cost summing and formatting) with node's test
runner, so `pytest` covers them too. Needs the extension's node_modules, which `pip install .`
(jlpm install) leaves in labextension/."""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

LAB = pathlib.Path(__file__).resolve().parent.parent / "labextension"


def test_typescript_unit_tests_pass():
    jlpm = shutil.which("jlpm", path=str(pathlib.Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    if not (LAB / "node_modules").exists() or jlpm is None:
        pytest.skip("labextension/node_modules missing: run `pip install .` or `jlpm install` in labextension/")
    env = dict(os.environ, PATH=str(pathlib.Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    r = subprocess.run([jlpm, "test"], cwd=LAB, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "# fail 0" in r.stdout and "# pass" in r.stdout
    assert " - the rerun line is only ever built from a safe id" in r.stdout  # compare.test.ts ran too

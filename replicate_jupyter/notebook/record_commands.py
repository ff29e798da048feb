"""`%replicate rerun` and `%replicate replay`: the line commands over a notebook's records.

They join the one command table of `commands.py` when this module is imported (the magics
import it), so `%replicate` alone lists them with the rest.
"""
from __future__ import annotations

import argparse
from typing import Any

from replicate_jupyter.notebook.cellparse import parse_usd
from replicate_jupyter.notebook.commands import _ON, _arg, _command

__all__: list[str] = []


def _usd(text: str) -> float:
    return parse_usd(text, "--budget")


@_command("rerun ID|--cell N|--last [--on BACKEND] [--compare]", "run a recorded prediction again",
          _arg("id", nargs="?"), _arg("--cell", type=int), _arg("--last", action="store_true"), _ON,
          _arg("--compare", action="store_true"))
def _rerun(args: argparse.Namespace) -> Any:
    from replicate_jupyter.notebook.rerun import rerun_command

    return rerun_command(args)


@_command("replay NOTEBOOK.ipynb [--on BACKEND] [--budget USD] [--dry-run]",
          "rerun every recorded prediction of a saved notebook",
          _arg("notebook"), _ON, _arg("--budget", type=_usd, default=None), _arg("--dry-run", action="store_true"))
def _replay(args: argparse.Namespace) -> Any:
    from replicate_jupyter.notebook.rerun import replay_command

    return replay_command(args)

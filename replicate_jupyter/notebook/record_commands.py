"""`%replicate rerun` and `%replicate replay`: the line commands over a notebook's records.

They join the one command table of `commands.py` when this module is imported (the magics
import it), so `%replicate` alone lists them with the rest. Their errors speak the magic's
spelling (`--cell N`, `--notebook PATH`, `--input KEY=VALUE`), not the Python API's
(`records.Spelling`): a user of the magic is told what to type in the magic.
"""
from __future__ import annotations

import argparse
from typing import Any

from replicate_jupyter.notebook.cellparse import parse_usd
from replicate_jupyter.notebook.commands import _ON, _arg, _command, input_pairs
from replicate_jupyter.notebook.records import Spelling

__all__ = ["MAGIC"]

#: the magic's words; a secret is given through a variable, so its value is never typed into the cell
MAGIC = Spelling("%replicate rerun", "one of: an ID, --cell N or --last", "add --notebook PATH to look in a saved .ipynb",
                 "--input {key}={value}", "$VAR (a variable holding it: its value is never saved in the notebook)")
_RERUN = "rerun ID|--cell N|--last [--on BACKEND] [--compare] [--notebook PATH] [--input KEY=VALUE ...]"


def _usd(text: str) -> float:
    return parse_usd(text, "--budget")


@_command(_RERUN, "run a recorded prediction again (--input: give a secret or a moved file again)",
          _arg("id", nargs="?"), _arg("--cell", type=int), _arg("--last", action="store_true"), _ON,
          _arg("--compare", action="store_true"), _arg("--notebook", metavar="PATH", default=None),
          _arg("--input", nargs="+", action="extend", default=[], metavar="KEY=VALUE"))
def _rerun(args: argparse.Namespace) -> Any:
    from replicate_jupyter.notebook.records import find
    from replicate_jupyter.notebook.rerun import rerun_records

    found = find(args.id, cell=args.cell, last=args.last, notebook=args.notebook, words=MAGIC)
    return rerun_records(found, on=args.on, compare=args.compare, input=input_pairs(args.input), words=MAGIC)


@_command("replay NOTEBOOK.ipynb [--on BACKEND] [--budget USD] [--dry-run]",
          "rerun every recorded prediction of a saved notebook",
          _arg("notebook"), _ON, _arg("--budget", type=_usd, default=None), _arg("--dry-run", action="store_true"))
def _replay(args: argparse.Namespace) -> Any:
    from replicate_jupyter.notebook.rerun import replay

    return replay(args.notebook, on=args.on, budget=args.budget, dry_run=args.dry_run)

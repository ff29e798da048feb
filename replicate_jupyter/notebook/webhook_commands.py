"""`%replicate webhooks listen|stop`: a verifying receiver in the kernel, to watch deliveries.

Joins the command table of `commands.py` when imported (the magics import it). The receiver
binds to 127.0.0.1 unless `--host` says otherwise, and its live table shows every delivery
(time, prediction, status, event, verified).
"""
from __future__ import annotations

import argparse
import pathlib
from typing import Any

from replicate_jupyter.errors import InputError, Problem
from replicate_jupyter.notebook.commands import _arg, _command

__all__ = ["receiver", "use_secret_file"]

_state: dict[str, Any] = {"receiver": None}


def use_secret_file(path: str | None) -> None:
    """`c.ReplicateMagics.webhook_secret_file`: sign with the key on the file's first line (None:
    back to $REPLICATE_JUPYTER_WEBHOOK_SECRET or the per-user key). The key itself never sits in
    config, so `%config ReplicateMagics` cannot show it."""
    from replicate_jupyter import webhooks

    key = None
    if path:
        try:
            key = pathlib.Path(path).expanduser().read_text().strip().splitlines()[0]
        except (OSError, IndexError) as exc:
            raise InputError([Problem("webhook_secret_file", "readable", path, "a file whose first line is a whsec_… key",
                                      message=f"cannot read {path!r}: {exc}")]) from None
    webhooks.set_default_secret(key)


def receiver() -> Any:
    """The receiver `%replicate webhooks listen` started (None when none runs)."""
    return _state["receiver"]


@_command("webhooks listen|stop [--port N] [--host HOST]", "receive and verify webhooks in this kernel",
          _arg("action", choices=("listen", "stop")), _arg("--port", type=int, default=None),
          _arg("--host", default="127.0.0.1"))
def _webhooks(args: argparse.Namespace) -> Any:
    from replicate_jupyter import webhooks

    current = _state["receiver"]
    if args.action == "stop":
        if current is None:
            print("No webhook receiver is running.")
            return None
        current.stop()
        _state["receiver"] = None
        return current  # its table: what it received
    if current is not None:
        current.stop()
    _state["receiver"] = webhooks.listen(port=args.port, host=args.host)
    print(f"Listening for webhooks at {_state['receiver'].url} (signed with the kernel's webhook secret); "
          "pass webhook=<that URL> to a prediction.")
    return _state["receiver"]

"""Where the worker token comes from, and which addresses need one.

A worker on any address but loopback runs whoever reaches it, on its owner's hardware and bill,
so serve requires a token there. The token is read from `RJ_WORKER_TOKEN` or the first line of
`--token-file` and never from the command line (argv is world-readable in `ps` and
`/proc/*/cmdline`); serve removes the variable from its own environment at once, so no child
process (coglet, the model) inherits it.
"""
from __future__ import annotations

import ipaddress
import os
import pathlib

__all__ = ["TOKEN_ENV", "REMOTE_FOR_TESTS_ENV", "load_token", "is_loopback"]

TOKEN_ENV = "RJ_WORKER_TOKEN"
#: comma-separated addresses to treat as non-loopback (tests bind 127.0.0.2 and expect the rules
#: of a network address); it can only make serve stricter
REMOTE_FOR_TESTS_ENV = "RJ_SERVE_TREAT_AS_REMOTE"


def load_token(token_file: str | os.PathLike | None = None, environ: dict | None = None) -> str | None:
    """The worker token from `--token-file` (first line) or `RJ_WORKER_TOKEN`, removed from this
    process's environment so no child inherits it. Raises ValueError for an empty or unreadable file."""
    env = os.environ if environ is None else environ
    from_env = env.pop(TOKEN_ENV, None)
    if token_file is not None:
        try:
            text = pathlib.Path(token_file).read_text().strip().splitlines()
        except OSError as exc:
            raise ValueError(f"cannot read the token file {token_file}: {exc.strerror}") from None
        token = text[0].strip() if text else ""
        if not token:
            raise ValueError(f"the token file {token_file} is empty")
        return token
    return from_env.strip() if from_env and from_env.strip() else None


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the worker on this machine (no token needed there)."""
    remote = {h.strip() for h in os.environ.get(REMOTE_FOR_TESTS_ENV, "").split(",") if h.strip()}
    if host in remote:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to a network address

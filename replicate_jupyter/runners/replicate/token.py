"""Where the Replicate API token lives: in this process's memory, never in its environment.

`%replicate login` used to put the token in `os.environ`, and every subprocess, predictor and
worker the kernel starts inherits the environment. Here it is held by a `Token`, an object that
masks its repr, refuses to be pickled and is never written anywhere. A `Client(api_token=...)`
holds its own `Token`; the session's runners read the login token; `REPLICATE_API_TOKEN`, when
the user set it themselves, is still read (as replicate-python reads it), last.

Every token this process has used is remembered (in memory) so `scrub()` can blank it out of
any text that comes back from a server or goes into an error message.
"""
from __future__ import annotations

import os
import threading
from typing import Any

__all__ = ["Token", "TOKEN_ENV", "login", "logout", "current", "configured", "scrub"]

TOKEN_ENV = "REPLICATE_API_TOKEN"
MASK = "r8_***"

_lock = threading.Lock()
_login: Token | None = None
_seen: set[str] = set()


class Token:
    """An API token in memory. `repr`/`str` never show it; it cannot be pickled (so it never
    reaches a Ray worker, a subprocess or a saved object); `reveal()` gives it to the one place
    that sends it, the `Authorization` header."""

    __slots__ = ("__value",)

    def __init__(self, value: str) -> None:
        value = str(value).strip()
        self.__value = value
        if value:
            with _lock:
                _seen.add(value)

    def reveal(self) -> str:
        return self.__value

    def __bool__(self) -> bool:
        return bool(self.__value)

    def __repr__(self) -> str:
        return f"Token({MASK!r})" if self.__value else "Token(None)"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("a Replicate API token is never pickled (it would leave this process)")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Token) and other.__value == self.__value

    __hash__ = None  # type: ignore[assignment]


def login(token: str) -> None:
    """Hold `token` as this kernel's Replicate token (what `%replicate login` does); the
    environment is left as it is."""
    global _login
    t = Token(token)
    with _lock:
        _login = t if t else None


def logout() -> None:
    global _login
    with _lock:
        _login = None


def _from_cog_scope() -> str | None:
    """Inside a Cog predictor run by Replicate, the token it was given (replicate-python reads
    `cog.current_scope().context` first, too). Only when cog is already loaded: never imported
    for this."""
    import sys

    cog = sys.modules.get("cog")
    if cog is None:
        return None
    try:
        for key, value in cog.current_scope().context.items():
            if key.upper() == TOKEN_ENV and value:
                return str(value)
    except Exception:  # noqa: BLE001 — no scope outside a prediction
        return None
    return None


def current(explicit: Token | None = None) -> str | None:
    """The token to send: a client's own, else the login token, else the one in the current
    Cog scope, else `REPLICATE_API_TOKEN` from the environment (set by the user)."""
    if explicit:
        return explicit.reveal()
    with _lock:
        held = _login
    if held:
        return held.reveal()
    scoped = _from_cog_scope()
    if scoped:
        return scoped
    env = os.environ.get(TOKEN_ENV, "").strip()
    if env:
        with _lock:
            _seen.add(env)
    return env or None


def configured(explicit: Token | None = None) -> bool:
    """Whether a call would have a token to send."""
    return current(explicit) is not None


def scrub(text: Any) -> str:
    """`text` with every token this process has used blanked out."""
    text = str(text)
    env = os.environ.get(TOKEN_ENV, "").strip()
    with _lock:
        tokens = set(_seen)
    if env:
        tokens.add(env)
    for token in tokens:
        if len(token) >= 4 and token in text:
            text = text.replace(token, MASK)
    return text

"""Secrets out of everything a prediction shows: one redaction step, applied as events are folded.

A predictor that prints, raises or returns its `Secret` would otherwise put it into the logs, the
error, the traceback, the saved notebook's JSON and HTML and every webhook body. Masking each of
those outputs separately left 2–5 copies per cell; here a prediction builds one `Redactor` from
its secret inputs' values and the session's tokens when it is constructed, and every event is
passed through it *before* it is recorded (`Prediction.emit`). So the history, the fields, the
listeners (display, ledger, webhooks, `stream()` readers) and `to_json()` never hold a copy.

Values shorter than `MIN_LEN` (4) characters are not redacted: replacing "abc" everywhere would
mangle ordinary text, and a secret that short protects nothing anyway. Values taken from the
environment (secret-looking names only) must be `ENV_MIN_LEN` (8) long, for the same reason.

`Secret` is what a secret input is held as in `p.input`: cog.Secret's contract (`repr` is
`Secret(**********)`, `get_secret_value()` is the one explicit accessor), without importing cog,
so `p.input` can be printed, logged or shown in a form without leaking, while every runner still
reaches the value (`runners/remote.encode_values` and `model/arguments` call
`get_secret_value()`; `reveal()` here does the same for a single value).
"""
from __future__ import annotations

import dataclasses
import hmac
import os
import sys
import threading
from typing import Any, Iterable

from replicate_jupyter.errors import looks_secret
from replicate_jupyter.prediction.events import Completed, Error, Event, Log, Output

__all__ = ["MASK", "MIN_LEN", "ENV_MIN_LEN", "Secret", "Redactor", "reveal", "remember", "session_secrets", "masked_input",
           "redact_text"]

MASK = "**********"
MIN_LEN = 4
ENV_MIN_LEN = 8

_lock = threading.Lock()
_remembered: set[str] = set()


class Secret:
    """A secret input's value in memory: masked in `repr`/`str`, revealed only on request.
    Picklable by value on purpose: the Ray backend ships the input to its actor, which must be
    able to hand the predictor the real value (it wraps it in cog.Secret there)."""

    __slots__ = ("_value",)

    def __init__(self, value: Any) -> None:
        self._value = value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({MASK})"

    def __str__(self) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        if not hasattr(other, "get_secret_value"):
            return NotImplemented
        return hmac.compare_digest(str(other.get_secret_value()).encode(), self._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __reduce__(self) -> Any:
        return Secret, (self._value,)


def reveal(value: Any) -> Any:
    """The real value behind a `Secret` (or cog.Secret); anything else unchanged."""
    return value.get_secret_value() if hasattr(value, "get_secret_value") else value


def remember(value: Any) -> None:
    """A token this session uses (`%replicate use … --token=`): redacted from every prediction
    constructed from now on. Held in memory only."""
    text = str(reveal(value) or "").strip()
    if len(text) >= MIN_LEN:
        with _lock:
            _remembered.add(text)


def session_secrets() -> set[str]:
    """Every token this session knows: those `remember`ed, the Replicate tokens used (read from
    `runners.replicate.token` when it is loaded — it is, whenever a token was ever used — so the
    data layer imports no runner), and the values of secret-looking environment variables
    (`REPLICATE_API_TOKEN`, a worker pool's `*_TOKEN`, …)."""
    with _lock:
        out = set(_remembered)
    tok = sys.modules.get("replicate_jupyter.runners.replicate.token")
    if tok is not None:
        with getattr(tok, "_lock", threading.Lock()):
            out |= set(getattr(tok, "_seen", ()))
    out |= _environment_secrets()
    return {s for s in out if len(s) >= MIN_LEN}


_env_seen: tuple[dict, frozenset[str]] | None = None


def _environment_secrets() -> frozenset[str]:
    """The values of secret-looking environment variables, looked for again only when the
    environment changed: every prediction and every draw asks, and walking `os.environ` through
    its Mapping (decoding each entry, matching each name) cost ~0.1 ms each time. CPython keeps
    the raw entries in `os.environ._data`; one C-level dict comparison tells if anything changed."""
    global _env_seen
    raw = getattr(os.environ, "_data", None)
    seen = _env_seen
    if isinstance(raw, dict) and seen is not None and seen[0] == raw:
        return seen[1]
    found = frozenset(value for name, value in os.environ.items()
                      if len(value) >= ENV_MIN_LEN and looks_secret(name))
    if isinstance(raw, dict):
        _env_seen = (dict(raw), found)
    return found


class Redactor:
    """Replaces each known secret value by `MASK` in text, values and events. Built once per
    prediction; `None` stands for "nothing to redact" so the per-token path costs one test."""

    __slots__ = ("values", "longest")

    def __init__(self, values: Iterable[str]) -> None:
        kept = {v for v in values if isinstance(v, str) and len(v) >= MIN_LEN}
        self.values: tuple[str, ...] = tuple(sorted(kept, key=len, reverse=True))  # longest first
        self.longest = len(self.values[0]) if self.values else 0

    @classmethod
    def of(cls, secrets: Iterable[Any], session: bool = True) -> Redactor | None:
        """The redactor for these secret input values (and the session's tokens), or None."""
        values = {str(reveal(s)) for s in secrets if s is not None}
        if session:
            values |= session_secrets()
        r = cls(values)
        return r if r.values else None

    def text(self, text: str) -> str:
        for v in self.values:
            if v in text:
                text = text.replace(v, MASK)
        return text

    def value(self, value: Any) -> Any:
        """Strings inside `value` (lists, tuples, dicts) redacted; the same object when none matched."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, (list, tuple)):
            new = [self.value(v) for v in value]
            if all(a is b for a, b in zip(new, value)):
                return value
            return new if isinstance(value, list) else tuple(new)
        if isinstance(value, dict):
            out = {k: self.value(v) for k, v in value.items()}
            return value if all(out[k] is value[k] for k in value) else out
        return value

    def event(self, e: Event) -> Event:
        """`e` with its text redacted (the same object when nothing in it matched)."""
        if isinstance(e, Log):
            t = self.text(e.text)
            return e if t is e.text else Log(text=t)
        if isinstance(e, Output):
            v = self.value(e.value)
            return e if v is e.value else dataclasses.replace(e, value=v)
        if isinstance(e, Completed):
            err, tb = e.error, e.traceback
            new_err = None if err is None else self.text(err)
            new_tb = None if tb is None else self.text(tb)
            if new_err is err and new_tb is tb:
                return e
            return dataclasses.replace(e, error=new_err, traceback=new_tb)
        if isinstance(e, Error):
            return dataclasses.replace(e, message=self.text(e.message))
        return e


def redact_text(text: Any, extra: Iterable[Any] = ()) -> str:
    """`text` with the session's tokens and `extra` secret values masked (for messages that are
    not a prediction's: a refused option, a backend's error)."""
    r = Redactor.of(extra)
    return str(text) if r is None else r.text(str(text))


def masked_input(input: dict[str, Any], secret: frozenset[str]) -> dict[str, Any]:
    """`input` with each secret as a masked `Secret` (what `p.input` holds); the same dict when
    nothing needed it."""
    if not secret or not (secret & input.keys()):
        return input

    def one(v: Any) -> Any:
        plain = isinstance(v, str) or (hasattr(v, "get_secret_value") and not isinstance(v, Secret))
        return Secret(v) if plain else v

    return {k: (one(v) if k in secret else v) for k, v in input.items()}

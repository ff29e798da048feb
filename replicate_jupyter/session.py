"""The kernel-wide state: the settings, the runners, the predictions, the ledger.

One Session per kernel because a notebook is one workspace: the budget, the ledger and the
prediction list span all its cells. The session is also the one settings object: a traitlets
`Configurable` whose config section is `ReplicateMagics`, so `c.ReplicateMagics.*` in
`ipython_config.py`, `%config ReplicateMagics.x = …`, the line magics (`%replicate use/budget/
price`) and the Python API (`rj.backend(...)`) all set the same traits here. Nothing holds a
copy: the magics' traits are views onto these, and `prices` is a view onto the price table.

Every setting is checked when it is set: a bad value raises `InputError` naming the setting,
the rule, the value and what is allowed, and the setting keeps its old value.
"""
from __future__ import annotations

import copy
import math
import threading
import time
from collections import OrderedDict
from typing import Any, Mapping, NoReturn

from traitlets import Dict, Float, TraitError, Unicode, observe, validate
from traitlets.config import Config, Configurable
from traitlets.config.loader import DeferredConfig, LazyConfigValue

from replicate_jupyter.cost import prices as cost
from replicate_jupyter.cost.ledger import Ledger
from replicate_jupyter.errors import InputError, Problem
from replicate_jupyter.runners import BACKENDS, Runner, create

__all__ = ["Session", "session", "SETTINGS", "refuse", "redacted"]

#: the settings, in the order `%config ReplicateMagics` lists them
SETTINGS = ("default_backend", "default_model", "budget", "preview_rate", "text_rate", "prices", "backend_options")

_SECRET_WORDS = ("token", "key", "secret", "password")


def held_bytes(value: Any, _depth: int = 0) -> int:
    """About how many bytes `value` keeps alive: the files in it (outputs, inputs), its text,
    and for a Prediction its input, output, logs and events. What the session and the form
    history bound themselves by (a count says nothing: one run holds 12 KB, another 500 MB)."""
    if _depth > 8 or value is None:
        return 0
    from replicate_jupyter.prediction.files import FileOutput, InputFile

    if isinstance(value, FileOutput):
        return len(value._data) if value._data is not None else 0
    if isinstance(value, InputFile):
        return len(value._data) if value._data is not None else 0
    if isinstance(value, (str, bytes, bytearray)):
        return len(value)
    if isinstance(value, dict):
        return sum(held_bytes(v, _depth + 1) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(held_bytes(v, _depth + 1) for v in value)
    if hasattr(value, "_history") and hasattr(value, "input"):  # a Prediction
        return (held_bytes(value.input, _depth + 1) + held_bytes(value.output, _depth + 1)
                + len(value.logs or "") + 64 * value.seq)
    return 0


def refuse(field: str, rule: str, value: Any, allowed: str, old: Any = None) -> NoReturn:
    """Raise the InputError for a refused setting (the old value stays, and the message says so)."""
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:59] + "…"
    message = f"{rule} — got {shown}, allowed: {allowed} (unchanged: still {old!r})"
    raise InputError([Problem(field, rule, value, allowed, message=message)])


def redacted(options: dict[str, Any]) -> dict[str, Any]:
    """`options` with the values of secret-looking keys masked, for messages that may be saved."""
    return {k: "***" if any(w in str(k).lower() for w in _SECRET_WORDS) else v for k, v in options.items()}


class _Checked:
    """Mixin for a trait type: its type errors are `InputError`s (the package's one error tree)
    rather than traitlets' `TraitError`, with the same Problem shape as every bad input."""

    name: str | None

    def error(self, obj: Any, value: Any, error: Exception | None = None, info: str | None = None) -> NoReturn:
        refuse(self.name or "setting", "type", value, info or self.info(), getattr(obj, self.name or "", None))  # type: ignore[attr-defined]

    def element_error(self, obj: Any, element: Any, validator: Any, side: str = "Values") -> NoReturn:
        refuse(f"{self.name}", "type", element, f"{side.lower()} that are {validator.info()}",
               getattr(obj, self.name or "", None))


class CheckedFloat(_Checked, Float):
    pass


class CheckedUnicode(_Checked, Unicode):
    pass


class CheckedDict(_Checked, Dict):
    pass


class PriceOverrides(CheckedDict):
    """The price table's per-kernel overrides (SKU → USD per second) as a trait. The table keeps
    the only copy: reading gives its dict, setting validates and replaces its contents. (The
    table is the process's, so a second Session, as tests make, shares it.)"""

    def get(self, obj: Any, cls: Any = None) -> dict[str, float]:
        return cost.prices.overrides

    def set(self, obj: Any, value: Any) -> None:
        new: dict[str, float] = self._validate(obj, value) or {}
        old = dict(cost.prices.overrides)
        if new == old:
            return
        cost.prices.overrides.clear()
        cost.prices.overrides.update(new)
        obj._notify_trait(self.name, old, dict(new))


def _unknown_backend(field: str, name: Any, old: Any) -> NoReturn:
    import difflib

    close = difflib.get_close_matches(str(name), list(BACKENDS), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    refuse(field, "backend", name, "one of: " + ", ".join(BACKENDS) + hint, old)


def _finite_positive(name: str, value: float | None, old: Any, allowed: str) -> None:
    if value is None:
        return
    if not math.isfinite(value):
        refuse(name, "finite", value, allowed, old)
    if value <= 0:
        refuse(name, "minimum", value, allowed, old)


class Session(Configurable):
    """The settings of this kernel and what it runs. Settings are traits (see the module doc);
    `runner(name)`, `track(p)`, `predictions`, `ledger` and `current_cell` are what the API,
    the magics and the forms read."""

    default_backend = CheckedUnicode("local", help="Backend a prediction runs on when it names none: "
                                     + ", ".join(BACKENDS)).tag(config=True)
    default_model = CheckedUnicode("local/shapes", help="Model used when a cell names none").tag(config=True)
    budget = CheckedFloat(None, allow_none=True,
                          help="USD this kernel may spend: predictions past it are refused, a running one "
                          "is canceled when it reaches it (None: no budget)").tag(config=True)
    preview_rate = CheckedFloat(4.0, help="Step previews shown per second, at most").tag(config=True)
    text_rate = CheckedFloat(10.0, help="Streamed-text display updates per second, at most").tag(config=True)
    prices = PriceOverrides(key_trait=Unicode(), value_trait=Float(),
                            help="SKU → USD per second, overriding the shipped price table").tag(config=True)
    backend_options = CheckedDict(key_trait=Unicode(), value_trait=Dict(),
                                  help="Backend → its options, as `%replicate use BACKEND --opt value` "
                                  "sets them, e.g. {'ray': {'address': 'head:6379'}}").tag(config=True)

    @classmethod
    def section_names(cls) -> list[str]:
        """Config is read from the `ReplicateMagics` section (where Jupyter users write it), and
        never from `Session`, which is jupyter_client's message session in a kernel's config."""
        return ["ReplicateMagics"]

    def __init__(self, **kwargs: Any) -> None:
        self.ledger = Ledger()
        self.predictions: "OrderedDict[str, Any]" = OrderedDict()
        self.current_cell: int | None = None
        self._runners: dict[str, Runner] = {}
        self._fresh: dict[str, Runner] = {}  # runners built while checking new backend_options
        self._lock = threading.RLock()
        self._sizes: dict[str, int] = {}  # id → held_bytes, for the finished ones
        super().__init__(**kwargs)

    # ----- config: each setting on its own ---------------------------------------------------------
    def apply(self, settings: Mapping[str, Any]) -> None:
        """Set each of `settings` (name → value, as a config section holds them), checked as it is
        set. The good ones apply; one InputError then lists the refused ones, which keep their
        values. (traitlets would hold every check to the end and stop at the first bad value.)"""
        problems: list[Problem] = []
        for name, value in settings.items():
            if isinstance(value, Config):  # a nested section (c.ReplicateMagics.Other.x): not ours
                continue
            if name not in SETTINGS:
                import difflib

                close = difflib.get_close_matches(name, SETTINGS, n=1)
                problems.append(Problem(name, "unknown", value, "one of: " + ", ".join(SETTINGS),
                                        message=f"unknown setting{f' (did you mean {close[0]!r}?)' if close else ''}"
                                        f"; settings: {', '.join(SETTINGS)}"))
                continue
            if isinstance(value, LazyConfigValue):  # c.ReplicateMagics.prices.update({...})
                value = value.get_value(getattr(self, name))
            elif isinstance(value, DeferredConfig):  # from the command line or the environment
                value = value.get_value(self.traits()[name])
            try:
                setattr(self, name, copy.deepcopy(value))
            except InputError as exc:
                problems += exc.problems
        if problems:
            raise InputError(problems)

    def _load_config(self, cfg: Config, section_names: list[str] | None = None, traits: Any = None) -> None:
        self.apply(self._find_my_config(cfg))

    # ----- checks: a bad value raises InputError and changes nothing ------------------------------
    @validate("default_backend")
    def _check_backend(self, proposal: Any) -> str:
        name = proposal["value"]
        if name not in BACKENDS:
            _unknown_backend("default_backend", name, self.default_backend)
        return str(name)

    @validate("default_model")
    def _check_model(self, proposal: Any) -> str:
        ref = proposal["value"]
        if not ref.strip() or ref != ref.strip() or "\n" in ref:
            refuse("default_model", "format", ref, "a model reference: owner/name[:version], "
                   "path/predict.py:Predictor, a folder with cog.yaml, or hf:REPO_ID",
                   self.default_model)
        return str(ref)

    @validate("budget")
    def _check_budget(self, proposal: Any) -> float | None:
        value = proposal["value"]
        _finite_positive("budget", value, self.budget, "a number of USD > 0, or None (no budget)")
        return value

    @validate("preview_rate", "text_rate")
    def _check_rate(self, proposal: Any) -> float:
        name, value = proposal["trait"].name, proposal["value"]
        _finite_positive(name, value, getattr(self, name), "updates per second, a number > 0")
        return float(value)

    @validate("prices")
    def _check_prices(self, proposal: Any) -> dict[str, float]:
        new = proposal["value"]
        for sku, usd in new.items():
            if not sku.strip():
                refuse("prices", "sku", sku, "a SKU name such as cpu or gpu-a100-large", dict(cost.prices.overrides))
            if not math.isfinite(usd) or usd < 0:
                refuse(f"prices.{sku}", "minimum" if math.isfinite(usd) else "finite", usd,
                       "USD per second, a finite number >= 0", dict(cost.prices.overrides))
        return dict(new)

    @validate("backend_options")
    def _check_backend_options(self, proposal: Any) -> dict[str, dict[str, Any]]:
        """A backend's new options are tried by building its runner (each runner checks its own
        options); the runner built is the one used, so nothing is built twice."""
        new, current = proposal["value"], self.backend_options
        fresh: dict[str, Runner] = {}
        try:
            for name, options in new.items():
                if name not in BACKENDS:
                    _unknown_backend("backend_options", name, list(current))
                if current.get(name) == options:
                    continue
                try:
                    fresh[name] = self._build(name, options)
                except (TypeError, ValueError, TraitError) as exc:
                    refuse(f"backend_options.{name}", "option", redacted(options), str(exc),
                           redacted(current.get(name, {})))
        except InputError:
            for runner in fresh.values():
                runner.close()
            raise
        self._fresh = fresh
        return {name: dict(options) for name, options in new.items()}

    # ----- effects of a change ------------------------------------------------------------------
    @observe("backend_options")
    def _options_changed(self, change: Any) -> None:
        """Runners of backends whose options changed are replaced by the ones the check built
        (or dropped, to be rebuilt on next use); the old ones are closed."""
        fresh, self._fresh = self._fresh, {}
        retired = []
        with self._lock:
            for name in set(change.old) | set(change.new):
                if name in fresh or change.old.get(name) != change.new.get(name):
                    old = self._runners.pop(name, None)
                    if old is not None:
                        retired.append(old)
                if name in fresh:
                    self._runners[name] = fresh[name]
        for runner in retired:
            self._retire(runner)

    def _retire(self, runner: Runner, grace: float = 10.0) -> None:
        """A replaced runner cancels its running predictions first (each says why), then closes:
        never a run torn down mid-predict, or left billing on Replicate with nobody following it."""
        running = [p for p in list(self.predictions.values()) if getattr(p, "_runner", None) is runner and not p.done]
        for p in running:
            p.cancel(reason=f"canceled: the {runner.name} backend was reconfigured while it ran")
        end = time.monotonic() + grace
        # until each has its final state recorded (not `done`: its done-callbacks may need this
        # session's lock, which a settings change holds while it runs)
        while any(not p.finished for p in running) and time.monotonic() < end:
            time.sleep(0.02)
        runner.close()

    @observe("preview_rate")
    def _preview_rate_changed(self, change: Any) -> None:
        """The local runner throttles previews itself: it gets the new rate unless its own
        backend options fix one."""
        runner = self._runners.get("local")
        if runner is not None and "preview_rate" not in self.backend_options.get("local", {}):
            runner.preview_rate = change.new  # type: ignore[attr-defined]

    # ----- runners ----------------------------------------------------------------------------
    def _build(self, name: str, options: dict[str, Any]) -> Runner:
        options = dict(options)
        if name == "local":
            options.setdefault("preview_rate", self.preview_rate)
        return create(name, **options)

    def runner(self, name: str | None = None) -> Runner:
        """The runner of backend `name` (default: `default_backend`), built on first use."""
        name = name or self.default_backend
        with self._lock:
            r = self._runners.get(name)
            if r is None:
                r = self._runners[name] = self._build(name, self.backend_options.get(name, {}))
            return r

    def use(self, name: str, **options: Any) -> Runner:
        """Make `name` the default backend, (re)configured with `options` when given (merged
        into the ones it had). A bad name or option raises and changes nothing."""
        if name not in BACKENDS:
            _unknown_backend("backend", name, self.default_backend)
        with self._lock:  # two threads configuring one backend: neither one's options are lost
            if options:
                merged = {**self.backend_options.get(name, {}), **options}
                self.backend_options = {**self.backend_options, name: merged}
            runner = self.runner(name)
            self.default_backend = name
        return runner

    #: bytes the finished predictions kept by id may hold together (`held_bytes`), and how
    #: many at most; the oldest finished ones go first, running ones are always kept
    max_held_bytes = 256 * 1024 * 1024
    max_held = 10_000

    def track(self, prediction: Any) -> None:
        """Keep `prediction` findable by id (`rj.predictions.get`, `%replicate cancel`),
        bounded by bytes: a finished prediction's size is counted once it is final."""
        with self._lock:
            self.predictions[prediction.id] = prediction
            self._sizes = getattr(self, "_sizes", {})
            self._trim()
        prediction.on_done(self._measured)

    def _measured(self, prediction: Any) -> None:
        with self._lock:
            if prediction.id in self.predictions:
                self._sizes[prediction.id] = held_bytes(prediction)
                self._trim()

    def _trim(self) -> None:
        """Drop the oldest finished predictions past `max_held_bytes` or `max_held` (under the lock)."""
        total = sum(self._sizes.values())
        for pid in list(self.predictions):
            if total <= self.max_held_bytes and len(self.predictions) <= self.max_held:
                break
            if pid not in self._sizes:  # still running (or not measured yet): kept
                continue
            self.predictions.pop(pid)
            total -= self._sizes.pop(pid)

    def close(self) -> None:
        with self._lock:
            runners, self._runners = list(self._runners.values()), {}
        for r in runners:
            r.close()


session = Session()

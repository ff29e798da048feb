"""`%%replicate` and the `%replicate …` line magics.

The magics only use the public API (`api.prepare/execute/start`), the session and the display;
they never talk to a runner. The line commands live in `commands.py` (one table). Settings are
the session's traits (the one settings object); the magics expose them under the name Jupyter
users configure, so `ipython_config.py` and `%config` reach them:

    c.ReplicateMagics.default_model = "local/shapes"
    c.ReplicateMagics.default_backend = "local"
    c.ReplicateMagics.prices = {"gpu-a100-large": 0.0012}
    c.ReplicateMagics.preview_rate = 4.0      # step previews per second, at most
    c.ReplicateMagics.text_rate = 10.0        # streamed-text updates per second, at most
    c.ReplicateMagics.budget = 0.50           # USD for this kernel (None: no budget)
    c.ReplicateMagics.backend_options = {"ray": {"address": "head:6379"}}
    c.ReplicateMagics.price_file = "~/replicate-prices.json"  # a price table (prices.json's shape)

These traits hold no value of their own (but `price_file`, which is read into the price table):
reading one reads the session, setting one sets the session (which checks it), so
`rj.backend(...)`, `%replicate budget`, `%config` and the config file can never disagree. Config applies when the extension loads.

Loading the extension imports no torch, diffusers, ray or cog.
"""
from __future__ import annotations

import copy
import functools
import sys
from collections import ChainMap
from typing import TYPE_CHECKING, Any, Callable, Mapping

from IPython.core.magic import Magics, cell_magic, line_magic, magics_class, needs_local_scope, no_var_expand
from traitlets import TraitType, Unicode, observe

from replicate_jupyter import api
from replicate_jupyter.errors import InputError, ReplicateJupyterError
from replicate_jupyter.notebook import commands, record_commands, renderers, webhook_commands  # noqa: F401  (register)
from replicate_jupyter.notebook import live as rjlive
from replicate_jupyter.notebook.cellparse import LineError, model_axis, parse_body, parse_line, sweep_grid
from replicate_jupyter.session import Session, session

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

__all__ = ["ReplicateMagics", "load_ipython_extension", "unload_ipython_extension", "HELP"]

HELP = commands.help_text()


#: `var_expand`'s depth from `replicate_cell` for the frame IPython's own expansion reads
#: (`run_cell_magic` passes 2 from one frame further out)
_LINE_FRAME = 3


def _mark(exc: BaseException) -> BaseException:
    exc._rj_magic = True  # type: ignore[attr-defined]
    return exc


class _OnSession:
    """Mixin for a trait whose value lives on the magics' session: get and set go there."""

    name: str

    def get(self, obj: Any, cls: Any = None) -> Any:
        return getattr(obj.session, self.name)

    def set(self, obj: Any, value: Any) -> None:
        setattr(obj.session, self.name, value)


def on_session(name: str) -> TraitType:
    """The session's trait `name`, as a trait of the magics that reads and writes the session:
    same type, help and default, so `%config ReplicateMagics` and `ipython profile create` show
    it as the session defines it."""
    source = Session.class_traits()[name]
    shown = next(c for c in type(source).__mro__ if c.__module__.startswith("traitlets."))
    view = copy.deepcopy(source)
    view.__class__ = type(shown.__name__, (_OnSession, type(source)), {})
    return view


@magics_class
class ReplicateMagics(Magics):
    default_backend = on_session("default_backend")
    default_model = on_session("default_model")
    budget = on_session("budget")
    preview_rate = on_session("preview_rate")
    text_rate = on_session("text_rate")
    prices = on_session("prices")
    backend_options = on_session("backend_options")
    price_file = Unicode(None, allow_none=True, help="A JSON price table read over the shipped one (the shape of "
                         "replicate_jupyter/cost/prices.json: hardware SKU → USD per second, models → USD per "
                         "image/token/…, each with source and date)").tag(config=True)

    webhook_secret_file = Unicode(None, allow_none=True, help="A file whose first line is the key (whsec_…) the "
                                  "kernel signs webhooks with (else $REPLICATE_JUPYTER_WEBHOOK_SECRET, else a "
                                  "per-user key it generates once); a file, so the key never shows in %config").tag(config=True)

    def __init__(self, shell: Any = None, session: Session = session, **kwargs: Any) -> None:
        self.session = session
        self._loading = True  # config read while constructing: refused settings are reported, not raised
        super().__init__(shell=shell, **kwargs)
        self._loading = False

    @classmethod
    def section_names(cls) -> list[str]:
        return ["ReplicateMagics"]

    def _load_config(self, cfg: Any, section_names: Any = None, traits: Any = None) -> None:
        """Config goes to the session, setting by setting (`Session.apply`). From the config file
        a refused setting is reported and the extension still loads; from `%config` it raises,
        and IPython shows the message."""
        mine = self._find_my_config(cfg)
        price_file = mine.pop("price_file", None) if "price_file" in mine else None
        secret_file = mine.pop("webhook_secret_file", None) if "webhook_secret_file" in mine else None
        try:
            if price_file is not None:
                self.price_file = price_file
            if secret_file is not None:
                self.webhook_secret_file = secret_file
            self.session.apply(mine)
        except InputError as exc:
            if not self._loading:
                raise
            print(f"c.ReplicateMagics: {exc}", file=sys.stderr)

    @observe("price_file")
    def _read_price_file(self, change: Any) -> None:
        """A table file set (config file or `%config`): read it now; a bad one is refused whole."""
        if change.new:
            from replicate_jupyter.cost import prices

            try:
                prices.prices.load(change.new)
            except InputError:
                self.set_trait("price_file", change.old)
                raise

    @observe("webhook_secret_file")
    def _read_webhook_secret(self, change: Any) -> None:
        """The signing key from a file (config or `%config`); None goes back to the default."""
        try:
            webhook_commands.use_secret_file(change.new)
        except InputError:
            self.set_trait("webhook_secret_file", change.old)
            raise

    # ----- the magics ----------------------------------------------------------------------------
    # IPython types line_magic's result as a union that needs_local_scope does not accept
    @needs_local_scope
    @line_magic("replicate")  # type: ignore[arg-type]
    def replicate_line(self, line: str = "", local_ns: Any = None) -> Any:
        """Line commands (see `%replicate` alone for the list)."""
        try:
            return commands.run_line(line)
        except LineError as exc:  # the command line itself: a usage message, as IPython's magics give
            raise _usage(str(exc)) from None
        except ReplicateJupyterError as exc:
            raise _mark(exc) from None
        except ValueError as exc:
            raise _usage(str(exc)) from None

    @needs_local_scope
    @cell_magic("replicate")  # type: ignore[arg-type]
    @no_var_expand
    def replicate_cell(self, line: str = "", cell: str = "", local_ns: Any = None) -> Any:
        """Run a model on the cell's inputs; the cell's value is the Prediction.

        `$name` and `{expr}` in the option line expand as IPython expands any magic's line; done
        here, only for a line that has one, since IPython's expansion copies the whole namespace
        on every call (the common line, `MODEL --seed 7`, has nothing to expand)."""
        if self.shell is not None and ("$" in line or "{" in line):
            line = self.shell.var_expand(line, _LINE_FRAME)
        # names as the cell sees them, without copying the whole namespace on every run
        ns = ChainMap(local_ns or {}, self.shell.user_ns if self.shell is not None else {})
        first, _, rest = (line or "").strip().partition(" ")
        if first == "estimate" and rest.strip():  # `%%replicate estimate MODEL` + a body: the forecast only
            try:
                return self._estimate(rest, cell, ns)
            except ReplicateJupyterError as exc:
                raise _mark(exc) from None
        try:
            args = parse_line(line)
        except LineError as exc:
            raise _usage(f"{exc}\n\n{HELP.splitlines()[0]}") from None
        try:
            if args.sweep:
                result = self._run_sweep(args, cell, ns)
            else:
                result = self._run_one(args, cell, ns)
        except ReplicateJupyterError as exc:
            raise _mark(exc) from None
        if args.out and self.shell is not None:
            self.shell.user_ns[args.out] = result
        return result

    def _inputs(self, args, cell: str, ns: Mapping[str, Any], extra: dict | None = None,
                model: str | None = None, on: str | None = None) -> tuple[Any, dict, Callable[[], dict]]:
        """The model, the body's inputs, and its schema as a function: looked up only when read
        (`api.prepare` resolves the model anyway; the lookup is ~0.1 ms of a cell)."""
        from replicate_jupyter.model.schema import first_string_input

        model = model or args.model or self.session.default_model
        schema = functools.cache(lambda: api.schema(model, on=on or args.on))
        given = parse_body(cell, ns, text_field=lambda: first_string_input(schema()), model=model)
        if extra:
            given.update(extra)
        return model, given, schema

    def _refuse_forecast(self, model: str, given: dict, schema_of: Callable[[], dict], on: str | None, max_cost: float | None):
        """Before anything is dispatched: refuse a run whose forecast passes the budget or its
        --max-cost (cost/guard.py says how; api.prepare does the same for the Python API).
        The input is checked first, so a bad one is named before any money is."""
        if self.session.budget is None and max_cost is None:
            return
        from replicate_jupyter.cost.guard import check_forecast
        from replicate_jupyter.model.validation import validate

        schema = schema_of()
        name = str((schema.get("info") or {}).get("x-replicate-model") or model)
        clean = validate(schema, given, model=name)
        probe = _Probe(name, clean, schema, on or self.session.default_backend)
        check_forecast(probe, self.session.budget, self.session.ledger, max_cost)  # type: ignore[arg-type]

    def _estimate(self, rest: str, cell: str, ns: Mapping[str, Any]) -> None:
        model, given, _schema = self._inputs(args := parse_line(rest), cell, ns)
        print(commands.estimate_text(model, given, on=args.on))

    def _run_one(self, args, cell: str, ns: Mapping[str, Any]):
        model, given, schema = self._inputs(args, cell, ns)
        self._refuse_forecast(model, given, schema, args.on, args.max_cost)
        p = api.prepare(model, given, on=args.on, seed=args.seed, max_cost=args.max_cost)
        live = rjlive.LiveDisplay(p)
        live.async_mode = args.run_async
        live.attach()
        if args.run_async:
            api.start(p)
            return p
        try:
            api.execute(p)
        except KeyboardInterrupt:
            # api.execute already canceled it on its backend and recorded the partial time
            p._done.wait(10)
        live.finish()
        return p

    def _run_sweep(self, args, cell: str, ns: Mapping[str, Any]):
        """The grid of inputs; `model` is an axis too (each value resolved and validated on its
        own schema, a value `BACKEND:MODEL` runs on that backend)."""
        combos = sweep_grid(args.sweep)
        swept_seed = any(k == "seed" for k, _ in args.sweep)
        planned = []
        for combo in combos:  # every combination is validated before anything runs
            extra = dict(combo)
            model, on = model_axis(extra.pop("model", None), args.on)
            model, given, schema = self._inputs(args, cell, ns, extra=extra, model=model, on=on)
            planned.append((model, given, schema, on))
        for model, given, schema, on in planned:
            self._refuse_forecast(model, given, schema, on, args.max_cost)
        preds = [api.prepare(model, given, on=on, seed=None if swept_seed else args.seed, max_cost=args.max_cost)
                 for model, given, _schema, on in planned]
        labels = [", ".join(f"{k}={v}" for k, v in c.items()) for c in combos]
        grid = rjlive.GridDisplay(preds, labels)
        grid.async_mode = args.run_async
        grid.attach()
        if args.run_async:
            for p in preds:
                api.start(p)
            return preds
        try:
            together = [p for p in preds if getattr(p._runner, "concurrent", False)]
            for p in together:
                api.start(p)
            for p in preds:
                if p not in together:
                    api.execute(p)
            for p in together:
                p.wait()
        except KeyboardInterrupt:
            _cancel_all(preds)
        grid.finish()
        return preds


class _Probe:
    """A run not yet prepared, as the forecast check reads one (model, input, schema, backend)."""

    def __init__(self, model: str, input: dict, schema: dict, backend: str) -> None:
        self.model, self.input, self.schema, self.backend, self.version = model, input, schema, backend, None


# ----- errors: one clear message, not a traceback of our internals ---------------------------
def _usage(message: str) -> Exception:
    from IPython.core.error import UsageError
    return UsageError(message)


_installed: dict[str, Any] = {}


def _short_traceback(shell, etype, value, tb, tb_offset=None):
    """Errors raised by the magics show as one error output with the message (no traceback of
    this package's internals); everything else keeps IPython's normal traceback, or the handler
    that was installed before ours. IPython ignores what a custom handler returns, so it shows
    the error itself."""
    from replicate_jupyter.errors import ReplicateJupyterError

    prev_types, prev_handler = _installed.get("prev", ((), None))
    if isinstance(value, ReplicateJupyterError) and getattr(value, "_rj_magic", False):
        stb = [f"\x1b[0;31m{etype.__name__}\x1b[0m: {value}"]
    elif prev_types and prev_handler is not None and isinstance(value, prev_types):
        return prev_handler(etype, value, tb, tb_offset=tb_offset)
    else:
        stb = shell.InteractiveTB.structured_traceback(etype, value, tb, tb_offset=tb_offset)
    shell._showtraceback(etype, value, stb)
    return stb


def _cell_number(ip, store_history: bool = True) -> int | None:
    """The number the running cell shows as In[n]. IPython 9 bumps `execution_count` before
    running a cell, IPython 8 after; the offset is measured (and corrected after each cell)."""
    if not store_history:
        return ip.execution_count
    return ip.execution_count - _installed.get("offset", 0)


def _pre_run_cell(info=None) -> None:
    ip = _installed.get("shell")
    if ip is not None:
        store = bool(getattr(info, "store_history", True))
        _installed["pending"] = (ip.execution_count, store)
        session.current_cell = _cell_number(ip, store)


def _post_run_cell(result=None) -> None:
    pending = _installed.pop("pending", None)
    count = getattr(result, "execution_count", None)
    if pending is not None and pending[1] and count is not None:
        _installed["offset"] = pending[0] - count
    rjlive.flush_finished()


def load_ipython_extension(ipython: InteractiveShell) -> None:
    """`%load_ext replicate_jupyter`."""
    if _installed.get("shell") is ipython:
        return
    magics = ReplicateMagics(shell=ipython)
    ipython.register_magics(magics)
    _installed["shell"] = ipython
    _installed["magics"] = magics
    _installed["prev"] = (tuple(ipython.custom_exceptions), getattr(ipython, "CustomTB", None))
    ipython.set_custom_exc(tuple(ipython.custom_exceptions) + (ReplicateJupyterError,), _short_traceback)
    ipython.events.register("pre_run_cell", _pre_run_cell)
    ipython.events.register("post_run_cell", _post_run_cell)
    hist = getattr(getattr(ipython, "history_manager", None), "input_hist_raw", None)
    if hist:  # the load cell's input is stored already: its number is len - 1
        _installed["offset"] = max(0, ipython.execution_count - (len(hist) - 1))
    session.current_cell = _cell_number(ipython)
    renderers.register(ipython)


def unload_ipython_extension(ipython: InteractiveShell) -> None:
    if _installed.get("shell") is not ipython:
        return
    renderers.unregister(ipython)
    for name, fn in (("pre_run_cell", _pre_run_cell), ("post_run_cell", _post_run_cell)):
        try:
            ipython.events.unregister(name, fn)
        except ValueError:
            pass
    prev_types, prev_handler = _installed.get("prev", ((), None))
    if prev_types:
        ipython.custom_exceptions = prev_types
        ipython.CustomTB = prev_handler
    else:
        ipython.set_custom_exc((), None)
    magics = _installed.get("magics")
    if magics is not None:
        for kind in ("line", "cell"):
            ipython.magics_manager.magics[kind].pop("replicate", None)
        if magics in ipython.configurables:
            ipython.configurables.remove(magics)
    _installed.clear()


def _cancel_all(preds: list) -> None:
    """After an interrupt: cancel what runs, and close out what never started (no charge)."""
    from replicate_jupyter.prediction.events import Completed

    for p in preds:
        if p.done:
            continue
        if p.started_at is None and not p.background:
            p.cancel_event.set()
            p.emit(Completed(status="canceled", error="interrupted before it started", metrics={"predict_time": 0.0}))
        else:
            p.cancel(reason="interrupted")
    for p in preds:
        p._done.wait(10)

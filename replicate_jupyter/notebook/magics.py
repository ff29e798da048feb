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

These traits hold no value of their own: reading one reads the session, setting one sets the
session (which checks it), so `rj.backend(...)`, `%replicate budget`, `%config` and the config
file can never disagree. Config applies when the extension loads.

Loading the extension imports no torch, diffusers, ray or cog.
"""
from __future__ import annotations

import copy
import sys
from collections import ChainMap
from typing import TYPE_CHECKING, Any, Mapping

from IPython.core.magic import Magics, cell_magic, line_magic, magics_class, needs_local_scope
from traitlets import TraitType

from replicate_jupyter import api
from replicate_jupyter.errors import InputError, ReplicateJupyterError
from replicate_jupyter.notebook import commands, renderers
from replicate_jupyter.notebook import live as rjlive
from replicate_jupyter.notebook.cellparse import LineError, parse_body, parse_line, sweep_grid
from replicate_jupyter.session import Session, session

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

__all__ = ["ReplicateMagics", "load_ipython_extension", "unload_ipython_extension", "HELP"]

HELP = commands.help_text()


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
        try:
            self.session.apply(self._find_my_config(cfg))
        except InputError as exc:
            if not self._loading:
                raise
            print(f"c.ReplicateMagics: {exc}", file=sys.stderr)

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
    def replicate_cell(self, line: str = "", cell: str = "", local_ns: Any = None) -> Any:
        """Run a model on the cell's inputs; the cell's value is the Prediction."""
        # names as the cell sees them, without copying the whole namespace on every run
        ns = ChainMap(local_ns or {}, self.shell.user_ns if self.shell is not None else {})
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

    def _inputs(self, args, cell: str, ns: Mapping[str, Any], extra: dict | None = None) -> tuple[Any, dict]:
        from replicate_jupyter.model.schema import first_string_input

        model = args.model or self.session.default_model
        # the schema only when the body is text (resolving a model may load torch): a bad body
        # is refused at once, before any model is touched
        given = parse_body(cell, ns, text_field=lambda: first_string_input(api.schema(model, on=args.on)), model=model)
        if extra:
            given.update(extra)
        return model, given

    def _run_one(self, args, cell: str, ns: Mapping[str, Any]):
        model, given = self._inputs(args, cell, ns)
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
        combos = sweep_grid(args.sweep)
        swept_seed = any(k == "seed" for k, _ in args.sweep)
        preds = []
        for combo in combos:  # every combination is validated before anything runs
            model, given = self._inputs(args, cell, ns, extra=combo)
            preds.append(api.prepare(model, given, on=args.on, seed=None if swept_seed else args.seed,
                                     max_cost=args.max_cost))
        labels = [", ".join(f"{k}={v}" for k, v in c.items()) for c in combos]
        grid = rjlive.GridDisplay(preds, labels)
        grid.async_mode = args.run_async
        grid.attach()
        if args.run_async:
            for p in preds:
                api.start(p)
            return preds
        try:
            if getattr(preds[0]._runner, "concurrent", False):
                for p in preds:
                    api.start(p)
                for p in preds:
                    p.wait()
            else:
                for p in preds:
                    api.execute(p)
        except KeyboardInterrupt:
            _cancel_all(preds)
        grid.finish()
        return preds


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

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
import sys
from collections import ChainMap
from typing import TYPE_CHECKING, Any

from IPython.core.magic import Magics, cell_magic, line_magic, magics_class, needs_local_scope, no_var_expand
from traitlets import TraitType, Unicode, observe

from replicate_jupyter.errors import InputError, ReplicateJupyterError
from replicate_jupyter.notebook import commands, record_commands, renderers, webhook_commands  # noqa: F401  (register)
from replicate_jupyter.notebook import live as rjlive
from replicate_jupyter.notebook.cell_runs import CellRun
from replicate_jupyter.notebook.cellparse import LineError, parse_line
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
        run = CellRun(self.session, self.shell.user_ns if self.shell is not None else None)
        if first == "estimate" and rest.strip():  # `%%replicate estimate MODEL` + a body: the forecast only
            try:
                model, given, _schema = run.inputs(est := parse_line(rest), cell, ns)
                print(commands.estimate_text(model, given, on=est.on))
                return None
            except ReplicateJupyterError as exc:
                raise _mark(exc) from None
        try:
            args = parse_line(line)
        except LineError as exc:
            raise _usage(f"{exc}\n\n{HELP.splitlines()[0]}") from None
        try:
            result = run.sweep(args, cell, ns) if args.sweep else run.one(args, cell, ns)
        except ReplicateJupyterError as exc:
            raise _mark(exc) from None
        if args.out and self.shell is not None:
            self.shell.user_ns[args.out] = result
        return result

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
        _installed["ledger_at"] = len(session.ledger)  # the cell's predictions are recorded after this
        session.current_cell = _cell_number(ip, store)


def _post_run_cell(result=None) -> None:
    pending = _installed.pop("pending", None)
    count = getattr(result, "execution_count", None)
    if pending is not None and pending[1] and count is not None:
        _installed["offset"] = pending[0] - count
    rjlive.flush_finished()
    _cost_line(session.current_cell, _installed.pop("ledger_at", 0))


def _cost_line(cell: int | None, since: int) -> None:
    """Every cell that ran predictions ends with one cost line (DESIGN 7): a cell whose
    predictions showed no card (`rj.run`, `rj.stream`, loops of them) gets one here, after its
    own output. Only the ledger entries recorded while the cell ran are read (`since`)."""
    if cell is None or len(session.ledger) <= since:
        return
    shown = [session.predictions.get(e.id) for e in session.ledger.entries[since:] if e.cell == cell]
    quiet = [p for p in shown if p is not None and p.display_cell is None]
    if quiet:
        from IPython.display import display

        from replicate_jupyter.notebook.display import cost_bundle

        display(cost_bundle(quiet), raw=True)


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


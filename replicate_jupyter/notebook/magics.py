"""`%%replicate` and the `%replicate …` line magics.

The magics only use the public API (`api.prepare/execute/start`), the session and the display;
they never talk to a runner. Settings are traitlets so they can live in `ipython_config.py`:

    c.ReplicateMagics.default_model = "local/shapes"
    c.ReplicateMagics.default_backend = "local"
    c.ReplicateMagics.prices = {"gpu-a100-large": 0.0012}
    c.ReplicateMagics.preview_rate = 4.0      # step previews per second, at most
    c.ReplicateMagics.text_rate = 10.0        # streamed-text updates per second, at most
    c.ReplicateMagics.budget = 0.50           # USD for this kernel (None: no budget)

Loading the extension imports no torch, diffusers, ray or cog.
"""
from __future__ import annotations

import os
import shlex
from collections import ChainMap
from typing import Any, Callable, Mapping

from IPython.core.magic import Magics, cell_magic, line_magic, magics_class, needs_local_scope
from IPython.display import display
from traitlets import Dict, Float, Unicode, observe

from replicate_jupyter import api
from replicate_jupyter.cost import prices as cost
from replicate_jupyter.notebook import display as rjdisplay, live as rjlive
from replicate_jupyter.notebook.cellparse import LineError, parse_body, parse_line, parse_options, sweep_grid
from replicate_jupyter.errors import ReplicateJupyterError
from replicate_jupyter.session import session

__all__ = ["ReplicateMagics", "load_ipython_extension", "unload_ipython_extension", "HELP"]

HELP = """\
%%replicate [MODEL] [--on BACKEND] [--async] [--seed N] [--max-cost USD] [-o NAME] [--sweep KEY=V1,V2 ...]
<inputs as a YAML mapping, or text for the model's first string input; {name} and $name read the notebook>

%replicate models                      models the active backend can run
%replicate schema MODEL                the model's inputs
%replicate form MODEL                  a form for the model's inputs
%replicate use BACKEND [--opt value]   switch backend (local, workers, ray, replicate)
%replicate workers [add|remove URL...] the worker pool
%replicate predictions                 running and finished predictions
%replicate cancel ID                   cancel a running prediction
%replicate cost [--reset]              the cost ledger, by cell and by model
%replicate budget USD|off              refuse/cancel predictions past this total
%replicate price SKU=USD_PER_S         override a price
%replicate login                       set the Replicate API token (kept in memory only)"""


def _mark(exc: BaseException) -> BaseException:
    exc._rj_magic = True  # type: ignore[attr-defined]
    return exc


@magics_class
class ReplicateMagics(Magics):
    default_model = Unicode(session.default_model, help="Model used when a cell names none").tag(config=True)
    default_backend = Unicode(session.default_backend, help="local, workers, ray or replicate").tag(config=True)
    prices = Dict(value_trait=Float(), default_value={}, help="SKU → USD per second overrides").tag(config=True)
    preview_rate = Float(session.preview_rate, help="Step previews shown per second, at most").tag(config=True)
    text_rate = Float(session.text_rate, help="Streamed-text display updates per second, at most").tag(config=True)
    budget = Float(None, allow_none=True, help="USD this kernel may spend (None: no budget)").tag(config=True)

    def __init__(self, shell=None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self._apply_all()
        self._commands: dict[str, Callable[[list[str]], Any]] = {
            "models": self._models, "schema": self._schema, "form": self._form, "use": self._use,
            "workers": self._workers, "predictions": self._predictions, "cancel": self._cancel,
            "cost": self._cost, "budget": self._budget, "price": self._price, "login": self._login,
            "help": self._help,
        }

    # ----- traitlets → session --------------------------------------------------------------------
    def _apply_all(self) -> None:
        session.default_model = self.default_model
        session.default_backend = self.default_backend
        session.preview_rate = self.preview_rate
        session.text_rate = self.text_rate
        if self.budget is not None:
            session.budget = self.budget
        for sku, usd in self.prices.items():
            cost.prices.set(sku, usd)

    @observe("default_model", "default_backend", "preview_rate", "text_rate", "budget", "prices")
    def _changed(self, change) -> None:
        self._apply_all()

    # ----- %%replicate ---------------------------------------------------------------------------
    @needs_local_scope
    @line_magic("replicate")
    def replicate_line(self, line: str = "", local_ns=None):
        """Line magics (see `%replicate` alone for the list)."""
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise _usage(f"cannot split {line!r}: {exc}")
        if not words:
            return self._help([])
        cmd, args = words[0], words[1:]
        fn = self._commands.get(cmd)
        if fn is None:
            import difflib

            close = difflib.get_close_matches(cmd, list(self._commands), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise _usage(f"unknown command {cmd!r}.{hint} Run %replicate for the list.")
        try:
            return fn(args)
        except ReplicateJupyterError as exc:
            raise _mark(exc) from None
        except (LineError, ValueError) as exc:
            raise _usage(str(exc)) from None

    @needs_local_scope
    @cell_magic("replicate")
    def replicate_cell(self, line: str = "", cell: str = "", local_ns=None):
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

        model = args.model or session.default_model
        schema = api.schema(model, on=args.on)
        given = parse_body(cell, ns, text_field=first_string_input(schema), model=model)
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

    # ----- line commands -----------------------------------------------------------------------
    def _help(self, args: list[str]):
        print(HELP)

    def _models(self, args: list[str]):
        on = _opt(args, "--on")
        handles = api.models(on=on)
        rows = [[h.name, h.description or "", "warm" if h.extra.get("warm") else ""] for h in handles]
        display(rjdisplay.table_bundle(["model", "description", ""], rows,
                                       title=f"Models on {on or session.default_backend}"), raw=True)

    def _schema(self, args: list[str]):
        from replicate_jupyter.model.schema import input_properties

        if not args:
            raise _usage("usage: %replicate schema MODEL")
        model = args[0]
        sch = api.schema(model, on=_opt(args[1:], "--on"))
        rows = []
        for name, prop in input_properties(sch):
            typ = prop.get("type", "")
            if prop.get("format") == "uri":
                typ = "file"
            elif typ == "array":
                typ = f"list[{(prop.get('items') or {}).get('type', '')}]"
            if "enum" in prop:
                allowed = "one of: " + ", ".join(map(str, prop["enum"]))
            elif "minimum" in prop or "maximum" in prop:
                allowed = f"{prop.get('minimum', '')}…{prop.get('maximum', '')}"
            elif "maxLength" in prop or "minLength" in prop:
                allowed = f"length {prop.get('minLength', 0)}…{prop.get('maxLength', '')}"
            elif "pattern" in prop:
                allowed = f"matches {prop['pattern']}"
            else:
                allowed = ""
            required = name in (sch.get("components", {}).get("schemas", {}).get("Input", {}).get("required") or [])
            default = "(required)" if required else ("" if "default" not in prop else repr(prop["default"]))
            rows.append([name, typ, default, allowed, prop.get("description", "")])
        display(rjdisplay.table_bundle(["input", "type", "default", "range / choices", "description"], rows,
                                       title=f"Inputs of {model}"), raw=True)

    def _form(self, args: list[str]):
        if not args:
            raise _usage("usage: %replicate form MODEL")
        return api.form(args[0], on=_opt(args[1:], "--on"))

    def _use(self, args: list[str]):
        if not args:
            print(f"Using backend {session.default_backend!r}")
            return
        backend, options = args[0], parse_options(args[1:])
        session.use(backend, **options)
        self.default_backend = backend
        shown = ", ".join(f"{k}={_redact(k, v)}" for k, v in options.items())
        print(f"Using backend {backend!r}" + (f" ({shown})" if shown else ""))

    def _workers(self, args: list[str]):
        from replicate_jupyter.runners.workers.runner import pool

        workers = pool()
        if args and args[0] in ("add", "remove"):
            if len(args) < 2:
                raise _usage(f"usage: %replicate workers {args[0]} URL [URL...]")
            for url in args[1:]:
                getattr(workers, args[0])(url)
        elif args:
            raise _usage("usage: %replicate workers [add|remove URL...]")
        display(workers)

    def _predictions(self, args: list[str]):
        rows = []
        for p in session.predictions.values():
            rows.append([p.id, p.model, p.status, p.backend, "" if p.cell is None else f"[{p.cell}]",
                         rjdisplay._secs(p.elapsed) if p.started_at else "–",
                         rjdisplay.usd(p.metrics.get("cost_usd")) if p.done else ""])
        display(rjdisplay.table_bundle(["id", "model", "status", "backend", "cell", "time", "cost"], rows,
                                       title=f"{len(rows)} prediction{'s' if len(rows) != 1 else ''}"), raw=True)

    def _cancel(self, args: list[str]):
        if not args:
            raise _usage("usage: %replicate cancel ID [ID...]")
        for pid in args:
            try:
                p = api.predictions.get(pid)
            except KeyError as exc:
                raise _usage(str(exc.args[0])) from None
            was_done = p.done
            p.cancel(reason="canceled with %replicate cancel")
            print(f"{p.id} ({p.model}) was already {p.status}" if was_done else f"Canceling {p.id} ({p.model})")

    def _cost(self, args: list[str]):
        if args and args[0] == "--reset":
            n, total = len(session.ledger), session.ledger.total()
            session.ledger.reset()
            print(f"Ledger reset ({n} predictions, {rjdisplay.usd(total)} cleared)")
            return
        if args:
            raise _usage("usage: %replicate cost [--reset]")
        display(session.ledger)

    def _budget(self, args: list[str]):
        spent = session.ledger.total()
        if not args:
            b = session.budget
            print(f"Budget: {'none' if b is None else rjdisplay.usd(b)} · spent {rjdisplay.usd(spent)}")
            return
        if args[0].lower() in ("off", "none"):
            session.budget = None
            self.budget = None
            print("Budget removed")
            return
        try:
            value = float(args[0].lstrip("$"))
        except ValueError:
            raise _usage(f"usage: %replicate budget USD (got {args[0]!r})") from None
        if value <= 0:
            raise _usage("the budget must be > 0 USD (or 'off')")
        self.budget = value
        session.budget = value
        print(f"Budget set to {rjdisplay.usd(value)} for this kernel (spent {rjdisplay.usd(spent)}): "
              "predictions past it are refused, and a running one is canceled when it reaches it.")

    def _price(self, args: list[str]):
        if not args:
            display(rjdisplay.table_bundle(["sku", "USD per second"],
                                           [[k, f"{v:.6f}"] for k, v in cost.prices.table().items()],
                                           title="Prices"), raw=True)
            return
        for spec in args:
            sku, sep, value = spec.partition("=")
            try:
                usd = float(value)
            except ValueError:
                usd = None
            if not sep or not sku or usd is None:
                raise _usage(f"usage: %replicate price SKU=USD_PER_S (got {spec!r})")
            cost.prices.set(sku, usd)
            self.prices = {**self.prices, sku: usd}
            print(f"Price of {sku}: ${usd:.6f}/s")

    def _login(self, args: list[str]):
        if args:
            raise _usage("Don't put the token in the cell (it would be saved in the notebook): "
                         "run %replicate login alone and paste it at the prompt.")
        import getpass

        token = getpass.getpass("Replicate API token: ").strip()
        if not token:
            print("No token given; nothing changed.")
            return
        os.environ["REPLICATE_API_TOKEN"] = token
        del token
        print("Token stored in this kernel's memory (REPLICATE_API_TOKEN). It is not written to the notebook.")


# ----- errors: one clear message, not a traceback of our internals ---------------------------
def _usage(message: str):
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


def load_ipython_extension(ipython) -> None:
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


def unload_ipython_extension(ipython) -> None:
    if _installed.get("shell") is not ipython:
        return
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
        if p.started_at is None and not p._background:
            p.cancel_event.set()
            p.emit(Completed(status="canceled", error="interrupted before it started", metrics={"predict_time": 0.0}))
        else:
            p.cancel(reason="interrupted")
    for p in preds:
        p._done.wait(10)


def _opt(args: list[str], name: str) -> str | None:
    if name in args:
        i = args.index(name)
        if i + 1 < len(args):
            return args[i + 1]
    return None


_SECRET_WORDS = ("token", "key", "secret", "password")


def _redact(key: str, value: Any) -> str:
    return "***" if any(w in key.lower() for w in _SECRET_WORDS) else repr(value)

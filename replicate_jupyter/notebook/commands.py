"""The `%replicate <command>` line commands: one table, each command a small function.

A command is registered with its usage, a one-line summary and its arguments (argparse specs),
so `%replicate` alone (the help), the argument parsing and the dispatch all come from the same
table. The line is split with shlex, parsed into typed arguments, and handed to the command.
Settings commands (`use`, `budget`, `price`) set the session's traits, which check the value:
a bad one raises InputError and changes nothing.
"""
from __future__ import annotations

import argparse
import re
import shlex
from dataclasses import dataclass
from typing import Any, Callable

from IPython.display import display

from replicate_jupyter import api
from replicate_jupyter.cost import prices as cost
from replicate_jupyter.cost.text import money
from replicate_jupyter.errors import InputError, Problem, looks_secret, shown_value
from replicate_jupyter.notebook import display as rjdisplay
from replicate_jupyter.notebook.cellparse import LineError, parse_options
from replicate_jupyter.notebook.cellparse.line import yaml_scalar
from replicate_jupyter.prediction.redact import Secret, remember
from replicate_jupyter.session import redacted, session

__all__ = ["Command", "COMMANDS", "CELL_USAGE", "help_text", "run_line", "said", "input_pairs"]

CELL_USAGE = """\
%%replicate [MODEL] [--on BACKEND] [--async] [--seed N] [--max-cost USD] [-o NAME] [--sweep KEY=V1,V2 ...]
<inputs as a YAML mapping, or text for the model's first string input; {name} and $name read the notebook>"""


def said(message: str) -> LineError:
    """A line command's usage error as its message alone (LineError's "(option line)" prefix
    names the cell magic's option line, which a line command has not)."""
    exc = LineError(message)
    exc.args = (message,)
    return exc


_PAIR = re.compile(r"([\w.-]+)=(\S+)")  # KEY=VALUE in argparse's message: masked when KEY looks secret


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print and sys.exit(): raise instead
        message = _PAIR.sub(lambda m: f"{m[1]}={shown_value(m[1], m[2])}" if looks_secret(m[1]) else m[0], message)
        raise said(f"{message} (usage: %replicate {self.usage})")


@dataclass(frozen=True)
class Command:
    """One line command: `usage` and `summary` make its help line, `parser` its typed arguments."""

    name: str
    usage: str
    summary: str
    parser: argparse.ArgumentParser
    run: Callable[[argparse.Namespace], Any]
    refuse_args: str | None = None  # a command whose arguments could be a secret: this message, never echoed


#: command name → Command, in the order the help lists them
COMMANDS: dict[str, Command] = {}


def _arg(*flags: str, **kwargs: Any) -> tuple[tuple[str, ...], dict[str, Any]]:
    return flags, kwargs


def _command(usage: str, summary: str, *arguments: tuple[tuple[str, ...], dict[str, Any]],
             refuse_args: str | None = None):
    """Register the decorated function as the command named by `usage`'s first word."""
    def register(fn: Callable[[argparse.Namespace], Any]) -> Callable[[argparse.Namespace], Any]:
        name = usage.split()[0]
        parser = _Parser(prog=f"%replicate {name}", usage=usage, add_help=False, allow_abbrev=False)
        for flags, kwargs in arguments:
            parser.add_argument(*flags, **kwargs)
        COMMANDS[name] = Command(name, usage, summary, parser, fn, refuse_args)
        return fn

    return register


def help_text() -> str:
    """The cell magic's synopsis, then one line per command (from the table)."""
    lines = [f"%replicate {c.usage:<28} {c.summary}" for c in COMMANDS.values() if c.name != "help"]
    return CELL_USAGE + "\n\n" + "\n".join(lines)


def run_line(line: str) -> Any:
    """`%replicate <line>`: split, parse, dispatch. Usage problems raise LineError."""
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise said(f"cannot split the line: {exc}") from None
    if not words:
        words = ["help"]
    command = COMMANDS.get(words[0])
    if command is None:
        import difflib

        close = difflib.get_close_matches(words[0], list(COMMANDS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise said(f"unknown command {words[0]!r}.{hint} Run %replicate for the list.")
    if command.refuse_args is not None and words[1:]:
        raise said(command.refuse_args)
    return command.run(command.parser.parse_args(words[1:]))


# ----- argument types ---------------------------------------------------------------------------
_SHOW = object()  # no value given: show the current setting


def _budget_rule() -> str:
    """What a budget is, and that the one in force stays (a refused value changes nothing)."""
    now = "no budget" if session.budget is None else f"still {rjdisplay.usd(session.budget)}"
    return f"a number of USD above 0, or off (the budget is unchanged: {now})"


def _usd_or_off(text: str) -> float | None:
    if text.lower() in ("off", "none"):
        return None
    try:
        return float(text.lstrip("$"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"got {text!r}, allowed: {_budget_rule()}") from None


def input_pairs(pairs: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` words as a model input, values read as YAML scalars (`7` → 7); a secret-looking key's
    value kept as typed, and redacted from every output from now on. A bad word is never echoed whole."""
    given: dict[str, Any] = {}
    for i, pair in enumerate(pairs, 1):
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise said(f"an input is KEY=VALUE (input {i}: got {shown_value(key, pair)})")
        if looks_secret(key):
            remember(value)
            given[key] = value
        else:
            given[key] = yaml_scalar(value)
    return given


def _price_spec(text: str, what: str = "SKU=USD_PER_S") -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        usd = float(value)
    except ValueError:
        usd = None
    if not sep or not name or usd is None:
        example = "cpu=0.0001" if what.startswith("SKU") else "image=0.05"
        raise said(f"a price is {what}, e.g. {example} (got {text!r}); "
                   "usage: %replicate price [SKU=USD_PER_S ...] | MODEL UNIT=USD ... | --file PATH")
    return name, usd


def _is_model(word: str) -> bool:
    return "/" in word and "=" not in word


_ON = _arg("--on", metavar="BACKEND", default=None)


# ----- the commands -----------------------------------------------------------------------------
@_command("help", "this list")
def _help(args: argparse.Namespace) -> None:
    print(help_text())


@_command("models [--on BACKEND]", "models the active backend can run", _ON)
def _models(args: argparse.Namespace) -> None:
    handles = api.models(on=args.on)
    rows = [[h.name, h.description or "", "warm" if h.extra.get("warm") else ""] for h in handles]
    display(rjdisplay.table_bundle(["model", "description", ""], rows,
                                   title=f"Models on {args.on or session.default_backend}"), raw=True)


@_command("schema MODEL [--on BACKEND]", "the model's inputs", _arg("model"), _ON)
def _schema(args: argparse.Namespace) -> None:
    from replicate_jupyter.model.schema import input_properties

    sch = api.schema(args.model, on=args.on)
    required = sch.get("components", {}).get("schemas", {}).get("Input", {}).get("required") or []
    rows = []
    for name, prop in input_properties(sch):
        default = "(required)" if name in required else ("" if "default" not in prop else repr(prop["default"]))
        rows.append([name, _input_type(prop), default, _allowed(prop), prop.get("description", "")])
    display(rjdisplay.table_bundle(["input", "type", "default", "range / choices", "description"], rows,
                                   title=f"Inputs of {args.model}"), raw=True)


def _input_type(prop: dict[str, Any]) -> str:
    if prop.get("format") == "uri":
        return "file"
    if prop.get("type") == "array":
        return f"list[{(prop.get('items') or {}).get('type', '')}]"
    return str(prop.get("type", ""))


def _allowed(prop: dict[str, Any]) -> str:
    if "enum" in prop:
        return "one of: " + ", ".join(map(str, prop["enum"]))
    if "minimum" in prop or "maximum" in prop:
        return f"{prop.get('minimum', '')}…{prop.get('maximum', '')}"
    if "maxLength" in prop or "minLength" in prop:
        return f"length {prop.get('minLength', 0)}…{prop.get('maxLength', '')}"
    if "pattern" in prop:
        return f"matches {prop['pattern']}"
    return ""


@_command("form MODEL [--on BACKEND]", "a form for the model's inputs", _arg("model"), _ON)
def _form(args: argparse.Namespace) -> Any:
    from replicate_jupyter.notebook.forms import form

    return form(args.model, on=args.on)


@_command("use BACKEND [--opt value]", "switch backend (local, workers, ray, replicate)",
          _arg("backend", nargs="?"), _arg("options", nargs=argparse.REMAINDER))
def _use(args: argparse.Namespace) -> None:
    if args.backend is None:
        print(f"Using backend {session.default_backend!r}")
        return
    options = parse_options(args.options)
    secret = sorted(k for k, v in options.items() if isinstance(v, Secret))
    if secret:  # a token kept as a setting would be saved with the notebook's config: refused, never echoed
        names = ", ".join(f"--{k.replace('_', '-')}" for k in secret)
        raise said(f"{names}: a token is never given as an option (its value is not shown, and is masked "
                   "in every output from now on): keep it in an environment variable and name that (a worker's "
                   "token_env), or run %replicate login for Replicate")
    session.use(args.backend, **options)
    shown = ", ".join(f"{k}={v!r}" for k, v in redacted(options).items())
    print(f"Using backend {args.backend!r}" + (f" ({shown})" if shown else ""))


@_command("workers [add|remove URL...]", "the worker pool",
          _arg("action", nargs="?", choices=("add", "remove")), _arg("urls", nargs="*", metavar="URL"))
def _workers(args: argparse.Namespace) -> None:
    from replicate_jupyter.runners.workers.runner import pool

    workers = pool()
    if args.action is None and args.urls:
        raise said("usage: %replicate workers [add|remove URL...]")
    if args.action is not None:
        if not args.urls:
            raise said(f"usage: %replicate workers {args.action} URL [URL...]")
        for url in args.urls:
            getattr(workers, args.action)(url)
    display(workers)


@_command("predictions", "running and finished predictions")
def _predictions(args: argparse.Namespace) -> None:
    rows = []
    for p in list(session.predictions.values()):
        rows.append([p.id, p.model, p.status, p.backend, "" if p.cell is None else f"[{p.cell}]",
                     rjdisplay._secs(p.elapsed) if p.started_at else "–",
                     money(p.metrics.get("cost_usd"), bool(p.metrics.get("cost_estimate"))) if p.done else ""])
    display(rjdisplay.table_bundle(["id", "model", "status", "backend", "cell", "time", "cost"], rows,
                                   title=f"{len(rows)} prediction{'s' if len(rows) != 1 else ''}"), raw=True)


@_command("cancel ID [ID...]", "cancel a running prediction", _arg("ids", nargs="+", metavar="ID"))
def _cancel(args: argparse.Namespace) -> None:
    for pid in args.ids:
        p = api.predictions.get(pid)  # an unknown id: PredictionNotFound, shown as its one line
        was_done = p.done
        p.cancel(reason="canceled with %replicate cancel")
        print(f"{p.id} ({p.model}) was already {p.status}" if was_done else f"Canceling {p.id} ({p.model})")


@_command("cost [--reset] [--csv FILE]", "the cost ledger by cell, model, backend and day",
          _arg("--reset", action="store_true"), _arg("--csv", metavar="FILE", default=None))
def _cost(args: argparse.Namespace) -> None:
    if args.csv:
        n = session.ledger.to_csv(args.csv)
        print(f"Wrote {n} prediction{'s' if n != 1 else ''} ({rjdisplay.usd(session.ledger.total())}) to {args.csv}")
    if args.reset:
        n, total = len(session.ledger), session.ledger.total()
        session.ledger.reset()
        print(f"Ledger reset ({n} predictions, {rjdisplay.usd(total)} cleared)")
        return
    if not args.csv:
        display(session.ledger)


@_command("budget [USD|off]", "refuse/cancel predictions past this total",
          _arg("usd", nargs="?", type=_usd_or_off, default=_SHOW, metavar="USD|off"))
def _budget(args: argparse.Namespace) -> None:
    spent = session.ledger.total()
    if args.usd is _SHOW:
        b = session.budget
        print(f"Budget: {'none' if b is None else rjdisplay.usd(b)} · spent {rjdisplay.usd(spent)}")
        return
    try:
        session.budget = args.usd  # checked by the session: nan, inf, <= 0 are refused
    except InputError as exc:  # the session's rule, in the magic's words (off, not None)
        p = exc.problems[0]
        raise InputError([Problem("budget", p.rule, p.value, _budget_rule())]) from None
    if args.usd is None:
        print("Budget removed")
        return
    print(f"Budget set to {rjdisplay.usd(args.usd)} for this kernel (spent {rjdisplay.usd(spent)}): "
          "predictions past it are refused, and a running one is canceled when it reaches it.")


@_command("price [SKU=USD_PER_S ... | MODEL UNIT=USD ... | --file PATH]",
          "set a price per hardware second or per unit of a model (alone: the price table)",
          _arg("specs", nargs="*", metavar="SPEC"), _arg("--file", metavar="PATH", default=None))
def _price(args: argparse.Namespace) -> None:
    if args.file:
        n = cost.prices.load(args.file)
        print(f"Read {n} price{'s' if n != 1 else ''} from {args.file}")
    if not args.specs:
        if not args.file:
            _show_prices()
        return
    if _is_model(args.specs[0]):
        model, units = args.specs[0], dict(_price_spec(x, "UNIT=USD") for x in args.specs[1:])
        if not units:
            _show_prices(model)
            return
        entry = cost.prices.set_model(model, units)  # checked: a bad unit or price changes nothing
        shown = ", ".join(f"${usd:g} per {cost.UNITS.get(unit, unit)}" for unit, usd in entry.units.items())
        print(f"Price of {model}: {shown} (billed per unit from now on, not by hardware time)")
        return
    specs = [_price_spec(x) for x in args.specs]
    session.prices = {**session.prices, **dict(specs)}  # all or none: checked together
    for sku, usd in specs:
        print(f"Price of {sku}: ${usd:.6f}/s")


def _show_prices(model: str | None = None) -> None:
    table = cost.prices
    if model is not None:
        entry = table.model(model)
        if entry is None:
            print(f"{model} has no per-unit price: it is billed by hardware time "
                  f"(set one with %replicate price {model} UNIT=USD, units: {', '.join(cost.UNITS)})")
            return
        rows = [[unit, f"${usd:g}", cost.UNITS.get(unit, "recorded metric")] for unit, usd in entry.units.items()]
        display(rjdisplay.table_bundle(["unit", "USD", "per"], rows, title=f"Price of {model}",
                                       footer=f"source: {entry.source} ({entry.date})"), raw=True)
        return
    hw = [[sku, f"{usd:.6f}", *table.hardware_source(sku)] for sku, usd in table.table().items()]
    display(rjdisplay.table_bundle(["sku", "USD per second", "source", "date"], hw, title="Hardware"), raw=True)
    models = [[ref, " + ".join(f"${usd:g}/{unit}" for unit, usd in e.units.items()), e.source, e.date]
              for ref, e in table.models().items()]
    display(rjdisplay.table_bundle(["model", "USD per unit", "source", "date"], models, title="Models billed per unit",
                                   footer="A model with no entry here is billed by hardware time."), raw=True)


@_command("estimate MODEL [--on BACKEND] [KEY=VALUE ...]", "what a run would cost, before it runs",
          _arg("model"), _ON, _arg("inputs", nargs="*", metavar="KEY=VALUE"))
def _estimate(args: argparse.Namespace) -> None:
    print(estimate_text(args.model, input_pairs(args.inputs), on=args.on))


def forecast_for(ref: str, given: dict[str, Any], on: str | None = None,
                 schema: dict[str, Any] | None = None) -> tuple[str, Any]:
    """(model name, Forecast or None) for running `ref` on `given` (checked against the model's
    schema first, so a bad input is refused here as it would be by a run)."""
    from replicate_jupyter.cost.forecast import forecast
    from replicate_jupyter.model.validation import validate

    schema = api.schema(ref, on=on) if schema is None else schema
    name = str((schema.get("info") or {}).get("x-replicate-model") or ref)
    clean = validate(schema, given, model=name)
    return name, forecast(name, clean, schema=schema, backend=on or session.default_backend, ledger=session.ledger)


def estimate_text(ref: str, given: dict[str, Any], on: str | None = None) -> str:
    """`%replicate estimate`'s answer: the forecast and what it rests on, or why there is none."""
    name, f = forecast_for(ref, given, on=on)
    if f is None:
        return (f"No forecast for {name}: no earlier run of it in this kernel, and no per-unit price "
                "(it is billed by its hardware time, known once it has run).")
    return f"≈ {rjdisplay.usd(f.usd)} expected for {name} ({f.basis})"


@_command("login", "set the Replicate API token (kept in memory only)",
          refuse_args="Don't put the token in the cell (it would be saved in the notebook): "
                      "run %replicate login alone and paste it at the prompt.")
def _login(args: argparse.Namespace) -> None:
    import getpass

    token = getpass.getpass("Replicate API token: ").strip()
    if not token:
        print("No token given; nothing changed.")
        return
    from replicate_jupyter.runners.replicate import token as tokens

    tokens.login(token)  # in this kernel's memory only: never os.environ (subprocesses inherit that)
    del token
    print("Token stored in this kernel's memory (REPLICATE_API_TOKEN). It is not written to the notebook.")

"""A form's inputs → the text of a `%%replicate` cell that runs the same prediction.

A form session should end in a cell a reader can re-run, so the text is written for the cell
language of `cellparse.parse_body`: a YAML mapping of the inputs that differ from the model's
defaults, with strings escaped so the cell's own rules (`{name}` filled from the namespace,
`$name` an object reference) give back exactly the text typed in the form. Files given as a path
or URL are written as such; an uploaded file cannot be, so a comment says so; a secret is never
written, only a `$name` reference to a variable the reader defines.
"""
from __future__ import annotations

import shlex
from typing import Any, Iterable

from replicate_jupyter.prediction.files import InputFile

__all__ = ["cell_text", "escape_text"]


def escape_text(s: str) -> str:
    """A string as the cell language must spell it to mean itself."""
    s = s.replace("{", "{{").replace("}", "}}")
    if s.startswith("$"):
        s = "$" + s  # `$$x` is the literal text `$x`
    return s


def _escape(v: Any) -> Any:
    if isinstance(v, str):
        return escape_text(v)
    if isinstance(v, list):
        return [_escape(x) for x in v]
    if isinstance(v, dict):
        return {k: _escape(x) for k, x in v.items()}
    return v


def _dump(name: str, value: Any) -> str:
    import yaml

    class _Dumper(yaml.SafeDumper):
        pass

    def _str(dumper: yaml.SafeDumper, data: str):
        style = "|" if "\n" in data and not data.endswith((" ", "\t")) and "\r" not in data else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)

    _Dumper.add_representer(str, _str)
    return yaml.dump({name: value}, Dumper=_Dumper, sort_keys=False, allow_unicode=True,
                     default_flow_style=False, width=100000).rstrip("\n")


def header(model: str, on: str | None) -> str:
    words = ["%%replicate", shlex.quote(model)]
    if on:
        words += ["--on", shlex.quote(on)]
    return " ".join(words)


def cell_text(model: str, on: str | None, items: Iterable[tuple[str, str, Any]]) -> str:
    """`items`: (name, how, value) for each input that differs from its default, where `how`
    is "value", "secret" or "upload" (value: the InputFile(s))."""
    lines = [header(model, on)]
    for name, how, value in items:
        if how == "secret":
            lines.append(f"# {name}: a secret, not copied; define `{name} = ...` before running this cell")
            lines.append(f"{name}: ${name}")
        elif how == "upload":
            files = value if isinstance(value, list) else [value]
            for f in files:
                if isinstance(f, InputFile):
                    digest = f.sha256 or ""
                    lines.append(f"# {name}: uploaded file {f.name!r} (sha256 {digest[:12]}) — not copied; "
                                 f"give a path, URL or `$variable`")
            rest = [x for x in files if not isinstance(x, InputFile)] if isinstance(value, list) else []
            if rest:
                lines.append(_dump(name, _escape(rest)))
        else:
            lines.append(_dump(name, _escape(value)))
    return "\n".join(lines)

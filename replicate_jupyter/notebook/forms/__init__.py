"""A model's inputs as a form in the notebook, the way Replicate's model page draws them.

    rj.form("local/shapes")            # same as  %replicate form local/shapes
    %replicate form my/model --on workers

`fields.py` turns each schema property into widgets, `form.py` lays them out and runs the model,
`history.py` keeps the form's runs, `cell.py` writes a form's inputs as a `%%replicate` cell.
"""
from __future__ import annotations

from typing import Any

from replicate_jupyter.notebook.forms.form import Form

__all__ = ["form", "Form"]


def form(ref: Any = None, on: str | None = None) -> Form:
    """The form of model `ref` (the session's default model when None) on backend `on` (the
    session's default backend when None). This is `rj.form` and `%replicate form`."""
    if ref is None:
        from replicate_jupyter.session import session

        ref = session.default_model
    return Form(ref, on=on)

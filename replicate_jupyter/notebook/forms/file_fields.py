"""Fields for files: `file` (one) and `files` (an array of them).

A file can be given three ways, as on Replicate's page: uploaded in the browser, or typed as
a path or URL. An upload button sits beside a Text (one file) or a Textarea (paths / URLs, one
per line). Uploaded bytes move into the kernel as `InputFile`s and the upload widget is
emptied, so a notebook save does not carry the file in widget state; the box's placeholder
then names what was uploaded.
"""
from __future__ import annotations

from typing import Any

import ipywidgets as W

from replicate_jupyter.notebook.forms.field import UNSET, Field, Layouts, has_default
from replicate_jupyter.prediction.files import InputFile

__all__ = ["FileField"]


def _size(f: InputFile) -> str:
    try:
        n = len(f.read())
    except Exception:
        return "?"
    return f"{n / 1024:.1f} kB" if n >= 1024 else f"{n} B"


class FileField(Field):
    """Kinds `file` and `files`."""

    def __init__(self, name: str, prop: dict, required: bool, kind: str, lay: Layouts) -> None:
        super().__init__(name, prop, required, kind, lay)
        self._file: InputFile | None = None  # an uploaded file, kept in the kernel only
        self._files: list[InputFile] = []

    @property
    def many(self) -> bool:
        return self.kind == "files"

    def initial(self) -> Any:
        d = self.prop.get("default")
        if self.kind == "files":
            return "\n".join(map(str, d)) if has_default(self.prop) and isinstance(d, list) else ""
        return str(d) if has_default(self.prop) else ""

    def _make_controls(self) -> None:
        lay = self._lay
        if self.many:
            self._w = W.Textarea(value=self._initial, placeholder="paths or URLs, one per line, or upload files",
                                 layout=lay.textarea, style=lay.text_style)
        else:
            self._w = W.Text(value=self._initial, placeholder="a path or URL, or upload a file", layout=lay.text_flex,
                             style=lay.text_style)
            self._w.observe(self._typed_path, names="value")
        self._upload = W.FileUpload(accept="", multiple=self.many, description="Upload", layout=lay.upload,
                                    style=lay.button_style)
        self._upload.observe(self._take_upload, names="value")
        if self._file is not None:
            self._show_upload()
        elif self._files:
            self._show_uploads()

    @property
    def is_upload(self) -> bool:
        return self._file is not None or bool(self._files)

    def value(self) -> Any:
        v = self._raw()
        if self.many:
            items: list[Any] = list(self._files)
            items += [line.strip() for line in v.splitlines() if line.strip()]
            return items if items else UNSET
        if self._file is not None:
            return self._file
        v = v.strip()
        return UNSET if v == "" else v

    def set_value(self, v: Any) -> None:
        self.build()
        w = self.widget
        blank = v is UNSET or v is None
        if self.many:
            vals = [] if blank else list(v)
            self._files = [x for x in vals if isinstance(x, InputFile)]
            w.value = "\n".join(str(x) for x in vals if not isinstance(x, InputFile))
            self._show_uploads()
        elif isinstance(v, InputFile):
            self._set_file(v)
        else:
            self._set_file(None)
            w.value = "" if blank else str(v)

    def reset(self) -> None:
        if not self.built:
            self._file, self._files = None, []
            return  # fresh widgets already hold the default
        super().reset()

    # ----- uploads: kernel-side state ---------------------------------------------------------
    def _take_upload(self, change: dict) -> None:
        """Uploaded bytes move into the kernel as an InputFile and the upload widget is
        emptied, so a notebook save does not carry the file in widget state."""
        if self._syncing or not change["new"]:
            return
        files = [InputFile(bytes(f["content"]), name=f["name"], content_type=f.get("type") or None)
                 for f in change["new"]]
        with self._quiet():
            assert self._upload is not None
            self._upload.value = ()
            if self.many:
                self._files = self._files + files
                self._show_uploads()
            else:
                self._file = files[0]
                self.widget.value = ""
                self._show_upload()
        self._changed()

    def _typed_path(self, change: dict) -> None:
        if not self._syncing and change["new"].strip() and self._file is not None:
            self._file = None
            self._show_upload()

    def _set_file(self, f: InputFile | None) -> None:
        self._file = f
        with self._quiet():
            self.widget.value = ""
        self._show_upload()

    def _show_upload(self) -> None:
        f = self._file
        self.widget.placeholder = (f"⬆ {f.name} ({_size(f)}) — or type a path / URL to replace"
                                   if f is not None else "a path or URL, or upload a file")

    def _show_uploads(self) -> None:
        fs = self._files
        self.widget.placeholder = (("⬆ " + ", ".join(f.name for f in fs) + " — plus paths / URLs, one per line")
                                   if fs else "paths or URLs, one per line, or upload files")

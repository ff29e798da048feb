"""`use(ref)`, replicate-python 1.1's: a model as a Python function.

    flux = rj.use("black-forest-labs/flux-schnell")
    images = flux(prompt="a lighthouse at dusk")            # its output, as its schema says
    llama = rj.use("meta/meta-llama-3-8b-instruct", streaming=True)
    for chunk in llama(prompt="Hi"):                          # chunks as they are generated
        print(chunk, end="")
    run = flux.create(prompt="...")                           # a run handle; run.output() waits

The keyword arguments are the model's inputs, checked against its schema before anything is
dispatched (an InputError names every bad one). The output follows the model's type, as 1.1
does: a token stream (`ConcatenateIterator`) comes back as one str, another iterator as a
list, unless `streaming=True` (then an iterator of items as they arrive); files as FileOutputs,
which are path-like (`open(out)`, `PIL.Image.open(out)`), keep their URL (`str(out)`) and render
in a notebook. Any model reference and any backend: `use("local/shapes")`, a predictor file,
`hf:REPO`, or `owner/name` on Replicate, with `on=` to pin a backend.
"""
from __future__ import annotations

from typing import Any, Iterator

from replicate_jupyter import api
from replicate_jupyter.prediction.prediction import Prediction
from replicate_jupyter.runners.replicate.routing import Target

__all__ = ["use", "Function", "Run"]


def _shape(p: Prediction) -> Any:
    """The output as 1.1 gives it: a token stream joined into one str, other outputs as they are."""
    out = p.output
    if p.is_iterator and p.concatenate and isinstance(out, list):
        return p.text if p.text is not None else out
    return out


class Run:
    """A prediction started by `Function.create()`: `output()` waits and returns the output,
    `logs()` its logs so far, `cancel()` stops it; `prediction` is the Prediction itself."""

    def __init__(self, prediction: Prediction, streaming: bool = False) -> None:
        self.prediction = prediction
        self.streaming = streaming

    @property
    def id(self) -> str:
        return self.prediction.id

    def output(self) -> Any:
        """The output once done (an iterator of items as they come, with `streaming=True`);
        `ModelError` if the model failed."""
        p = self.prediction
        if self.streaming:
            return p.output_iterator()
        p.wait()
        api._result(p, True)  # raises ModelError on failure
        return _shape(p)

    wait = output  # replicate-python 1.0.8's name for it

    async def async_output(self) -> Any:
        p = self.prediction
        if self.streaming:
            return p.async_output_iterator()
        await p.async_wait()
        api._result(p, True)
        return _shape(p)

    def logs(self) -> str:
        return self.prediction.reload().logs

    def cancel(self) -> Run:
        self.prediction.cancel()
        return self

    def __repr__(self) -> str:
        return f"<Run {self.prediction.model} {self.prediction.status}>"


class Function:
    """A model as a callable: `fn(**inputs)` runs it and returns its output; `fn.create(**inputs)`
    starts it and returns a `Run`."""

    def __init__(self, ref: Any, *, streaming: bool = False, on: str | None = None,
                 _target: Target | None = None) -> None:
        self.ref = ref
        self.streaming = streaming
        self.on = on
        self._target = _target

    @property
    def openapi_schema(self) -> dict:
        """The model's OpenAPI schema (Cog's shape)."""
        target = self._target or api.SESSION
        return target.resolve(self.ref, self.on)[2].schema

    def create(self, **inputs: Any) -> Run:
        p = api.start(api.prepare(self.ref, inputs, on=self.on, params={"stream": True if self.streaming else None},
                                  _target=self._target))
        return Run(p, self.streaming)

    def __call__(self, **inputs: Any) -> Any:
        if self.streaming:
            return self._stream(inputs)
        p = api.execute(api.prepare(self.ref, inputs, on=self.on, params={"stream": None}, _target=self._target))
        api._result(p, True)
        return _shape(p)

    def _stream(self, inputs: dict[str, Any]) -> Iterator[Any]:
        run = self.create(**inputs)
        it = run.output()
        try:
            yield from it
        finally:
            if not run.prediction.finished:
                run.prediction.cancel()

    async def async_call(self, **inputs: Any) -> Any:
        """`await fn.async_call(**inputs)`: the call for asyncio (replicate-python's use_async)."""
        return await self.create(**inputs).async_output()

    def __repr__(self) -> str:
        return f"<Function {self.ref}{' streaming' if self.streaming else ''}>"


def use(ref: Any, *, streaming: bool = False, hint: Any = None, on: str | None = None,
        _target: Target | None = None) -> Function:
    """The model `ref` as a function (replicate-python 1.1's `use`). `hint` (a function whose
    signature documents the model, for type checkers) is accepted and, as there, not needed."""
    return Function(ref, streaming=streaming, on=on, _target=_target)

"""`use(ref)`, replicate-python 1.1's: a model as a Python function.

    flux = rj.use("black-forest-labs/flux-schnell")
    images = flux(prompt="a lighthouse at dusk")            # its output, as its schema says
    llama = rj.use("meta/meta-llama-3-8b-instruct", streaming=True)
    for chunk in llama(prompt="Hi"):                          # chunks as they are generated
        print(chunk, end="")
    run = flux.create(prompt="...")                           # a run handle; run.output() waits
    flux_async = rj.use("black-forest-labs/flux-schnell", use_async=True)
    images = await flux_async(prompt="...")                   # the same, for asyncio

The keyword arguments are the model's inputs, checked against its schema before anything is
dispatched (an InputError names every bad one). The output follows the model's type, as 1.1
does: a token stream (`ConcatenateIterator`) comes back as one str, another iterator as a
list, unless `streaming=True`: then an `OutputIterator` of the items as they arrive, which
`str()` joins and `await` collects, as 1.1's. Files come as FileOutputs, which are path-like
(`open(out)`, `PIL.Image.open(out)`), keep their URL (`str(out)`, `get_path_url(out)`) and
render in a notebook. Any model reference and any backend: `use("local/shapes")`, a predictor
file or class, `hf:REPO`, `owner/name` on Replicate, or a typing class whose `name` is one
(1.1's README, "Typing"); `on=` pins a backend.
"""
from __future__ import annotations

import copy
import inspect
import os
from typing import Any, AsyncIterator, Generator, Iterator, Literal, overload

from replicate_jupyter import api
from replicate_jupyter.prediction.files import FileOutput
from replicate_jupyter.prediction.handle import ModelHandle
from replicate_jupyter.prediction.outputs import with_looks
from replicate_jupyter.prediction.prediction import Prediction
from replicate_jupyter.runners.replicate.resources import Resource
from replicate_jupyter.runners.replicate.routing import Target

__all__ = ["use", "Function", "AsyncFunction", "Run", "AsyncRun", "OutputIterator", "get_path_url"]

_REF = "#/components/schemas/"
_KEPT = frozenset({"Input", "Output", "TrainingInput", "TrainingOutput"})


def get_path_url(path: Any) -> str | None:
    """The remote URL of a file output (1.1's `get_path_url`): a FileOutput's backend URL, None
    for one that never had one (the kernel's own backends) and for anything else."""
    if isinstance(path, FileOutput):
        return path.remote_url
    try:  # 1.1's URLPath keeps it here
        url = object.__getattribute__(path, "__url__")
    except AttributeError:
        return None
    return url if isinstance(url, str) else None


def _shape(p: Prediction) -> Any:
    """The output as 1.1 gives it: a token stream joined into one str, other outputs as they are."""
    out = p.output
    if p.is_iterator and p.concatenate and isinstance(out, list):
        return p.text if p.text is not None else out
    return with_looks(out)  # a list of files shows as its images when it is a cell's value, as run()'s


class OutputIterator:
    """A streaming call's output (1.1's `OutputIterator`): iterate it (or `async for`) for the
    items as they arrive, from the first each time; `str()` joins a token stream (other outputs:
    the list's str); `await` gives the joined str or the list. A failed model raises ModelError
    at the end of the items. An iteration left early (a `break`) cancels the prediction, as
    leaving a `stream()` loop does: nothing runs on unread."""

    def __init__(self, prediction: Prediction) -> None:
        self.prediction = prediction

    @property
    def is_concatenate(self) -> bool:
        return self.prediction.concatenate

    def __iter__(self) -> Iterator[Any]:
        p, done = self.prediction, False
        try:
            yield from p.output_iterator()
            done = True
        finally:
            if not done and not p.finished:
                p.cancel(reason="its output iterator was left early")

    async def __aiter__(self) -> AsyncIterator[Any]:
        p, done = self.prediction, False
        try:
            async for item in p.async_output_iterator():
                yield item
            done = True
        finally:
            if not done and not p.finished:
                p.cancel(reason="its output iterator was left early")

    def __str__(self) -> str:
        if self.is_concatenate:
            return "".join(str(item) for item in self)
        return str(list(self))

    def __await__(self) -> Generator[Any, None, Any]:
        async def collect() -> Any:
            items = [item async for item in self]
            return "".join(str(i) for i in items) if self.is_concatenate else items

        return collect().__await__()

    def __repr__(self) -> str:
        return f"<OutputIterator {self.prediction.model} {self.prediction.status}>"


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
        """The output once done (an `OutputIterator` at once, with `streaming=True`);
        `ModelError` if the model failed."""
        p = self.prediction
        if self.streaming:
            return OutputIterator(p)
        p.wait()
        api._result(p, True)  # raises ModelError on failure
        return _shape(p)

    wait = output  # replicate-python 1.0.8's name for it

    async def async_output(self) -> Any:
        p = self.prediction
        if self.streaming:
            return OutputIterator(p)
        import asyncio

        try:
            await p.async_wait()
        except asyncio.CancelledError:
            p.cancel(reason="its asyncio task was canceled")
            raise
        api._result(p, True)
        return _shape(p)

    def logs(self) -> str:
        return self.prediction.reload().logs

    def cancel(self) -> Run:
        self.prediction.cancel()
        return self

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.prediction.model} {self.prediction.status}>"


class AsyncRun:
    """`AsyncFunction.create()`'s run (1.1's `AsyncRun`): `await run.output()`, `await run.logs()`."""

    def __init__(self, prediction: Prediction, streaming: bool = False) -> None:
        self._run = Run(prediction, streaming)
        self.prediction = prediction

    @property
    def id(self) -> str:
        return self.prediction.id

    async def output(self) -> Any:
        return await self._run.async_output()

    async def logs(self) -> str:
        await self.prediction.async_reload()
        return self.prediction.logs

    async def cancel(self) -> AsyncRun:
        await self.prediction.async_cancel()
        return self

    def __repr__(self) -> str:
        return f"<AsyncRun {self.prediction.model} {self.prediction.status}>"


class Function:
    """A model as a callable: `fn(**inputs)` runs it and returns its output; `fn.create(**inputs)`
    starts it and returns a `Run`."""

    def __init__(self, ref: Any, *, streaming: bool = False, on: str | None = None,
                 _target: Target | None = None) -> None:
        self.ref = ref
        self.streaming = streaming
        self.on = on
        self._target = _target

    def openapi_schema(self) -> dict[str, Any]:
        """The model's OpenAPI schema as 1.1's method gives it: its `$ref`s inlined, `paths`
        emptied (`rj.schema(ref)` gives Cog's own, unchanged)."""
        target = self._target or api.SESSION
        return _dereferenced(target.resolve(self.ref, self.on)[2].schema or {})

    def _prepare(self, inputs: dict[str, Any]) -> Prediction:
        return api.prepare(self.ref, _chained(inputs), on=self.on, _target=self._target,
                           params={"stream": True if self.streaming else None})

    def create(self, **inputs: Any) -> Run:
        return Run(api.start(self._prepare(inputs)), self.streaming)

    def __call__(self, **inputs: Any) -> Any:
        if self.streaming:
            return self.create(**inputs).output()
        p = api.execute(self._prepare(inputs))
        api._result(p, True)
        return _shape(p)

    async def async_call(self, **inputs: Any) -> Any:
        """`await fn.async_call(**inputs)`: this function's call for asyncio (the same as
        `use(ref, use_async=True)(**inputs)`)."""
        return await AsyncFunction(self.ref, streaming=self.streaming, on=self.on, _target=self._target)(**inputs)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.ref}{' streaming' if self.streaming else ''}>"


class AsyncFunction:
    """`use(ref, use_async=True)` (1.1's `AsyncFunction`): `await fn(**inputs)` gives the output
    (an `OutputIterator`, for `async for`, with `streaming=True`); `await fn.create(**inputs)`
    an `AsyncRun`. Resolving and validating run on a worker thread: the event loop goes on."""

    def __init__(self, ref: Any, *, streaming: bool = False, on: str | None = None,
                 _target: Target | None = None) -> None:
        self._function = Function(ref, streaming=streaming, on=on, _target=_target)
        self.ref = ref
        self.streaming = streaming

    async def openapi_schema(self) -> dict[str, Any]:
        import asyncio

        return await asyncio.to_thread(self._function.openapi_schema)

    async def create(self, **inputs: Any) -> AsyncRun:
        import asyncio

        p = await asyncio.to_thread(self._function._prepare, inputs)
        return AsyncRun(api.start(p), self.streaming)

    async def __call__(self, **inputs: Any) -> Any:
        return await (await self.create(**inputs)).output()

    def __repr__(self) -> str:
        return f"<AsyncFunction {self.ref}{' streaming' if self.streaming else ''}>"


def _chained(inputs: dict[str, Any]) -> dict[str, Any]:
    """A streaming output passed on as another model's input, as 1.1 passes it: a token
    stream as its text, other streams as their list (FileOutputs are inputs already)."""
    return {k: (str(v) if v.is_concatenate else list(v)) if isinstance(v, OutputIterator) else v
            for k, v in inputs.items()}


def _dereferenced(schema: dict[str, Any]) -> dict[str, Any]:
    """1.1's `_dereference_schema`: every `$ref` to `#/components/schemas/X` replaced by X,
    `paths` emptied, and the components inlined dropped (Input and Output are kept). A
    reference that is nested, unknown or circular stays as it is."""
    out = copy.deepcopy(schema)
    components = (out.get("components") or {}).get("schemas") or {}
    inlined: set[str] = set()

    def inline(node: Any, within: tuple[str, ...]) -> Any:
        if isinstance(node, list):
            return [inline(v, within) for v in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        name = ref[len(_REF):] if isinstance(ref, str) and ref.startswith(_REF) else None
        if name is not None and name in components and "/" not in name and name not in within:
            inlined.add(name)
            return inline(components[name], (*within, name))
        return {k: inline(v, within) for k, v in node.items()}

    out = inline(out, ())
    out["paths"] = {}
    if isinstance((out.get("components") or {}).get("schemas"), dict):
        out["components"]["schemas"] = {k: v for k, v in out["components"]["schemas"].items()
                                        if k not in inlined - _KEPT}
    return out


def _named(ref: Any) -> Any:
    """1.1's `ref = ref.name`: a typing class or object standing for a model (README "Typing",
    option 2: `class FluxDev: name = "black-forest-labs/flux-dev"`) is its str `name`. A
    predictor (a class or object with `predict` or `run`, a function), a path and the API's
    own objects (Model, Version, ModelHandle) are references themselves and stay as they are."""
    if isinstance(ref, (str, os.PathLike, Resource, ModelHandle)) or inspect.isfunction(ref):
        return ref
    if hasattr(ref, "predict") or hasattr(ref, "run"):
        return ref
    name = getattr(ref, "name", None)
    return name if isinstance(name, str) else ref


@overload
def use(ref: Any, *, streaming: bool = ..., hint: Any = ..., use_async: Literal[False] = ...,
        on: str | None = ..., _target: Target | None = ...) -> Function: ...
@overload
def use(ref: Any, *, streaming: bool = ..., hint: Any = ..., use_async: Literal[True],
        on: str | None = ..., _target: Target | None = ...) -> AsyncFunction: ...
def use(ref: Any, *, streaming: bool = False, hint: Any = None, use_async: bool = False, on: str | None = None,
        _target: Target | None = None) -> Function | AsyncFunction:
    """The model `ref` as a function (replicate-python 1.1's `use`); `use_async=True` gives
    one to `await`. `hint` (a function whose signature documents the model, for type
    checkers) is accepted and, as there, not needed."""
    ref = _named(ref)
    if use_async:
        return AsyncFunction(ref, streaming=streaming, on=on, _target=_target)
    return Function(ref, streaming=streaming, on=on, _target=_target)

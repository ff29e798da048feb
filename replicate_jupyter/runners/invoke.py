"""Calling a Cog predictor in this process: the conversions every in-process runner shares.

The local runner and the Ray actor both set a predictor up, pass it every parameter, turn what
it returns (values, paths, PIL images, iterators, async generators) into output values, and
tell its own traceback apart from ours. One module, so both behave the same.
"""
from __future__ import annotations

import asyncio
import inspect
import os
import threading
import time
import traceback as tb
from typing import Any, Callable

from replicate_jupyter.prediction.files import FileOutput, InputFile

__all__ = ["call_params", "emit_result", "takes_kwargs", "is_stream", "close_stream", "to_predictor_input", "to_output",
           "is_oom", "model_traceback", "run_coroutine", "iterate_async", "build_kwargs", "preview_throttle",
           "call_and_emit", "acall_and_emit"]

_PKG_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_MODELS_DIR = os.path.join(_PKG_DIR, "models")


def call_params(call: Any) -> dict[str, Any]:
    """Parameter → default for a predict/run method. Every parameter is always passed, because a
    parameter left out would receive cog's `Input(...)` object itself as its value."""
    params: dict[str, Any] = {}
    for pname, param in inspect.signature(call).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        default = param.default
        if type(default).__name__ == "FieldInfo":
            default = default.default
        params[pname] = None if default is inspect.Parameter.empty else default
    return params


def takes_kwargs(fn) -> bool:
    return any(p.kind is p.VAR_KEYWORD for p in inspect.signature(fn).parameters.values())


def is_stream(value: Any) -> bool:
    return inspect.isgenerator(value) or (
        hasattr(value, "__next__") and hasattr(value, "__iter__") and not isinstance(value, (str, bytes, dict))
    )


def close_stream(gen) -> None:
    close = getattr(gen, "close", None)
    if callable(close):
        try:
            close()
        except Exception:
            pass


def to_predictor_input(value: Any) -> Any:
    """Validated input → what a Cog predictor expects (files as cog.Path)."""
    if isinstance(value, InputFile):
        from cog import Path

        return Path(value.as_path())
    if isinstance(value, list):
        return [to_predictor_input(v) for v in value]
    return value


def to_output(value: Any, index: int | None = None) -> Any:
    """A predictor's return value → JSON values and FileOutput objects."""
    if isinstance(value, FileOutput):
        return value
    if isinstance(value, os.PathLike):
        return FileOutput.from_path(value)
    if isinstance(value, (list, tuple)):
        return [to_output(v, i) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: to_output(v) for k, v in value.items()}
    mod = type(value).__module__
    if mod.startswith("PIL"):
        import io

        buf = io.BytesIO()
        value.save(buf, format="PNG")
        return FileOutput(buf.getvalue(), name=f"output-{index or 0}.png", content_type="image/png")
    if hasattr(value, "model_dump"):
        return to_output(value.model_dump())
    if hasattr(value, "__dataclass_fields__"):
        import dataclasses

        return to_output(dataclasses.asdict(value))
    if mod == "numpy" and hasattr(value, "tolist"):
        return value.tolist()
    return value


def is_oom(exc: BaseException) -> bool:
    return type(exc).__name__ == "OutOfMemoryError" or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


def model_traceback(exc: BaseException) -> str:
    """The model's own frames, with the exceptions it chained (`raise … from`, or raised while
    handling another), as Python prints them: ours (the runner, capture, progress) are left out."""
    chain: list[tuple[BaseException, str | None]] = []
    seen: set[int] = set()
    link: str | None = None
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen and len(chain) < 8:
        seen.add(id(cur))
        chain.append((cur, link))
        if cur.__cause__ is not None:
            cur, link = cur.__cause__, "\nThe above exception was the direct cause of the following exception:\n\n"
        elif cur.__context__ is not None and not cur.__suppress_context__:
            cur, link = cur.__context__, "\nDuring handling of the above exception, another exception occurred:\n\n"
        else:
            cur = None
    lines: list[str] = []
    for e, below in reversed(chain):  # the first cause first, as Python prints it
        frames = [f for f in tb.extract_tb(e.__traceback__)
                  if not f.filename.startswith(_PKG_DIR) or f.filename.startswith(_MODELS_DIR)]
        lines += ["Traceback (most recent call last):\n"] + tb.format_list(frames)
        lines += tb.format_exception_only(type(e), e)
        if below:
            lines.append(below)
    return "".join(lines)


_loop_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def _background_loop() -> asyncio.AbstractEventLoop:
    """One private event loop on its own thread: the kernel's loop is already running in the
    main thread, so `asyncio.run` cannot be used for async predictors there."""
    global _loop
    with _loop_lock:
        if _loop is None:
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="rj-async-predict", daemon=True).start()
        return _loop


def run_coroutine(coro) -> Any:
    return asyncio.run_coroutine_threadsafe(coro, _background_loop()).result()


def iterate_async(agen):
    loop = _background_loop()
    try:
        while True:
            try:
                yield asyncio.run_coroutine_threadsafe(agen.__anext__(), loop).result()
            except StopAsyncIteration:
                return
    finally:
        asyncio.run_coroutine_threadsafe(agen.aclose(), loop).result()




def build_kwargs(params: dict[str, Any], call: Any, inputs: dict[str, Any], secret_fields: frozenset) -> dict:
    """Validated input → the keyword arguments of one call: every parameter (defaults filled),
    files as `cog.Path`, secrets as `cog.Secret`."""
    kwargs = dict(params)
    any_kwargs = takes_kwargs(call)
    kwargs.update({k: to_predictor_input(v) for k, v in inputs.items() if k in params or any_kwargs})
    for k in set(secret_fields) & kwargs.keys():
        v = kwargs[k]  # a str, or the masked Secret a validated input holds: cog.Secret of its value
        if isinstance(v, str) or hasattr(v, "get_secret_value"):
            from cog import Secret

            if not isinstance(v, Secret):
                kwargs[k] = Secret(v.get_secret_value() if hasattr(v, "get_secret_value") else v)
    return kwargs


def preview_throttle(rate: float) -> Callable[[], bool]:
    """`wants_preview` for a RunContext: yes at most `rate` times a second, so a predictor skips
    rendering previews nobody would see."""
    gap = 1.0 / rate if rate > 0 else 0.0
    last = [0.0]

    def wants_preview() -> bool:
        now = time.monotonic()
        if now - last[0] >= gap:
            last[0] = now
            return True
        return False

    return wants_preview


def call_and_emit(call: Any, kwargs: dict, emit: Callable[[Any], None], cancel: threading.Event) -> None:
    """Call the predictor and emit its output: each item of a stream (sync, async, generator) as
    it comes, or the whole value. A cancel between items closes the stream and raises Canceled."""

    result = call(**kwargs)
    if inspect.iscoroutine(result):
        result = run_coroutine(result)
    if inspect.isasyncgen(result):
        result = iterate_async(result)
    emit_result(result, emit, cancel)


def emit_result(result: Any, emit: Callable[[Any], None], cancel: threading.Event) -> None:
    """Emit a predictor's (sync) result: each item of a stream as it comes, or the whole value.
    A cancel between items closes the stream and raises Canceled."""
    from replicate_jupyter.errors import Canceled
    from replicate_jupyter.prediction.events import Output

    if is_stream(result):
        for i, item in enumerate(result):
            emit(Output(value=to_output(item, i), index=i))
            if cancel.is_set():
                close_stream(result)
                raise Canceled()
    else:
        emit(Output(value=to_output(result), index=None))


async def acall_and_emit(call: Any, kwargs: dict, emit: Callable[[Any], None], cancel: threading.Event) -> None:
    """`call_and_emit` for an async predictor, run as a task on its model's own loop: a coroutine
    is awaited and an async generator iterated there, so canceling the task raises
    `asyncio.CancelledError` at the predictor's own `await`, as Cog does."""
    from replicate_jupyter.errors import Canceled
    from replicate_jupyter.prediction.events import Output

    result = call(**kwargs)
    if inspect.iscoroutine(result):
        result = await result
    if inspect.isasyncgen(result):
        try:
            i = 0
            async for item in result:
                emit(Output(value=to_output(item, i), index=i))
                i += 1
                if cancel.is_set():
                    raise Canceled()
        finally:
            await result.aclose()
    else:
        emit_result(result, emit, cancel)

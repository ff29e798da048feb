"""A transformers causal language model as a streaming Cog predictor.

`generate()` runs on a helper thread and hands text to a `TextIteratorStreamer`; `predict` yields
it as it comes (`ConcatenateIterator[str]`, so displays join the chunks), reports one progress step
per generated token, and stops generation at the next token once the prediction is canceled (a
StoppingCriteria reading the prediction's cancel flag, since the helper thread has no run context).
A tokenizer with a chat template gets the prompt as a user message.
"""
from __future__ import annotations

import os
import threading
from typing import Any, Iterator, Optional

from cog import BasePredictor, ConcatenateIterator, Input

from replicate_jupyter import progress
from replicate_jupyter.errors import Canceled
from replicate_jupyter.hf.quiet import quiet_progress_bars
from replicate_jupyter.runners.context import current

__all__ = ["TextPredictor", "make_class"]


class TextPredictor(BasePredictor):
    """Base of the generated per-repository classes (which set `folder`, `repo_id`, `version`)."""

    folder: str = ""
    repo_id: str = ""
    version: str | None = None
    kind = "text"

    def setup(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = progress.device()
        dtype = torch.float16 if self.device == "cuda" else torch.float32
        with quiet_progress_bars():
            self.tokenizer = AutoTokenizer.from_pretrained(self.folder, local_files_only=True)
            self.model = AutoModelForCausalLM.from_pretrained(self.folder, dtype=dtype, local_files_only=True)
        self.model.to(self.device)
        self.model.eval()
        progress.log(f"Loaded {self.repo_id} ({type(self.model).__name__}) on {self.device} in {str(dtype).split('.')[-1]}")

    def context_length(self) -> int:
        cfg = self.model.config
        for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
            value = getattr(cfg, attr, None)
            if isinstance(value, int) and value > 0:
                return value
        return 1 << 30

    def _encode(self, prompt: str) -> Any:
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                          return_tensors="pt", return_dict=True)
            return ids["input_ids"], ids.get("attention_mask")
        enc = tok(prompt, return_tensors="pt")
        if enc["input_ids"].shape[-1] == 0:  # an empty prompt: start from the BOS/EOS token
            import torch

            start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
            enc = {"input_ids": torch.tensor([[start]]), "attention_mask": torch.tensor([[1]])}
        return enc["input_ids"], enc.get("attention_mask")

    def generate_stream(self, prompt: str, max_new_tokens: int, temperature: float, top_p: float,
                        seed: Optional[int]) -> Iterator[str]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer, set_seed

        if seed is None:
            seed = int.from_bytes(os.urandom(2), "big")
        progress.log(f"Using seed: {seed}")
        set_seed(int(seed) % 2**32)  # numpy's seed must fit in 32 bits
        input_ids, mask = self._encode(prompt)
        input_ids = input_ids.to(self.device)
        mask = mask.to(self.device) if mask is not None else torch.ones_like(input_ids)
        prompt_len = input_ids.shape[-1]
        limit = self.context_length() - prompt_len
        if limit < 1:
            raise ValueError(f"the prompt is {prompt_len} tokens, the model's whole context ({self.context_length()})")
        if max_new_tokens > limit:
            progress.log(f"max_new_tokens {max_new_tokens} is past the model's context ({self.context_length()} tokens, "
                         f"{prompt_len} in the prompt): generating at most {limit}")
            max_new_tokens = limit
        ctx = current()
        stop = threading.Event()

        class _Stop(StoppingCriteria):
            def __call__(self, ids, scores, **kw):  # after each new token
                halt = stop.is_set() or (ctx is not None and ctx.cancel_event.is_set())
                return torch.full((ids.shape[0],), halt, dtype=torch.bool, device=ids.device)

        streamer = _token_streamer(TextIteratorStreamer)(self.tokenizer, skip_prompt=True, skip_special_tokens=True,
                                                        timeout=600)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        gen_kwargs = dict(input_ids=input_ids, attention_mask=mask, max_new_tokens=int(max_new_tokens), do_sample=True,
                          temperature=float(temperature), top_p=float(top_p), pad_token_id=pad, streamer=streamer,
                          stopping_criteria=StoppingCriteriaList([_Stop()]))
        failure: list[BaseException] = []

        def work() -> None:
            try:
                with torch.inference_mode():
                    self.model.generate(**gen_kwargs)
            except BaseException as exc:  # noqa: BLE001 — re-raised in the predict thread
                failure.append(exc)
                streamer.end()

        thread = threading.Thread(target=work, name=f"rj-hf-generate-{self.repo_id}", daemon=True)
        thread.start()
        try:
            for text in streamer:
                if failure:
                    break
                if text:
                    yield text
                progress.progress(min(streamer.generated, max_new_tokens), max_new_tokens)  # raises Canceled
            if failure:
                raise failure[0]
            if ctx is not None and ctx.cancel_event.is_set():
                raise Canceled("prediction canceled")
        finally:
            stop.set()
            thread.join(timeout=60)


def _token_streamer(base: type) -> type:
    """`TextIteratorStreamer` that hands out text after every token, not every word (the base
    waits for a space, which feels stuck on long words or code); it only holds back while the
    decoded text ends in an incomplete UTF-8 sequence. Counts generated tokens for progress."""

    class TokenStreamer(base):  # type: ignore[misc, valid-type]
        generated = 0

        def put(self, value):
            if len(value.shape) > 1:
                value = value[0]
            if self.skip_prompt and self.next_tokens_are_prompt:
                self.next_tokens_are_prompt = False
                return
            self.generated += int(value.numel())
            self.token_cache.extend(value.tolist())
            text = self.tokenizer.decode(self.token_cache, **self.decode_kwargs)
            if text.endswith("\ufffd"):
                return  # a multi-byte character is still arriving
            printable = text[self.print_len:]
            if text.endswith("\n"):
                self.token_cache, self.print_len = [], 0
            else:
                self.print_len += len(printable)
            if printable:
                self.on_finalized_text(printable)

    return TokenStreamer


def make_class(name: str, resolved: Any) -> type:
    """A TextPredictor subclass for one repository: its own name and version."""
    max_pos = resolved.config.get("max_position_embeddings") or resolved.config.get("n_positions") or 4096
    default_tokens = int(min(512, max(1, max_pos // 2)))

    def predict(
        self,
        prompt: str = Input(description="Prompt to send to the model.", default="Once upon a time"),
        max_new_tokens: int = Input(description="Maximum number of tokens to generate. A word is generally 2-3 tokens.",
                                    ge=1, le=4096, default=default_tokens),
        temperature: float = Input(description="Adjusts randomness of outputs, greater than 1 is random and 0 is "
                                   "deterministic", ge=0.01, le=2.0, default=0.7),
        top_p: float = Input(description="When decoding text, samples from the top p percentage of most likely tokens; "
                             "lower to ignore less likely tokens", ge=0.0, le=1.0, default=0.95),
        seed: int = Input(description="Random seed. Leave blank to randomize the seed", default=None),
    ) -> ConcatenateIterator[str]:
        yield from self.generate_stream(prompt, max_new_tokens, temperature, top_p, seed)

    predict.__qualname__ = f"{name}.predict"
    attrs = {
        "__module__": __name__,
        "__doc__": f"hf:{resolved.ref} — transformers {', '.join(resolved.config.get('architectures') or [])} "
                   "(streaming text generation).",
        "folder": str(resolved.folder),
        "repo_id": resolved.ref,
        "version": resolved.version,
        "predict": predict,
    }
    return type(name, (TextPredictor,), attrs)

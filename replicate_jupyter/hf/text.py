"""A transformers causal language model as a streaming Cog predictor.

`generate()` runs on a helper thread and hands text to a `TextIteratorStreamer`; `predict` yields
it as it comes (`ConcatenateIterator[str]`, so displays join the chunks), reports one progress step
per generated token, and stops generation at the next token once the prediction is canceled (a
StoppingCriteria reading the prediction's cancel flag, since the helper thread has no run context).
A tokenizer with a chat template gets the prompt as a user message.

Sampling is ours (`_RowSampler`, a logits processor after the model's own, with greedy decoding
picking what it drew): temperature, top-k as the model's generation config sets it, top-p, and a
`torch.Generator` per row seeded from the prediction's seed. So a seed gives the same text alone
and in a batch (`predict_batch`: prompts left-padded into one `generate()`, each row with its own
settings, length and stream), which transformers' one global RNG for all rows could not.
"""
from __future__ import annotations

import os
import threading
from typing import Any, Iterator, Optional

from cog import BasePredictor, ConcatenateIterator, Input

from replicate_jupyter import progress
from replicate_jupyter.errors import Canceled
from replicate_jupyter.hf.quiet import quiet_progress_bars
from replicate_jupyter.model.batching import batchable, current_batch
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
        from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        if seed is None:
            seed = int.from_bytes(os.urandom(2), "big")
        progress.log(f"Using seed: {seed}")
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
        sampler = _RowSampler([(float(temperature), float(top_p), int(seed))], self._top_k())
        gen_kwargs = dict(input_ids=input_ids, attention_mask=mask, max_new_tokens=int(max_new_tokens), do_sample=False,
                          pad_token_id=pad, streamer=streamer, logits_processor=LogitsProcessorList([sampler]),
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


    def _top_k(self) -> int | None:
        k = getattr(getattr(self.model, "generation_config", None), "top_k", None)
        return int(k) if isinstance(k, int) and k > 0 else None

    def predict_batch(self, inputs: list[dict]) -> Iterator[tuple[int, str]]:
        """Several prompts in one `generate()` (replicate_jupyter.model.batching): left-padded,
        each row sampled with its own seed, temperature and top-p (as alone), stopped at its own
        `max_new_tokens`, streamed as (member, text). A canceled member's row stops at its next
        token; the others go on."""
        import queue

        import torch
        from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

        batch = current_batch(len(inputs))
        seeds = [inp["seed"] if inp["seed"] is not None else int.from_bytes(os.urandom(2), "big") for inp in inputs]
        for i, seed in enumerate(seeds):
            batch.log(i, f"Using seed: {seed}")
        encoded = [self._encode(inp["prompt"])[0][0].tolist() for inp in inputs]
        width = max(len(ids) for ids in encoded)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        input_ids = torch.full((len(inputs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(inputs), width), dtype=torch.long)
        for k, ids in enumerate(encoded):
            input_ids[k, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
            mask[k, width - len(ids):] = 1
        limit = self.context_length() - width
        if limit < 1:
            raise ValueError(f"the longest prompt is {width} tokens, the model's whole context ({self.context_length()})")
        wants = [min(int(inp["max_new_tokens"]), limit) for inp in inputs]
        eos = self.tokenizer.eos_token_id
        alive = [True] * len(inputs)  # rows still generating
        out: queue.SimpleQueue = queue.SimpleQueue()

        class _Rows(StoppingCriteria):
            def __call__(self, ids, scores, **kw):  # after each new token
                n = ids.shape[1] - width
                active = set(batch.active())
                for k in range(len(alive)):
                    if alive[k] and (k not in active or n >= wants[k] or (eos is not None and int(ids[k, -1]) == eos)):
                        alive[k] = False
                return torch.tensor([not a for a in alive], dtype=torch.bool, device=ids.device)

        streamer = _RowStreamer(self.tokenizer, wants, eos, out)
        sampler = _RowSampler([(float(inp["temperature"]), float(inp["top_p"]), int(s)) for inp, s in zip(inputs, seeds)],
                              self._top_k())
        kwargs = dict(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device),
                      max_new_tokens=max(wants), do_sample=False, pad_token_id=pad, streamer=streamer,
                      logits_processor=LogitsProcessorList([sampler]), stopping_criteria=StoppingCriteriaList([_Rows()]))

        def work() -> None:
            try:
                with torch.inference_mode():
                    self.model.generate(**kwargs)
                out.put(None)
            except BaseException as exc:  # noqa: BLE001 — re-raised in the predict thread
                out.put(exc)

        thread = threading.Thread(target=work, name=f"rj-hf-generate-batch-{self.repo_id}", daemon=True)
        thread.start()
        counts = [0] * len(inputs)
        try:
            while True:
                item = out.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                k, text, tokens = item
                counts[k] += tokens
                if text:
                    yield k, text
                batch.progress(min(counts[k], wants[k]), wants[k], member=k)
        finally:
            for k in range(len(alive)):
                alive[k] = False  # generation stops at its next token
            thread.join(timeout=60)


class _RowSampler:
    """Draws each row's next token with the row's own generator (temperature, top-k, top-p) and
    leaves only it finite, so greedy decoding picks it: per-row seeds in one batched generate."""

    def __init__(self, rows: list[tuple[float, float, int]], top_k: int | None) -> None:
        import torch

        self.rows = [(t, p, torch.Generator().manual_seed(int(seed) % 2**32)) for t, p, seed in rows]
        self.top_k = top_k

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        chosen = torch.full_like(scores, float("-inf"))
        for k, (temperature, top_p, gen) in enumerate(self.rows):
            logits = scores[k].float().cpu() / max(temperature, 1e-2)
            if self.top_k:
                kth = torch.topk(logits, min(self.top_k, logits.numel())).values[-1]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            probs = torch.softmax(logits, dim=-1)
            if top_p < 1.0:
                sorted_p, order = probs.sort(descending=True)
                keep = sorted_p.cumsum(0) - sorted_p < max(top_p, 1e-6)  # always keeps the top token
                token = int(order[torch.multinomial(sorted_p * keep, 1, generator=gen)])
            else:
                token = int(torch.multinomial(probs, 1, generator=gen))
            chosen[k, token] = 0.0
        return chosen


class _RowStreamer:
    """generate()'s streamer for a batch: each row's new tokens decoded on their own (held back
    while they end in an incomplete UTF-8 sequence, flushed at the end), handed out as
    (row, text, tokens) on a queue. It keeps its own count of each row's tokens (a row ends at
    its own length or its EOS; what generate() hands out after that is padding)."""

    def __init__(self, tokenizer: Any, wants: list[int], eos: int | None, out: Any) -> None:
        self.tokenizer, self.wants, self.eos, self.out = tokenizer, wants, eos, out
        self.prompt_seen = False
        self.count = [0] * len(wants)
        self.cache: list[list[int]] = [[] for _ in wants]
        self.printed = [0] * len(wants)

    def put(self, value: Any) -> None:
        if not self.prompt_seen:  # the first call hands over the prompt
            self.prompt_seen = True
            return
        for k, token in enumerate(value.reshape(-1).tolist()):
            if self.count[k] >= self.wants[k]:
                continue
            self.count[k] += 1
            if self.eos is not None and int(token) == self.eos:
                self.count[k] = self.wants[k]
                self._flush(k, 1)
                continue
            self.cache[k].append(int(token))
            text = self.tokenizer.decode(self.cache[k], skip_special_tokens=True)
            if text.endswith("\ufffd") and self.count[k] < self.wants[k]:
                self.out.put((k, "", 1))  # a multi-byte character is still arriving
                continue
            self.out.put((k, text[self.printed[k]:], 1))
            self.printed[k] = len(text)
            if text.endswith("\n"):  # decode from here on: a long text is not re-decoded whole each token
                self.cache[k], self.printed[k] = [], 0

    def _flush(self, k: int, tokens: int) -> None:
        text = self.tokenizer.decode(self.cache[k], skip_special_tokens=True) if self.cache[k] else ""
        self.out.put((k, text[self.printed[k]:], tokens))
        self.cache[k], self.printed[k] = [], 0

    def end(self) -> None:
        for k in range(len(self.wants)):
            if self.cache[k]:
                self._flush(k, 0)


def _token_streamer(base: type) -> type:
    """`TextIteratorStreamer` that hands out text after every token, not every word (the base
    waits for a space, which feels stuck on long words or code); it only holds back while the
    decoded text ends in an incomplete UTF-8 sequence. Counts generated tokens for progress."""

    class TokenStreamer(base):  # type: ignore[misc,valid-type,unused-ignore]
        generated = 0
        next_tokens_are_prompt: bool
        token_cache: list
        print_len: int

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

    # several prompts in one generate() (TextPredictor.predict_batch); every input may differ
    predict = batchable(max_batch=8, weight="max_new_tokens")(predict)

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

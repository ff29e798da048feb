"""`local/tiny-lm`: a ~1M-parameter GPT-2 trained here on Python's documentation; streams tokens.

A Cog predictor that runs unchanged in a Jupyter kernel, on a Cog worker (`coglet`) or on
Replicate. Generation is a hand-written sampling loop over the KV cache (faster than
`generate()` at this size). Text is streamed as decoded UTF-8: token bytes go through an
incremental decoder, so a character split across tokens is emitted once it is complete and the
concatenated chunks always equal the full decode.
"""
from __future__ import annotations

import codecs
import inspect
import random
from pathlib import Path

import torch
from cog import BasePredictor, ConcatenateIterator, Input

try:
    from replicate_jupyter import progress as _progress
except ImportError:  # not installed under cog: progress reporting is simply absent

    class _progress:  # type: ignore[no-redef]
        @staticmethod
        def progress(step: int, total: int | None = None) -> None: ...

        @staticmethod
        def log(text: str) -> None:
            print(text)


try:
    from replicate_jupyter.model.batching import batchable as _batchable
    from replicate_jupyter.model.batching import current_batch as _current_batch
except ImportError:  # under cog alone: predict_batch is never called by the runtime

    def _batchable(**_rule):  # type: ignore[no-redef,misc,unused-ignore]
        return lambda fn: fn

    _current_batch = None  # type: ignore[assignment]

_HERE = Path(__file__).resolve().parent
EOS = "<|endoftext|>"


def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes→printable-unicode table used by byte-level BPE."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


class Predictor(BasePredictor):
    def setup(self) -> None:
        from safetensors.torch import load_file
        from tokenizers import Tokenizer
        from transformers import GPT2Config, GPT2LMHeadModel

        torch.set_grad_enabled(False)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tokenizer = Tokenizer.from_file(str(_HERE / "tokenizer.json"))
        # built from config + state dict (not from_pretrained): offline by construction, no progress bar
        model = GPT2LMHeadModel(GPT2Config.from_json_file(str(_HERE / "config.json")))
        missing, unexpected = model.load_state_dict(load_file(str(_HERE / "model.safetensors")), strict=False)
        if unexpected or set(missing) - {"lm_head.weight"}:
            raise RuntimeError(f"tiny-lm weights do not match: missing {missing}, unexpected {unexpected}")
        model.tie_weights()
        self.model = model.to(self.device).eval()
        # transformers 5.24 renamed the KV cache argument and output field `past_key_values` →
        # `cache` (the old name warns, and goes in 5.40); use whichever this install has
        params = inspect.signature(type(model).forward).parameters
        self.cache_arg = "cache" if "cache" in params else "past_key_values"
        self.window = self.model.config.n_positions
        self.eos = self.tokenizer.token_to_id(EOS)
        dec = _byte_decoder()
        vocab = self.tokenizer.get_vocab()
        self.token_bytes: list[bytes] = [b""] * len(vocab)
        for piece, i in vocab.items():
            self.token_bytes[i] = b"" if piece == EOS else bytes(dec[ch] for ch in piece)

    def _forward(self, ids: list[int], past) -> tuple[torch.Tensor, object]:
        out = self.model(torch.tensor([ids], device=self.device), use_cache=True, **{self.cache_arg: past})
        return out.logits[0, -1].float(), getattr(out, self.cache_arg)

    # several prompts in one forward per token (predict_batch); every input may differ
    @_batchable(max_batch=16, weight="max_new_tokens")
    def predict(
        self,
        prompt: str = Input(description="Text to continue", default="The"),
        max_new_tokens: int = Input(description="Maximum number of tokens to generate", default=128, ge=1, le=1024),
        temperature: float = Input(description="Sampling temperature; lower is more predictable", default=0.8, ge=0.01, le=2),
        top_p: float = Input(description="Sample from the smallest set of tokens whose probability adds up to top_p",
                             default=0.95, ge=0, le=1),
        seed: int = Input(description="Random seed. Leave blank to randomize", default=None),
    ) -> ConcatenateIterator[str]:
        if seed is None:
            seed = random.SystemRandom().randrange(2**31)
        _progress.log(f"Using seed: {seed}")
        gen = torch.Generator().manual_seed(seed)
        context: list = self.tokenizer.encode(prompt).ids if prompt else []
        context = ([self.eos] + context)[-(self.window // 2):]
        logits, past = self._forward(context, None)
        utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        for i in range(max_new_tokens):
            token = self._sample(logits, temperature, top_p, gen)
            if token == self.eos:
                break
            context.append(token)
            text = utf8.decode(self.token_bytes[token])
            if text:
                yield text
            _progress.progress(i + 1, max_new_tokens)
            if i + 1 == max_new_tokens:
                break
            if len(context) >= self.window:  # slide: re-read the last half of the window without cache
                context = context[-(self.window // 2):]
                logits, past = self._forward(context, None)
            else:
                logits, past = self._forward([token], past)
        tail = utf8.decode(b"", final=True)
        if tail:
            yield tail

    def predict_batch(self, inputs: list[dict]):
        """Several prompts at once (replicate_jupyter.model.batching): one forward per token for
        all rows, left-padded with an attention mask, each row sampled with its own generator
        and settings exactly as `predict` does, so a seed gives the same text (up to float
        reduction order). Yields (member, text). A row that reaches the window slides as alone:
        it is re-read into a group of its own KV cache (rows sliding together share one)."""
        batch = _current_batch(len(inputs))
        rows = []
        for i, inp in enumerate(inputs):
            seed = inp["seed"] if inp["seed"] is not None else random.SystemRandom().randrange(2**31)
            batch.log(i, f"Using seed: {seed}")
            context = self.tokenizer.encode(inp["prompt"]).ids if inp["prompt"] else []
            rows.append({"i": i, "context": ([self.eos] + context)[-(self.window // 2):], "n": 0,
                         "gen": torch.Generator().manual_seed(seed),
                         "utf8": codecs.getincrementaldecoder("utf-8")(errors="replace"),
                         "max": int(inp["max_new_tokens"]), "t": float(inp["temperature"]), "p": float(inp["top_p"])})
        groups = [self._read(rows)]
        while groups:
            wanted = set(batch.active())
            kept, sliding = [], []
            for g in groups:
                stay = []
                for k, row in enumerate(g["rows"]):
                    if row["i"] not in wanted:
                        continue  # canceled: its row goes
                    token = self._sample(g["logits"][k], row["t"], row["p"], row["gen"])
                    if token == self.eos:
                        yield from self._tail(row)
                        continue
                    row["context"].append(token)
                    row["n"] += 1
                    text = row["utf8"].decode(self.token_bytes[token])
                    if text:
                        yield row["i"], text
                    batch.progress(row["n"], row["max"], member=row["i"])
                    if row["n"] == row["max"]:
                        yield from self._tail(row)
                    elif len(row["context"]) >= self.window:  # slide as alone: re-read the last half
                        row["context"] = row["context"][-(self.window // 2):]
                        sliding.append(row)
                    else:
                        stay.append((k, row, token))
                if stay:
                    kept.append(self._step(g, stay))
            if sliding:
                kept.append(self._read(sliding))
            groups = kept

    def _read(self, rows: list[dict]) -> dict:
        """A group: rows read from scratch into one KV cache, left-padded to the longest."""
        width = max(len(r["context"]) for r in rows)
        ids = torch.full((len(rows), width), self.eos, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for k, r in enumerate(rows):
            ids[k, width - len(r["context"]):] = torch.tensor(r["context"])
            mask[k, width - len(r["context"]):] = 1
        pos = (mask.cumsum(1) - 1).clamp(min=0)
        out = self.model(ids.to(self.device), attention_mask=mask.to(self.device), position_ids=pos.to(self.device),
                         use_cache=True)
        return {"rows": rows, "logits": out.logits[:, -1].float(), "past": getattr(out, self.cache_arg),
                "mask": mask, "pos": pos[:, -1] + 1}

    def _step(self, g: dict, stay: list) -> dict:
        """The group's next token for the rows that stay (the others leave its cache)."""
        keep = [k for k, _row, _tok in stay]
        past, mask, pos = g["past"], g["mask"], g["pos"]
        if len(keep) < mask.shape[0]:
            past.batch_select_indices(torch.tensor(keep, device=self.device))
            mask, pos = mask[keep], pos[keep]
        mask = torch.cat([mask, torch.ones((len(keep), 1), dtype=mask.dtype)], dim=1)
        ids = torch.tensor([[tok] for _k, _row, tok in stay], device=self.device)
        out = self.model(ids, attention_mask=mask.to(self.device), position_ids=pos[:, None].to(self.device),
                         use_cache=True, **{self.cache_arg: past})
        return {"rows": [row for _k, row, _tok in stay], "logits": out.logits[:, -1].float(),
                "past": getattr(out, self.cache_arg), "mask": mask, "pos": pos + 1}

    @staticmethod
    def _tail(row: dict):
        tail = row["utf8"].decode(b"", final=True)
        if tail:
            yield row["i"], tail

    @staticmethod
    def _sample(logits: torch.Tensor, temperature: float, top_p: float, gen: torch.Generator) -> int:
        probs = torch.softmax(logits.cpu() / max(temperature, 1e-2), dim=-1)
        if top_p < 1.0:
            sorted_p, order = probs.sort(descending=True)
            keep = sorted_p.cumsum(0) - sorted_p < max(top_p, 1e-6)  # always keeps the top token
            sorted_p = sorted_p * keep
            return int(order[torch.multinomial(sorted_p, 1, generator=gen)])
        return int(torch.multinomial(probs, 1, generator=gen))

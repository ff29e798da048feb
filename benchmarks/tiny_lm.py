"""Speed and quality of `local/tiny-lm` on this CPU.

    .venv/bin/python benchmarks/tiny_lm.py [--tokens 256] [--runs 3]

Speed goes through the real predictor (its KV-cache sampling loop and UTF-8 streaming), with
tokens counted from the progress events it emits: tokens/s after the first chunk, and time to
first token (TTFT) from the call. Quality is the mean next-token loss on the held-out topics of
`pydoc_data.topics` (never trained on) against a unigram model of the training split; targets:
>= 100 tokens/s and a clear win over the unigram baseline.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from replicate_jupyter.prediction import events
from replicate_jupyter.runners import context  # noqa: E402


def measure_stream(p, prompt: str, tokens: int, seed: int) -> tuple[float, float, int, str]:
    """(ttft seconds, tokens/s after the first chunk, tokens, text) for one streamed generation."""
    steps: list[int] = []
    ctx = context.RunContext(emit=lambda e: steps.append(e.step) if isinstance(e, events.Progress) else None,
                              cancel_event=threading.Event())
    prev = context.activate(ctx)
    try:
        t0 = time.perf_counter()
        it = iter(p.predict(prompt=prompt, max_new_tokens=tokens, temperature=0.8, top_p=0.95, seed=seed))
        chunks = [next(it)]
        t_first = time.perf_counter()
        chunks += list(it)
        t_end = time.perf_counter()
    finally:
        context.activate(prev)
    n = max(steps) if steps else len(chunks)
    return t_first - t0, (n - 1) / max(1e-9, t_end - t_first), n, "".join(chunks)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="local/tiny-lm benchmark")
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args(argv)

    import torch

    torch.set_num_threads(2)
    from replicate_jupyter.models.tiny_lm import train as T
    from replicate_jupyter.models.tiny_lm.predict import Predictor

    t0 = time.perf_counter()
    p = Predictor()
    p.setup()
    print(f"setup {time.perf_counter() - t0:.2f}s; parameters {sum(x.numel() for x in p.model.parameters()):,}")

    ttfts, rates = [], []
    for r in range(a.runs):
        ttft, rate, n, text = measure_stream(p, "The", a.tokens, seed=r)
        ttfts.append(ttft)
        rates.append(rate)
        if r == 0:
            print(f"sample ({n} tokens): {text[:300]!r}")
    print(f"tokens/s: median {statistics.median(rates):.0f} (runs: {', '.join(f'{x:.0f}' for x in rates)}); "
          f"TTFT median {statistics.median(ttfts) * 1000:.0f} ms")

    train_docs, held_docs = T.split_topics()
    train_ids = T.encode_docs(p.tokenizer, train_docs)
    held_ids = T.encode_docs(p.tokenizer, held_docs)
    with torch.no_grad():
        loss = T.held_out_loss(p.model, held_ids)
    uni = T.unigram_loss(train_ids, held_ids, p.model.config.vocab_size)
    chars = sum(len(d) + 1 for d in held_docs)
    per_char = (len(held_ids) - 1) / chars / math.log(2)
    print(f"held-out loss: {loss:.3f} nats/token ({loss * per_char:.2f} bits/char, perplexity {math.exp(loss):.1f}); "
          f"unigram baseline {uni:.3f} nats/token ({uni * per_char:.2f} bits/char, perplexity {math.exp(uni):.1f}); "
          f"model/unigram {loss / uni:.2f}")
    ok_speed = statistics.median(rates) >= 100
    ok_loss = loss < 0.8 * uni
    print(f"targets: >= 100 tokens/s {'OK' if ok_speed else 'MISSED'}; beats unigram clearly (< 80%) "
          f"{'OK' if ok_loss else 'MISSED'}")


if __name__ == "__main__":
    main()

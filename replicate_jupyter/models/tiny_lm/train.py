"""Train `local/tiny-lm` from scratch on Python's own documentation (CPU, ~5 minutes).

    python -m replicate_jupyter.models.tiny_lm.train --steps 900 --seed 0 --out replicate_jupyter/models/tiny_lm

Data: `pydoc_data.topics` (ships with every Python, ~465k characters of reference text).
Every 10th topic (sorted by name) is held out for validation, so the held-out loss measures
text the model never saw. A byte-level BPE tokenizer (512 tokens) is trained on the training
topics only; the model is a 4-layer GPT-2 of width 128 (~1M parameters). The checkpoint with
the best held-out loss is kept (the notes say it overfits after ~800 steps on this data).
Deterministic for a seed (fixed thread count, seeded torch generator).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

EOS = "<|endoftext|>"
BLOCK = 128


def split_topics() -> tuple[list[str], list[str]]:
    """(train documents, held-out documents): every 10th topic by sorted name is held out."""
    from pydoc_data.topics import topics

    names = sorted(topics)
    train = [topics[n] for i, n in enumerate(names) if i % 10 != 5]
    held = [topics[n] for i, n in enumerate(names) if i % 10 == 5]
    return train, held


def train_tokenizer(docs: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(docs, trainer)
    return tok


def encode_docs(tok, docs: list[str]) -> torch.Tensor:
    eos = tok.token_to_id(EOS)
    ids: list[int] = []
    for d in docs:
        ids += tok.encode(d).ids + [eos]
    return torch.tensor(ids, dtype=torch.long)


@torch.no_grad()
def held_out_loss(model, ids: torch.Tensor) -> float:
    """Mean next-token cross-entropy (nats) over the held-out stream in 128-token windows."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    n = (len(ids) - 1) // BLOCK
    for start in range(0, n, 32):
        rows = [ids[i * BLOCK : i * BLOCK + BLOCK + 1] for i in range(start, min(n, start + 32))]
        x = torch.stack([r[:-1] for r in rows])
        y = torch.stack([r[1:] for r in rows])
        logits = model(x).logits
        total += torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="sum").item()
        count += y.numel()
    model.train(was_training)
    return total / count


def unigram_loss(train_ids: torch.Tensor, held_ids: torch.Tensor, vocab: int) -> float:
    """Cross-entropy (nats/token) of add-one-smoothed training-split token frequencies on held-out."""
    counts = torch.bincount(train_ids, minlength=vocab).double() + 1
    logp = torch.log(counts / counts.sum())
    return float(-logp[held_ids[1:]].mean())


def train(steps: int, seed: int, out: Path, vocab_size: int = 512, batch: int = 32, lr: float = 3e-3,
          eval_every: int = 100) -> dict:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.set_num_threads(2)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    train_docs, held_docs = split_topics()
    tok = train_tokenizer(train_docs, vocab_size)
    train_ids, held_ids = encode_docs(tok, train_docs), encode_docs(tok, held_docs)
    eos = tok.token_to_id(EOS)
    cfg = GPT2Config(vocab_size=tok.get_vocab_size(), n_positions=BLOCK, n_embd=128, n_layer=4, n_head=4,
                     resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1, bos_token_id=eos, eos_token_id=eos)
    model = GPT2LMHeadModel(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"parameters: {n_params:,}; train tokens {len(train_ids):,}; held-out tokens {len(held_ids):,}", flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1, betas=(0.9, 0.95))
    warmup = min(50, steps // 10)

    def lr_at(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup))))

    chars_held = sum(len(d) for d in held_docs) + len(held_docs)  # one char per document separator
    uni = unigram_loss(train_ids, held_ids, cfg.vocab_size)
    best = {"held_out_loss": float("inf")}
    t0 = time.time()
    model.train()
    for step in range(steps):
        starts = torch.randint(0, len(train_ids) - BLOCK - 1, (batch,), generator=gen)
        chunk = torch.stack([train_ids[s : s + BLOCK + 1] for s in starts.tolist()])
        loss = model(chunk[:, :-1], labels=chunk[:, :-1].clone()).loss  # HF shifts labels itself
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            h = held_out_loss(model, held_ids)
            bpc = h * (len(held_ids) - 1) / chars_held / math.log(2)
            el = time.time() - t0
            print(f"step {step + 1}/{steps} train {loss.item():.3f} held-out {h:.3f} nats/token ({bpc:.2f} bits/char) "
                  f"unigram {uni:.3f}; {el / (step + 1):.2f}s/step", flush=True)
            if h < best["held_out_loss"]:
                best = {"held_out_loss": round(h, 4), "held_out_bits_per_char": round(bpc, 3), "step": step + 1,
                        "unigram_loss": round(uni, 4), "train_seconds": round(el, 1)}
                out.mkdir(parents=True, exist_ok=True)
                model.save_pretrained(out, safe_serialization=True)
                tok.save(str(out / "tokenizer.json"))
    info = {"seed": seed, "steps": steps, "batch": batch, "block": BLOCK, "lr": lr, "parameters": n_params,
            "vocab_size": cfg.vocab_size, "total_seconds": round(time.time() - t0, 1), "best": best}
    (out / "training.json").write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(info), flush=True)
    return info


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=900)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent)
    ap.add_argument("--vocab", type=int, default=512)
    a = ap.parse_args(argv)
    train(a.steps, a.seed, a.out, vocab_size=a.vocab)


if __name__ == "__main__":
    main()

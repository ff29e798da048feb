"""Our Replicate client against replicate-python 1.0.7, on the same Replicate-API server.

    .venv/bin/python benchmarks/replicate_api.py [--rounds 10]

Both talk to tests/fake_replicate.py (real HTTP on loopback, the seed models under their
Replicate names), so the figures compare the clients, not the network:

- requests per run: `run()` of an image model (outputs read once) and of a token model, and
  `stream()` of the token model — every HTTP request each client made, by kind;
- time to first token: from calling `stream()` to the first `output` event (median of the
  rounds; ours warm, i.e. the model's schema already cached, and cold for the first call);
- wall time of `run()` on the image model (median).
"""
from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import time
from collections import Counter

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

TOKEN = "r8_BenchmarkToken0123456789abcdefXYZ"
LLAMA, FLUX = "meta/meta-llama-3-8b-instruct", "black-forest-labs/flux-schnell"


def is_output(e) -> bool:
    """An output event, ours (`"output"`) or replicate-python's (`EventType.OUTPUT`)."""
    return getattr(e.event, "value", e.event) == "output"


def kinds(calls: list) -> Counter:
    import re

    out: Counter = Counter()
    for c in calls:
        path = re.sub(r"/delivery/.*", "/delivery/…", c.path)
        path = re.sub(r"/(predictions|stream)/[a-z2-7]{26}", r"/\1/{id}", path)
        out[f"{c.method} {path}"] += 1
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    from fake_replicate import FakeReplicate, seed_models

    fake = FakeReplicate(seed_models(), token=TOKEN, boot_delay=0.0).start()
    os.environ.update(REPLICATE_API_TOKEN=TOKEN, REPLICATE_API_BASE_URL=fake.url, REPLICATE_BASE_URL=fake.root)
    import replicate

    import replicate_jupyter as rj

    theirs = replicate.Client(api_token=TOKEN, base_url=fake.root)
    llama_in = {"prompt": "Explain quantum computing", "max_tokens": 30, "delay": 0.005}

    def count(fn) -> tuple[Counter, float]:
        n0 = len(fake.log)
        t0 = time.perf_counter()
        fn()
        took = time.perf_counter() - t0
        time.sleep(0.05)  # late reads (a final GET) land in the log
        return kinds(fake.calls(n0)), took

    def read_all(out) -> None:
        for f in out:  # replicate-python leaves http: URLs (the fake's) as str: fetched as a user would
            f.read() if hasattr(f, "read") else theirs._client.get(f).content

    cold = {}
    clients = {"ours": lambda: rj.stream(LLAMA, input=llama_in), "theirs": lambda: theirs.stream(LLAMA, input=llama_in)}
    for name, fn in clients.items():
        t0 = time.perf_counter()
        for e in fn():
            if is_output(e):
                cold[name] = time.perf_counter() - t0
                break
    print(f"time to first token, first call: ours {cold['ours'] * 1e3:.1f} ms (schema fetched first), "
          f"replicate-python {cold['theirs'] * 1e3:.1f} ms")

    ttft: dict[str, list[float]] = {"ours": [], "theirs": []}
    for _ in range(args.rounds):
        for name, fn in clients.items():
            t0 = time.perf_counter()
            it = fn()
            for e in it:
                if is_output(e):
                    ttft[name].append(time.perf_counter() - t0)
                    break
            for _e in it:  # drain: the next round starts with no stream open
                pass
    a, b = statistics.median(ttft["ours"]), statistics.median(ttft["theirs"])
    print(f"time to first token, median of {args.rounds}: ours {a * 1e3:.1f} ms, replicate-python {b * 1e3:.1f} ms "
          f"(ratio {a / b:.2f})")

    rows = [
        ("run(image) + read outputs", lambda: read_all(rj.run(FLUX, input={"prompt": "x", "num_outputs": 2})),
         lambda: read_all(theirs.run(FLUX, input={"prompt": "x", "num_outputs": 2}))),
        ("run(tokens)", lambda: "".join(rj.run(LLAMA, input=llama_in)), lambda: "".join(theirs.run(LLAMA, input=llama_in))),
        ("stream(tokens)", lambda: list(rj.stream(LLAMA, input=llama_in)), lambda: list(theirs.stream(LLAMA, input=llama_in))),
    ]
    walls: dict[str, list[float]] = {"ours": [], "theirs": []}
    for label, ours_fn, theirs_fn in rows:
        ours_calls, _ = count(ours_fn)
        theirs_calls, _ = count(theirs_fn)
        print(f"{label}: ours {sum(ours_calls.values())} requests {dict(ours_calls)}")
        print(f"{' ' * len(label)}  replicate-python {sum(theirs_calls.values())} requests {dict(theirs_calls)}")
    for _ in range(args.rounds):
        walls["ours"].append(count(rows[0][1])[1])
        walls["theirs"].append(count(rows[0][2])[1])
    a, b = statistics.median(walls["ours"]), statistics.median(walls["theirs"])
    print(f"run(image) + read, median wall: ours {a * 1e3:.1f} ms (outputs embedded), replicate-python {b * 1e3:.1f} ms")
    fake.stop()


if __name__ == "__main__":
    main()

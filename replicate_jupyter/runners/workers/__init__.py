"""The `workers` backend: a pool of Cog HTTP servers (coglet, `replicate-jupyter serve`).

    runner.py       WorkersRunner (resolve, dispatch to a worker, cancel) and the kernel's pool()
    attempt.py      one prediction on one worker: SSE → events, re-attach, every way it can end
    worker_pool.py  the workers: what each serves, liveness, idle-worker hand-out (FIFO)
    cog_client.py   coglet's HTTP API, with every httpx failure translated to BackendError
    wire.py         values across the wire (files as data URIs) and what a schema says of it
"""
from __future__ import annotations

from replicate_jupyter.runners.workers.runner import WorkersRunner, decode_output, encode_input, pool
from replicate_jupyter.runners.workers.worker_pool import Pool, Worker

__all__ = ["WorkersRunner", "pool", "Pool", "Worker", "encode_input", "decode_output"]

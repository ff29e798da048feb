"""The `ray` backend: one Ray actor per model on a Ray cluster, events streamed back.

    runner.py   RayRunner: resolve, run a prediction on its model's actor, cancel, retries
    cluster.py  connecting the kernel as a driver (or starting a private local Ray)
    actors.py   the driver's table of model actors: naming, creating, placing, dropping
    actor.py    what runs inside an actor: load, set up once on the model's thread, stream one run's events

Importing this package does not import ray (it is imported on first use).
"""
from __future__ import annotations

from replicate_jupyter.runners.ray.runner import RayRunner

__all__ = ["RayRunner"]

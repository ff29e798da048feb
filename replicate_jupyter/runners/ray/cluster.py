"""Connecting the kernel to a Ray cluster as a driver, or starting a private local Ray.

The kernel connects as a Ray *driver* (not Ray Client: `ray://` cannot stream generator items
as they are produced). A process is the driver of one cluster at a time, so the address this
process is connected to is module state (`_current_address`), and a runner for another
cluster switches it. Connecting happens on first use, so `%replicate use ray --address …`
never blocks, and a wrong address fails in seconds (`check_reachable`) instead of after
`ray.init`'s minutes of retries.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
from types import ModuleType
from typing import Any

from replicate_jupyter.errors import BackendError

__all__ = ["Cluster", "check_reachable"]

_current_address: str | None = None  # the cluster this process is a driver of (set by our ray.init)


class Cluster:
    """One runner's view of its cluster: the address asked for, whether this runner made the
    connection (and so may shut it down), and where it is connected."""

    def __init__(self, address: str | None = None, namespace: str | None = None) -> None:
        self.address = address
        self.namespace = namespace
        self.owns_ray = False
        self.connected_to: str | None = None
        self._lock = threading.Lock()

    def connect(self) -> ModuleType:
        """The ray module, connected: to `address` (else $RAY_ADDRESS, else a local Ray started
        in this kernel), reusing this process's connection when it is to the same cluster."""
        import ray

        global _current_address
        with self._lock:
            address = self.address or os.environ.get("RAY_ADDRESS") or None
            if ray.is_initialized():
                if not self.address or self.address == _current_address or _current_address is None:
                    if self.connected_to is None:
                        self.connected_to = _current_address or "existing"
                    return ray
                # another cluster than the one this kernel is connected to: a process is the
                # driver of one cluster at a time, so switch (the previous runner was closed by use())
                check_reachable(self.address)
                ray.shutdown()
            if address and address.startswith("ray://"):
                raise BackendError("Ray Client addresses (ray://) cannot stream results; set the cluster's "
                                   "GCS address (HEAD_IP:6379) instead", url=address)
            if address and address != "auto":
                check_reachable(address)
            kwargs: dict[str, Any] = dict(namespace=self.namespace, log_to_driver=False,
                                          logging_level=logging.WARNING, ignore_reinit_error=True)
            try:
                if address:
                    ray.init(address=address, **kwargs)
                else:  # never attach to whatever cluster someone else last started on this machine
                    ray.init(address="local", include_dashboard=False, **kwargs)
            except Exception as exc:
                where = address or "a local Ray instance"
                raise BackendError(f"Could not connect to the Ray cluster at {where}: {type(exc).__name__}: "
                                   f"{str(exc).splitlines()[0] if str(exc) else ''}",
                                   url=address, tried=[f"ray.init(address={address or 'local'!r})"]) from None
            self.owns_ray = True
            self.connected_to = _current_address = address or "local"
            return ray

    def close(self) -> None:
        """Shut down the connection, only if this runner made it."""
        global _current_address
        if not self.owns_ray:
            return
        try:
            import ray

            ray.shutdown()
        except Exception:
            pass
        self.owns_ray = False
        self.connected_to = None
        _current_address = None


def check_reachable(address: str, timeout: float = 3.0) -> None:
    """Fail in seconds on a wrong address: ray.init itself retries an unreachable GCS for minutes."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise BackendError(f"The Ray address {address!r} is not host:port (the head's GCS port, 6379 by default)",
                           url=address)
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise BackendError(f"Could not reach the Ray cluster at {address}: {exc.strerror or exc} "
                           f"(is `ray start --head` running there, and is this its GCS port?)",
                           url=address, tried=[f"TCP connect {address}"]) from None

"""Starting or joining the Ray cluster of one ``engine.batch`` run."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from engine.errors import UserError

__all__ = ["Cluster", "ray_cluster"]


@dataclass(frozen=True)
class Cluster:
    address: str  # the cluster's GCS address, or "local" for an instance started by this command
    startup_s: float  # seconds from ray.init to a connected driver
    cpus: float  # logical CPUs of the whole cluster
    gpus: float  # GPUs of the whole cluster


@contextmanager
def ray_cluster(address: str | None, workers: int) -> Iterator[Cluster]:
    """Join the cluster at ``address`` (``ray start``, KubeRay, ``auto``), or, when None, start a
    local instance with ``max(cores, workers + 1)`` logical CPUs: one per inference worker plus at
    least one for the reading and writing tasks. Disconnects (and stops a local instance) on exit."""
    import ray

    started = time.perf_counter()
    common = {"logging_level": logging.ERROR, "log_to_driver": False, "configure_logging": True}
    try:
        if address is None:
            # "local": a new instance even where RAY_ADDRESS or a `ray start` cluster would be picked up
            ray.init(address="local", num_cpus=max(os.cpu_count() or 1, workers + 1), include_dashboard=False,
                     **common)
        else:
            ray.init(address=address, **common)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"--ray-address {address}: cannot join the Ray cluster" if address else "cannot start Ray"
        raise UserError(f"{where} ({' '.join(str(exc).split())})") from None
    try:
        resources = ray.cluster_resources()
        yield Cluster(address or "local", time.perf_counter() - started, resources.get("CPU", 0.0),
                      resources.get("GPU", 0.0))
    finally:
        ray.shutdown()

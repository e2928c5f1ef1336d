"""The training device and torch's CPU threads: what a local build and a Dask worker share (``simulator.pipeline``
and ``simulator.distributed`` both import it; neither imports the other for it)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from simulator.errors import ConfigError

__all__ = ["TORCH_THREADS", "check_device_name", "resolve_device", "training_threads"]

TORCH_THREADS = 1
"""Torch intra-op CPU threads while shards train, in this process and on Dask workers alike. It is fixed
because it is part of the bank's bytes: torch's CPU reductions sum in an order that depends on the thread count,
so a 2-thread and a 1-thread build differ in the last bits of losses and weights. Parallelism comes from
training several shards at once (``scheduler="local:N"``), not from threads inside one small ensemble."""


def check_device_name(device: str) -> None:
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"device must be one of cpu, cuda; got {device!r}")


def resolve_device(device: str) -> torch.device:
    """Check a ``--device`` value. Raises ConfigError for an unknown or unavailable device."""
    check_device_name(device)
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "--device cuda: no CUDA device is available (torch.cuda.is_available() is False); use --device cpu"
        )
    return torch.device(device)


@contextmanager
def training_threads() -> Iterator[None]:
    """Run the body with :data:`TORCH_THREADS` torch CPU threads, restoring the previous count on exit."""
    previous = torch.get_num_threads()
    torch.set_num_threads(TORCH_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(previous)

"""Config → population → batched training per shard → trajectory bank on disk (cached, resumable).

Shards train in this process, or on a Dask cluster (``scheduler=``, see :mod:`simulator.distributed`); either
way this process alone writes the bank, shard by shard, and the bank's bytes are the same.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from simulator.bank import BankWriter, TrajectoryBank, bank_is_complete, load_bank
from simulator.config import GROUPS, SCHEMA_VERSION, ShardSpec, SimulationConfig, plan_shards, sample_population
from simulator.device import check_device_name, resolve_device, training_threads
from simulator.distributed import connect, parse_scheduler, train_shards
from simulator.ensemble import train_shard
from simulator.recording import recording_layout

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int, str], None]
"""``progress(networks_done, networks_total, description)``."""


@dataclass(frozen=True)
class SimulationResult:
    """A bank and how it was obtained."""

    bank: TrajectoryBank
    cached: bool
    seconds: float


CACHED = "cached"
"""The progress label of a bank read from the cache (nothing trains)."""


CPU_SECONDS_PER_NETWORK_STEP = 2.2e-3
"""One network's training step on one core of a 2-core laptop CPU, recording included: the `quick` build took
344 s for 256 networks x 600 steps (docs/science.md). Convnets cost more than MLPs; it is an estimate."""


def build_estimate(config: SimulationConfig) -> tuple[int, float]:
    """What building ``config``'s bank costs before it starts: (bytes of arrays, seconds on one CPU core)."""
    from simulator.recording import bank_bytes

    return bank_bytes(config), CPU_SECONDS_PER_NETWORK_STEP * config.n_networks * config.n_steps


def bank_path(config: SimulationConfig, banks_dir: Path) -> Path:
    """Where the bank of ``config`` lives: content-addressed by the config hash (and schema version)."""
    return Path(banks_dir) / f"{config.name}-{config.content_hash()[:12]}"


def _cluster(scheduler: str | None) -> AbstractContextManager[Client | None]:
    """A Dask client for ``scheduler``, or None (train here) when there is none."""
    if scheduler is None:
        return nullcontext()
    return connect(scheduler)


def _label(shard: ShardSpec) -> str:
    return f"{shard.rule} · {shard.architecture} · {shard.task}"


def _verify_problem(bank: TrajectoryBank) -> str | None:
    """The one-line problem of a bank whose checksums fail, or None."""
    from simulator.bank import BankError

    try:
        bank.verify()
    except BankError as e:
        return " ".join(str(e).split()).split("; delete the bank")[0]  # the advice does not apply: we rebuild
    return None


def simulate(
    config: SimulationConfig,
    banks_dir: Path,
    *,
    device: str = "cpu",
    progress: ProgressCallback | None = None,
    scheduler: str | None = None,
    verify: bool = False,
    on_corrupt: Callable[[str], None] | None = None,
) -> SimulationResult:
    """Train the population of ``config`` and record it into a bank under ``banks_dir``.

    A complete bank with the same hash is returned at once (``cached=True``). An interrupted build resumes:
    finished shards are kept and only missing ones are trained; the result is identical to an uninterrupted
    build because every shard's randomness depends only on the config.

    Args:
        config: the population to simulate.
        banks_dir: the workspace's bank folder.
        device: ``"cpu"`` or ``"cuda"``; with a ``scheduler``, resolved on each worker.
        progress: called as shards finish.
        scheduler: train the shards on a Dask cluster instead of in this process: ``"local:N"`` (N worker
            processes here) or ``"tcp://HOST:PORT"`` (a running scheduler); see :mod:`simulator.distributed`.
            The bank is byte-identical; its manifest records the scheduler under ``extra``.
        verify: check a cached bank's SHA-256 checksums (reads it all: about a second per 300 MiB); a bank that
            fails is reported through ``on_corrupt(message)`` (else logged) and rebuilt.
        on_corrupt: receives the one-line problem of a corrupt cached bank before it is rebuilt.

    Raises:
        ConfigError: a bad device or scheduler, an unreachable scheduler, or (from a worker) no CUDA device.
    """
    start = time.perf_counter()
    if scheduler is None:
        dev = resolve_device(device)
    else:
        parse_scheduler(scheduler)  # a bad value fails before anything is read or written
        check_device_name(device)  # availability is the workers' to check
        dev = torch.device(device)
    path = bank_path(config, banks_dir)
    config_hash = config.content_hash()
    if bank_is_complete(path, config_hash):
        bank = load_bank(path)
        problem = _verify_problem(bank) if verify else None
        if problem is None:
            if progress is not None:
                progress(bank.n_networks, bank.n_networks, CACHED)
            return SimulationResult(bank, True, time.perf_counter() - start)
        message = f"{problem}; rebuilding it"
        (on_corrupt or log.warning)(message)

    specs = sample_population(config)
    shards = plan_shards(config, specs)
    with _cluster(scheduler) as client:  # connected before anything is written
        path.parent.mkdir(parents=True, exist_ok=True)
        with BankWriter(path, config.to_dict(), config_hash, len(specs), recording_layout(config)) as writer:
            done = writer.done_shards()
            n_done = sum(len(s.networks) for s in shards if s.index in done)
            if done:
                log.info("resuming %s: %d of %d shards already built", path, len(done), len(shards))
            if progress is not None:
                progress(n_done, len(specs), "resuming" if done else "starting")
            todo = [shard for shard in shards if shard.index not in done]
            if client is None:
                for shard in todo:
                    if progress is not None:
                        progress(n_done, len(specs), _label(shard))
                    with training_threads():
                        trained = train_shard(config, shard, specs, dev)
                    writer.write_shard(shard.index, shard.networks, trained.arrays, trained.rows)
                    n_done += len(shard.networks)
                    if progress is not None:
                        progress(n_done, len(specs), _label(shard))
            else:
                if progress is not None:
                    progress(n_done, len(specs), f"training on {scheduler}")
                for shard, trained in train_shards(client, config, todo, specs, device):
                    writer.write_shard(shard.index, shard.networks, trained.arrays, trained.rows)
                    n_done += len(shard.networks)
                    if progress is not None:
                        progress(n_done, len(specs), _label(shard))
            extra = {
                "checkpoint_steps": [int(s) for s in config.checkpoint_steps()],
                "groups": list(GROUPS),
                "schema_version": SCHEMA_VERSION,
                "device": str(dev),
                "torch": torch.__version__,
                "numpy": np.__version__,
                "n_shards": len(shards),
            }
            if scheduler is not None:
                extra["scheduler"] = scheduler
            bank = writer.finalize(time.perf_counter() - start, extra)
    return SimulationResult(bank, False, time.perf_counter() - start)

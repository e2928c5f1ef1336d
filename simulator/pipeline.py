"""Config → population → batched training per shard → trajectory bank on disk (cached, resumable)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from simulator.bank import BankWriter, TrajectoryBank, bank_is_complete, load_bank
from simulator.config import GROUPS, SCHEMA_VERSION, SimulationConfig, plan_shards, sample_population
from simulator.ensemble import train_shard
from simulator.errors import ConfigError
from simulator.recording import recording_layout

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int, str], None]
"""``progress(networks_done, networks_total, description)``."""


@dataclass(frozen=True)
class SimulationResult:
    """A bank and how it was obtained."""

    bank: TrajectoryBank
    cached: bool
    seconds: float


def bank_path(config: SimulationConfig, banks_dir: Path) -> Path:
    """Where the bank of ``config`` lives: content-addressed by the config hash (and schema version)."""
    return Path(banks_dir) / f"{config.name}-{config.content_hash()[:12]}"


def resolve_device(device: str) -> torch.device:
    """Check a ``--device`` value. Raises ConfigError for an unknown or unavailable device."""
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"device must be one of cpu, cuda; got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "--device cuda: no CUDA device is available (torch.cuda.is_available() is False); use --device cpu"
        )
    return torch.device(device)


def simulate(
    config: SimulationConfig,
    banks_dir: Path,
    *,
    device: str = "cpu",
    progress: ProgressCallback | None = None,
) -> SimulationResult:
    """Train the population of ``config`` and record it into a bank under ``banks_dir``.

    A complete bank with the same hash is returned at once (``cached=True``). An interrupted build resumes:
    finished shards are kept and only missing ones are trained; the result is identical to an uninterrupted
    build because every shard's randomness depends only on the config.

    Args:
        config: the population to simulate.
        banks_dir: the workspace's bank folder.
        device: ``"cpu"`` or ``"cuda"``.
        progress: called as shards finish.
    """
    start = time.perf_counter()
    dev = resolve_device(device)
    path = bank_path(config, banks_dir)
    config_hash = config.content_hash()
    if bank_is_complete(path, config_hash):
        bank = load_bank(path)
        if progress is not None:
            progress(bank.n_networks, bank.n_networks, "cached")
        return SimulationResult(bank, True, time.perf_counter() - start)

    specs = sample_population(config)
    shards = plan_shards(config, specs)
    path.parent.mkdir(parents=True, exist_ok=True)
    with BankWriter(path, config.to_dict(), config_hash, len(specs), recording_layout(config)) as writer:
        done = writer.done_shards()
        n_done = sum(len(s.networks) for s in shards if s.index in done)
        if done:
            log.info("resuming %s: %d of %d shards already built", path, len(done), len(shards))
        if progress is not None:
            progress(n_done, len(specs), "resuming" if done else "starting")
        for shard in shards:
            if shard.index in done:
                continue
            label = f"{shard.rule} · {shard.architecture} · {shard.task}"
            if progress is not None:
                progress(n_done, len(specs), label)
            trained = train_shard(config, shard, specs, dev)
            writer.write_shard(shard.index, shard.networks, trained.arrays, trained.rows)
            n_done += len(shard.networks)
            if progress is not None:
                progress(n_done, len(specs), label)
        extra = {
            "checkpoint_steps": [int(s) for s in config.checkpoint_steps()],
            "groups": list(GROUPS),
            "schema_version": SCHEMA_VERSION,
            "device": str(dev),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "n_shards": len(shards),
        }
        bank = writer.finalize(time.perf_counter() - start, extra)
    return SimulationResult(bank, False, time.perf_counter() - start)

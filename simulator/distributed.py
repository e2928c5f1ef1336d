"""Train a bank's shards on a Dask distributed cluster (``simulate(..., scheduler=...)``).

The shard is the unit of work: each one is a single :func:`~simulator.ensemble.train_shard` call of seconds to
minutes (the ``quick`` preset's take 8-15 s on one CPU core) whose result is a few MB of arrays, so what the
engine adds per task (about 60 ms for a ``quick`` shard, its 13 MB of results included) stays under 1 %.
Workers only train and return arrays and metadata rows; the bank writer stays in the calling process and
commits each shard as it arrives, so a killed build resumes exactly as a local one does and the bank is
byte-identical to a local build (each shard's randomness depends only on the config).

Two kinds of scheduler:

* ``local:N`` starts a :class:`distributed.LocalCluster` of N single-threaded worker processes on this machine
  for the duration of the build;
* ``tcp://HOST:PORT`` connects to a running scheduler (``dask scheduler``) whose workers (``dask worker ADDRESS
  --nthreads 1``) have the same version of lr-advisor installed.

``dask[distributed]`` is an optional dependency (the ``cluster`` extra): it is imported only here, inside the
functions, so nothing else pays for it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from simulator.errors import ConfigError

if TYPE_CHECKING:
    from distributed import Client

    from simulator.config import NetworkSpec, ShardSpec, SimulationConfig
    from simulator.ensemble import TrainedShard

log = logging.getLogger(__name__)

MAX_LOCAL_WORKERS = 256
"""Largest N of ``local:N``."""
CONNECT_TIMEOUT_S = 5.0
"""How long to try reaching a ``tcp://`` scheduler before giving up."""
WORKER_WAIT_S = 10.0
"""How long to wait for a reachable scheduler to have at least one worker."""

_LOCAL_RE = re.compile(r"^local:(\d+)$")
_TCP_RE = re.compile(r"^tcp://(?:[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]):(\d{1,5})$")
_ALLOWED = (
    f"local:N (N worker processes on this machine, 1 <= N <= {MAX_LOCAL_WORKERS}) or tcp://HOST:PORT "
    "(the address of a running Dask scheduler)"
)


def parse_scheduler(scheduler: str) -> int | str:
    """Check a ``--scheduler`` value without contacting anything.

    Args:
        scheduler: ``"local:N"`` or ``"tcp://HOST:PORT"``.

    Returns:
        N (the number of local worker processes to start) for ``local:N``; the address unchanged for ``tcp://``.

    Raises:
        ConfigError: any other value (naming it and the allowed forms).
    """
    text = scheduler if isinstance(scheduler, str) else ""
    local = _LOCAL_RE.match(text)
    if local and 1 <= int(local.group(1)) <= MAX_LOCAL_WORKERS:
        return int(local.group(1))
    tcp = _TCP_RE.match(text)
    if tcp and 1 <= int(tcp.group(1)) <= 65535:
        return text
    raise ConfigError(f"--scheduler must be {_ALLOWED}; got {scheduler!r}")


@contextmanager
def connect(scheduler: str) -> Iterator[Client]:
    """A Dask client for ``scheduler``, closed on exit (with the cluster, for ``local:N``).

    Args:
        scheduler: ``"local:N"`` (start N single-threaded worker processes here, without a dashboard) or
            ``"tcp://HOST:PORT"`` (connect to that scheduler within :data:`CONNECT_TIMEOUT_S`).

    Yields:
        A connected :class:`distributed.Client` with at least one worker.

    Raises:
        ConfigError: a bad value; ``dask[distributed]`` is not installed; the scheduler cannot be reached, or
            has no worker within :data:`WORKER_WAIT_S`.
    """
    target = parse_scheduler(scheduler)
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ConfigError(
            f"--scheduler {scheduler} needs Dask distributed, which is not installed; pip install 'lr-advisor[cluster]'"
        ) from None

    if isinstance(target, int):
        cluster = LocalCluster(
            n_workers=target,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        try:
            with Client(cluster, set_as_default=False) as client:
                log.info("started a local Dask cluster of %d workers at %s", target, cluster.scheduler_address)
                yield client
        finally:
            cluster.close()
        return

    try:
        client = Client(target, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except OSError as exc:
        raise ConfigError(
            f"--scheduler {scheduler}: no Dask scheduler answered within {CONNECT_TIMEOUT_S:g} s ({exc}); "
            "start one with `dask scheduler`, or use local:N"
        ) from None
    with client:
        try:
            client.wait_for_workers(1, timeout=WORKER_WAIT_S)
        except TimeoutError:
            raise ConfigError(
                f"--scheduler {scheduler}: the scheduler has no worker (none joined within {WORKER_WAIT_S:g} s); "
                f"start some with `dask worker {scheduler} --nthreads 1`"
            ) from None
        log.info("connected to the Dask scheduler at %s", scheduler)
        yield client


def _train_on_worker(
    config: SimulationConfig, shard: ShardSpec, specs: Sequence[NetworkSpec], device: str
) -> TrainedShard:
    """The task: train one shard on the worker's ``device`` with as many torch threads as a local build."""
    from simulator.device import resolve_device, training_threads
    from simulator.ensemble import train_shard

    with training_threads():
        return train_shard(config, shard, specs, resolve_device(device))


def train_shards(
    client: Client,
    config: SimulationConfig,
    shards: Sequence[ShardSpec],
    specs: Sequence[NetworkSpec],
    device: str,
) -> Iterator[tuple[ShardSpec, TrainedShard]]:
    """Train ``shards`` on the client's workers and yield each one as it finishes.

    Shards are submitted largest first (fewer idle workers at the end); they arrive in completion order.
    Each result is released on the cluster once it has been yielded.

    Args:
        client: a connected client (see :func:`connect`).
        config: the simulation config.
        shards: the shards to train.
        specs: the whole population (indexed by network index).
        device: ``"cpu"`` or ``"cuda"``, resolved on each worker.

    Yields:
        ``(shard, trained)`` pairs; ``trained.arrays`` and ``trained.rows`` as from
        :func:`~simulator.ensemble.train_shard`.

    Raises:
        Exception: whatever a task raised (e.g. ConfigError when a worker has no CUDA device), re-raised here.
    """
    from distributed import as_completed

    prefix = f"train-shard-{config.content_hash()[:12]}"
    order = sorted(shards, key=lambda s: len(s.networks), reverse=True)
    pending = {
        client.submit(_train_on_worker, config, shard, specs, device, key=f"{prefix}-{shard.index:05d}"): shard
        for shard in order
    }
    for future in as_completed(list(pending), loop=client.loop):
        shard = pending.pop(future)
        trained = future.result()
        future.release()
        yield shard, trained

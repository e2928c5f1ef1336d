"""Shards on a Dask cluster: scheduler values, byte-identical banks, resume, the workers' device, the CLI."""

from __future__ import annotations

import json
import logging
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cli_helpers import assert_one_error_line
from click.testing import CliRunner
from distributed import LocalCluster

from advisor.cli import cli
from simulator import distributed as dist
from simulator.bank import load_bank
from simulator.config import SimulationConfig, plan_shards, sample_population
from simulator.errors import ConfigError
from simulator.pipeline import bank_path, simulate

if TYPE_CHECKING:
    from simulator.pipeline import SimulationResult

# 4 rules x 2 networks, two batch sizes: 6 shards of 1-2 networks, more shards than workers.
CONFIG = SimulationConfig(
    name="dask",
    rules=("sgdm", "fa", "adam", "ia"),
    architectures=("mlp3_relu",),
    tasks=("digits",),
    n_networks_per_rule=2,
    n_steps=12,
    n_checkpoints=4,
    batch_sizes=(8, 16),
    n_probes=3,
    units_per_group=8,
    synapses_per_group=16,
    seed=3,
)
N_SHARDS = len(plan_shards(CONFIG, sample_population(CONFIG)))
ALLOWED = (
    "--scheduler must be local:N (N worker processes on this machine, 1 <= N <= 256) or tcp://HOST:PORT "
    "(the address of a running Dask scheduler); got "
)


def bank_files(path: Path) -> dict[str, bytes]:
    """Every array file's bytes and the metadata's."""
    files = {p.name: p.read_bytes() for p in sorted((path / "arrays").glob("*.npy"))}
    return files | {"metadata.json": (path / "metadata.json").read_bytes()}


def manifest(path: Path) -> dict:
    doc: dict = json.loads((path / "manifest.json").read_text())
    return doc


def assert_same_bank(built: Path, reference: Path, scheduler: str) -> None:
    """Same array bytes, metadata and checksums; the manifest differs only in time, duration and scheduler."""
    assert bank_files(built) == bank_files(reference)
    got, want = manifest(built), manifest(reference)
    assert got["extra"].pop("scheduler") == scheduler
    for key in ("created", "seconds"):
        del got[key], want[key]
    assert got == want
    load_bank(built, verify=True)


def free_port() -> int:
    """A TCP port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture(scope="module")
def local_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CONFIG's bank built in this process, the reference every cluster build must equal byte for byte."""
    return simulate(CONFIG, tmp_path_factory.mktemp("local")).bank.path


@pytest.fixture(scope="module")
def scheduler_address() -> Iterator[str]:
    """The tcp:// address of a running cluster of 2 single-threaded worker processes (module-scoped)."""
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=logging.ERROR
    ) as cluster:
        yield cluster.scheduler_address


# ----------------------------------------------------------------------------------------------- values
@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("local:1", 1),
        ("local:2", 2),
        ("local:256", 256),
        ("tcp://127.0.0.1:8786", "tcp://127.0.0.1:8786"),
        ("tcp://scheduler.example.org:8786", "tcp://scheduler.example.org:8786"),
        ("tcp://[::1]:8786", "tcp://[::1]:8786"),
    ],
)
def test_parse_scheduler_accepts(value: str, parsed: int | str) -> None:
    assert dist.parse_scheduler(value) == parsed


@pytest.mark.parametrize(
    "value",
    [
        "local:0",
        "local:x",
        "local:",
        "local:-1",
        "local:257",
        "local",
        "",
        "tcp://host",
        "tcp://host:0",
        "tcp://host:70000",
        "tcp://:8786",
        "http://host:8786",
        "host:8786",
        "tcp://a b:1",
    ],
)
def test_parse_scheduler_rejects(value: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(ALLOWED + repr(value))):
        dist.parse_scheduler(value)


def test_a_bad_scheduler_fails_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape(ALLOWED + "'local:0'")):
        simulate(CONFIG, tmp_path / "banks", scheduler="local:0")
    with pytest.raises(ConfigError, match=re.escape("device must be one of cpu, cuda; got 'gpu'")):
        simulate(CONFIG, tmp_path / "banks", scheduler="local:2", device="gpu")
    assert not (tmp_path / "banks").exists()


def test_an_unreachable_scheduler_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert dist.CONNECT_TIMEOUT_S <= 10
    monkeypatch.setattr(dist, "CONNECT_TIMEOUT_S", 1.0)
    address = f"tcp://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(ConfigError, match=re.escape(f"--scheduler {address}: no Dask scheduler answered within 1 s")):
        simulate(CONFIG, tmp_path / "banks", scheduler=address)
    assert time.monotonic() - start < 5
    assert not (tmp_path / "banks").exists()  # nothing written: the cluster is reached before the bank is opened


def test_a_scheduler_without_workers_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dist, "WORKER_WAIT_S", 0.5)
    with LocalCluster(n_workers=0, dashboard_address=None, silence_logs=logging.ERROR) as empty:
        address = empty.scheduler_address
        message = f"--scheduler {address}: the scheduler has no worker (none joined within 0.5 s)"
        with pytest.raises(ConfigError, match=re.escape(message)), dist.connect(address):
            pytest.fail("connected to a cluster without workers")


def test_without_dask_the_scheduler_asks_for_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # makes `import distributed` raise ImportError
    message = "--scheduler local:2 needs Dask distributed, which is not installed; pip install 'lr-advisor[cluster]'"
    with pytest.raises(ConfigError, match=re.escape(message)), dist.connect("local:2"):
        pytest.fail("connected without dask")


# ----------------------------------------------------------------------------------------------- banks
def test_local_2_builds_the_bank_of_a_local_build(tmp_path: Path, local_build: Path) -> None:
    events: list[tuple[int, int, str]] = []
    result = simulate(CONFIG, tmp_path, scheduler="local:2", progress=lambda d, n, m: events.append((d, n, m)))
    assert not result.cached
    assert_same_bank(result.bank.path, local_build, "local:2")
    assert events[:2] == [(0, 8, "starting"), (0, 8, "training on local:2")]
    per_shard = events[2:]
    assert len(per_shard) == N_SHARDS  # progress advances once per shard, as each arrives
    assert [d for d, _, _ in per_shard] == sorted(d for d, _, _ in per_shard) and per_shard[-1][0] == 8
    assert not (result.bank.path / "shards").exists()


class Interrupted(Exception):
    pass


def test_a_cluster_resumes_a_local_build_without_resubmitting_its_shards(
    tmp_path: Path, local_build: Path, scheduler_address: str
) -> None:
    def stop_after_first_shard(done: int, total: int, message: str) -> None:
        if done > 0:
            raise Interrupted

    with pytest.raises(Interrupted):
        simulate(CONFIG, tmp_path, progress=stop_after_first_shard)
    (committed,) = (bank_path(CONFIG, tmp_path) / "shards").glob("*.json")
    n_first = len(json.loads(committed.read_text())["network_indices"])

    events: list[tuple[int, int, str]] = []
    bank = simulate(CONFIG, tmp_path, scheduler=scheduler_address, progress=lambda d, n, m: events.append((d, n, m)))
    assert events[:2] == [(n_first, 8, "resuming"), (n_first, 8, f"training on {scheduler_address}")]
    assert len(events[2:]) == N_SHARDS - 1  # the committed shard was not trained again
    assert_same_bank(bank.bank.path, local_build, scheduler_address)
    cached = simulate(CONFIG, tmp_path, scheduler="tcp://127.0.0.1:1")  # a cached bank needs no cluster
    assert cached.cached


def test_workers_resolve_the_device(tmp_path: Path, scheduler_address: str) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    message = "--device cuda: no CUDA device is available (torch.cuda.is_available() is False); use --device cpu"
    with pytest.raises(ConfigError, match=re.escape(message)):
        simulate(CONFIG, tmp_path, scheduler=scheduler_address, device="cuda")
    assert not list(tmp_path.glob("*/shards/*.json"))


# ----------------------------------------------------------------------------------------------- CLI
def test_cli_simulate_on_a_cluster(tmp_path: Path, scheduler_address: str, tiny_bank: SimulationResult) -> None:
    args = ["simulate", "--preset", "tiny", "--scheduler", scheduler_address, "--json", "--workspace", str(tmp_path)]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["n_networks"] == 4 and doc["cached"] is False and doc["hash"] == tiny_bank.bank.hash
    assert_same_bank(Path(doc["bank"]), tiny_bank.bank.path, scheduler_address)


@pytest.mark.parametrize("value", ["local:x", "local:0", "tcp://nowhere"])
def test_cli_rejects_a_bad_scheduler_in_one_line(tmp_path: Path, value: str) -> None:
    args = ["simulate", "--preset", "tiny", "--scheduler", value, "--workspace", str(tmp_path)]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert_one_error_line(result, ALLOWED + repr(value))
    assert not (tmp_path / "banks").exists() or not any((tmp_path / "banks").iterdir())


def test_cli_help_documents_the_scheduler() -> None:
    out = CliRunner().invoke(cli, ["simulate", "--help"], catch_exceptions=False).stdout
    assert "--scheduler ADDRESS" in out and "local:N" in out and "tcp://HOST:PORT" in out


def test_dask_is_imported_only_when_a_scheduler_is_used() -> None:
    code = "import sys, advisor.cli, simulator.distributed; print(sorted({'dask', 'distributed'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

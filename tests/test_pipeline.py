"""End-to-end simulation: population sampling, bank contents, determinism, caching and resuming after a kill."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from simulator.bank import load_bank
from simulator.config import (
    GROUPS,
    ShardSpec,
    SimulationConfig,
    mixes_batch_sizes,
    plan_shards,
    sample_population,
    shard_summary,
)
from simulator.ensemble import train_shard
from simulator.errors import ConfigError
from simulator.pipeline import bank_path, simulate
from simulator.rules import RULES


def small_config(**overrides: object) -> SimulationConfig:
    base: dict[str, object] = dict(
        name="small",
        rules=("sgdm", "fa", "adam"),
        architectures=("mlp3_relu",),
        tasks=("digits",),
        n_networks_per_rule=2,
        n_steps=12,
        n_checkpoints=4,
        batch_sizes=(8,),
        n_probes=3,
        units_per_group=8,
        synapses_per_group=16,
        seed=3,
    )
    base.update(overrides)
    return SimulationConfig(**base)  # type: ignore[arg-type]


def array_bytes(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((path / "arrays").glob("*.npy"))} | {
        "metadata.json": (path / "metadata.json").read_bytes()
    }


# --------------------------------------------------------------------------- population
def test_population_is_balanced_and_deterministic() -> None:
    config = small_config(
        architectures=("mlp3_relu", "conv2_relu"),
        tasks=("digits", "gaussian_mixture"),
        n_networks_per_rule=8,
        batch_sizes=(8, 16),
    )
    specs = sample_population(config)
    assert specs == sample_population(config)
    assert len(specs) == 24 and [s.index for s in specs] == list(range(24))
    per_rule = {r: Counter((s.architecture, s.task) for s in specs if s.rule == r) for r in config.rules}
    # every rule sees exactly the same design cells: no rule can be told apart by its architecture or task
    assert all(c == per_rule["sgdm"] for c in per_rule.values())
    assert set(per_rule["sgdm"].values()) == {2}
    for s in specs:
        lo, hi = RULES.get(s.rule).default_lr_range
        assert lo <= s.lr <= hi
        assert 0.7 <= s.init_scale <= 1.4
    assert sample_population(config.with_seed(4)) != specs


def test_shards_group_networks_of_one_shape_and_respect_max_ensemble() -> None:
    config = small_config(n_networks_per_rule=10, max_ensemble=4)
    specs = sample_population(config)
    shards = plan_shards(config, specs)
    covered = sorted(i for sh in shards for i in sh.networks)
    assert covered == list(range(len(specs)))
    for sh in shards:
        assert 1 <= len(sh.networks) <= 4
        assert {specs[i].rule for i in sh.networks} == {sh.rule}
        assert {specs[i].batch_size for i in sh.networks} == {sh.batch_size}
    assert plan_shards(config, specs) == shards


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"rules": ("sgdm", "backprop")}, "unknown learning rule 'backprop'"),
        ({"units_per_group": 300}, "units_per_group = 300 exceeds the 256 units"),
        ({"n_checkpoints": 50}, "n_checkpoints must be at most n_steps + 1 = 13; got 50"),
        ({"batch_sizes": ()}, "batch_sizes must be a non-empty list"),
        ({"init_scale": (2.0, 1.0)}, "init_scale must be a pair"),
        ({"rules": ("sgdm", "sgdm")}, "rules lists a value twice"),
        ({"tasks": ("teacher_student",), "curricula": ("class_incremental",)}, "no task is compatible"),
        ({"seed": -1}, "seed must be an integer"),
    ],
)
def test_config_rejects_bad_values(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        small_config(**overrides)


def test_content_hash_ignores_name_but_not_contents() -> None:
    a = small_config()
    assert a.content_hash() == small_config(name="other").content_hash()
    assert a.content_hash() != small_config(n_steps=13).content_hash()
    assert a.content_hash() != a.with_seed(4).content_hash()


# --------------------------------------------------------------------------- bank contents
def test_simulate_writes_a_complete_bank(tmp_path: Path) -> None:
    config = small_config()
    events: list[tuple[int, int, str]] = []
    result = simulate(config, tmp_path, progress=lambda d, n, m: events.append((d, n, m)))
    assert not result.cached
    bank = result.bank
    assert bank.path == bank_path(config, tmp_path)
    assert bank.n_networks == 6
    t = len(config.checkpoint_steps())
    assert bank["activations"].shape == (6, t, len(GROUPS), 8, 3)
    assert bank["activity_change"].dtype == np.float16
    assert bank["weights"].shape == (6, t, len(GROUPS), 16)
    assert bank["loss"].shape == (6, t)
    assert np.isfinite(bank["activations"][:]).all() and np.isfinite(bank["weights"][:]).all()
    md = bank.metadata
    assert list(md["rule"]) == ["sgdm", "sgdm", "fa", "fa", "adam", "adam"]
    assert set(md["family"]) == {"backprop", "feedback_alignment"}
    assert (md["metric_name"] == "accuracy").all()
    assert bank.manifest["extra"]["checkpoint_steps"] == [0, 4, 8, 12]
    assert events[-1][0] == events[-1][1] == 6
    # recorded training loss matches the metadata's final loss; weights change over training
    np.testing.assert_allclose(bank["loss"][:, -1], md["final_loss"].to_numpy(), rtol=1e-6)
    assert not np.array_equal(bank["weights"][:, 0], bank["weights"][:, -1])


def test_same_seed_identical_bank_different_seed_different(tmp_path: Path) -> None:
    config = small_config()
    a = simulate(config, tmp_path / "a").bank
    b = simulate(config, tmp_path / "b").bank
    assert array_bytes(a.path) == array_bytes(b.path)
    c = simulate(config.with_seed(4), tmp_path / "c").bank
    assert not np.array_equal(a["activations"][:], c["activations"][:])


def test_second_run_returns_the_cached_bank(tmp_path: Path) -> None:
    config = small_config()
    first = simulate(config, tmp_path)
    mtime = (first.bank.path / "manifest.json").stat().st_mtime_ns
    second = simulate(config, tmp_path)
    assert second.cached and second.bank.hash == first.bank.hash
    assert (second.bank.path / "manifest.json").stat().st_mtime_ns == mtime


class Interrupted(Exception):
    pass


def test_interrupted_build_resumes_to_an_identical_bank(tmp_path: Path) -> None:
    config = small_config()

    def stop_after_first_shard(done: int, total: int, message: str) -> None:
        if done > 0:
            raise Interrupted

    with pytest.raises(Interrupted):
        simulate(config, tmp_path / "resumed", progress=stop_after_first_shard)
    partial = bank_path(config, tmp_path / "resumed")
    assert len(list((partial / "shards").glob("*.json"))) == 1
    trained: list[str] = []
    resumed = simulate(config, tmp_path / "resumed", progress=lambda d, n, m: trained.append(m)).bank
    assert "resuming" in trained
    assert not any(m.startswith("sgdm") for m in trained)  # the finished sgdm shard was not trained again
    fresh = simulate(config, tmp_path / "fresh").bank
    assert array_bytes(resumed.path) == array_bytes(fresh.path)


SCRIPT = """
import sys
from pathlib import Path
from simulator.config import SimulationConfig
from simulator.pipeline import simulate
config = SimulationConfig(name="kill", rules=("sgdm", "fa", "adam", "ia"), architectures=("mlp3_relu",),
    tasks=("digits",), n_networks_per_rule=2, n_steps=400, n_checkpoints=5, batch_sizes=(16,), n_probes=3,
    units_per_group=8, synapses_per_group=16, seed=5)
simulate(config, Path(sys.argv[1]))
"""


def test_kill_9_mid_build_then_rerun_gives_the_uninterrupted_bank(tmp_path: Path) -> None:
    banks = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(banks)])
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if list(banks.glob("*/shards/*.json")):
                break
            if proc.poll() is not None:
                pytest.fail("the simulation finished before it could be killed")
            time.sleep(0.02)
        else:
            pytest.fail("no shard appeared within 120 s")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    (bank_dir,) = banks.iterdir()
    manifest = json.loads((bank_dir / "manifest.json").read_text())
    assert manifest["complete"] is False
    done_before = {p.name for p in (bank_dir / "shards").glob("*.json")}
    assert 1 <= len(done_before) < 4
    subprocess.run([sys.executable, "-c", SCRIPT, str(banks)], check=True)
    subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "clean")], check=True)
    (clean_dir,) = (tmp_path / "clean").iterdir()
    assert array_bytes(bank_dir) == array_bytes(clean_dir)
    assert load_bank(bank_dir, verify=True).n_networks == 8


# --------------------------------------------------------------------------- mixed ensembles
def test_shards_mix_curricula_and_batch_sizes_where_the_rule_allows() -> None:
    config = small_config(rules=("sgdm", "node_perturbation"), n_networks_per_rule=12, max_ensemble=16,
                          curricula=("iid", "class_incremental"), batch_sizes=(4, 8), mix_batch_sizes=True)
    specs = sample_population(config)
    shards = plan_shards(config, specs)
    assert sorted(i for sh in shards for i in sh.networks) == list(range(len(specs)))
    by_rule = {r: [sh for sh in shards if sh.rule == r] for r in config.rules}
    # sgdm: one ensemble of all 12 networks, both curricula and both batch sizes, at the larger batch
    (mixed,) = by_rule["sgdm"]
    assert len(mixed.networks) == 12 and mixed.batch_size == 8
    assert {specs[i].curriculum for i in mixed.networks} == {"iid", "class_incremental"}
    assert {specs[i].batch_size for i in mixed.networks} == {4, 8}
    # node perturbation draws noise per example: its ensembles keep one batch size each
    for sh in by_rule["node_perturbation"]:
        assert {specs[i].batch_size for i in sh.networks} == {sh.batch_size}
    assert len(by_rule["node_perturbation"]) == 2


def test_batch_sizes_that_do_not_divide_the_largest_stay_apart() -> None:
    config = small_config(n_networks_per_rule=6, batch_sizes=(6, 8), mix_batch_sizes=True)
    assert not mixes_batch_sizes(config, "sgdm")
    for sh in plan_shards(config, sample_population(config)):
        assert len({b for b in (sample_population(config)[i].batch_size for i in sh.networks)}) == 1


def test_batch_sizes_stay_apart_unless_the_config_mixes_them() -> None:
    config = small_config(n_networks_per_rule=12, curricula=("iid", "class_incremental"), batch_sizes=(4, 8))
    specs = sample_population(config)
    shards = plan_shards(config, specs)
    assert all(len({specs[i].batch_size for i in sh.networks}) == 1 for sh in shards)
    assert any(len({specs[i].curriculum for i in sh.networks}) == 2 for sh in shards)
    assert config.content_hash() != small_config(n_networks_per_rule=12, curricula=("iid", "class_incremental"),
                                                 batch_sizes=(4, 8), mix_batch_sizes=True).content_hash()


def test_shard_summary_counts_the_plan() -> None:
    config = small_config(n_networks_per_rule=10, max_ensemble=4)
    summary = shard_summary(config)
    sizes = [len(sh.networks) for sh in plan_shards(config, sample_population(config))]
    assert summary == {"n_networks": 30, "n_shards": len(sizes),
                       "networks_per_shard": {"mean": round(30 / len(sizes), 3), "min": min(sizes),
                                              "max": max(sizes)}}


@pytest.mark.parametrize("rule", [r for r in RULES.keys() if RULES.get(r).replicable_batches])
def test_a_network_trains_the_same_in_a_mixed_ensemble_as_alone(rule: str) -> None:
    """Conformance over every rule that may share an ensemble across batch sizes and curricula: each member's
    recorded trajectory equals the one it has when trained alone at its own batch size."""
    config = small_config(rules=(rule,), n_networks_per_rule=4, curricula=("iid", "class_incremental"),
                          batch_sizes=(4, 8), n_steps=8, n_checkpoints=3, mix_batch_sizes=True)
    specs = sample_population(config)
    (mixed,) = plan_shards(config, specs)
    assert {specs[i].batch_size for i in mixed.networks} == {4, 8}
    together = train_shard(config, mixed, specs)
    for j, i in enumerate(mixed.networks):
        alone = train_shard(config, ShardSpec(0, rule, specs[i].architecture, specs[i].task, specs[i].batch_size,
                                              (i,), mixed.seed), specs)
        for name, value in alone.arrays.items():
            # float32 sums in another order, stored at the bank's precision (float16 for the observables)
            tol = 4e-3 if value.dtype == np.float16 else 2e-4
            np.testing.assert_allclose(together.arrays[name][j], value[0], rtol=tol, atol=tol / 10, err_msg=name)
        assert together.rows[j]["batch_size"] == specs[i].batch_size

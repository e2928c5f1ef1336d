"""Shared fixtures: one tiny trajectory bank per test session."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch

# One torch thread in the test process, as every bank build uses (simulator.pipeline): with torch's OpenMP pool
# and numpy's OpenBLAS threads both spinning on 2 cores, a batched torch.linalg.solve after numpy-heavy tests
# could spin for minutes.
torch.set_num_threads(1)

if TYPE_CHECKING:
    from simulator.bank import TrajectoryBank
    from simulator.pipeline import SimulationResult


@pytest.fixture(scope="session")
def tiny_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace directory (session-scoped) that holds the ``tiny`` preset's bank once ``tiny_bank`` ran."""
    return tmp_path_factory.mktemp("tiny-workspace")


@pytest.fixture(scope="session")
def tiny_bank(tiny_workspace: Path) -> SimulationResult:
    """The ``tiny`` preset (2 rules x 2 networks, 20 steps) simulated once per session on the CPU.

    Returns:
        the :class:`~simulator.pipeline.SimulationResult`; its bank lives in ``tiny_workspace``'s ``banks/``.
    """
    from advisor.application.workspace import Workspace
    from simulator.pipeline import simulate
    from simulator.presets import load_preset

    workspace = Workspace.open(tiny_workspace)
    workspace.banks.mkdir(parents=True, exist_ok=True)
    return simulate(load_preset("tiny"), workspace.banks, device="cpu")


def without_free_signals(bank: TrajectoryBank, path: Path, seed: int = 0) -> TrajectoryBank:
    """A copy of ``bank`` in which behaviour and hyperparameters carry no information about the rule.

    Within each architecture, every network gets the learning curves (loss, metric, test metric) and the
    hyperparameters (lr, batch size, init scale) of a donor network, and the donors are balanced over rules: the
    networks of each rule take their donors from every rule in turn (with two rules and an even count per rule,
    exactly half from each). So the donor's rule is independent of the network's own, the behavioural and
    hyperparameter controls sit at chance by construction (not merely in expectation over permutations), and
    the recorded observables keep their signal. Written with the bank writer (a real, loadable bank with its own
    hash).
    """
    import numpy as np

    from simulator.bank import BankWriter

    meta = bank.metadata.reset_index(drop=True)
    n = len(meta)
    rng = np.random.default_rng(seed)
    source = np.arange(n)
    rule = meta["rule"].astype(str).to_numpy()
    for arch in sorted(set(meta["architecture"])):
        rows = np.flatnonzero(meta["architecture"].to_numpy() == arch)
        pools = [rng.permutation(rows[rule[rows] == r]) for r in sorted(set(rule[rows]))]
        recipients = np.concatenate(pools)  # rule by rule
        donors = [pool[i] for i in range(max(map(len, pools))) for pool in pools if i < len(pool)]  # round robin
        source[recipients] = donors
    arrays = {name: np.asarray(bank[name]) for name in bank.array_names}
    for name in ("loss", "metric", "test_metric"):
        arrays[name] = arrays[name][source]
    rows_out = []
    for i, row in enumerate(meta.to_dict("records")):
        donor = meta.iloc[source[i]]
        row = {**row, "lr": float(donor["lr"]), "batch_size": int(donor["batch_size"]),
               "init_scale": float(donor["init_scale"]), "final_loss": float(donor["final_loss"]),
               "final_metric": float(donor["final_metric"]), "final_test_metric": float(donor["final_test_metric"])}
        rows_out.append(row)
    layout = {name: (a.shape[1:], str(a.dtype)) for name, a in arrays.items()}
    config = {**bank.config, "note": "behaviour and hyperparameters permuted across rules (tests only)"}
    with BankWriter(path, config, bank.hash[:-8] + "0f0f0f0f", n, layout) as writer:
        writer.write_shard(0, list(range(n)), arrays, rows_out)
        return writer.finalize(0.0)


@pytest.fixture(scope="session")
def plan_bank(tmp_path_factory: pytest.TempPathFactory) -> TrajectoryBank:
    """A bank in which the rule is identifiable beyond the controls, for the design search and ``advisor plan``.

    96 networks (48 sgdm, 48 hebbian) on two architecture families (mlp3_relu, conv2_relu) and one task,
    150 steps, 6 checkpoints, 24 units and 48 synapses recorded per layer group; about 10-25 s on one CPU core.
    The tests' plans set half of them aside (``plan_helpers.PLAN_SETASIDE``): identification beyond the controls
    needs many networks on both sides.
    sgdm against fa is not identifiable at this scale (ridge accuracy near chance on every observable), hence
    hebbian. Hebbian and sgdm also differ in how they learn (behaviour) and in their learning-rate ranges, so the
    controls would identify them too: :func:`without_free_signals` permutes learning curves and hyperparameters
    across rules within each architecture, leaving the recorded observables as the only signal. Initial scales
    stop at 1.2 so that no network diverges (a diverged network has NaN losses).

    Returns:
        the loaded :class:`~simulator.bank.TrajectoryBank`.
    """
    from simulator.config import SimulationConfig
    from simulator.pipeline import simulate

    config = SimulationConfig(
        name="plan", rules=("sgdm", "hebbian"), architectures=("mlp3_relu", "conv2_relu"), tasks=("digits",),
        n_networks_per_rule=48, n_steps=150, n_checkpoints=6, batch_sizes=(16,), init_scale=(0.7, 1.2),
        n_probes=4, units_per_group=24, synapses_per_group=48,
    )
    built = simulate(config, tmp_path_factory.mktemp("planbank-simulated")).bank
    return without_free_signals(built, tmp_path_factory.mktemp("planbank") / "plan-bank")

"""Shared fixtures: one tiny trajectory bank per test session."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

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
    from advisor.workspace import Workspace
    from simulator.pipeline import simulate
    from simulator.presets import load_preset

    workspace = Workspace.open(tiny_workspace)
    workspace.banks.mkdir(parents=True, exist_ok=True)
    return simulate(load_preset("tiny"), workspace.banks, device="cpu")


@pytest.fixture(scope="session")
def plan_bank(tmp_path_factory: pytest.TempPathFactory) -> TrajectoryBank:
    """A bank in which the rule is identifiable, for the design search and ``advisor plan`` (session-scoped).

    48 networks (24 sgdm, 24 hebbian) on two architecture families (mlp3_relu, conv2_relu) and one task,
    150 steps, 6 checkpoints, 24 units and 48 synapses recorded per layer group; about 5 s on one CPU core.
    sgdm against fa is not identifiable at this scale (ridge accuracy near chance on every observable), hence
    hebbian. Initial scales stop at 1.2 so that no network diverges (a diverged network has NaN losses). With
    the ridge classifier and 5 splits, activations of 24-48 units reach accuracy 0.90-0.97 (95% CI lower bounds
    up to 0.92): a plan with target 0.75 is feasible within 15 trials, while no protocol is perfect on every
    network, so target 1.0 is infeasible. Weights stay near chance.

    Returns:
        the loaded :class:`~simulator.bank.TrajectoryBank`.
    """
    from simulator.config import SimulationConfig
    from simulator.pipeline import simulate

    config = SimulationConfig(
        name="plan", rules=("sgdm", "hebbian"), architectures=("mlp3_relu", "conv2_relu"), tasks=("digits",),
        n_networks_per_rule=24, n_steps=150, n_checkpoints=6, batch_sizes=(16,), init_scale=(0.7, 1.2),
        n_probes=4, units_per_group=24, synapses_per_group=48,
    )
    return simulate(config, tmp_path_factory.mktemp("planbank")).bank

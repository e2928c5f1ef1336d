"""Shared fixtures: one tiny trajectory bank per test session."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
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

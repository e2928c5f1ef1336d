"""Simulator: trains populations of small networks under candidate learning rules and records the raw
observables an experimenter could measure, into a content-addressed trajectory bank.

It knows nothing of the advisor (Optuna, MLflow, reports): the advisor reads its banks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "ARCHITECTURES",
    "CURRICULA",
    "RULES",
    "TASKS",
    "SimulationConfig",
    "TrajectoryBank",
    "load_bank",
    "load_preset",
    "simulate",
]

_LAZY = {
    "ARCHITECTURES": "simulator.networks",
    "CURRICULA": "simulator.tasks",
    "RULES": "simulator.rules",
    "TASKS": "simulator.tasks",
    "SimulationConfig": "simulator.config",
    "TrajectoryBank": "simulator.bank",
    "load_bank": "simulator.bank",
    "load_preset": "simulator.presets",
    "simulate": "simulator.pipeline",
}

if TYPE_CHECKING:
    from simulator.bank import TrajectoryBank, load_bank
    from simulator.config import SimulationConfig
    from simulator.networks import ARCHITECTURES
    from simulator.pipeline import simulate
    from simulator.presets import load_preset
    from simulator.rules import RULES
    from simulator.tasks import CURRICULA, TASKS


def __getattr__(name: str) -> Any:
    """Import heavy modules (torch) only when their names are used, so the CLI starts instantly."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'simulator' has no attribute {name!r}")

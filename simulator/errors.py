"""Errors raised by the simulator for bad configuration or a bad bank.

The CLI turns every :class:`SimulatorError` into one line on stderr and exit code 2.
"""

from __future__ import annotations


class SimulatorError(ValueError):
    """Base class of every user-facing simulator error."""


class ConfigError(SimulatorError):
    """A simulation config or preset is invalid (unknown key, bad value)."""


class BankError(SimulatorError):
    """A trajectory bank is missing, foreign, corrupt or incomplete."""

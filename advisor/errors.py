"""User-facing errors of the advisor package.

The CLI turns every :class:`AdvisorError` (and every ``simulator.errors.SimulatorError``) into one line on
stderr, ``Error: <message>``, and exit code 2.
"""

from __future__ import annotations


class AdvisorError(ValueError):
    """Base class of every user-facing error raised by the advisor package (bad input, bad workspace)."""

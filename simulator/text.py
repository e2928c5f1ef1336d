"""Small text helpers shared by the simulator and the advisor: the one-line error policy's pieces.

Every user-facing error in both packages is one line that names what was wrong and, for a misspelt name, the
closest valid one. This module holds the pieces that policy needs more than once: the "did you mean" hint, the
joining of a multi-line message into one line, the first line of an exception, and the reading of a TOML file
whose every failure becomes one line naming the file.

It imports only the standard library (no torch, no ``simulator.errors``), so the command line can use it without
slowing its start, and nothing from ``advisor`` (the simulator never imports the advisor).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

__all__ = ["did_you_mean", "error_line", "one_line", "read_toml"]


def did_you_mean(value: str, choices: Iterable[str], *, cutoff: float = 0.6,
                 shown: Callable[[str], str] | None = None) -> str:
    """The hint for a misspelt ``value``: ``" (did you mean 'closest'?)"`` (with its leading space), or ``""``
    when no choice is close enough.

    Args:
        value: what the user wrote.
        choices: the valid names.
        cutoff: the least :func:`difflib.get_close_matches` similarity that counts as close (0.6, its default).
        shown: what the hint names for the closest choice (default: the choice itself), e.g. its dotted key;
            the hint writes it with ``repr``.
    """
    import difflib  # here, not at the top: the command line imports this module at start-up

    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=cutoff)
    if not close:
        return ""
    suggestion = shown(close[0]) if shown is not None else close[0]
    return f" (did you mean {suggestion!r}?)"


def one_line(text: str) -> str:
    """``text``'s non-blank lines, each stripped, joined by single spaces (a parser's or a config's multi-line
    message as one line of an error)."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def error_line(error: BaseException) -> str:
    """The first line of an exception's message, or its type's name when the message is blank (MLflow, SQLAlchemy
    and Optuna messages run over many lines, the first says what went wrong)."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def read_toml(path: Path, what: str, error: type[Exception]) -> dict[str, Any]:
    """Read and parse the TOML file ``path``; every failure raises ``error`` with one line naming the file.

    Args:
        path: the file.
        what: what the file is, for an unreadable file: ``<path>: cannot read the <what>: <reason>``.
        error: the exception type raised (``ConfigError``, ``AdvisorError``, ...), called with the message.

    Returns:
        The parsed table.

    Raises:
        error: ``<path>: cannot read the <what>: <reason>``, ``<path>: not UTF-8 text: <reason> at byte <n>`` or
            ``<path>: malformed TOML: <the parser's message on one line>``.
    """
    import tomllib

    file = str(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as e:
        raise error(f"{file}: cannot read the {what}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise error(f"{file}: not UTF-8 text: {e.reason} at byte {e.start}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise error(f"{file}: malformed TOML: {one_line(str(e))}") from None

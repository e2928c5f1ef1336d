"""Consoles the CLI writes to: results on stdout, progress and logs on stderr.

Only the CLI owns consoles (library code logs and reports progress through callbacks). Tests inject their own,
recording consoles through click's context object::

    runner.invoke(cli, ["catalog"], obj=Consoles(out=Console(file=io.StringIO(), width=200), err=...))
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console


def _stdout_console() -> Console:
    # file=None: rich looks up sys.stdout at each write, so click's CliRunner redirection is honoured.
    return Console(highlight=False)


def _stderr_console() -> Console:
    return Console(stderr=True, highlight=False)


@dataclass
class Consoles:
    """The pair of consoles one CLI invocation writes to.

    Attributes:
        out: results (tables, summaries) and, with ``--json``, the one JSON document.
        err: progress bars, logs and warnings.
    """

    out: Console = field(default_factory=_stdout_console)
    err: Console = field(default_factory=_stderr_console)

    def emit_json(self, document: Any) -> None:
        """Write ``document`` as one JSON document on the stdout console's file, unstyled and unwrapped.

        Non-finite floats (not valid JSON) are written as ``null``.
        """
        stream = self.out.file
        stream.write(json.dumps(_finite(document), indent=2, allow_nan=False) + "\n")
        stream.flush()


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None`` (recursively in dicts, lists, tuples)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value

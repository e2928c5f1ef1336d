"""Faults around a finished bank: a corrupt cached bank is detected by its checksums, reported in one line and
rebuilt to the same bytes; a truncated one is rebuilt without being asked."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from advisor.cli import cli


def _simulate(workspace: Path, *extra: str) -> tuple[dict, str]:
    result = CliRunner().invoke(cli, ["simulate", "--preset", "tiny", "--workspace", str(workspace), "--json",
                                      *extra], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout), result.stderr


def test_corrupt_cached_bank_is_reported_and_rebuilt(tmp_path: Path) -> None:
    first, _ = _simulate(tmp_path)
    loss = Path(first["bank"]) / "arrays" / "loss.npy"
    pristine = loss.read_bytes()
    blob = bytearray(pristine)
    blob[-3] ^= 0xFF  # same size: only the checksum can tell
    loss.write_bytes(bytes(blob))

    unchecked, _ = _simulate(tmp_path)
    assert unchecked["cached"] is True  # without --verify the cheap size check passes

    rebuilt, stderr = _simulate(tmp_path, "--verify")
    warnings = [line for line in stderr.splitlines() if line.startswith("Warning: ")]
    assert len(warnings) == 1, stderr
    assert str(loss) in warnings[0] and "corrupt" in warnings[0] and warnings[0].endswith("rebuilding it")
    assert rebuilt["cached"] is False
    assert loss.read_bytes() == pristine

    again, stderr = _simulate(tmp_path, "--verify")
    assert again["cached"] is True and "Warning" not in stderr


def test_truncated_bank_is_rebuilt(tmp_path: Path) -> None:
    first, _ = _simulate(tmp_path)
    acts = Path(first["bank"]) / "arrays" / "activations.npy"
    pristine = acts.read_bytes()
    acts.write_bytes(pristine[: len(pristine) // 2])
    rebuilt, _ = _simulate(tmp_path)
    assert rebuilt["cached"] is False
    assert acts.read_bytes() == pristine

"""Assertions shared by the CLI tests."""

from __future__ import annotations

from click.testing import Result


def assert_one_error_line(result: Result, *parts: str) -> str:
    """Exit code 2, nothing on stdout, exactly one ``Error:`` line on stderr containing every part."""
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert "Traceback" not in result.stderr and "Usage:" not in result.stderr
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]

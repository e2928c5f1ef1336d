"""The shared text helpers (simulator.text) and the writable-directory probe (advisor.application.workspace): exact
strings,
since every one-line error in both packages is built from them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from advisor.application.workspace import nearest_existing, probe_writable, writable_dir_problem
from advisor.errors import AdvisorError
from simulator.errors import ConfigError
from simulator.text import did_you_mean, error_line, one_line, read_toml


# ------------------------------------------------------------------------------------------- did_you_mean
def test_did_you_mean_names_the_closest_choice_with_a_leading_space() -> None:
    assert did_you_mean("quik", ["quick", "tiny", "standard"]) == " (did you mean 'quick'?)"


def test_did_you_mean_is_empty_without_a_close_choice() -> None:
    assert did_you_mean("nope", ["quick", "tiny", "standard"]) == ""
    assert did_you_mean("quick", []) == ""


def test_did_you_mean_takes_any_iterable_of_names() -> None:
    """A mapping counts by its keys (as ``list(mapping)`` did at every call site), a generator works too."""
    assert did_you_mean("max_unit", {"max_units": 1, "layers": 2}) == " (did you mean 'max_units'?)"
    assert did_you_mean("max_unit", (k for k in ("max_units", "layers"))) == " (did you mean 'max_units'?)"


def test_did_you_mean_cutoff_and_shown() -> None:
    # ratio("n_steps", "n_step") is about 0.92; "steps" vs "n_steps" about 0.83: above the default, below 0.9
    assert did_you_mean("steps", ["n_steps"]) == " (did you mean 'n_steps'?)"
    assert did_you_mean("steps", ["n_steps"], cutoff=0.9) == ""
    paths = {"n_steps": "training.n_steps"}
    assert did_you_mean("n_step", paths, cutoff=0.8, shown=paths.__getitem__) == " (did you mean 'training.n_steps'?)"
    assert did_you_mean("aera", ["animal", "area"], shown=lambda k: f"gains.{k}") == " (did you mean 'gains.area'?)"


# ------------------------------------------------------------------------------------------------ one_line
def test_one_line_joins_stripped_non_blank_lines() -> None:
    text = "first line\n\n    indented second\t\n   \nthird  \n"
    assert one_line(text) == "first line indented second third"


def test_one_line_keeps_a_single_line_and_inner_spaces() -> None:
    assert one_line("  a  b  ") == "a  b"
    assert one_line("") == ""
    assert one_line("\r\n\n") == ""


# ---------------------------------------------------------------------------------------------- error_line
def test_error_line_is_the_first_line_or_the_type_name() -> None:
    assert error_line(RuntimeError("  (sqlite3.OperationalError) unable to open\n[SQL: PRAGMA]\n")) == (
        "(sqlite3.OperationalError) unable to open"
    )
    assert error_line(ValueError("")) == "ValueError"
    assert error_line(KeyError()) == "KeyError"


# ----------------------------------------------------------------------------------------------- read_toml
def test_read_toml_parses_a_good_file(tmp_path: Path) -> None:
    path = tmp_path / "good.toml"
    path.write_text('name = "quick"\n[population]\nrules = ["sgdm", "fa"]\n', encoding="utf-8")
    assert read_toml(path, "preset", ConfigError) == {"name": "quick", "population": {"rules": ["sgdm", "fa"]}}


def test_read_toml_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.toml"
    with pytest.raises(ConfigError) as e:
        read_toml(path, "preset", ConfigError)
    assert str(e.value) == f"{path}: cannot read the preset: No such file or directory"
    assert e.value.__cause__ is None and e.value.__suppress_context__


def test_read_toml_names_what_the_file_is_and_raises_the_given_type(tmp_path: Path) -> None:
    with pytest.raises(AdvisorError) as e:
        read_toml(tmp_path, "modality", AdvisorError)  # a directory
    assert str(e.value) == f"{tmp_path}: cannot read the modality: Is a directory"


def test_read_toml_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'name = "\xe9"\n')
    with pytest.raises(ConfigError) as e:
        read_toml(path, "preset", ConfigError)
    assert str(e.value) == f"{path}: not UTF-8 text: invalid continuation byte at byte 8"


@pytest.mark.parametrize(("text", "message"), [
    ("a = [1, 2\n", "Unclosed array (at end of document)"),
    ("a = 1\na = 2\n", "Cannot overwrite a value (at line 2, column 6)"),
    ("x = \n", "Invalid value (at line 1, column 5)"),
])
def test_read_toml_malformed_toml_is_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "broken.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(AdvisorError) as e:
        read_toml(path, "modality", AdvisorError)
    assert str(e.value) == f"{path}: malformed TOML: {message}"
    assert "\n" not in str(e.value)


# ------------------------------------------------------------------------------------ writable-directory probe
def test_nearest_existing(tmp_path: Path) -> None:
    assert nearest_existing(tmp_path) == tmp_path
    assert nearest_existing(tmp_path / "a" / "b" / "c") == tmp_path


def test_a_writable_directory_has_no_problem_and_keeps_no_probe(tmp_path: Path) -> None:
    assert probe_writable(tmp_path) is None
    assert writable_dir_problem(tmp_path / "not" / "yet") is None
    assert list(tmp_path.iterdir()) == []


def test_a_file_in_the_way_is_named(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    assert writable_dir_problem(tmp_path / "file" / "db") == f"{tmp_path / 'file'} is a file, not a directory"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_directory_gives_the_reason(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert probe_writable(locked) == "Permission denied"
        assert writable_dir_problem(locked / "mlflow") == f"{locked}: Permission denied"
    finally:
        locked.chmod(0o755)

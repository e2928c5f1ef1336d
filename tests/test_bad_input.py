"""Bad input across every command, table-driven: exit code 2, one line on stderr naming the value and what is
allowed, no traceback, and nothing written or changed (the workspace and the bank are snapshotted around it)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import assert_one_error_line
from click.testing import CliRunner

from advisor.cli import cli

BANK = "{bank}"
"""Placeholder for the path of a small, valid bank (the `plan_bank` fixture)."""
TINY = "{tiny}"
"""Placeholder for the path of the `tiny` preset's bank (2 networks per rule: too few to set any aside)."""
SETASIDE = "--setaside must be a share in [0.05, 0.5] of the networks; got "

# (id, argv, substrings the one error line must contain)
CASES: list[tuple[str, list[str], list[str]]] = [
    # simulate
    ("simulate unknown preset", ["simulate", "--preset", "nope"], ["unknown preset 'nope'", "quick"]),
    ("simulate misspelt preset", ["simulate", "--preset", "quik"], ["did you mean 'quick'?"]),
    ("simulate negative seed", ["simulate", "--seed", "-1"], ["--seed", "-1"]),
    ("simulate unknown device", ["simulate", "--device", "tpu"], ["--device", "tpu", "cpu", "cuda"]),
    ("simulate malformed toml", ["simulate", "--preset", "{tmp}/broken.toml"], ["broken.toml"]),
    ("simulate misspelt preset key", ["simulate", "--preset", "{tmp}/misspelt.toml"], ["rulez", "rules"]),
    ("simulate wrong value type", ["simulate", "--preset", "{tmp}/wrongtype.toml"], ["n_networks_per_rule"]),
    ("simulate missing preset file", ["simulate", "--preset", "{tmp}/absent.toml"], ["absent.toml"]),
    ("simulate dry run of an unknown preset", ["simulate", "--preset", "nope", "--dry-run"], ["nope"]),
    # evaluate
    ("evaluate unknown observable", ["evaluate", "--bank", BANK, "--observable", "spikes"], ["spikes"]),
    ("evaluate zero units", ["evaluate", "--bank", BANK, "--units", "0"], ["--units", "0"]),
    ("evaluate units above the bank", ["evaluate", "--bank", BANK, "--units", "100000"], ["n_units", "100000"]),
    ("evaluate zero sessions", ["evaluate", "--bank", BANK, "--sessions", "0"], ["--sessions", "0"]),
    ("evaluate negative noise", ["evaluate", "--bank", BANK, "--noise", "-1"], ["noise", "-1"]),
    ("evaluate unknown noise model", ["evaluate", "--bank", BANK, "--noise-model", "laplace"], ["laplace"]),
    ("evaluate unknown layer", ["evaluate", "--bank", BANK, "--layers", "early,top"], ["layers", "top"]),
    ("evaluate reversed window", ["evaluate", "--bank", BANK, "--window", "0.9-0.1"],
     ["window must be start-end", "0.9-0.1"]),
    ("evaluate unknown classifier", ["evaluate", "--bank", BANK, "--classifier", "knn"], ["knn"]),
    ("evaluate unknown heldout", ["evaluate", "--bank", BANK, "--heldout", "species"], ["species"]),
    ("evaluate unknown rule", ["evaluate", "--bank", BANK, "--rules", "sgdm,zz"],
     ["--rules: unknown rule 'zz'; allowed: adam, dfa,"]),
    ("evaluate rule not in the bank", ["evaluate", "--bank", BANK, "--rules", "sgdm,fa"], ["fa", "not in the bank"]),
    # checked before any bank is built: no --bank, an empty workspace, the default preset is not built
    ("evaluate misspelt rule without a bank", ["evaluate", "--rules", "sgdm,telepathy"],
     ["--rules: unknown rule 'telepathy'"]),
    ("evaluate missing bank", ["evaluate", "--bank", "{tmp}/nobank"], ["nobank"]),
    ("evaluate augment 0", ["evaluate", "--bank", BANK, "--augment", "0"], ["--augment must be a positive integer",
                                                                           "got 0"]),
    ("evaluate unknown statistics", ["evaluate", "--bank", BANK, "--statistics", "pca"], ["pca"]),
    ("evaluate population statistics of weights", ["evaluate", "--bank", BANK, "--observable", "weights",
                                                   "--statistics", "population"], ["population", "weights"]),
    ("evaluate foreign directory", ["evaluate", "--bank", "{tmp}/foreign"], ["foreign"]),
    # plan
    ("plan target above 1", ["plan", "--bank", BANK, "--target-accuracy", "1.5"], ["--target-accuracy", "1.5"]),
    ("plan target 0", ["plan", "--bank", BANK, "--target-accuracy", "0"], ["--target-accuracy", "0"]),
    ("plan max units above the bank", ["plan", "--bank", BANK, "--max-units", "100000"],
     ["--max-units must be at most", "100000"]),
    ("plan max sessions 1", ["plan", "--bank", BANK, "--max-sessions", "1"], ["--max-sessions", "got 1"]),
    ("plan zero trials", ["plan", "--bank", BANK, "--trials", "0"], ["--trials", "0"]),
    ("plan unknown modality", ["plan", "--bank", BANK, "--modality", "nope"], ["nope", "ephys"]),
    ("plan malformed modality file", ["plan", "--bank", BANK, "--modality", "{tmp}/broken.toml"],
     ["broken.toml"]),
    ("plan observable the modality cannot measure",
     ["plan", "--bank", BANK, "--modality", "ephys", "--observable", "weights"],
     ["modality 'ephys' cannot measure weights; it measures activations"]),
    ("plan unknown rule", ["plan", "--bank", BANK, "--rules", "sgdm,zz"], ["--rules: unknown rule 'zz'"]),
    ("plan rule not in the bank", ["plan", "--bank", BANK, "--rules", "sgdm,fa"], ["fa", "not in the bank"]),
    ("plan misspelt rule without a bank", ["plan", "--rules", "sgdm,fa2"],
     ["--rules: unknown rule 'fa2' (did you mean 'fa'?); allowed:"]),
    ("plan unknown modality without a bank", ["plan", "--modality", "ephyz"], ["ephyz"]),
    ("plan target out of range without a bank", ["plan", "--target-accuracy", "1.5"], ["--target-accuracy", "1.5"]),
    ("plan bad storage", ["plan", "--bank", BANK, "--storage", "nonsense"], ["--storage", "nonsense"]),
    ("plan unsupported tracking uri", ["plan", "--bank", BANK, "--tracking-uri", "ftp://example"],
     ["ftp://example"]),
    ("plan both bank and preset", ["plan", "--bank", BANK, "--preset", "quick"], ["--bank", "--preset"]),
    ("plan setaside 0", ["plan", "--bank", BANK, "--setaside", "0"], [SETASIDE + "0"]),
    ("plan setaside 0.9", ["plan", "--bank", BANK, "--setaside", "0.9"], [SETASIDE + "0.9"]),
    ("plan setaside nan", ["plan", "--bank", BANK, "--setaside", "nan"], [SETASIDE + "nan"]),
    ("plan setaside not a number", ["plan", "--bank", BANK, "--setaside", "a quarter"], ["--setaside", "a quarter"]),
    ("plan setaside leaving one network of a rule", ["plan", "--bank", TINY, "--setaside", "0.25"],
     ["--setaside 0.25 leaves 1 search and 1 set-aside networks of rule", "each side needs at least 2"]),
    ("plan robust on one architecture", ["plan", "--bank", TINY, "--robust", "--setaside", "0.5"],
     ["--robust needs a bank with at least 2 architectures", "mlp3_relu"]),
    ("plan robust with a held-out plan", ["plan", "--bank", BANK, "--robust", "--heldout", "architecture"],
     ["--robust", "--heldout none"]),
    ("plan unknown statistics", ["plan", "--bank", BANK, "--statistics", "pca"], ["pca"]),
    # compare
    ("compare robust on one architecture", ["compare", "--bank", TINY, "--robust", "--setaside", "0.5"],
     ["--robust needs a bank with at least 2 architectures"]),
    ("compare misspelt rule without a bank", ["compare", "--rules", "telepathy"], ["unknown rule 'telepathy'"]),
    ("compare unknown modality without a bank", ["compare", "--modalities", "ephys,nope"], ["nope"]),
    ("compare empty modality list", ["compare", "--bank", BANK, "--modalities", ","], ["--modalities"]),
    ("compare unknown modality", ["compare", "--bank", BANK, "--modalities", "ephys,nope"], ["nope"]),
    ("compare setaside 0.9", ["compare", "--bank", BANK, "--modalities", "ephys", "--setaside", "0.9"],
     [SETASIDE + "0.9"]),
    ("compare setaside 0", ["compare", "--bank", BANK, "--setaside", "0"], [SETASIDE + "0"]),
    ("compare setaside leaving one network of a rule", ["compare", "--bank", TINY, "--modalities", "ephys"],
     ["--setaside 0.25 leaves 1 search and 1 set-aside networks of rule"]),
    # worker, runs, report, catalog
    ("worker unknown study", ["worker", "--study", "nostudy"], ["nostudy"]),
    ("runs show unknown id", ["runs", "show", "0123abcd"], ["unknown run id '0123abcd'"]),
    ("report unknown id", ["report", "0123abcd"], ["unknown run id '0123abcd'"]),
    ("report unknown format", ["report", "0123abcd", "--format", "docx"], ["docx"]),
    ("catalog unknown option", ["catalog", "--bogus"], ["--bogus"]),
]


def _files(*roots: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``roots`` with its size and modification time (nanoseconds)."""
    out = {}
    for root in roots:
        for dirpath, _, names in os.walk(root):
            for name in names:
                path = Path(dirpath) / name
                st = path.stat()
                out[str(path)] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("bad-inputs")
    (tmp / "broken.toml").write_text("[population\nrules = [")
    (tmp / "misspelt.toml").write_text('[population]\nrulez = ["sgdm"]\n')
    (tmp / "wrongtype.toml").write_text('[population]\nn_networks_per_rule = "many"\n')
    (tmp / "foreign").mkdir()
    (tmp / "foreign" / "notes.txt").write_text("not a bank")
    return tmp


@pytest.mark.parametrize(("argv", "parts"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(argv: list[str], parts: list[str], plan_bank: Any, tiny_bank: Any, inputs: Path,
                   tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "keep.txt").write_text("the user's own file")
    tiny = Path(tiny_bank.bank.path)
    args = [a.replace(BANK, str(plan_bank.path)).replace(TINY, str(tiny)).replace("{tmp}", str(inputs))
            for a in argv]
    before = _files(workspace, Path(plan_bank.path), tiny, inputs)
    result = CliRunner().invoke(cli, [*args, "--workspace", str(workspace)], catch_exceptions=False)
    assert_one_error_line(result, *parts)
    assert _files(workspace, Path(plan_bank.path), tiny, inputs) == before


def test_the_table_covers_every_command() -> None:
    assert len(CASES) >= 30
    commands = {c[1][0] for c in CASES}
    assert commands >= {"simulate", "evaluate", "plan", "compare", "worker", "runs", "report", "catalog"}

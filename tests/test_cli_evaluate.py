"""`advisor evaluate`: identification of the rule from a recording protocol, JSON and human output, bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from cli_helpers import assert_one_error_line
from click.testing import CliRunner, Result

from advisor.cli import cli
from advisor.cli.app import (
    CLASSIFIER_CHOICES,
    HELDOUT_CHOICES,
    NOISE_MODEL_CHOICES,
    OBSERVABLE_CHOICES,
    parse_list,
    parse_window,
)
from advisor.errors import AdvisorError
from simulator.constants import GROUPS as LAYER_GROUPS

if TYPE_CHECKING:
    from simulator.pipeline import SimulationResult

FAST = ["--units", "12", "--sessions", "3", "--splits", "3"]
JSON_KEYS = {
    "accuracy", "ci", "chance", "control_accuracy", "control_ci", "balanced_accuracy", "confusion_matrix",
    "labels", "n_networks", "protocol", "classifier", "heldout", "target", "top_features", "nonfinite", "controls",
    "strongest_control", "ci_method",
}
PROTOCOL_KEYS = {
    "observable", "n_units", "layers", "n_sessions", "window", "noise_model", "noise", "chronic", "n_probes", "seed",
    "gain_sd", "baseline", "statistics",
}


@pytest.fixture(scope="session")
def eval_bank(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 networks (6 sgdm, 6 fa) on one architecture and task: enough for stratified 4-fold splits."""
    from simulator.config import SimulationConfig
    from simulator.pipeline import simulate

    config = SimulationConfig(
        name="eval", rules=("sgdm", "fa"), architectures=("mlp3_relu",), tasks=("digits",),
        n_networks_per_rule=6, n_steps=20, n_checkpoints=5, batch_sizes=(16,), n_probes=4,
        units_per_group=32, synapses_per_group=64,
    )
    return Path(simulate(config, tmp_path_factory.mktemp("evalbank")).bank.path)


def _invoke(args: list[str]) -> Result:
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def _json(bank: Path, *extra: str) -> dict[str, Any]:
    result = _invoke(["evaluate", "--bank", str(bank), *FAST, *extra, "--json"])
    assert result.exit_code == 0, result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


# ----------------------------------------------------------------------------------------------- helpers
def test_choices_match_the_libraries() -> None:
    from advisor.science.classifiers import CLASSIFIERS
    from advisor.science.evaluation import HELDOUT
    from advisor.science.protocol import GROUPS, NOISE_MODELS, OBSERVABLES

    assert set(CLASSIFIER_CHOICES) == set(CLASSIFIERS.keys())
    assert set(HELDOUT_CHOICES) == set(HELDOUT)
    assert tuple(OBSERVABLE_CHOICES) == tuple(OBSERVABLES)
    assert set(NOISE_MODEL_CHOICES) == set(NOISE_MODELS.keys())
    assert tuple(LAYER_GROUPS) == tuple(GROUPS)


def test_parse_window_and_list() -> None:
    assert parse_window("0-0.3") == (0.0, 0.3)
    assert parse_window(" 0.25 - 1 ") == (0.25, 1.0)
    for bad in ("abc", "0.3", "0-0.3-1", "-0.1-0.5", "a-b", ""):
        with pytest.raises(AdvisorError, match="START-END"):
            parse_window(bad)
    assert parse_list(" deep, early,,deep ") == ("deep", "early")


# ----------------------------------------------------------------------------------------------- results
def test_json_document(eval_bank: Path) -> None:
    doc = _json(eval_bank, "--noise", "0.5", "--window", "0-0.75", "--layers", "deep,middle", "--probes", "3",
                "--seed", "1", "--sessions", "2")
    assert JSON_KEYS <= set(doc)
    assert 0.0 <= doc["accuracy"] <= 1.0 and 0.0 <= doc["balanced_accuracy"] <= 1.0
    lo, hi = doc["ci"]
    assert 0.0 <= lo <= hi <= 1.0
    c_lo, c_hi = doc["control_ci"]
    assert 0.0 <= c_lo <= c_hi <= 1.0 and 0.0 <= doc["control_accuracy"] <= 1.0
    assert doc["chance"] == pytest.approx(0.5)
    assert doc["labels"] == ["fa", "sgdm"]
    assert doc["n_networks"] == 12 and doc["target"] == "rule"
    assert doc["classifier"] == "ridge" and doc["heldout"] == "none"  # plan's default
    cm = doc["confusion_matrix"]
    assert len(cm) == 2 and all(len(row) == 2 for row in cm)
    assert sum(map(sum, cm)) == 12  # --splits 3 is one repeat of a 4-fold split: every network tested once
    assert [sum(row) for row in cm] == [6, 6]
    assert doc["ci_method"] == "corrected_t"
    assert set(doc["controls"]) == {"behaviour", "hyperparameters"}
    for entry in doc["controls"].values():
        assert entry["classifier"] in ("logreg", "rf") and set(entry["candidates"]) == {"logreg", "rf"}
        assert 0.0 <= entry["ci"][0] <= entry["accuracy"] <= entry["ci"][1] <= 1.0
    assert doc["controls"]["behaviour"]["accuracy"] == doc["control_accuracy"]
    assert doc["strongest_control"] in ("behaviour", "hyperparameters")
    top = doc["controls"][doc["strongest_control"]]
    assert doc["beyond_control"] == (lo > top["ci"][1])
    assert set(doc["protocol"]) == PROTOCOL_KEYS
    assert doc["protocol"] == {
        "observable": "activations", "n_units": 12, "layers": ["deep", "middle"], "n_sessions": 2,
        "window": [0.0, 0.75], "noise_model": "gaussian", "noise": 0.5, "chronic": True, "n_probes": 3, "seed": 1,
        "gain_sd": [0.5, 0.3, 0.5], "baseline": 0.0, "statistics": "marginal",
    }
    assert 1 <= len(doc["top_features"]) <= 8
    assert all(set(f) == {"name", "importance"} for f in doc["top_features"])
    assert all(f["name"].split(".")[0] in ("middle", "deep") for f in doc["top_features"])
    importances = [f["importance"] for f in doc["top_features"]]
    assert importances == sorted(importances, reverse=True)
    assert isinstance(doc["nonfinite"], int) and doc["nonfinite"] >= 0


def test_gain_spreads_reach_the_protocol_and_zero_turns_them_off(eval_bank: Path) -> None:
    on = _json(eval_bank, "--gain-sd", "0.8,0.1,0.2", "--baseline", "0.5")
    assert on["protocol"]["gain_sd"] == [0.8, 0.1, 0.2] and on["protocol"]["baseline"] == 0.5
    off = _json(eval_bank, "--gain-sd", "0,0,0")
    assert off["protocol"]["gain_sd"] == [0.0, 0.0, 0.0]


@pytest.mark.parametrize(("value", "expected"), [
    ("0.5,0.3", "--gain-sd must be ANIMAL,AREA,UNIT"),
    ("a,b,c", "--gain-sd must be ANIMAL,AREA,UNIT"),
    ("0.5,-1,0.5", "-1"),
    ("0.5,0.3,9", "9"),
])
def test_bad_gain_spreads_are_one_line_errors(eval_bank: Path, value: str, expected: str) -> None:
    result = _invoke(["evaluate", "--bank", str(eval_bank), *FAST, "--gain-sd", value])
    assert result.exit_code == 2
    assert_one_error_line(result, expected)


def test_family_target(eval_bank: Path) -> None:
    doc = _json(eval_bank, "--family", "--observable", "weights", "--acute", "--classifier", "svm")
    assert doc["labels"] == ["backprop", "feedback_alignment"]
    assert doc["target"] == "family"
    assert doc["protocol"]["observable"] == "weights" and doc["protocol"]["chronic"] is False


def test_rules_restriction_and_other_classifier(eval_bank: Path) -> None:
    doc = _json(eval_bank, "--rules", "fa, sgdm", "--classifier", "svm", "--noise-model", "none")
    assert doc["labels"] == ["fa", "sgdm"] and doc["classifier"] == "svm"
    assert doc["protocol"]["noise_model"] == "none"


def test_single_rule_is_an_error(eval_bank: Path) -> None:
    result = _invoke(["evaluate", "--bank", str(eval_bank), *FAST, "--rules", "sgdm"])
    assert_one_error_line(result, "at least 2")


def test_human_output(eval_bank: Path) -> None:
    result = _invoke(["evaluate", "--bank", str(eval_bank), *FAST, "--classifier", "svm"])
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    for part in ("accuracy", "chance", "control", "balanced accuracy", "Confusion matrix", "fa", "sgdm",
                 "12 units of activations", "Top", "checkpoint", "Verdict"):
        assert part in out, part
    assert ("identified beyond the strongest control" in out) != (
        "not distinguishable from the strongest control" in out
    )
    assert "behaviour (whole learning curve)" in out and "hyperparameters alone" in out
    assert not out.lstrip().startswith("{")


def test_tiny_bank_is_too_small_for_stratified_splits(tiny_bank: SimulationResult) -> None:
    result = _invoke(["evaluate", "--bank", str(tiny_bank.bank.path), *FAST])
    assert_one_error_line(result, "4 networks are too few")


def test_preset_bank_is_built_in_the_workspace(tiny_bank: SimulationResult, tiny_workspace: Path) -> None:
    """--preset reuses the workspace's cached bank (the tiny one: 4 networks, so the splits then fail cleanly)."""
    result = _invoke(["evaluate", "--preset", "tiny", "--workspace", str(tiny_workspace), *FAST])
    assert_one_error_line(result, "too few")


# ----------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("args", "parts"),
    [
        (["--observable", "spikes"], ["spikes"]),
        (["--units", "0"], ["--units"]),
        (["--units", "100000"], ["n_units", "100000"]),
        (["--window", "0.5-0.2"], ["window", "0.5-0.2"]),
        (["--window", "abc"], ["--window", "'abc'", "START-END"]),
        (["--layers", "cortex"], ["layers", "cortex"]),
        (["--noise", "-1"], ["noise", "-1"]),
        (["--classifier", "xgb"], ["xgb"]),
        (["--heldout", "seed"], ["seed"]),
        (["--rules", "sgdm,hebbian"], ["hebbian", "fa, sgdm"]),
        (["--heldout", "architecture"], ["architecture"]),
        (["--sessions", "50"], ["n_sessions"]),
        (["--probes", "99"], ["n_probes"]),
        (["--noise-model", "poisson", "--noise", "5", "--observable", "weights"], ["poisson"]),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_bad_input_gives_one_error_line(eval_bank: Path, args: list[str], parts: list[str]) -> None:
    result = _invoke(["evaluate", "--bank", str(eval_bank), *FAST, *args])
    assert_one_error_line(result, *parts)


def test_nonexistent_bank(tmp_path: Path) -> None:
    result = _invoke(["evaluate", "--bank", str(tmp_path / "nonexistent"), *FAST])
    assert_one_error_line(result, "does not exist")


def test_bank_and_preset_together(eval_bank: Path, tmp_path: Path) -> None:
    result = _invoke(["evaluate", "--bank", str(eval_bank), "--preset", "quick", "--workspace", str(tmp_path)])
    assert_one_error_line(result, "--bank", "--preset")
    assert not (tmp_path / "banks").exists()


def test_bad_protocol_fails_before_any_simulation(tmp_path: Path) -> None:
    result = _invoke(["evaluate", "--preset", "quick", "--workspace", str(tmp_path), "--window", "0.9-0.1"])
    assert_one_error_line(result, "window")
    assert not (tmp_path / "banks").exists()


def test_help_lists_the_options() -> None:
    result = _invoke(["evaluate", "--help"])
    assert result.exit_code == 0
    for option in ("--bank", "--preset", "--observable", "--window", "--family", "--workspace DIR", "--json"):
        assert option in result.stdout



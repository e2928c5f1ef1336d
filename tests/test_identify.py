"""`advisor export` and `advisor identify` end to end on the plan bank: files a lab would have (NWB two-photon and
electrophysiology, .npz), the identification accuracy against the plan's set-aside interval, calibration, the
misspecification check, MLflow, reports and bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cli_helpers import assert_one_error_line
from click.testing import CliRunner, Result

from advisor.cli import cli

PLAN = ["--trials", "8", "--splits", "5", "--setaside", "0.5", "--no-curves", "--statistics", "marginal",
        "--target-accuracy", "0.6"]
"""A quick plan on the 96-network plan bank (as test_cli_plan's): half the networks (48) set aside."""
N_EXPORT = 40


@pytest.fixture(autouse=True)
def _no_tracking_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def _invoke(args: list[str]) -> Result:
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def _json(args: list[str]) -> dict[str, Any]:
    result = _invoke([*args, "--json"])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def plans(plan_bank: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, Any]]]:
    """One workspace with two plans: the generic modality (Gaussian noise: two-photon NWB) and ephys (Poisson spike
    counts: electrophysiology NWB)."""
    workspace = tmp_path_factory.mktemp("identify-ws")
    docs = {}
    for modality in ("generic", "ephys"):
        docs[modality] = _json(["plan", "--bank", str(plan_bank.path), "--workspace", str(workspace), *PLAN,
                                "--modality", modality, "--observable", "activations"])
    return workspace, docs


@pytest.fixture(scope="module")
def exported(plans: tuple[Path, dict[str, dict[str, Any]]], tmp_path_factory: pytest.TempPathFactory
             ) -> dict[tuple[str, str], dict[str, Any]]:
    """40 set-aside networks of each plan, exported as NWB and as .npz."""
    workspace, docs = plans
    out = {}
    for modality, doc in docs.items():
        for fmt in ("nwb", "npz"):
            folder = tmp_path_factory.mktemp(f"export-{modality}-{fmt}")
            out[(modality, fmt)] = _json(["export", "--run", doc["run_id"], "--networks", str(N_EXPORT), "--out",
                                          str(folder), "--format", fmt, "--workspace", str(workspace)])
    return out


def test_export_writes_one_file_per_animal_balanced_over_rules(exported: dict, plans: tuple) -> None:
    _, docs = plans
    for (modality, fmt), doc in exported.items():
        recordings = doc["recordings"]
        assert len(recordings) == N_EXPORT
        assert doc["run_id"] == docs[modality]["run_id"]
        rules = [r["rule"] for r in recordings]
        assert sorted(set(rules)) == ["hebbian", "sgdm"] and abs(rules.count("sgdm") - rules.count("hebbian")) <= 1
        for entry in recordings:
            path = Path(entry["path"])
            assert path.is_file() and path.suffix == f".{fmt}" and path.stem == entry["network"]
        assert not list(Path(recordings[0]["path"]).parent.glob(".*"))  # no temporary files


def test_exported_nwb_files_are_valid_and_of_the_modalitys_kind(exported: dict) -> None:
    import pynwb

    for modality in ("generic", "ephys"):
        path = exported[(modality, "nwb")]["recordings"][0]["path"]
        assert pynwb.validate(path=path) == []
        with pynwb.NWBHDF5IO(path, "r") as io:
            nwb = io.read()
            assert len(nwb.epochs) == len(nwb.epochs["learning_progress"].data[:])
            if modality == "ephys":
                assert nwb.units is not None and "ophys" not in nwb.processing
            else:
                assert nwb.units is None and "DfOverF" in nwb.processing["ophys"].data_interfaces


def _identify_all(plan_bank: Any, workspace: Path, plan: dict[str, Any], files: list[dict[str, Any]]
                  ) -> list[dict[str, Any]]:
    """Identify each file with the library (the CLI's path without MLflow and reports, for speed)."""
    from advisor.application.identify import identify_document, load_identifier, plan_settings, read_recording

    settings = plan_settings(plan, plan["run_id"])
    identifier, _ = load_identifier(plan_bank, settings, workspace / "cache" / "identify")
    out = []
    for entry in files:
        rec, fmt = read_recording((Path(entry["path"]),), area_map=None, area_column="area",
                                  stimulus_column="stimulus", intervals="trials", window=None, session_progress=None)
        out.append(identify_document(identifier, settings, rec, recording_format=fmt, command="test"))
    return out


@pytest.mark.parametrize("modality", ["generic", "ephys"])
def test_identified_accuracy_lies_in_the_plans_setaside_interval(plan_bank: Any, plans: tuple, exported: dict,
                                                                  modality: str) -> None:
    workspace, docs = plans
    plan = docs[modality]
    results = {}
    for fmt in ("nwb", "npz"):
        files = exported[(modality, fmt)]["recordings"]
        results[fmt] = _identify_all(plan_bank, workspace, plan, files)
        truth = [f["rule"] for f in files]
        accuracy = np.mean([d["top_rule"] == t for d, t in zip(results[fmt], truth, strict=True)])
        lo, hi = plan["setaside"]["ci"]
        assert lo <= accuracy <= hi, (fmt, accuracy, plan["setaside"])
        for d in results[fmt]:
            assert sum(d["posterior"].values()) == pytest.approx(1.0)
            assert d["p_top_ci"][0] <= d["p_top_ci"][1]
    # the same recording through NWB and through .npz gives the same posterior
    for a, b in zip(results["nwb"], results["npz"], strict=True):
        assert a["posterior"] == pytest.approx(b["posterior"], abs=1e-5)
    # exported set-aside networks are like the simulations: few false alarms
    assert np.mean([not d["in_distribution"] for d in results["npz"]]) <= 0.15


def test_calibration_and_misspecification_are_measured_on_setaside_networks(plan_bank: Any, plans: tuple,
                                                                            exported: dict) -> None:
    workspace, docs = plans
    doc = _identify_all(plan_bank, workspace, docs["generic"], exported[("generic", "npz")]["recordings"][:1])[0]
    cal, mis = doc["calibration"], doc["misspecification"]
    assert cal["n_networks"] == docs["generic"]["setaside"]["n_networks"] == 48
    assert doc["identifier"]["n_search"] == 48
    assert 0 <= cal["ece"] <= 0.5 and cal["temperature"] > 0
    assert sum(b["count"] for b in cal["bins"]) == 48
    assert mis["n_null"] == 48 and len(mis["null_scores"]) == 48
    assert 0.0 <= mis["false_alarm_rate"] <= 0.1
    assert 1 / 49 <= doc["misspecification_p"] <= 1.0


def test_a_recording_unlike_any_simulated_one_is_flagged_before_the_verdict(plan_bank: Any, plans: tuple,
                                                                          exported: dict) -> None:
    from advisor.application.identify import identify_document, load_identifier, plan_settings
    from advisor.science.recordings import LabRecording, read_npz

    workspace, docs = plans
    settings = plan_settings(docs["generic"], docs["generic"]["run_id"])
    identifier, cached = load_identifier(plan_bank, settings, workspace / "cache" / "identify")
    assert cached  # built by an earlier test: the cache is keyed by bank, protocol and settings
    rec = read_npz(exported[("generic", "npz")]["recordings"][0]["path"])
    # raw fluorescence in the thousands instead of dF/F: every statistic far outside the simulated range
    raw = LabRecording(1000.0 + 200.0 * rec.responses, rec.unit_group, rec.session_progress, "raw fluorescence")
    doc = identify_document(identifier, settings, raw, recording_format="npz", command="test")
    n_null = doc["misspecification"]["n_null"]
    assert not doc["in_distribution"]
    assert doc["misspecification_p"] == pytest.approx(2 / (1 + n_null))  # the smallest p the check can give
    assert doc["verdict"].startswith("This recording is unlike every simulated network (misspecification p = 0.041")
    assert doc["misspecification"]["furthest"][0]["beyond"] == 0.0
    same = identify_document(identifier, settings, rec, recording_format="npz", command="test")
    assert same["in_distribution"] and same["verdict"].startswith("The recording is consistent with")


def test_identify_cli_tracks_reports_and_links_the_plan(plans: tuple, exported: dict) -> None:
    workspace, docs = plans
    path = exported[("ephys", "nwb")]["recordings"][0]["path"]
    plan_id = docs["ephys"]["run_id"]
    doc = _json(["identify", path, "--run", plan_id[:8], "--workspace", str(workspace)])
    assert {"posterior", "top_rule", "p_top", "in_distribution", "misspecification_p", "run_id", "reports"} <= set(doc)
    assert doc["top_rule"] in doc["posterior"] and doc["p_top"] == max(doc["posterior"].values())
    assert doc["plan"]["run_id"] == plan_id
    for fmt, report in doc["reports"].items():
        assert Path(report).is_file() and Path(report).is_relative_to(workspace / "reports" / doc["run_id"]), fmt
    assert Path(doc["reports"]["pdf"]).read_bytes().startswith(b"%PDF")
    markdown = Path(doc["reports"]["md"]).read_text()
    for heading in ("## Verdict", "## Posterior over the simulated rules", "## Is the recording like the simulations?",
                    "## Calibration of the classifier", "## Caveats", "## Methods"):
        assert heading in markdown
    runs = _json(["runs", "list", "--workspace", str(workspace)])
    listed = {r["run_id"]: r for r in runs["runs"]}
    assert listed[doc["run_id"]]["kind"] == "identify"
    shown = _json(["runs", "show", doc["run_id"], "--workspace", str(workspace)])
    assert shown["plan_run"] == plan_id and shown["top_rule"] == doc["top_rule"]
    assert shown["p_top"] == pytest.approx(doc["p_top"])
    human = _invoke(["identify", path, "--run", plan_id, "--workspace", str(workspace)])
    assert human.exit_code == 0, human.stderr
    assert "Posterior over the simulated rules" in human.stdout and "misspecification p" in human.stdout


def _state(workspace: Path) -> tuple[list[str], int]:
    reports = sorted(str(p.relative_to(workspace)) for p in (workspace / "reports").rglob("*"))
    runs = _json(["runs", "list", "--workspace", str(workspace)])["runs"]
    return reports, len(runs)


def test_identify_and_export_bad_input_is_one_line_and_writes_nothing(plans: tuple, exported: dict,
                                                                      tmp_path: Path) -> None:
    from advisor.science.recordings import LabRecording, write_npz

    workspace, docs = plans
    plan_id = docs["generic"]["run_id"]
    good = exported[("generic", "npz")]["recordings"][0]["path"]
    (tmp_path / "text.nwb").write_text("hello")
    (tmp_path / "notes.txt").write_text("hello")
    from advisor.science.recordings import read_npz

    rec = read_npz(good)  # the protocol's sessions, stimuli and units: break one thing at a time
    nan = rec.responses.copy()
    nan[1, 3, 2, 0] = np.nan
    np.savez(tmp_path / "nan.npz", responses=nan, unit_group=rec.unit_group, session_progress=rec.session_progress)
    group = rec.unit_group[0]
    keep = np.flatnonzero(rec.unit_group == group)[:1]
    write_npz(LabRecording(rec.responses[:, keep], rec.unit_group[keep], rec.session_progress, "x"),
              tmp_path / "few.npz")
    identify_id = _json(["identify", good, "--run", plan_id, "--workspace", str(workspace)])["run_id"]
    before = _state(workspace)
    cases = [
        (["identify", str(tmp_path / "text.nwb"), "--run", plan_id], "not a readable NWB file"),
        (["identify", str(tmp_path / "missing.npz"), "--run", plan_id], "no such file"),
        (["identify", str(tmp_path / "notes.txt"), "--run", plan_id], "unknown file type .txt; allowed: .nwb, .npz"),
        (["identify", str(tmp_path / "nan.npz"), "--run", plan_id], "1 non-finite values (first: session 2, "
                                                                    "unit 4, stimulus 3)"),
        (["identify", str(tmp_path / "few.npz"), "--run", plan_id], "1 unit in the"),
        (["identify", good, "--run", identify_id], "an identify run; give the id of a finished plan"),
        (["identify", good, "--run", plan_id, "--bank", str(tmp_path)], "--run takes the bank from the plan"),
        (["identify", good, "--run", plan_id, "--units", "10"], "drop --units"),
        (["identify", good], "give --run RUN_ID (a plan) or a bank"),
        (["identify", good, "--run", plan_id, "--area-map", "V1=cortex"], "--area-map takes AREA=GROUP pairs"),
        (["export", "--run", plan_id, "--networks", "0", "--out", str(tmp_path / "o")], "--networks must be a "
                                                                                        "positive integer"),
        (["export", "--run", plan_id, "--networks", "999", "--out", str(tmp_path / "o")],
         "--networks must be in [1, 48] (the plan's set-aside networks); got 999"),
        (["export", "--run", identify_id, "--out", str(tmp_path / "o")], "an identify run"),
    ]
    for args, message in cases:
        assert_one_error_line(_invoke([*args, "--workspace", str(workspace)]), message)
    assert _state(workspace) == before
    assert not (tmp_path / "o").exists()


def test_plan_with_a_pilot_uses_its_noise_and_gains(plan_bank: Any, plans: tuple, exported: dict) -> None:
    workspace, docs = plans
    pilot = exported[("generic", "npz")]["recordings"][0]["path"]  # a simulated rig: its numbers are known
    doc = _json(["plan", "--bank", str(plan_bank.path), "--workspace", str(workspace), *PLAN, "--modality",
                 "generic", "--observable", "activations", "--pilot", pilot])
    estimate = doc["question"]["pilot"]
    default = docs["generic"]["modality"]
    noise_old, noise_new = estimate["replaced"]["single_trial_noise"]
    assert noise_old == default["single_trial_noise"]
    assert doc["modality"]["single_trial_noise"] == noise_new
    assert noise_new == pytest.approx(default["single_trial_noise"], rel=0.35)  # recovers the rig's noise
    assert doc["modality"]["gain_sd"][2] == estimate["replaced"]["unit_gain_sd"][1]
    assert doc["question"]["study"] != docs["generic"]["question"]["study"]  # not the pilot-free study
    assert "From the pilot recording" in Path(doc["reports"]["md"]).read_text()


def test_a_pilot_without_repeats_is_one_line_before_any_bank(tmp_path: Path) -> None:
    np.savez(tmp_path / "p.npz", responses=np.ones((1, 10, 4)), unit_group=np.array(["early"] * 10),
             session_progress=np.array([0.0]))
    workspace = tmp_path / "ws"
    result = _invoke(["plan", "--preset", "tiny", "--pilot", str(tmp_path / "p.npz"), "--workspace", str(workspace)])
    assert_one_error_line(result, "1 presentation of each stimulus; a pilot needs at least 2")
    assert not (workspace / "banks").exists()

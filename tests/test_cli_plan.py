"""`advisor plan`, `compare`, `runs` and `report` end to end on a small bank: JSON, files, MLflow, bad input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import assert_one_error_line
from click.testing import CliRunner, Result

from advisor.cli import cli

FAST = ["--trials", "8", "--splits", "5", "--setaside", "0.5", "--no-curves", "--statistics", "marginal"]
"""8 trials on two repeats of 4-fold cross-validation (one repeat's corrected t interval, with 3 degrees of
freedom, lets no protocol clear a chance-level control), half of the 96 networks set aside; the paper's
marginal statistics (the plan bank shows 4 probe stimuli, too few for the population statistics' correlations)."""
REC_KEYS = {"observable", "n_units", "n_sessions", "noise", "layers", "cost", "accuracy", "ci"}
PANEL_TITLES = ("Recommendation", "No protocol within the bounds reaches the target beyond the controls",
                "The search's choice falls short of the target on set-aside networks",
                "The search's choice does not clear the controls on set-aside networks")


@pytest.fixture(autouse=True)
def _no_tracking_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def _invoke(args: list[str]) -> Result:
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def _plan(bank: Any, workspace: Path, *extra: str) -> dict[str, Any]:
    result = _invoke(["plan", "--bank", str(bank.path), "--workspace", str(workspace), *FAST,
                      "--target-accuracy", "0.6", *extra, "--json"])
    assert result.exit_code == 0, result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


FEASIBLE = ["--trials", "15", "--target-accuracy", "0.75"]
"""A question this bank answers: 15 trials over every observable, target 0.75 (feasible with seed 0)."""


@pytest.fixture(scope="module")
def planned(plan_bank: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    workspace = tmp_path_factory.mktemp("plan-ws")
    return workspace, _plan(plan_bank, workspace, *FEASIBLE)


def test_plan_json_has_the_documented_keys_and_writes_reports(planned: tuple[Path, dict[str, Any]]) -> None:
    workspace, doc = planned
    assert {"feasible", "verdict", "recommendation", "candidate", "run_id", "reports", "best", "pareto", "trials",
            "controls", "search_controls", "setaside"} <= set(doc)
    assert isinstance(doc["feasible"], bool)
    assert doc["question"]["setaside"] == 0.5
    rec = doc["recommendation"] or doc["best"]
    assert REC_KEYS <= set(rec)
    assert rec["observable"] in doc["question"]["observables"]
    assert rec["ci"][0] <= rec["accuracy"] <= rec["ci"][1]
    assert len(doc["trials"]) == 15
    assert set(doc["reports"]) == {"md", "html", "pdf"}
    for path in doc["reports"].values():
        assert Path(path).is_file() and Path(path).stat().st_size > 0
        assert Path(path).is_relative_to(workspace / "reports" / doc["run_id"])
    assert Path(doc["reports"]["pdf"]).read_bytes().startswith(b"%PDF")
    assert (workspace / "mlflow" / "mlflow.db").is_file()
    assert (workspace / "studies" / "journal.log").is_file()


def test_plan_json_carries_the_controls_and_the_setaside_estimate(planned: tuple[Path, dict[str, Any]]) -> None:
    _, doc = planned
    assert set(doc["controls"]) == {"behaviour", "hyperparameters"}
    for name, entry in doc["controls"].items():
        assert {"accuracy", "ci", "classifier"} <= set(entry), name
        assert entry["classifier"] in ("logreg", "rf")
        assert 0 <= entry["ci"][0] <= entry["accuracy"] <= entry["ci"][1] <= 1
    for name in ("recommendation", "candidate"):
        final = doc[name]["setaside"]
        assert {"accuracy", "ci", "n_networks"} <= set(final), name
        assert final["n_networks"] == 48 and final == doc["setaside"]
        assert final["ci"][0] <= final["accuracy"] <= final["ci"][1]
    assert doc["verdict"] == "recommended"


def test_a_feasible_plan_was_rechecked_and_meets_the_target(planned: tuple[Path, dict[str, Any]]) -> None:
    _, doc = planned
    assert doc["feasible"], "the plan bank is built so that target 0.75 is reachable"
    rec = doc["recommendation"]
    assert rec["ci"][0] >= 0.75 and doc["setaside"]["ci"][0] >= 0.75
    assert doc["setaside"]["ci"][0] > max(c["ci"][1] for c in doc["controls"].values())
    assert doc["verification"]["meets_target"] is True
    assert doc["verification"]["accuracy"] >= 0.75
    cheaper_feasible = [t for t in doc["trials"] if t["feasible"] and t["cost"] < rec["cost"]]
    rejected = {json.dumps(r["trial"], sort_keys=True) for r in doc["rejected_by_recheck"]}
    for t in cheaper_feasible:  # any cheaper feasible protocol must have failed the fresh-seed re-check
        assert any(r["trial"]["number"] == t["number"] for r in doc["rejected_by_recheck"]), (t, rejected)


def test_same_command_same_recommendation(plan_bank: Any, planned: tuple[Path, dict[str, Any]],
                                          tmp_path: Path) -> None:
    workspace, first = planned
    again = _plan(plan_bank, workspace, *FEASIBLE)  # resumes the study: no new trial
    fresh = _plan(plan_bank, tmp_path, *FEASIBLE)  # a new study with the same seed
    for doc in (again, fresh):
        assert doc["recommendation"] == first["recommendation"] and doc["setaside"] == first["setaside"]
        assert [t["accuracy"] for t in doc["trials"]] == [t["accuracy"] for t in first["trials"]]
    assert again["run_id"] == first["run_id"]  # the same command reopens its run: no duplicate run, no new folder
    assert fresh["run_id"] != first["run_id"]
    assert sorted(p.name for p in (workspace / "reports").iterdir()) == [first["run_id"]]
    rows = json.loads(_invoke(["runs", "list", "--workspace", str(workspace), "--json"]).stdout)["runs"]
    row = next(r for r in rows if r["run_id"] == first["run_id"])
    assert row["resumes"] >= 1 and row["resumed_from"] is None and row["status"] == "FINISHED"
    assert row["name"] == "plan: weights, activations or activity_change ≤ 144 units, target 0.75"
    import sqlite3

    with sqlite3.connect(workspace / "mlflow" / "mlflow.db") as db:  # the reopened run logged no trial again
        trials = db.execute("SELECT count(*) FROM tags WHERE key = 'mlflow.parentRunId' AND value = ?",
                            (first["run_id"],)).fetchone()[0]
    assert trials == len(first["trials"])


def test_a_changed_command_resumes_the_study_in_a_new_run_marked_resumed(plan_bank: Any, tmp_path: Path) -> None:
    first = _plan(plan_bank, tmp_path, "--trials", "4")
    more = _invoke(["plan", "--bank", str(plan_bank.path), "--workspace", str(tmp_path), *FAST,
                    "--target-accuracy", "0.6", "--trials", "6"])
    assert more.exit_code == 0, more.stderr
    study = first["question"]["study"]
    assert f"study {study} resumed (4 of 6 trials done, 2 to run; a new run, resumed from {first['run_id'][:8]})" \
        f" — more workers: advisor worker --study {study}" in more.stderr.replace("\n", " ")
    rows = json.loads(_invoke(["runs", "list", "--workspace", str(tmp_path), "--json"]).stdout)["runs"]
    assert [r["resumed_from"] for r in rows] == [first["run_id"], None]
    import io

    from rich.console import Console

    from advisor.application.console import Consoles

    out = io.StringIO()
    consoles = Consoles(out=Console(file=out, width=100), err=Console(file=io.StringIO(), width=100))
    CliRunner().invoke(cli, ["runs", "list", "--workspace", str(tmp_path)], obj=consoles, catch_exceptions=False)
    assert " plan ↻ " in out.getvalue() and "↻ alone: a new run resuming" in " ".join(out.getvalue().split())


def _snapshot(root: Path) -> dict[str, tuple[int, int, bytes]]:
    import hashlib

    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size, hashlib.sha256(p.read_bytes()).digest())
            for p in sorted(root.rglob("*")) if p.is_file()}


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def test_a_copied_workspace_resumes_in_itself_and_leaves_the_original_alone(
    plan_bank: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    lab = tmp_path / "lab"
    shutil.copytree(plan_bank.path, lab / "banks" / "plan")
    args = ["plan", "--bank", "banks/plan", *FAST, "--target-accuracy", "0.6", "--trials", "4", "--json"]
    monkeypatch.chdir(lab)  # the workspace is the current directory, as a lab would use it
    first = json.loads(_invoke(args).stdout)
    server = tmp_path / "server" / "lab"
    shutil.copytree(lab, server)
    before = _snapshot(lab)

    monkeypatch.chdir(server)
    again = _invoke([*args[:-2], "6", "--json"])  # resumes the copied study: two more trials, in the copy
    assert again.exit_code == 0, again.stderr
    doc = json.loads(again.stdout)
    assert _snapshot(lab) == before  # nothing under the original changed
    shown = json.loads(_invoke(["runs", "show", first["run_id"], "--json"]).stdout)
    listed = json.loads(_invoke(["runs", "list", "--json"]).stdout)
    for reported in (doc, shown, listed, json.loads(_invoke(["runs", "show", doc["run_id"], "--json"]).stdout)):
        paths = [s for s in _strings(reported) if str(tmp_path) in s]
        assert paths and all(str(server) in s for s in paths), [s for s in paths if str(server) not in s]
    assert Path(shown["reports"]["pdf"]).is_relative_to(server)
    with sqlite3.connect(server / "mlflow" / "mlflow.db") as db:
        uris = [u for (u,) in db.execute("SELECT artifact_uri FROM runs")]
        (location,) = db.execute("SELECT artifact_location FROM experiments WHERE name = 'lr-advisor'").fetchone()
    assert location == (server / "mlflow" / "artifacts").as_uri()
    assert uris and all(u.startswith(location + "/") for u in uris)
    assert (server / "mlflow" / "artifacts" / doc["run_id"] / "artifacts" / "summary.json").is_file()
    rendered = json.loads(_invoke(["report", first["run_id"], "--format", "md", "--json"]).stdout)
    assert Path(rendered["reports"]["md"]).is_relative_to(server)
    assert str(lab / "") not in Path(rendered["reports"]["md"]).read_text()


def test_a_store_copied_without_its_artifacts_is_refused(planned: tuple[Path, dict[str, Any]],
                                                         tmp_path: Path) -> None:
    workspace, _ = planned
    (tmp_path / "mlflow").mkdir()
    for db in (workspace / "mlflow").glob("mlflow.db*"):  # the database with its write-ahead log
        shutil.copy(db, tmp_path / "mlflow" / db.name)
    result = _invoke(["runs", "list", "--workspace", str(tmp_path)])
    assert_one_error_line(result, f"tracking store sqlite:///{tmp_path}/mlflow/mlflow.db holds",
                          f"runs but their artifacts folder {tmp_path}/mlflow/artifacts is missing; copy the whole "
                          "mlflow/ folder with the database, or pass --tracking-uri")


def test_an_unreadable_store_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "mlflow").mkdir()
    (tmp_path / "mlflow" / "mlflow.db").write_bytes(b"this is not a database" * 100)
    result = _invoke(["runs", "list", "--workspace", str(tmp_path)])
    assert_one_error_line(result, f"tracking store sqlite:///{tmp_path}/mlflow/mlflow.db cannot be read: file is "
                          "not a database; move it away or pass --tracking-uri")


def test_runs_list_show_and_report(planned: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    workspace, doc = planned
    listed = _invoke(["runs", "list", "--workspace", str(workspace), "--json"])
    assert listed.exit_code == 0, listed.stderr
    rows = json.loads(listed.stdout)["runs"]
    row = next(r for r in rows if r["run_id"] == doc["run_id"])
    assert row["kind"] == "plan" and row["status"] == "FINISHED"
    assert row["accuracy"] == pytest.approx(doc["setaside"]["accuracy"])  # the headline: the set-aside number
    assert row["command"].startswith("advisor plan --bank ")

    shown = _invoke(["runs", "show", doc["run_id"], "--workspace", str(workspace), "--json"])
    assert shown.exit_code == 0, shown.stderr
    detail = json.loads(shown.stdout)
    assert detail["question"]["target_accuracy"] == 0.75
    assert detail["recommendation"] == doc["recommendation"]

    human = _invoke(["runs", "show", doc["run_id"], "--workspace", str(workspace)])
    assert human.exit_code == 0 and doc["run_id"] in human.stdout

    out = tmp_path / "out"
    rendered = _invoke(["report", doc["run_id"], "--format", "html", "--out", str(out), "--workspace",
                        str(workspace), "--json"])
    assert rendered.exit_code == 0, rendered.stderr
    html = Path(json.loads(rendered.stdout)["reports"]["html"])
    assert html == out / "report.html" and "data:image/png;base64," in html.read_text()
    assert sorted(p.name for p in out.iterdir()) == ["report.html"]


def test_runs_list_fits_100_columns_with_short_ids_that_show_and_report_take(
    planned: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    import io

    from rich.console import Console

    from advisor.application.console import Consoles

    workspace, doc = planned
    out = io.StringIO()
    consoles = Consoles(out=Console(file=out, width=100), err=Console(file=io.StringIO(), width=100))
    result = CliRunner().invoke(cli, ["runs", "list", "--workspace", str(workspace)], obj=consoles,
                                catch_exceptions=False)
    assert result.exit_code == 0
    text = out.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 100
    short = doc["run_id"][:8]
    assert f" {short} " in text and doc["run_id"] not in text  # the short id, whole, not the cut full one
    for header in ("run id", "kind", "status", "ok", "accuracy", "cost", "question"):
        assert header in text
    listed = json.loads(_invoke(["runs", "list", "--workspace", str(workspace), "--json"]).stdout)["runs"]
    row = next(r for r in listed if r["run_id"] == doc["run_id"])
    assert row["short_id"] == short  # --json carries both
    from advisor.application.tracking import RECOMMENDATION_KEYS

    expected = ({k: doc["recommendation"][k] for k in RECOMMENDATION_KEYS if k in doc["recommendation"]}
                if doc["recommendation"] else None)
    assert row["recommendation"] == expected
    shown = json.loads(_invoke(["runs", "show", short, "--workspace", str(workspace), "--json"]).stdout)
    assert shown["run_id"] == doc["run_id"]
    rendered = _invoke(["report", short, "--format", "md", "--out", str(tmp_path / "md"), "--workspace",
                        str(workspace), "--json"])
    assert rendered.exit_code == 0 and json.loads(rendered.stdout)["run_id"] == doc["run_id"]


def test_plan_human_output_names_the_recommendation_and_the_files(plan_bank: Any, tmp_path: Path) -> None:
    result = _invoke(["plan", "--bank", str(plan_bank.path), "--workspace", str(tmp_path), *FAST,
                      "--target-accuracy", "0.6"])
    assert result.exit_code == 0, result.stderr
    assert any(title in " ".join(result.stdout.split()) for title in PANEL_TITLES)
    text = " ".join(result.stdout.split())
    assert "accuracy, set-aside" in text and "accuracy, search estimate" in text
    assert "control: behaviour (whole learning curve)" in text and "control: hyperparameters alone" in text
    assert "Cost-accuracy Pareto front" in result.stdout
    assert "report.pdf" in result.stdout and "MLflow run" in result.stdout


def test_unreachable_target_says_so_with_the_best_accuracy(plan_bank: Any, tmp_path: Path) -> None:
    result = _invoke(["plan", "--bank", str(plan_bank.path), "--workspace", str(tmp_path), *FAST,
                      "--target-accuracy", "1.0", "--json"])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["feasible"] is False and doc["recommendation"] is None and doc["candidate"] is None
    assert doc["verdict"] == "none_in_search"
    assert doc["best"]["accuracy"] > 0.0 and doc["best"]["setaside"] == doc["setaside"]


def test_unreachable_target_in_words(plan_bank: Any, tmp_path: Path) -> None:
    result = _invoke(["plan", "--bank", str(plan_bank.path), "--workspace", str(tmp_path), *FAST,
                      "--target-accuracy", "1.0"])
    assert result.exit_code == 0, result.stderr
    assert "No protocol within the bounds reaches the target" in result.stdout
    assert "Most accurate protocol found" in result.stdout
    assert "To reach the target: raise --max-units" in " ".join(result.stdout.split())


def test_compare_modalities_side_by_side(plan_bank: Any, tmp_path: Path) -> None:
    result = _invoke(["compare", "--bank", str(plan_bank.path), "--workspace", str(tmp_path), "--modalities",
                      "ephys,spine_imaging", "--observable", "activations", "--trials", "6", "--splits", "5",
                      "--setaside", "0.5", "--target-accuracy", "0.6", "--json"])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    by_name = {m["name"]: m for m in doc["modalities"]}
    assert set(by_name) == {"ephys", "spine_imaging"}
    assert by_name["spine_imaging"]["feasible"] is False
    assert "cannot measure activations" in by_name["spine_imaging"]["reason"]
    assert len(by_name["ephys"]["trials"]) == 6
    assert {"name", "feasible", "cost", "recommendation", "candidate", "setaside", "controls", "verdict",
            "heldout_architecture"} <= set(by_name["ephys"])
    assert set(by_name["ephys"]["controls"]) == {"behaviour", "hyperparameters"}
    if not by_name["ephys"]["feasible"]:
        assert by_name["ephys"]["reason"]
    assert doc["question"]["setaside"] == 0.5
    assert doc["run_id"] and Path(doc["reports"]["html"]).is_file()


# ------------------------------------------------------------------------------------------- bad input
BAD = [
    (["--target-accuracy", "1.5"], ["--target-accuracy", "1.5"]),
    (["--target-accuracy", "0"], ["--target-accuracy", "0"]),
    (["--trials", "0"], ["--trials", "0"]),
    (["--max-units", "100000"], ["--max-units must be at most", "100000"]),
    (["--max-sessions", "1"], ["--max-sessions must be in [2,", "got 1"]),
    (["--modality", "nope"], ["nope"]),
    (["--modality", "spine_imaging", "--observable", "activations"],
     ["modality 'spine_imaging' cannot measure activations; it measures weights"]),
    (["--rules", "sgdm,xx"], ["--rules: unknown rule 'xx'"]),
    (["--rules", "sgdm,fa"], ["--rules: fa not in the bank"]),
    (["--rules", ","], ["--rules must name at least one rule"]),
    (["--heldout", "task"], ["--heldout", "task"]),
    (["--classifier", "knn"], ["--classifier", "knn"]),
    (["--storage", "nonsense"], ["--storage must be journal:PATH", "nonsense"]),
    (["--setaside", "0"], ["--setaside must be a share in [0.05, 0.5] of the networks; got 0"]),
    (["--setaside", "0.9"], ["--setaside must be a share in [0.05, 0.5] of the networks; got 0.9"]),
    (["--setaside", "half"], ["--setaside", "half"]),
]


@pytest.mark.parametrize(("extra", "parts"), BAD, ids=[" ".join(b[0]) for b in BAD])
def test_plan_bad_input_is_one_line_and_writes_nothing(plan_bank: Any, tmp_path: Path, extra: list[str],
                                                       parts: list[str]) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    result = _invoke(["plan", "--bank", str(plan_bank.path), "--workspace", str(workspace), *FAST, *extra])
    assert_one_error_line(result, *parts)
    assert not (workspace / "reports").exists()
    assert not list((workspace / "mlflow").glob("artifacts/*")) if (workspace / "mlflow").exists() else True


def test_unreachable_tracking_server_fails_fast_before_the_bank(plan_bank: Any, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    result = _invoke(["plan", "--bank", str(plan_bank.path), "--workspace", str(tmp_path), *FAST,
                      "--tracking-uri", f"http://127.0.0.1:{port}"])
    assert time.monotonic() - start < 10
    assert_one_error_line(result, f"tracking server http://127.0.0.1:{port} is unreachable")


@pytest.mark.parametrize("command", [["runs", "show", "0123abcd"], ["report", "0123abcd"]])
def test_unknown_run_id(tmp_path: Path, command: list[str]) -> None:
    result = _invoke([*command, "--workspace", str(tmp_path)])
    assert_one_error_line(result, "unknown run id '0123abcd'")


def test_report_unknown_format(tmp_path: Path) -> None:
    result = _invoke(["report", "abc", "--format", "docx", "--workspace", str(tmp_path)])
    assert_one_error_line(result, "docx")


def test_runs_list_on_an_empty_workspace(tmp_path: Path) -> None:
    result = _invoke(["runs", "list", "--workspace", str(tmp_path)])
    assert result.exit_code == 0
    assert "No runs yet" in result.stdout
    assert not (tmp_path / "mlflow").exists()


# ------------------------------------------------------------------------------------------- mlflow ui
def test_mlflow_server_on_the_workspace_store_serves_the_plan(planned: tuple[Path, dict[str, Any]]) -> None:
    """`mlflow ui`/`mlflow server` on the same store shows the same run, read here through its REST API."""
    workspace, doc = planned
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mlflow_cli = shutil.which("mlflow") or str(Path(sys.executable).parent / "mlflow")
    command = [mlflow_cli, "server", "--backend-store-uri", f"sqlite:///{workspace / 'mlflow' / 'mlflow.db'}",
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        run = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                url = f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/get?run_id={doc['run_id']}"
                with urllib.request.urlopen(url, timeout=2) as response:
                    run = json.load(response)["run"]
                break
            except OSError:
                time.sleep(0.3)
        if run is None:
            pytest.skip(f"mlflow server did not start (exit code {process.poll()})")
        params = {p["key"]: p["value"] for p in run["data"]["params"]}
        metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
        tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
        assert run["info"]["status"] == "FINISHED"
        assert params["target_accuracy"] == "0.75" and params["trials"] == "15" and params["setaside"] == "0.5"
        assert metrics["accuracy"] == pytest.approx(doc["setaside"]["accuracy"])
        assert metrics["search_accuracy"] == pytest.approx((doc["recommendation"] or doc["best"])["accuracy"])
        assert {"control_behaviour_accuracy", "control_hyperparameters_ci_high"} <= set(metrics)
        assert tags["advisor.kind"] == "plan"
        search = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/search", method="POST",
            data=json.dumps({"experiment_ids": [run["info"]["experiment_id"]],
                             "filter": f"tags.mlflow.parentRunId = '{doc['run_id']}'",
                             "max_results": 100}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(search, timeout=10) as response:
            children = json.load(response).get("runs", [])
        assert len(children) == 15
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_evaluate_run_rechecks_the_plans_protocol_with_its_settings(planned: tuple[Path, dict[str, Any]]) -> None:
    workspace, doc = planned
    result = _invoke(["evaluate", "--run", doc["run_id"][:8], "--workspace", str(workspace), "--json"])
    assert result.exit_code == 0, result.stderr
    checked = json.loads(result.stdout)
    assert checked["run_id"] == doc["run_id"] and checked["classifier"] == doc["question"]["classifier"] == "ridge"
    chosen = doc["recommendation"]
    assert checked["protocol"]["n_units"] == chosen["n_units"] and checked["protocol"]["observable"] == chosen[
        "observable"]
    assert checked["protocol"]["statistics"] == "marginal"
    assert checked["plan"]["setaside_accuracy"] == pytest.approx(doc["setaside"]["accuracy"])
    # the whole bank under the plan's protocol: near the plan's own estimates, well above chance (0.5)
    assert checked["accuracy"] > 0.75
    human = _invoke(["evaluate", "--run", doc["run_id"], "--workspace", str(workspace)])
    assert human.exit_code == 0, human.stderr
    assert f"Re-evaluating plan {doc['run_id'][:8]}'s protocol with its settings (classifier ridge" in human.stdout
    assert "Classifier: ridge" in human.stdout


@pytest.mark.parametrize(("extra", "parts"), [
    (["--units", "5"], ["--run takes the protocol and settings from the plan; drop --units"]),
    (["--classifier", "svm", "--seed", "3"], ["drop --classifier, --seed"]),
])
def test_evaluate_run_refuses_protocol_options(planned: tuple[Path, dict[str, Any]], extra: list[str],
                                               parts: list[str]) -> None:
    workspace, doc = planned
    assert_one_error_line(_invoke(["evaluate", "--run", doc["run_id"], *extra, "--workspace", str(workspace)]),
                          *parts)

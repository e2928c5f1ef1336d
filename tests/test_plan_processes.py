"""`advisor plan` across processes: workers joining one journal-file study, and `kill -9` then resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow


def _env(workspace: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["ADVISOR_WORKSPACE"] = str(workspace)
    env["OMP_NUM_THREADS"] = "1"
    return env


def _advisor(*args: str) -> list[str]:
    return [sys.executable, "-m", "advisor", *args]


def _study(storage: Path, name: str) -> Any:
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    return optuna.load_study(study_name=name, storage=JournalStorage(JournalFileBackend(str(storage))))


def _wait_for_trials(storage: Path, name: str, n: int, process: subprocess.Popen[str], timeout: float = 120) -> None:
    from optuna.trial import TrialState

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"plan exited early ({process.returncode}): {process.stderr.read()[-2000:]}")
        try:
            if len(_study(storage, name).get_trials(states=(TrialState.COMPLETE,))) >= n:
                return
        except (KeyError, FileNotFoundError, ValueError):
            pass  # the study does not exist yet
        time.sleep(0.2)
    raise AssertionError(f"no {n} finished trials within {timeout} s")


def test_workers_join_a_running_plan(plan_bank: Any, tmp_path: Path) -> None:
    from optuna.trial import TrialState

    storage = tmp_path / "studies" / "journal.log"
    plan = subprocess.Popen(
        _advisor("plan", "--bank", str(plan_bank.path), "--trials", "40", "--splits", "3", "--no-curves",
                 "--target-accuracy", "0.6", "--study", "shared", "--json"),
        env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_trials(storage, "shared", 1, plan)
    workers = [subprocess.Popen(_advisor("worker", "--study", "shared", "--json"), env=_env(tmp_path),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    out, err = plan.communicate(timeout=300)
    assert plan.returncode == 0, err[-3000:]
    doc = json.loads(out)
    added = []
    for w in workers:
        w_out, w_err = w.communicate(timeout=120)
        assert w.returncode == 0, w_err[-3000:]
        added.append(json.loads(w_out)["trials"])
    study = _study(storage, "shared")
    assert not study.get_trials(states=(TrialState.FAIL,))
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) >= 40
    numbers = [t["number"] for t in doc["trials"]]
    assert len(numbers) == len(set(numbers)) and len(numbers) >= 40
    # the plan reports every process's trials, and the workers logged theirs to the plan's MLflow run
    from advisor.application.tracking import Tracker
    from advisor.application.workspace import Workspace

    tracker = Tracker(Workspace.open(tmp_path))
    client = tracker._client
    children = client.search_runs([tracker._experiment_id()],
                                  filter_string=f"tags.mlflow.parentRunId = '{doc['run_id']}'", max_results=500)
    by_worker = [r for r in children if r.data.tags.get("advisor.worker") == "true"]
    assert len(by_worker) == sum(added)
    # each finished trial has exactly one nested run, whichever process ran it
    logged = sorted(int(r.data.tags["advisor.trial"]) for r in children)
    assert logged == sorted(t.number for t in complete)


def test_kill_9_during_plan_then_resume(plan_bank: Any, tmp_path: Path) -> None:
    from optuna.trial import TrialState

    args = ("plan", "--bank", str(plan_bank.path), "--trials", "30", "--splits", "3", "--no-curves",
            "--target-accuracy", "0.6", "--study", "killed", "--json")
    storage = tmp_path / "studies" / "journal.log"
    first = subprocess.Popen(_advisor(*args), env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
    _wait_for_trials(storage, "killed", 5, first)
    os.killpg(first.pid, signal.SIGKILL)
    first.communicate()  # reap it and close its pipes
    done_before = len(_study(storage, "killed").get_trials(states=(TrialState.COMPLETE,)))
    assert 5 <= done_before < 30

    second = subprocess.run(_advisor(*args), env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    doc = json.loads(second.stdout)
    complete = _study(storage, "killed").get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 30  # the interrupted trial is not counted; nothing is counted twice
    assert sorted(t["number"] for t in doc["trials"]) == sorted(t.number for t in complete)

    from advisor.application.tracking import Tracker
    from advisor.application.workspace import Workspace

    runs = Tracker(Workspace.open(tmp_path)).list_runs(kind="plan")
    # the killed parent run was marked FAILED (not left running), then reopened by the resumed plan: one run,
    # finished, each of the 30 trials logged once as its nested run
    assert [(r.status, r.tags.get("advisor.resumes")) for r in runs] == [("FINISHED", "1")]
    assert "advisor.stale" in runs[0].tags
    import sqlite3

    with sqlite3.connect(tmp_path / "mlflow" / "mlflow.db") as db:
        trials = [int(v) for (v,) in db.execute(
            "SELECT t.value FROM tags t JOIN tags p ON p.run_uuid = t.run_uuid WHERE t.key = 'advisor.trial' "
            "AND p.key = 'mlflow.parentRunId' AND p.value = ?", (runs[0].run_id,))]
    assert len(trials) == len(set(trials))  # none logged twice
    # every finished trial is logged; the trial running at the kill may have been logged before Optuna heard of
    # its end (it then counts as failed there, and the resumed study runs one more)
    assert {t.number for t in complete} <= set(trials) and len(trials) <= len(complete) + 1


def test_two_plans_on_one_workspace_at_once(plan_bank: Any, tmp_path: Path) -> None:
    """Same question, same workspace, same moment: one study shared, two finished MLflow runs, nothing corrupt."""
    from optuna.trial import TrialState

    args = _advisor("plan", "--bank", str(plan_bank.path), "--trials", "20", "--splits", "3", "--no-curves",
                    "--target-accuracy", "0.6", "--json")
    procs = [subprocess.Popen(args, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    docs = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        docs.append(json.loads(out))
    assert docs[0]["question"]["study"] == docs[1]["question"]["study"]
    study = _study(tmp_path / "studies" / "journal.log", docs[0]["question"]["study"])
    assert not study.get_trials(states=(TrialState.FAIL,))
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) >= 20

    from advisor.application.tracking import Tracker
    from advisor.application.workspace import Workspace

    runs = Tracker(Workspace.open(tmp_path)).list_runs(kind="plan")
    assert sorted(r.status for r in runs) == ["FINISHED", "FINISHED"]
    assert {r.run_id for r in runs} == {d["run_id"] for d in docs}

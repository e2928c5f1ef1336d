"""MLflow tracking: URI resolution, parent and nested runs, statuses, stale runs, reading back, one-line errors, a
real ``mlflow server`` in front of the store, and two processes on one fresh store."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from advisor.application.tracking import LONG_PARAMS_ARTIFACT, Tracker, resolve_tracking_uri
from advisor.application.workspace import Workspace
from advisor.errors import AdvisorError

pytestmark = [
    # MLflow 3.17's ORM models use SQLAlchemy's `noload` strategy, deprecated in SQLAlchemy 2.1; the warning is
    # raised once, when MLflow's SQL store module is imported, and there is nothing for us to change.
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated:DeprecationWarning"),
]


@pytest.fixture(autouse=True)
def _no_tracking_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests choose their stores themselves, whatever the environment says."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="module")
def shared_workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """One store for the tests that do not need a fresh one (each uses its own experiment)."""
    return Workspace.open(tmp_path_factory.mktemp("shared-ws"))


@pytest.fixture
def tracker(shared_workspace: Workspace, request: pytest.FixtureRequest) -> Tracker:
    """A tracker on the shared store with an experiment of its own."""
    return Tracker(shared_workspace, experiment=f"test-{request.node.name}")


def _client(tracker: Tracker) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracker.uri)


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------------------------- the URI
def test_resolve_tracking_uri_explicit_then_env_then_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workspace = Workspace.open(tmp_path / "ws")
    default = f"sqlite:///{tmp_path}/ws/mlflow/mlflow.db"
    assert resolve_tracking_uri(workspace, None) == default
    assert default.startswith("sqlite:////")  # an absolute path
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert resolve_tracking_uri(workspace, None) == "http://tracking.example:5000"
    assert resolve_tracking_uri(workspace, "") == "http://tracking.example:5000"
    assert resolve_tracking_uri(workspace, "sqlite:////data/m.db") == "sqlite:////data/m.db"
    assert not workspace.mlflow.exists()


def test_reading_a_workspace_without_store_creates_nothing(tmp_path: Path) -> None:
    workspace = Workspace.open(tmp_path / "ws")
    tracker = Tracker(workspace)
    assert tracker.list_runs() == []
    with pytest.raises(AdvisorError) as info:
        tracker.get_run("0123456789abcdef0123456789abcdef")
    assert str(info.value) == ("unknown run id '0123456789abcdef0123456789abcdef'; list runs with `advisor runs list`")
    assert not workspace.mlflow.exists()


# --------------------------------------------------------------------------------------------- writing
def test_plan_run_with_trials_and_artifacts_round_trip(tmp_path: Path) -> None:
    from matplotlib.figure import Figure

    workspace = Workspace.open(tmp_path / "ws")
    tracker = Tracker(workspace)
    local = tmp_path / "table.csv"
    local.write_text("units,cost\n100,3.5\n")
    with tracker.start_run(
        "plan", "plan-activations", {"observable": "activations", "max_units": 500}, {"k": 1}
    ) as run:
        trial_ids = [
            run.log_trial(i, {"n_units": 100 * (i + 1)}, {"cost": 1.5 * i, "accuracy": 0.5 + 0.1 * i}, {"state": "ok"})
            for i in range(3)
        ]
        run.log_metrics({"best_cost": 1.5, "best_accuracy": 0.9})
        run.set_tags({"bank": "abc123"})
        run.log_dict({"recommendation": "record 200 units", "n_trials": 3}, "summary.json")
        run.log_text("# Plan\n", "report.md")
        fig = Figure()
        fig.add_subplot().plot([0, 1], [1, 0])
        run.log_figure(fig, "figures/pareto.png")
        run.log_artifact(local, "tables")

    [summary] = tracker.list_runs()
    assert summary.run_id == run.run_id
    assert (summary.kind, summary.name, summary.status) == ("plan", "plan-activations", "FINISHED")
    assert summary.params == {"observable": "activations", "max_units": "500"}
    assert summary.metrics == {"best_cost": 1.5, "best_accuracy": 0.9}
    assert summary.tags["k"] == "1" and summary.tags["bank"] == "abc123"
    assert summary.tags["advisor.pid"] == str(os.getpid())
    assert not any(key.startswith("mlflow.") for key in summary.tags)
    assert summary.end_time is not None and summary.start_time <= summary.end_time
    assert summary.summary is None  # listings do not read artifacts

    full = tracker.get_run(run.run_id)
    assert full.summary == {"recommendation": "record 200 units", "n_trials": 3}

    # the store and the artifacts live in the workspace, not in the current directory
    assert (workspace.mlflow / "mlflow.db").is_file()
    artifact_dir = workspace.mlflow / "artifacts" / run.run_id / "artifacts"
    assert sorted(str(p.relative_to(artifact_dir)) for p in artifact_dir.rglob("*") if p.is_file()) == [
        "figures/pareto.png",
        "report.md",
        "summary.json",
        "tables/table.csv",
    ]
    png = tracker.download_artifact(run.run_id, "figures/pareto.png", tmp_path / "dl")
    assert png == tmp_path / "dl" / "pareto.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    client = _client(tracker)
    for i, trial_id in enumerate(trial_ids):
        trial = client.get_run(trial_id)
        assert trial.info.run_name == f"trial-{i}" and trial.info.status == "FINISHED"
        assert trial.data.tags["mlflow.parentRunId"] == run.run_id
        assert trial.data.tags["advisor.trial"] == str(i) and trial.data.tags["state"] == "ok"
        assert trial.data.params == {"n_units": str(100 * (i + 1))}
        assert trial.data.metrics == pytest.approx({"cost": 1.5 * i, "accuracy": 0.5 + 0.1 * i})


def test_failed_trials_keep_their_status(tracker: Tracker) -> None:
    with tracker.start_run("plan", "p", {}) as run:
        trial_id = run.log_trial(0, {"n_units": 10}, {}, status="FAILED")
        with pytest.raises(AdvisorError) as info:
            run.log_trial(1, {}, {}, status="PRUNED")
    assert str(info.value) == "trial status 'PRUNED' is not allowed; allowed: FINISHED, FAILED, KILLED"
    assert _client(tracker).get_run(trial_id).info.status == "FAILED"


@pytest.mark.parametrize(
    ("error", "status"), [(ValueError("boom"), "FAILED"), (KeyboardInterrupt(), "KILLED")], ids=["error", "ctrl-c"]
)
def test_run_status_when_the_block_raises(tracker: Tracker, error: BaseException, status: str) -> None:
    with pytest.raises(type(error)), tracker.start_run("plan", "p", {"a": 1}) as run:
        raise error
    assert tracker.get_run(run.run_id).status == status


def test_long_params_are_truncated_and_kept_whole_as_an_artifact(tracker: Tracker, tmp_path: Path) -> None:
    long_value = "u" * 7000
    with tracker.start_run("plan", "p", {"units": long_value, "short": "s"}) as run:
        trial_id = run.log_trial(0, {"units": long_value}, {"cost": 1.0})
    marker = f"... [truncated; full value in {LONG_PARAMS_ARTIFACT}]"
    for run_id in (run.run_id, trial_id):
        stored = _client(tracker).get_run(run_id).data.params["units"]
        assert len(stored) == 6000 and stored == long_value[: 6000 - len(marker)] + marker
        path = tracker.download_artifact(run_id, LONG_PARAMS_ARTIFACT, tmp_path / run_id)
        assert json.loads(path.read_text()) == {"units": long_value}
    assert tracker.get_run(run.run_id).params["short"] == "s"


def test_runs_of_dead_processes_are_failed_when_a_run_starts(tracker: Tracker) -> None:
    client = _client(tracker)
    with tracker.start_run("plan", "first", {}):
        pass  # creates the experiment
    experiment_id = client.get_experiment_by_name(tracker.experiment).experiment_id
    host = socket.gethostname()

    def running(pid: int, on_host: str) -> str:
        tags = {"advisor.kind": "plan", "advisor.pid": str(pid), "advisor.host": on_host}
        return str(client.create_run(experiment_id, tags=tags, run_name="left").info.run_id)

    dead, alive, elsewhere = running(_dead_pid(), host), running(os.getpid(), host), running(_dead_pid(), "other")
    with tracker.start_run("plan", "second", {}):
        pass
    assert client.get_run(dead).info.status == "FAILED"
    assert client.get_run(dead).data.tags["advisor.stale"].endswith(f"on {host} ended first")
    assert client.get_run(alive).info.status == "RUNNING"
    assert client.get_run(elsewhere).info.status == "RUNNING"
    assert tracker.fail_stale_runs() == []


# --------------------------------------------------------------------------------------------- reading
def test_list_runs_newest_first_by_kind_without_trials(tracker: Tracker) -> None:
    ids = []
    for kind, name in [("plan", "a"), ("compare", "b"), ("plan", "c")]:
        with tracker.start_run(kind, name, {}) as run:
            run.log_trial(0, {"x": 1}, {"y": 2.0})
        ids.append(run.run_id)
        time.sleep(0.01)  # distinct start times (milliseconds)
    assert [r.run_id for r in tracker.list_runs()] == ids[::-1]
    assert [r.name for r in tracker.list_runs(kind="plan")] == ["c", "a"]
    assert [r.kind for r in tracker.list_runs(kind="compare")] == ["compare"]
    assert [r.name for r in tracker.list_runs(max_results=2)] == ["c", "b"]
    unused = Tracker(tracker.workspace, experiment=f"{tracker.experiment}-unused")
    assert unused.list_runs() == []
    assert _client(tracker).get_experiment_by_name(unused.experiment) is None  # reading created nothing
    with pytest.raises(AdvisorError) as info:
        tracker.list_runs(kind="trial")
    assert str(info.value) == "run kind 'trial' is not allowed; allowed: plan, compare, identify"


@pytest.mark.parametrize("run_id", ["0123456789abcdef0123456789abcdef", "not a run id", ""])
def test_unknown_run_ids_are_one_line_errors(tracker: Tracker, run_id: str) -> None:
    with tracker.start_run("plan", "p", {}):
        pass
    expected = f"unknown run id {run_id!r}; list runs with `advisor runs list`"
    for call in (tracker.get_run, tracker.run_url, lambda rid: tracker.download_artifact(rid, "x", "dst")):
        with pytest.raises(AdvisorError) as info:
            call(run_id)
        assert str(info.value) == expected


def test_missing_artifact_names_the_ones_present(tracker: Tracker, tmp_path: Path) -> None:
    with tracker.start_run("plan", "p", {}) as run:
        run.log_text("x", "report.md")
    with pytest.raises(AdvisorError) as info:
        tracker.download_artifact(run.run_id, "summary.json", tmp_path)
    assert str(info.value) == f"run {run.run_id} has no artifact 'summary.json'; it has: report.md"


def test_run_url_of_a_local_store_is_the_ui_command(tracker: Tracker) -> None:
    with tracker.start_run("compare", "c", {}) as run:
        pass
    experiment_id = _client(tracker).get_run(run.run_id).info.experiment_id
    assert tracker.run_url(run.run_id) == (
        f"mlflow ui --backend-store-uri {tracker.uri}, then open "
        f"http://127.0.0.1:5000/#/experiments/{experiment_id}/runs/{run.run_id}"
    )


# --------------------------------------------------------------------------------------------- errors
def test_unsupported_kind(tracker: Tracker) -> None:
    with pytest.raises(AdvisorError) as info, tracker.start_run("search", "s", {}):
        pass
    assert str(info.value) == "run kind 'search' is not allowed; allowed: plan, compare, identify"


@pytest.mark.parametrize("uri", ["ftp://host/store", "./mlruns", "file:///tmp/mlruns"])
def test_unsupported_uri(tmp_path: Path, uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    with pytest.raises(AdvisorError) as info:
        Tracker(Workspace.open(tmp_path), uri).check()
    assert str(info.value) == (
        f"tracking URI {uri!r} is not supported; allowed: sqlite:///PATH, postgresql://..., mysql://..., "
        "mssql://..., http(s)://HOST:PORT (file stores only with MLFLOW_ALLOW_FILE_STORE=true)"
    )


def test_sqlite_store_in_an_unwritable_place(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    tracker = Tracker(Workspace.open(tmp_path / "ws"), f"sqlite:///{blocker}/sub/mlflow.db")
    with pytest.raises(AdvisorError) as info:
        tracker.list_runs()
    assert str(info.value) == (
        f"tracking store sqlite:///{blocker}/sub/mlflow.db is not writable: {blocker} is a file, not a directory; "
        "pass --tracking-uri with another store"
    )


def test_closed_server_port_fails_fast_in_one_line(tmp_path: Path) -> None:
    uri = f"http://127.0.0.1:{_free_port()}"
    tracker = Tracker(Workspace.open(tmp_path), uri)
    start = time.monotonic()
    with pytest.raises(AdvisorError) as info, tracker.start_run("plan", "p", {}):
        pass
    assert time.monotonic() - start < 5.0
    message = str(info.value)
    assert message.startswith(f"tracking server {uri} is unreachable: ")
    assert "Connection refused" in message
    assert message.endswith(
        "start it with `mlflow server --backend-store-uri sqlite:///mlflow.db --host HOST "
        "--port PORT` or pass --tracking-uri"
    )
    assert "\n" not in message


# --------------------------------------------------------------------------------------------- mlflow server
@dataclass(frozen=True)
class _Server:
    uri: str
    workspace: Workspace
    run_id: str  # a plan logged through SQLite before the server started
    process: subprocess.Popen[bytes]
    log: Path


@pytest.fixture(scope="module", autouse=True)
def _server_started_early(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[_Server | None]:
    """Start ``mlflow server`` (about 8 s to answer here) before the module's first test, so it boots while the
    other tests run; only when a selected test uses the ``server`` fixture. Always terminated at the end."""
    ours = [item for item in request.session.items if getattr(item, "module", None) is request.module]
    if not any("server" in getattr(item, "fixturenames", ()) for item in ours):
        yield None
        return
    workspace = Workspace.open(tmp_path_factory.mktemp("server-ws"))
    local = Tracker(workspace)
    with local.start_run("plan", "logged-locally", {"n_units": 300}) as run:
        run.log_metrics({"cost": 12.5, "accuracy": 0.875})
    mlflow_cli = shutil.which("mlflow") or str(Path(sys.executable).parent / "mlflow")
    port = _free_port()
    log = workspace.root / "server.log"
    command = [
        mlflow_cli, "server", "--backend-store-uri", local.uri,
        "--default-artifact-root", str(workspace.mlflow / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield _Server(f"http://127.0.0.1:{port}", workspace, run.run_id, process, log)
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the server's own process group (start_new_session)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="module")
def server(_server_started_early: _Server | None) -> _Server:
    """The server, once it answers ``/health`` (60 s at most; the test is skipped if it cannot start)."""
    started = _server_started_early
    assert started is not None  # started for every selection that uses this fixture
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{started.uri}/health", timeout=1) as response:
                if response.status == 200:
                    return started
        except OSError:
            pass
        if started.process.poll() is not None or time.monotonic() > deadline:
            tail = started.log.read_text()[-500:]
            pytest.skip(f"`mlflow server` did not start (exit code {started.process.poll()}): {tail}")
        time.sleep(0.2)


def test_server_reads_a_run_logged_to_its_sqlite_store(server: _Server) -> None:
    uri, run_id = server.uri, server.run_id
    with urllib.request.urlopen(f"{uri}/api/2.0/mlflow/runs/get?run_id={run_id}", timeout=10) as response:
        run = json.load(response)["run"]
    assert {p["key"]: p["value"] for p in run["data"]["params"]} == {"n_units": "300"}
    assert {m["key"]: m["value"] for m in run["data"]["metrics"]} == pytest.approx({"cost": 12.5, "accuracy": 0.875})
    assert run["info"]["status"] == "FINISHED"


def test_plan_logged_through_the_server(server: _Server) -> None:
    uri, workspace, local_run_id = server.uri, server.workspace, server.run_id
    tracker = Tracker(workspace, uri)
    tracker.check()
    with tracker.start_run("plan", "via-server", {"observable": "weights"}) as run:
        trial_id = run.log_trial(7, {"n_units": 50}, {"cost": 2.0})
        run.log_dict({"recommendation": "weights, 50 synapses"}, "summary.json")
    assert [r.run_id for r in tracker.list_runs()] == [run.run_id, local_run_id]
    shown = tracker.get_run(run.run_id)
    assert (shown.status, shown.params, shown.summary) == (
        "FINISHED",
        {"observable": "weights"},
        {"recommendation": "weights, 50 synapses"},
    )
    experiment_id = _client(tracker).get_run(run.run_id).info.experiment_id
    assert tracker.run_url(run.run_id) == f"{uri}/#/experiments/{experiment_id}/runs/{run.run_id}"
    assert _client(tracker).get_run(trial_id).data.tags["mlflow.parentRunId"] == run.run_id
    with pytest.raises(AdvisorError) as info:
        tracker.get_run("0123456789abcdef0123456789abcdef")
    assert str(info.value).startswith("unknown run id '0123456789abcdef0123456789abcdef'")


# --------------------------------------------------------------------------------------------- concurrency
def _log_plan_in_another_process(root: str, name: str, barrier: Any) -> None:
    """Worker: wait for the other process, then log a plan with 5 trials to the workspace's (fresh) store."""
    import warnings

    warnings.filterwarnings("ignore", message="The ``noload`` loader strategy is deprecated")
    import mlflow  # noqa: F401  (imported before the barrier so both processes reach the store together)

    tracker = Tracker(Workspace(Path(root)))
    barrier.wait(timeout=60)
    with tracker.start_run("plan", name, {"worker": name}) as run:
        for i in range(5):
            run.log_trial(i, {"n_units": i}, {"cost": float(i)})


def test_two_processes_start_runs_on_one_fresh_store(tmp_path: Path) -> None:
    workspace = Workspace.open(tmp_path / "ws")
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    workers = [
        context.Process(target=_log_plan_in_another_process, args=(str(workspace.root), f"w{i}", barrier))
        for i in range(2)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0, 0]
    tracker = Tracker(workspace)
    runs = tracker.list_runs()
    assert sorted(r.name for r in runs) == ["w0", "w1"] and {r.status for r in runs} == {"FINISHED"}
    trials = _client(tracker).search_runs(
        [_client(tracker).get_experiment_by_name("lr-advisor").experiment_id],
        filter_string="tags.`advisor.trial` IS NOT NULL",
    )
    assert len(trials) == 10


def test_a_unique_prefix_names_a_run_and_an_ambiguous_one_is_refused(tracker: Tracker) -> None:
    ids = []
    for name in ("a", "b", "c"):
        with tracker.start_run("plan", name, {}) as run:
            ids.append(run.run_id)
    for full in ids:
        assert tracker.resolve_run_id(full[:12]) == full
        assert tracker.get_run(full[:12]).run_id == full
    assert tracker.resolve_run_id("012") == "012"  # too short to be a prefix: left for the unknown-id error
    absent = next(p for p in (f"{i:06x}" for i in range(0, 2**24, 4099)) if not any(x.startswith(p) for x in ids))
    with pytest.raises(AdvisorError) as info:
        tracker.get_run(absent)
    assert str(info.value) == f"unknown run id {absent!r}; list runs with `advisor runs list`"


def test_an_ambiguous_prefix_lists_what_it_matches(tracker: Tracker, monkeypatch: pytest.MonkeyPatch) -> None:
    from advisor.application.tracking import RunSummary

    with tracker.start_run("plan", "p", {}):
        pass
    from datetime import UTC, datetime

    fake = [RunSummary(f"abcdef{i}" + "0" * 25, "plan", "p", "FINISHED", datetime.now(UTC), None, {}, {}, {})
            for i in range(2)]
    monkeypatch.setattr(tracker, "list_runs", lambda **_: fake)
    with pytest.raises(AdvisorError) as info:
        tracker.resolve_run_id("abcdef")
    assert str(info.value) == ("run id 'abcdef' is ambiguous: 2 runs start with it (abcdef0000, abcdef1000); "
                               "give more characters")

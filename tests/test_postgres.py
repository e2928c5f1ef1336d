"""Search workers sharing one Optuna study on a real PostgreSQL server (started here on 127.0.0.1, stopped at the
end), and an unreachable database refused in one line within seconds.

The server is PostgreSQL from the machine's Debian packages (`initdb`, `pg_ctl`); the driver is psycopg, from the
`dev` extra. Without them the server tests are skipped with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import assert_one_error_line
from click.testing import CliRunner

from advisor.cli import cli

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres(*command: str) -> list[str]:
    """Run as the `postgres` user when we are root (PostgreSQL refuses to run as root)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return list(command)


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A throwaway PostgreSQL server on 127.0.0.1; yields its SQLAlchemy URL."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("PostgreSQL (initdb, pg_ctl) is not installed on this machine")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("the psycopg driver is not installed (pip install -e '.[dev]')")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: cannot start PostgreSQL as another user")
    # Not under pytest's tmp_path: its parents are private to the test user, and the server runs as `postgres`.
    root = Path(tempfile.mkdtemp(prefix="lr-advisor-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, user="postgres")
    data, port = root / "data", _free_port()
    subprocess.run(_as_postgres(initdb, "-D", str(data), "-A", "trust", "-U", "advisor"), check=True,
                   capture_output=True)
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
    subprocess.run(_as_postgres(pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"),
                   check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://advisor@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_postgres(pg_ctl, "-D", str(data), "-m", "fast", "stop"), check=False,
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def test_plan_and_workers_share_a_postgresql_study(postgres: str, plan_bank: Any, tmp_path: Path) -> None:
    from optuna import load_study
    from optuna.storages import RDBStorage
    from optuna.trial import TrialState

    storage = RDBStorage(postgres)

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(ADVISOR_WORKSPACE=str(tmp_path), OMP_NUM_THREADS="1")
    base = [sys.executable, "-m", "advisor"]
    plan = subprocess.Popen([*base, "plan", "--bank", str(plan_bank.path), "--trials", "30", "--splits", "3",
                             "--no-curves", "--target-accuracy", "0.6", "--storage", postgres, "--study", "pg",
                             "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until the plan created the study
        try:
            load_study(study_name="pg", storage=storage)
            break
        except KeyError:
            time.sleep(0.3)
    workers = [subprocess.Popen([*base, "worker", "--study", "pg", "--storage", postgres, "--json"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    out, err = plan.communicate(timeout=300)
    assert plan.returncode == 0, err[-3000:]
    for w in workers:
        _, w_err = w.communicate(timeout=120)
        assert w.returncode == 0, w_err[-3000:]
    study = load_study(study_name="pg", storage=storage)
    failed, complete = study.get_trials(states=(TrialState.FAIL,)), study.get_trials(states=(TrialState.COMPLETE,))
    storage.engine.dispose()  # close the pooled connections before the server stops
    assert not failed
    assert len(complete) >= 30
    assert len(json.loads(out)["trials"]) >= 30


def test_unreachable_database_is_one_line_within_seconds(plan_bank: Any, tmp_path: Path) -> None:
    pytest.importorskip("psycopg", reason="the psycopg driver is not installed")
    url = f"postgresql+psycopg://advisor@127.0.0.1:{_free_port()}/postgres"
    start = time.monotonic()
    result = CliRunner().invoke(cli, ["plan", "--bank", str(plan_bank.path), "--workspace", str(tmp_path),
                                      "--storage", url], catch_exceptions=False)
    assert time.monotonic() - start < 10
    assert_one_error_line(result, "--storage", "cannot be opened")
    assert not (tmp_path / "studies").exists()

"""Screenshot the MLflow UI's runs page of an lr-advisor workspace with headless Chromium.

Usage::

    python scripts/screenshot_mlflow.py --workspace DIR [--out docs/mlflow-runs.png] [--port 5055]

Starts a real ``mlflow server`` on the workspace's store (``DIR/mlflow/mlflow.db``, artifacts in
``DIR/mlflow/artifacts``) on 127.0.0.1, waits until it answers, finds the experiment (``lr-advisor`` by default)
through the REST API, has headless Chromium render ``#/experiments/<ID>/runs`` to ``--out``, and stops the server.
It needs Debian's Chromium (``apt-get install chromium``, ``/usr/bin/chromium``); it is not part of the tests and
nothing here is imported by the library. ``docs/mlflow-runs.png`` is this script's picture of a workspace with two
plans (``advisor plan --observable activations --trials 6`` with ``--max-units 40`` and ``20``, on a 24-network
variant of the tiny preset).

Two details keep the picture on the runs table: the page is opened as ``mlflow-workspace.localhost`` (Chromium
resolves every ``*.localhost`` name to the loopback address itself; the server is told to accept that Host and
origin), because on ``localhost`` or ``127.0.0.1`` the MLflow 3 UI opens its Assistant panel on first load over a
third of the table; and ``?workflowType=machine_learning`` selects the "Model training" side bar instead of the GenAI
one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

HOST = "127.0.0.1"
PAGE_HOST = "mlflow-workspace.localhost"


def mlflow_command() -> str:
    """The ``mlflow`` executable of this interpreter's environment (else the one on PATH)."""
    beside = Path(sys.executable).with_name("mlflow")
    found = str(beside) if beside.exists() else shutil.which("mlflow")
    if not found:
        raise SystemExit("no mlflow executable beside this Python or on PATH")
    return found


def start_server(workspace: Path, port: int, log: Path) -> subprocess.Popen:
    """``mlflow server`` on the workspace's sqlite store, in its own process group, logging to ``log``."""
    store = workspace / "mlflow" / "mlflow.db"
    if not store.exists():
        raise SystemExit(f"no MLflow store at {store}: run `advisor plan` in the workspace first")
    command = [
        mlflow_command(), "server",
        "--backend-store-uri", f"sqlite:///{store.resolve()}",
        "--default-artifact-root", str((workspace / "mlflow" / "artifacts").resolve()),
        "--host", HOST, "--port", str(port), "--workers", "1",
        "--allowed-hosts", f"{HOST}:{port},localhost:{port},{PAGE_HOST}:{port}",
        "--cors-allowed-origins", f"http://{PAGE_HOST}:{port}",
    ]  # fmt: skip
    with open(log, "wb") as stream:
        return subprocess.Popen(command, stdout=stream, stderr=subprocess.STDOUT, start_new_session=True)


def answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def wait_for(server: subprocess.Popen, port: int, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not answers(port):
        if server.poll() is not None:
            raise SystemExit(f"mlflow server exited ({server.returncode}):\n{log.read_text(errors='replace')[-3000:]}")
        if time.monotonic() > deadline:
            raise SystemExit(f"mlflow server did not answer on port {port} within {timeout:.0f} s")
        time.sleep(1)


def stop(server: subprocess.Popen) -> None:
    """Stop the server and the workers it started (its own process group)."""
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def experiment_id(port: int, name: str) -> str:
    """The id of the experiment called ``name``, through ``/api/2.0/mlflow/experiments/search``."""
    request = urllib.request.Request(
        f"http://{HOST}:{port}/api/2.0/mlflow/experiments/search",
        data=json.dumps({"max_results": 1000}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        experiments = json.load(response).get("experiments", [])
    for experiment in experiments:
        if experiment["name"] == name:
            return experiment["experiment_id"]
    names = ", ".join(experiment["name"] for experiment in experiments) or "none"
    raise SystemExit(f"no experiment {name!r} in the store (experiments: {names})")


def screenshot(chromium: str, url: str, out: Path, window: str, budget_ms: int) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        command = [
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={profile}", f"--window-size={window}", f"--virtual-time-budget={budget_ms}",
            f"--screenshot={out.resolve()}", url,
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, timeout=budget_ms / 1000 + 120)
    if result.returncode != 0 or not out.exists() or out.stat().st_size == 0:
        raise SystemExit(f"chromium failed ({result.returncode}):\n{result.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=Path("."), help="lr-advisor workspace [default: .]")
    parser.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "docs" / "mlflow-runs.png")
    parser.add_argument("--port", type=int, default=5055)
    parser.add_argument("--experiment", default="lr-advisor", help="experiment name [default: lr-advisor]")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--window-size", default="1600,1000", help="WIDTH,HEIGHT in pixels")
    parser.add_argument("--budget", type=int, default=15000, help="Chromium's virtual-time budget in ms")
    parser.add_argument("--startup-timeout", type=float, default=180.0, help="seconds to wait for the server")
    args = parser.parse_args()
    if not Path(args.chromium).exists():
        raise SystemExit(f"no Chromium at {args.chromium}: apt-get install chromium")
    if answers(args.port):
        raise SystemExit(f"something already answers on {HOST}:{args.port}: choose another --port")
    with tempfile.TemporaryDirectory(prefix="mlflow-server-") as scratch:
        log = Path(scratch) / "server.log"
        server = start_server(args.workspace, args.port, log)
        try:
            wait_for(server, args.port, log, args.startup_timeout)
            ident = experiment_id(args.port, args.experiment)
            url = f"http://{PAGE_HOST}:{args.port}/#/experiments/{ident}/runs?workflowType=machine_learning"
            screenshot(args.chromium, url, args.out, args.window_size, args.budget)
        finally:
            stop(server)
    print(f"{args.out} ({url})")


if __name__ == "__main__":
    main()

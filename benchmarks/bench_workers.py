"""Does `advisor worker` make a running plan finish sooner? The plan alone against the plan with workers.

Runs ``advisor plan --bank BANK --observable activations --max-units 500 --trials N --no-curves --json`` in a
fresh workspace, alone (the baseline, measured in the same run), and again in another fresh workspace with
``--workers K`` ``advisor worker --study NAME`` processes started as soon as the plan's study exists (as a second
terminal would). Both use the same seed. Reports wall time, the speed-up, how many trials each process ran, the
recommendation of each run, and whether any trial failed. Every number is the median of ``--repeats`` runs.

On a machine with C cores, at most C processes help: each trial is one process's CPU work.

    python benchmarks/bench_workers.py --bank WORKSPACE/banks/quick-... --out FILE.json [--workers 1] [--trials 100]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

STUDY = "bench"


def _env(workspace: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["ADVISOR_WORKSPACE"] = str(workspace)
    return env


def _advisor(*args: str) -> list[str]:
    return [sys.executable, "-m", "advisor", *args]


def _study_ready(workspace: Path) -> bool:
    from advisor.application.search import study_context
    from advisor.errors import AdvisorError

    journal = workspace / "studies" / "journal.log"
    if not journal.is_file():
        return False
    try:
        study_context(f"journal:{journal}", STUDY)
    except (AdvisorError, KeyError, ValueError):
        return False
    return True


def run_once(bank: Path, trials: int, workers: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp)
        plan_cmd = _advisor("plan", "--bank", str(bank), "--observable", "activations", "--max-units", "500",
                            "--trials", str(trials), "--no-curves", "--study", STUDY, "--json")
        start = time.perf_counter()
        plan = subprocess.Popen(plan_cmd, env=_env(ws), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs = []
        if workers:
            while not _study_ready(ws):
                if plan.poll() is not None:
                    raise SystemExit(f"advisor plan exited early: {plan.stderr.read()[-2000:]}")
                time.sleep(0.1)
            procs = [subprocess.Popen(_advisor("worker", "--study", STUDY, "--json"), env=_env(ws),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                     for _ in range(workers)]
        out, err = plan.communicate()
        wall = time.perf_counter() - start
        if plan.returncode != 0:
            raise SystemExit(f"advisor plan failed ({plan.returncode}): {err[-2000:]}")
        doc = json.loads(out)
        worker_trials = []
        for p in procs:
            w_out, w_err = p.communicate()
            if p.returncode != 0:
                raise SystemExit(f"advisor worker failed ({p.returncode}): {w_err[-2000:]}")
            worker_trials.append(json.loads(w_out)["trials"])
        import optuna
        from optuna.trial import TrialState

        from advisor.application.search import storage_for

        study = optuna.load_study(study_name=STUDY, storage=storage_for(f"journal:{ws / 'studies' / 'journal.log'}"))
        failed = len(study.get_trials(states=(TrialState.FAIL,)))
        complete = len(study.get_trials(states=(TrialState.COMPLETE,)))
    rec = doc.get("recommendation") or {}
    return {"wall_s": wall, "trials_complete": complete, "trials_failed": failed,
            "trials_by_plan": complete - sum(worker_trials), "trials_by_workers": worker_trials,
            "feasible": doc["feasible"],
            "recommendation": {k: rec.get(k) for k in ("observable", "n_units", "n_sessions", "noise", "cost",
                                                       "accuracy")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bank", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    runs: dict[str, list[dict[str, Any]]] = {"alone": [], "with_workers": []}
    with Progress(console=Console(stderr=True)) as progress:
        task = progress.add_task("plans", total=2 * args.repeats)
        for _ in range(args.repeats):  # interleaved, so drifting machine load hits both alike
            runs["alone"].append(run_once(args.bank, args.trials, 0))
            progress.advance(task)
            runs["with_workers"].append(run_once(args.bank, args.trials, args.workers))
            progress.advance(task)
    alone = statistics.median(r["wall_s"] for r in runs["alone"])
    joined = statistics.median(r["wall_s"] for r in runs["with_workers"])
    table = Table(title=f"advisor plan, {args.trials} trials: alone vs with {args.workers} worker(s) "
                        f"({os.cpu_count()} CPUs; median of {args.repeats})")
    for col in ("run", "wall s", "trials by plan", "trials by workers", "failed", "recommendation"):
        table.add_column(col, justify="right")
    for name, wall in (("alone", alone), ("with_workers", joined)):
        last = runs[name][-1]
        rec = last["recommendation"]
        table.add_row(name, f"{wall:.1f}", str(last["trials_by_plan"]), str(last["trials_by_workers"]),
                      str(sum(r["trials_failed"] for r in runs[name])),
                      f"{rec['n_units']} units × {rec['n_sessions']} sessions, noise {rec['noise']:.2f}, "
                      f"acc {rec['accuracy']:.2f}" if rec.get("n_units") else "none feasible")
    Console(width=150).print(table)
    Console().print(f"speed-up with {args.workers} worker(s): {alone / joined:.2f}×")
    figures = {"benchmark": "workers", "bank": str(args.bank), "trials": args.trials, "workers": args.workers,
               "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": sys.version.split()[0]},
               "alone_wall_s_median": round(alone, 2), "with_workers_wall_s_median": round(joined, 2),
               "speedup": round(alone / joined, 3), "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()

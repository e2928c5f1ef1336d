"""How long does `advisor plan` take? With the bank cached, and from a fresh workspace (simulation included).

Runs the README's main command, ``advisor plan --observable activations --max-units 500``, as a subprocess:

1. ``fresh``: in an empty workspace (builds the ``quick`` bank, then plans; target: at most 8 minutes);
2. ``cached``: again in a new workspace that reuses the bank (copied) but not the study (target: at most 3 minutes);
3. ``resumed``: the same command in the same workspace (the study already holds its trials: reporting only).

Baseline, measured in the same run: the per-trial cost of scoring protocols with the ``ridge`` classifier the
search uses against the linear SVM (the straightforward choice), on the same 12 protocols from the study.

    python benchmarks/bench_plan.py --out benchmarks/results/bench_plan-cpu2.json [--skip-fresh]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMAND = ["plan", "--observable", "activations", "--max-units", "500", "--json"]


def run_plan(workspace: Path) -> tuple[float, dict]:
    env = {**os.environ, "ADVISOR_WORKSPACE": str(workspace)}
    env.pop("MLFLOW_TRACKING_URI", None)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "advisor", *COMMAND], env=env, capture_output=True, text=True,
                          check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"advisor plan failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return seconds, json.loads(proc.stdout)


def per_trial_times(bank_dir: Path, trials: list[dict], classifier: str) -> list[float]:
    from advisor.application.search import Question, make_scorer
    from advisor.science.protocol import RecordingProtocol
    from simulator.bank import load_bank

    bank = load_bank(bank_dir)
    question = Question(("activations",), {"activations": 500}, {"activations": 192}, 41, 41,
                        ("early,middle,deep",), 0.8, "rule", tuple(sorted(set(bank.metadata["rule"]))), "none",
                        classifier, 1, 10, 0)
    scorer = make_scorer(bank, question)
    out = []
    for t in trials:
        protocol = RecordingProtocol(observable=t["observable"], n_units=t["n_units"], layers=tuple(t["layers"]),
                                     n_sessions=t["n_sessions"], window=tuple(t["window"]),
                                     noise_model=t["noise_model"], noise=t["noise"], seed=0)
        start = time.perf_counter()
        scorer.score(protocol)
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--skip-fresh", action="store_true", help="Skip the fresh-workspace run (reuse a bank).")
    parser.add_argument("--bank-from", type=Path, default=None, help="A workspace whose banks/ to copy.")
    args = parser.parse_args()

    figures: dict = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
                     "command": "advisor " + " ".join(COMMAND[:-1])}
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "fresh"
        if args.skip_fresh:
            if args.bank_from is None:
                raise SystemExit("--skip-fresh needs --bank-from WORKSPACE")
            shutil.copytree(args.bank_from / "banks", fresh / "banks")
        else:
            seconds, doc = run_plan(fresh)
            figures["fresh_seconds"] = round(seconds, 1)
            print(f"fresh workspace (simulate + plan): {seconds:.1f} s")
        cached = Path(tmp) / "cached"
        shutil.copytree(fresh / "banks", cached / "banks")
        seconds, doc = run_plan(cached)
        figures["cached_seconds"] = round(seconds, 1)
        figures["search_and_analysis_seconds"] = doc["elapsed_s"]
        seconds, _ = run_plan(cached)
        figures["resumed_seconds"] = round(seconds, 1)
        bank_dir = Path(doc["bank"]["path"])
        sample = doc["trials"][:: max(1, len(doc["trials"]) // 12)][:12]
        ridge = per_trial_times(bank_dir, sample, "ridge")
        svm = per_trial_times(bank_dir, sample, "svm")
    figures["trial_seconds_median_ridge"] = round(statistics.median(ridge), 3)
    figures["trial_seconds_median_svm"] = round(statistics.median(svm), 3)
    figures["svm_over_ridge"] = round(statistics.median(svm) / statistics.median(ridge), 2)
    figures["feasible"] = doc["feasible"]
    figures["recommendation"] = {k: (doc["recommendation"] or doc["best"])[k]
                                 for k in ("n_units", "n_sessions", "noise", "cost", "accuracy", "ci")}

    from rich.console import Console
    from rich.table import Table

    table = Table(title="advisor plan --observable activations --max-units 500 (quick bank, 100 trials)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    if "fresh_seconds" in figures:
        table.add_row("fresh workspace, incl. simulation", f"{figures['fresh_seconds']:.0f} s", "≤ 480 s")
    table.add_row("bank cached", f"{figures['cached_seconds']:.0f} s", "≤ 180 s")
    table.add_row("same command again (study resumed)", f"{figures['resumed_seconds']:.0f} s", "")
    table.add_row("one trial, ridge (median of 12)", f"{figures['trial_seconds_median_ridge']:.2f} s", "")
    table.add_row("one trial, linear SVM (same protocols)", f"{figures['trial_seconds_median_svm']:.2f} s", "")
    table.add_row("SVM / ridge", f"{figures['svm_over_ridge']:.1f}×", "")
    Console().print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()

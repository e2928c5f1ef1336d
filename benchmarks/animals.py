"""Pooling animals: what it costs a search trial, and a whole plan with ``--max-animals``.

Usage::

    python benchmarks/animals.py --workspace WS [--preset quick] [--trials 100] [--out benchmarks/results]

Measured in one run on one machine (medians; these machines are noisy, so ratios matter):

* **Per trial**: the same 12 random protocols scored as search trials (nothing cached) of a question without
  animals and of one with ``max_animals = 5`` (trial i pooling 1 + i mod 5 animals; the pooled controls, computed
  once per plan and k, beforehand): the ratio of the median trial times (target ≤ 1.5).
* **Whole plan**: ``advisor plan --observable activations --max-units 500 --trials N`` warm (the bank cached),
  without and with ``--max-animals 5``, in fresh workspaces that share the bank (target ≤ 3 minutes).

Prints a table and writes ``animals.json``.
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
import time
from pathlib import Path
from typing import Any

import numpy as np


def _trial_times(bank: Any, max_animals: int, n: int = 12) -> list[float]:
    from advisor.application.planning import make_question
    from advisor.application.search import evaluate_choice, make_scorer
    from advisor.science.cost import load_modality

    modality = load_modality("generic")
    question = make_question(bank, modality, observable="activations", max_units=500, max_sessions=None,
                             target_accuracy=0.75, rules=None, family=False, heldout="none", classifier="ridge",
                             n_trials=100, n_splits=10, seed=0, statistics="population", max_animals=max_animals)
    scorer = make_scorer(bank, question)
    for k in range(2, max_animals + 1):  # the pooled controls: once per k and plan, not per trial
        scorer.control_high_for(k)
    rng = np.random.default_rng(0)
    times = []
    for i in range(n):
        layers = [("deep",), ("early", "deep"), ("early", "middle", "deep")][i % 3]
        units = min(int(rng.integers(50, 500)), question.per_group["activations"] * len(layers))
        choice = {"observable": "activations", "n_units": units, "layers": layers,
                  "n_sessions": int(rng.integers(3, 21)), "window": (0.0, 1.0), "repeats": int(rng.integers(1, 8)),
                  "n_animals": 1 + i % max_animals}  # a search trial: one protocol at one number of animals
        scorer.cache.clear()
        scorer.pooled_cache.clear()
        started = time.perf_counter()
        evaluate_choice(choice, scorer, modality, question, i)
        times.append(time.perf_counter() - started)
    return times


def _plan_seconds(workspace: Path, banks: Path, trials: int, *extra: str) -> float:
    shutil.rmtree(workspace, ignore_errors=True)
    workspace.mkdir(parents=True)
    (workspace / "banks").symlink_to(banks.resolve())
    exe = Path(sys.executable).with_name("advisor")
    started = time.perf_counter()
    subprocess.run([str(exe), "plan", "--observable", "activations", "--max-units", "500", "--trials", str(trials),
                    "--workspace", str(workspace), "--json", *extra], check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, required=True, help="holds the bank (banks/)")
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()

    from simulator.bank import load_bank
    from simulator.presets import load_preset

    config = load_preset(args.preset)
    bank_dir = next(p for p in (args.workspace / "banks").iterdir() if p.name.startswith(f"{config.name}-"))
    bank = load_bank(bank_dir)
    plain = _trial_times(bank, 1)
    pooled = _trial_times(bank, 5)
    scratch = args.workspace / "bench-animals"
    without = _plan_seconds(scratch / "without", args.workspace / "banks", args.trials)
    with_animals = _plan_seconds(scratch / "with", args.workspace / "banks", args.trials, "--max-animals", "5")
    result = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "bank": bank.hash, "trial_s": {"without_animals": statistics.median(plain),
                                             "max_animals_5": statistics.median(pooled)},
              "trial_ratio": statistics.median(pooled) / statistics.median(plain),
              "plan_s": {"without_animals": without, "max_animals_5": with_animals}, "trials": args.trials}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "animals.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'measure':<48} {'without':>9} {'animals 5':>10} {'ratio':>6}")
    t = result["trial_s"]
    print(f"{'search trial, median s (12 protocols)':<48} {t['without_animals']:>9.3f} {t['max_animals_5']:>10.3f} "
          f"{result['trial_ratio']:>6.2f}")
    p = result["plan_s"]
    print(f"{f'advisor plan, {args.trials} trials, warm, s':<48} {p['without_animals']:>9.1f} "
          f"{p['max_animals_5']:>10.1f} {p['max_animals_5'] / p['without_animals']:>6.2f}")


if __name__ == "__main__":
    main()

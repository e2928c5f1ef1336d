"""`advisor identify`: how fast, how well calibrated, and how often the misspecification check fires.

Usage::

    python benchmarks/identify.py --workspace WS [--run RUN_ID] [--outside BANK] [--out benchmarks/results]

``WS`` holds a plan (the newest plan run unless ``--run``) and its bank. Measured, on the plan's protocol:

* **Timing** (subprocesses, medians of 3): ``advisor export`` of one recording, ``advisor identify`` of one
  recording with the classifier cached (target ≤ 10 s) and without (the cache deleted first: the baseline of the
  same run), and the library call alone (``identify_document``, median of 20).
* **Calibration and false alarms on fresh recordings**: every set-aside network recorded again with two new
  recording seeds (other units, gains, noise), identified: accuracy, expected calibration error, and the share
  called unlike the simulations at p ≤ 0.05 (the false-alarm rate; aim ≤ 5%), next to the leave-one-out rate.
* **Detection**: recordings that are not what the bank simulated: the same set-aside recordings with their
  sessions shuffled; pure Gaussian noise of the same shape; and networks of rules outside the bank (``--outside``,
  a bank of ``benchmarks/presets/outside.toml``: Hebbian and node perturbation on the quick architectures).

Prints a table and writes ``identify.json``.
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


def _advisor(*args: str, workspace: Path) -> tuple[float, dict[str, Any]]:
    exe = Path(sys.executable).with_name("advisor")
    started = time.perf_counter()
    done = subprocess.run([str(exe), *args, "--workspace", str(workspace), "--json"], capture_output=True, text=True,
                          check=True, env={**os.environ, "COLUMNS": "100"})
    return time.perf_counter() - started, json.loads(done.stdout)


def _rates(docs: list[dict[str, Any]], truth: list[str] | None) -> dict[str, float]:
    flagged = float(np.mean([not d["in_distribution"] for d in docs]))
    out = {"n": len(docs), "flagged": flagged}
    if truth is not None:
        out["accuracy"] = float(np.mean([d["top_rule"] == t for d, t in zip(docs, truth, strict=True)]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--run", default=None)
    parser.add_argument("--outside", type=Path, default=None, help="a bank of rules outside the plan's bank")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()

    from advisor.application.identify import (
        export_rows,
        identify_document,
        load_identifier,
        plan_settings,
        setaside_rows,
        virtual_lab_recordings,
    )
    from advisor.application.tracking import Tracker
    from advisor.application.workspace import Workspace, relocate_document
    from advisor.science.identification import expected_calibration_error
    from advisor.science.recordings import LabRecording
    from simulator.bank import load_bank

    workspace = Workspace.open(args.workspace)
    tracker = Tracker(workspace)
    run_id = args.run or next(r.run_id for r in tracker.list_runs("plan") if r.status == "FINISHED")
    doc = relocate_document(tracker.get_run(run_id).summary, workspace.root)
    bank = load_bank(doc["bank"]["path"])
    settings = plan_settings(doc, run_id)
    cache = workspace.root / "cache" / "identify"

    # ---- timing
    demo = workspace.root / "bench-identify"
    shutil.rmtree(demo, ignore_errors=True)
    export_s = [_advisor("export", "--run", run_id, "--networks", "1", "--out", str(demo / str(i)),
                         workspace=workspace.root)[0] for i in range(3)]
    file = str(next((demo / "0").glob("*.nwb")))
    uncached_s = []
    for _ in range(2):
        shutil.rmtree(cache, ignore_errors=True)
        uncached_s.append(_advisor("identify", file, "--run", run_id, workspace=workspace.root)[0])
    cached_s = [_advisor("identify", file, "--run", run_id, workspace=workspace.root)[0] for _ in range(3)]
    identifier, _ = load_identifier(bank, settings, cache)
    rec = virtual_lab_recordings(bank, settings, export_rows(bank, settings, 1))[0]
    library_s = []
    for _ in range(20):
        started = time.perf_counter()
        identify_document(identifier, settings, rec, recording_format="npz", command="bench")
        library_s.append(time.perf_counter() - started)

    # ---- calibration and false alarms on fresh recordings of the set-aside networks
    _, setaside = setaside_rows(bank, settings)
    meta = bank.metadata.reset_index(drop=True)
    truth = [str(meta.iloc[int(r)][settings.target]) for r in setaside]

    def run(recordings: list[LabRecording]) -> list[dict[str, Any]]:
        return [identify_document(identifier, settings, r, recording_format="npz", command="bench")
                for r in recordings]

    rows: dict[str, dict[str, Any]] = {}
    fresh_docs = []
    for offset in (104729, 7):
        fresh = virtual_lab_recordings(bank, settings, setaside, seed_offset=offset)
        docs = run(fresh)
        fresh_docs += docs
        rows[f"fresh recordings (seed +{offset})"] = _rates(docs, truth)
    index = {label: i for i, label in enumerate(identifier.labels)}
    probs = np.array([[d["posterior"][label] for label in identifier.labels] for d in fresh_docs])
    y = np.array([index[t] for t in truth * 2])
    fresh_ece, _ = expected_calibration_error(probs, y)

    # ---- detection
    rng = np.random.default_rng(0)
    base = virtual_lab_recordings(bank, settings, setaside, seed_offset=104729)
    shuffled = []
    for r in base:
        order = rng.permutation(r.n_sessions)
        while np.array_equal(order, np.arange(r.n_sessions)):
            order = rng.permutation(r.n_sessions)
        shuffled.append(LabRecording(r.responses[order], r.unit_group, r.session_progress, "shuffled"))
    rows["sessions shuffled"] = _rates(run(shuffled), truth)
    noise = [LabRecording(rng.normal(0, 1, r.responses.shape), r.unit_group, r.session_progress, "noise")
             for r in base]
    rows["pure Gaussian noise"] = _rates(run(noise), None)
    outside_rules: dict[str, Any] = {}
    if args.outside is not None:
        other = load_bank(args.outside)
        other_meta = other.metadata.reset_index(drop=True)
        acts = np.asarray(other[settings.protocol.observable])
        finite = np.isfinite(acts.reshape(len(acts), -1)).all(axis=1)  # a diverged network records NaN: no rig would
        for rule in sorted(set(other_meta["rule"].astype(str))):
            rows_o = np.flatnonzero((other_meta["rule"].astype(str).to_numpy() == rule) & finite)
            docs = run(virtual_lab_recordings(other, settings, rows_o))
            rows[f"rule outside the bank: {rule}"] = {**_rates(docs, None),
                                                      "diverged_left_out": int(np.sum(~finite & (
                                                          other_meta["rule"].astype(str).to_numpy() == rule)))}
            outside_rules[rule] = {k: int(sum(d["top_rule"] == k for d in docs)) for k in identifier.labels}

    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores", "python": sys.version,
        "plan_run": run_id, "bank": bank.hash, "protocol": settings.protocol.describe(),
        "timing_s": {"export_one_nwb": statistics.median(export_s), "identify_cached": statistics.median(cached_s),
                     "identify_uncached": statistics.median(uncached_s),
                     "library_identify": statistics.median(library_s),
                     "cached_over_uncached": statistics.median(cached_s) / statistics.median(uncached_s),
                     "identifier_fit": identifier.seconds},
        "calibration_setaside": {k: identifier.calibration[k] for k in ("n_networks", "accuracy", "ece",
                                                                         "ece_uncalibrated", "temperature")},
        "ece_fresh_recordings": fresh_ece,
        "false_alarm_rate_loo": identifier.false_alarm_rate,
        "rates": rows, "outside_top_rules": outside_rules,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "identify.json").write_text(json.dumps(result, indent=2) + "\n")
    t = result["timing_s"]
    print(f"plan {run_id[:8]} on bank {bank.hash[:8]}: {settings.protocol.describe()}")
    print(f"{'timing (median)':<44} {'seconds':>8}")
    for name in ("export_one_nwb", "identify_uncached", "identify_cached", "library_identify", "identifier_fit"):
        print(f"{name:<44} {t[name]:>8.2f}")
    print(f"{'cached / uncached':<44} {t['cached_over_uncached']:>8.2f}")
    cal = result["calibration_setaside"]
    print(f"set-aside: accuracy {cal['accuracy']:.3f}, ECE {cal['ece']:.3f} "
          f"(uncalibrated {cal['ece_uncalibrated']:.3f}), "
          f"T {cal['temperature']:.2f}; fresh recordings ECE {fresh_ece:.3f}; LOO false alarms "
          f"{identifier.false_alarm_rate:.3f}")
    print(f"{'recordings':<44} {'n':>4} {'called unlike (p<=0.05)':>24} {'accuracy':>9}")
    for name, r in rows.items():
        acc = f"{r['accuracy']:.3f}" if "accuracy" in r else "-"
        print(f"{name:<44} {r['n']:>4} {r['flagged']:>24.3f} {acc:>9}")
    for rule, counts in outside_rules.items():
        print(f"  {rule} named as: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()

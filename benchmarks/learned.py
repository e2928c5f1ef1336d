"""Do learned summaries transfer better than the statistics? A DeepSets network over the raw recorded units and
the paper's per-layer-group samples with a group indicator (one vote per network), against the registry's
classifiers on the population statistics, on the same splits and next to the behavioural control.

    python benchmarks/learned.py --bank WORKSPACE/banks/quick-... --out benchmarks/results/learned-quick-cpu2.json

The recording is ``benchmarks/transfer.py``'s: activations at full observation (every recorded unit, chronic),
10 sessions over learning, no noise, the generic modality's unknown gains per animal, area and unit. The
statistics rows get the usual refit intervals (20 refits per left-out level); DeepSets fits take ~20 s each, so
its intervals are binomial over the tested networks only (no training-set variance: narrower than they should
be), which the table marks.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from functools import partial
from pathlib import Path
from typing import Any

HELDOUTS = ("none", "architecture", "nonlinearity")


def _list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bank", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--heldouts", default=",".join(HELDOUTS))
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--target", default="rule", choices=("rule", "family"))
    args = parser.parse_args()

    from rich.console import Console
    from rich.table import Table

    from advisor.application.planning import bank_limits
    from advisor.science.classifiers import make_classifier
    from advisor.science.controls import behaviour_features
    from advisor.science.evaluation import evaluate, heldout_groups
    from advisor.science.features import featurize
    from advisor.science.learned import DeepSetsClassifier, GroupVoteClassifier, raw_recording_array
    from advisor.science.protocol import DEFAULT_GAIN_SD, RecordingProtocol, virtual_recording
    from simulator.bank import load_bank

    bank = load_bank(args.bank)
    meta = bank.metadata.reset_index(drop=True)
    behaviour = behaviour_features(bank)
    heldouts = [h for h in _list(args.heldouts) if h == "none" or len(set(heldout_groups(meta, h))) >= 2]
    started = time.perf_counter()

    def protocol(statistics: str) -> RecordingProtocol:
        return RecordingProtocol(observable="activations", n_units=bank_limits(bank)["activations"],
                                 n_sessions=args.sessions, noise_model="none", gain_sd=DEFAULT_GAIN_SD,
                                 statistics=statistics)

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    inputs = {s: featurize(bank, protocol(s)).X for s in ("population", "both")}
    timings["featurize population+both"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    raw = raw_recording_array(virtual_recording(bank, protocol("population")))
    timings["raw recording"] = time.perf_counter() - t0
    n_groups = raw.shape[1]

    def group_vote(base: str, random_state: int | None = None, n_sessions: int | None = None) -> Any:
        return GroupVoteClassifier(make_classifier(base, random_state=random_state, n_sessions=n_sessions),
                                   n_groups=n_groups)

    def deepsets(random_state: int | None = None, n_sessions: int | None = None) -> Any:
        return DeepSetsClassifier(hidden=args.hidden, epochs=args.epochs, random_state=random_state)

    candidates: list[tuple[str, str, Any, Any, int]] = [  # (summary, classifier, X, factory, refits)
        ("population", "ridge", inputs["population"], "ridge", 20),
        ("population", "logreg", inputs["population"], "logreg", 20),
        ("population", "vote·logreg", inputs["population"], partial(group_vote, "logreg"), 20),
        ("both", "vote·logreg", inputs["both"], partial(group_vote, "logreg"), 20),
        ("raw units", "DeepSets", raw, deepsets, 0),
    ]
    rows: list[dict[str, Any]] = []
    for summary, name, X, factory, refits in candidates:
        for heldout in heldouts:
            t0 = time.perf_counter()
            result = evaluate(X, behaviour, meta, target=args.target, classifier=factory, heldout=heldout,
                              n_splits=4, seed=0, refits=refits, hyperparameters=False)
            behave = result.controls["behaviour"]
            per_level = None
            if heldout != "none":
                levels = sorted(set(heldout_groups(meta, heldout)))
                per_level = dict(zip(levels, result.scores.split_accuracies, strict=True))
            row = {"summary": summary, "classifier": name, "heldout": heldout, "accuracy": result.accuracy,
                   "ci": list(result.scores.ci), "ci_method": result.scores.ci_method, "refits": refits,
                   "per_level": per_level,
                   "behaviour": {"accuracy": behave.scores.accuracy, "ci": list(behave.scores.ci),
                                 "classifier": behave.classifier},
                   "beyond_behaviour": bool(result.scores.ci[0] > behave.scores.ci[1]),
                   "seconds": round(time.perf_counter() - t0, 1)}
            rows.append(row)
            print(f"{summary:20s} {name:20s} {heldout:13s} {row['accuracy']:.3f} [{row['ci'][0]:.2f}, "
                  f"{row['ci'][1]:.2f}] behaviour {behave.scores.accuracy:.3f} ({row['seconds']:.0f} s)", flush=True)

    table = Table(title=f"Learned summaries on {bank.path.name} ({len(meta)} networks, activations, full "
                        f"observation, unknown gains; target {args.target})")
    table.add_column("summary")
    table.add_column("classifier")
    for h in heldouts:
        table.add_column(h, justify="right")
    table.add_column("s / fit", justify="right")
    for summary, name, *_ in candidates:
        mine = [r for r in rows if (r["summary"], r["classifier"]) == (summary, name)]
        cells = [f"{r['accuracy']:.2f} [{r['ci'][0]:.2f}-{r['ci'][1]:.2f}]{'*' if r['beyond_behaviour'] else ''}"
                 + ("†" if r["refits"] < 2 else "") for r in mine]
        fits = sum(1 + (r["refits"] if r["heldout"] != "none" else 0) for r in mine) or 1
        table.add_row(summary, name, *cells, f"{sum(r['seconds'] for r in mine) / fits:.1f}")
    table.add_row("behaviour", "best of 2", *[
        f"{next(r for r in rows if r['heldout'] == h)['behaviour']['accuracy']:.2f}" for h in heldouts], "")
    console = Console(width=100)
    console.print(table)
    console.print("* lower CI bound above the behavioural control's upper bound; † binomial interval, no refits")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "benchmark": "learned", "bank": bank.path.name, "bank_hash": bank.hash, "n_networks": len(meta),
        "architectures": sorted(set(meta["architecture"].astype(str))), "sessions": args.sessions,
        "target": args.target, "gain_sd": list(DEFAULT_GAIN_SD), "deepsets": {"hidden": args.hidden,
                                                                             "epochs": args.epochs},
        "rows": rows, "timings_s": {k: round(v, 2) for k, v in timings.items()},
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version()},
        "elapsed_s": round(time.perf_counter() - started, 1),
    }, indent=1))


if __name__ == "__main__":
    main()

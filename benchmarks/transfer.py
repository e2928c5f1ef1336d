"""Does identification transfer to networks unlike those the classifier was trained on? Leave one architecture,
architecture family, nonlinearity or task out, for each statistic set x classifier x augmentation, next to the
behavioural control on the same splits.

    python benchmarks/transfer.py --bank WORKSPACE/banks/quick-... --out benchmarks/results/transfer-cpu2.json \
        [--classifiers ridge,svm] [--statistics marginal,population,both] [--augment 1,4] [--target rule]

The recording is the rig's (unknown gains per animal, area and unit: the generic modality's log SDs), at full
observation of activations (every recorded unit, 10 sessions over learning, no noise). ``none`` is repeated
stratified 4-fold cross-validation (corrected t interval); every held-out mode is one fit per left-out level,
tested on all of its networks, with refit intervals (``advisor.science.evaluation``). Augmentation trains on K virtual
recordings of every training network (other unit subsets, gains and noise draws) and tests on one.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

HELDOUTS = ("none", "architecture", "arch_family", "nonlinearity", "task")


def _list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bank", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--classifiers", default="ridge,svm")
    parser.add_argument("--statistics", default="marginal,population,both")
    parser.add_argument("--augment", default="1,4")
    parser.add_argument("--heldouts", default=",".join(HELDOUTS))
    parser.add_argument("--observable", default="activations")
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--target", default="rule", choices=("rule", "family"))
    parser.add_argument("--splits", type=int, default=8)
    parser.add_argument("--change", action="store_true",
                        help="also score each statistic set as its change since the first session (sessions 2..S)")
    args = parser.parse_args()

    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from advisor.application.planning import bank_limits
    from advisor.science.controls import behaviour_features
    from advisor.science.evaluation import evaluate, heldout_groups
    from advisor.science.features import augmented_features, featurize
    from advisor.science.protocol import DEFAULT_GAIN_SD, RecordingProtocol
    from simulator.bank import load_bank

    bank = load_bank(args.bank)
    meta = bank.metadata.reset_index(drop=True)
    behaviour = behaviour_features(bank)
    heldouts = [h for h in _list(args.heldouts)
                if h == "none" or len(set(heldout_groups(meta, h))) >= 2]
    augments = [int(a) for a in _list(args.augment)]
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    timings: dict[str, float] = {}
    for statistics in _list(args.statistics):
        protocol = RecordingProtocol(observable=args.observable, n_units=bank_limits(bank)[args.observable],
                                     n_sessions=args.sessions, noise_model="none", gain_sd=DEFAULT_GAIN_SD,
                                     statistics=statistics)
        t0 = time.perf_counter()
        X = featurize(bank, protocol).X
        timings[f"featurize {statistics}"] = time.perf_counter() - t0
        extra_all = augmented_features(bank, protocol, max(augments))
        variants = [(statistics, X, extra_all)]
        if args.change:  # every statistic relative to its value in the first session: X_t - X_0, t >= 1
            variants.append((f"{statistics}-change", (X - X[:, :1])[:, 1:],
                             [(a - a[:, :1])[:, 1:] for a in extra_all]))
        for statistics, X, extra_all in variants:
            for k in augments:
              extra = extra_all[: k - 1]
              for classifier in _list(args.classifiers):
                  for heldout in heldouts:
                      t0 = time.perf_counter()
                      result = evaluate(X, behaviour, meta, target=args.target, classifier=classifier,
                                        heldout=heldout, n_splits=args.splits, seed=0, augment=extra)
                      behave = result.controls["behaviour"]
                      per_level = None
                      if heldout != "none":
                          levels = sorted(set(heldout_groups(meta, heldout)))
                          per_level = dict(zip(levels, result.scores.split_accuracies, strict=True))
                      row = {"statistics": statistics, "augment": k, "classifier": classifier, "heldout": heldout,
                             "accuracy": result.accuracy, "ci": list(result.scores.ci),
                             "ci_method": result.scores.ci_method, "per_level": per_level,
                             "behaviour": {"accuracy": behave.scores.accuracy, "ci": list(behave.scores.ci),
                                           "classifier": behave.classifier},
                             "hyperparameters": {"accuracy": result.controls["hyperparameters"].scores.accuracy,
                                                 "ci": list(result.controls["hyperparameters"].scores.ci)},
                             "beyond_behaviour": bool(result.scores.ci[0] > behave.scores.ci[1]),
                             "seconds": round(time.perf_counter() - t0, 2)}
                      rows.append(row)
                      print(f"{statistics:10s} K={k} {classifier:6s} {heldout:13s} {row['accuracy']:.3f} "
                            f"[{row['ci'][0]:.2f}, {row['ci'][1]:.2f}] behaviour {behave.scores.accuracy:.3f} "
                            f"({row['seconds']:.1f} s)", flush=True)

    table = Table(title=f"Transfer on {bank.path.name} ({len(meta)} networks, {args.observable}, full "
                        f"observation, unknown gains; target {args.target})")
    for col in ("statistics", "K", "classifier", *heldouts):
        table.add_column(col, justify="left" if col in ("statistics", "classifier") else "right")
    keys = sorted({(r["statistics"], r["augment"], r["classifier"]) for r in rows},
                  key=lambda t: (_list(args.statistics).index(t[0].removesuffix("-change")), t[0], t[1], t[2]))
    for s, k, c in keys:
        cells = []
        for h in heldouts:
            r = next(r for r in rows if (r["statistics"], r["augment"], r["classifier"], r["heldout"]) == (s, k, c, h))
            cells.append(f"{r['accuracy']:.2f}{'*' if r['beyond_behaviour'] else ''}")
        table.add_row(s, str(k), c, *cells)
    controls = [f"{next(r for r in rows if r['heldout'] == h)['behaviour']['accuracy']:.2f}" for h in heldouts]
    table.add_row("behaviour", "", "best", *controls)
    console = Console(width=100)
    console.print(table)
    console.print("* lower CI bound above the behavioural control's upper bound")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "benchmark": "transfer", "bank": bank.path.name, "bank_hash": bank.hash, "n_networks": len(meta),
        "architectures": sorted(set(meta["architecture"].astype(str))), "observable": args.observable,
        "sessions": args.sessions, "target": args.target, "gain_sd": list(DEFAULT_GAIN_SD), "rows": rows,
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
        "machine": {"cpus": __import__("os").cpu_count(), "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version()},
        "elapsed_s": round(time.perf_counter() - started, 1),
        "chance": float(max(np.mean(meta[args.target].astype(str) == v)
                            for v in set(meta[args.target].astype(str)))),
    }, indent=1))


if __name__ == "__main__":
    main()

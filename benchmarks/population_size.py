"""How does identification depend on the size of the simulated population?

For one bank, at full observation (every recorded unit or synapse, 10 sessions, no noise):

1. accuracy of each observable with ten 75/25 splits and with the held-out architecture family, next to the
   learning-curve control;
2. the learning curve of the classifier: accuracy on the same test networks when it is trained on 25%, 50%,
   75% and 100% of each split's training networks (stratified subsamples). If it is still rising at 100%, more
   simulated networks would identify the rule better.

    python benchmarks/population_size.py --bank WORKSPACE/banks/quick-... --out FILE.json [--classifier svm]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

OBSERVABLES = ("activations", "activity_change", "weights")
FRACTIONS = (0.25, 0.5, 0.75, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bank", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--classifier", default="svm")
    parser.add_argument("--splits", type=int, default=10)
    args = parser.parse_args()

    from advisor.application.planning import bank_limits
    from advisor.science.classifiers import make_classifier
    from advisor.science.evaluation import bootstrap_ci, make_splits, score
    from advisor.science.features import featurize
    from advisor.science.protocol import RecordingProtocol
    from simulator.bank import load_bank

    start = time.perf_counter()
    bank = load_bank(args.bank)
    meta = bank.metadata
    y = meta["rule"].astype(str).to_numpy()
    labels = sorted(set(y))
    families = meta["arch_family"].astype(str).to_numpy()
    limits = bank_limits(bank)
    out: dict = {"bank": str(args.bank), "n_networks": len(y), "classifier": args.classifier, "full": {},
                 "learning_curve": {}}
    for obs in OBSERVABLES:
        features = featurize(bank, RecordingProtocol(observable=obs, n_units=limits[obs], n_sessions=10,
                                                     noise_model="none"))
        row = {}
        for mode, groups in (("none", None), ("architecture", families)):
            splits = make_splits(y, mode, groups, args.splits, 0)
            s = score(features.X, y, splits, labels, classifier=args.classifier, seed=0)
            c = score(features.curve, y, splits, labels, classifier=args.classifier, seed=0)
            row[mode] = {"accuracy": s.accuracy, "ci": list(s.ci), "control": c.accuracy, "control_ci": list(c.ci)}
        out["full"][obs] = row
        rng = np.random.default_rng(0)
        curve = []
        for fraction in FRACTIONS:
            hits, tested = np.zeros(len(y)), np.zeros(len(y))
            per_rule = []
            for i, (train, test) in enumerate(make_splits(y, "none", None, args.splits, 0)):
                keep = np.concatenate([rng.permutation(train[y[train] == c])[: max(2, round(fraction * np.sum(
                    y[train] == c)))] for c in labels])
                per_rule.append(len(keep) / len(labels))
                model = make_classifier(args.classifier, random_state=i).fit(features.X[keep], y[keep])
                hits[test] += model.predict(features.X[test]) == y[test]
                tested[test] += 1
            seen = tested > 0
            acc = float(hits[seen].sum() / tested[seen].sum())
            curve.append({"train_networks_per_rule": float(np.mean(per_rule)), "accuracy": acc,
                          "ci": list(bootstrap_ci(hits[seen] / tested[seen], 0))})
        out["learning_curve"][obs] = curve
    out["seconds"] = round(time.perf_counter() - start, 1)

    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"Full observation, {len(y)} networks, {args.classifier}, chance {1 / len(labels):.2f}")
    for col in ("observable", "splits: accuracy (95% CI)", "control", "held-out arch. family", "control"):
        table.add_column(col, justify="right" if col != "observable" else "left")
    for obs, row in out["full"].items():
        a, h = row["none"], row["architecture"]
        table.add_row(obs, f"{a['accuracy']:.3f} ({a['ci'][0]:.2f}-{a['ci'][1]:.2f})", f"{a['control']:.3f}",
                      f"{h['accuracy']:.3f} ({h['ci'][0]:.2f}-{h['ci'][1]:.2f})", f"{h['control']:.3f}")
    console.print(table)
    lc = Table(title="Accuracy vs training networks per rule (same test networks)")
    lc.add_column("observable")
    for point in out["learning_curve"][OBSERVABLES[0]]:
        lc.add_column(f"{point['train_networks_per_rule']:.0f}", justify="right")
    for obs, points in out["learning_curve"].items():
        lc.add_row(obs, *(f"{p['accuracy']:.3f}" for p in points))
    console.print(lc)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()

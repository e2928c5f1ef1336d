"""Which architectures does identification transfer to? Leave one architecture out, train on the others (all of
them, only the other family's, only the same family's), and compare with the learning-curve control.

Run it on a bank with several architectures per family, e.g. the `architectures` preset (ReLU and tanh MLPs,
two ReLU convnets). Full observation (every recorded unit, 10 sessions, no noise), linear SVM.

    python benchmarks/heldout_architectures.py --bank WORKSPACE/banks/architectures-... --out FILE.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bank", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--classifier", default="svm")
    args = parser.parse_args()

    from advisor.application.planning import bank_limits
    from advisor.science.classifiers import make_classifier
    from advisor.science.evaluation import bootstrap_ci
    from advisor.science.features import featurize
    from advisor.science.protocol import RecordingProtocol
    from simulator.bank import load_bank
    from simulator.networks import ARCHITECTURES

    bank = load_bank(args.bank)
    meta = bank.metadata
    y = meta["rule"].astype(str).to_numpy()
    arch = meta["architecture"].astype(str).to_numpy()
    family = meta["arch_family"].astype(str).to_numpy()
    nonlinearity = np.array([ARCHITECTURES.get(a).activation for a in arch])
    rows = []
    for obs in ("activations", "activity_change"):
        features = featurize(bank, RecordingProtocol(observable=obs, n_units=bank_limits(bank)[obs], n_sessions=10,
                                                     noise_model="none"))
        for held in sorted(set(arch)):
            test = arch == held
            seen: list[np.ndarray] = []
            for train_on, train in (("all other architectures", ~test),
                                    ("the other family only", family != family[test][0]),
                                    ("the same family only", (family == family[test][0]) & ~test),
                                    ("the same nonlinearity only", (nonlinearity == nonlinearity[test][0]) & ~test)):
                # a training set needs every rule, and one the same as an earlier row's adds nothing
                if len(set(y[train])) < len(set(y)) or any(np.array_equal(train, s) for s in seen):
                    continue
                seen.append(train)
                model = make_classifier(args.classifier, random_state=0).fit(features.X[train], y[train])
                control = make_classifier(args.classifier, random_state=0).fit(features.curve[train], y[train])
                correct = (model.predict(features.X[test]) == y[test]).astype(float)
                rows.append({"observable": obs, "held_out": held, "train_on": train_on,
                             "train_networks": int(train.sum()), "test_networks": int(test.sum()),
                             "accuracy": float(correct.mean()), "ci": list(bootstrap_ci(correct, 0)),
                             "control": float(np.mean(control.predict(features.curve[test]) == y[test]))})

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Held-out architectures ({len(y)} networks, {args.classifier}, chance "
                        f"{1 / len(set(y)):.2f})")
    for col in ("observable", "held out", "trained on", "accuracy (95% CI)", "control"):
        table.add_column(col, justify="right" if col in ("accuracy (95% CI)", "control") else "left")
    for r in rows:
        table.add_row(r["observable"], r["held_out"], f"{r['train_on']} ({r['train_networks']})",
                      f"{r['accuracy']:.2f} ({r['ci'][0]:.2f}-{r['ci'][1]:.2f})", f"{r['control']:.2f}")
    Console(width=140).print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"bank": str(args.bank), "classifier": args.classifier, "rows": rows},
                                   indent=2) + "\n")


if __name__ == "__main__":
    main()

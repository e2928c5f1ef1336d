"""What identification is left once the recording keeps only what a rig keeps? Per observable, at full
observation and at the README's earlier recommended protocol, with and without unknown gains, next to the
behavioural and hyperparameter controls, and trained on one architecture family and tested on the other.

    python benchmarks/identification.py --bank WORKSPACE/banks/quick-... --out FILE.json [--classifier svm]

Repeated stratified 4-fold cross-validation over networks (3 repeats), corrected resampled t-intervals; the
held-out-architecture rows are one fit per family with refit intervals (``advisor.science.evaluation``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from advisor.science.protocol import DEFAULT_GAIN_SD

OBSERVABLES = ("activations", "activity_change", "weights")
OLD_README_PROTOCOL = {"observable": "activations", "n_units": 384, "layers": ("early", "deep"), "n_sessions": 3,
                       "noise_model": "gaussian", "noise": 0.236}
"""The protocol the README recommended before issue 9 (384 units, early and deep layers, 3 sessions, noise 0.24)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bank", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--classifier", default="svm")
    parser.add_argument("--splits", type=int, default=10)
    args = parser.parse_args()

    from rich.console import Console
    from rich.table import Table

    from advisor.application.planning import bank_limits
    from advisor.science.controls import behaviour_features
    from advisor.science.evaluation import evaluate
    from advisor.science.features import featurize
    from advisor.science.protocol import RecordingProtocol
    from simulator.bank import load_bank

    bank = load_bank(args.bank)
    meta = bank.metadata
    limits = bank_limits(bank)
    behaviour = behaviour_features(bank)
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    cases: list[tuple[str, dict[str, Any]]] = []
    for obs in OBSERVABLES:
        full = {"observable": obs, "n_units": limits[obs], "n_sessions": 10, "noise_model": "none"}
        cases += [(f"{obs}, full observation", {**full, "gain_sd": (0.0, 0.0, 0.0)}),
                  (f"{obs}, full observation, unknown gains", {**full, "gain_sd": DEFAULT_GAIN_SD})]
    cases += [("README's earlier protocol (384 units, E+D, 3 sessions, noise 0.24)",
               {**OLD_README_PROTOCOL, "gain_sd": (0.0, 0.0, 0.0)}),
              ("the same, unknown gains", {**OLD_README_PROTOCOL, "gain_sd": DEFAULT_GAIN_SD})]
    for name, params in cases:
        X = featurize(bank, RecordingProtocol(**params)).X
        row: dict[str, Any] = {"case": name, "protocol": {k: list(v) if isinstance(v, tuple) else v
                                                          for k, v in params.items()}}
        for heldout in ("none", "architecture"):
            result = evaluate(X, behaviour, meta, classifier=args.classifier, heldout=heldout,
                              n_splits=args.splits, seed=0)
            row[heldout] = {"accuracy": result.accuracy, "ci": list(result.scores.ci),
                            "controls": {k: c.to_dict() for k, c in result.controls.items()},
                            "beyond_controls": result.beyond_controls}
        rows.append(row)
        print(f"{name}: {row['none']['accuracy']:.3f} (held-out architecture {row['architecture']['accuracy']:.3f})",
              flush=True)

    def cell(entry: dict[str, Any]) -> str:
        return f"{entry['accuracy']:.2f} ({entry['ci'][0]:.2f}-{entry['ci'][1]:.2f})"

    table = Table(title=f"Identification on {bank.path.name} ({len(meta)} networks, {args.classifier})")
    for col in ("case", "accuracy", "behaviour", "hyperp.", "held-out arch."):
        table.add_column(col, justify="left" if col == "case" else "right")
    for r in rows:
        c = r["none"]["controls"]
        table.add_row(r["case"], cell(r["none"]), cell(c["behaviour"]), cell(c["hyperparameters"]),
                      f"{cell(r['architecture'])} vs {r['architecture']['controls']['behaviour']['accuracy']:.2f}")
    Console(width=100).print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"bank": str(args.bank), "hash": bank.hash, "classifier": args.classifier,
                                    "splits": args.splits, "seconds": round(time.perf_counter() - started, 1),
                                    "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

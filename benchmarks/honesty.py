"""Is a plan's reported confidence honest? Check it on a population nothing was chosen on.

For the README's question and two others, run ``advisor plan``'s library path on a bank, then take the
protocol it chose (the recommendation, or the search's candidate when the set-aside test failed, or the most
accurate protocol when nothing was feasible) and the classifier fitted exactly as the reported number was (on
the plan's search networks), and test it on every network of a bank built from the same preset with a fresh
seed (``advisor simulate --seed N``): new initialisations, data orders, hyperparameter draws and recorded units.
The fresh-seed accuracy must fall inside the reported (set-aside) 95% CI. The table also shows the search
estimate, which the set-aside number replaces, and a cross-validated accuracy within the fresh bank.

    python benchmarks/honesty.py --bank WORKSPACE/banks/quick-... --fresh-bank WORKSPACE/banks/quick-...-seed1 \\
        --out benchmarks/results/honesty-cpu2.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

QUESTIONS = (
    {"name": "README: activations, ≤ 500 units", "modality": "generic", "observable": "activations",
     "max_units": 500},
    {"name": "two-photon imaging", "modality": "two_photon", "observable": None, "max_units": None},
    {"name": "activity changes, ≤ 100 units", "modality": "generic", "observable": "activity_change",
     "max_units": 100},
)


def _fit_on_search(bank: Any, protocol: Any, question: Any) -> tuple[Any, list[str]]:
    """The classifier fitted as the plan's set-aside number was: on the search networks, same seed."""
    from advisor.application.search import setaside_partition
    from advisor.science.classifiers import make_classifier
    from advisor.science.features import featurize

    meta = bank.metadata.reset_index(drop=True)
    partition = setaside_partition(meta, question.rules, question.target, question.setaside, question.seed)
    X = featurize(bank, protocol).X
    y = meta[question.target].astype(str).to_numpy()
    est = make_classifier(question.classifier, random_state=question.seed, n_sessions=X.shape[1])
    est.fit(X[partition.search], y[partition.search])
    return est, sorted(set(y[partition.members]))


def check(bank: Any, fresh: Any, spec: dict[str, Any], trials: int, seed: int) -> dict[str, Any]:
    from advisor.application.planning import make_question, plan
    from advisor.application.search import TrialResult
    from advisor.science.cost import load_modality
    from advisor.science.evaluation import make_splits, score, wilson_interval
    from advisor.science.features import featurize

    modality = load_modality(spec["modality"])
    question = make_question(bank, modality, observable=spec["observable"], max_units=spec["max_units"],
                             max_sessions=None, target_accuracy=0.75, rules=None, family=False, heldout="none",
                             classifier="ridge", n_trials=trials, n_splits=10, seed=seed)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        doc = plan(bank, question, modality, storage=f"journal:{tmp}/journal.log", study_name="honesty",
                   curves=False)
    seconds = time.perf_counter() - started
    chosen = doc["recommendation"] or doc["candidate"] or doc["best"]
    trial = TrialResult.from_dict({k: v for k, v in chosen.items()
                                   if k in TrialResult.__dataclass_fields__})
    protocol = trial.protocol(question.seed)
    est, labels = _fit_on_search(bank, protocol, question)
    fresh_meta = fresh.metadata.reset_index(drop=True)
    keep = fresh_meta["rule"].astype(str).isin(question.rules).to_numpy()
    y_fresh = fresh_meta[question.target].astype(str).to_numpy()[keep]
    X_fresh = featurize(fresh, protocol).X[keep]
    correct = est.predict(X_fresh) == y_fresh
    accuracy = float(correct.mean())
    within = score(X_fresh, y_fresh, make_splits(y_fresh, "none", None, 10, seed), labels,
                   classifier=question.classifier, seed=seed)
    reported = doc["setaside"]
    return {
        "question": spec["name"], "modality": spec["modality"], "feasible": doc["feasible"],
        "verdict": doc["verdict"], "protocol": trial.describe(), "cost": trial.cost,
        "search": {"accuracy": chosen["accuracy"], "ci": chosen["ci"]},
        "setaside": {k: reported[k] for k in ("accuracy", "ci", "n_networks", "n_train")},
        "controls": doc["controls"],
        "fresh_seed": {"accuracy": accuracy, "ci": list(wilson_interval(accuracy, int(keep.sum()))),
                       "n_networks": int(keep.sum())},
        "fresh_seed_within_cv": {"accuracy": within.accuracy, "ci": list(within.ci)},
        "inside_reported_ci": bool(reported["ci"][0] <= accuracy <= reported["ci"][1]),
        "search_ci_covers_fresh": bool(chosen["ci"][0] <= accuracy <= chosen["ci"][1]),
        "plan_seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bank", type=Path, required=True, help="the bank the plans run on")
    parser.add_argument("--fresh-bank", type=Path, required=True, help="the same preset built with another seed")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from rich.console import Console
    from rich.table import Table

    from simulator.bank import load_bank

    bank, fresh = load_bank(args.bank), load_bank(args.fresh_bank)
    if bank.hash == fresh.hash:
        raise SystemExit("--fresh-bank must be built with another seed than --bank (same hash)")
    rows = []
    for spec in QUESTIONS:
        print(f"planning: {spec['name']} ({args.trials} trials)", flush=True)
        rows.append(check(bank, fresh, spec, args.trials, args.seed))

    def cell(entry: dict[str, Any]) -> str:
        return f"{entry['accuracy']:.2f} ({entry['ci'][0]:.2f}-{entry['ci'][1]:.2f})"

    table = Table(title=f"Reported confidence vs a fresh-seed population ({fresh.metadata.shape[0]} networks)")
    for col in ("question", "search est.", "set-aside", "fresh seed", "inside", "fresh CV"):
        table.add_column(col, justify="left" if col == "question" else "right")
    for r in rows:
        table.add_row(r["question"], cell(r["search"]), cell(r["setaside"]), cell(r["fresh_seed"]),
                      "yes" if r["inside_reported_ci"] else "NO", cell(r["fresh_seed_within_cv"]))
    Console(width=100).print(table)
    for r in rows:
        print(f"{r['question']}: {r['verdict']}; {r['protocol']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"bank": str(args.bank), "bank_hash": bank.hash, "fresh_bank": str(args.fresh_bank),
                                    "fresh_hash": fresh.hash, "trials": args.trials, "rows": rows},
                                   indent=2, default=float) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

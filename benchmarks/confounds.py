"""Hyperparameter giveaways: how well do the hyperparameters ALONE identify a network's learning rule?

A population's hyperparameters (log learning rate, batch size, init scale) are drawn per rule by
:func:`simulator.config.sample_population` (no training needed) or read from a built bank's metadata
(``--bank PATH``). Two classifiers, a random forest and a logistic regression on standardized features, are
scored by stratified 5-fold cross-validation over networks, so every network is tested exactly once; the 95%
interval is a bootstrap over networks of the per-network correctness. Scored overall (every rule of the
population) and within each group of rules that share an optimizer (where the learning rate is drawn from one
range, so the accuracy must be at chance, 1/n_rules, within its interval).

Two feature sets: ``lr`` (log learning rate only) and ``all`` (log lr, batch size, init scale).

    .venv/bin/python benchmarks/confounds.py --preset quick --preset standard --preset families \\
        --out benchmarks/results/confounds-cpu2.json
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from simulator.config import sample_population
from simulator.presets import load_preset
from simulator.rules import RULES

FEATURE_SETS = {"lr": ("log_lr",), "all": ("log_lr", "batch_size", "init_scale")}
N_FOLDS = 5
N_BOOT = 2000


def _bootstrap_ci(correct: np.ndarray, seed: int) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean over networks."""
    rng = np.random.default_rng(seed)
    means = correct[rng.integers(0, len(correct), (N_BOOT, len(correct)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def _classifiers(seed: int) -> dict[str, Any]:
    return {
        "rf": RandomForestClassifier(n_estimators=200, min_samples_leaf=3, random_state=seed, n_jobs=1),
        "linear": make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
    }


def score(rows: Sequence[dict[str, Any]], features: Sequence[str], seed: int) -> dict[str, Any]:
    """Stratified 5-fold CV accuracy (every network tested once) and its bootstrap CI, per classifier."""
    x = np.array([[float(r[f]) for f in features] for r in rows])
    y = np.array([r["rule"] for r in rows])
    n_folds = min(N_FOLDS, int(min(np.unique(y, return_counts=True)[1])))
    out: dict[str, Any] = {}
    for name in _classifiers(seed):
        correct = np.zeros(len(y))
        folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        for train, test in folds.split(x, y):
            clf = _classifiers(seed)[name].fit(x[train], y[train])
            correct[test] = clf.predict(x[test]) == y[test]
        lo, hi = _bootstrap_ci(correct, seed)
        out[name] = {"accuracy": float(correct.mean()), "ci95": [lo, hi]}
    return out


def population_rows(preset: str | None, bank: Path | None) -> tuple[str, list[dict[str, Any]]]:
    """(label, one row per network with rule, optimizer, log_lr, batch_size, init_scale)."""
    if bank is not None:
        meta = json.loads((bank / "metadata.json").read_text(encoding="utf-8"))
        raw = [
            {"rule": m["rule"], "lr": m["lr"], "batch_size": m["batch_size"], "init_scale": m["init_scale"]}
            for m in meta
        ]
        label = bank.name
    else:
        assert preset is not None
        config = load_preset(preset)
        raw = [
            {"rule": s.rule, "lr": s.lr, "batch_size": s.batch_size, "init_scale": s.init_scale}
            for s in sample_population(config)
        ]
        label = preset
    rows = [{**r, "log_lr": math.log(r["lr"]), "optimizer": RULES.get(r["rule"]).optimizer} for r in raw]
    return label, rows


def analyse(label: str, rows: Sequence[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """One result per (group, feature set): overall, then each optimizer shared by two or more rules."""
    groups: list[tuple[str, list[dict[str, Any]]]] = [("all rules", list(rows))]
    for opt in sorted({r["optimizer"] for r in rows}):
        members = [r for r in rows if r["optimizer"] == opt]
        if len({r["rule"] for r in members}) >= 2:
            groups.append((f"optimizer {opt}", members))
    results = []
    for group, members in groups:
        rules = sorted({r["rule"] for r in members})
        for fs, features in FEATURE_SETS.items():
            results.append(
                {
                    "population": label,
                    "group": group,
                    "rules": rules,
                    "n_networks": len(members),
                    "chance": 1.0 / len(rules),
                    "features": fs,
                    **score(members, features, seed),
                }
            )
    return results


def _fmt(r: dict[str, Any]) -> str:
    lo, hi = r["ci95"]
    return f"{r['accuracy']:.2f} [{lo:.2f}, {hi:.2f}]"


def print_table(results: Sequence[dict[str, Any]]) -> None:
    """At most 100 columns."""
    print(
        f"{'population':<10} {'group':<18} {'rules':>5} {'n':>5} {'chance':>6} {'feat':<4} "
        f"{'RF acc [95% CI]':<19} {'linear acc [95% CI]':<19}"
    )
    for r in results:
        print(
            f"{r['population'][:10]:<10} {r['group'][:18]:<18} {len(r['rules']):>5} {r['n_networks']:>5} "
            f"{r['chance']:>6.2f} {r['features']:<4} {_fmt(r['rf']):<19} {_fmt(r['linear']):<19}"
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", action="append", default=[], help="a preset name or path (repeatable)")
    parser.add_argument("--bank", type=Path, action="append", default=[], help="a built bank's directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if not args.preset and not args.bank:
        args.preset = ["quick"]
    results: list[dict[str, Any]] = []
    for preset in args.preset:
        results += analyse(*population_rows(preset, None), args.seed)
    for bank in args.bank:
        results += analyse(*population_rows(None, bank), args.seed)
    print_table(results)
    if args.out is not None:
        doc = {"n_folds": N_FOLDS, "n_boot": N_BOOT, "feature_sets": FEATURE_SETS, "results": results}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

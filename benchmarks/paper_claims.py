"""The paper's findings, re-tested on our own simulations (Nayebi et al. 2020), with CIs and the control.

1. classifiers × observables (weights, activations, activity changes, all) at full observation;
2. accuracy vs. units and vs. noise, per observable (robustness to undersampling and noise);
3. accuracy vs. sessions, and with early-only windows (limited trajectory access);
4. held-out architecture and held-out task;
5. the strongest control next to each: the whole learning curve (behaviour) or the hyperparameters alone, each
   the better of logistic regression and a random forest.

Recordings follow RecordingProtocol's defaults for what a rig loses: unknown gains per animal, area and unit
(lognormal SDs 0.5, 0.3, 0.5).

    python benchmarks/paper_claims.py --out DIR [--preset quick | --bank PATH] [--classifier svm] [--splits 10]

Writes DIR/paper_claims.json and PNG figures, and prints a table.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from advisor.science.controls import behaviour_features
from advisor.science.evaluation import ControlScores, beyond, evaluate, strongest
from advisor.science.features import featurize
from advisor.science.protocol import RecordingProtocol

OBSERVABLES = ("weights", "activations", "activity_change")
_CONTROLS: dict[tuple[Any, ...], dict[str, ControlScores]] = {}


def run(bank: Any, protocol: RecordingProtocol | list[RecordingProtocol], classifier: str, heldout: str,
        splits: int, seed: int) -> dict[str, Any]:
    protocols = protocol if isinstance(protocol, list) else [protocol]
    feats = [featurize(bank, p) for p in protocols]
    X = np.concatenate([f.X for f in feats], axis=-1)
    key = (str(bank.path), heldout, splits, seed)  # the controls do not depend on the protocol: score them once
    first = key not in _CONTROLS
    result = evaluate(X, behaviour_features(bank) if first else None, bank.metadata, classifier=classifier,
                      heldout=heldout, n_splits=splits, seed=seed, hyperparameters=first)
    if first:
        _CONTROLS[key] = result.controls
    controls = _CONTROLS[key]
    top = strongest(controls)
    assert top is not None
    return {"accuracy": result.accuracy, "ci": list(result.scores.ci), "control": top.scores.accuracy,
            "control_ci": list(top.scores.ci), "control_name": top.name, "control_classifier": top.classifier,
            "controls": {k: c.to_dict() for k, c in controls.items()}, "chance": result.chance,
            "beyond_control": bool(beyond(result.scores, controls))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--bank", type=Path)
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--classifier", default="svm")
    parser.add_argument("--splits", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from simulator import load_bank, load_preset, simulate

    console = Console(stderr=True)
    bank = load_bank(args.bank) if args.bank else \
        simulate(load_preset(args.preset), Path(tempfile.mkdtemp()) / "banks").bank
    max_units = bank["activations"].shape[3] * 3
    n_t = bank["activations"].shape[1]
    full_sessions = min(21, n_t)
    clf, splits, seed = args.classifier, args.splits, args.seed
    start = time.perf_counter()
    out: dict[str, Any] = {"bank": str(bank.path), "hash": bank.hash, "n_networks": bank.n_networks,
                           "classifier": clf, "splits": splits, "seed": seed}

    def full(obs: str, **kw: Any) -> RecordingProtocol:
        base: dict[str, Any] = dict(observable=obs, n_units=max_units, n_sessions=full_sessions, noise_model="none",
                                    seed=seed)
        base.update(kw)
        return RecordingProtocol(**base)

    # 1. classifiers x observables at full observation
    claim1: dict[str, dict[str, Any]] = {}
    for c in ("svm", "ridge", "rf", "gbt", "conv1d"):
        for obs in (*OBSERVABLES, "all"):
            p: RecordingProtocol | list[RecordingProtocol] = [full(o) for o in OBSERVABLES] if obs == "all" \
                else full(obs)
            claim1[f"{c}/{obs}"] = run(bank, p, c, "none", splits, seed)
            console.print(f"1. {c} {obs}: {claim1[f'{c}/{obs}']['accuracy']:.3f}")
    out["classifiers_x_observables"] = claim1

    # 2. units and noise
    units = [u for u in (6, 24, 60, 150, 300, max_units) if u <= max_units]
    noises = [0.0, 0.25, 0.5, 1.0, 2.0]
    out["units"] = {obs: {u: run(bank, full(obs, n_units=u, noise_model="gaussian", noise=0.0), clf, "none",
                                 splits, seed) for u in units} for obs in OBSERVABLES}
    console.print("2. units done")
    out["noise"] = {obs: {z: run(bank, full(obs, n_units=min(300, max_units), noise_model="gaussian", noise=z), clf,
                                 "none", splits, seed) for z in noises} for obs in OBSERVABLES}
    console.print("2. noise done")

    # 3. sessions and early windows
    sessions = [s for s in (2, 3, 5, 10, full_sessions) if s <= n_t]
    out["sessions"] = {obs: {s: run(bank, full(obs, n_sessions=s), clf, "none", splits, seed) for s in sessions}
                       for obs in OBSERVABLES}
    windows = [0.1, 0.3, 0.6, 1.0]
    out["windows"] = {obs: {w: run(bank, full(obs, n_sessions=min(5, int(w * (n_t - 1)) + 1), window=(0.0, w)),
                                   clf, "none", splits, seed) for w in windows} for obs in OBSERVABLES}
    console.print("3. sessions and windows done")

    # 4. held-out architecture and task
    out["heldout"] = {}
    for mode, column in (("architecture", "arch_family"), ("task", "task")):
        if bank.metadata[column].nunique() >= 2:
            out["heldout"][mode] = {obs: run(bank, full(obs), clf, mode, splits, seed) for obs in OBSERVABLES}
    console.print("4. held-out done")
    out["seconds"] = time.perf_counter() - start

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "paper_claims.json").write_text(json.dumps(out, indent=2, default=str))
    figures(out, args.out, units, noises, sessions, windows)
    print_table(out)


def figures(out: dict[str, Any], folder: Path, units: list[int], noises: list[float], sessions: list[int],
            windows: list[float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"weights": "tab:orange", "activations": "tab:blue", "activity_change": "tab:green"}
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8), constrained_layout=True)
    for ax, key, xs, label, logx in (
        (axes[0], "units", units, "units recorded", True),
        (axes[1], "noise", noises, "Gaussian noise (SD / spread)", False),
        (axes[2], "sessions", sessions, "sessions over learning", False),
        (axes[3], "windows", windows, "sessions within the first fraction of learning", False),
    ):
        for obs, color in colors.items():
            rows = [out[key][obs][x] for x in xs]
            acc = np.array([r["accuracy"] for r in rows])
            lo = np.array([r["ci"][0] for r in rows])
            hi = np.array([r["ci"][1] for r in rows])
            ax.plot(xs, acc, "o-", color=color, label=obs)
            ax.fill_between(xs, lo, hi, color=color, alpha=0.15)
        ctl = np.array([out[key]["activations"][x]["control"] for x in xs])
        ax.plot(xs, ctl, "k--", label="strongest control")
        ax.axhline(out[key]["activations"][xs[0]]["chance"], color="grey", lw=0.8, ls=":", label="chance")
        if logx:
            ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylim(0, 1)
        ax.set_ylabel("accuracy (95% CI)")
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"Identifying the learning rule ({out['n_networks']} networks, {out['classifier']}, "
                 f"held-out networks)")
    fig.savefig(folder / "curves.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 3.8), constrained_layout=True)
    keys = list(out["classifiers_x_observables"])
    acc = [out["classifiers_x_observables"][k]["accuracy"] for k in keys]
    err = np.array([[a - out["classifiers_x_observables"][k]["ci"][0], out["classifiers_x_observables"][k]["ci"][1] - a]
                    for k, a in zip(keys, acc, strict=True)]).T
    ax.bar(range(len(keys)), acc, yerr=err, color=["tab:orange", "tab:blue", "tab:green", "tab:purple"] * 4)
    ax.axhline(out["classifiers_x_observables"][keys[0]]["control"], color="k", ls="--", label="control (svm)")
    ax.set_xticks(range(len(keys)), keys, rotation=60, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy (95% CI)")
    ax.legend(fontsize=8)
    ax.set_title("Classifiers × observables, full observation")
    fig.savefig(folder / "classifiers.png", dpi=110)
    plt.close(fig)


def print_table(out: dict[str, Any]) -> None:
    table = Table(title="Paper claims on our simulations (accuracy [95% CI] · control)")
    table.add_column("claim")
    table.add_column("setting")
    table.add_column("accuracy", justify="right")
    table.add_column("control", justify="right")
    table.add_column("beyond control", justify="center")

    def row(claim: str, setting: str, r: dict[str, Any]) -> None:
        table.add_row(claim, setting, f"{r['accuracy']:.2f} [{r['ci'][0]:.2f}, {r['ci'][1]:.2f}]",
                      f"{r['control']:.2f}", "yes" if r["beyond_control"] else "no")

    for k, r in out["classifiers_x_observables"].items():
        row("1 full observation", k, r)
    for key, claim in (("units", "2 units"), ("noise", "2 noise"), ("sessions", "3 sessions"), ("windows", "3 window")):
        for obs, rows in out[key].items():
            for x, r in rows.items():
                row(claim, f"{obs} {x}", r)
    for mode, rows in out["heldout"].items():
        for obs, r in rows.items():
            row(f"4 held-out {mode}", obs, r)
    Console(width=140).print(table)


if __name__ == "__main__":
    main()

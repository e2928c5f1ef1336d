"""A plan from question to document: set-aside networks, search, re-check, controls, sensitivity curves.

:func:`make_question` turns the user's bounds, the bank and a modality into a
:class:`advisor.application.search.Question`
(every bound checked against what the bank recorded and what the modality can do, one-line errors otherwise).
:func:`plan` sets a stratified share of the networks aside, searches on the rest (each trial's estimate and CI
from repeated 4-fold cross-validation, feasible only where the CI lower bound reaches the target and clears the
strongest control's upper bound), re-checks the cheapest feasible protocol with fresh seeds on the same search
networks, and then tests that one candidate once on the set-aside networks: one fit on the search networks,
the controls likewise. The plan is feasible only if the set-aside interval reaches the target and clears the
set-aside controls; the report gives both the search estimate and the untouched one. Then importances, the
held-out-architecture score and accuracy against units / sessions / noise for every observable. The result is
one JSON-able document (the schema :mod:`advisor.application.reports` renders and MLflow stores).
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from typing import TYPE_CHECKING, Any, overload

import numpy as np

from advisor.application.documents import Document, Entry
from advisor.application.search import (
    LAYER_SUBSETS,
    MIN_SESSIONS,
    MIN_UNITS,
    Question,
    Scorer,
    TrialResult,
    design_cells,
    make_scorer,
    pareto_front,
    recommend,
    run_study,
    setaside_partition,
    verify,
)
from advisor.errors import AdvisorError
from advisor.science.controls import behaviour_features, controls_document, hyperparameter_features
from advisor.science.evaluation import (
    FOLDS,
    HELDOUT_NAMES,
    beyond,
    control_scores,
    fixed_partition_splits,
    heldout_groups,
    score,
    strongest,
)
from advisor.science.protocol import GROUPS, STATISTIC_SETS, RecordingProtocol

if TYPE_CHECKING:
    from advisor.science.cost import Modality
    from simulator.bank import TrajectoryBank

VERIFY_SEEDS = 3
UNIT_GRID = (5, 10, 25, 50, 100, 200, 400, 1000)
SESSION_GRID = (2, 3, 5, 8, 13, 21, 41)
REPEAT_GRID = (1, 2, 4, 8, 16, 32, 64)
TOP = 10


def bank_limits(bank: TrajectoryBank) -> dict[str, int]:
    """The most units (synapses for weights) per network the bank recorded, per observable."""
    return {
        "weights": int(bank["weights"].shape[3]) * len(GROUPS),
        "activations": int(bank["activations"].shape[3]) * len(GROUPS),
        "activity_change": int(bank["activity_change"].shape[3]) * len(GROUPS),
    }


def make_question(
    bank: TrajectoryBank, modality: Modality, *, observable: str | None, max_units: int | None,
    max_sessions: int | None,
    target_accuracy: float, rules: Sequence[str] | None, family: bool, heldout: str, classifier: str,
    n_trials: int, n_splits: int, seed: int, setaside: float = 0.25, robust: bool = False,
    statistics: str = "marginal", max_animals: int = 1, budget: float | None = None,
    budget_mode: str = "cheapest",
) -> Question:
    """Check the user's bounds against the bank and the modality and return the search question.

    ``max_animals`` above 1 needs the modality's ``per_animal_cost`` and enough test networks of every rule on
    every split (search folds and set-aside networks) to draw that many distinct animals; ``budget`` must be
    positive and reach the cheapest protocol the search can propose."""
    if not 0.0 < target_accuracy <= 1.0:
        raise AdvisorError(f"--target-accuracy must be in (0, 1]; got {target_accuracy:g}")
    if observable is not None and observable not in modality.observables:
        raise AdvisorError(f"modality {modality.key!r} cannot measure {observable}; it measures "
                           f"{', '.join(modality.observables)}")
    observables = (observable,) if observable else tuple(modality.observables)
    limits = bank_limits(bank)
    n_checkpoints = int(bank["loss"].shape[1])
    most = max(limits[o] for o in observables)
    if max_units is not None and max_units > most:
        raise AdvisorError(f"--max-units must be at most {most} for this bank ({'/'.join(observables)} recorded "
                           f"per network); got {max_units}")
    if max_units is not None and max_units < MIN_UNITS:
        raise AdvisorError(f"--max-units must be at least {MIN_UNITS}; got {max_units}")
    if modality.max_units < MIN_UNITS:
        raise AdvisorError(f"modality {modality.key!r} records at most {modality.max_units} units; the search needs "
                           f"at least {MIN_UNITS}")
    if max_sessions is not None and not MIN_SESSIONS <= max_sessions <= n_checkpoints:
        raise AdvisorError(f"--max-sessions must be in [{MIN_SESSIONS}, {n_checkpoints}] for this bank "
                           f"({n_checkpoints} checkpoints); got {max_sessions}")
    unit_cap = {o: min(limits[o], modality.max_units, max_units or limits[o]) for o in observables}
    session_cap = min(n_checkpoints, modality.max_sessions, max_sessions or n_checkpoints)
    if session_cap < MIN_SESSIONS:
        raise AdvisorError(f"modality {modality.key!r} allows {modality.max_sessions} session"
                           f"{'s' if modality.max_sessions != 1 else ''}; the search needs at least {MIN_SESSIONS}")
    allowed_layers = tuple(s for s in LAYER_SUBSETS if set(s.split(",")) <= set(modality.layers))

    meta = bank.metadata
    in_bank = sorted(set(meta["rule"].astype(str)))
    if rules:
        unknown = [r for r in rules if r not in in_bank]
        if unknown:
            raise AdvisorError(f"--rules: {', '.join(unknown)} not in the bank; its rules are {', '.join(in_bank)}")
    chosen = tuple(rules) if rules else tuple(in_bank)
    target = "family" if family else "rule"
    labels = set(meta[meta["rule"].astype(str).isin(chosen)][target].astype(str))
    if len(labels) < 2:
        plural = {"rule": "rules", "family": "families"}[target]
        raise AdvisorError(f"need at least 2 different {plural} to tell apart; got {', '.join(sorted(labels))}")
    if heldout != "none":
        groups = heldout_groups(meta, heldout)  # raises on an unknown mode
        levels = sorted(set(groups)) if groups is not None else []
        if len(levels) < 2:
            _one, many = HELDOUT_NAMES[heldout]
            raise AdvisorError(f"--heldout {heldout} needs a bank with at least 2 {many}; this one has only "
                               f"{levels[0]}")
    if statistics not in STATISTIC_SETS:
        raise AdvisorError(f"--statistics must be one of {', '.join(STATISTIC_SETS)}; got {statistics!r}")
    if robust:
        archs = sorted(set(meta["architecture"].astype(str)))
        if len(archs) < 2:
            raise AdvisorError(f"--robust needs a bank with at least 2 architectures (it leaves one out at a time); "
                               f"this one has only {archs[0]}")
        if heldout != "none":
            raise AdvisorError(f"--robust already leaves one architecture out next to the search's own splits; use "
                               f"it with --heldout none, got --heldout {heldout}")
    per_group = {o: limits[o] // len(GROUPS) for o in observables}
    partition = setaside_partition(meta, chosen, target, setaside, seed)  # raises on a share the bank cannot split
    if heldout == "none":
        y = meta[target].astype(str).to_numpy()[partition.search]
        few = min(int(np.sum(y == label)) for label in set(y))
        if few < FOLDS:
            raise AdvisorError(f"--setaside {setaside:g} leaves {few} search networks of a {target}; the search's "
                               f"{FOLDS}-fold splits need at least {FOLDS} (simulate more networks per rule)")
    question = Question(observables, unit_cap, per_group, session_cap, n_checkpoints, allowed_layers,
                        float(target_accuracy), target, chosen, heldout, classifier, n_trials, n_splits, seed,
                        float(setaside), bool(robust), statistics, int(max_animals),
                        None if budget is None else float(budget), budget_mode)
    check_animals_and_budget(bank, modality, question, partition)
    return question


def check_animal_options(max_animals: Any, budget: Any, modalities: Sequence[Modality]) -> None:
    """What ``--max-animals`` and ``--budget-hours`` need that no bank is needed to check (run before any bank is
    opened or built): a positive number of animals, a positive budget, a per-animal cost in each modality."""
    if isinstance(max_animals, bool) or not isinstance(max_animals, int) or max_animals < 1:
        raise AdvisorError(f"--max-animals must be a positive integer (animals recorded with the protocol); got "
                           f"{max_animals!r}")
    if budget is not None and not (isinstance(budget, int | float) and math.isfinite(budget) and budget > 0):
        raise AdvisorError(f"--budget-hours must be a positive number of hours; got {budget!r}")
    if max_animals > 1:
        for modality in modalities:
            if modality.per_animal_cost is None:
                raise AdvisorError(f"--max-animals {max_animals}: modality {modality.source or modality.key!r} has "
                                   f"no per_animal_cost (surgery and training per animal, {modality.cost_unit}); "
                                   "add it to the modality file")


def check_animals_and_budget(bank: TrajectoryBank, modality: Modality, question: Question, partition: Any) -> None:
    """One-line errors for ``--max-animals`` and ``--budget-hours`` a bank or modality cannot serve."""
    from advisor.science.animals import max_animals_for
    from advisor.science.evaluation import make_splits

    k = question.max_animals
    check_animal_options(k, question.budget, [modality])
    if k > 1:
        meta = bank.metadata.reset_index(drop=True)
        y = meta[question.target].astype(str).to_numpy()
        search_y = y[partition.search]
        splits = make_splits(search_y, "none", None, question.n_splits, question.seed)
        most = min(max_animals_for([search_y[test] for _, test in splits]),
                   max_animals_for([y[partition.setaside]]))
        if k > most:
            raise AdvisorError(f"--max-animals must be at most {most} for this bank: pooling k animals draws k "
                               f"distinct test networks of each {question.target} on every split, and the "
                               f"smallest split holds {most} (simulate more networks per rule); got {k}")
    budget = question.budget
    if budget is not None:
        cheapest = cheapest_cost(modality, question)
        if budget < cheapest:
            raise AdvisorError(f"--budget-hours {budget:g} is below the cheapest protocol the search can propose "
                               f"({MIN_UNITS} units, {MIN_SESSIONS} sessions, 1 presentation"
                               f"{', 1 animal with its per-animal cost' if k > 1 else ''}: {cheapest:.1f} "
                               f"{modality.cost_unit} with {modality.key}); allowed: at least {cheapest:.1f}")


def cheapest_cost(modality: Modality, question: Question) -> float:
    """The cost of the cheapest protocol the search can propose (fewest units and sessions, one presentation,
    one animal)."""
    if question.max_animals > 1:
        return modality.total_cost(MIN_UNITS, MIN_SESSIONS, 1, 1)
    return float(modality.cost(MIN_UNITS, MIN_SESSIONS, 1))


def versions() -> dict[str, str]:
    """Versions of the packages a plan's numbers depend on."""
    out = {"python": platform.python_version()}
    for dist in ("lr-advisor", "torch", "numpy", "scikit-learn", "optuna", "mlflow"):
        try:
            out[dist] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def bank_document(bank: TrajectoryBank, preset: str | None) -> Entry:
    cfg = bank.config  # the bank's stored config, a dict
    meta = bank.metadata
    return {"preset": preset or cfg.get("name"), "hash": bank.hash, "path": str(bank.path), "n_networks": len(meta),
            "rules": sorted(set(meta["rule"].astype(str))), "architectures": sorted(set(meta["architecture"])),
            "tasks": sorted(set(meta["task"])), "n_steps": int(cfg["n_steps"]),
            "n_checkpoints": int(cfg["n_checkpoints"]),
            # what the bank recorded in each layer group (units; synapses for weights), per observable
            "units_per_group": {o: n // len(GROUPS) for o, n in bank_limits(bank).items()}}


def apply_pilot(modality: Modality, recording: Any, bank: TrajectoryBank) -> tuple[Modality, Entry]:
    """``modality`` with the single-presentation noise and the unit-gain spread a pilot recording shows
    (``advisor.science.pilot``), and what was replaced (for the plan document and its report).

    Raises:
        AdvisorError: the pilot cannot be measured (too few presentations, stimuli or responsive units), or its
            numbers are outside what the modality accepts (one line naming the pilot).
    """
    import hashlib
    import json
    from dataclasses import replace

    from advisor.science.pilot import estimate_pilot, simulated_log_spread_var

    estimate = estimate_pilot(recording, modality.noise_model, simulated_log_spread_var(bank))
    noise = round(estimate.single_trial_noise, 4)
    gains = (float(modality.gain_sd[0]), float(modality.gain_sd[1]), round(estimate.unit_gain_sd, 3))
    words = (f"Measured from the pilot recording {estimate.source}: the median over {estimate.n_units} units of "
             "the trial-to-trial SD relative to the unit's signal spread across stimuli"
             if modality.noise_model != "poisson" else
             f"Measured from the pilot recording {estimate.source}: the mean spike count per stimulus and "
             f"presentation over {estimate.n_units} units")
    assumptions = {**dict(modality.assumptions), "single_trial_noise": words + ".",
                   "gains.unit": (f"Measured from the pilot recording {estimate.source}: the SD of the units' log "
                                  f"signal spread ({estimate.log_spread_sd[0]:.2f}) beyond that of simulated units "
                                  f"({estimate.log_spread_sd[1]:.2f}).")}
    try:
        updated = replace(modality, single_trial_noise=noise, gain_sd=gains, assumptions=assumptions)
    except AdvisorError as e:
        raise AdvisorError(f"pilot {estimate.source}: {e}") from None
    entry: Entry = {**estimate.to_dict(),
                    "replaced": {"single_trial_noise": [float(modality.single_trial_noise), noise],
                                 "unit_gain_sd": [float(modality.gain_sd[2]), gains[2]]}}
    entry["key"] = "-pilot-" + hashlib.sha256(json.dumps(entry, sort_keys=True).encode()).hexdigest()[:8]
    return updated, entry


def _protocol_with(trial: TrialResult, modality: Modality, seed: int, **changes: Any) -> RecordingProtocol:
    repeats = changes.pop("repeats", trial.repeats)
    params = {"observable": trial.observable, "n_units": trial.n_units, "layers": trial.layers,
              "n_sessions": trial.n_sessions, "window": trial.window, "noise_model": modality.noise_model,
              "noise": float(modality.noise_for(repeats)), "chronic": trial.chronic, "seed": seed,
              "statistics": trial.statistics, **modality.protocol_kwargs(), **changes}
    return RecordingProtocol(**params)


def _grids(trial: TrialResult, question: Question, modality: Modality, observable: str) -> dict[str, list[int]]:
    """The values each curve visits: fixed grids clipped to the bank and bounds, plus the trial's own value."""
    units_hi = min(question.max_units[observable], question.per_group[observable] * len(trial.layers))
    lo, hi = trial.window
    n_available = round(hi * (question.n_checkpoints - 1)) - round(lo * (question.n_checkpoints - 1)) + 1
    sessions_hi = min(question.max_sessions, n_available)
    units = {u for u in UNIT_GRID if len(trial.layers) <= u <= units_hi} | {units_hi, min(trial.n_units, units_hi)}
    sessions = {s for s in SESSION_GRID if s <= sessions_hi} | {min(trial.n_sessions, sessions_hi)}
    repeats = {r for r in REPEAT_GRID if r <= modality.max_repeats} | {1, trial.repeats, modality.max_repeats}
    return {"units": sorted(units), "sessions": sorted(sessions), "noise": sorted(repeats)}


def sensitivity_curves(scorer: Scorer, trial: TrialResult, question: Question, modality: Modality,
                       tick: Callable[[], None] | None = None) -> dict[str, Any]:
    """Accuracy against units, sessions and noise, one factor at a time around ``trial``, per observable."""
    curves: dict[str, Any] = {}
    for obs in question.observables:
        rows: dict[str, list[dict[str, Any]]] = {"units": [], "sessions": [], "noise": []}
        most = min(question.max_units[obs], question.per_group[obs] * len(trial.layers))
        for axis, grid in _grids(trial, question, modality, obs).items():
            for value in grid:
                key = {"units": "n_units", "sessions": "n_sessions", "noise": "repeats"}[axis]
                changes = {"n_units": min(trial.n_units, most), key: value}
                protocol = _protocol_with(trial, modality, question.seed, observable=obs, **changes)
                s = scorer.score(protocol)
                x = float(protocol.noise) if axis == "noise" else value
                rows[axis].append({"x": x, "accuracy": float(s.accuracy), "ci": [float(v) for v in s.ci],
                                   **({"repeats": value} if axis == "noise" else {})})
                if tick:
                    tick()
        curves[obs] = rows
    return curves


def curve_points(trial: TrialResult, question: Question, modality: Modality) -> int:
    """How many evaluations :func:`sensitivity_curves` makes (for a progress bar)."""
    return sum(len(g) for obs in question.observables for g in _grids(trial, question, modality, obs).values())


def _transfer(bank: TrajectoryBank, X: np.ndarray, y: np.ndarray, labels: list[str], rows: np.ndarray,
              question: Question, behaviour: np.ndarray, search: np.ndarray,
              setaside: np.ndarray) -> dict[str, Any] | None:
    """Leave one architecture out, on networks nothing was chosen on: for each architecture, the protocol's
    classifier trained on the search networks of the other architectures is tested on the set-aside networks of
    this one (and the behavioural control likewise), with refit intervals over all set-aside networks. None for
    a bank of one architecture.

    ``X``, ``y``, ``behaviour`` are the question's networks (``rows`` of the bank); ``search`` and ``setaside``
    are positions into them."""
    meta = bank.metadata.reset_index(drop=True).iloc[rows].reset_index(drop=True)
    groups = heldout_groups(meta, "architecture")
    if groups is None or len(set(groups)) < 2:
        return None
    splits = fixed_partition_splits(search, setaside, groups)
    held = score(X, y, splits, labels, classifier=question.classifier, seed=question.seed)
    controls = control_scores({"behaviour": behaviour}, y, splits, labels, question.seed)
    control = controls["behaviour"]
    per = {str(groups[test][0]): {"accuracy": float(a), "n_networks": len(test)}
           for (_, test), a in zip(splits, held.split_accuracies, strict=True)}
    return {"accuracy": float(held.accuracy), "ci": [float(v) for v in held.ci],
            "control_accuracy": float(control.scores.accuracy), "control_ci": [float(v) for v in control.scores.ci],
            "control_classifier": control.classifier, "level": "architecture", "levels": sorted(per),
            "per_level": per, "n_networks": int(sum(len(t) for _, t in splits)),
            "transfers": bool(held.ci[0] >= question.target_accuracy and held.ci[0] > control.scores.ci[1])}


def analyse(bank: TrajectoryBank, scorer: Scorer, trial: TrialResult, question: Question,
            modality: Modality) -> Document:
    """The final numbers of ``trial``'s protocol: one fit on the search networks tested once on the set-aside
    networks (accuracy, CI, confusion matrix), the controls on the same networks, importances from the search
    networks' splits, and the held-out-architecture score."""
    protocol = trial.protocol(question.seed)
    features = scorer.features(protocol)
    partition = scorer.partition
    assert partition is not None
    meta = bank.metadata.reset_index(drop=True)
    rows = np.flatnonzero(partition.members)
    y = meta[question.target].astype(str).to_numpy()[rows]
    labels = scorer.labels
    X = features.X[rows]
    position = {int(r): i for i, r in enumerate(rows)}
    search = np.array([position[int(r)] for r in np.flatnonzero(partition.search)])
    setaside = np.array([position[int(r)] for r in np.flatnonzero(partition.setaside)])
    held = heldout_groups(meta, question.heldout)
    groups = held[rows] if held is not None else None
    final_splits = fixed_partition_splits(search, setaside, groups)
    final = score(X, y, final_splits, labels, classifier=question.classifier, seed=question.seed, keep_scores=True)
    behaviour = behaviour_features(bank, rows)
    final_controls = control_scores(
        {"behaviour": behaviour, "hyperparameters": hyperparameter_features(meta.iloc[rows])},
        y, final_splits, labels, question.seed)
    k = trial.n_animals
    pooled = pooled_setaside(final, final_controls, y, labels, k, question.seed,
                             design_cells(meta.iloc[rows].reset_index(drop=True))) if k > 1 else None
    # importances: on the search networks' own splits (the set-aside networks are tested once, for the number);
    # only the importances are read, so no refits for an interval
    full = score(features.X[scorer.keep], scorer.y, scorer.splits, labels, classifier=question.classifier,
                 seed=question.seed, importances=True, refits=0)
    top = strongest(final_controls)
    reaches = final.ci[0] >= question.target_accuracy
    clears = beyond(final, final_controls)
    controls_doc = controls_document(final_controls)
    setaside_doc: Entry = {"accuracy": float(final.accuracy), "ci": [float(v) for v in final.ci],
                           "n_networks": len(setaside), "n_train": len(search),
                           "balanced_accuracy": float(final.balanced_accuracy), "reaches_target": bool(reaches),
                           "beyond_controls": bool(clears), "classifier": question.classifier}
    strongest_name = top.name if top is not None else None
    if pooled is not None:  # k animals: the set-aside estimate and the controls pooled over them
        setaside_doc.update(pooled["setaside"])
        reaches = setaside_doc["ci"][0] >= question.target_accuracy
        highest = max(pooled["controls"].items(), key=lambda kv: (kv[1]["ci"][1], kv[1]["accuracy"]))
        clears = setaside_doc["ci"][0] > highest[1]["ci"][1]
        setaside_doc.update(reaches_target=bool(reaches), beyond_controls=bool(clears))
        controls_doc = {name: {**controls_doc[name], **entry} for name, entry in pooled["controls"].items()}
        strongest_name = highest[0]
    out: Document = {
        "labels": labels,
        "chance": float(max(np.mean(y == label) for label in labels)),
        "confusion_matrix": final.confusion_matrix.tolist(),
        "setaside": setaside_doc,
        "controls": controls_doc,
        "search_controls": (scorer.pooled_controls(trial.n_animals) if trial.n_animals > 1
                            else controls_document(scorer.controls)),
        "strongest_control": strongest_name,
        "heldout_architecture": None,
        "importances": None,
    }
    if full.feature_importance is not None and full.session_importance is not None:
        order = np.argsort(-full.feature_importance, kind="stable")[:TOP]
        fractions = features.sessions / max(1, scorer.n_checkpoints - 1)
        out["importances"] = {
            "statistics": [{"name": features.names[i], "importance": float(full.feature_importance[i])}
                           for i in order],
            "sessions": [{"session": int(features.sessions[t]), "fraction": float(fractions[t]),
                          "importance": float(full.session_importance[t])} for t in range(len(features.sessions))],
        }
    if question.heldout == "none":
        out["heldout_architecture"] = _transfer(bank, X, y, labels, rows, question, behaviour, search, setaside)
    return out


def pooled_setaside(final: Any, controls: Any, y: np.ndarray, labels: list[str], k: int, seed: int,
                    cells: np.ndarray) -> dict[str, Any]:
    """The set-aside test pooled over ``k`` animals (bootstrap interval over networks and draws), and each
    control pooled over the same animals (the better of its classifiers)."""
    from advisor.science.animals import best_pooled, pooled_candidates, pooled_scores

    index = {label: i for i, label in enumerate(labels)}
    y_index = np.array([index[v] for v in y])
    p = pooled_scores(final.test_scores, y_index, k, seed, cells=cells, cross_validated=False)
    setaside = {"accuracy": p.accuracy, "ci": [p.ci[0], p.ci[1]], "balanced_accuracy": p.balanced_accuracy,
                "n_animals": k, "single_animal": {"accuracy": float(final.accuracy),
                                                  "ci": [float(v) for v in final.ci]}}
    out = {}
    for name, control in controls.items():
        classifier, c = best_pooled(pooled_candidates(control, y_index, k, seed, cells=cells, cross_validated=False))
        out[name] = {"accuracy": c.accuracy, "ci": [c.ci[0], c.ci[1]], "classifier": classifier,
                     "n_animals": k, "single_animal": {"accuracy": float(control.scores.accuracy),
                                                       "ci": [float(v) for v in control.scores.ci]}}
    return {"setaside": setaside, "controls": out}


def power_table(scorer: Scorer, trial: TrialResult, question: Question, modality: Modality,
                tick: Callable[[], None] | None = None) -> Entry:
    """Accuracy (search estimate, cross-validated on the search networks) against units × animals and sessions ×
    animals around ``trial``, with where the target is reached beyond the controls: a proposal's power analysis.

    Animals run from 1 to the question's ``max_animals`` (at least 4, at most what every split can draw);
    costs are totals over the animals (with the modality's per-animal cost where it has one)."""
    from advisor.science.animals import max_animals_for

    most = max_animals_for([scorer.y[test] for _, test in scorer.splits])
    animals = list(range(1, min(most, max(question.max_animals, 4)) + 1))
    obs = trial.observable
    grids = _grids(trial, question, modality, obs)
    out: Entry = {"animals": animals, "target": question.target_accuracy, "protocol": trial.describe(),
                  "n_units": trial.n_units, "n_sessions": trial.n_sessions, "n_animals": trial.n_animals,
                  "cost_unit": modality.cost_unit, "estimate": "search (cross-validated on the search networks)"}
    for axis, key in (("units", "n_units"), ("sessions", "n_sessions")):
        values = _thin(grids[axis], getattr(trial, key))
        rows = []
        for value in values:
            protocol = _protocol_with(trial, modality, question.seed, **{key: value})
            row = []
            for k in animals:
                s = scorer.pooled(protocol, k)
                units, sessions = (value, trial.n_sessions) if axis == "units" else (trial.n_units, value)
                cost = (modality.total_cost(units, sessions, trial.repeats, k) if modality.per_animal_cost is not None
                        else k * modality.cost(units, sessions, trial.repeats))
                low = float(s.ci[0])
                row.append({"accuracy": float(s.accuracy), "ci": [low, float(s.ci[1])], "cost": float(cost),
                            "reaches": bool(low >= question.target_accuracy and low > scorer.control_high_for(k))})
            rows.append({"value": int(value), "cells": row})
            if tick:
                tick()
        out[axis] = rows
    return out


def power_points(trial: TrialResult, question: Question, modality: Modality) -> int:
    """How many protocols :func:`power_table` scores (for a progress bar)."""
    grids = _grids(trial, question, modality, trial.observable)
    return len(_thin(grids["units"], trial.n_units)) + len(_thin(grids["sessions"], trial.n_sessions))


def _thin(values: Sequence[int], keep: int, most: int = 6) -> list[int]:
    """At most ``most`` of ``values`` spread over their range, always with ``keep``."""
    values = sorted(set(values))
    if len(values) <= most:
        return values
    picks = {values[round(i * (len(values) - 1) / (most - 2))] for i in range(most - 1)}
    return sorted(picks | {keep})


def budget_choice(trials: Sequence[TrialResult], question: Question, candidate: TrialResult | None
                  ) -> tuple[TrialResult | None, Entry | None]:
    """What a budget changes: (the trial to report, the budget entry of the document).

    ``most_accurate`` (a budget without a target): the most accurate trial within the budget (by the lower CI
    bound, then accuracy, then cost) and the next step up: the cheapest trial beyond the budget that is more
    accurate. ``cheapest`` (a budget and a target): the recommendation is the cheapest feasible trial within the
    budget (``recommend`` already keeps to it); without one, what reaching the target would take (the cheapest
    feasible trial whatever its cost, if the search found any)."""
    if question.budget is None:
        return None, None
    budget = question.budget
    within = [t for t in trials if t.cost <= budget]
    entry: Entry = {"hours": budget, "mode": question.budget_mode, "n_within": len(within)}
    if question.budget_mode == "most_accurate":
        best = max(within, key=lambda t: (t.ci[0], t.accuracy, -t.cost)) if within else None
        entry["chosen"] = trial_entry(best)
        above = sorted((t for t in trials if t.cost > budget and (best is None or t.ci[0] > best.ci[0])),
                       key=lambda t: (t.cost, -t.ci[0]))
        entry["next_step"] = trial_entry(above[0]) if above else None
        return best, entry
    feasible = sorted((t for t in trials if t.feasible), key=lambda t: (t.cost, -t.accuracy))
    entry["would_take"] = trial_entry(feasible[0]) if candidate is None and feasible else None
    return None, entry


def trial_entry(t: TrialResult | None) -> Entry | None:
    """A short trial entry for the budget part of a plan document."""
    if t is None:
        return None
    return {"trial": t.number, "cost": t.cost, "accuracy": t.accuracy, "ci": list(t.ci), "n_animals": t.n_animals,
            "description": t.describe(), "feasible": t.feasible}


def insufficient(trials: Sequence[TrialResult], chosen: TrialResult | None, question: Question,
                 n: int = 5) -> list[dict[str, Any]]:
    """What would not suffice: the best protocols money below the recommendation buys (the infeasible part of the
    Pareto front, most expensive first), then the most accurate other cheaper ones."""
    pool = [t for t in trials if not t.feasible and (chosen is None or t.cost < chosen.cost)]
    front = [t for t in reversed(pareto_front(pool))]
    rest = sorted((t for t in pool if t not in front), key=lambda t: -t.accuracy)
    seen, out = set(), []
    for t in front + rest:
        if t.protocol(0) in seen:
            continue
        seen.add(t.protocol(0))
        out.append({"description": t.describe(), "accuracy": t.accuracy, "ci": list(t.ci), "cost": t.cost,
                    "trial": t.number,
                    "why": (f"accuracy lower bound {t.ci[0]:.3f} < target {question.target_accuracy:.3f}"
                            if t.ci[0] < question.target_accuracy else
                            f"accuracy lower bound {t.ci[0]:.3f} does not clear the strongest control")})
        if len(out) >= n:
            break
    return out


@overload
def trial_document(t: TrialResult, cost_unit: str) -> Entry: ...
@overload
def trial_document(t: None, cost_unit: str) -> None: ...
def trial_document(t: TrialResult | None, cost_unit: str) -> Entry | None:
    """A trial as document data (:data:`advisor.application.documents.Entry`), with its cost unit and description."""
    if t is None:
        return None
    d = t.to_dict()
    d["cost_unit"] = cost_unit
    d["trial"] = t.number
    d["description"] = t.describe()
    return d


def verdict(searched: bool, final: dict[str, Any], question: Question,
            heldout: dict[str, Any] | None = None) -> str:
    """Why a plan is or is not feasible, in one phrase keyed for reports: ``recommended``,
    ``none_in_search`` (no protocol's search estimate cleared the target and the controls),
    ``setaside_below_target`` or ``setaside_not_beyond_controls`` (the candidate failed on set-aside networks),
    ``setaside_does_not_transfer`` (``--robust``: it held on set-aside networks of the simulated architectures
    but not on those of an architecture its classifier never saw)."""
    if not searched:
        return "none_in_search"
    if not final["reaches_target"]:
        return "setaside_below_target"
    if not final["beyond_controls"]:
        return "setaside_not_beyond_controls"
    if question.robust and not (heldout or {}).get("transfers"):
        return "setaside_does_not_transfer"
    return "recommended"


def heldout_summary(held: dict[str, Any] | None) -> dict[str, Any] | None:
    """The recommendation's ``"heldout"`` entry: accuracy, CI and behavioural control leaving one architecture
    out (on set-aside networks), or None without a held-out score."""
    if not held:
        return None
    return {"accuracy": held["accuracy"], "ci": list(held["ci"]), "level": held.get("level"),
            "control": {"accuracy": held["control_accuracy"], "ci": list(held["control_ci"]),
                        "classifier": held.get("control_classifier")},
            "transfers": bool(held.get("transfers"))}


class Progress:
    """Callbacks the CLI passes to draw progress: ``start(label, total)``, ``advance()``."""

    def __init__(self, start: Callable[[str, int], None] | None = None,
                 advance: Callable[[], None] | None = None) -> None:
        self.start = start or (lambda label, total: None)
        self.advance = advance or (lambda: None)


def plan(
    bank: TrajectoryBank, question: Question, modality: Modality, *, storage: str, study_name: str,
    timeout: float | None = None,
    curves: bool = True, progress: Progress | None = None,
    on_trial: Callable[[TrialResult, bool], None] | None = None, context: dict[str, Any] | None = None,
) -> Document:
    """Search, re-check and analyse; return the plan document (without run id, command or bank)."""
    progress = progress or Progress()
    started = time.perf_counter()
    scorer = make_scorer(bank, question)
    progress.start("searching protocols", question.n_trials)

    def trial_done(result: TrialResult, new: bool) -> None:
        progress.advance()
        if on_trial:
            on_trial(result, new)

    trials = run_study(scorer, question, modality, storage=storage, study_name=study_name, on_trial=trial_done,
                       timeout=timeout, context=context)
    if not trials:
        raise AdvisorError("the search finished no trial (is --timeout too short?)")
    seeds = [question.seed * 1000 + 1001 + i for i in range(VERIFY_SEEDS)]
    progress.start("re-checking with fresh seeds", 1)
    candidate, verification, rejected = recommend(trials, bank, question, seeds,
                                                  control_high=scorer.control_high_for)
    best = max(trials, key=lambda t: (t.ci[0], t.accuracy, -t.cost))
    budget_pick, budget_doc = budget_choice(trials, question, candidate)
    if question.budget_mode == "most_accurate" and budget_pick is not None:
        # a budget without a target: the most accurate protocol within it, recommended where it also holds up
        best = budget_pick
        if candidate is None or candidate.number != budget_pick.number:
            candidate, verification = None, None
            if budget_pick.feasible:
                check = verify(budget_pick, bank, question, seeds, scorer.control_high_for(budget_pick.n_animals))
                if check["meets_target"]:
                    candidate, verification = budget_pick, check
    progress.advance()
    focus = candidate or best
    progress.start("set-aside networks, controls and importances", 1)
    analysis = analyse(bank, scorer, focus, question, modality)
    progress.advance()
    curve_doc = None
    if curves:
        progress.start("accuracy vs units, sessions, noise", curve_points(focus, question, modality))
        curve_doc = sensitivity_curves(scorer, focus, question, modality, tick=progress.advance)
    power_doc = None
    if curves:
        progress.start("power table: units and sessions × animals", power_points(focus, question, modality))
        power_doc = power_table(scorer, focus, question, modality, tick=progress.advance)
    unit = modality.cost_unit
    final = analysis["setaside"]
    held = analysis.get("heldout_architecture")
    why = verdict(candidate is not None, final, question, held)
    feasible = why == "recommended"
    candidate_doc = trial_document(candidate, unit)
    if candidate_doc is not None:
        candidate_doc["setaside"] = final
        candidate_doc["heldout"] = heldout_summary(held)
        if verification is not None:
            candidate_doc["verified_accuracy"] = verification["accuracy"]
    best_doc = trial_document(best, unit)
    if best_doc is not None and candidate is None:
        best_doc["setaside"] = final
        best_doc["heldout"] = heldout_summary(held)
    return {
        "kind": "plan",
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "question": {
            "observable": question.observables[0] if len(question.observables) == 1 else None,
            "observables": list(question.observables), "modality": modality.key,
            "max_units": max(question.max_units.values()), "max_sessions": question.max_sessions,
            "target_accuracy": question.target_accuracy, "rules": list(question.rules), "target": question.target,
            "heldout": question.heldout, "classifier": question.classifier, "trials": question.n_trials,
            "n_splits": question.n_splits, "seed": question.seed, "study": study_name,
            "setaside": question.setaside, "robust": question.robust, "statistics": question.statistics,
            "max_animals": question.max_animals, "budget_hours": question.budget,
            "budget_mode": question.budget_mode if question.budget is not None else None,
        },
        "modality": modality.to_dict(),
        "feasible": bool(feasible),
        "verdict": why,
        "recommendation": candidate_doc if feasible else None,
        "candidate": candidate_doc,
        "best": best_doc,
        "verification": verification,
        "rejected_by_recheck": rejected,
        **analysis,
        "trials": [trial_document(t, unit) for t in trials],
        "pareto": [trial_document(t, unit) for t in pareto_front(trials)],
        "insufficient": insufficient(trials, candidate, question),
        "curves": curve_doc,
        "power_table": power_doc,
        "budget": budget_doc,
        "versions": versions(),
        "elapsed_s": round(time.perf_counter() - started, 1),
    }


def infeasible_reason(doc: Document, target: float) -> str:
    """One line: why a plan's search found nothing to recommend."""
    verdict = doc.get("verdict", "none_in_search")
    final = doc["setaside"]
    top = max(doc["controls"].values(), key=lambda c: c["ci"][1]) if doc["controls"] else None
    control = f"; strongest control up to {top['ci'][1]:.2f}" if top else ""
    if verdict == "none_in_search":
        best = doc["best"]
        assert best is not None  # a search that found nothing still has a most accurate trial
        return f"CI lower bound {best['ci'][0]:.2f} < target {target:.2f} (or the controls) at best{control}"
    if verdict == "setaside_below_target":
        return f"on set-aside networks the CI lower bound is {final['ci'][0]:.2f} < target {target:.2f}"
    return f"on set-aside networks the CI lower bound {final['ci'][0]:.2f} does not clear the controls{control}"


def modality_entry(modality: Modality, doc: Document | None, observable: str | None,
                   target: float) -> Entry:
    """One modality's column of a comparison, from its plan document (None: it cannot measure ``observable``,
    so it was not searched)."""
    entry: Entry = {"name": modality.key, "title": modality.name, "cost_unit": modality.cost_unit,
                             "feasible": False, "cost": None, "recommendation": None, "best": None, "reason": None,
                             "trials": [], "pareto": []}
    if doc is None:
        entry["reason"] = f"cannot measure {observable}; it measures {', '.join(modality.observables)}"
        return entry
    rec = doc["recommendation"]
    entry.update(feasible=doc["feasible"], cost=rec["cost"] if rec else None, recommendation=rec,
                 candidate=doc["candidate"], best=doc["best"], trials=doc["trials"], pareto=doc["pareto"],
                 setaside=doc["setaside"], controls=doc["controls"], verification=doc["verification"],
                 chance=doc["chance"], verdict=doc["verdict"], heldout_architecture=doc["heldout_architecture"],
                 modality=doc["modality"], budget=doc.get("budget"))
    if not doc["feasible"]:
        entry["reason"] = infeasible_reason(doc, target)
    return entry


def compare_document(bank: TrajectoryBank, preset: str | None, entries: list[dict[str, Any]], *, command: str,
                     observable: str | None, max_units: int | None, max_sessions: int | None,
                     target_accuracy: float, rules: Sequence[str] | None, family: bool, heldout: str,
                     classifier: str, trials: int, n_splits: int, seed: int, setaside: float, storage: str,
                     elapsed_s: float, max_animals: int = 1, budget: float | None = None) -> Document:
    """The ``advisor compare`` document: the question, the bank, one entry per modality (:func:`modality_entry`,
    in the order asked), versions and the study storage."""
    return {
        "kind": "compare", "title": "Which recording modality can tell the learning rule?",
        "command": command, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "elapsed_s": round(elapsed_s, 1),
        "question": {"observable": observable, "observables": [observable] if observable else None,
                     "modality": None, "max_units": max_units, "max_sessions": max_sessions,
                     "target_accuracy": target_accuracy, "rules": list(rules) if rules else
                     sorted(set(bank.metadata["rule"].astype(str))), "target": "family" if family else "rule",
                     "heldout": heldout, "classifier": classifier, "trials": trials, "n_splits": n_splits,
                     "seed": seed, "setaside": setaside, "modalities": [e["name"] for e in entries],
                     "max_animals": max_animals, "budget_hours": budget},
        "bank": bank_document(bank, preset), "modalities": entries, "versions": versions(),
        "storage": storage,
    }

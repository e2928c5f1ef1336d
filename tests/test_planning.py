"""From question to plan document (``advisor.application.planning``): the checks of ``make_question``, the set-aside
verdict
behind a recommendation, its honesty under fresh seeds, infeasible targets, the re-check's rejections, and the
document the reports render (key sets against ``tests/data/plan_document.json``, JSON, curves, what would not
suffice).

Plans run on the session's ``plan_bank`` (96 networks, sgdm vs hebbian, rule identifiable from 20-72 units of
activations but never perfectly, controls at chance by construction) with half the networks set aside, the
ridge classifier, 5 splits (two repeats of 4-fold cross-validation) and 12-15 trials.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from plan_helpers import PLAN_SETASIDE, GarbageSetaside
from plan_helpers import question as plan_question

from advisor.application import search
from advisor.application.console import _finite
from advisor.application.planning import (
    Progress,
    analyse,
    bank_document,
    heldout_summary,
    plan,
    sensitivity_curves,
    trial_document,
    verdict,
)
from advisor.application.search import LAYER_SUBSETS, Question, TrialResult, make_scorer, pareto_front
from advisor.errors import AdvisorError
from advisor.science.cost import Modality, load_modality
from advisor.science.protocol import RecordingProtocol

if TYPE_CHECKING:
    from simulator.bank import TrajectoryBank
    from simulator.pipeline import SimulationResult

TARGET = 0.75
FRESH_SEEDS = (9001, 9002, 9003, 9004, 9005)
"""Seeds neither the search (0-3) nor the plan's own re-check (1001-4003) uses."""
REFERENCE: dict[str, Any] = json.loads((Path(__file__).parent / "data" / "plan_document.json").read_text())
N_SETASIDE = 48
"""Networks set aside in every plan here (half of 96)."""
PHASES = ["searching protocols", "re-checking with fresh seeds", "set-aside networks, controls and importances"]
ADDED_LATER = {"title", "command", "bank", "run_id", "tracking_uri", "run_url"}
"""Keys of the reference document that the CLI and the tracking add to what :func:`plan` returns."""
RESULT_FIELDS = {f.name for f in dataclasses.fields(TrialResult)}


# ----------------------------------------------------------------------------------------------- helpers
def _question(bank: Any, modality: Modality, **changes: Any) -> Question:
    return plan_question(bank, modality, **{"target_accuracy": TARGET, "n_trials": 15, "n_splits": 5, **changes})


def _result(d: dict[str, Any]) -> TrialResult:
    """The TrialResult of a trial document (which adds cost_unit, trial, chronic, description)."""
    return TrialResult.from_dict({k: v for k, v in d.items() if k in RESULT_FIELDS})


def _order(t: TrialResult) -> tuple[float, float, int]:
    return t.cost, -t.accuracy, t.number


@dataclass
class Planned:
    """A plan document and what produced it."""

    doc: dict[str, Any]
    question: Question
    storage: str
    events: list[tuple[str, int]]

    @property
    def trials(self) -> list[TrialResult]:
        return [_result(t) for t in self.doc["trials"]]


def _plan(bank: Any, question: Question, modality: Modality, folder: Path, **kwargs: Any) -> Planned:
    events: list[tuple[str, int]] = []
    progress = Progress(start=lambda label, total: events.append((label, total)),
                        advance=lambda: events.append(("advance", 1)))
    storage = f"journal:{folder / 'study.log'}"
    doc = plan(bank, question, modality, storage=storage, study_name="plan", progress=progress, **kwargs)
    return Planned(doc, question, storage, events)


@pytest.fixture(scope="module")
def generic() -> Modality:
    return load_modality("generic")


@pytest.fixture(scope="module")
def feasible(plan_bank: TrajectoryBank, generic: Modality, tmp_path_factory: pytest.TempPathFactory) -> Planned:
    """Target 0.75, 15 trials, 5 splits, seed 0, with curves: feasible on this bank (the set-aside accuracy's lower
    bound clears the target and both controls)."""
    return _plan(plan_bank, _question(plan_bank, generic), generic, tmp_path_factory.mktemp("feasible"))


@pytest.fixture(scope="module")
def infeasible(plan_bank: TrajectoryBank, generic: Modality, tmp_path_factory: pytest.TempPathFactory) -> Planned:
    """Target 1.0 (no interval on 48 networks reaches 1), 12 trials, 3 splits, no curves."""
    question = _question(plan_bank, generic, target_accuracy=1.0, n_trials=12, n_splits=3)
    return _plan(plan_bank, question, generic, tmp_path_factory.mktemp("infeasible"), curves=False)


@pytest.fixture(scope="module")
def rejected(plan_bank: TrajectoryBank, generic: Modality,
             tmp_path_factory: pytest.TempPathFactory) -> tuple[Planned, list[int]]:
    """The feasible plan again, but the first protocol re-checked fails its re-check: (plan, re-checked trials)."""
    real = search.verify
    checked: list[int] = []

    def first_fails(trial: TrialResult, bank: Any, question: Question, seeds: list[int],
                    control_high: float = -math.inf) -> dict[str, Any]:
        check = real(trial, bank, question, seeds, control_high)
        checked.append(trial.number)
        return check | {"meets_target": bool(check["meets_target"]) and len(checked) > 1}

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(search, "verify", first_fails)
        planned = _plan(plan_bank, _question(plan_bank, generic), generic, tmp_path_factory.mktemp("rejected"),
                        curves=False)
    return planned, checked


# -------------------------------------------------------------------------------------------- the question
def test_question_from_the_bank_and_generic_modality(plan_bank: TrajectoryBank, generic: Modality) -> None:
    q = _question(plan_bank, generic)
    assert q.observables == ("weights", "activations", "activity_change")
    assert q.max_units == {"weights": 144, "activations": 72, "activity_change": 72}
    assert q.per_group == {"weights": 48, "activations": 24, "activity_change": 24}
    assert (q.max_sessions, q.n_checkpoints, q.layers) == (6, 6, LAYER_SUBSETS)
    assert (q.rules, q.target, q.target_accuracy, q.heldout, q.classifier) == (
        ("hebbian", "sgdm"), "rule", TARGET, "none", "ridge")
    assert (q.n_trials, q.n_splits, q.seed, q.setaside) == (15, 5, 0, PLAN_SETASIDE)
    assert _question(plan_bank, generic, setaside=0.25).setaside == 0.25


@pytest.mark.parametrize(("key", "bounds", "units", "sessions", "layers"), [
    ("generic", {"max_units": 50, "max_sessions": 4},
     {"weights": 50, "activations": 50, "activity_change": 50}, 4, LAYER_SUBSETS),
    ("generic", {"observable": "weights", "max_units": 100}, {"weights": 100}, 6, LAYER_SUBSETS),
    ("paired_patch", {"max_units": 60}, {"activity_change": 24}, 6, LAYER_SUBSETS),  # the modality's 24 wins
    ("two_photon", {}, {"activations": 72}, 6, ("early", "middle", "early,middle")),  # the bank's 72 wins
    ("spine_imaging", {"max_sessions": 5}, {"weights": 144}, 5, ("early", "middle", "early,middle")),
    ("ephys", {}, {"activations": 72}, 6, LAYER_SUBSETS),
])
def test_caps_intersect_bank_modality_and_user(plan_bank: TrajectoryBank, key: str, bounds: dict[str, Any],
                                               units: dict[str, int], sessions: int,
                                               layers: tuple[str, ...]) -> None:
    q = _question(plan_bank, load_modality(key), **bounds)
    assert (q.max_units, q.max_sessions, q.layers) == (units, sessions, layers)
    assert q.observables == tuple(units)


def test_a_modality_with_few_sessions_caps_them(plan_bank: TrajectoryBank, generic: Modality) -> None:
    assert _question(plan_bank, dataclasses.replace(generic, max_sessions=3)).max_sessions == 3
    assert _question(plan_bank, dataclasses.replace(generic, max_sessions=3), max_sessions=5).max_sessions == 3


def test_rules_and_family_targets(plan_bank: TrajectoryBank, generic: Modality) -> None:
    q = _question(plan_bank, generic, rules=["sgdm", "hebbian"], family=True)
    assert (q.rules, q.target) == (("sgdm", "hebbian"), "family")
    assert make_scorer(plan_bank, q).labels == ["backprop", "local_hebbian"]


@pytest.mark.parametrize(("key", "changes", "message"), [
    ("generic", {"target_accuracy": 0.0}, "--target-accuracy must be in (0, 1]; got 0"),
    ("generic", {"target_accuracy": -0.1}, "--target-accuracy must be in (0, 1]; got -0.1"),
    ("generic", {"target_accuracy": 1.5}, "--target-accuracy must be in (0, 1]; got 1.5"),
    ("generic", {"target_accuracy": math.nan}, "--target-accuracy must be in (0, 1]; got nan"),
    ("two_photon", {"observable": "weights"},
     "modality 'two_photon' cannot measure weights; it measures activations"),
    ("spine_imaging", {"observable": "activity_change"},
     "modality 'spine_imaging' cannot measure activity_change; it measures weights"),
    ("generic", {"max_units": 145},
     "--max-units must be at most 144 for this bank (weights/activations/activity_change recorded per network); "
     "got 145"),
    ("generic", {"observable": "activations", "max_units": 73},
     "--max-units must be at most 72 for this bank (activations recorded per network); got 73"),
    ("generic", {"max_units": 2}, "--max-units must be at least 3; got 2"),
    ("generic", {"max_units": -5}, "--max-units must be at least 3; got -5"),
    ("generic", {"max_sessions": 7}, "--max-sessions must be in [2, 6] for this bank (6 checkpoints); got 7"),
    ("generic", {"max_sessions": 1}, "--max-sessions must be in [2, 6] for this bank (6 checkpoints); got 1"),
    ("generic", {"rules": ["sgdm", "adam", "fa"]}, "--rules: adam, fa not in the bank; its rules are hebbian, sgdm"),
    ("generic", {"rules": ["sgdm"]}, "need at least 2 different rules to tell apart; got sgdm"),
    ("generic", {"setaside": 0.0}, "--setaside must be a share in [0.05, 0.5] of the networks; got 0"),
    ("generic", {"setaside": 0.9}, "--setaside must be a share in [0.05, 0.5] of the networks; got 0.9"),
])
def test_make_question_refuses_bad_bounds(plan_bank: TrajectoryBank, key: str, changes: dict[str, Any],
                                          message: str) -> None:
    with pytest.raises(AdvisorError) as err:
        _question(plan_bank, load_modality(key), **changes)
    assert str(err.value) == message


def test_a_share_that_leaves_fewer_than_two_networks_of_a_rule(tiny_bank: SimulationResult,
                                                                generic: Modality) -> None:
    rules = sorted(set(tiny_bank.bank.metadata["rule"]))
    with pytest.raises(AdvisorError) as err:
        _question(tiny_bank.bank, generic, setaside=0.25, n_splits=3)
    assert str(err.value) == (f"--setaside 0.25 leaves 1 search and 1 set-aside networks of rule {rules[0]!r}; each "
                              "side needs at least 2 (simulate more networks per rule, or change the share within "
                              "[0.05, 0.5])")


@pytest.mark.parametrize(("heldout", "message"), [
    ("architecture", "--heldout architecture needs a bank with at least 2 architectures; this one has only "
                     "mlp3_relu"),
    ("arch_family", "--heldout arch_family needs a bank with at least 2 architecture families; this one has only "
                    "mlp"),
])
def test_heldout_architecture_needs_two_levels(tiny_bank: SimulationResult, generic: Modality, heldout: str,
                                              message: str) -> None:
    with pytest.raises(AdvisorError) as err:
        _question(tiny_bank.bank, generic, heldout=heldout, n_splits=3)
    assert str(err.value) == message


@pytest.mark.parametrize(("modality_changes", "changes", "message"), [
    ({}, {"rules": ["sgdm"], "family": True}, "need at least 2 different families to tell apart; got backprop"),
    ({"max_sessions": 1}, {}, "modality 'generic' allows 1 session; the search needs at least 2"),
])
def test_make_question_messages_are_english(plan_bank: TrajectoryBank, generic: Modality,
                                            modality_changes: dict[str, Any], changes: dict[str, Any],
                                            message: str) -> None:
    with pytest.raises(AdvisorError) as err:
        _question(plan_bank, dataclasses.replace(generic, **modality_changes), **changes)
    assert str(err.value) == message


def test_a_modality_recording_fewer_units_than_the_search_needs_is_refused(plan_bank: TrajectoryBank,
                                                                           generic: Modality) -> None:
    with pytest.raises(AdvisorError) as err:
        _question(plan_bank, dataclasses.replace(generic, max_units=2))
    assert str(err.value) == "modality 'generic' records at most 2 units; the search needs at least 3"


# ---------------------------------------------------------------------------------------------- honesty
def test_the_feasible_plan_rests_on_the_setaside_networks(feasible: Planned, plan_bank: TrajectoryBank) -> None:
    doc = feasible.doc
    final = doc["setaside"]
    assert doc["feasible"] is True and doc["verdict"] == "recommended"
    assert final["n_networks"] == N_SETASIDE and final["n_train"] == 96 - N_SETASIDE
    assert final["ci"][0] >= TARGET and final["reaches_target"] is True and final["beyond_controls"] is True
    assert final["ci"][0] > max(c["ci"][1] for c in doc["controls"].values())
    assert final["ci"][0] <= final["accuracy"] <= final["ci"][1] and final["classifier"] == "ridge"
    assert np.sum(doc["confusion_matrix"]) == N_SETASIDE  # one fit, each set-aside network tested once
    rec = doc["recommendation"]
    assert rec == doc["candidate"] and rec["setaside"] == final
    assert rec["feasible"] is True and rec["beyond_control"] is True and rec["ci"][0] >= TARGET
    assert rec["ci"][0] > max(c["ci"][1] for c in doc["search_controls"].values())


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_a_recommendation_holds_up_with_fresh_seeds(plan_bank: TrajectoryBank, generic: Modality, seed: int,
                                                    tmp_path: Path) -> None:
    """The key promise: a recommended protocol met the target on networks the search never saw, and recorded again
    with new unit subsets and noise and scored on new splits with new classifier seeds, it still reaches it. Not
    every seed finds one on 48 search networks (seed 0 does: ``test_the_feasible_plan_rests_on_...``); whatever
    the verdict, the document says which test failed."""
    question = _question(plan_bank, generic, seed=seed)
    doc = _plan(plan_bank, question, generic, tmp_path, curves=False).doc
    final, candidate = doc["setaside"], doc["candidate"]
    assert doc["verdict"] == verdict(candidate is not None, final, question)
    assert doc["feasible"] is (doc["verdict"] == "recommended")
    if candidate is None:
        assert doc["verification"] is None and doc["recommendation"] is None
        return
    assert doc["verification"]["meets_target"] is True
    assert doc["verification"]["seeds"] == [seed * 1000 + 1001 + i for i in range(3)]
    if not doc["feasible"]:
        assert doc["recommendation"] is None
        return
    rec = doc["recommendation"]
    assert rec["feasible"] is True and rec["ci"][0] >= TARGET and final["ci"][0] >= TARGET
    accuracies = [make_scorer(plan_bank, question, seed=s, controls=False).score(_result(rec).protocol(s)).accuracy
                  for s in FRESH_SEEDS]
    assert len(set(accuracies)) > 1  # the seeds change the recording and the splits
    assert np.mean(accuracies) >= TARGET


def test_a_candidate_that_fails_on_the_setaside_networks_is_not_recommended(
        feasible: Planned, plan_bank: TrajectoryBank, generic: Modality, tmp_path: Path) -> None:
    """The same question on a bank whose set-aside networks are garbage: the search, the re-check and the
    candidate are those of the feasible plan (they never see the set-aside networks), but the candidate's
    set-aside interval falls below the target, so nothing is recommended."""
    partition = make_scorer(plan_bank, feasible.question).partition
    assert partition is not None
    garbage = GarbageSetaside(plan_bank, partition.setaside)
    doc = _plan(garbage, feasible.question, generic, tmp_path, curves=False).doc
    assert doc["trials"] == feasible.doc["trials"] and doc["verification"] == feasible.doc["verification"]
    assert doc["search_controls"] == feasible.doc["search_controls"]
    assert doc["candidate"] is not None
    # everything but what the set-aside networks measure (in and out of the simulated architectures)
    assert {k: v for k, v in doc["candidate"].items() if k not in ("setaside", "heldout")} == {
        k: v for k, v in feasible.doc["candidate"].items() if k not in ("setaside", "heldout")}
    final = doc["setaside"]
    assert final["ci"][0] < TARGET and final["reaches_target"] is False
    assert doc["verdict"] == "setaside_below_target" and doc["feasible"] is False
    assert doc["recommendation"] is None and doc["candidate"]["setaside"] == final
    assert doc["best"] == feasible.doc["best"]  # a candidate exists: the best trial carries no set-aside number


def test_the_verdict_names_the_first_test_that_failed(feasible: Planned) -> None:
    q = feasible.question
    ok = {"reaches_target": True, "beyond_controls": True}
    assert verdict(True, ok, q) == "recommended"
    assert verdict(False, ok, q) == "none_in_search"
    assert verdict(True, ok | {"reaches_target": False}, q) == "setaside_below_target"
    assert verdict(True, ok | {"reaches_target": False, "beyond_controls": False}, q) == "setaside_below_target"
    assert verdict(True, ok | {"beyond_controls": False}, q) == "setaside_not_beyond_controls"
    robust = replace(q, robust=True)
    assert verdict(True, ok, robust, {"transfers": False}) == "setaside_does_not_transfer"
    assert verdict(True, ok, robust, None) == "setaside_does_not_transfer"
    assert verdict(True, ok, robust, {"transfers": True}) == "recommended"
    assert verdict(True, ok, q, {"transfers": False}) == "recommended"  # without --robust it is reported only


def test_an_unreachable_target_gives_no_recommendation(infeasible: Planned) -> None:
    doc, trials = infeasible.doc, infeasible.trials
    assert not any(t.feasible for t in trials) and len(trials) == 12
    assert doc["feasible"] is False and doc["verdict"] == "none_in_search"
    assert doc["recommendation"] is None and doc["candidate"] is None
    assert doc["verification"] is None and doc["rejected_by_recheck"] == []
    best = max(trials, key=lambda t: (t.ci[0], t.accuracy, -t.cost))
    assert doc["best"] == trial_document(best, "hours") | {"setaside": doc["setaside"],
                                                           "heldout": heldout_summary(doc["heldout_architecture"])}
    assert doc["setaside"]["reaches_target"] is False
    assert doc["curves"] is None
    assert [label for label, _ in infeasible.events if label != "advance"] == PHASES


def test_the_analysis_is_of_the_best_trial_when_nothing_is_feasible(infeasible: Planned) -> None:
    doc = infeasible.doc
    assert doc["labels"] == ["hebbian", "sgdm"] and doc["chance"] == 0.5
    assert np.sum(doc["confusion_matrix"]) == N_SETASIDE  # the set-aside networks, tested once
    sessions = RecordingProtocol(n_sessions=doc["best"]["n_sessions"],
                                 window=tuple(doc["best"]["window"])).session_indices(6)
    assert [s["session"] for s in doc["importances"]["sessions"]] == sessions.tolist()
    assert [s["fraction"] for s in doc["importances"]["sessions"]] == pytest.approx(sessions / 5)


def test_a_candidate_that_fails_the_recheck_is_skipped_and_listed(rejected: tuple[Planned, list[int]],
                                                                  feasible: Planned) -> None:
    planned, checked = rejected
    doc = planned.doc
    assert doc["trials"] == feasible.doc["trials"]  # the same question and seed: the same search
    candidates, seen = [], set()
    for t in sorted((t for t in planned.trials if t.feasible), key=_order):
        if t.protocol(0) not in seen:
            seen.add(t.protocol(0))
            candidates.append(t.number)
    assert len(checked) >= 2 and checked == candidates[:len(checked)]
    assert [r["trial"]["number"] for r in doc["rejected_by_recheck"]] == checked[:-1]
    assert doc["rejected_by_recheck"][0]["verification"]["meets_target"] is False
    assert doc["candidate"]["number"] == checked[-1]
    assert doc["candidate"]["verified_accuracy"] == doc["verification"]["accuracy"]
    assert doc["candidate"]["setaside"] == doc["setaside"]
    assert doc["feasible"] is (doc["verdict"] == "recommended")
    assert doc["recommendation"] == (doc["candidate"] if doc["feasible"] else None)


# ------------------------------------------------------------------------------------------ the document
def test_plan_document_has_every_key_the_reports_read(feasible: Planned, rejected: tuple[Planned, list[int]],
                                                      plan_bank: TrajectoryBank) -> None:
    """Every key of the reference document is in the plan (nested documents may carry more, e.g. the gains a
    trial's protocol was recorded with)."""
    doc, ref = feasible.doc, REFERENCE
    assert set(doc) == set(ref) - ADDED_LATER
    assert set(doc["question"]) == set(ref["question"]) | {"study"}  # plan() adds the study name
    assert set(doc["modality"]) >= set(ref["modality"])
    for name in ("recommendation", "candidate", "best"):
        assert set(doc[name]) >= set(ref[name]) - {"setaside"}, name
    assert set(doc["recommendation"]) >= set(ref["recommendation"])
    assert set(doc["verification"]) >= set(ref["verification"])
    for t in doc["trials"] + doc["pareto"]:
        assert set(t) >= set(ref["trials"][0])
    assert set(doc["setaside"]) == set(ref["setaside"])
    for name in ("controls", "search_controls"):
        assert set(doc[name]) == set(ref[name]) == {"behaviour", "hyperparameters"}
        for control, entry in doc[name].items():
            assert set(entry) == set(ref[name][control]) == {"accuracy", "ci", "classifier", "candidates"}
    assert set(doc["heldout_architecture"]) == set(ref["heldout_architecture"])
    assert set(doc["importances"]) == set(ref["importances"])
    for part in ("statistics", "sessions"):
        assert {frozenset(e) for e in doc["importances"][part]} == {frozenset(ref["importances"][part][0])}
    assert {frozenset(set(e) - {"trial"}) for e in doc["insufficient"]} == {
        frozenset(set(ref["insufficient"][0]) - {"trial"})}
    assert set(doc["curves"]) == set(ref["curves"])
    for axes in doc["curves"].values():
        assert set(axes) == {"units", "sessions", "noise"}
        for axis, points in axes.items():
            assert {frozenset(p) for p in points} == {frozenset(ref["curves"]["activations"][axis][0])}
    assert set(doc["versions"]) == set(ref["versions"])
    assert set(bank_document(plan_bank, None)) == set(ref["bank"])
    entry = rejected[0].doc["rejected_by_recheck"][0]
    if ref["rejected_by_recheck"]:
        assert set(entry) == set(ref["rejected_by_recheck"][0])
        assert set(entry["trial"]) >= set(ref["rejected_by_recheck"][0]["trial"])
        assert set(entry["verification"]) >= set(ref["rejected_by_recheck"][0]["verification"])


def test_plan_document_is_json(feasible: Planned, infeasible: Planned) -> None:
    for doc in (feasible.doc, infeasible.doc):
        text = json.dumps(_finite(doc), allow_nan=False)
        assert json.loads(text) == _finite(doc)


def test_plan_document_describes_the_question_and_run(feasible: Planned, generic: Modality) -> None:
    doc = feasible.doc
    assert doc["kind"] == "plan"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", doc["created"])
    assert doc["question"] == {
        "observable": None, "observables": ["weights", "activations", "activity_change"], "modality": "generic",
        "max_units": 144, "max_sessions": 6, "target_accuracy": TARGET, "rules": ["hebbian", "sgdm"],
        "target": "rule", "heldout": "none", "classifier": "ridge", "trials": 15, "n_splits": 5, "seed": 0,
        "study": "plan", "setaside": PLAN_SETASIDE, "robust": False, "statistics": "marginal",
        "max_animals": 1, "budget_hours": None, "budget_mode": None,
    }
    assert doc["modality"] == generic.to_dict()
    assert isinstance(doc["elapsed_s"], float) and 0 < doc["elapsed_s"] == round(doc["elapsed_s"], 1)
    assert all(isinstance(v, str) and v for v in doc["versions"].values())
    assert doc["versions"]["optuna"].startswith("5.")


def test_the_recommendation_is_the_cheapest_feasible_trial_that_holds_up(feasible: Planned) -> None:
    doc, trials = feasible.doc, feasible.trials
    assert [t.number for t in trials] == list(range(15))
    rejected = {r["trial"]["number"] for r in doc["rejected_by_recheck"]}
    cheapest = min((t for t in trials if t.feasible and t.number not in rejected), key=_order)
    assert all(_order(t) < _order(cheapest) for t in trials if t.number in rejected)
    expected = trial_document(cheapest, "hours")
    assert expected is not None
    assert doc["recommendation"] == expected | {"verified_accuracy": doc["verification"]["accuracy"],
                                                "setaside": doc["setaside"],
                                                "heldout": heldout_summary(doc["heldout_architecture"])}
    assert doc["recommendation"]["description"] == cheapest.describe()
    assert doc["verification"]["seeds"] == [1001, 1002, 1003] and len(doc["verification"]["per_seed"]) == 3
    assert doc["best"] == trial_document(max(trials, key=lambda t: (t.ci[0], t.accuracy, -t.cost)), "hours")
    assert [_result(t) for t in doc["pareto"]] == pareto_front(trials)


def test_insufficient_lists_only_cheaper_infeasible_protocols(feasible: Planned, infeasible: Planned) -> None:
    why = re.compile(r"accuracy lower bound (\d\.\d+) (?:< target (\d\.\d+)|does not clear the strongest control)")
    for planned in (feasible, infeasible):
        doc, q = planned.doc, planned.question
        limit = doc["recommendation"]["cost"] if doc["recommendation"] else math.inf
        pool: dict[str, TrialResult] = {}  # one trial per protocol (description), the most accurate
        for t in sorted((t for t in planned.trials if not t.feasible and t.cost < limit), key=lambda t: -t.accuracy):
            pool.setdefault(t.describe(), t)
        entries = doc["insufficient"]
        assert len(entries) == min(5, len(pool)) and len({e["description"] for e in entries}) == len(entries)
        assert max(pool.values(), key=lambda t: t.accuracy).describe() in {e["description"] for e in entries}
        for entry in entries:
            t = next(t for t in planned.trials if t.describe() == entry["description"] and t.cost == entry["cost"])
            assert not t.feasible and t.cost < limit
            assert (entry["accuracy"], entry["ci"]) == (t.accuracy, list(t.ci))
            match = why.fullmatch(entry["why"])
            assert match is not None, entry["why"]
            assert float(match[1]) == pytest.approx(t.ci[0], abs=0.005)
            if t.ci[0] < q.target_accuracy:
                assert float(match[2]) == pytest.approx(q.target_accuracy, abs=0.005)
            else:  # reaches the target, but not beyond the strongest control
                assert match[2] is None and not t.beyond_control
    assert feasible.doc["insufficient"] and len(infeasible.doc["insufficient"]) == 5


def test_controls_and_importances_of_the_recommendation(feasible: Planned) -> None:
    doc, rec = feasible.doc, feasible.doc["recommendation"]
    assert doc["labels"] == ["hebbian", "sgdm"] and doc["chance"] == 0.5
    assert np.sum(doc["confusion_matrix"]) == N_SETASIDE
    for name in ("controls", "search_controls"):
        assert set(doc[name]) == {"behaviour", "hyperparameters"}
        for entry in doc[name].values():
            assert entry["classifier"] in ("logreg", "rf") and set(entry["candidates"]) == {"logreg", "rf"}
            assert entry["accuracy"] == max(entry["candidates"].values())
            assert entry["accuracy"] < 0.7  # at chance by construction (curves and hyperparameters permuted)
    strongest = max(doc["controls"], key=lambda k: (doc["controls"][k]["ci"][1], doc["controls"][k]["accuracy"]))
    assert doc["strongest_control"] == strongest
    held = doc["heldout_architecture"]
    assert held["level"] == "architecture" and held["levels"] == ["conv2_relu", "mlp3_relu"]
    # each architecture's set-aside networks, tested by a fit on the other architecture's search networks
    assert sum(v["n_networks"] for v in held["per_level"].values()) == held["n_networks"] == N_SETASIDE
    assert doc["recommendation"]["heldout"] == {
        "accuracy": held["accuracy"], "ci": held["ci"], "level": "architecture", "transfers": held["transfers"],
        "control": {"accuracy": held["control_accuracy"], "ci": held["control_ci"],
                    "classifier": held["control_classifier"]}}
    assert held["transfers"] is (held["ci"][0] >= TARGET and held["ci"][0] > held["control_ci"][1])
    for entry in (*doc["controls"].values(), held, {"accuracy": held["control_accuracy"], "ci": held["control_ci"]}):
        assert 0 <= entry["ci"][0] <= entry["accuracy"] <= entry["ci"][1] <= 1
    statistics = doc["importances"]["statistics"]
    assert 0 < len(statistics) <= 10
    assert [s["importance"] for s in statistics] == sorted((s["importance"] for s in statistics), reverse=True)
    assert {s["name"].split(".")[0] for s in statistics} <= set(rec["layers"])
    sessions = RecordingProtocol(n_sessions=rec["n_sessions"], window=tuple(rec["window"])).session_indices(6)
    assert [s["session"] for s in doc["importances"]["sessions"]] == sessions.tolist()


def test_curves_cover_every_observable_on_grids_clipped_to_the_bank(feasible: Planned, generic: Modality) -> None:
    doc, q = feasible.doc, feasible.question
    rec = doc["recommendation"]
    assert list(doc["curves"]) == list(q.observables)
    n_layers = len(rec["layers"])
    available = round(rec["window"][1] * (q.n_checkpoints - 1)) + 1
    for obs, axes in doc["curves"].items():
        units = [p["x"] for p in axes["units"]]
        most = min(q.max_units[obs], q.per_group[obs] * n_layers)
        assert units == sorted(set(units)) and units[0] >= n_layers and units[-1] == most
        sessions = [p["x"] for p in axes["sessions"]]
        assert sessions == sorted(set(sessions)) and sessions[0] >= 1
        assert sessions[-1] <= min(q.max_sessions, available)
        repeats = [p["repeats"] for p in axes["noise"]]
        assert repeats == sorted(set(repeats)) and repeats[0] == 1 and repeats[-1] <= generic.max_repeats
        assert [p["x"] for p in axes["noise"]] == [generic.noise_for(r) for r in repeats]
        for points in axes.values():
            for p in points:
                assert 0 <= p["accuracy"] <= 1 and 0 <= p["ci"][0] <= p["ci"][1] <= 1
    # the recommended protocol itself lies on each of its own observable's curves, with its search accuracy
    own = doc["curves"][rec["observable"]]
    for axis, key in (("units", "n_units"), ("sessions", "n_sessions"), ("noise", "repeats")):
        field = "repeats" if axis == "noise" else "x"
        assert {p[field]: p["accuracy"] for p in own[axis]}[rec[key]] == rec["accuracy"], axis


def test_progress_reports_each_phase(feasible: Planned) -> None:
    labels = [(i, label, total) for i, (label, total) in enumerate(feasible.events) if label != "advance"]
    assert [(label, total) for _, label, total in labels[:3]] == list(zip(PHASES, (15, 1, 1), strict=True))
    assert labels[3][1] == "accuracy vs units, sessions, noise"
    bounds = [i for i, _, _ in labels] + [len(feasible.events)]
    advances = [bounds[k + 1] - bounds[k] - 1 for k in range(len(labels))]
    assert labels[4][1] == "power table: units and sessions × animals"
    assert advances == [15, 1, 1, labels[3][2], labels[4][2]]
    assert labels[3][2] == sum(len(points) for axes in feasible.doc["curves"].values() for points in axes.values())
    power = feasible.doc["power_table"]
    assert labels[4][2] == len(power["units"]) + len(power["sessions"])


def test_a_second_plan_resumes_the_study_and_gives_the_same_answer(feasible: Planned, plan_bank: TrajectoryBank,
                                                                   generic: Modality) -> None:
    seen: list[bool] = []
    again = plan(plan_bank, feasible.question, generic, storage=feasible.storage, study_name="plan",
                 curves=False, on_trial=lambda result, new: seen.append(new))
    assert seen == [False] * 15
    for key in ("trials", "recommendation", "candidate", "verification", "best", "pareto", "insufficient",
                "controls", "search_controls", "setaside", "verdict", "feasible", "confusion_matrix", "importances",
                "heldout_architecture"):
        assert again[key] == feasible.doc[key], key


def test_a_timeout_that_finishes_no_trial(plan_bank: TrajectoryBank, generic: Modality, tmp_path: Path) -> None:
    with pytest.raises(AdvisorError) as err:
        _plan(plan_bank, _question(plan_bank, generic, n_trials=5), generic, tmp_path, timeout=0)
    assert str(err.value) == "the search finished no trial (is --timeout too short?)"


def test_a_plan_with_architecture_held_out(plan_bank: TrajectoryBank, generic: Modality, tmp_path: Path) -> None:
    question = _question(plan_bank, generic, heldout="architecture", n_trials=6)
    doc = _plan(plan_bank, question, generic, tmp_path, curves=False).doc
    assert doc["question"]["heldout"] == "architecture"
    assert doc["heldout_architecture"] is None  # the main score already is the held-out one
    # every set-aside network tested once, by a fit on the search networks of the other family
    assert np.sum(doc["confusion_matrix"]) == N_SETASIDE and doc["setaside"]["n_networks"] == N_SETASIDE
    assert all(c["ci"][0] <= c["accuracy"] <= c["ci"][1] for c in doc["controls"].values())


def test_a_robust_plan_also_leaves_one_architecture_out(plan_bank: TrajectoryBank, generic: Modality,
                                                         tmp_path: Path) -> None:
    """--robust: every trial carries its leave-one-architecture-out score over the search networks, and is
    feasible only where that lower bound reaches the target too; the plan is recommended only if the set-aside
    test leaving one architecture out transfers."""
    question = _question(plan_bank, generic, robust=True, n_trials=6)
    assert question.robust and question.key("h", "generic") != _question(plan_bank, generic).key("h", "generic")
    doc = _plan(plan_bank, question, generic, tmp_path, curves=False).doc
    assert doc["question"]["robust"] is True
    for t in doc["trials"]:
        assert t["heldout_ci"] is not None and 0 <= t["heldout_ci"][0] <= t["heldout_accuracy"] <= 1
        if t["feasible"]:
            assert t["heldout_ci"][0] >= TARGET and t["ci"][0] >= TARGET
    held = doc["heldout_architecture"]
    assert doc["feasible"] is (doc["verdict"] == "recommended")
    if doc["verdict"] == "recommended":
        assert held["transfers"] and doc["recommendation"]["heldout"]["transfers"]
    if doc["candidate"] is not None and not held["transfers"]:
        assert doc["verdict"] in ("setaside_below_target", "setaside_not_beyond_controls",
                                  "setaside_does_not_transfer")


def test_robust_needs_two_architectures(tiny_bank: SimulationResult, generic: Modality) -> None:
    with pytest.raises(AdvisorError) as err:
        _question(tiny_bank.bank, generic, robust=True, n_splits=3)
    assert str(err.value) == ("--robust needs a bank with at least 2 architectures (it leaves one out at a time); "
                              "this one has only mlp3_relu")


def test_bank_document(plan_bank: TrajectoryBank) -> None:
    assert bank_document(plan_bank, None) == {
        "preset": "plan", "hash": plan_bank.hash, "path": str(plan_bank.path), "n_networks": 96,
        "rules": ["hebbian", "sgdm"], "architectures": ["conv2_relu", "mlp3_relu"], "tasks": ["digits"],
        "n_steps": 150, "n_checkpoints": 6,
        "units_per_group": {"activations": 24, "activity_change": 24, "weights": 48}}
    assert bank_document(plan_bank, "quick")["preset"] == "quick"


def test_trial_document() -> None:
    assert trial_document(None, "hours") is None
    t = TrialResult(4, "weights", 12, ("early",), 3, (0.0, 0.5), 2, "gaussian", 0.7071, 5.0, 0.6, (0.5, 0.7), 0.6,
                    False)
    assert trial_document(t, "hours") == t.to_dict() | {"cost_unit": "hours", "trial": 4, "chronic": True,
                                                         "description": t.describe()}


# ---------------------------------------------------------------------------------------------- reports
def _with_run(doc: dict[str, Any], bank: TrajectoryBank) -> dict[str, Any]:
    return doc | {"run_id": "x", "command": "advisor plan", "bank": bank_document(bank, None)}


def test_the_reports_render_a_plan(feasible: Planned, plan_bank: TrajectoryBank, tmp_path: Path) -> None:
    from advisor.application.reports import write_reports

    paths = write_reports(_with_run(feasible.doc, plan_bank), tmp_path)
    assert set(paths) == {"md", "html", "pdf"} and all(p.stat().st_size > 0 for p in paths.values())
    markdown = paths["md"].read_text()
    assert "## Recommendation" in markdown and "## Pareto front" in markdown
    assert paths["pdf"].read_bytes().startswith(b"%PDF")


def test_the_reports_render_infeasible_and_rejected_plans(infeasible: Planned, rejected: tuple[Planned, list[int]],
                                                          plan_bank: TrajectoryBank, tmp_path: Path) -> None:
    from advisor.application.reports import write_reports

    markdown = write_reports(_with_run(infeasible.doc, plan_bank), tmp_path / "no", formats=("md",))["md"]
    assert "No protocol met the target" in markdown.read_text()
    markdown = write_reports(_with_run(rejected[0].doc, plan_bank), tmp_path / "re", formats=("md",))["md"]
    assert f"trial {rejected[1][0]}" in markdown.read_text()


# ------------------------------------------------------------------------------------------ known defects
def test_curves_around_a_weights_trial_for_the_other_observables(plan_bank: TrajectoryBank,
                                                                 generic: Modality) -> None:
    question = _question(plan_bank, generic, n_splits=3)
    trial = TrialResult(0, "weights", 100, ("early", "middle", "deep"), 4, (0.0, 1.0), 1, "gaussian", 1.0, 1.0,
                        0.5, (0.4, 0.6), 0.5, False)
    curves = sensitivity_curves(make_scorer(plan_bank, question), trial, question, generic)
    assert set(curves) == set(question.observables)


class _DivergedLoss:
    """``plan_bank`` as if network 0 had diverged at the end (the simulator records its loss as NaN)."""

    def __init__(self, bank: TrajectoryBank) -> None:
        self._bank, self.metadata, self.hash, self.path, self.config = (bank, bank.metadata, bank.hash, bank.path,
                                                                        bank.config)

    def __getitem__(self, name: str) -> np.ndarray:
        array = self._bank[name]
        if name == "loss":
            array = np.array(array)
            array[0, -1] = np.nan
        return array


def test_the_control_survives_a_diverged_network(plan_bank: TrajectoryBank, generic: Modality) -> None:
    bank = _DivergedLoss(plan_bank)
    question = _question(plan_bank, generic, n_splits=3)
    trial = TrialResult(0, "activations", 24, ("deep",), 6, (0.0, 1.0), 4, "gaussian", 0.5, 1.0, 0.9, (0.8, 1.0),
                        0.9, True)
    analysis = analyse(bank, make_scorer(bank, question), trial, question, generic)
    assert all(math.isfinite(c["accuracy"]) for c in analysis["controls"].values())
    assert math.isfinite(analysis["search_controls"]["behaviour"]["accuracy"])

"""The design search (``advisor.application.search``): the Pareto front, storages, the Optuna study (determinism,
resume, the
question guard, stored constraints, bounds, the trial cache), the set-aside partition, feasibility beyond the
controls and the fresh-seed re-check behind a recommendation.

The study tests run on the session's ``plan_bank`` (96 networks in which the rule is identifiable and the
controls sit at chance), half of them set aside, with the ridge classifier, 5 splits (two repeats of 4-fold
cross-validation: with one repeat, the corrected t interval has 3 degrees of freedom and a chance-level
control's upper bound reaches 1, which no protocol clears) and 12-20 trials: each study takes about a second
once the controls are scored (they are kept per process). The set-aside networks must never reach the search:
the scorer, the study and the re-check give the same numbers on a bank whose set-aside networks were replaced
by garbage.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from plan_helpers import PLAN_SETASIDE, GarbageSetaside
from plan_helpers import question as plan_question

from advisor.application import search
from advisor.application.search import (
    LAYER_SUBSETS,
    MIN_SESSIONS,
    STRATA,
    WINDOWS,
    Question,
    Scorer,
    TrialResult,
    check_storage,
    constraint_value,
    evaluate_choice,
    make_scorer,
    pareto_front,
    question_from_dict,
    recommend,
    run_study,
    setaside_partition,
    storage_for,
    verify,
)
from advisor.errors import AdvisorError
from advisor.science.cost import Modality, load_modality
from advisor.science.evaluation import ControlScores, Scores
from advisor.science.protocol import RecordingProtocol

if TYPE_CHECKING:
    from simulator.bank import TrajectoryBank

TARGET = 0.75
BAD_STORAGE = ("--storage must be journal:PATH, a .log/.journal file or a database URL such as "
               "postgresql+psycopg://user@host/db; got {!r}")


# ----------------------------------------------------------------------------------------------- helpers
def _trial(number: int, cost: float, accuracy: float, *, feasible: bool = False, **changes: Any) -> TrialResult:
    """A hand-made trial; ``changes`` override the protocol fields (observable, n_units, layers, ...)."""
    fields: dict[str, Any] = {
        "observable": "activations", "n_units": 10 + number, "layers": ("deep",), "n_sessions": 3,
        "window": (0.0, 1.0), "repeats": 1, "noise_model": "gaussian", "noise": 1.0,
        "ci": (accuracy - 0.1, min(1.0, accuracy + 0.1)), "balanced_accuracy": accuracy,
    }
    fields.update(changes)
    return TrialResult(number=number, cost=cost, accuracy=accuracy, feasible=feasible, **fields)


def _question(bank: TrajectoryBank, modality: Modality, **changes: Any) -> Question:
    return plan_question(bank, modality, **{"target_accuracy": TARGET, "n_trials": 12, "n_splits": 5, **changes})


def _run(bank: TrajectoryBank, question: Question, modality: Modality, storage: str, name: str = "study",
         on_trial: Callable[[TrialResult, bool], None] | None = None) -> list[TrialResult]:
    return run_study(make_scorer(bank, question), question, modality, storage=storage, study_name=name,
                     on_trial=on_trial)


def _dicts(trials: list[TrialResult]) -> list[dict[str, Any]]:
    return [t.to_dict() for t in trials]


@pytest.fixture(scope="module")
def generic() -> Modality:
    return load_modality("generic")


@pytest.fixture(scope="module")
def question(plan_bank: TrajectoryBank, generic: Modality) -> Question:
    return _question(plan_bank, generic)


@pytest.fixture(scope="module")
def study(plan_bank: TrajectoryBank, generic: Modality, question: Question,
          tmp_path_factory: pytest.TempPathFactory) -> tuple[list[TrialResult], str]:
    """One 12-trial study of ``question`` with the generic modality: (its trials, its storage URL)."""
    url = f"journal:{tmp_path_factory.mktemp('study') / 'study.log'}"
    return _run(plan_bank, question, generic, url), url


# ------------------------------------------------------------------------------------------ pareto front
def test_pareto_front_drops_dominated_trials_and_sorts_by_cost() -> None:
    trials = [_trial(0, 5.0, 0.9), _trial(1, 2.0, 0.6), _trial(2, 3.0, 0.5), _trial(3, 8.0, 0.85),
              _trial(4, 1.0, 0.4)]
    assert [t.number for t in pareto_front(trials)] == [4, 1, 0]


@pytest.mark.parametrize(("trials", "front"), [
    ([_trial(1, 2.0, 0.7), _trial(0, 2.0, 0.7)], [0]),  # tie in both: the earliest trial stays
    ([_trial(0, 2.0, 0.7), _trial(1, 2.0, 0.8)], [1]),  # equal cost: the more accurate
    ([_trial(0, 2.0, 0.8), _trial(1, 4.0, 0.8)], [0]),  # equal accuracy: the cheaper
    ([_trial(2, 4.0, 0.8), _trial(1, 2.0, 0.8), _trial(0, 2.0, 0.8)], [0]),
    ([], []),
])
def test_pareto_front_ties(trials: list[TrialResult], front: list[int]) -> None:
    assert [t.number for t in pareto_front(trials)] == front
    assert [t.number for t in pareto_front(trials[::-1])] == front


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 6), st.integers(0, 6)), max_size=12))
def test_pareto_front_is_the_set_of_non_dominated_trials(points: list[tuple[int, int]]) -> None:
    trials = [_trial(i, float(c), a / 6) for i, (c, a) in enumerate(points)]
    front = pareto_front(trials)
    assert all(a.cost < b.cost and a.accuracy < b.accuracy for a, b in itertools.pairwise(front))
    for t in trials:
        if t not in front:  # dominated: some front trial is at most as costly and at least as accurate
            assert any(f.cost <= t.cost and f.accuracy >= t.accuracy for f in front)
        else:  # not dominated by anyone
            assert not any((o.cost <= t.cost and o.accuracy >= t.accuracy)
                           and (o.cost < t.cost or o.accuracy > t.accuracy) for o in trials)


# ------------------------------------------------------------------------------------------- trial result
def test_trial_result_round_trips_through_json() -> None:
    t = _trial(7, 3.5, 0.8, feasible=True, layers=("early", "deep"), window=(0.0, 0.5))
    d = json.loads(json.dumps(t.to_dict(), allow_nan=False))
    assert d["layers"] == ["early", "deep"] and d["window"] == [0.0, 0.5] and d["ci"] == list(t.ci)
    assert TrialResult.from_dict(d) == t


def test_trial_result_describes_and_rebuilds_its_protocol() -> None:
    weights = _trial(0, 1.0, 0.5, observable="weights", n_units=12, layers=("early", "deep"), window=(0.0, 0.5))
    assert weights.describe() == ("12 synapses of weights (early, deep) at 3 sessions within the first 50% of "
                                  "learning, the first before training starts, gaussian noise 1 (1 repeat)")
    acts = _trial(1, 1.0, 0.5, n_units=40, repeats=4, noise=0.5)
    assert acts.describe() == ("40 units of activations (deep) at 3 sessions spread evenly over all of learning, "
                               "the first before training starts, gaussian noise 0.5 (4 repeats)")
    assert acts.protocol(9) == RecordingProtocol(observable="activations", n_units=40, layers=("deep",),
                                                 n_sessions=3, window=(0.0, 1.0), noise_model="gaussian",
                                                 noise=0.5, seed=9)


def test_question_key_names_the_question_on_a_bank_and_modality(question: Question) -> None:
    key = question.key("bankhash", "generic")
    assert len(key) == 12 and int(key, 16) >= 0
    assert question.key("bankhash", "generic") == key
    assert dataclasses.replace(question, n_trials=500).key("bankhash", "generic") == key  # resumable
    assert question.key("otherbank", "generic") != key
    assert question.key("bankhash", "two_photon") != key
    for change in ({"target_accuracy": 0.8}, {"n_splits": 9}, {"seed": 1}, {"classifier": "lda"},
                   {"setaside": 0.3}):
        assert dataclasses.replace(question, **change).key("bankhash", "generic") != key, change


def test_question_round_trips_through_json(question: Question) -> None:
    assert question_from_dict(json.loads(json.dumps(dataclasses.asdict(question)))) == question


# ---------------------------------------------------------------------------------------------- storages
def test_journal_storages(tmp_path: Path) -> None:
    from optuna.storages import JournalStorage

    for url, path in ((f"journal:{tmp_path / 'a.log'}", tmp_path / "a.log"),
                      (str(tmp_path / "b.log"), tmp_path / "b.log"),
                      (str(tmp_path / "c.journal"), tmp_path / "c.journal")):
        assert isinstance(storage_for(url), JournalStorage)
        assert path.exists()


def test_sqlite_url_gives_an_rdb_storage(tmp_path: Path) -> None:
    from optuna.storages import RDBStorage

    assert isinstance(storage_for(f"sqlite:///{tmp_path / 'optuna.db'}"), RDBStorage)
    assert (tmp_path / "optuna.db").exists()


@pytest.mark.parametrize("url", ["nope", "optuna.db", "journal", str(Path("results") / "study.txt")])
def test_a_storage_that_is_neither_journal_nor_url_is_refused(url: str) -> None:
    with pytest.raises(AdvisorError) as err:
        storage_for(url)
    assert str(err.value) == BAD_STORAGE.format(url)


def test_an_unopenable_database_is_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'missing' / 'optuna.db'}"
    with pytest.raises(AdvisorError) as err:
        storage_for(url)
    assert str(err.value) == f"--storage {url!r} cannot be opened: (sqlite3.OperationalError) unable to open " \
                             "database file"
    with pytest.raises(AdvisorError) as err:
        storage_for("nosuchdialect://host/db")
    assert str(err.value).startswith("--storage 'nosuchdialect://host/db' cannot be opened: ")
    assert "\n" not in str(err.value)


def test_an_unreachable_postgresql_server_fails_in_seconds_on_one_line() -> None:
    pytest.importorskip("psycopg", reason="the psycopg driver is not installed, so no PostgreSQL URL can connect")
    url = "postgresql+psycopg://advisor@127.0.0.1:1/advisor"
    start = time.perf_counter()
    with pytest.raises(AdvisorError) as err:
        storage_for(url)
    assert time.perf_counter() - start < 10
    assert str(err.value).startswith(f"--storage {url!r} cannot be opened: ")
    assert "\n" not in str(err.value)


def test_a_journal_in_a_missing_folder_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "study.log"
    with pytest.raises(AdvisorError, match="cannot be opened") as err:
        storage_for(f"journal:{path}")
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_check_storage_checks_syntax_without_creating_a_journal(tmp_path: Path) -> None:
    path = tmp_path / "study.log"
    check_storage(f"journal:{path}")
    check_storage(str(path))
    assert not path.exists()
    with pytest.raises(AdvisorError) as err:
        check_storage("nope")
    assert str(err.value) == BAD_STORAGE.format("nope")
    with pytest.raises(AdvisorError, match="cannot be opened"):
        check_storage(f"sqlite:///{tmp_path / 'missing' / 'optuna.db'}")


# ---------------------------------------------------------------------------------------------- the scorer
def test_scorer_keeps_the_questions_search_networks_and_splits(plan_bank: TrajectoryBank,
                                                               question: Question) -> None:
    scorer = make_scorer(plan_bank, question)
    partition = scorer.partition
    assert partition is not None and partition.share == PLAN_SETASIDE
    assert partition.members.all()  # every rule of the bank is in the question
    assert np.array_equal(scorer.keep, partition.search) and not (scorer.keep & partition.setaside).any()
    assert int(scorer.keep.sum()) == len(scorer.y) == 48 and int(partition.setaside.sum()) == 48
    assert scorer.labels == ["hebbian", "sgdm"] and scorer.n_checkpoints == 6
    assert len(scorer.splits) == 8  # 5 splits requested: two whole repeats of 4-fold cross-validation
    tested = np.zeros(len(scorer.y), dtype=int)
    for train, test in scorer.splits:
        assert len(test) == 12 and not set(train) & set(test)
        assert sorted(np.unique(scorer.y[test], return_counts=True)[1]) == [6, 6]
        tested[test] += 1
    assert (tested == 2).all()
    other = make_scorer(plan_bank, question, seed=5)
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(scorer.splits, other.splits, strict=True))


def test_the_controls_are_scored_on_the_search_splits(plan_bank: TrajectoryBank, question: Question) -> None:
    scorer = make_scorer(plan_bank, question)
    assert set(scorer.controls) == {"behaviour", "hyperparameters"}
    for control in scorer.controls.values():
        assert control.classifier in ("logreg", "rf") and set(control.candidates) == {"logreg", "rf"}
        assert control.scores.ci_method == "corrected_t" and control.scores.n_tested == 48
        assert len(control.scores.split_accuracies) == len(scorer.splits)
    assert scorer.control_high == max(c.scores.ci[1] for c in scorer.controls.values())
    bare = make_scorer(plan_bank, question, controls=False)
    assert bare.controls == {} and bare.control_high == -math.inf


def test_a_rechecks_scorer_keeps_the_same_partition(plan_bank: TrajectoryBank, question: Question) -> None:
    first = make_scorer(plan_bank, question)
    assert first.partition is not None
    for seed in (5, 1001, 1002):
        other = make_scorer(plan_bank, question, seed=seed, controls=False)
        assert other.partition is not None and np.array_equal(other.keep, first.keep)
        for name in ("members", "search", "setaside"):
            assert np.array_equal(getattr(other.partition, name), getattr(first.partition, name)), name


def _strata(metadata: Any) -> np.ndarray:
    return metadata[list(STRATA)].astype(str).agg("|".join, axis=1).to_numpy()


def test_the_setaside_networks_are_a_stratified_deterministic_draw(plan_bank: TrajectoryBank) -> None:
    meta = plan_bank.metadata.reset_index(drop=True)
    strata = _strata(meta)
    rules = ("hebbian", "sgdm")
    for share in (0.05, 0.25, 0.5):
        partition = setaside_partition(meta, rules, "rule", share, seed=0)
        assert not (partition.search & partition.setaside).any()
        assert np.array_equal(partition.search | partition.setaside, partition.members)
        for stratum in sorted(set(strata)):  # rule x architecture x task x curriculum: 4 cells of 24
            rows = strata == stratum
            assert int(partition.setaside[rows].sum()) == max(1, round(share * 24)), (share, stratum)
        again = setaside_partition(meta, rules, "rule", share, seed=0)
        assert np.array_equal(again.setaside, partition.setaside)
        other = setaside_partition(meta, rules, "rule", share, seed=1)
        assert not np.array_equal(other.setaside, partition.setaside)
        assert sorted(_strata(meta[other.setaside])) == sorted(_strata(meta[partition.setaside]))


def test_only_the_questions_rules_are_drawn_from() -> None:
    meta = pd.DataFrame({"rule": np.repeat(["a", "b", "c"], 8), "architecture": "mlp", "task": "digits",
                         "curriculum": "standard"})
    partition = setaside_partition(meta, ("a", "c"), "rule", 0.25, seed=0)
    assert np.array_equal(partition.members, meta["rule"].isin(["a", "c"]).to_numpy())
    assert not (partition.setaside | partition.search)[meta["rule"].to_numpy() == "b"].any()
    assert int(partition.setaside.sum()) == 4


@pytest.mark.parametrize(("share", "message"), [
    (0.0, "--setaside must be a share in [0.05, 0.5] of the networks; got 0"),
    (0.9, "--setaside must be a share in [0.05, 0.5] of the networks; got 0.9"),
    (0.04, "--setaside must be a share in [0.05, 0.5] of the networks; got 0.04"),
    (math.nan, "--setaside must be a share in [0.05, 0.5] of the networks; got nan"),
    (math.inf, "--setaside must be a share in [0.05, 0.5] of the networks; got inf"),
    ("0.2", "--setaside must be a share in [0.05, 0.5] of the networks; got '0.2'"),
])
def test_a_share_outside_the_range_is_refused(plan_bank: TrajectoryBank, share: Any, message: str) -> None:
    with pytest.raises(AdvisorError) as err:
        setaside_partition(plan_bank.metadata, ("hebbian", "sgdm"), "rule", share, seed=0)
    assert str(err.value) == message


def test_a_share_that_leaves_too_few_networks_of_a_rule_is_refused() -> None:
    meta = pd.DataFrame({"rule": ["a"] * 8 + ["b"] * 3, "architecture": "mlp", "task": "digits",
                         "curriculum": "standard"})
    with pytest.raises(AdvisorError) as err:
        setaside_partition(meta, ("a", "b"), "rule", 0.25, seed=0)
    assert str(err.value) == ("--setaside 0.25 leaves 2 search and 1 set-aside networks of rule 'b'; each side "
                              "needs at least 2 (simulate more networks per rule, or change the share within "
                              "[0.05, 0.5])")
    with pytest.raises(AdvisorError, match=r"leaves 1 search and 2 set-aside networks of rule 'b'"):
        setaside_partition(meta, ("a", "b"), "rule", 0.5, seed=0)
    ok = setaside_partition(meta.assign(rule=["a"] * 6 + ["b"] * 5), ("a", "b"), "rule", 0.5, seed=0)
    assert int(ok.setaside.sum()) == 3 + 2 and int(ok.search.sum()) == 3 + 3


def test_setaside_networks_never_reach_the_search(plan_bank: TrajectoryBank, generic: Modality,
                                                  question: Question, study: tuple[list[TrialResult], str],
                                                  tmp_path: Path) -> None:
    clean = make_scorer(plan_bank, question)
    assert clean.partition is not None
    garbage = GarbageSetaside(plan_bank, clean.partition.setaside)
    dirty = make_scorer(garbage, question)
    assert dirty.partition is not None
    assert np.array_equal(dirty.partition.setaside, clean.partition.setaside)
    assert {k: c.to_dict() for k, c in dirty.controls.items()} == {k: c.to_dict() for k, c in clean.controls.items()}
    protocol = RecordingProtocol(observable="activations", n_units=24, layers=("early",), n_sessions=3)
    garbled = dirty.features(protocol).X != clean.features(protocol).X
    assert garbled[clean.partition.setaside].any() and not garbled[clean.partition.search].any()
    trials = run_study(dirty, question, generic, storage=f"journal:{tmp_path / 'g.log'}", study_name="study")
    assert _dicts(trials) == _dicts(study[0])
    best = max(trials, key=lambda t: t.accuracy)
    seeds = [1001, 1002]
    assert verify(best, garbage, question, seeds) == verify(best, plan_bank, question, seeds)


def test_scorer_caches_plain_scores_only(plan_bank: TrajectoryBank, question: Question,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    scorer = make_scorer(plan_bank, question)
    protocol = RecordingProtocol(observable="activations", n_units=24, layers=("deep",), n_sessions=3)
    first = scorer.score(protocol)
    calls: list[RecordingProtocol] = []
    original = scorer.features

    def counting(p: RecordingProtocol) -> Any:
        calls.append(p)
        return original(p)

    monkeypatch.setattr(scorer, "features", counting)
    assert scorer.score(protocol) is first and calls == []
    with_importances = scorer.score(protocol, importances=True)
    assert with_importances.feature_importance is not None and len(calls) == 1
    scorer.score(protocol, splits=scorer.splits[:1])
    assert len(calls) == 2 and scorer.cache[protocol] is first


# ----------------------------------------------------------------------------------------------- the study
def test_same_seed_gives_the_same_trials_and_recommendation(plan_bank: TrajectoryBank, generic: Modality,
                                                           question: Question, study: tuple[list[TrialResult], str],
                                                           tmp_path: Path) -> None:
    trials, _ = study
    again = _run(plan_bank, question, generic, f"journal:{tmp_path / 'again.log'}")
    on_sqlite = _run(plan_bank, question, generic, f"sqlite:///{tmp_path / 'optuna.db'}")
    assert _dicts(again) == _dicts(trials) == _dicts(on_sqlite)
    assert [t.number for t in trials] == list(range(question.n_trials))
    seeds = [1001, 1002]
    first, second = recommend(trials, plan_bank, question, seeds), recommend(again, plan_bank, question, seeds)
    assert first == second


def test_another_seed_explores_other_protocols(plan_bank: TrajectoryBank, generic: Modality, question: Question,
                                               study: tuple[list[TrialResult], str], tmp_path: Path) -> None:
    other = _run(plan_bank, dataclasses.replace(question, seed=1), generic, f"journal:{tmp_path / 's.log'}")
    assert _dicts(other) != _dicts(study[0])


def test_a_resumed_study_runs_only_the_missing_trials(plan_bank: TrajectoryBank, generic: Modality,
                                                      question: Question, tmp_path: Path) -> None:
    import optuna

    url = f"journal:{tmp_path / 'resume.log'}"
    seen: list[tuple[int, bool]] = []

    def on_trial(result: TrialResult, new: bool) -> None:
        seen.append((result.number, new))

    first = _run(plan_bank, question, generic, url, on_trial=on_trial)
    assert seen == [(i, True) for i in range(12)]

    seen.clear()
    second = _run(plan_bank, question, generic, url, on_trial=on_trial)
    assert second == first
    assert seen == [(i, False) for i in range(12)]
    assert len(optuna.load_study(study_name="study", storage=storage_for(url)).trials) == 12

    seen.clear()
    more = _run(plan_bank, dataclasses.replace(question, n_trials=15), generic, url, on_trial=on_trial)
    assert seen == [(i, False) for i in range(12)] + [(i, True) for i in range(12, 15)]
    assert more[:12] == first and [t.number for t in more] == list(range(15))

    seen.clear()
    assert _run(plan_bank, dataclasses.replace(question, n_trials=5), generic, url, on_trial=on_trial) == more
    assert seen == [(i, False) for i in range(15)]


def test_a_study_name_is_bound_to_its_question(plan_bank: TrajectoryBank, generic: Modality, question: Question,
                                               study: tuple[list[TrialResult], str]) -> None:
    _, url = study
    for change in ({"target_accuracy": 0.8}, {"n_splits": 4}, {"seed": 3}):
        with pytest.raises(AdvisorError) as err:
            _run(plan_bank, dataclasses.replace(question, **change), generic, url)
        assert str(err.value) == (f"study 'study' in {url} was made for a different question; "
                                  "pass another --study name")
    assert len(_run(plan_bank, dataclasses.replace(question, target_accuracy=0.8, n_trials=3), generic, url,
                    name="other")) == 3


def test_a_study_name_is_bound_to_its_modality(plan_bank: TrajectoryBank, generic: Modality, question: Question,
                                               study: tuple[list[TrialResult], str]) -> None:
    _, url = study
    costly = dataclasses.replace(generic, per_unit_cost=1.0)
    with pytest.raises(AdvisorError, match="different question"):
        _run(plan_bank, question, costly, url)


def test_constraints_and_results_are_stored_on_the_trials(study: tuple[list[TrialResult], str],
                                                         plan_bank: TrajectoryBank, question: Question) -> None:
    import optuna

    trials, url = study
    stored = optuna.load_study(study_name="study", storage=storage_for(url))
    assert [f.number for f in stored.trials] == [t.number for t in trials]
    control_high = make_scorer(plan_bank, question).control_high
    for frozen, result in zip(stored.trials, trials, strict=True):
        gap = max(TARGET - result.ci[0], control_high - result.ci[0] + 1e-9)
        assert frozen.constraints == {"accuracy": pytest.approx(gap)}
        assert frozen.constraints["accuracy"] == constraint_value(result, question, control_high)
        assert frozen.values == [result.cost, result.accuracy]
        assert frozen.user_attrs["result"] == result.to_dict()
        assert result.feasible is (frozen.constraints["accuracy"] <= 0)


def _assert_within_bounds(trials: list[TrialResult], question: Question, modality: Modality,
                          bank: TrajectoryBank) -> None:
    assert len(trials) == question.n_trials
    control_high = make_scorer(bank, question).control_high
    for t in trials:
        assert t.observable in question.observables
        assert ",".join(t.layers) in question.layers and set(t.layers) <= set(modality.layers)
        assert len(t.layers) <= t.n_units <= min(question.max_units[t.observable],
                                                 question.per_group[t.observable] * len(t.layers))
        assert t.window in {(0.0, w) for w in WINDOWS}
        available = round(t.window[1] * (question.n_checkpoints - 1)) + 1
        assert MIN_SESSIONS <= t.n_sessions <= min(question.max_sessions, available)
        assert 1 <= t.repeats <= modality.max_repeats
        assert t.noise_model == modality.noise_model and t.noise == modality.noise_for(t.repeats)
        assert t.cost == modality.cost(t.n_units, t.n_sessions, t.repeats)
        assert t.beyond_control is (t.ci[0] > control_high)
        assert t.feasible is (t.ci[0] >= question.target_accuracy and t.beyond_control)
        assert 0.0 <= t.ci[0] <= t.ci[1] <= 1.0 and 0.0 <= t.accuracy <= 1.0
        assert t.chronic is ("chronic" in modality.sampling)
        modality.check(t.observable, t.n_units, t.n_sessions, t.layers, t.chronic)
        t.protocol(0).check({t.observable: bank[t.observable].shape})


@pytest.mark.parametrize(("key", "bounds"), [
    ("generic", {}),
    ("generic", {"observable": "weights", "max_units": 20, "max_sessions": 4}),
    ("two_photon", {"max_units": 30}),
    ("spine_imaging", {}),
    ("ephys", {"max_sessions": 3}),
    ("paired_patch", {"max_units": 60}),
])
def test_every_trial_stays_within_the_bounds(plan_bank: TrajectoryBank, key: str, bounds: dict[str, Any],
                                             tmp_path: Path) -> None:
    modality = load_modality(key)
    q = _question(plan_bank, modality, n_trials=15, **bounds)
    _assert_within_bounds(_run(plan_bank, q, modality, f"journal:{tmp_path / 's.log'}"), q, modality, plan_bank)


def test_an_acute_only_modality_gets_acute_protocols(plan_bank: TrajectoryBank, tmp_path: Path) -> None:
    modality = load_modality("paired_patch")
    q = _question(plan_bank, modality, n_trials=5)
    for t in _run(plan_bank, q, modality, f"journal:{tmp_path / 's.log'}"):
        assert t.chronic is False and t.protocol(0).chronic is False
        assert t.describe().endswith(", new units each session")


def test_a_protocol_proposed_twice_is_scored_once(plan_bank: TrajectoryBank, generic: Modality, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # 3 units, 2 sessions, 1 repeat: only the layer subset and the window vary, 21 protocols for 20 trials
    single = dataclasses.replace(generic, max_repeats=1)
    q = _question(plan_bank, single, observable="activations", max_units=3, max_sessions=2, n_trials=20)
    featurized: list[RecordingProtocol] = []
    original = search.Scorer.features

    def counting(self: search.Scorer, protocol: RecordingProtocol) -> Any:
        featurized.append(protocol)
        return original(self, protocol)

    monkeypatch.setattr(search.Scorer, "features", counting)
    trials = _run(plan_bank, q, single, f"journal:{tmp_path / 's.log'}")
    protocols = [t.protocol(q.seed) for t in trials]
    assert len(set(protocols)) < len(trials)  # the sampler did propose duplicates
    assert sorted(map(repr, featurized)) == sorted(map(repr, set(protocols)))
    by_protocol: dict[RecordingProtocol, TrialResult] = {}
    for p, t in zip(protocols, trials, strict=True):
        first = by_protocol.setdefault(p, t)
        assert (t.accuracy, t.ci, t.cost) == (first.accuracy, first.ci, first.cost)


def test_layer_subsets_are_every_non_empty_subset() -> None:
    assert LAYER_SUBSETS == ("early", "middle", "deep", "early,middle", "early,deep", "middle,deep",
                             "early,middle,deep")


# ------------------------------------------------------------------------------------ re-check, recommend
def test_verify_rescores_with_fresh_seeds(plan_bank: TrajectoryBank, question: Question,
                                          study: tuple[list[TrialResult], str]) -> None:
    trial = max(study[0], key=lambda t: t.accuracy)
    check = verify(trial, plan_bank, question, [11, 12])
    assert set(check) == {"accuracy", "ci", "per_seed", "seeds", "meets_target"}
    assert check["seeds"] == [11, 12] and len(check["per_seed"]) == 2
    expected = [make_scorer(plan_bank, question, seed=s).score(trial.protocol(s)).accuracy for s in (11, 12)]
    assert check["per_seed"] == pytest.approx(expected)
    assert check["accuracy"] == pytest.approx(np.mean(expected))
    assert check["ci"][0] <= check["ci"][1]
    searched = make_scorer(plan_bank, question).score(trial.protocol(question.seed)).accuracy
    assert searched == trial.accuracy and expected != [searched, searched]  # the seeds really are fresh
    assert verify(trial, plan_bank, question, [11, 12]) == check


def test_the_recheck_asks_what_the_search_asked(plan_bank: TrajectoryBank, question: Question,
                                                study: tuple[list[TrialResult], str]) -> None:
    trial = max(study[0], key=lambda t: t.accuracy)
    check = verify(trial, plan_bank, question, [11, 12])
    between = dataclasses.replace(question, target_accuracy=(check["ci"][0] + check["accuracy"]) / 2)
    assert verify(trial, plan_bank, between, [11, 12])["meets_target"] is False
    low = dataclasses.replace(question, target_accuracy=0.05)
    assert verify(trial, plan_bank, low, [11, 12])["meets_target"] is True
    # the lower bound must also clear the strongest control's upper bound, as in the search
    assert verify(trial, plan_bank, low, [11, 12], control_high=check["ci"][0])["meets_target"] is False
    assert verify(trial, plan_bank, low, [11, 12], control_high=check["ci"][0] - 0.01)["meets_target"] is True


def _control(high: float) -> ControlScores:
    scores = Scores(high - 0.1, (high - 0.2, high), high - 0.1, [high - 0.1], np.eye(2, dtype=np.int64))
    return ControlScores("behaviour", "rf", scores, {"rf": high - 0.1, "logreg": 0.5})


def test_a_trial_that_reaches_the_target_but_not_beyond_a_control_is_infeasible(
        plan_bank: TrajectoryBank, generic: Modality) -> None:
    q = _question(plan_bank, generic, target_accuracy=0.6)
    choice = {"observable": "activations", "n_units": 24, "layers": ("early",), "n_sessions": 3,
              "window": (0.0, 1.0), "repeats": 16}
    real = make_scorer(plan_bank, q)
    result = evaluate_choice(choice, real, generic, q, 0)
    assert result.ci[0] >= q.target_accuracy and result.ci[0] > real.control_high
    assert result.feasible is True and result.beyond_control is True
    assert constraint_value(result, q, real.control_high) <= 0
    strong = dataclasses.replace(real, controls={"behaviour": _control(result.ci[0])}, cache={})
    assert strong.control_high == result.ci[0]
    blocked = evaluate_choice(choice, strong, generic, q, 0)
    assert (blocked.accuracy, blocked.ci) == (result.accuracy, result.ci)  # same protocol, same score
    assert blocked.ci[0] >= q.target_accuracy  # it reaches the target ...
    assert blocked.beyond_control is False and blocked.feasible is False  # ... but not beyond the control
    assert constraint_value(blocked, q, strong.control_high) > 0  # Optuna sees it as infeasible too
    weaker = dataclasses.replace(real, controls={"behaviour": _control(result.ci[0] - 0.01)}, cache={})
    assert evaluate_choice(choice, weaker, generic, q, 0).feasible is True


def test_a_study_against_an_unbeatable_control_has_no_feasible_trial(
        plan_bank: TrajectoryBank, generic: Modality, question: Question, tmp_path: Path) -> None:
    strong: Scorer = dataclasses.replace(make_scorer(plan_bank, question), controls={"behaviour": _control(1.0)},
                                         cache={})
    low = dataclasses.replace(question, target_accuracy=0.05, n_trials=6)
    trials = run_study(strong, low, generic, storage=f"journal:{tmp_path / 's.log'}", study_name="study")
    assert any(t.ci[0] >= low.target_accuracy for t in trials)
    assert not any(t.feasible or t.beyond_control for t in trials)
    assert recommend(trials, plan_bank, low, [1], control_high=strong.control_high) == (None, None, [])


class FakeVerify:
    """Stands in for ``advisor.application.search.verify``: trials in ``failing`` fail the re-check; records the
    calls."""

    def __init__(self, failing: set[int]) -> None:
        self.failing = failing
        self.calls: list[int] = []
        self.control_highs: list[float] = []

    def __call__(self, trial: TrialResult, bank: Any, question: Question, seeds: list[int],
                 control_high: float = -math.inf) -> dict[str, Any]:
        self.calls.append(trial.number)
        self.control_highs.append(control_high)
        ok = trial.number not in self.failing
        return {"accuracy": 0.9 if ok else 0.6, "ci": [0.8, 0.95], "per_seed": [0.9], "seeds": list(seeds),
                "meets_target": ok}


def test_a_candidate_that_fails_the_recheck_is_skipped_and_listed(monkeypatch: pytest.MonkeyPatch,
                                                                  question: Question) -> None:
    fake = FakeVerify(failing={3})
    monkeypatch.setattr(search, "verify", fake)
    trials = [_trial(0, 0.5, 0.7), _trial(3, 1.0, 0.9, feasible=True), _trial(5, 2.0, 0.85, feasible=True),
              _trial(6, 3.0, 0.95, feasible=True)]
    chosen, check, rejected = recommend(trials, None, question, [1, 2], control_high=0.55)
    assert chosen is trials[2] and check is not None and check["meets_target"] is True
    assert fake.calls == [3, 5]  # the infeasible trial 0 is never re-checked, trial 6 is not needed
    assert fake.control_highs == [0.55, 0.55]  # the re-check asks to clear the same control
    assert rejected == [{"trial": trials[1].to_dict(), "verification": {
        "accuracy": 0.6, "ci": [0.8, 0.95], "per_seed": [0.9], "seeds": [1, 2], "meets_target": False}}]


def test_recommend_rechecks_by_cost_then_accuracy_and_each_protocol_once(monkeypatch: pytest.MonkeyPatch,
                                                                         question: Question) -> None:
    fake = FakeVerify(failing={1, 2})
    monkeypatch.setattr(search, "verify", fake)
    same = {"n_units": 30}
    trials = [_trial(4, 2.0, 0.9, feasible=True), _trial(2, 1.0, 0.8, feasible=True, **same),
              _trial(1, 1.0, 0.9, feasible=True), _trial(3, 1.5, 0.85, feasible=True, **same)]
    chosen, _, rejected = recommend(trials, None, question, [1])
    assert fake.calls == [1, 2, 4]  # trial 3 records the protocol trial 2 failed with: not re-checked
    assert chosen is trials[0] and [r["trial"]["number"] for r in rejected] == [1, 2]


def test_recommend_gives_up_after_max_checks(monkeypatch: pytest.MonkeyPatch, question: Question) -> None:
    fake = FakeVerify(failing=set(range(10)))
    monkeypatch.setattr(search, "verify", fake)
    trials = [_trial(i, float(i), 0.9, feasible=True) for i in range(8)]
    assert recommend(trials, None, question, [1], max_checks=3)[:2] == (None, None)
    assert fake.calls == [0, 1, 2]
    fake.calls.clear()
    chosen, check, rejected = recommend(trials, None, question, [1])
    assert (chosen, check, len(rejected), fake.calls) == (None, None, 5, [0, 1, 2, 3, 4])


def test_nothing_feasible_is_nothing_to_recheck(monkeypatch: pytest.MonkeyPatch, question: Question) -> None:
    fake = FakeVerify(failing=set())
    monkeypatch.setattr(search, "verify", fake)
    assert recommend([_trial(0, 1.0, 0.6), _trial(1, 2.0, 0.7)], None, question, [1]) == (None, None, [])
    assert fake.calls == []

"""Evaluation: splits by network (repeated stratified 4-fold cross-validation, held-out factors), the intervals
(corrected resampled t, Wilson, refits of a fixed partition) against direct computations, and the controls."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from advisor.errors import AdvisorError
from advisor.science import evaluation
from advisor.science.evaluation import (
    Z95,
    best_of,
    bootstrap_ci,
    corrected_t_interval,
    evaluate,
    heldout_groups,
    make_splits,
    partition_interval,
    score,
    wilson_interval,
)

T975_DF3 = 3.182446305284263
"""The 97.5% quantile of Student's t with 3 degrees of freedom (tables)."""


def synthetic(n_per_rule: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Three rules; each ramps one of features 0-2 over the sessions; the learning curve carries no signal."""
    rng = np.random.default_rng(seed)
    rules = np.repeat(["a", "b", "c"], n_per_rule)
    n = len(rules)
    t = np.linspace(0, 1, 6)
    X = rng.normal(0, 0.3, (n, 6, 4)).astype(np.float32)
    for k, rule in enumerate(["a", "b", "c"]):
        X[rules == rule, :, k] += t
    curve = rng.normal(0, 1, (n, 6, 2)).astype(np.float32)
    md = pd.DataFrame({"rule": rules, "arch_family": np.tile(["mlp", "conv"], n // 2),
                       "task": np.tile(["digits", "gm", "x", "y"], n // 4),
                       "lr": rng.uniform(1e-3, 1e-1, n), "batch_size": rng.choice([16, 32], n),
                       "init_scale": rng.uniform(0.7, 1.2, n)})
    return X, curve, md


def test_random_splits_are_repeated_stratified_4_fold_cross_validation() -> None:
    _, _, md = synthetic()
    y = md["rule"].to_numpy()
    splits = make_splits(y, "none", None, n_splits=10, seed=0)
    assert len(splits) == 12  # 10 requested → 3 whole repeats of 4 folds
    tested = np.zeros(len(y), dtype=int)
    for k, (train, test) in enumerate(splits):
        assert not set(train) & set(test) and len(train) + len(test) == len(y)
        assert len(test) == 18 and sorted(np.unique(y[test], return_counts=True)[1]) == [6, 6, 6]
        tested[test] += 1
        if k % 4 == 3:  # every repeat tests every network exactly once
            assert (tested == k // 4 + 1).all()
    assert make_splits(y, "none", None, 10, 0)[5][1].tolist() == splits[5][1].tolist()
    assert make_splits(y, "none", None, 10, 1)[0][1].tolist() != splits[0][1].tolist()
    assert [len(make_splits(y, "none", None, n, 0)) for n in (2, 4, 5, 8, 9)] == [4, 4, 8, 8, 12]


def test_random_splits_need_four_networks_of_every_label() -> None:
    y = np.array(["a"] * 8 + ["b"] * 3)
    with pytest.raises(AdvisorError) as err:
        make_splits(y, "none", None, 10, 0)
    assert str(err.value) == "every label needs at least 4 networks for stratified 4-fold splits; 'b' has 3"


def test_heldout_splits_leave_one_level_out() -> None:
    _, _, md = synthetic()
    splits = make_splits(md["rule"].to_numpy(), "architecture", md["arch_family"].to_numpy(), 10, 0)
    assert len(splits) == 2
    for train, test in splits:
        assert md["arch_family"].iloc[test].nunique() == 1
        assert md["arch_family"].iloc[test].iloc[0] not in set(md["arch_family"].iloc[train])


def test_identifies_the_rule_beyond_both_controls_with_a_corrected_t_interval() -> None:
    X, curve, md = synthetic()
    result = evaluate(X, curve, md, classifier="svm", n_splits=5, seed=1)
    assert result.labels == ["a", "b", "c"]
    assert result.chance == pytest.approx(1 / 3)
    assert result.accuracy >= 0.9
    scores = result.scores
    assert scores.ci_method == "corrected_t" and len(scores.split_accuracies) == 8 and scores.n_tested == 72
    assert scores.confusion_matrix.sum() == 2 * 72  # 2 repeats, every network tested once in each
    assert scores.accuracy == pytest.approx(np.trace(scores.confusion_matrix) / scores.confusion_matrix.sum())
    lo, hi = scores.ci
    assert lo <= result.accuracy <= hi and hi - lo < 0.3
    wil = wilson_interval(scores.accuracy, 72)
    assert lo <= wil[0] + 1e-12 and hi >= wil[1] - 1e-12  # never narrower than the Wilson interval
    assert set(result.controls) == {"behaviour", "hyperparameters"}
    for name, control in result.controls.items():
        assert control.name == name and control.classifier in ("logreg", "rf")
        assert set(control.candidates) == {"logreg", "rf"}
        assert control.scores.accuracy == max(control.candidates.values())  # the better of the two is reported
        assert control.scores.accuracy < 0.6 and control.scores.ci_method == "corrected_t"
    assert result.control is result.controls["behaviour"].scores
    assert result.strongest_control is max(result.controls.values(), key=lambda c: c.scores.ci[1])
    assert result.beyond_controls is True


def test_without_hyperparameter_columns_only_the_behaviour_control_is_scored() -> None:
    X, curve, md = synthetic()
    result = evaluate(X, curve, md.drop(columns=["lr"]), classifier="svm", n_splits=4, seed=1)
    assert set(result.controls) == {"behaviour"}
    none = evaluate(X, None, md, classifier="svm", n_splits=4, seed=1, hyperparameters=False)
    assert none.controls == {} and none.control is None and none.strongest_control is None
    assert none.beyond_controls is True


def test_a_protocol_no_better_than_a_control_is_not_beyond_it() -> None:
    X, curve, md = synthetic()
    leaky = curve.copy()
    leaky[:, :, 0] += np.repeat([0.0, 3.0, 6.0], 24)[:, None]  # the learning curve gives the rule away
    result = evaluate(X, leaky, md, classifier="svm", n_splits=4, seed=1)
    assert result.controls["behaviour"].scores.accuracy >= 0.95
    assert result.beyond_controls is False
    assert result.strongest_control is result.controls["behaviour"]


def test_heldout_architecture_evaluation_runs_on_every_network_once() -> None:
    X, curve, md = synthetic()
    result = evaluate(X, curve, md, classifier="svm", heldout="arch_family", seed=1)
    assert result.scores.confusion_matrix.sum() == len(md)
    assert result.accuracy >= 0.85
    assert result.scores.ci_method == "refit"
    assert all(c.scores.ci_method == "refit" for c in result.controls.values())


def test_leave_one_architecture_out_and_one_nonlinearity_out() -> None:
    """Each architecture (and each nonlinearity, read from the registry) is tested once by a classifier that
    never saw it."""
    X, curve, md = synthetic()
    archs = np.tile(["mlp3_relu", "mlp3_tanh", "conv2_relu", "conv3_relu"], len(md) // 4)
    md = md.assign(architecture=archs)
    assert list(heldout_groups(md, "nonlinearity")[:4]) == ["relu", "tanh", "relu", "relu"]
    y = md["rule"].to_numpy()
    splits = make_splits(y, "architecture", heldout_groups(md, "architecture"), 0, 0)
    assert len(splits) == 4
    for train, test in splits:
        assert len(set(archs[test])) == 1 and archs[test][0] not in set(archs[train])
    result = evaluate(X, curve, md, classifier="svm", heldout="nonlinearity", seed=1)
    assert result.scores.confusion_matrix.sum() == len(md) and len(result.scores.split_accuracies) == 2
    assert result.accuracy >= 0.85


def test_leaving_one_of_four_tasks_out_is_a_fixed_partition() -> None:
    """Four tasks give four splits that test every network once, as one repeat of 4-fold cross-validation
    would; the held-out evaluation still gets the fixed partition's refit interval."""
    X, _curve, md = synthetic()
    result = evaluate(X, None, md, classifier="ridge", heldout="task", seed=1, hyperparameters=False)
    assert len(result.scores.split_accuracies) == 4 and result.scores.confusion_matrix.sum() == len(md)
    assert result.scores.ci_method == "refit"
    y = md["rule"].to_numpy()
    inferred = score(X, y, make_splits(y, "task", md["task"].to_numpy(), 0, 1), result.labels, classifier="ridge",
                     seed=1, refits=0)
    assert inferred.ci_method == "corrected_t"  # what the splits alone would suggest


def test_bad_requests_are_refused() -> None:
    X, curve, md = synthetic()
    with pytest.raises(AdvisorError, match="heldout must be one of none, architecture, arch_family, task, "
                                           "nonlinearity; got 'seed'"):
        evaluate(X, curve, md, heldout="seed")
    one = md.assign(arch_family="mlp")
    with pytest.raises(AdvisorError, match="held-out architecture family needs at least 2 architecture families in "
                                           "the bank; it has only 'mlp'"):
        evaluate(X, curve, one, heldout="arch_family")
    with pytest.raises(AdvisorError, match="held-out architecture needs at least 2 architectures in the bank; it "
                                           "has only 'mlp3_relu'"):
        evaluate(X, curve, md.assign(architecture="mlp3_relu"), heldout="architecture")
    with pytest.raises(AdvisorError, match="need at least 2 different rules"):
        evaluate(X, curve, md.assign(rule="a"))


def test_bootstrap_ci_brackets_the_mean_and_narrows_with_more_networks() -> None:
    rng = np.random.default_rng(0)
    small = (rng.random(40) < 0.8).astype(float)
    large = (rng.random(4000) < 0.8).astype(float)
    lo_s, hi_s = bootstrap_ci(small, seed=0)
    lo_l, hi_l = bootstrap_ci(large, seed=0)
    assert lo_s <= small.mean() <= hi_s and lo_l <= large.mean() <= hi_l
    assert hi_l - lo_l < (hi_s - lo_s) / 5


def test_grouped_importances_find_the_informative_channel_and_sessions() -> None:
    X, _curve, md = synthetic()
    result = evaluate(X, None, md, classifier="svm", n_splits=3, seed=2, importances=True)
    feat, sess = result.scores.feature_importance, result.scores.session_importance
    assert feat is not None and sess is not None
    assert feat.shape == (4,) and sess.shape == (6,)
    assert feat[3] < min(feat[:3])  # channel 3 carries no signal
    assert sess[-1] > sess[0]  # the ramps differ most at the last session (all start at 0)


# ---------------------------------------------------------------------------------------------- intervals
def test_wilson_interval_on_known_values() -> None:
    lo, hi = wilson_interval(1.0, 12)
    assert lo == pytest.approx(12 / (12 + Z95**2)) and hi == 1.0  # 12/12: n / (n + z²), about 0.7575
    assert lo == pytest.approx(0.7575, abs=1e-4)
    lo, hi = wilson_interval(0.0, 12)
    assert lo == pytest.approx(0.0, abs=1e-12) and hi == pytest.approx(Z95**2 / (12 + Z95**2))
    lo, hi = wilson_interval(0.5, 100)  # symmetric about 1/2; textbook 0.4038-0.5962
    assert (lo, hi) == (pytest.approx(0.40383, abs=1e-5), pytest.approx(0.59617, abs=1e-5))
    assert wilson_interval(0.5, 0) == (0.0, 1.0)


def test_corrected_t_interval_against_a_direct_computation() -> None:
    accs = np.array([0.8, 0.9, 0.85, 0.95])  # 4 folds, a quarter tested in each
    pooled, n = 0.875, 40
    variance = np.var(accs, ddof=1) * (1 / 4 + 0.25 / 0.75)  # Nadeau-Bengio: (1/J + n_test/n_train) s²
    assert variance == pytest.approx(0.0125 / 3 * (1 / 4 + 1 / 3))
    half = T975_DF3 * np.sqrt(variance)
    lo, hi = corrected_t_interval(accs, 0.25, pooled, n)
    assert lo == pytest.approx(pooled - half) and pooled - half < wilson_interval(pooled, n)[0]
    assert hi == 1.0  # pooled + half is above 1: clipped


def test_corrected_t_interval_is_never_narrower_than_wilson() -> None:
    # every fold perfect: no spread over the folds, and the interval is the Wilson interval of 12/12
    assert corrected_t_interval(np.ones(4), 0.25, 1.0, 12) == pytest.approx(wilson_interval(1.0, 12))
    assert corrected_t_interval(np.array([0.9]), 0.25, 0.9, 10) == wilson_interval(0.9, 10)  # one split


def test_partition_interval_adds_train_and_test_variance_in_quadrature() -> None:
    pooled, n, train_sd = 0.8, 30, 0.05
    lo_w, hi_w = wilson_interval(pooled, n)
    lo, hi = partition_interval(pooled, n, train_sd)
    assert lo == pytest.approx(pooled - np.hypot(pooled - lo_w, Z95 * train_sd))
    assert hi == pytest.approx(pooled + np.hypot(hi_w - pooled, Z95 * train_sd))
    assert partition_interval(pooled, n, 0.0) == pytest.approx((lo_w, hi_w))
    assert partition_interval(0.99, 30, 0.2) == (pytest.approx(0.99 - np.hypot(0.99 - wilson_interval(0.99, 30)[0],
                                                                                Z95 * 0.2)), 1.0)


def test_a_fixed_partition_gets_the_refit_interval() -> None:
    X, _, md = synthetic()
    y = md["rule"].to_numpy()
    labels = ["a", "b", "c"]
    test = np.arange(0, 72, 3)
    split = [(np.setdiff1d(np.arange(72), test), test)]
    once = score(X, y, split, labels, classifier="ridge", seed=0)
    assert once.ci_method == "refit" and once.n_tested == 24 and once.confusion_matrix.sum() == 24
    no_refits = score(X, y, split, labels, classifier="ridge", seed=0, refits=0)
    assert no_refits.ci == pytest.approx(wilson_interval(no_refits.accuracy, 24))
    assert once.ci[0] <= no_refits.ci[0] and once.ci[1] >= no_refits.ci[1]  # the training sets widen it
    assert score(X, y, split, labels, classifier="ridge", seed=0).ci == once.ci  # the refits are seeded
    as_cv = score(X, y, make_splits(y, "none", None, 4, 0), labels, classifier="ridge", seed=0)
    assert as_cv.ci_method == "corrected_t"
    forced = score(X, y, make_splits(y, "none", None, 4, 0), labels, classifier="ridge", seed=0,
                   cross_validated=False, refits=2)
    assert forced.ci_method == "refit"


def test_control_scores_are_kept_by_the_content_of_their_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    _X, curve, md = synthetic()
    y = md["rule"].to_numpy()
    splits = make_splits(y, "none", None, 4, 0)
    monkeypatch.setattr(evaluation, "_control_cache", {})
    first = best_of("behaviour", curve, y, splits, ["a", "b", "c"], seed=0)
    calls: list[str] = []
    real = evaluation.score

    def counting(*args: object, **kwargs: object) -> evaluation.Scores:
        calls.append(str(kwargs["classifier"]))
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(evaluation, "score", counting)
    assert best_of("behaviour", curve.copy(), y.copy(), [(a.copy(), b.copy()) for a, b in splits],
                   ["a", "b", "c"], seed=0) is first and calls == []
    changed = curve.copy()
    changed[0, 0, 0] += 1.0
    best_of("behaviour", changed, y, splits, ["a", "b", "c"], seed=0)
    assert sorted(calls) == ["logreg", "rf"]
    calls.clear()
    best_of("behaviour", curve, y, splits, ["a", "b", "c"], seed=1)
    assert sorted(calls) == ["logreg", "rf"]


def test_augmentation_adds_training_samples_only() -> None:
    """K recordings per training network: the classifier is fitted on every copy of the training networks and
    tested once per test network; copies that equal the original barely change the fit (only the ridge
    penalty's weight relative to the data halves)."""
    X, _curve, md = synthetic()
    y = md["rule"].to_numpy()
    labels = sorted(set(y))
    splits = make_splits(y, "none", None, 4, 0)
    plain = score(X, y, splits, labels, classifier="ridge", seed=0)
    same = score(X, y, splits, labels, classifier="ridge", seed=0, augment=[X.copy()])
    assert abs(same.accuracy - plain.accuracy) <= 0.05 and same.confusion_matrix.sum() == len(y)
    noisy = X + np.random.default_rng(3).normal(0, 0.3, X.shape).astype(np.float32)
    augmented = score(X, y, splits, labels, classifier="ridge", seed=0, augment=[noisy])
    assert augmented.confusion_matrix.sum() == len(y) and augmented.n_tested == len(y)
    with pytest.raises(ValueError, match="augment arrays must be shaped like X"):
        score(X, y, splits, labels, classifier="ridge", seed=0, augment=[X[:5]])


def test_a_classifier_factory_scores_like_its_registry_key() -> None:
    """``classifier`` may be a factory ``(random_state, n_sessions) -> estimator`` (estimators outside the
    registry, ``advisor.science.learned``): it is called once per split and refit with the split's seeds, so the same
    estimator by key and by factory gives the same scores, and evaluate names it by the factory's name."""
    from advisor.science.classifiers import make_classifier

    X, curve, md = synthetic()
    y = md["rule"].to_numpy()
    labels = sorted(set(y))
    calls: list[tuple[int, int]] = []

    def ridge_factory(random_state: int, n_sessions: int) -> object:
        calls.append((random_state, n_sessions))
        return make_classifier("ridge", random_state=random_state, n_sessions=n_sessions)

    split = make_splits(y, "arch_family", heldout_groups(md, "arch_family"), 4, 0)
    by_key = score(X, y, split, labels, classifier="ridge", seed=0, refits=3)
    by_factory = score(X, y, split, labels, classifier=ridge_factory, seed=0, refits=3)
    assert by_factory.accuracy == by_key.accuracy and by_factory.ci == by_key.ci
    assert len(calls) == 2 * (1 + 3) and {n for _, n in calls} == {6}
    result = evaluate(X, curve, md, classifier=ridge_factory, heldout="arch_family", refits=0)
    assert result.classifier == "ridge_factory"
    assert result.scores.ci == pytest.approx(wilson_interval(result.accuracy, len(y)))

"""Evaluation: splits by network, held-out factors, confidence intervals, the task-performance control."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from advisor.errors import AdvisorError
from advisor.evaluation import bootstrap_ci, evaluate, make_splits


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
                       "task": np.tile(["digits", "gm", "x"], n // 3)})
    return X, curve, md


def test_random_splits_never_share_a_network_and_are_stratified() -> None:
    _, _, md = synthetic()
    y = md["rule"].to_numpy()
    splits = make_splits(y, "none", None, n_splits=10, seed=0)
    assert len(splits) == 10
    for train, test in splits:
        assert not set(train) & set(test)
        assert len(test) == 18 and sorted(np.unique(y[test], return_counts=True)[1]) == [6, 6, 6]


def test_heldout_splits_leave_one_level_out() -> None:
    _, _, md = synthetic()
    splits = make_splits(md["rule"].to_numpy(), "architecture", md["arch_family"].to_numpy(), 10, 0)
    assert len(splits) == 2
    for train, test in splits:
        assert md["arch_family"].iloc[test].nunique() == 1
        assert md["arch_family"].iloc[test].iloc[0] not in set(md["arch_family"].iloc[train])


def test_identifies_the_rule_beyond_the_control_with_a_ci() -> None:
    X, curve, md = synthetic()
    result = evaluate(X, curve, md, classifier="svm", n_splits=5, seed=1)
    assert result.labels == ["a", "b", "c"]
    assert result.chance == pytest.approx(1 / 3)
    assert result.accuracy >= 0.9
    lo, hi = result.scores.ci
    assert lo <= result.accuracy <= hi and hi - lo < 0.3
    assert result.control is not None and result.control.accuracy < 0.6
    assert result.scores.confusion_matrix.sum() == 5 * 18


def test_heldout_architecture_evaluation_runs_on_every_network_once() -> None:
    X, curve, md = synthetic()
    result = evaluate(X, curve, md, classifier="svm", heldout="architecture", seed=1)
    assert result.scores.confusion_matrix.sum() == len(md)
    assert result.accuracy >= 0.85


def test_bad_requests_are_refused() -> None:
    X, curve, md = synthetic()
    with pytest.raises(AdvisorError, match="heldout must be one of none, architecture, task; got 'seed'"):
        evaluate(X, curve, md, heldout="seed")
    one = md.assign(arch_family="mlp")
    with pytest.raises(AdvisorError, match="held-out architecture needs at least 2 architectures"):
        evaluate(X, curve, one, heldout="architecture")
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

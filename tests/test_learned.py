"""Learned classifiers (advisor.science.learned): the DeepSets network's invariances (unit order, per-unit gain and
offset),
determinism and learning of a problem that only the units' change over sessions solves; the group vote's
samples, summed votes and use of a registered classifier; the raw recording array."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError

from advisor.science.classifiers import make_classifier
from advisor.science.learned import (
    DeepSetsClassifier,
    GroupVoteClassifier,
    group_samples,
    normalize_units,
    raw_recording_array,
)
from advisor.science.protocol import Recording

# ------------------------------------------------------------------------------------------------ helpers
N_GROUPS, N_SESSIONS, N_UNITS, N_PROBES = 2, 4, 16, 6
FAST = {"hidden": 16, "epochs": 3, "batch_size": 16}


def random_recording(n_networks: int, seed: int) -> np.ndarray:
    """(n_networks, 2, 4, 16, 6) float64 standard normal values."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n_networks, N_GROUPS, N_SESSIONS, N_UNITS, N_PROBES))


def drift_recording(n_networks: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n_networks, 2, 4, 16, 6) recordings and labels of a problem that only the change over sessions solves.

    Every unit has a tuning curve over the probes, ``z0``. Class ``stable``: every session shows ``z0``. Class
    ``drift``: session s shows ``cos(θ_s)·z0 + sin(θ_s)·z1``, θ from 0 to π/2, a rotation to a second tuning
    ``z1`` with the same variance. Both get noise (SD 0.3), then a random gain (lognormal, SD 1 of the log) and
    offset per unit, so neither scale nor level can tell the classes apart.
    """
    rng = np.random.default_rng(seed)
    y = np.array(["stable", "drift"])[np.arange(n_networks) % 2]
    rng.shuffle(y)
    shape = (n_networks, N_GROUPS, 1, N_UNITS, N_PROBES)
    z0, z1 = rng.standard_normal(shape), rng.standard_normal(shape)
    theta = np.linspace(0.0, np.pi / 2, N_SESSIONS)[None, None, :, None, None]
    drifting = (y == "drift")[:, None, None, None, None]
    clean = np.where(drifting, np.cos(theta) * z0 + np.sin(theta) * z1, z0 + 0.0 * theta)
    noisy = clean + 0.3 * rng.standard_normal(clean.shape)
    gain = np.exp(rng.standard_normal((n_networks, N_GROUPS, 1, N_UNITS, 1)))
    offset = 3.0 * rng.standard_normal((n_networks, N_GROUPS, 1, N_UNITS, 1))
    return (gain * noisy + offset).astype(np.float32), y


# ------------------------------------------------------------------------------------------------ DeepSets
@pytest.fixture(scope="module")
def fitted_deepsets() -> tuple[DeepSetsClassifier, np.ndarray]:
    """A DeepSets model fitted for a few epochs on random 3-class data, and fresh inputs to predict."""
    X = random_recording(24, seed=0)
    y = np.arange(24) % 3
    return DeepSetsClassifier(**FAST, random_state=0).fit(X, y), random_recording(8, seed=1)


def test_deepsets_invariant_to_unit_order(fitted_deepsets: tuple[DeepSetsClassifier, np.ndarray]) -> None:
    model, X = fitted_deepsets
    rng = np.random.default_rng(2)
    permuted = X.copy()
    for i in range(X.shape[0]):  # a different permutation for every network and group
        for g in range(N_GROUPS):
            permuted[i, g] = X[i, g][:, rng.permutation(N_UNITS)]
    assert not np.array_equal(permuted, X)
    np.testing.assert_allclose(model.predict_proba(permuted), model.predict_proba(X), atol=1e-5)


def test_deepsets_invariant_to_unit_gain_and_offset(fitted_deepsets: tuple[DeepSetsClassifier, np.ndarray]) -> None:
    model, X = fitted_deepsets
    rng = np.random.default_rng(3)
    shape = (X.shape[0], N_GROUPS, 1, N_UNITS, 1)  # one gain and offset per unit, kept across sessions
    gain, offset = np.exp(1.5 * rng.standard_normal(shape)), 5.0 * rng.standard_normal(shape)
    np.testing.assert_allclose(model.predict_proba(gain * X + offset), model.predict_proba(X), atol=1e-5)
    # the invariance is the normalization's, not a model that ignores its input
    assert np.ptp(model.predict_proba(X), axis=0).max() > 1e-4


def test_normalize_units_centres_and_scales_each_unit() -> None:
    X = random_recording(3, seed=4)
    X[0, 1, :, 5, :] = 7.0  # a constant unit
    X[1, 0, 2, 3, 4] = np.nan  # a missing value
    Z = normalize_units(X)
    assert Z.shape == (3, N_GROUPS, N_UNITS, N_SESSIONS * N_PROBES) and Z.dtype == np.float32
    assert np.isfinite(Z).all()
    np.testing.assert_array_equal(Z[0, 1, 5], 0.0)
    live = np.ones(Z.shape[:3], dtype=bool)
    live[0, 1, 5] = False
    np.testing.assert_allclose(Z.mean(axis=-1)[live], 0.0, atol=1e-6)
    sd = Z.std(axis=-1)
    sd[1, 0, 3] = Z[1, 0, 3][Z[1, 0, 3] != 0].std()  # the missing value became the mean (0)
    np.testing.assert_allclose(sd[live], 1.0, rtol=1e-5)
    # unit u's trajectory lists its sessions in order, probes within
    np.testing.assert_allclose(
        Z[2, 0, 7].reshape(N_SESSIONS, N_PROBES),
        (X[2, 0, :, 7] - X[2, 0, :, 7].mean()) / X[2, 0, :, 7].std(),
        rtol=1e-5,
    )


def test_normalize_units_leaves_its_input_alone() -> None:
    X = random_recording(2, seed=14)[:, :, :1].astype(np.float32)  # one session: the unit axis moves for free
    original = X.copy()
    normalize_units(X)
    np.testing.assert_array_equal(X, original)


def test_deepsets_same_seed_same_model_other_seed_other_model() -> None:
    X, y = random_recording(20, seed=5), np.arange(20) % 2
    first = DeepSetsClassifier(**FAST, random_state=7).fit(X, y).predict_proba(X)
    again = DeepSetsClassifier(**FAST, random_state=7).fit(X, y).predict_proba(X)
    other = DeepSetsClassifier(**FAST, random_state=8).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other, atol=1e-4)


def test_deepsets_learns_change_over_sessions_despite_unit_gains() -> None:
    X_train, y_train = drift_recording(60, seed=10)
    X_test, y_test = drift_recording(60, seed=11)
    model = DeepSetsClassifier(hidden=32, epochs=30, lr=3e-3, batch_size=16, random_state=0).fit(X_train, y_train)
    assert model.loss_curve_.shape == (30,) and model.loss_curve_[-1] < model.loss_curve_[0]
    assert model.score(X_test, y_test) >= 0.9


def test_deepsets_string_labels_round_trip(fitted_deepsets: tuple[DeepSetsClassifier, np.ndarray]) -> None:
    X = random_recording(12, seed=6)
    labels = np.array(["sgdm", "fa", "ia"])
    y = labels[np.arange(12) % 3]
    model = DeepSetsClassifier(**FAST, random_state=0).fit(X, y)
    np.testing.assert_array_equal(model.classes_, np.sort(labels))
    predicted = model.predict(X)
    assert predicted.shape == (12,) and set(predicted) <= set(labels)
    proba = model.predict_proba(X)
    assert proba.shape == (12, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(predicted, model.classes_[proba.argmax(axis=1)])
    assert model.decision_function(X).shape == (12, 3)


def test_deepsets_binary_decision_function_is_logit_difference() -> None:
    X, y = random_recording(10, seed=7), np.array(["a", "b"] * 5)
    model = DeepSetsClassifier(**FAST, random_state=0).fit(X, y)
    proba, decision = model.predict_proba(X), model.decision_function(X)
    assert decision.shape == (10,)
    np.testing.assert_allclose(decision, np.log(proba[:, 1]) - np.log(proba[:, 0]), rtol=1e-4, atol=1e-5)


def test_deepsets_predicts_with_any_number_of_units(fitted_deepsets: tuple[DeepSetsClassifier, np.ndarray]) -> None:
    model, X = fitted_deepsets
    proba = model.predict_proba(X[:, :, :, :5])
    assert proba.shape == (8, 3) and np.isfinite(proba).all()
    with pytest.raises(ValueError, match="n_groups, n_sessions, n_probes"):
        model.predict(X[:, :, :3])
    with pytest.raises(ValueError, match="5-D"):
        model.predict(X[:, 0])


def test_deepsets_accepts_a_missing_group(fitted_deepsets: tuple[DeepSetsClassifier, np.ndarray]) -> None:
    model, X = fitted_deepsets
    X = X.copy()
    X[0, 1] = np.nan  # network 0 lacks group 1
    assert np.isfinite(model.predict_proba(X)).all()
    X[1, 0, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        model.predict(X)


def test_deepsets_leaves_the_global_torch_rng_alone() -> None:
    X, y = random_recording(8, seed=13), np.arange(8) % 2
    before = torch.random.get_rng_state()
    DeepSetsClassifier(**FAST, random_state=0).fit(X, y)
    assert torch.equal(torch.random.get_rng_state(), before)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("hidden", 0),
        ("hidden", 2.5),
        ("epochs", 0),
        ("epochs", True),
        ("lr", 0.0),
        ("lr", "fast"),
        ("weight_decay", -1e-3),
        ("batch_size", 0),
        ("unit_dropout", 1.0),
        ("unit_dropout", -0.1),
    ],
)
def test_deepsets_bad_parameter_names_itself(name: str, value: Any) -> None:
    X, y = random_recording(4, seed=8), np.arange(4) % 2
    with pytest.raises(ValueError, match=f"`{name}`"):
        DeepSetsClassifier(**{name: value}).fit(X, y)


def test_deepsets_predict_before_fit_raises() -> None:
    with pytest.raises(NotFittedError):
        DeepSetsClassifier().predict(random_recording(2, seed=9))


def test_deepsets_refuses_regression_targets() -> None:
    X = random_recording(4, seed=9)
    with pytest.raises(ValueError, match="Unknown label type"):
        DeepSetsClassifier(**FAST).fit(X, np.linspace(0.0, 1.0, 4))


# ------------------------------------------------------------------------------------------------ group vote
class RecordingStub(ClassifierMixin, BaseEstimator):
    """Records what ``fit`` saw; ``predict_proba`` returns ``proba`` (one row per sample) whatever X holds."""

    def __init__(self, proba: np.ndarray | None = None) -> None:
        self.proba = proba

    def fit(self, X: np.ndarray, y: np.ndarray) -> RecordingStub:
        self.fit_X_, self.fit_y_ = np.array(X), np.array(y)
        self.classes_ = np.unique(y)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        assert self.proba is not None and len(self.proba) == len(X)
        return self.proba

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


class DecisionStub(ClassifierMixin, BaseEstimator):
    """A binary classifier without ``predict_proba``: ``decision_function`` returns ``scores`` (1-D)."""

    def __init__(self, scores: np.ndarray | None = None) -> None:
        self.scores = scores

    def fit(self, X: np.ndarray, y: np.ndarray) -> DecisionStub:
        self.classes_ = np.unique(y)
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        assert self.scores is not None and len(self.scores) == len(X)
        return self.scores

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[(self.decision_function(X) > 0).astype(int)]


def coded_features(n_networks: int, n_sessions: int, n_groups: int, n_features: int) -> np.ndarray:
    """X[i, s, g·F + f] = 1000 i + 100 s + 10 g + f: every value says where it came from."""
    i, s, g, f = np.meshgrid(
        np.arange(n_networks), np.arange(n_sessions), np.arange(n_groups), np.arange(n_features), indexing="ij"
    )
    return (1000 * i + 100 * s + 10 * g + f).reshape(n_networks, n_sessions, n_groups * n_features).astype(float)


def test_group_vote_fits_base_on_one_sample_per_network_and_group() -> None:
    n, s, g, f = 2, 3, 2, 4
    X = coded_features(n, s, g, f)
    X[:, :, :f] = 0.0  # only group 1 carries values
    y = np.array(["fa", "sgdm"])
    vote = GroupVoteClassifier(RecordingStub(), n_groups=g).fit(X, y)
    # the reference, by hand: sample i·G + j is network i's group j, its F statistics then the one-hot of j
    expected = np.zeros((n * g, s, f + g))
    for i in range(n):
        for j in range(g):
            for t in range(s):
                expected[i * g + j, t, :f] = X[i, t, j * f : (j + 1) * f]
                expected[i * g + j, t, f + j] = 1.0
    np.testing.assert_array_equal(vote.base_.fit_X_, expected)
    np.testing.assert_array_equal(vote.base_.fit_y_, ["fa", "fa", "sgdm", "sgdm"])
    np.testing.assert_array_equal(group_samples(X, g), expected)
    np.testing.assert_array_equal(vote.classes_, ["fa", "sgdm"])
    assert vote.base is not vote.base_ and not hasattr(vote.base, "fit_X_")  # the base is cloned


def test_group_vote_sums_probabilities_not_majorities() -> None:
    # network 0: two weak votes for "a", one sure vote for "b" → "b"; network 1: the mirror image → "a"
    proba = np.array([[0.6, 0.4], [0.6, 0.4], [0.0, 1.0], [0.4, 0.6], [0.45, 0.55], [0.9, 0.1]])
    X = coded_features(2, 2, 3, 2)
    vote = GroupVoteClassifier(RecordingStub(proba), n_groups=3).fit(X, np.array(["a", "b"]))
    np.testing.assert_array_equal(vote.predict(X), ["b", "a"])
    np.testing.assert_allclose(vote.predict_proba(X), [[0.4, 0.6], [1.75 / 3, 1.25 / 3]])
    np.testing.assert_allclose(vote.decision_function(X), [0.6, -0.5])


def test_group_vote_sums_binary_decision_scores_with_their_sign() -> None:
    scores = np.array([1.0, 1.0, -3.0, -0.5, -0.5, 2.0])  # sums -1 and +1
    X = coded_features(2, 2, 3, 2)
    vote = GroupVoteClassifier(DecisionStub(scores), n_groups=3).fit(X, np.array([0, 1]))
    np.testing.assert_array_equal(vote.predict(X), [0, 1])
    np.testing.assert_allclose(vote.decision_function(X), [-1.0, 1.0])
    assert not hasattr(vote, "predict_proba")  # the base has none


def test_group_vote_refuses_channels_that_groups_do_not_divide() -> None:
    X, y = np.zeros((4, 2, 7)), np.arange(4) % 2
    with pytest.raises(ValueError, match="n_groups = 3 does not divide"):
        GroupVoteClassifier(RecordingStub(), n_groups=3).fit(X, y)
    with pytest.raises(ValueError, match="3-D"):
        GroupVoteClassifier(RecordingStub(), n_groups=1).fit(X[:, 0], y)
    with pytest.raises(ValueError, match="`n_groups`"):
        GroupVoteClassifier(RecordingStub(), n_groups=0).fit(X, y)
    vote = GroupVoteClassifier(RecordingStub(), n_groups=7).fit(X, y)
    with pytest.raises(ValueError, match="n_sessions, n_channels"):
        vote.predict(np.zeros((4, 3, 7)))


def test_group_vote_predict_before_fit_raises() -> None:
    with pytest.raises(NotFittedError):
        GroupVoteClassifier(RecordingStub(), n_groups=2).predict(np.zeros((2, 2, 4)))


def test_group_vote_with_registered_logreg_separates_toy_problem() -> None:
    def toy(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Class c: statistic 0 of every group near +2 (sgdm) or -2 (fa); statistics 1-2 are noise."""
        rng = np.random.default_rng(seed)
        y = np.array(["sgdm", "fa"])[np.arange(n) % 2]
        X = rng.normal(scale=0.3, size=(n, 4, 3, 3))  # (n, S, G, F)
        X[..., 0] += np.where(y == "sgdm", 2.0, -2.0)[:, None, None]
        return X.reshape(n, 4, 9), y

    X_train, y_train = toy(40, seed=0)
    X_test, y_test = toy(40, seed=1)
    vote = GroupVoteClassifier(make_classifier("logreg", random_state=0), n_groups=3).fit(X_train, y_train)
    assert vote.score(X_test, y_test) == 1.0
    proba = vote.predict_proba(X_test)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


# ------------------------------------------------------------------------------------------------ raw recording
def test_raw_recording_array_stacks_groups_and_keeps_the_first_units() -> None:
    rng = np.random.default_rng(12)
    values = [rng.standard_normal((3, 4, k, 5)).astype(np.float32) for k in (6, 4, 5)]
    recording = Recording(values, np.arange(4), ("early", "middle", "deep"), np.zeros((3, 4, 2), np.float32))
    X = raw_recording_array(recording)
    assert X.shape == (3, 3, 4, 4, 5) and X.dtype == np.float32
    for g, v in enumerate(values):
        np.testing.assert_array_equal(X[:, g], v[:, :, :4])
    values[1][2, 3, 0, 0] = np.inf  # a diverged network: missing for DeepSets, not an error
    X = raw_recording_array(recording)
    assert np.isnan(X[2, 1, 3, 0, 0]) and np.isfinite(np.delete(X.ravel(), np.ravel_multi_index(
        (2, 1, 3, 0, 0), X.shape))).all()


def test_raw_recording_array_refuses_weights_and_mismatched_groups() -> None:
    curve = np.zeros((3, 4, 2), np.float32)
    weights = Recording([np.zeros((3, 4, 6), np.float32)], np.arange(4), ("early",), curve)
    with pytest.raises(ValueError, match="weights"):
        raw_recording_array(weights)
    mismatched = Recording(
        [np.zeros((3, 4, 6, 5), np.float32), np.zeros((3, 4, 6, 2), np.float32)], np.arange(4), ("early", "deep"), curve
    )
    with pytest.raises(ValueError, match="'deep'"):
        raw_recording_array(mismatched)
    with pytest.raises(ValueError, match="no groups"):
        raw_recording_array(Recording([], np.arange(4), (), curve))

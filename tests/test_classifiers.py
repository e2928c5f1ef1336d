"""Classifiers (advisor.science.classifiers): conformance over every registered member, the Conv1D's use of time order,
scikit-learn's estimator checks, permutation feature importances and the unknown-key error."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.utils.estimator_checks import parametrize_with_checks
from threadpoolctl import threadpool_limits

from advisor.science.classifiers import (
    CLASSIFIERS,
    Conv1DClassifier,
    Flatten,
    ScaledRidge,
    SignedLog,
    feature_importances,
    make_classifier,
)
from simulator.errors import ConfigError

N_SESSIONS, N_FEATURES = 6, 8
LABELS = np.array(["sgdm", "fa", "ia"])


def ramp_data(n_networks: int, seed: int, informative: tuple[int, ...] = (0, 3)) -> tuple[np.ndarray, np.ndarray]:
    """(n_networks, 6, 8) float32 features and string labels of a 3-class problem.

    Class k: feature 0 ramps over sessions with slope k; feature 3 (if informative) peaks at session 2k.
    Every other feature is noise.
    """
    rng = np.random.default_rng(seed)
    k = np.arange(n_networks) % 3
    rng.shuffle(k)
    t = np.arange(N_SESSIONS, dtype=np.float64)
    X = rng.normal(size=(n_networks, N_SESSIONS, N_FEATURES))
    if 0 in informative:
        X[:, :, 0] += k[:, None] * t[None, :]
    if 3 in informative:
        X[:, :, 3] += 3.0 * np.exp(-0.5 * (t[None, :] - 2 * k[:, None]) ** 2)
    return X.astype(np.float32), LABELS[k]


def order_data(n_networks: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Classes differ only in the order of values over time: rising, falling or V-shaped ramps.

    Per network and feature the values are the same multiset (a shuffled ramp's values) up to a random offset
    and amplitude, so any single session carries no class information.
    """
    rng = np.random.default_rng(seed)
    k = np.arange(n_networks) % 3
    rng.shuffle(k)
    ramp = np.linspace(-1.0, 1.0, N_SESSIONS)
    shapes = np.stack([ramp, ramp[::-1], np.concatenate([ramp[::2][::-1], ramp[1::2]])])
    assert all(np.allclose(np.sort(s), np.sort(ramp)) for s in shapes)  # same multiset per class
    amplitude = rng.uniform(0.5, 2.0, size=(n_networks, 1, N_FEATURES))
    offset = rng.normal(0.0, 2.0, size=(n_networks, 1, N_FEATURES))
    X = offset + amplitude * shapes[k][:, :, None] + 0.1 * rng.normal(size=(n_networks, N_SESSIONS, N_FEATURES))
    return X.astype(np.float32), k


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Run on one OpenMP/BLAS thread (restored afterwards; the library never touches thread counts).

    These problems are tiny; on a busy shared machine, multi-threaded OpenMP (torch, HistGradientBoosting)
    spin-waits for cores other processes hold, which made single fits up to a hundred times slower.
    """
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def ramps() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    X, y = ramp_data(90 + 60, seed=0)
    return X[:90], y[:90], X[90:], y[90:]


# -------------------------------------------------------------------------------- conformance, all members
@pytest.mark.parametrize("key", CLASSIFIERS.keys())
def test_member_learns_and_is_deterministic(key: str, ramps: tuple[np.ndarray, ...]) -> None:
    X_train, y_train, X_test, y_test = ramps
    spec = CLASSIFIERS.get(key)
    assert spec.key == key and spec.description

    model = spec.make(random_state=0, n_sessions=N_SESSIONS).fit(X_train, y_train)
    pred = model.predict(X_test)
    assert pred.shape == (len(X_test),)
    assert set(pred) <= set(model.classes_)
    assert set(model.classes_) == set(LABELS)
    accuracy = np.mean(pred == y_test)
    assert accuracy >= 0.85, f"{key}: held-out accuracy {accuracy:.2f}"

    again = spec.make(random_state=0, n_sessions=N_SESSIONS).fit(X_train, y_train).predict(X_test)
    np.testing.assert_array_equal(pred, again)

    # the flattened 2-D form of the same data is accepted by the fitted model...
    np.testing.assert_array_equal(model.predict(X_test.reshape(len(X_test), -1)), pred)
    # ... and a clone fits 2-D data (n, n_features) from scratch
    clone_2d = clone(model).fit(X_train[:, -1, :], y_train)
    assert set(clone_2d.predict(X_test[:, -1, :])) <= set(LABELS)


@pytest.mark.parametrize("key", CLASSIFIERS.keys())
def test_member_integer_labels(key: str, ramps: tuple[np.ndarray, ...]) -> None:
    X_train, y_train, X_test, _ = ramps
    codes = {label: i for i, label in enumerate(LABELS)}
    y_int = np.array([codes[v] for v in y_train])
    pred = make_classifier(key, random_state=1).fit(X_train, y_int).predict(X_test)
    assert pred.dtype.kind == "i" and set(pred) <= {0, 1, 2}


# -------------------------------------------------------------------------------------------------- conv1d
def test_conv1d_uses_time_order() -> None:
    X, y = order_data(300, seed=1)
    model = Conv1DClassifier(random_state=0).fit(X[:150], y[:150])
    accuracy = np.mean(model.predict(X[150:]) == y[150:])
    assert accuracy >= 0.9, f"held-out accuracy {accuracy:.2f}"


def test_conv1d_fitted_state_and_kernel_clipping(ramps: tuple[np.ndarray, ...]) -> None:
    X_train, y_train, X_test, _ = ramps
    model = Conv1DClassifier(kernel_size=50, pool="max", max_epochs=5, random_state=0).fit(X_train, y_train)
    assert model.kernel_size_ == N_SESSIONS and model.kernel_size == 50
    assert model.n_features_in_ == N_SESSIONS * N_FEATURES
    assert (model.n_sessions_, model.n_channels_) == (N_SESSIONS, N_FEATURES)
    assert model.mean_.shape == model.scale_.shape == (N_FEATURES,)
    assert model.loss_curve_.shape == (5,) and np.all(np.isfinite(model.loss_curve_))
    proba = model.predict_proba(X_test)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(model.classes_[proba.argmax(axis=1)], model.predict(X_test))
    with pytest.raises(ValueError, match="fitted on"):
        model.predict(X_test[:, :4, :])


def test_conv1d_seed_changes_model(ramps: tuple[np.ndarray, ...]) -> None:
    X_train, y_train, X_test, _ = ramps
    a = Conv1DClassifier(max_epochs=3, random_state=0).fit(X_train, y_train).predict_proba(X_test)
    b = Conv1DClassifier(max_epochs=3, random_state=1).fit(X_train, y_train).predict_proba(X_test)
    assert not np.allclose(a, b)


def test_conv1d_leaves_global_torch_rng_alone(ramps: tuple[np.ndarray, ...]) -> None:
    import torch

    X_train, y_train, _, _ = ramps
    state = torch.random.get_rng_state()
    Conv1DClassifier(max_epochs=2, random_state=0).fit(X_train, y_train)
    assert torch.equal(state, torch.random.get_rng_state())


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"n_filters": 0}, "n_filters"),
        ({"pool": "median"}, "pool"),
        ({"lr": -1.0}, "lr"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_conv1d_rejects_bad_params(params: dict, message: str, ramps: tuple[np.ndarray, ...]) -> None:
    X_train, y_train, _, _ = ramps
    with pytest.raises(ValueError, match=message):
        Conv1DClassifier(**params).fit(X_train, y_train)


@parametrize_with_checks([Conv1DClassifier(max_epochs=20), ScaledRidge(), SignedLog()])
def test_sklearn_estimator_checks(estimator, check) -> None:  # type: ignore[no-untyped-def]
    check(estimator)


# --------------------------------------------------------------------------------------------- importances
@pytest.mark.parametrize("key", CLASSIFIERS.keys())
def test_feature_importances_find_the_informative_feature(key: str) -> None:
    X, y = ramp_data(180, seed=2, informative=(0,))
    model = make_classifier(key, random_state=0, n_sessions=N_SESSIONS).fit(X[:90], y[:90])
    importances = feature_importances(model, X[90:], y[90:], random_state=0)
    assert importances.shape == (N_SESSIONS, N_FEATURES)
    assert np.all(np.isfinite(importances))
    assert int(np.argmax(importances.sum(axis=0))) == 0
    again = feature_importances(model, X[90:], y[90:], random_state=0)
    np.testing.assert_array_equal(importances, again)


# ---------------------------------------------------------------------------------------------- registry
def test_registry_keys_and_unknown_key() -> None:
    assert CLASSIFIERS.keys() == ["svm", "ridge", "lda", "logreg", "rf", "gbt", "conv1d"]
    allowed = "allowed: conv1d, gbt, lda, logreg, rf, ridge, svm"
    with pytest.raises(ConfigError, match=rf"unknown classifier 'xgb'; {allowed}"):
        CLASSIFIERS.get("xgb")
    with pytest.raises(ConfigError, match="allowed: conv1d, gbt, lda, logreg, rf, ridge, svm"):
        make_classifier("knn")


def test_signed_log_compresses_magnitudes_keeping_sign_and_order() -> None:
    X = np.array([[-1e6, -1.0, 0.0, 1.0, 1e6]])
    out = SignedLog().fit_transform(X)
    np.testing.assert_allclose(out, [[-np.log1p(1e6), -np.log(2.0), 0.0, np.log(2.0), np.log1p(1e6)]])
    assert np.all(np.diff(out[0]) > 0)


def test_scaled_ridge_penalty_grows_with_the_number_of_features() -> None:
    X, y = ramp_data(90, seed=3)
    flat = X.reshape(len(X), -1)
    model = ScaledRidge(alpha_per_feature=0.5).fit(flat, y)
    assert model.ridge_.alpha == pytest.approx(0.5 * flat.shape[1])
    assert set(model.predict(flat)) <= set(LABELS)


def test_flatten() -> None:
    X = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    out = Flatten().fit_transform(X)
    assert out.shape == (2, 12)
    np.testing.assert_array_equal(out[1], np.arange(12, 24))
    np.testing.assert_array_equal(Flatten().transform(out), out)

"""Classifiers that tell learning rules apart from observable statistics over training (Nayebi et al. 2020).

A sample is one network. Its features are a 3-D array ``X`` of shape ``(n_networks, n_sessions, n_features)``
(time axis = recording sessions, channels = statistics); labels ``y`` are rule keys (``"sgdm"``, ``"fa"``) or
ints. Every member of :data:`CLASSIFIERS` is a scikit-learn estimator that accepts that 3-D ``X`` as well as
its flattened 2-D form ``(n_networks, n_sessions * n_features)``:

* ``svm``: :class:`Flatten` → :class:`SignedLog` → ``StandardScaler`` → ``LinearSVC(C=1)``.
* ``logreg``: :class:`Flatten` → :class:`SignedLog` → ``StandardScaler`` → multinomial ``LogisticRegression(C=1)``.
* ``lda``: :class:`Flatten` → :class:`SignedLog` → ``StandardScaler`` → linear discriminant analysis with
  Ledoit-Wolf shrinkage of the covariance. Closed form, no iterations: as accurate as the SVM on these features
  (quick bank, 5 splits: activations 0.85, activity changes 0.82, weights 0.58, noisy activations 0.72 vs
  SVM 0.85/0.79/0.60/0.73) and 4-10× faster to fit, where logistic regression's solver slows down by 50-100×
  on noisy features.
* ``ridge``: :class:`Flatten` → :class:`SignedLog` → ``StandardScaler`` → :class:`ScaledRidge` (one-vs-rest ridge
  regression with a penalty proportional to the number of features). It solves one n × n system per fit, so it
  stays ~0.01 s per split at thousands of features where LDA takes seconds; accuracy within ~0.05 of LDA
  (quick bank, 5 splits: activations 0.80, 303 noisy units × 37 sessions 0.78 (LDA 0.76), activity changes 0.79,
  weights 0.54). The design search, which scores hundreds of protocols, uses it by default.
* ``rf``: :class:`Flatten` → ``RandomForestClassifier(n_estimators=200, max_features="sqrt")``.
* ``gbt``: :class:`Flatten` → ``HistGradientBoostingClassifier(max_iter=150)``, no early stopping.
* ``conv1d``: :class:`Conv1DClassifier`, the paper's "Conv1D MLP": one 1-D convolution over the time axis.

Build one with ``CLASSIFIERS.get(key).make(random_state=0, n_sessions=21)`` or :func:`make_classifier`; an
unknown key raises :class:`~simulator.errors.ConfigError` naming the allowed keys.

:func:`feature_importances` scores every (session, statistic) cell by permutation importance on held-out data.

Statistics such as norms, variances and kurtoses span orders of magnitude across networks, so the linear models
see them through :class:`SignedLog` (``sign(x)·log1p(|x|)``, monotone, so the tree models do not need it). On the
``quick`` bank it lifts the SVM on activations from 0.81 to 0.85 (5 splits).

scikit-learn conformance: :class:`Conv1DClassifier` passes every check of
``sklearn.utils.estimator_checks.parametrize_with_checks`` (scikit-learn 1.9) with no expected failures.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.inspection import permutation_importance
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from simulator.registry import Registry

if TYPE_CHECKING:
    from advisor.science.conv1d import Conv1DClassifier

__all__ = [
    "CLASSIFIERS",
    "ClassifierSpec",
    "Conv1DClassifier",
    "Flatten",
    "ScaledRidge",
    "SignedLog",
    "feature_importances",
    "make_classifier",
]

# ------------------------------------------------------------------------------------------------ Flatten
class Flatten(TransformerMixin, BaseEstimator):
    """Stateless transformer: ``(n, d1, d2, ...)`` → ``(n, d1 * d2 * ...)``; 2-D input passes unchanged."""

    def fit(self, X: Any, y: Any = None) -> Flatten:
        """Validate ``X`` (any number of dimensions ≥ 2) and return self; nothing is learned."""
        check_array(X, allow_nd=True, ensure_all_finite=False, dtype=None)
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Return ``X`` as a 2-D array of shape ``(n, prod(X.shape[1:]))``."""
        X = check_array(X, allow_nd=True, ensure_all_finite=False, dtype=None)
        return X.reshape(X.shape[0], -1)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        tags.input_tags.three_d_array = True
        tags.input_tags.allow_nan = True
        return tags


class SignedLog(TransformerMixin, BaseEstimator):
    """Transformer ``x → sign(x)·log1p(|x|)``: compresses statistics spanning orders of magnitude while keeping
    their order and sign (identity-like near 0). Nothing is learned; ``fit`` records the number of features."""

    def fit(self, X: Any, y: Any = None) -> SignedLog:
        """Validate ``X`` and return self."""
        validate_data(self, X, ensure_all_finite="allow-nan", dtype=(np.float64, np.float32))
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Return ``sign(X)·log1p(|X|)`` (same shape and floating dtype)."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, ensure_all_finite="allow-nan", dtype=(np.float64, np.float32))
        return np.sign(X) * np.log1p(np.abs(X))

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        tags.input_tags.allow_nan = True
        return tags


class ScaledRidge(ClassifierMixin, BaseEstimator):
    """Ridge classification (one-vs-rest least squares on ±1 targets) with ``alpha = alpha_per_feature · d``.

    On standardized features the squared norm of a sample grows with the number of features d, so a penalty
    proportional to d keeps the same amount of shrinkage whether a protocol gives 60 or 2,500 features.

    Args:
        alpha_per_feature: penalty per feature. On the quick bank (5 splits) 0.01 / 0.1 / 1 gave activations
            0.83/0.80/0.79, noisy activations (303 units, 37 sessions, noise 0.35) 0.76/0.78/0.68, activity changes
            0.78/0.79/0.76, weights 0.61/0.54/0.39; 0.1 is best where the search spends its time (noisy
            protocols).
    """

    def __init__(self, alpha_per_feature: float = 0.1) -> None:
        self.alpha_per_feature = alpha_per_feature

    def fit(self, X: Any, y: Any) -> ScaledRidge:
        X, y = validate_data(self, X, y)
        check_classification_targets(y)
        self.ridge_ = RidgeClassifier(alpha=self.alpha_per_feature * X.shape[1]).fit(X, y)
        self.classes_ = self.ridge_.classes_
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False)
        return self.ridge_.decision_function(X)

    def predict(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False)
        return self.ridge_.predict(X)


# ---------------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class ClassifierSpec:
    """One registered classifier.

    Attributes:
        key: registry key, the same string in TOML, CLI and MLflow.
        description: one line for catalogs.
        make: factory ``make(random_state=None, n_sessions=None)`` returning an unfitted estimator that
            accepts X of shape (n_networks, n_sessions, n_features).
    """

    key: str
    description: str
    make: Callable[..., BaseEstimator]


def _standardized(name: str, estimator: BaseEstimator) -> Pipeline:
    """``estimator`` after the linear models' shared prefix: flatten sessions × statistics, signed log (the
    statistics span orders of magnitude), standardize."""
    return Pipeline([("flatten", Flatten()), ("log", SignedLog()), ("scale", StandardScaler()), (name, estimator)])


def _make_svm(random_state: int | None = None, n_sessions: int | None = None) -> BaseEstimator:
    # dual=False: the primal is the right problem when networks outnumber features or are comparable, and it
    # converges without ConvergenceWarning on standardized features.
    svc = LinearSVC(C=1.0, dual=False, max_iter=10_000, random_state=random_state)
    return _standardized("svc", svc)


def _make_ridge(random_state: int | None = None, n_sessions: int | None = None) -> BaseEstimator:
    return _standardized("ridge", ScaledRidge())


def _make_lda(random_state: int | None = None, n_sessions: int | None = None) -> BaseEstimator:
    lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")
    return _standardized("lda", lda)


def _make_logreg(random_state: int | None = None, n_sessions: int | None = None) -> BaseEstimator:
    # lbfgs on the multinomial loss. C over {0.01, 0.1, 1, 10} on the quick bank (5 splits, full observation):
    # activations 0.81/0.88/0.88/0.87, activity changes 0.84/0.85/0.84/0.83, weights 0.40/0.48/0.56/0.56.
    logreg = LogisticRegression(C=1.0, max_iter=5_000, random_state=random_state)
    return _standardized("logreg", logreg)


def _make_rf(random_state: int | None = None, n_sessions: int | None = None) -> BaseEstimator:
    rf = RandomForestClassifier(n_estimators=200, max_features="sqrt", n_jobs=1, random_state=random_state)
    return Pipeline([("flatten", Flatten()), ("rf", rf)])


def _make_gbt(random_state: int | None = None, n_sessions: int | None = None) -> BaseEstimator:
    gbt = HistGradientBoostingClassifier(max_iter=150, early_stopping=False, random_state=random_state)
    return Pipeline([("flatten", Flatten()), ("gbt", gbt)])


def _make_conv1d(random_state: int | None = None, n_sessions: int | None = None) -> BaseEstimator:
    from advisor.science.conv1d import Conv1DClassifier  # torch only where the Conv1D is used

    kernel_size = 3 if n_sessions is None else max(1, min(3, int(n_sessions)))
    return Conv1DClassifier(kernel_size=kernel_size, random_state=random_state)


CLASSIFIERS: Registry[ClassifierSpec] = Registry("classifier")
for _spec in (
    ClassifierSpec("svm", "linear SVM (C=1) on signed-log, standardized, flattened statistics", _make_svm),
    ClassifierSpec("ridge", "ridge classification (penalty 0.1 per feature) on signed-log, standardized "
                   "statistics; fastest", _make_ridge),
    ClassifierSpec("lda", "linear discriminant analysis (Ledoit-Wolf shrinkage) on signed-log, standardized "
                   "statistics", _make_lda),
    ClassifierSpec("logreg", "multinomial logistic regression (C=1) on signed-log, standardized statistics",
                   _make_logreg),
    ClassifierSpec("rf", "random forest (200 trees, sqrt features) on flattened statistics", _make_rf),
    ClassifierSpec("gbt", "histogram gradient boosting (150 iterations) on flattened statistics", _make_gbt),
    ClassifierSpec("conv1d", "Conv1D MLP: 20 filters of 3 sessions, ReLU, linear readout (Adam)", _make_conv1d),
):
    CLASSIFIERS.add(_spec.key, _spec)
del _spec


def make_classifier(key: str, random_state: int | None = None, n_sessions: int | None = None) -> BaseEstimator:
    """Return an unfitted estimator for registry ``key``.

    Raises:
        ConfigError: ``key`` is not registered (the message names the allowed keys).
    """
    return CLASSIFIERS.get(key).make(random_state=random_state, n_sessions=n_sessions)


# ----------------------------------------------------------------------------------- feature importances
def feature_importances(estimator: BaseEstimator, X: Any, y: Any, random_state: int | None) -> np.ndarray:
    """Permutation importance of every (session, statistic) cell, on held-out data.

    Each cell of the flattened ``X`` is shuffled across networks (``n_repeats=5``) and the drop in the
    estimator's accuracy (its ``score``) is averaged. Model-agnostic: the same procedure serves every member of
    :data:`CLASSIFIERS`, all of which accept the flattened 2-D form of the data they were fitted on.

    Args:
        estimator: a fitted classifier from :data:`CLASSIFIERS`.
        X: held-out features, shape (n_networks, n_sessions, n_features) (2-D: one session).
        y: held-out labels, shape (n_networks,).
        random_state: seed of the permutations.

    Returns:
        mean accuracy drop, shape (n_sessions, n_features); ~0 for uninformative cells, may be slightly negative.
    """
    X = np.asarray(X)
    if X.ndim not in (2, 3):
        raise ValueError(f"X must be 2-D or 3-D (n_networks, n_sessions, n_features); got shape {X.shape}.")
    shape = X.shape[1:] if X.ndim == 3 else (1, X.shape[1])
    result = permutation_importance(
        estimator, X.reshape(X.shape[0], -1), y, n_repeats=5, random_state=random_state, n_jobs=1
    )
    return np.asarray(result.importances_mean).reshape(shape)


def __getattr__(name: str) -> Any:
    """``Conv1DClassifier`` lives in :mod:`advisor.science.conv1d` (torch is imported only when it is used) and
    is re-exported here on first access."""
    if name == "Conv1DClassifier":
        from advisor.science.conv1d import Conv1DClassifier

        return Conv1DClassifier
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

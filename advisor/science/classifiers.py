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

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.inspection import permutation_importance
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted, validate_data
from torch.nn import functional as F

from simulator.registry import Registry

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

_POOLS = ("max", "avg", None)


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


# ------------------------------------------------------------------------------------------------ Conv1D
class _Conv1DNet(torch.nn.Module):
    """Conv1d over time → ReLU → optional global pooling over time → linear readout.

    Parameters are initialized from ``generator`` (uniform in ±1/sqrt(fan_in), PyTorch's default bound), so the
    global torch RNG is neither used nor advanced.
    """

    def __init__(
        self,
        n_channels: int,
        n_sessions: int,
        n_classes: int,
        n_filters: int,
        kernel_size: int,
        stride: int,
        pool: str | None,
        generator: torch.Generator,
    ) -> None:
        super().__init__()
        self.stride = stride
        self.pool = pool
        n_out_times = (n_sessions - kernel_size) // stride + 1
        n_hidden = n_filters if pool is not None else n_filters * n_out_times
        self.conv_weight = self._uniform((n_filters, n_channels, kernel_size), n_channels * kernel_size, generator)
        self.conv_bias = self._uniform((n_filters,), n_channels * kernel_size, generator)
        self.readout_weight = self._uniform((n_classes, n_hidden), n_hidden, generator)
        self.readout_bias = self._uniform((n_classes,), n_hidden, generator)

    @staticmethod
    def _uniform(shape: tuple[int, ...], fan_in: int, generator: torch.Generator) -> torch.nn.Parameter:
        bound = 1.0 / math.sqrt(fan_in)
        data = torch.empty(shape, dtype=torch.float64).uniform_(-bound, bound, generator=generator)
        return torch.nn.Parameter(data)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (n, n_classes) from standardized input of shape (n, n_channels, n_sessions)."""
        h = F.relu(F.conv1d(x, self.conv_weight, self.conv_bias, stride=self.stride))
        if self.pool == "max":
            h = h.amax(dim=2)
        elif self.pool == "avg":
            h = h.mean(dim=2)
        else:
            h = h.flatten(start_dim=1)
        return F.linear(h, self.readout_weight, self.readout_bias)


class Conv1DClassifier(ClassifierMixin, BaseEstimator):
    """The "Conv1D MLP" of Nayebi et al. (2020) as a scikit-learn classifier (torch, CPU, float64).

    One 1-D convolution over the session axis (channels = statistics), ReLU, optional global pooling over the
    remaining time axis, then a linear readout to the classes. Inputs are standardized per statistic with the
    training set's mean and SD. Trained with Adam on the cross-entropy, deterministically for a fixed
    ``random_state`` (its own ``torch.Generator``; no global seeding).

    Input ``X``: shape ``(n_networks, n_sessions, n_features)``; 2-D input ``(n, f)`` at fit time is one session
    of ``f`` statistics. After fitting on 3-D data, 2-D input of shape ``(n, n_sessions * n_features)`` (the
    C-order flattening) is also accepted by the prediction methods.

    Args:
        n_filters: output channels of the convolution.
        kernel_size: convolution width in sessions; clipped to ``n_sessions``.
        stride: convolution stride in sessions.
        pool: ``"max"`` or ``"avg"`` pools each filter over time; ``None`` feeds every time step to the readout.
        lr: Adam learning rate.
        max_epochs: passes over the training set.
        batch_size: minibatch size; ``None`` trains full-batch.
        weight_decay: Adam's L2 penalty.
        random_state: seed of parameter initialization and minibatch order (int, RandomState or None).

    Fitted attributes:
        classes_: (n_classes,) class labels. n_features_in_: ``n_sessions * n_features``.
        n_sessions_, n_channels_: the time and channel sizes seen in ``fit``. kernel_size_: the clipped width.
        mean_, scale_: (n_channels,) standardization. module_: the trained torch module.
        loss_curve_: training loss per epoch.
    """

    def __init__(
        self,
        n_filters: int = 20,
        kernel_size: int = 3,
        stride: int = 1,
        pool: str | None = None,
        lr: float = 1e-2,
        max_epochs: int = 200,
        batch_size: int | None = 64,
        weight_decay: float = 1e-4,
        random_state: int | np.random.RandomState | None = None,
    ) -> None:
        self.n_filters = n_filters
        self.kernel_size = kernel_size
        self.stride = stride
        self.pool = pool
        self.lr = lr
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.random_state = random_state

    # ---------------------------------------------------------------------------------------- validation
    def _check_params(self) -> None:
        def positive_int(name: str) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"`{name}` must be an integer >= 1; got {value!r}.")

        for name in ("n_filters", "kernel_size", "stride", "max_epochs"):
            positive_int(name)
        if self.batch_size is not None:
            positive_int("batch_size")
        if self.pool not in _POOLS:
            raise ValueError(f"`pool` must be one of 'max', 'avg', None; got {self.pool!r}.")
        if not (isinstance(self.lr, int | float) and self.lr > 0):
            raise ValueError(f"`lr` must be a number > 0; got {self.lr!r}.")
        if not (isinstance(self.weight_decay, int | float) and self.weight_decay >= 0):
            raise ValueError(f"`weight_decay` must be a number >= 0; got {self.weight_decay!r}.")

    def _validate_X(self, X: Any, y: Any = None, *, reset: bool) -> tuple[np.ndarray, Any]:
        """Validate X (and y at fit time); return X as (n, n_sessions, n_channels) float64 and y.

        3-D input is validated in its flattened form, so ``n_features_in_`` is the flattened count and the
        error for a wrong feature count is scikit-learn's.
        """
        ndim = getattr(X, "ndim", None)
        if ndim is None and isinstance(X, list | tuple):
            ndim = np.ndim(X)
        shape3: tuple[int, int] | None = None
        if ndim == 3:
            X = np.asarray(X)
            shape3 = (X.shape[1], X.shape[2])
            if not reset and shape3 != (self.n_sessions_, self.n_channels_):
                raise ValueError(
                    f"X has shape (n, {shape3[0]}, {shape3[1]}) but {type(self).__name__} was fitted on "
                    f"(n, {self.n_sessions_}, {self.n_channels_}) (n_sessions, n_features)."
                )
            X = X.reshape(X.shape[0], -1)
        elif ndim is not None and ndim > 3:
            raise ValueError(f"X must be 2-D or 3-D (n_networks, n_sessions, n_features); got {ndim}-D.")
        dtype = [np.float64, np.float32]
        if reset:
            X, y = validate_data(self, X, y, dtype=dtype, reset=True)
            n_sessions, n_channels = shape3 if shape3 is not None else (1, X.shape[1])
            self.n_sessions_: int = int(n_sessions)
            self.n_channels_: int = int(n_channels)
        else:
            X = validate_data(self, X, dtype=dtype, reset=False)
        return X.reshape(X.shape[0], self.n_sessions_, self.n_channels_).astype(np.float64, copy=False), y

    def _tensor(self, X3: np.ndarray) -> torch.Tensor:
        """Standardize (n, n_sessions, n_channels) and return a (n, n_channels, n_sessions) float64 tensor."""
        Z = (X3 - self.mean_) / self.scale_
        return torch.from_numpy(np.ascontiguousarray(Z.transpose(0, 2, 1), dtype=np.float64))

    # ---------------------------------------------------------------------------------------------- fit
    def fit(self, X: Any, y: Any) -> Conv1DClassifier:
        """Train on ``X`` of shape (n, n_sessions, n_features) (or (n, n_features)) and labels ``y``.

        Returns:
            self.

        Raises:
            ValueError: bad hyperparameters, bad shapes, non-finite values or regression targets.
        """
        self._check_params()
        X3, y = self._validate_X(X, y, reset=True)
        check_classification_targets(y)
        self.classes_, y_index = np.unique(y, return_inverse=True)
        self.kernel_size_ = min(int(self.kernel_size), self.n_sessions_)

        flat = X3.reshape(-1, self.n_channels_)
        self.mean_ = flat.mean(axis=0)
        scale = flat.std(axis=0)
        self.scale_ = np.where(scale > 0, scale, 1.0)

        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        generator = torch.Generator().manual_seed(seed)
        module = _Conv1DNet(
            n_channels=self.n_channels_,
            n_sessions=self.n_sessions_,
            n_classes=len(self.classes_),
            n_filters=int(self.n_filters),
            kernel_size=self.kernel_size_,
            stride=int(self.stride),
            pool=self.pool,
            generator=generator,
        )
        inputs = self._tensor(X3)
        targets = torch.from_numpy(np.asarray(y_index, dtype=np.int64))
        n = inputs.shape[0]
        batch = n if self.batch_size is None else min(int(self.batch_size), n)
        optimizer = torch.optim.Adam(module.parameters(), lr=float(self.lr), weight_decay=float(self.weight_decay))
        losses = []
        module.train()
        for _ in range(int(self.max_epochs)):
            order = torch.randperm(n, generator=generator) if batch < n else torch.arange(n)
            total = 0.0
            for start in range(0, n, batch):
                idx = order[start : start + batch]
                optimizer.zero_grad()
                loss = F.cross_entropy(module(inputs[idx]), targets[idx])
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(idx)
            losses.append(total / n)
        module.eval()
        self.module_ = module
        self.loss_curve_ = np.asarray(losses)
        return self

    # ------------------------------------------------------------------------------------------ predict
    def _logits(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        X3, _ = self._validate_X(X, reset=False)
        with torch.no_grad():
            return self.module_(self._tensor(X3)).numpy()

    def decision_function(self, X: Any) -> np.ndarray:
        """Class scores: (n, n_classes) logits; for two classes, (n,) logit of ``classes_[1]`` minus ``[0]``."""
        logits = self._logits(X)
        if logits.shape[1] == 2:
            return logits[:, 1] - logits[:, 0]
        return logits

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities of shape (n, n_classes), columns ordered as ``classes_``."""
        logits = torch.from_numpy(self._logits(X))
        return torch.softmax(logits, dim=1).numpy()

    def predict(self, X: Any) -> np.ndarray:
        """Predicted labels of shape (n,), drawn from ``classes_``."""
        logits = self._logits(X)
        return self.classes_[np.argmax(logits, axis=1)]

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        return tags


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

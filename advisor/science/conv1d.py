"""The paper's "Conv1D MLP" (Nayebi et al. 2020) as a scikit-learn classifier: one 1-D convolution over the
time axis (sessions), ReLU, optional pooling, a linear readout; torch on the CPU, float64. Registered in
``advisor.science.classifiers`` as ``conv1d`` (imported from there lazily, so that torch is loaded only where
the Conv1D is used)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from torch.nn import functional as F

__all__ = ["Conv1DClassifier"]

_POOLS = ("max", "avg", None)


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



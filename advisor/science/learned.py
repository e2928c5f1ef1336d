"""Learned classifiers that see more of a recording than the fixed statistics of ``advisor.science.features``.

* :class:`DeepSetsClassifier`: a permutation-invariant network over the recorded units (Zaheer et al. 2017),
  trained on the raw virtual recording rather than on statistics. Its input ``X`` has shape
  ``(n_networks, n_groups, n_sessions, n_units, n_probes)`` (:func:`raw_recording_array` builds it from an
  :class:`~advisor.science.protocol.Recording`): chronic recordings, the same units in every session. Every unit's
  trajectory (its ``n_sessions × n_probes`` values) is centred and scaled by its own mean and SD before the
  network sees it, so the unknown per-unit gain and offset of a rig cannot matter; a shared MLP ``phi`` embeds
  every unit, mean and SD over the units of each group pool the embeddings, and an MLP ``rho`` maps the pooled
  groups to class logits. Reordering the units of a group leaves every output unchanged.
* :class:`GroupVoteClassifier`: the per-layer-group samples of Nayebi et al. (2020): one sample per (network,
  group) of that group's statistics plus a one-hot group indicator, one base classifier over all of them, and
  one vote per network, the sum of its groups' class probabilities (or scores).

Both are scikit-learn classifiers: ``fit`` returns self, fitted state ends in ``_``, ``random_state`` is turned
into a seed inside ``fit``, labels may be strings (``classes_``), and a bad hyperparameter raises ``ValueError``
naming it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils import check_random_state
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted, check_X_y
from torch.nn import functional as F

from advisor.science.protocol import Recording

__all__ = ["DeepSetsClassifier", "GroupVoteClassifier", "group_samples", "normalize_units", "raw_recording_array"]

UNIT_SD_EPS = 1e-6
"""A unit whose SD over sessions × probes is at most this is constant: it is centred, not scaled (all zeros)."""

POOL_SD_EPS = 1e-6
"""Added to the variance over units before the square root: the SD pool keeps a finite gradient at SD 0."""

PREDICT_CHUNK = 256
"""Networks per forward pass at prediction time: memory is bounded by the chunk, not by ``n_networks``."""


# ------------------------------------------------------------------------------------------------ inputs
def raw_recording_array(recording: Recording) -> np.ndarray:
    """The raw values of a recording of activity as one array for :class:`DeepSetsClassifier`.

    Groups may have recorded different numbers of units (``n_units`` split over the groups leaves remainders);
    every group is truncated to the smallest count ``k``, keeping its first ``k`` units. ``record_chunks`` picks
    the recorded units of each network in random order, so the first ``k`` are a random subset of them.

    Args:
        recording: a recording of activations or activity changes: ``values`` is a list of G arrays of shape
            ``(n_networks, n_sessions, k_g, n_probes)``.

    Returns:
        ``(n_networks, G, n_sessions, k, n_probes)`` float32 with ``k = min_g k_g``; NaN where the recording is
        not finite (a network without the group, or one whose activity diverged: ±inf), which
        :class:`DeepSetsClassifier` treats as missing.

    Raises:
        ValueError: no groups; weights (3-D values, no probe axis); groups that disagree on networks, sessions
            or probes.
    """
    values = list(recording.values)
    if not values:
        raise ValueError("recording has no groups; a raw recording array needs at least one")
    names = [recording.groups[i] if i < len(recording.groups) else f"#{i}" for i in range(len(values))]
    for group, v in zip(names, values, strict=True):
        if v.ndim != 4:
            raise ValueError(
                f"group {group!r} has values of shape {v.shape}; a raw recording array needs activity "
                "(n_networks, n_sessions, n_units, n_probes): weights have no probe axis"
            )
    n, s, _, p = values[0].shape
    for group, v in zip(names, values, strict=True):
        if (v.shape[0], v.shape[1], v.shape[3]) != (n, s, p):
            raise ValueError(
                f"group {group!r} has values of shape {v.shape}, but the first group has {n} networks, {s} "
                f"sessions and {p} probes"
            )
    k = min(v.shape[2] for v in values)
    stacked = np.stack([v[:, :, :k] for v in values], axis=1).astype(np.float32)
    return np.where(np.isfinite(stacked), stacked, np.float32(np.nan))


def normalize_units(X: np.ndarray) -> np.ndarray:
    """Each unit's trajectory centred by its own mean and divided by its own SD over sessions × probes.

    Values that are not finite are left out of the mean and SD and become 0 (the unit's mean) afterwards; a unit
    with SD ≤ :data:`UNIT_SD_EPS` (constant, or with no finite value) becomes all zeros. For every unit, ``a·x + b``
    with ``a > 0`` gives the same result as ``x``: the network never sees a unit's gain or offset.

    Args:
        X: ``(n_networks, G, n_sessions, k, n_probes)`` values.

    Returns:
        ``(n_networks, G, k, n_sessions · n_probes)`` float32: per unit, its sessions in order, probes within.
    """
    n, g, s, k, p = X.shape
    # a float32 copy (always a copy: it is modified in place), units before sessions; moments in float64
    x = np.array(np.moveaxis(np.asarray(X), 3, 2), dtype=np.float32, order="C").reshape(n, g, k, s * p)
    finite = np.isfinite(x)
    all_finite = bool(finite.all())
    if all_finite:
        count = np.full((n, g, k, 1), s * p, dtype=np.float64)
    else:
        count = np.maximum(finite.sum(axis=-1, keepdims=True), 1).astype(np.float64)
        x[~finite] = 0.0
    mean = x.sum(axis=-1, keepdims=True, dtype=np.float64) / count
    x -= mean.astype(np.float32)
    if not all_finite:
        x[~finite] = 0.0  # a missing value counts as the unit's mean
    sd = np.sqrt(np.einsum("...i,...i->...", x, x, dtype=np.float64)[..., None] / count)
    x /= np.where(sd > UNIT_SD_EPS, sd, 1.0).astype(np.float32)
    return x


# ------------------------------------------------------------------------------------------ validation
def _check_int(owner: object, name: str, minimum: int = 1, allow_none: bool = False) -> None:
    value = getattr(owner, name)
    if allow_none and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        allowed = f"an integer >= {minimum}" + (" or None" if allow_none else "")
        raise ValueError(f"`{name}` must be {allowed}; got {value!r}.")


def _check_number(owner: object, name: str, low: float, high: float, low_open: bool, high_open: bool) -> None:
    value = getattr(owner, name)
    ok = (
        isinstance(value, int | float | np.integer | np.floating)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value > low if low_open else value >= low)
        and (value < high if high_open else value <= high)
    )
    if not ok:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"`{name}` must be a number in {interval}; got {value!r}.")


# ------------------------------------------------------------------------------------------------ DeepSets
def _uniform(shape: tuple[int, ...], fan_in: int, generator: torch.Generator) -> torch.nn.Parameter:
    """A float32 parameter uniform in ±1/sqrt(fan_in) (PyTorch's default bound), drawn from ``generator``."""
    bound = 1.0 / math.sqrt(fan_in)
    data = torch.empty(shape, dtype=torch.float32).uniform_(-bound, bound, generator=generator)
    return torch.nn.Parameter(data)


class _DeepSetsNet(torch.nn.Module):
    """phi (two ReLU layers, per unit) → mean and SD over units, per group → rho (one ReLU layer) → logits.

    The group indicator concatenated to phi's input (``[z, e_g]``) enters the first layer as ``W_z z + W_e e_g``,
    so it is stored as its equivalent, a learned per-group bias ``group_embedding[g] = W_e[:, g]``. Parameters are
    initialized from ``generator``; the global torch RNG is neither used nor advanced.
    """

    def __init__(self, n_inputs: int, n_groups: int, n_classes: int, hidden: int, generator: torch.Generator) -> None:
        super().__init__()
        fan_in = n_inputs + n_groups  # the concatenated input [z, one-hot group]
        self.phi1_weight = _uniform((hidden, n_inputs), fan_in, generator)
        self.group_embedding = _uniform((n_groups, hidden), fan_in, generator)
        self.phi1_bias = _uniform((hidden,), fan_in, generator)
        self.phi2_weight = _uniform((hidden, hidden), hidden, generator)
        self.phi2_bias = _uniform((hidden,), hidden, generator)
        n_pooled = 2 * hidden * n_groups
        self.rho1_weight = _uniform((hidden, n_pooled), n_pooled, generator)
        self.rho1_bias = _uniform((hidden,), n_pooled, generator)
        self.rho2_weight = _uniform((n_classes, hidden), hidden, generator)
        self.rho2_bias = _uniform((n_classes,), hidden, generator)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Logits of shape (b, n_classes) from normalized trajectories of shape (b, G, k, n_sessions · n_probes)."""
        h = F.linear(z, self.phi1_weight, self.phi1_bias) + self.group_embedding[None, :, None, :]
        h = F.relu(h)
        h = F.relu(F.linear(h, self.phi2_weight, self.phi2_bias))  # (b, G, k, hidden)
        mean = h.mean(dim=2, keepdim=True)
        sd = torch.sqrt(((h - mean) ** 2).mean(dim=2) + POOL_SD_EPS)  # faster than Tensor.var over dim 2
        pooled = torch.cat([mean[:, :, 0], sd], dim=-1).flatten(start_dim=1)  # (b, G · 2 · hidden)
        r = F.relu(F.linear(pooled, self.rho1_weight, self.rho1_bias))
        return F.linear(r, self.rho2_weight, self.rho2_bias)


class DeepSetsClassifier(ClassifierMixin, BaseEstimator):
    """A permutation-invariant network over recorded units, trained on raw virtual recordings (torch, CPU).

    Every unit's trajectory is normalized by its own mean and SD over sessions × probes
    (:func:`normalize_units`): a rig does not know a unit's gain or offset, so the network must not see them.
    ``phi`` (``n_sessions · n_probes`` + group one-hot → ``hidden`` → ``hidden``, ReLU) embeds every unit; the
    mean and the SD over the units of each group pool the embeddings; the pooled groups, concatenated, go through
    ``rho`` (→ ``hidden``, ReLU → logits). Permuting the units of a group, or changing any unit's gain ``a > 0``
    and offset ``b`` (``a·x + b``), leaves the outputs unchanged up to float32 rounding.

    Trained with Adam on the cross-entropy for ``epochs`` passes over the networks, in float32. Each training
    minibatch sees, for every network and group, a random subset of ``round(k · (1 - unit_dropout))`` of its
    units (at least one): the set function must not depend on which units a rig happened to record, and every
    minibatch is a new subsample at no cost. Prediction uses every unit, and since the network is a function of a
    set, any number of units per group (the fitted ``G``, ``n_sessions`` and ``n_probes`` are required). Training
    is deterministic for a fixed ``random_state`` (its own ``torch.Generator`` for initialization, minibatch order
    and unit subsets; no global seeding) and a fixed number of torch threads, which callers set.

    Input ``X``: ``(n_networks, G, n_sessions, k, n_probes)`` (:func:`raw_recording_array`), a chronic recording
    (the same units in every session). NaN values are allowed (a network without a group): they are left out of
    their unit's mean and SD and count as its mean; infinite values are rejected.

    Args:
        hidden: width of every hidden layer of phi and rho.
        epochs: passes over the training networks.
        lr: Adam learning rate.
        weight_decay: Adam's L2 penalty.
        batch_size: networks per minibatch (clipped to the number of networks); ``None`` trains full-batch.
        unit_dropout: fraction of each group's units left out of each training minibatch, in [0, 1).
        random_state: seed of initialization, minibatch order and unit subsets (int, RandomState or None).

    Fitted attributes:
        classes_: (n_classes,) class labels. n_groups_, n_sessions_, n_units_, n_probes_: the shape seen in
        ``fit``. module_: the trained torch module. loss_curve_: (epochs,) mean training loss per epoch.
    """

    def __init__(
        self,
        hidden: int = 64,
        epochs: int = 200,
        lr: float = 1e-3,
        weight_decay: float = 1e-3,
        batch_size: int | None = 32,
        unit_dropout: float = 0.5,
        random_state: int | np.random.RandomState | None = None,
    ) -> None:
        self.hidden = hidden
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.unit_dropout = unit_dropout
        self.random_state = random_state

    def _check_params(self) -> None:
        _check_int(self, "hidden")
        _check_int(self, "epochs")
        _check_int(self, "batch_size", allow_none=True)
        _check_number(self, "lr", 0.0, math.inf, low_open=True, high_open=True)
        _check_number(self, "weight_decay", 0.0, math.inf, low_open=False, high_open=True)
        _check_number(self, "unit_dropout", 0.0, 1.0, low_open=False, high_open=True)

    @staticmethod
    def _check_5d(X: Any) -> np.ndarray:
        X = check_array(X, allow_nd=True, dtype=[np.float32, np.float64], ensure_all_finite="allow-nan")
        if X.ndim != 5:
            raise ValueError(
                f"X must be 5-D (n_networks, n_groups, n_sessions, n_units, n_probes); got shape {X.shape}"
            )
        if min(X.shape[1:]) < 1:
            raise ValueError(f"X must have at least one group, session, unit and probe; got shape {X.shape}")
        return X

    def fit(self, X: Any, y: Any) -> DeepSetsClassifier:
        """Train on raw recordings ``X`` of shape (n_networks, G, n_sessions, k, n_probes) and labels ``y``.

        Returns:
            self.

        Raises:
            ValueError: bad hyperparameters, X not 5-D, infinite values, lengths of X and y that differ, or
                regression targets.
        """
        self._check_params()
        X, y = check_X_y(X, y, allow_nd=True, dtype=[np.float32, np.float64], ensure_all_finite="allow-nan")
        X = self._check_5d(X)
        check_classification_targets(y)
        self.classes_, y_index = np.unique(y, return_inverse=True)
        n, n_groups, n_sessions, k, n_probes = X.shape
        self.n_groups_, self.n_sessions_, self.n_units_, self.n_probes_ = n_groups, n_sessions, k, n_probes

        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        generator = torch.Generator().manual_seed(seed)
        module = _DeepSetsNet(n_sessions * n_probes, n_groups, len(self.classes_), int(self.hidden), generator)
        inputs = torch.from_numpy(normalize_units(X))  # (n, G, k, S·P)
        targets = torch.from_numpy(np.asarray(y_index, dtype=np.int64))
        batch = n if self.batch_size is None else min(int(self.batch_size), n)
        keep = max(1, round(k * (1.0 - float(self.unit_dropout))))
        group_index = torch.arange(n_groups)[None, :, None]
        optimizer = torch.optim.Adam(module.parameters(), lr=float(self.lr), weight_decay=float(self.weight_decay))
        losses = []
        module.train()
        for _ in range(int(self.epochs)):
            order = torch.randperm(n, generator=generator) if batch < n else torch.arange(n)
            total = 0.0
            for start in range(0, n, batch):
                idx = order[start : start + batch]
                if keep < k:  # a random subset of units per network and group, gathered in one copy
                    pick = torch.argsort(torch.rand((len(idx), n_groups, k), generator=generator), dim=2)
                    z = inputs[idx[:, None, None], group_index, pick[:, :, :keep]]
                else:
                    z = inputs[idx]
                optimizer.zero_grad()
                loss = F.cross_entropy(module(z), targets[idx])
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(idx)
            losses.append(total / n)
        module.eval()
        self.module_ = module
        self.loss_curve_ = np.asarray(losses)
        return self

    def _logits(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        X = self._check_5d(X)
        fitted = (self.n_groups_, self.n_sessions_, self.n_probes_)
        if (X.shape[1], X.shape[2], X.shape[4]) != fitted:
            raise ValueError(
                f"X has shape (n, {X.shape[1]}, {X.shape[2]}, k, {X.shape[4]}) but {type(self).__name__} was "
                f"fitted on (n, {fitted[0]}, {fitted[1]}, k, {fitted[2]}) (n_groups, n_sessions, n_probes)"
            )
        parts = []
        with torch.no_grad():
            for start in range(0, X.shape[0], PREDICT_CHUNK):
                z = torch.from_numpy(normalize_units(X[start : start + PREDICT_CHUNK]))
                parts.append(self.module_(z).numpy())
        return np.concatenate(parts, axis=0)

    def decision_function(self, X: Any) -> np.ndarray:
        """Class scores: (n, n_classes) logits; for two classes, (n,) logit of ``classes_[1]`` minus ``[0]``."""
        logits = self._logits(X)
        if logits.shape[1] == 2:
            return logits[:, 1] - logits[:, 0]
        return logits

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities of shape (n, n_classes), columns ordered as ``classes_``."""
        return torch.softmax(torch.from_numpy(self._logits(X)), dim=1).numpy()

    def predict(self, X: Any) -> np.ndarray:
        """Predicted labels of shape (n,), drawn from ``classes_``."""
        logits = self._logits(X)  # first: it checks that the model is fitted
        return self.classes_[np.argmax(logits, axis=1)]

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False  # 5-D raw recordings only
        tags.input_tags.allow_nan = True
        return tags


# ------------------------------------------------------------------------------------------------ group vote
def group_samples(X: np.ndarray, n_groups: int) -> np.ndarray:
    """One sample per (network, group): the group's statistics and a one-hot group indicator, every session.

    Args:
        X: ``(n_networks, n_sessions, n_groups · F)`` features, channels group-major (the F statistics of group 0,
            then those of group 1, ...), as ``advisor.science.features`` orders them.
        n_groups: G, a divisor of the channel count.

    Returns:
        ``(n_networks · G, n_sessions, F + G)``, same dtype as ``X``; sample ``i · G + g`` is network ``i``'s
        group ``g``: ``[X[i, s, g·F:(g+1)·F], e_g]`` at every session ``s``.
    """
    n, s, c = X.shape
    f = c // n_groups
    per_group = X.reshape(n, s, n_groups, f).transpose(0, 2, 1, 3)  # (n, G, S, F)
    indicator = np.broadcast_to(np.eye(n_groups, dtype=X.dtype)[None, :, None, :], (n, n_groups, s, n_groups))
    return np.concatenate([per_group, indicator], axis=-1).reshape(n * n_groups, s, f + n_groups)


def _base_has(attr: str) -> Callable[[GroupVoteClassifier], bool]:
    """Whether the (fitted, else unfitted) base estimator has ``attr``: gates the meta-estimator's method."""
    return lambda self: hasattr(self.base_ if hasattr(self, "base_") else self.base, attr)


class GroupVoteClassifier(ClassifierMixin, BaseEstimator):
    """Per-layer-group samples with one vote per network (Nayebi et al. 2020).

    ``fit`` turns every network into G samples (:func:`group_samples`): group g's F statistics and a one-hot
    indicator of g, over every session, with the network's label; one clone of ``base`` learns all of them, so
    the classifier sees what the statistics of one group say about the rule, whichever group it is. ``predict``
    sums, over a network's G samples, the base's ``predict_proba`` (or, if it has none, its ``decision_function``;
    a binary 1-D score ``d`` counts as the scores ``(0, d)``) and takes the arg-max: one vote per network.

    Input ``X``: ``(n_networks, n_sessions, n_groups · F)``, channels group-major; the base receives 3-D arrays
    ``(n_networks · n_groups, n_sessions, F + n_groups)`` (the members of ``advisor.science.classifiers.CLASSIFIERS``
    accept them).

    Args:
        base: an unfitted scikit-learn classifier, cloned by every ``fit``.
        n_groups: G, the number of layer groups; it must divide the channel count.

    Fitted attributes:
        base_: the fitted clone of ``base``. classes_: (n_classes,) the base's class labels.
        n_sessions_, n_channels_: the shape seen in ``fit``.
    """

    def __init__(self, base: Any, n_groups: int = 3) -> None:
        self.base = base
        self.n_groups = n_groups

    def _check_X(self, X: Any, *, reset: bool) -> np.ndarray:
        X = check_array(X, allow_nd=True, dtype=None, ensure_all_finite=False)  # the base judges values
        if X.ndim != 3:
            raise ValueError(f"X must be 3-D (n_networks, n_sessions, n_groups · n_features); got shape {X.shape}")
        g, c = int(self.n_groups), X.shape[2]
        if c % g:
            raise ValueError(
                f"X has {c} channels, which n_groups = {g} does not divide: channels must be n_groups · n_features"
            )
        if reset:
            self.n_sessions_, self.n_channels_ = X.shape[1], c
        elif (X.shape[1], c) != (self.n_sessions_, self.n_channels_):
            raise ValueError(
                f"X has shape (n, {X.shape[1]}, {c}) but {type(self).__name__} was fitted on "
                f"(n, {self.n_sessions_}, {self.n_channels_}) (n_sessions, n_channels)"
            )
        return X

    def fit(self, X: Any, y: Any) -> GroupVoteClassifier:
        """Fit a clone of ``base`` on the per-group samples of ``X`` (n_networks, n_sessions, G · F).

        Returns:
            self.

        Raises:
            ValueError: ``n_groups`` is not a positive integer, X is not 3-D, G does not divide the channel count,
                lengths of X and y differ, or regression targets.
        """
        _check_int(self, "n_groups")
        X = self._check_X(X, reset=True)
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != X.shape[0]:
            raise ValueError(f"y must be 1-D with one label per network ({X.shape[0]}); got shape {y.shape}")
        check_classification_targets(y)
        g = int(self.n_groups)
        self.base_ = clone(self.base).fit(group_samples(X, g), np.repeat(y, g))
        self.classes_ = self.base_.classes_
        return self

    def _votes(self, X: Any) -> np.ndarray:
        """(n_networks, n_classes) sums over each network's groups of the base's probabilities or scores."""
        check_is_fitted(self)
        X = self._check_X(X, reset=False)
        g = int(self.n_groups)
        samples = group_samples(X, g)
        if hasattr(self.base_, "predict_proba"):
            scores = np.asarray(self.base_.predict_proba(samples), dtype=np.float64)
        else:
            scores = np.asarray(self.base_.decision_function(samples), dtype=np.float64)
            if scores.ndim == 1:  # binary: d > 0 favours classes_[1]; (0, d) keeps the sign when summed
                scores = np.stack([np.zeros_like(scores), scores], axis=1)
        return scores.reshape(X.shape[0], g, -1).sum(axis=1)

    def decision_function(self, X: Any) -> np.ndarray:
        """Summed votes (n, n_classes); for two classes, (n,) votes for ``classes_[1]`` minus ``classes_[0]``."""
        votes = self._votes(X)
        if votes.shape[1] == 2:
            return votes[:, 1] - votes[:, 0]
        return votes

    @available_if(_base_has("predict_proba"))
    def predict_proba(self, X: Any) -> np.ndarray:
        """Mean over each network's groups of the base's class probabilities, (n, n_classes); base needs one."""
        return self._votes(X) / int(self.n_groups)

    def predict(self, X: Any) -> np.ndarray:
        """One label per network, (n,): the arg-max of its summed votes."""
        votes = self._votes(X)  # first: it checks that the model is fitted
        return self.classes_[np.argmax(votes, axis=1)]

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        return tags

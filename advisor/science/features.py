"""From a virtual recording to classifier features: statistics per layer group and session.

For every recorded layer group the 21 unit statistics (raw/abs/sq × mean, median, q3, var, norm, skew,
kurtosis; ``advisor.science.statistics``) are computed over units, per probe stimulus for activity observables (then
averaged over probes, as in Nayebi et al. 2020) and over synapses for weights; with the protocol's
``statistics`` set to ``population`` or ``both``, the gain-invariant population statistics of
``advisor.science.population`` (dimensionality, pairwise correlations, sparseness, representational drift) take their
place or join them. The result has one sample per
network, a time axis of sessions and a channel axis of (group, statistic) features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from advisor.science.population import POPULATION_STATISTICS, population_statistics
from advisor.science.protocol import Recording, RecordingProtocol, learning_curve, record_chunks
from advisor.science.statistics import FEATURES, NanPolicy, NanReport, feature_names, unit_statistics

if TYPE_CHECKING:
    from simulator.bank import TrajectoryBank


@dataclass(frozen=True)
class Features:
    """Classifier inputs of one protocol applied to one bank.

    Attributes:
        X: (n_networks, n_sessions, n_groups · n_statistics) float32.
        names: the channel names, ``"{group}.{function}_{statistic}"``.
        curve: (n_networks, n_sessions, 2) training loss and metric at the same sessions (the
            protocol's sessions; the controls use the whole curve, ``advisor.science.controls``).
        sessions: (n_sessions,) checkpoint indices.
        nan_report: non-finite feature values, counted per feature before the policy was applied.
    """

    X: np.ndarray
    names: list[str]
    curve: np.ndarray
    sessions: np.ndarray
    nan_report: NanReport


N_STATISTICS = len(FEATURES)


def group_names(statistics: str, observable: str, chronic: bool) -> list[str]:
    """The statistic names of one recorded group, in the order :func:`group_features` computes them: the
    marginal ones (``{function}_{statistic}``), then the population ones (``advisor.science.population``; without
    ``tuning_stability`` for an acute recording, which has no unit to follow, and none for weights)."""
    names = feature_names() if statistics in ("marginal", "both") else []
    if statistics in ("population", "both") and observable != "weights":
        names += [n for n in POPULATION_STATISTICS if chronic or n != "tuning_stability"]
    return names


def group_features(values: np.ndarray, statistics: str, observable: str, chronic: bool) -> np.ndarray:
    """(n, S, k[, P]) recorded values of one group → (n, S, len(group_names(...))) float32."""
    parts = []
    if statistics in ("marginal", "both"):
        parts.append(_group_statistics(values))
    if statistics in ("population", "both") and observable != "weights" and values.ndim == 4:
        pop = population_statistics(values, chronic)
        if not chronic:
            pop = np.delete(pop, POPULATION_STATISTICS.index("tuning_stability"), axis=-1)
        parts.append(pop)
    return np.concatenate(parts, axis=-1).astype(np.float32)


def _group_statistics(values: np.ndarray) -> np.ndarray:
    """(n, S, k[, P]) values → (n, S, 21) statistics over units (averaged over probes; a probe with a non-finite
    statistic poisons the mean)."""
    x = values if values.ndim == 3 else np.moveaxis(values, 2, -1)  # units last: (n, S[, P], k)
    stats, _ = unit_statistics(x, axis=-1, nan_policy=NanPolicy.PROPAGATE)
    return stats.mean(axis=2) if stats.ndim == 4 else stats


def _finish(X: np.ndarray, names: list[str], curve: np.ndarray, sessions: np.ndarray,
            policy: NanPolicy) -> Features:
    """Count non-finite values per feature, apply the policy, and package the features."""
    bad = ~np.isfinite(X)
    nonfinite = int(bad.sum())
    counts = bad.reshape(-1, X.shape[-1]).sum(axis=0)
    by_feature = {name: int(c) for name, c in zip(names, counts, strict=True) if c}
    report = NanReport(int(X.size), nonfinite, by_feature, policy)
    if nonfinite:
        if policy is NanPolicy.RAISE:
            worst = ", ".join(sorted(by_feature, key=by_feature.get, reverse=True)[:5])  # type: ignore[arg-type]
            raise ValueError(f"{nonfinite} of {X.size} feature values are non-finite (e.g. {worst}); "
                             "use nan_policy 'zero' or 'propagate'")
        if policy is NanPolicy.ZERO:
            X = np.where(np.isfinite(X), X, np.float32(0.0))
    if policy is NanPolicy.ZERO:  # a diverged network's loss is NaN: the control sees it under the same policy
        curve = np.where(np.isfinite(curve), curve, np.float32(0.0))
    return Features(X, names, curve, sessions, report)


def featurize_recording(recording: Recording, nan_policy: NanPolicy | str = NanPolicy.ZERO,
                        statistics: str = "marginal", observable: str = "activations",
                        chronic: bool = True) -> Features:
    """Statistics of every recorded group and session (marginal ones averaged over probes)."""
    policy = NanPolicy(nan_policy) if isinstance(nan_policy, str) else nan_policy
    per_group = group_names(statistics, observable, chronic)
    names = [f"{group}.{n}" for group in recording.groups for n in per_group]
    X = np.concatenate([group_features(v, statistics, observable, chronic) for v in recording.values],
                       axis=-1).astype(np.float32)
    return _finish(X, names, recording.curve, recording.sessions, policy)


def featurize(bank: TrajectoryBank, protocol: RecordingProtocol,
              nan_policy: NanPolicy | str = NanPolicy.ZERO) -> Features:
    """Record ``bank`` under ``protocol`` and compute its features, a chunk of networks at a time: memory grows
    with the features, not with the bank (the same values as ``featurize_recording(virtual_recording(...))``)."""
    policy = NanPolicy(nan_policy) if isinstance(nan_policy, str) else nan_policy
    n = int(bank[protocol.observable].shape[0])
    sessions = protocol.session_indices(bank[protocol.observable].shape[1])
    per_group = group_names(protocol.statistics, protocol.observable, protocol.chronic)
    width = len(per_group)
    X = np.empty((n, len(sessions), len(protocol.layers) * width), dtype=np.float32)
    for position, networks, values in record_chunks(bank, protocol):
        X[networks, :, position * width:(position + 1) * width] = group_features(
            values, protocol.statistics, protocol.observable, protocol.chronic)
    names = [f"{group}.{n}" for group in protocol.layers for n in per_group]
    return _finish(X, names, learning_curve(bank, protocol), sessions, policy)



AUGMENT_SEED_STRIDE = 7919
"""Recording seeds of the extra virtual recordings: ``protocol.seed + AUGMENT_SEED_STRIDE * j``, j = 1..K-1."""


def check_augment(k: Any) -> None:
    """AdvisorError unless ``k`` (virtual recordings per training network) is a positive integer."""
    from advisor.errors import AdvisorError

    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise AdvisorError(f"--augment must be a positive integer (virtual recordings per training network); "
                           f"got {k!r}")


def augmented_features(bank: TrajectoryBank, protocol: RecordingProtocol, k: int,
                       nan_policy: NanPolicy | str = NanPolicy.ZERO) -> list[np.ndarray]:
    """K − 1 more virtual recordings of every network under ``protocol`` (other unit subsets, gains and noise
    draws; the same sessions, stimuli and statistics), as feature arrays aligned with ``featurize(bank,
    protocol).X``: training networks can be recorded many times at no simulation cost
    (``advisor.science.evaluation.score``'s
    ``augment``). ``k = 1`` gives none.

    Raises:
        AdvisorError: ``k`` is not a positive integer.
    """
    from dataclasses import replace

    check_augment(k)
    return [featurize(bank, replace(protocol, seed=protocol.seed + AUGMENT_SEED_STRIDE * j), nan_policy).X
            for j in range(1, k)]

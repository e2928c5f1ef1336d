"""From a virtual recording to classifier features: statistics per layer group and session.

For every recorded layer group the 21 unit statistics (raw/abs/sq × mean, median, q3, var, norm, skew,
kurtosis; ``advisor.statistics``) are computed over units, per probe stimulus for activity observables (then
averaged over probes, as in Nayebi et al. 2020) and over synapses for weights. The result has one sample per
network, a time axis of sessions and a channel axis of (group, statistic) features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from advisor.protocol import Recording, RecordingProtocol, learning_curve, record_chunks
from advisor.statistics import FEATURES, NanPolicy, NanReport, feature_names, unit_statistics


@dataclass(frozen=True)
class Features:
    """Classifier inputs of one protocol applied to one bank.

    Attributes:
        X: (n_networks, n_sessions, n_groups · n_statistics) float32.
        names: the channel names, ``"{group}.{function}_{statistic}"``.
        curve: (n_networks, n_sessions, 2) training loss and metric at the same sessions (the
            protocol's sessions; the controls use the whole curve, ``advisor.controls``).
        sessions: (n_sessions,) checkpoint indices.
        nan_report: non-finite feature values, counted per feature before the policy was applied.
    """

    X: np.ndarray
    names: list[str]
    curve: np.ndarray
    sessions: np.ndarray
    nan_report: NanReport


N_STATISTICS = len(FEATURES)


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


def featurize_recording(recording: Recording, nan_policy: NanPolicy | str = NanPolicy.ZERO) -> Features:
    """Statistics over units of every recorded group and session (averaged over probes)."""
    policy = NanPolicy(nan_policy) if isinstance(nan_policy, str) else nan_policy
    names = [n for group in recording.groups for n in feature_names(f"{group}.")]
    X = np.concatenate([_group_statistics(v) for v in recording.values], axis=-1).astype(np.float32)
    return _finish(X, names, recording.curve, recording.sessions, policy)


def featurize(bank: Any, protocol: RecordingProtocol, nan_policy: NanPolicy | str = NanPolicy.ZERO) -> Features:
    """Record ``bank`` under ``protocol`` and compute its features, a chunk of networks at a time: memory grows
    with the features, not with the bank (the same values as ``featurize_recording(virtual_recording(...))``)."""
    policy = NanPolicy(nan_policy) if isinstance(nan_policy, str) else nan_policy
    n = int(bank[protocol.observable].shape[0])
    sessions = protocol.session_indices(bank[protocol.observable].shape[1])
    X = np.empty((n, len(sessions), len(protocol.layers) * N_STATISTICS), dtype=np.float32)
    for position, networks, values in record_chunks(bank, protocol):
        X[networks, :, position * N_STATISTICS:(position + 1) * N_STATISTICS] = _group_statistics(values)
    names = [n for group in protocol.layers for n in feature_names(f"{group}.")]
    return _finish(X, names, learning_curve(bank, protocol), sessions, policy)


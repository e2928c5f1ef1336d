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

from advisor.protocol import Recording, RecordingProtocol, virtual_recording
from advisor.statistics import FEATURES, NanPolicy, NanReport, feature_names, unit_statistics


@dataclass(frozen=True)
class Features:
    """Classifier inputs of one protocol applied to one bank.

    Attributes:
        X: (n_networks, n_sessions, n_groups · n_statistics) float32.
        names: the channel names, ``"{group}.{function}_{statistic}"``.
        curve: (n_networks, n_sessions, 2) training loss and metric at the same sessions (the
            task-performance control's only input).
        sessions: (n_sessions,) checkpoint indices.
        nan_report: non-finite feature values, counted per feature before the policy was applied.
    """

    X: np.ndarray
    names: list[str]
    curve: np.ndarray
    sessions: np.ndarray
    nan_report: NanReport


def featurize_recording(recording: Recording, nan_policy: NanPolicy | str = NanPolicy.ZERO) -> Features:
    """Statistics over units of every recorded group and session (averaged over probes)."""
    blocks, names = [], []
    total, nonfinite, by_feature = 0, 0, {}
    policy = NanPolicy(nan_policy) if isinstance(nan_policy, str) else nan_policy
    for group, values in zip(recording.groups, recording.values, strict=True):
        x = values if values.ndim == 3 else np.moveaxis(values, 2, -1)  # units last: (N, S[, P], k)
        stats, report = unit_statistics(x, axis=-1, nan_policy=NanPolicy.PROPAGATE)
        if stats.ndim == 4:  # average over probes, a probe with a non-finite statistic poisons the mean
            stats = stats.mean(axis=2)
        bad = ~np.isfinite(stats)
        group_names = feature_names(f"{group}.")
        total += stats.size
        nonfinite += int(bad.sum())
        for j, name in enumerate(group_names):
            count = int(bad[..., j].sum())
            if count:
                by_feature[name] = count
        blocks.append(stats)
        names.extend(group_names)
    X = np.concatenate(blocks, axis=-1).astype(np.float32)
    report = NanReport(total, nonfinite, by_feature, policy)
    if nonfinite:
        if policy is NanPolicy.RAISE:
            worst = ", ".join(sorted(by_feature, key=by_feature.get, reverse=True)[:5])  # type: ignore[arg-type]
            raise ValueError(f"{nonfinite} of {total} feature values are non-finite (e.g. {worst}); "
                             "use nan_policy 'zero' or 'propagate'")
        if policy is NanPolicy.ZERO:
            X = np.where(np.isfinite(X), X, np.float32(0.0))
    curve = recording.curve  # a diverged network's loss is NaN: the control sees it under the same policy
    if policy is NanPolicy.ZERO:
        curve = np.where(np.isfinite(curve), curve, np.float32(0.0))
    return Features(X, names, curve, recording.sessions, report)


def featurize(bank: Any, protocol: RecordingProtocol, nan_policy: NanPolicy | str = NanPolicy.ZERO) -> Features:
    """Record ``bank`` under ``protocol`` and compute its features."""
    return featurize_recording(virtual_recording(bank, protocol), nan_policy)


N_STATISTICS = len(FEATURES)

"""Gain-invariant statistics of the recorded population: geometry, sparseness and drift over sessions.

The unit statistics (``advisor.science.statistics``) are marginal distributions over units and so are dominated by
scale,
which the rig sets by an unknown positive gain per animal, area and unit (and, optionally, an additive offset per
unit). The statistics here depend on each unit's responses only through its *tuning over probes up to a positive
affine map*: multiplying a unit's responses by any positive constant and adding any constant leaves every one of
them unchanged (up to float error). Within one network and session let R be the (k_v, P) matrix of the valid units
(see below) x probes, ``m_u`` and ``sd_u`` a unit's mean and SD (``ddof=0``) over probes, ``z_u = (r_u - m_u) /
sd_u`` the z-scored unit, and ``C = Z Z^T / P`` the units' correlation matrix across probes:

===================== ============================================================================================
statistic             definition (one network and session)
===================== ============================================================================================
dimensionality        participation ratio ``(sum λ)^2 / sum λ^2`` of the eigenvalues λ of C, divided by
                      ``min(k_v, P - 1)`` (the largest possible rank of C) so that it lies in (0, 1]; computed as
                      ``k_v^2 / ||Z^T Z / P||_F^2`` (C and the P x P Gram matrix share their nonzero eigenvalues)
corr_mean             mean of the pairwise Pearson correlations across probes between distinct units (the upper
                      triangle of C, ``k_v (k_v - 1) / 2`` values), from ``sum C = ||sum_u z_u||^2 / P``
corr_sd               SD (``ddof=0``) of the same values, from ``sum C^2 = ||Z^T Z / P||_F^2``
lifetime_sparseness   mean over units of the Treves–Rolls sparseness over probes of ``r' = r_u - min_p r_u``:
                      ``(1 - mean(r')^2 / mean(r'^2)) / (1 - 1/P)``; 1 for a one-hot tuning curve, 0 for flat
population_sparseness mean over probes of the Treves–Rolls sparseness over units of ``z'_u = (r_u - min_p r_u) /
                      sd_u``: ``(1 - mean_u(z')^2 / mean_u(z'^2)) / (1 - 1/k_v)``
rsa_first             Pearson correlation between the upper triangles (``P (P - 1) / 2`` probe pairs) of this
                      session's representational dissimilarity matrix and session 0's; the RDM is P x P,
                      ``1 - Pearson correlation across units between two probes' patterns of z-scored units``
rsa_previous          the same against the previous session
tuning_stability      chronic only: mean over units of the Pearson correlation across probes between the unit's
                      tuning curve in this session and in session 0 (``mean_p z_u,s z_u,0``)
spread_change         chronic: mean over units of ``log(sd_u,s / sd_u,0)``; acute: ``log(mean_u sd_u,s /
                      mean_u sd_u,0)`` (units differ between sessions, so only a population ratio exists)
===================== ============================================================================================

Sessions: session 0 has ``rsa_first = rsa_previous = tuning_stability = 1`` and ``spread_change = 0`` wherever
the statistic is defined for it (NaN otherwise). Chronic recordings keep the same units in every session, so unit
j of session s is unit j of session 0 and per-unit gains cancel in ``tuning_stability`` and ``spread_change``.
Acute recordings record new units each session: ``tuning_stability`` is then NaN in every session (there is no
unit to follow; the caller drops or zeroes the column), and ``spread_change`` is a ratio of population means, in
which the animal and area gains (common to all sessions) cancel exactly and the per-unit gains only on average
(``spread_change`` is the one statistic that is not exactly gain-invariant for acute recordings). The other
statistics are computed within one session (the RSA compares probe x probe matrices, which do not name units) and
are exactly invariant in both cases.

Valid units, edge cases:

- A unit with a non-finite value at any probe of a session (NaN: a unit that network does not have) is absent
  from that session: it is excluded from every statistic of the session (and, chronic, from the comparisons of
  that session with session 0).
- A unit constant across probes (``max == min``, e.g. a silent ReLU unit) has no tuning: its z-score and
  correlations are undefined and its Treves–Rolls sparseness is 0 / 0. It is excluded from every statistic but
  the acute ``spread_change``, where it counts with SD 0 (a population that falls silent loses spread). ``k_v``
  above counts the finite, non-constant units.
- Fewer than 2 valid units, or fewer than 3 probes (with 2 probes every correlation is ±1): ``dimensionality``,
  ``corr_mean``, ``corr_sd``, ``rsa_first``, ``rsa_previous`` and ``tuning_stability`` are NaN.
  ``population_sparseness`` needs 2 valid units, ``lifetime_sparseness`` one.
- A probe at which every valid unit is at its minimum (``mean_u z'^2 = 0``) has no population sparseness: it is
  left out of the mean over probes (NaN if no probe is left).
- An RDM entry is undefined when one of its two probes has the same z-score in every valid unit (no variance
  across units, tested relative to the probe's mean square); the RSA correlations use the probe pairs defined in
  both sessions and are NaN if those have no variance in one of the sessions.
- ``spread_change`` is NaN when a session has no unit to compare (chronic: no unit non-constant in both sessions;
  acute: mean SD 0 in either session).

Non-finite outputs (NaN) are returned as they are; callers apply their ``NanPolicy``. No numpy warning is
emitted.

Precision and speed: computed in float64 (the SD of the pairwise correlations comes from a difference of sums),
returned as float32. Everything is batched over networks and sessions, a block of networks at a time: per block
one (P x P) Gram matrix per session (a batched matmul over units) carries the dimensionality, the pairwise
correlations and the RDMs, so nothing of size k x k is ever formed.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from advisor.errors import AdvisorError

__all__ = [
    "POPULATION_STATISTICS",
    "population_feature_names",
    "population_statistics",
]

POPULATION_STATISTICS: Final[tuple[str, ...]] = (
    "dimensionality",
    "corr_mean",
    "corr_sd",
    "lifetime_sparseness",
    "population_sparseness",
    "rsa_first",
    "rsa_previous",
    "tuning_stability",
    "spread_change",
)

_INDEX: Final[dict[str, int]] = {name: i for i, name in enumerate(POPULATION_STATISTICS)}
# Values (n_block * S * k * P) per block of networks: a few float64 buffers of this size stay small (~16 MiB each).
_BLOCK_VALUES: Final[int] = 1 << 21
# A probe whose centred sum of squares across units is below this fraction of its raw sum of squares has no
# variance across units (its z-scores agree up to rounding); likewise a vector of RDM entries for the RSA.
_REL_TOL: Final[float] = 1e-9


def population_feature_names(prefix: str = "") -> list[str]:
    """Names ``f"{prefix}{name}"`` of POPULATION_STATISTICS, in order."""
    return [f"{prefix}{name}" for name in POPULATION_STATISTICS]


def population_statistics(values: np.ndarray, chronic: bool) -> np.ndarray:
    """Gain- and offset-invariant statistics of one layer group's recording (definitions: the module docstring).

    Args:
        values: (n_networks, S, k, P) recorded values (float32 or float64); session 0 first; NaN marks a unit a
            network does not have.
        chronic: whether unit j is the same unit in every session (chronic) or a new one each session (acute).

    Returns:
        (n_networks, S, len(POPULATION_STATISTICS)) float32, NaN where a statistic is undefined.

    Raises:
        AdvisorError: ``values`` is not 4-dimensional.
    """
    values = np.asarray(values)
    if values.ndim != 4:
        raise AdvisorError(f"`values` must have shape (n_networks, sessions, units, probes); got {values.shape}.")
    n, s, k, p = values.shape
    out = np.full((n, s, len(POPULATION_STATISTICS)), np.nan, dtype=np.float32)
    if out.size == 0 or k == 0 or p == 0:
        return out
    block = max(1, _BLOCK_VALUES // (s * k * p))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for start in range(0, n, block):
            stop = min(n, start + block)
            out[start:stop] = _block_statistics(values[start:stop], chronic)
    return out


def _block_statistics(values: np.ndarray, chronic: bool) -> np.ndarray:
    """Statistics (n, S, 9) float64 of a block of networks (the caller silences the divisions by zero)."""
    x = values.astype(np.float64)  # a copy: NaN units are zeroed in place below
    p = x.shape[-1]
    finite = np.asarray(np.isfinite(x).all(axis=-1))  # (n, S, k)
    x[~finite] = 0.0
    lo, hi = x.min(axis=-1), x.max(axis=-1)
    valid = finite & (hi > lo)  # finite and tuned: the units of every statistic but the acute spread
    mean = x.mean(axis=-1)
    x -= mean[..., None]
    var = np.einsum("...p,...p->...", x, x) / p
    sd = np.sqrt(var)
    inv_sd = np.where(valid, 1.0 / sd, 0.0)
    z = x * inv_sd[..., None]  # z-scored valid units; all-zero rows for the others, which then add nothing
    k_v = valid.sum(axis=-1).astype(np.float64)  # (n, S)
    gram = np.matmul(np.swapaxes(z, -1, -2), z)  # (n, S, P, P): Z^T Z
    col = z.sum(axis=-2)  # (n, S, P): sum over units of z_u

    stats = np.full((*x.shape[:2], len(POPULATION_STATISTICS)), np.nan)
    correlated = (k_v >= 2) & (p >= 3)
    _correlation_statistics(stats, gram, col, k_v, p, correlated)
    _sparseness(stats, z, (lo - mean) * inv_sd, var, (mean - lo) ** 2, valid, k_v, p)
    _rsa(stats, gram, col, k_v, correlated)
    if chronic:
        _tuning_stability(stats, z, valid, p >= 3)
    _spread_change(stats, sd, valid, finite, chronic)
    return stats


def _correlation_statistics(stats: np.ndarray, gram: np.ndarray, col: np.ndarray, k_v: np.ndarray, p: int,
                            defined: np.ndarray) -> None:
    """dimensionality, corr_mean, corr_sd from ``sum C = ||col||^2 / P`` and ``sum C^2 = ||Z^T Z||_F^2 / P^2``."""
    sum_c = np.einsum("...p,...p->...", col, col) / p
    sum_c2 = np.einsum("...pq,...pq->...", gram, gram) / (p * p)
    rank = np.minimum(k_v, p - 1)
    pairs = k_v * (k_v - 1) / 2
    # The diagonal of C holds k_v ones; the upper triangle is half of the rest.
    corr_mean = (sum_c - k_v) / (2 * pairs)
    corr_var = np.maximum((sum_c2 - k_v) / (2 * pairs) - corr_mean**2, 0.0)
    stats[..., _INDEX["dimensionality"]] = np.where(defined, k_v**2 / sum_c2 / rank, np.nan)
    stats[..., _INDEX["corr_mean"]] = np.where(defined, corr_mean, np.nan)
    stats[..., _INDEX["corr_sd"]] = np.where(defined, np.sqrt(corr_var), np.nan)


def _sparseness(stats: np.ndarray, z: np.ndarray, z_min: np.ndarray, var: np.ndarray, gap2: np.ndarray,
                valid: np.ndarray, k_v: np.ndarray, p: int) -> None:
    """Lifetime (over probes, per unit) and population (over units, per probe) Treves–Rolls sparseness.

    ``gap2`` is ``(mean_p r - min_p r)^2`` per unit, so that the unit's ``mean(r'^2) = var + gap2``.
    """
    n_valid = valid.sum(axis=-1)
    lifetime = np.where(valid, var / (var + gap2), 0.0).sum(axis=-1) / (1 - 1 / p) / n_valid
    stats[..., _INDEX["lifetime_sparseness"]] = np.where((n_valid >= 1) & (p >= 2), lifetime, np.nan)

    shifted = z - np.where(valid, z_min, 0.0)[..., None]  # z'_u; rows of excluded units stay 0
    first = shifted.sum(axis=-2) / k_v[..., None]  # (n, S, P): mean_u z'
    second = np.einsum("...kp,...kp->...p", shifted, shifted) / k_v[..., None]  # mean_u z'^2
    active = second > 0
    per_probe = np.where(active, (1 - first**2 / second) / (1 - 1 / k_v[..., None]), 0.0)
    n_active = active.sum(axis=-1)
    population = per_probe.sum(axis=-1) / n_active
    stats[..., _INDEX["population_sparseness"]] = np.where((k_v >= 2) & (n_active >= 1), population, np.nan)


def _rsa(stats: np.ndarray, gram: np.ndarray, col: np.ndarray, k_v: np.ndarray, defined: np.ndarray) -> None:
    """rsa_first, rsa_previous: Pearson correlations between the upper triangles of the sessions' RDMs."""
    p = gram.shape[-1]
    # Centre the probe patterns across the valid units: sum_u (z_up - mu_p)(z_uq - mu_q) = (Z^T Z)_pq - k_v mu_p mu_q.
    centred = gram - col[..., :, None] * col[..., None, :] / k_v[..., None, None]
    diag = np.diagonal(centred, axis1=-2, axis2=-1)
    spread = diag > _REL_TOL * np.diagonal(gram, axis1=-2, axis2=-1)
    norm = np.where(spread, 1.0 / np.sqrt(np.where(spread, diag, 1.0)), np.nan)
    upper = np.triu_indices(p, 1)
    # The RDM is 1 - correlation; a Pearson correlation between RDMs equals the one between correlation matrices.
    corr = (centred * norm[..., :, None] * norm[..., None, :])[..., upper[0], upper[1]]  # (n, S, pairs)
    corr = np.where(defined[..., None], corr, np.nan)
    stats[..., _INDEX["rsa_first"]] = _masked_pearson(corr, corr[:, :1])
    previous = np.concatenate([corr[:, :1], corr[:, :-1]], axis=1)
    stats[..., _INDEX["rsa_previous"]] = _masked_pearson(corr, previous)
    _one_at_first_session(stats, ("rsa_first", "rsa_previous"))


def _masked_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation over the last axis between ``a`` and ``b`` (broadcast), over the entries finite in both;
    NaN where either side has no variance there (relative to its mean square: equal entries rounded apart are no
    pattern)."""
    a, b = np.broadcast_arrays(a, b)
    both = np.isfinite(a) & np.isfinite(b)
    count = both.sum(axis=-1)
    a = np.where(both, a, 0.0)
    b = np.where(both, b, 0.0)
    raw_aa = np.einsum("...i,...i->...", a, a)
    raw_bb = np.einsum("...i,...i->...", b, b)
    a = np.where(both, a - a.sum(axis=-1, keepdims=True) / count[..., None], 0.0)
    b = np.where(both, b - b.sum(axis=-1, keepdims=True) / count[..., None], 0.0)
    saa = np.einsum("...i,...i->...", a, a)
    sbb = np.einsum("...i,...i->...", b, b)
    sab = np.einsum("...i,...i->...", a, b)
    varied = (count >= 2) & (saa > _REL_TOL * raw_aa) & (sbb > _REL_TOL * raw_bb)
    return np.where(varied, sab / np.sqrt(saa * sbb), np.nan)


def _tuning_stability(stats: np.ndarray, z: np.ndarray, valid: np.ndarray, defined: bool) -> None:
    """Chronic: mean over units valid in both sessions of the correlation of the tuning curves with session 0."""
    p = z.shape[-1]
    corr = np.einsum("nskp,nkp->nsk", z, z[:, 0]) / p  # excluded units have zero rows: corr 0, masked below
    both = valid & valid[:, :1]
    count = both.sum(axis=-1)
    stability = np.where(both, corr, 0.0).sum(axis=-1) / count
    stats[..., _INDEX["tuning_stability"]] = np.where(defined & (count >= 1), stability, np.nan)
    _one_at_first_session(stats, ("tuning_stability",))


def _spread_change(stats: np.ndarray, sd: np.ndarray, valid: np.ndarray, finite: np.ndarray, chronic: bool) -> None:
    """Log change of the units' SD over probes since session 0 (per unit for chronic, of the mean for acute)."""
    if chronic:
        both = valid & valid[:, :1]
        count = both.sum(axis=-1)
        ratio = np.log(np.where(both, sd, 1.0)) - np.log(np.where(both, sd[:, :1], 1.0))
        change = np.where(count >= 1, ratio.sum(axis=-1) / count, np.nan)
    else:
        mean_sd = np.where(finite, sd, 0.0).sum(axis=-1) / finite.sum(axis=-1)  # constant units count with SD 0
        change = np.log(mean_sd) - np.log(mean_sd[:, :1])
        change = np.where((mean_sd > 0) & (mean_sd[:, :1] > 0), change, np.nan)
    stats[..., _INDEX["spread_change"]] = change
    first = stats[:, 0, _INDEX["spread_change"]]
    first[np.isfinite(first)] = 0.0


def _one_at_first_session(stats: np.ndarray, names: tuple[str, ...]) -> None:
    """Session 0 compared with itself: exactly 1 wherever the comparison is defined (finite), NaN otherwise."""
    for name in names:
        first = stats[:, 0, _INDEX[name]]
        first[np.isfinite(first)] = 1.0

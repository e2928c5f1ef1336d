"""Aggregate statistics of an observable over recorded units (Nayebi et al. 2020, section 3).

A *feature* is a pair ``(function, statistic)``: the function (``raw``, ``abs``, ``sq``) is applied elementwise,
then the statistic reduces over the unit axis:

========== ====================================================================
statistic  definition (over the finite units of one row)
========== ====================================================================
mean       arithmetic mean
median     median (linear interpolation between the two middle values)
q3         third quartile, ``np.quantile(q=0.75)`` with the default ``linear`` method
var        population variance (``ddof=0``)
norm       L2 norm over units
skew       Pearson's second skewness coefficient ``3 * (mean - median) / std``
kurtosis   ``E[(x - mean)^4] / var^2`` (not excess: a Gaussian gives 3)
========== ====================================================================

NaN marks a unit that was not recorded (ragged groups): every statistic ignores NaN units. A row with no finite
unit gives NaN features. ``skew`` and ``kurtosis`` are undefined (NaN) for a row whose finite units are all
equal, one unit included (``var`` is then exactly 0). ``inf`` in the input counts as a recorded unit and
propagates into the features. Non-finite outputs are never silent: every call returns a :class:`NanReport`, and
:class:`NanPolicy` says whether to raise, keep them, or replace them by 0.

Precision: float16 and float32 inputs are computed in float32 (float16 is upcast; the moments use centred
values, so the results agree with a float64 computation to about 1e-5 relative); float64 inputs are computed in
float64. Results are float32. In float32 the ``sq`` kurtosis overflows for ``|x|`` above about 6e4.

Speed: rows are processed in blocks that fit in the CPU cache; per block there are two in-place sorts (of
``x`` and ``|x|``; the sorted squares are the squared sorted absolute values), from which all medians and third
quartiles are read by index, and a few passes for the centred moments. Reducing over the last axis of a
C-contiguous array avoids one copy of the input.
"""

from __future__ import annotations

import enum
import functools
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from advisor.errors import AdvisorError

__all__ = [
    "FEATURES",
    "FUNCTIONS",
    "STATISTICS",
    "NanPolicy",
    "NanReport",
    "feature_names",
    "unit_statistics",
]

logger = logging.getLogger(__name__)

FUNCTIONS: Final[tuple[str, ...]] = ("raw", "abs", "sq")
STATISTICS: Final[tuple[str, ...]] = ("mean", "median", "q3", "var", "norm", "skew", "kurtosis")
FEATURES: Final[tuple[tuple[str, str], ...]] = tuple((f, s) for f in FUNCTIONS for s in STATISTICS)

_N_STATS = len(STATISTICS)
# Values per block of rows: a few float32 buffers of this size stay in L2 cache.
_BLOCK_VALUES = 1 << 16


def feature_names(prefix: str = "", features: Iterable[tuple[str, str]] = FEATURES) -> list[str]:
    """Names ``f"{prefix}{function}_{statistic}"`` of ``features``, in order (default: all 21 of FEATURES)."""
    return [f"{prefix}{f}_{s}" for f, s in features]


class NanPolicy(enum.Enum):
    """What :func:`unit_statistics` does with non-finite output values (always counted in the :class:`NanReport`).

    RAISE: raise :class:`~advisor.errors.AdvisorError` (a ``ValueError``) naming the counts and features.
    PROPAGATE: keep NaN/inf in the output so that callers can drop those samples or features.
    ZERO: replace non-finite outputs by 0.
    """

    RAISE = "raise"
    PROPAGATE = "propagate"
    ZERO = "zero"


@dataclass(frozen=True)
class NanReport:
    """Account of the non-finite values of one :func:`unit_statistics` call.

    Attributes:
        n_values: number of output values (rows x features).
        n_nonfinite: number of non-finite output values before the policy was applied.
        by_feature: feature name -> number of non-finite values, only features with at least one.
        policy: the policy that was applied.
    """

    n_values: int
    n_nonfinite: int
    by_feature: dict[str, int] = field(default_factory=dict)
    policy: NanPolicy = NanPolicy.PROPAGATE

    @property
    def fraction_nonfinite(self) -> float:
        """``n_nonfinite / n_values`` (0 when there are no values)."""
        return self.n_nonfinite / self.n_values if self.n_values else 0.0


def _resolve_features(features: Iterable[tuple[str, str] | str]) -> tuple[tuple[str, str], ...]:
    """Validate ``features``: pairs ``(function, statistic)`` or names ``"function_statistic"``."""
    allowed = set(FEATURES)
    out: list[tuple[str, str]] = []
    for item in features:
        pair: tuple[str, ...] = tuple(item.split("_", 1)) if isinstance(item, str) else tuple(item)
        if pair not in allowed:
            raise AdvisorError(
                f"unknown feature {item!r}; allowed are (function, statistic) pairs or names "
                f"{', '.join(feature_names())}."
            )
        out.append((pair[0], pair[1]))
    if not out:
        raise AdvisorError("`features` must name at least one feature; got none.")
    return tuple(out)


def _resolve_policy(nan_policy: NanPolicy | str) -> NanPolicy:
    if isinstance(nan_policy, NanPolicy):
        return nan_policy
    try:
        return NanPolicy(nan_policy)
    except ValueError:
        allowed = ", ".join(p.value for p in NanPolicy)
        raise AdvisorError(f"`nan_policy` must be one of {allowed}; got {nan_policy!r}.") from None


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray | float) -> np.ndarray:
    """Linear interpolation as numpy's ``quantile`` does it (exact at both ends)."""
    diff = b - a
    return np.where(np.asarray(t) >= 0.5, b - diff * (1 - t), a + diff * t)


@functools.cache
def _float16_table(dtype: np.dtype) -> np.ndarray:
    """Every float16 bit pattern's value in ``dtype`` (index: the pattern as uint16)."""
    return np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(dtype)


class _Block:
    """Reusable per-block buffers and the computation of the 7 statistics of each function family."""

    def __init__(self, n_rows: int, n_units: int, dtype: np.dtype) -> None:
        self.n_units = n_units
        self.dtype = dtype
        self.raw = np.empty((n_rows, n_units), dtype)
        self.abs = np.empty((n_rows, n_units), dtype)
        self.tmp = np.empty((n_rows, n_units), dtype)
        self.nanmask = np.empty((n_rows, n_units), bool)

    def run(self, x: np.ndarray, families: tuple[bool, bool, bool], out: np.ndarray) -> None:
        """Write the statistics of rows ``x`` (r, n_units) into ``out`` (r, 3, 7); skipped families untouched."""
        r, n = x.shape
        want_raw, want_abs, want_sq = families
        raw, ab, tmp, nanmask = self.raw[:r], self.abs[:r], self.tmp[:r], self.nanmask[:r]
        if x.dtype == np.float16:
            # A lookup table over all 65536 float16 bit patterns converts faster than numpy's float16 cast.
            np.take(_float16_table(self.dtype), x.view(np.uint16), out=raw)
        else:
            np.copyto(raw, x, casting="same_kind")
        if want_abs or want_sq:
            np.abs(raw, out=ab)
            ab.sort(axis=-1)
        if want_raw:
            raw.sort(axis=-1)
        first = raw if want_raw else ab  # sorted; NaN units trail
        has_nan = bool(np.isnan(first[:, -1]).any())
        if has_nan:
            np.isnan(first, out=nanmask)
            count_int = n - nanmask.sum(axis=-1)
            # Per-row quantile positions over the finite units (rows with none read index 0 and become NaN).
            last = np.maximum(count_int - 1, 0)
            pos_med = 0.5 * last
            pos_q3 = 0.75 * last
            lo_med = np.floor(pos_med).astype(np.intp)
            lo_q3 = np.floor(pos_q3).astype(np.intp)
            idx = np.stack([lo_med, np.minimum(lo_med + 1, last), lo_q3, np.minimum(lo_q3 + 1, last), last], -1)
            t_med = (pos_med - lo_med).astype(self.dtype)
            t_q3 = (pos_q3 - lo_q3).astype(self.dtype)
            count = count_int.astype(self.dtype)
            empty = count_int == 0
        else:
            last = n - 1
            lo_med, lo_q3 = last // 2, (3 * last) // 4
            idx = np.array([lo_med, min(lo_med + 1, last), lo_q3, min(lo_q3 + 1, last), last])
            t_med = self.dtype.type(0.5 * last - lo_med)
            t_q3 = self.dtype.type(0.75 * last - lo_q3)
            count = self.dtype.type(n)
            empty = None

        def family(y: np.ndarray, k: int) -> None:
            if has_nan:
                np.copyto(y, 0, where=nanmask)
                picked = np.take_along_axis(y, idx, axis=-1)
            else:
                picked = y[:, idx]
            median = _lerp(picked[:, 0], picked[:, 1], t_med)
            q3 = _lerp(picked[:, 2], picked[:, 3], t_q3)
            constant = y[:, 0] == picked[:, 4]
            mean = y.sum(axis=-1) / count
            np.subtract(y, mean[:, None], out=tmp)
            if has_nan:
                np.copyto(tmp, 0, where=nanmask)
            np.multiply(tmp, tmp, out=tmp)
            m2 = tmp.sum(axis=-1) / count
            np.multiply(tmp, tmp, out=tmp)
            m4 = tmp.sum(axis=-1) / count
            # All finite units equal: mean is that value and var exactly 0 (float rounding would give ~1e-16).
            mean = np.where(constant, y[:, 0], mean)
            m2 = np.where(constant, 0, m2)
            norm = np.sqrt(count * (m2 + mean * mean))  # sum y^2 = sum (y - mean)^2 + n mean^2
            std = np.sqrt(m2)
            skew = 3 * (mean - median) / std
            kurt = m4 / (m2 * m2)
            skew[constant] = np.nan
            kurt[constant] = np.nan
            o = out[:, k]
            o[:, 0], o[:, 1], o[:, 2], o[:, 3], o[:, 4], o[:, 5], o[:, 6] = mean, median, q3, m2, norm, skew, kurt
            if empty is not None:
                o[empty] = np.nan

        if want_raw:
            family(raw, 0)
        if want_abs:
            family(ab, 1)
        if want_sq:
            # The sorted squares are the squared sorted absolute values (in place: the abs family is done).
            np.multiply(ab, ab, out=ab)
            family(ab, 2)


def unit_statistics(
    x: np.ndarray,
    axis: int = -1,
    *,
    features: Sequence[tuple[str, str] | str] = FEATURES,
    nan_policy: NanPolicy | str = NanPolicy.PROPAGATE,
) -> tuple[np.ndarray, NanReport]:
    """Aggregate statistics of ``x`` over its unit axis.

    Args:
        x: array of any floating dtype, shape ``(..., n_units, ...)``; NaN marks units that were not recorded.
        axis: the unit axis (reducing over the last axis is fastest: no copy of ``x``).
        features: ``(function, statistic)`` pairs from :data:`FEATURES` or their names (``"raw_mean"``),
            in the order wanted in the output.
        nan_policy: what to do with non-finite outputs (:class:`NanPolicy` or its value string).

    Returns:
        ``(values, report)``: ``values`` is float32 of shape ``x.shape`` without ``axis`` plus
        ``(len(features),)``; ``report`` counts the non-finite values per feature before the policy.

    Raises:
        AdvisorError (a ``ValueError``): ``x`` is not floating point, ``axis`` is out of range, a feature or the
            policy is unknown, or ``nan_policy`` is ``raise`` and some output is non-finite.
    """
    feats = _resolve_features(features)
    policy = _resolve_policy(nan_policy)
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise AdvisorError(f"`x` must be a floating-point array; got dtype {x.dtype}.")
    if not -x.ndim <= axis < x.ndim:
        raise AdvisorError(f"`axis` must be in [{-x.ndim}, {x.ndim - 1}] for an array of shape {x.shape}; got {axis}.")
    compute = np.dtype(np.float64 if x.dtype == np.float64 else np.float32)
    x = np.moveaxis(x, axis, -1)
    lead = x.shape[:-1]
    n_units = x.shape[-1]
    n_rows = int(np.prod(lead))
    rows = x.reshape(n_rows, n_units)  # a view when `axis` is last and x is C-contiguous

    families = tuple(any(f == fam for f, _ in feats) for fam in FUNCTIONS)
    full = np.full((n_rows, len(FUNCTIONS), _N_STATS), np.nan, np.float32)
    if n_units > 0 and n_rows > 0:
        block_rows = max(1, min(n_rows, _BLOCK_VALUES // n_units))
        block = _Block(block_rows, n_units, compute)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            for start in range(0, n_rows, block_rows):
                stop = min(start + block_rows, n_rows)
                block.run(rows[start:stop], families, full[start:stop])  # type: ignore[arg-type]

    cols = [FUNCTIONS.index(f) * _N_STATS + STATISTICS.index(s) for f, s in feats]
    values = full.reshape(n_rows, len(FEATURES))[:, cols]
    bad = ~np.isfinite(values)
    per_feature = bad.sum(axis=0)
    names = feature_names(features=feats)
    by_feature = {name: int(c) for name, c in zip(names, per_feature, strict=True) if c}
    report = NanReport(
        n_values=int(values.size), n_nonfinite=int(per_feature.sum()), by_feature=by_feature, policy=policy
    )
    if report.n_nonfinite:
        detail = ", ".join(f"{k} ({v})" for k, v in by_feature.items())
        if policy is NanPolicy.RAISE:
            raise AdvisorError(
                f"{report.n_nonfinite} of {report.n_values} statistics are non-finite: {detail}; "
                "nan_policy='raise' (use 'propagate' to keep them or 'zero' to replace them by 0)."
            )
        logger.debug("unit_statistics: %d non-finite values (%s), policy %s", report.n_nonfinite, detail, policy.value)
        if policy is NanPolicy.ZERO:
            values[bad] = 0.0
    return values.reshape(*lead, len(feats)), report

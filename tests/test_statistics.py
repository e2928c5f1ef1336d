"""Unit statistics: against a plain numpy/scipy reference, invariance laws, the NaN policy and the API contract."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from advisor.errors import AdvisorError
from advisor.science.statistics import (
    FEATURES,
    FUNCTIONS,
    STATISTICS,
    NanPolicy,
    NanReport,
    feature_names,
    unit_statistics,
)

N_FEATURES = len(FEATURES)


def _reference_row(values: np.ndarray) -> list[float]:
    """The 21 features of one row, in FEATURES order, from its finite values (straightforward float64)."""
    v = values[~np.isnan(values)].astype(np.float64)
    if v.size == 0:
        return [np.nan] * N_FEATURES
    out: list[float] = []
    for y in (v, np.abs(v), v * v):
        mean, median = np.mean(y), np.median(y)
        q3, var, norm = np.quantile(y, 0.75), np.var(y), np.linalg.norm(y)
        if np.ptp(y) == 0:  # all units equal: skew and kurtosis undefined
            skew = kurt = np.nan
        else:
            skew = 3 * (mean - median) / np.std(y)
            kurt = scipy.stats.kurtosis(y, fisher=False, bias=True)
        out += [float(v) for v in (mean, median, q3, var, norm, skew, kurt)]
    return out


def reference(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Reference features, shape ``x.shape`` without ``axis`` + (21,), float64."""
    moved = np.moveaxis(np.asarray(x), axis, -1)
    rows = moved.reshape(-1, moved.shape[-1])
    ref = np.array([_reference_row(r) for r in rows], dtype=np.float64).reshape(-1, N_FEATURES)
    return ref.reshape(*moved.shape[:-1], N_FEATURES)


def _assert_close(actual: np.ndarray, expected: np.ndarray, dtype: type) -> None:
    """float64 inputs are computed in float64 (only the float32 output rounds); the others in float32."""
    tol = 1e-6 if np.dtype(dtype) == np.float64 else 1e-4
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol, equal_nan=True)


def _sample(rng: np.random.Generator, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """Skewed, offset data: a Gaussian plus an exponential tail, cast to ``dtype``."""
    x = rng.normal(0.5, 2.0, size=shape) + rng.exponential(1.5, size=shape)
    return x.astype(dtype)


# ----------------------------------------------------------------------------------------------- reference


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize(
    ("shape", "axis"),
    [((5, 9), -1), ((4, 6, 3), 1), ((7, 2, 5), 0), ((3, 1), -1), ((2, 2, 500), -1), ((8,), 0), ((3, 4, 10), -2)],
)
def test_matches_reference(shape: tuple[int, ...], axis: int, dtype: type) -> None:
    rng = np.random.default_rng(sum(shape) + axis)
    x = _sample(rng, shape, dtype)
    values, report = unit_statistics(x, axis=axis)
    expected = reference(x, axis)
    assert values.shape == expected.shape
    assert values.dtype == np.float32
    _assert_close(values, expected, dtype)
    assert report.n_nonfinite == int(np.sum(~np.isfinite(expected)))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_matches_reference_with_unrecorded_units(dtype: type) -> None:
    """Ragged rows (NaN = unit not recorded): statistics of the finite units of each row only."""
    rng = np.random.default_rng(7)
    x = _sample(rng, (6, 4, 40), dtype)
    x[rng.random(x.shape) < 0.3] = np.nan  # scattered missing units
    x[0, 0, 5:] = np.nan  # 5 units left
    x[1, 1, 1:] = np.nan  # 1 unit left: var 0, skew and kurtosis NaN
    x[2, 2, :] = np.nan  # none left: all NaN
    x[3, :, 20:] = np.nan  # half of the units in a whole group
    values, report = unit_statistics(x)
    expected = reference(x)
    _assert_close(values, expected, dtype)
    assert np.all(np.isnan(values[2, 2]))
    assert values[1, 1, STATISTICS.index("var")] == 0.0
    assert report.n_nonfinite == int(np.sum(np.isnan(expected)))


def test_many_rows_cross_blocks_with_nan() -> None:
    """More rows than one processing block, NaN rows in some blocks only."""
    rng = np.random.default_rng(3)
    x = _sample(rng, (400, 300), np.float32)
    x[::37, 250:] = np.nan
    values, _ = unit_statistics(x)
    np.testing.assert_allclose(values, reference(x), rtol=1e-4, atol=1e-4)


def test_float16_is_upcast() -> None:
    """Sums of float16 values would overflow float16 (max 65504): the computation must be upcast."""
    x = np.full((2, 500), 1000.0, dtype=np.float16)
    x[1, ::2] = 500.0
    values, _ = unit_statistics(x)
    names = feature_names()
    np.testing.assert_allclose(values[:, names.index("raw_norm")], reference(x)[:, names.index("raw_norm")], rtol=1e-5)
    np.testing.assert_allclose(values[1, names.index("sq_mean")], (1000.0**2 + 500.0**2) / 2, rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("axis", [1, -1])
def test_non_contiguous_input(dtype: type, axis: int) -> None:
    rng = np.random.default_rng(11)
    x = _sample(rng, (6, 20, 8), dtype)[:, ::2, ::-2]
    values, _ = unit_statistics(x, axis=axis)
    _assert_close(values, reference(x, axis=axis), dtype)


def test_constant_row_is_exact() -> None:
    """All-equal units: mean is that value and var exactly 0 (no float rounding residue)."""
    x = np.full((1, 500), 0.1, dtype=np.float32)
    values, _ = unit_statistics(x, features=[("raw", "mean"), ("raw", "var"), ("sq", "var")])
    assert values[0, 0] == np.float32(0.1)
    assert values[0, 1] == 0.0
    assert values[0, 2] == 0.0


# ----------------------------------------------------------------------------------------------- laws

_grid = st.integers(-400, 400).map(lambda k: k / 4)  # a grid keeps rows from being nearly (not exactly) constant
_rows = hnp.arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(1, 30)), elements=_grid)
_ragged_rows = hnp.arrays(
    np.float64, st.tuples(st.integers(1, 4), st.integers(1, 30)), elements=st.one_of(_grid, st.just(np.nan))
)
_law_settings = settings(max_examples=60, deadline=None, derandomize=True)


def _columns(function: str, statistics: tuple[str, ...]) -> list[int]:
    return [FEATURES.index((function, s)) for s in statistics]


@_law_settings
@given(x=_rows, seed=st.integers(0, 2**32 - 1))
def test_invariant_to_unit_order(x: np.ndarray, seed: int) -> None:
    perm = np.random.default_rng(seed).permutation(x.shape[-1])
    a, _ = unit_statistics(x)
    b, _ = unit_statistics(x[:, perm])
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6, equal_nan=True)


@_law_settings
@given(x=_ragged_rows, seed=st.integers(0, 2**32 - 1))
def test_ragged_rows_match_reference_and_ignore_unit_order(x: np.ndarray, seed: int) -> None:
    perm = np.random.default_rng(seed).permutation(x.shape[-1])
    a, report = unit_statistics(x)
    b, _ = unit_statistics(x[:, perm])
    expected = reference(x)
    _assert_close(a, expected, np.float64)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6, equal_nan=True)
    assert report.n_nonfinite == int(np.isnan(expected).sum())


@_law_settings
@given(x=_rows, c=st.floats(0.1, 10.0))
def test_scaling(x: np.ndarray, c: float) -> None:
    a, _ = unit_statistics(x)
    b, _ = unit_statistics(c * x)
    location = ("mean", "median", "q3", "norm")
    shape = ("skew", "kurtosis")
    for function in ("raw", "abs"):
        np.testing.assert_allclose(
            b[:, _columns(function, location)],
            c * a[:, _columns(function, location)],
            rtol=1e-5,
            atol=1e-6,
            equal_nan=True,
        )
        np.testing.assert_allclose(
            b[:, _columns(function, ("var",))],
            c**2 * a[:, _columns(function, ("var",))],
            rtol=1e-5,
            atol=1e-6,
            equal_nan=True,
        )
        np.testing.assert_allclose(
            b[:, _columns(function, shape)], a[:, _columns(function, shape)], rtol=1e-5, atol=1e-6, equal_nan=True
        )
    np.testing.assert_allclose(
        b[:, _columns("sq", location)], c**2 * a[:, _columns("sq", location)], rtol=1e-5, atol=1e-6, equal_nan=True
    )
    np.testing.assert_allclose(
        b[:, _columns("sq", ("var",))], c**4 * a[:, _columns("sq", ("var",))], rtol=1e-5, atol=1e-6, equal_nan=True
    )
    np.testing.assert_allclose(
        b[:, _columns("sq", shape)], a[:, _columns("sq", shape)], rtol=1e-5, atol=1e-6, equal_nan=True
    )


@_law_settings
@given(x=_rows, shift=_grid)
def test_shift_leaves_raw_spread_unchanged(x: np.ndarray, shift: float) -> None:
    a, _ = unit_statistics(x, features=[("raw", "var"), ("raw", "kurtosis"), ("raw", "skew"), ("raw", "mean")])
    b, _ = unit_statistics(x + shift, features=[("raw", "var"), ("raw", "kurtosis"), ("raw", "skew"), ("raw", "mean")])
    np.testing.assert_allclose(b[:, :3], a[:, :3], rtol=1e-5, atol=1e-5, equal_nan=True)
    np.testing.assert_allclose(b[:, 3], a[:, 3] + shift, rtol=1e-6, atol=1e-5)


# ----------------------------------------------------------------------------------------------- NaN policy


def _with_constant_row() -> np.ndarray:
    x = np.random.default_rng(0).normal(size=(3, 12)).astype(np.float32)
    x[1] = 2.5
    return x


def test_policy_raise_names_the_features() -> None:
    with pytest.raises(ValueError, match="raw_skew") as info:
        unit_statistics(_with_constant_row(), nan_policy=NanPolicy.RAISE)
    assert isinstance(info.value, AdvisorError)
    assert "6 of 63" in str(info.value)  # skew and kurtosis of raw, abs and sq of the constant row
    with pytest.raises(ValueError, match="raw_kurtosis"):
        unit_statistics(_with_constant_row(), nan_policy="raise")


def test_policy_raise_passes_finite_output() -> None:
    x = np.random.default_rng(1).normal(size=(3, 12))
    values, report = unit_statistics(x, nan_policy="raise")
    assert np.all(np.isfinite(values))
    assert report == NanReport(n_values=63, n_nonfinite=0, by_feature={}, policy=NanPolicy.RAISE)


def test_policy_propagate_keeps_nan_and_counts() -> None:
    values, report = unit_statistics(_with_constant_row(), nan_policy="propagate")
    skew_kurt = [f"{f}_{s}" for f in FUNCTIONS for s in ("skew", "kurtosis")]
    assert report.by_feature == dict.fromkeys(skew_kurt, 1)
    assert report.n_nonfinite == 6 and report.n_values == 63
    assert report.policy is NanPolicy.PROPAGATE
    assert report.fraction_nonfinite == pytest.approx(6 / 63)
    names = feature_names()
    assert all(np.isnan(values[1, names.index(n)]) for n in skew_kurt)
    assert np.isfinite(values[[0, 2]]).all()
    assert values[1, names.index("raw_var")] == 0.0
    assert values[1, names.index("raw_mean")] == np.float32(2.5)


def test_policy_zero_replaces_and_still_counts() -> None:
    propagated, _ = unit_statistics(_with_constant_row())
    values, report = unit_statistics(_with_constant_row(), nan_policy=NanPolicy.ZERO)
    assert np.isfinite(values).all()
    assert report.n_nonfinite == 6 and report.policy is NanPolicy.ZERO
    assert report.by_feature["raw_skew"] == 1
    finite = np.isfinite(propagated)
    np.testing.assert_array_equal(values[finite], propagated[finite])
    np.testing.assert_array_equal(values[~finite], 0.0)


def test_all_nan_row_is_nan_and_counted() -> None:
    x = np.random.default_rng(2).normal(size=(2, 3, 10))
    x[1, 2] = np.nan
    values, report = unit_statistics(x)
    assert np.isnan(values[1, 2]).all()
    assert np.isfinite(np.delete(values.reshape(6, -1), 5, axis=0)).all()
    assert report.n_nonfinite == N_FEATURES
    assert report.by_feature == dict.fromkeys(feature_names(), 1)


def test_single_unit_has_undefined_shape_statistics() -> None:
    values, report = unit_statistics(np.array([[3.0], [-2.0]]))
    names = feature_names()
    assert values[1, names.index("raw_mean")] == -2.0 and values[1, names.index("abs_median")] == 2.0
    assert values[0, names.index("sq_norm")] == 9.0
    assert set(report.by_feature) == {f"{f}_{s}" for f in FUNCTIONS for s in ("skew", "kurtosis")}


def test_inf_input_is_reported() -> None:
    x = np.ones((2, 5))
    x[0, 1] = np.inf
    x[1] = np.arange(5)
    values, report = unit_statistics(x)
    assert np.isfinite(values[1]).all()
    assert not np.isfinite(values[0, feature_names().index("raw_mean")])
    assert report.n_nonfinite > 0


# ----------------------------------------------------------------------------------------------- API


def test_feature_order_and_names() -> None:
    assert len(FEATURES) == 21
    expected = [(f, s) for f in ("raw", "abs", "sq") for s in STATISTICS]
    assert list(FEATURES) == expected
    assert STATISTICS == ("mean", "median", "q3", "var", "norm", "skew", "kurtosis")
    assert feature_names() == [f"{f}_{s}" for f, s in FEATURES]
    assert feature_names("act_")[0] == "act_raw_mean"
    assert feature_names(features=(("sq", "q3"),)) == ["sq_q3"]


def test_output_shape_and_dtype() -> None:
    x = np.random.default_rng(5).normal(size=(2, 3, 7, 4)).astype(np.float16)
    values, report = unit_statistics(x, axis=2)
    assert values.shape == (2, 3, 4, 21) and values.dtype == np.float32
    assert report.n_values == 2 * 3 * 4 * 21
    values, _ = unit_statistics(x, axis=-1, features=[("sq", "mean"), "raw_median"])
    assert values.shape == (2, 3, 7, 2)


def test_feature_subset_matches_full() -> None:
    x = np.random.default_rng(6).normal(size=(5, 11))
    full, _ = unit_statistics(x)
    subsets: list[tuple[list[tuple[str, str] | str], list[str]]] = [
        ([("sq", "kurtosis"), ("raw", "mean")], ["sq_kurtosis", "raw_mean"]),
        (["abs_q3"], ["abs_q3"]),
        ([("raw", "norm"), "raw_skew"], ["raw_norm", "raw_skew"]),
        ([("sq", "median"), ("abs", "var")], ["sq_median", "abs_var"]),
    ]
    for subset, names in subsets:
        values, _ = unit_statistics(x, features=subset)
        np.testing.assert_array_equal(values, full[:, [feature_names().index(n) for n in names]])


def test_empty_inputs() -> None:
    values, report = unit_statistics(np.empty((3, 0)))
    assert values.shape == (3, 21) and np.isnan(values).all() and report.n_nonfinite == 63
    values, report = unit_statistics(np.empty((0, 5), dtype=np.float32))
    assert values.shape == (0, 21) and report.n_values == 0 and report.fraction_nonfinite == 0.0


def test_unknown_feature_lists_allowed() -> None:
    with pytest.raises(ValueError, match=r"unknown feature.*raw_mean.*sq_kurtosis"):
        unit_statistics(np.ones((2, 3)), features=[("raw", "mode")])
    with pytest.raises(ValueError, match="unknown feature 'cube_mean'"):
        unit_statistics(np.ones((2, 3)), features=["cube_mean"])
    with pytest.raises(ValueError, match="at least one"):
        unit_statistics(np.ones((2, 3)), features=[])


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"nan_policy.*raise, propagate, zero.*'drop'"):
        unit_statistics(np.ones((2, 3)), nan_policy="drop")
    with pytest.raises(ValueError, match=r"floating-point.*int64"):
        unit_statistics(np.ones((2, 3), dtype=np.int64))
    with pytest.raises(ValueError, match=r"`axis` must be in \[-2, 1\].*got 2"):
        unit_statistics(np.ones((2, 3)), axis=2)


def test_report_is_frozen() -> None:
    _, report = unit_statistics(np.ones((1, 3)) * np.arange(3))
    with pytest.raises(AttributeError):
        report.n_nonfinite = 1  # type: ignore[misc]

"""Population statistics: against a plain numpy reference, gain/offset invariance, known values and edge cases."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import advisor.science.population as population
from advisor.errors import AdvisorError
from advisor.science.population import POPULATION_STATISTICS, population_feature_names, population_statistics

IDX = {name: i for i, name in enumerate(POPULATION_STATISTICS)}
CORRELATION_STATS = ("dimensionality", "corr_mean", "corr_sd", "rsa_first", "rsa_previous")


def _statistics(values: np.ndarray, chronic: bool) -> np.ndarray:
    """population_statistics with every warning turned into an error (the module promises none)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return population_statistics(values, chronic)


def _tuned(r: np.ndarray) -> bool:
    return bool(np.isfinite(r).all() and np.ptp(r) > 0)


def _treves_rolls(v: np.ndarray) -> float:
    return float((1 - v.mean() ** 2 / (v**2).mean()) / (1 - 1 / v.size))


def _session_reference(rows: np.ndarray) -> tuple[list[float], np.ndarray | None]:
    """dimensionality .. population_sparseness of one session's (k, P) rows, and its RDM (None if undefined)."""
    p = rows.shape[1]
    v = np.array([r for r in rows if _tuned(r)], dtype=np.float64).reshape(-1, p)
    kv = v.shape[0]
    out = [np.nan] * 5
    rdm = None
    if kv >= 2 and p >= 3:
        c = np.corrcoef(v)
        lam = np.linalg.eigvalsh(c)
        out[0] = lam.sum() ** 2 / (lam**2).sum() / min(kv, p - 1)
        tri = c[np.triu_indices(kv, 1)]
        out[1], out[2] = tri.mean(), tri.std()
        z = (v - v.mean(1, keepdims=True)) / v.std(1, keepdims=True)
        rdm = 1 - np.corrcoef(z.T)
    if kv >= 1:
        out[3] = np.mean([_treves_rolls(r - r.min()) for r in v])
    if kv >= 2:
        zp = (v - v.min(1, keepdims=True)) / v.std(1, keepdims=True)
        out[4] = np.mean([_treves_rolls(zp[:, j]) for j in range(p) if (zp[:, j] ** 2).sum() > 0])
    return out, rdm


def _rsa(a: np.ndarray | None, b: np.ndarray | None) -> float:
    if a is None or b is None:
        return np.nan
    upper = np.triu_indices(a.shape[0], 1)
    return float(np.corrcoef(a[upper], b[upper])[0, 1])


def _network_reference(x: np.ndarray, chronic: bool) -> np.ndarray:
    """(S, 9) statistics of one network's (S, k, P) recording, with loops and textbook formulas."""
    s_count, k, p = x.shape
    out = np.full((s_count, len(POPULATION_STATISTICS)), np.nan)
    rdms = []
    for s in range(s_count):
        out[s, :5], rdm = _session_reference(x[s])
        rdms.append(rdm)
        out[s, IDX["rsa_first"]] = 1.0 if s == 0 and rdm is not None else _rsa(rdm, rdms[0])
        out[s, IDX["rsa_previous"]] = 1.0 if s == 0 and rdm is not None else _rsa(rdm, rdms[s - 1])
        if chronic:
            pairs = [(x[s, j], x[0, j]) for j in range(k) if _tuned(x[s, j]) and _tuned(x[0, j])]
            if pairs and p >= 3:
                out[s, IDX["tuning_stability"]] = np.mean([np.corrcoef(a, b)[0, 1] for a, b in pairs])
            if pairs:
                out[s, IDX["spread_change"]] = np.mean([np.log(a.std() / b.std()) for a, b in pairs])
        else:
            def mean_sd(rows: np.ndarray) -> float:
                return float(np.mean([r.std() for r in rows if np.isfinite(r).all()]))

            out[s, IDX["spread_change"]] = np.log(mean_sd(x[s]) / mean_sd(x[0]))
    return out


def _reference(values: np.ndarray, chronic: bool) -> np.ndarray:
    return np.stack([_network_reference(v.astype(np.float64), chronic) for v in values])


def _recording(seed: int = 0, n: int = 3, s: int = 4, k: int = 7, p: int = 6, dtype: type = np.float64) -> np.ndarray:
    """Random tuning curves that drift over sessions, with NaN (absent) units and constant (silent) units."""
    rng = np.random.default_rng(seed)
    base = rng.exponential(1.0, size=(n, 1, k, p))
    x = base + 0.6 * rng.normal(size=(n, s, k, p)).cumsum(axis=1)
    x[1, :, 5:] = np.nan  # network 1 has 5 units
    x[0, :, 2] = np.nan  # network 0 lacks unit 2
    x[0, 1, 4] = 3.0  # a unit silent in session 1 only
    x[2, 0, 1] = 0.0  # a unit silent in session 0 (chronic: out of every comparison with session 0)
    return x.astype(dtype)


@pytest.mark.parametrize("chronic", [True, False])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matches_reference(chronic: bool, dtype: type) -> None:
    values = _recording(dtype=dtype)
    actual = _statistics(values, chronic)
    expected = _reference(values, chronic)
    if not chronic:
        assert np.isnan(actual[..., IDX["tuning_stability"]]).all()
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5, equal_nan=True)


def test_blocks_of_networks_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    values = _recording(n=5)
    whole = _statistics(values, True)
    monkeypatch.setattr(population, "_BLOCK_VALUES", 1)  # one network per block
    np.testing.assert_array_equal(_statistics(values, True), whole)


@pytest.mark.parametrize("chronic", [True, False])
def test_invariant_to_unit_gains_and_offsets(chronic: bool) -> None:
    values = _recording(seed=1, n=4, s=5, k=9, p=8)
    rng = np.random.default_rng(2)
    n, s, k, _ = values.shape
    gain_shape = (n, 1, k, 1) if chronic else (n, s, k, 1)  # acute: new units, new gains, each session
    gains = rng.lognormal(0.0, 1.0, size=gain_shape)
    offsets = rng.normal(0.0, 5.0, size=gain_shape)
    before = _statistics(values, chronic)
    after = _statistics(values * gains + offsets, chronic)
    exact = slice(None) if chronic else [IDX[n] for n in POPULATION_STATISTICS if n != "spread_change"]
    np.testing.assert_allclose(after[..., exact], before[..., exact], rtol=1e-5, atol=1e-5, equal_nan=True)
    # Acute: an animal's gain (common to all its units and sessions) and the offsets still cancel in the spread.
    animal = rng.lognormal(0.0, 1.0, size=(n, 1, 1, 1))
    after = _statistics(values * animal + offsets, chronic)
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5, equal_nan=True)


@pytest.mark.parametrize("chronic", [True, False])
def test_identical_sessions_are_stable(chronic: bool) -> None:
    first = _recording(seed=3)[:, :1]
    out = _statistics(np.repeat(first, 5, axis=1), chronic)
    for name in ("rsa_first", "rsa_previous") + (("tuning_stability",) if chronic else ()):
        np.testing.assert_allclose(out[..., IDX[name]], 1.0, atol=1e-6)
    np.testing.assert_allclose(out[..., IDX["spread_change"]], 0.0, atol=1e-6)
    np.testing.assert_array_equal(out[:, 1:, :5], np.repeat(out[:, :1, :5], 4, axis=1))  # within-session stats


@pytest.mark.parametrize("k", [3, 20])
def test_scaled_copies_of_one_tuning_curve(k: int) -> None:
    rng = np.random.default_rng(4)
    p = 8
    curve = rng.normal(size=p)
    values = rng.lognormal(0, 1, size=(2, 3, k, 1)) * curve + rng.normal(0, 3, size=(2, 3, k, 1))
    out = _statistics(values, True)
    np.testing.assert_allclose(out[..., IDX["corr_mean"]], 1.0, atol=1e-6)
    np.testing.assert_allclose(out[..., IDX["corr_sd"]], 0.0, atol=1e-6)
    np.testing.assert_allclose(out[..., IDX["dimensionality"]], 1 / min(k, p - 1), rtol=1e-5)
    np.testing.assert_allclose(out[..., IDX["tuning_stability"]], 1.0, atol=1e-6)
    # Every probe has the same z-score in every unit: the RDM, and so the RSA, is undefined.
    assert np.isnan(out[..., IDX["rsa_first"]]).all()


def test_one_hot_responses_are_maximally_sparse() -> None:
    rng = np.random.default_rng(5)
    p = 6
    values = np.eye(p)[None, None] * rng.lognormal(0, 1, size=(2, 3, p, 1)) + rng.normal(size=(2, 3, p, 1))
    out = _statistics(values, True)
    np.testing.assert_allclose(out[..., IDX["lifetime_sparseness"]], 1.0, rtol=1e-6)
    np.testing.assert_allclose(out[..., IDX["population_sparseness"]], 1.0, rtol=1e-6)


def test_fewer_than_two_valid_units() -> None:
    values = _recording(seed=6)
    values[:, :, 1:] = np.nan
    values[1, :, 2] = 5.0  # a constant unit does not count either
    out = _statistics(values, True)
    for name in (*CORRELATION_STATS, "population_sparseness"):
        assert np.isnan(out[..., IDX[name]]).all(), name
    for name in ("lifetime_sparseness", "tuning_stability", "spread_change"):
        assert np.isfinite(out[..., IDX[name]]).all(), name


def test_two_probes() -> None:
    out = _statistics(_recording(seed=7, p=2), True)
    for name in (*CORRELATION_STATS, "tuning_stability"):
        assert np.isnan(out[..., IDX[name]]).all(), name
    np.testing.assert_allclose(out[..., IDX["lifetime_sparseness"]], 1.0, rtol=1e-6)  # (0, d): always 1
    assert np.isfinite(out[..., IDX["population_sparseness"]]).all()


@pytest.mark.parametrize("chronic", [True, False])
@pytest.mark.parametrize("shape", [(2, 3, 4, 1), (2, 3, 0, 12), (0, 3, 4, 12), (2, 0, 4, 12), (1, 1, 1, 12)])
def test_degenerate_inputs_give_nan_without_warnings(chronic: bool, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(8)
    out = _statistics(rng.normal(size=shape).astype(np.float32), chronic)
    assert out.shape == (*shape[:2], len(POPULATION_STATISTICS))
    assert np.isnan(out[..., [IDX[n] for n in CORRELATION_STATS]]).all()


@pytest.mark.parametrize("chronic", [True, False])
def test_absent_and_silent_networks(chronic: bool) -> None:
    values = _recording(seed=9)
    values[0] = np.nan  # a network without any unit of this group
    values[1] = 2.0  # every unit silent
    out = _statistics(values, chronic)
    assert np.isnan(out[:2]).all()
    assert np.isfinite(out[2][..., [IDX[n] for n in POPULATION_STATISTICS if n != "tuning_stability"]]).all()


def test_output_contract() -> None:
    out = _statistics(_recording(dtype=np.float32), False)
    assert out.shape == (3, 4, len(POPULATION_STATISTICS)) and out.dtype == np.float32
    assert len(POPULATION_STATISTICS) == 9 == len(set(POPULATION_STATISTICS))
    assert population_feature_names("hidden.") == [f"hidden.{n}" for n in POPULATION_STATISTICS]
    assert population_feature_names() == list(POPULATION_STATISTICS)
    with pytest.raises(AdvisorError, match="shape"):
        population_statistics(np.zeros((2, 3, 4)), True)

"""Features of a virtual recording: shapes, names, agreement with direct statistics, the NaN policy."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from advisor.science.features import featurize, featurize_recording
from advisor.science.protocol import Recording, RecordingProtocol, virtual_recording
from advisor.science.statistics import NanPolicy


@pytest.mark.parametrize("observable", ["weights", "activations", "activity_change"])
def test_features_have_one_sample_per_network_and_a_session_axis(tiny_bank: Any, observable: str) -> None:
    protocol = RecordingProtocol(observable=observable, n_units=30, n_sessions=4, noise=0.2, seed=1)
    feats = featurize(tiny_bank.bank, protocol)
    assert feats.X.shape == (4, 4, 3 * 21)
    assert feats.X.dtype == np.float32
    assert feats.names[0] == "early.raw_mean" and feats.names[-1] == "deep.sq_kurtosis"
    assert len(feats.names) == 63 and len(set(feats.names)) == 63
    assert feats.curve.shape == (4, 4, 2)
    assert np.isfinite(feats.X).all()


def test_activity_features_are_probe_averaged_unit_statistics(tiny_bank: Any) -> None:
    protocol = RecordingProtocol(observable="activations", n_units=12, n_sessions=2, noise_model="none",
                                 layers=("deep",), seed=2, baseline=0.3)
    rec = virtual_recording(tiny_bank.bank, protocol)
    feats = featurize_recording(rec)
    values = rec.values[0]  # (N, S, k, P)
    mean_over_units = values.mean(axis=2).mean(axis=-1)  # raw_mean per probe, averaged over probes
    np.testing.assert_allclose(feats.X[..., feats.names.index("deep.raw_mean")], mean_over_units, rtol=1e-5)
    median = np.median(np.abs(values), axis=2).mean(axis=-1)
    np.testing.assert_allclose(feats.X[..., feats.names.index("deep.abs_median")], median, rtol=1e-5)


def test_nan_policy_is_applied_and_reported() -> None:
    constant = np.ones((2, 3, 5), np.float32)  # every unit equal: skew and kurtosis are undefined
    rec = Recording([constant], np.arange(3), ("deep",), np.zeros((2, 3, 2), np.float32))
    zeroed = featurize_recording(rec, NanPolicy.ZERO)
    assert np.isfinite(zeroed.X).all()
    assert zeroed.nan_report.n_values == 126 and zeroed.nan_report.n_nonfinite == 36
    assert all(count == 6 for count in zeroed.nan_report.by_feature.values())
    assert set(zeroed.nan_report.by_feature) == {f"deep.{f}_{s}" for f in ("raw", "abs", "sq")
                                                 for s in ("skew", "kurtosis")}
    kept = featurize_recording(rec, "propagate")
    assert np.isnan(kept.X[..., kept.names.index("deep.raw_kurtosis")]).all()
    with pytest.raises(ValueError, match="36 of 126 feature values are non-finite"):
        featurize_recording(rec, "raise")


@pytest.mark.parametrize("chunk", [1, 3])
def test_features_do_not_depend_on_the_chunk_size(tiny_bank: Any, chunk: int,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """featurize records a chunk of networks at a time (bounded memory); the values are those of one pass, with
    gains, baselines and noise."""
    import advisor.science.protocol

    bank = tiny_bank.bank
    for protocol in (RecordingProtocol(n_units=12, n_sessions=4, noise=0.4, seed=7, baseline=0.5),
                     RecordingProtocol(n_units=9, n_sessions=3, noise_model="poisson", noise=3.0, chronic=False,
                                       gain_sd=(1.0, 0.5, 0.8), baseline=0.3),
                     RecordingProtocol(observable="weights", n_units=30, n_sessions=5, noise=0.2, chronic=False),
                     RecordingProtocol(n_units=12, n_sessions=4, noise=0.4, seed=7, gain_sd=(0.0, 0.0, 0.0))):
        whole = featurize_recording(virtual_recording(bank, protocol))
        monkeypatch.setattr(advisor.science.protocol, "CHUNK_NETWORKS", chunk)
        chunked = featurize(bank, protocol)
        monkeypatch.undo()
        np.testing.assert_array_equal(chunked.X, whole.X)
        np.testing.assert_array_equal(chunked.curve, whole.curve)
        assert chunked.nan_report == whole.nan_report


@pytest.mark.parametrize("chronic", [True, False])
def test_population_statistics_join_or_replace_the_marginal_ones(tiny_bank: Any, chronic: bool) -> None:
    from advisor.science.population import POPULATION_STATISTICS, population_statistics

    bank = tiny_bank.bank
    base = dict(n_units=24, n_sessions=3, noise=0.3, seed=4, chronic=chronic)
    marginal = featurize(bank, RecordingProtocol(**base))
    both = featurize(bank, RecordingProtocol(**base, statistics="both"))
    population = featurize(bank, RecordingProtocol(**base, statistics="population"))
    pop_names = [n for n in POPULATION_STATISTICS if chronic or n != "tuning_stability"]
    assert population.names == [f"{g}.{n}" for g in ("early", "middle", "deep") for n in pop_names]
    assert both.names == [f"{g}.{n}" for g in ("early", "middle", "deep")
                          for n in [m.split(".", 1)[1] for m in marginal.names[:21]] + pop_names]
    width = 21 + len(pop_names)
    np.testing.assert_array_equal(both.X[..., :21], marginal.X[..., :21])
    np.testing.assert_array_equal(both.X[..., width + 21:2 * width], population.X[..., len(pop_names):
                                                                                   2 * len(pop_names)])
    # the same numbers as the statistics of the recorded values themselves (NaN → 0 under the default policy)
    rec = virtual_recording(bank, RecordingProtocol(**base))
    direct = population_statistics(rec.values[2], chronic)
    if not chronic:
        direct = np.delete(direct, POPULATION_STATISTICS.index("tuning_stability"), axis=-1)
    np.testing.assert_allclose(population.X[..., -len(pop_names):], np.nan_to_num(direct, nan=0.0), rtol=1e-6)


def test_weights_have_no_population_statistics(tiny_bank: Any) -> None:
    from advisor.errors import AdvisorError

    both = featurize(tiny_bank.bank, RecordingProtocol(observable="weights", n_units=30, n_sessions=3,
                                                           statistics="both"))
    assert len(both.names) == 63
    with pytest.raises(AdvisorError, match="statistics 'population' needs stimuli"):
        RecordingProtocol(observable="weights", statistics="population")
    with pytest.raises(AdvisorError, match="statistics must be one of marginal, population, both; got 'pca'"):
        RecordingProtocol(statistics="pca")


def test_augmented_recordings_are_other_draws_of_the_same_protocol(tiny_bank: Any) -> None:
    from dataclasses import replace

    from advisor.errors import AdvisorError
    from advisor.science.features import AUGMENT_SEED_STRIDE, augmented_features

    protocol = RecordingProtocol(n_units=12, n_sessions=3, noise=0.3, seed=5)
    extra = augmented_features(tiny_bank.bank, protocol, 3)
    assert len(extra) == 2 and augmented_features(tiny_bank.bank, protocol, 1) == []
    np.testing.assert_array_equal(extra[1], featurize(tiny_bank.bank,
                                                      replace(protocol, seed=5 + 2 * AUGMENT_SEED_STRIDE)).X)
    assert not np.array_equal(extra[0], featurize(tiny_bank.bank, protocol).X)
    with pytest.raises(AdvisorError, match=r"--augment must be a positive integer .* got 0"):
        augmented_features(tiny_bank.bank, protocol, 0)

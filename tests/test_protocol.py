"""Recording protocols, noise models and the virtual recording of a bank."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pytest

from advisor.errors import AdvisorError
from advisor.science.protocol import (
    DEFAULT_GAIN_SD,
    NOISE_MODELS,
    RecordingProtocol,
    Rig,
    record_chunks,
    reference_spread,
    virtual_recording,
)
from simulator.errors import ConfigError

# The tiny bank: 4 networks, 5 checkpoints, 3 groups x 32 units, 4 probes, 64 synapses per group.
OFF = (0.0, 0.0, 0.0)


def _fake_bank(activations: np.ndarray | None = None, weights: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """A bank as ``record_chunks`` reads it: activations (N, T, 3, U, P), weights (N, T, 3, S), loss and metric."""
    rng = np.random.default_rng(0)
    if activations is None:
        activations = np.abs(rng.standard_normal((6, 4, 3, 10, 5))).astype(np.float32)
    if weights is None:
        weights = rng.standard_normal(activations.shape[:4]).astype(np.float32)
    n, t = activations.shape[:2]
    return {"activations": activations, "activity_change": activations, "weights": weights,
            "loss": np.ones((n, t), np.float32), "metric": np.zeros((n, t), np.float32)}


def _record(bank: dict[str, np.ndarray], **kwargs: Any) -> list[np.ndarray]:
    return virtual_recording(bank, RecordingProtocol(**kwargs)).values


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"observable": "spikes"}, "observable must be one of weights, activations, activity_change; got 'spikes'"),
        ({"n_units": 0}, "n_units must be a positive integer; got 0"),
        ({"layers": ("early", "cortex")}, "layers must be a non-empty subset of early, middle, deep; got early,cortex"),
        ({"layers": ()}, "layers must be a non-empty subset"),
        ({"n_units": 2}, "n_units = 2 is fewer than one unit per recorded layer group (3)"),
        ({"n_sessions": 0}, "n_sessions must be a positive integer; got 0"),
        ({"window": (0.5, 0.2)}, "window must be start-end with 0 <= start < end <= 1; got 0.5-0.2"),
        ({"noise": -1.0}, "noise for the gaussian model (noise SD / spread) must be in [0, 10]; got -1.0"),
        ({"noise_model": "poisson", "observable": "weights", "noise": 5},
         "noise model 'poisson' applies to activations only; got observable 'weights'"),
        ({"n_probes": 0}, "n_probes must be a positive integer; got 0"),
        ({"gain_sd": (0.5, -0.1, 0.5)}, "gain_sd (area) must be a number in [0, 3] (SD of the log gain); got -0.1"),
        ({"gain_sd": (4, 0.3, 0.5)}, "gain_sd (animal) must be a number in [0, 3] (SD of the log gain); got 4"),
        ({"gain_sd": (0.5, 0.3, math.nan)},
         "gain_sd (unit) must be a number in [0, 3] (SD of the log gain); got nan"),
        ({"gain_sd": (0.5, 0.3, "big")},
         "gain_sd (unit) must be a number in [0, 3] (SD of the log gain); got 'big'"),
        ({"gain_sd": (0.5, 0.3)},
         "gain_sd must be three numbers (SDs of the log gain per animal, area, unit); got (0.5, 0.3)"),
        ({"baseline": -1}, "baseline must be a number in [0, 10]; got -1"),
        ({"baseline": True}, "baseline must be a number in [0, 10]; got True"),
    ],
)
def test_protocol_rejects_bad_values(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(AdvisorError, match=re.escape(message)):
        RecordingProtocol(**kwargs)


def test_unknown_noise_model_names_the_allowed_ones() -> None:
    with pytest.raises(ConfigError, match="unknown noise model 'pink'; allowed: gaussian, none, poisson"):
        RecordingProtocol(noise_model="pink")


def test_units_split_evenly_with_remainder_to_deeper_groups() -> None:
    assert RecordingProtocol(n_units=10).units_per_group() == [3, 3, 4]
    assert RecordingProtocol(n_units=11).units_per_group() == [3, 4, 4]
    assert RecordingProtocol(n_units=7, layers=("deep",)).units_per_group() == [7]


def test_gains_default_to_the_generic_modality_and_are_described() -> None:
    p = RecordingProtocol(n_units=30, n_sessions=4)
    assert p.gain_sd == DEFAULT_GAIN_SD == (0.5, 0.3, 0.5) and p.baseline == 0.0
    assert p.describe() == ("30 units of activations (early, middle, deep) at 4 sessions over all of learning, "
                            "no noise, chronic, unknown gains (log SD animal 0.5, area 0.3, unit 0.5)")
    off = RecordingProtocol(n_units=30, n_sessions=4, gain_sd=OFF, noise=0.3, baseline=0.2)
    assert off.describe().endswith("gaussian noise 0.3, chronic, no unknown gains, baseline 0.2")
    assert RecordingProtocol(gain_sd=[0.1, 0.2, 0.3]).gain_sd == (0.1, 0.2, 0.3)  # type: ignore[arg-type]


def test_sessions_are_evenly_spaced_within_the_window() -> None:
    assert RecordingProtocol(n_sessions=5).session_indices(41).tolist() == [0, 10, 20, 30, 40]
    assert RecordingProtocol(n_sessions=4, window=(0.0, 0.3)).session_indices(41).tolist() == [0, 4, 8, 12]


def test_bank_dependent_limits(tiny_bank: Any) -> None:
    bank = tiny_bank.bank
    with pytest.raises(AdvisorError, match=re.escape("n_units must be an integer in [3, 96] for this bank")):
        virtual_recording(bank, RecordingProtocol(n_units=97))
    with pytest.raises(AdvisorError, match=re.escape("n_sessions must be at most 5")):
        virtual_recording(bank, RecordingProtocol(n_units=9, n_sessions=6))
    with pytest.raises(AdvisorError, match=re.escape("n_probes must be at most 4 for this bank; got 5")):
        virtual_recording(bank, RecordingProtocol(n_units=9, n_sessions=3, n_probes=5))


@pytest.mark.parametrize("observable", ["weights", "activations", "activity_change"])
def test_noise_free_chronic_recording_returns_bank_values(tiny_bank: Any, observable: str) -> None:
    bank = tiny_bank.bank
    protocol = RecordingProtocol(observable=observable, n_units=12, n_sessions=3, noise_model="none", seed=1,
                                 gain_sd=OFF)
    rec = virtual_recording(bank, protocol)
    assert rec.sessions.tolist() == [0, 2, 4]
    assert rec.curve.shape == (4, 3, 2)
    np.testing.assert_array_equal(rec.curve[..., 0], np.asarray(bank["loss"])[:, [0, 2, 4]])
    full = np.asarray(bank[observable], dtype=np.float32)
    for gi, values in enumerate(rec.values):
        assert values.shape[:3] == (4, 3, 4)
        for net in range(4):
            source = full[net, [0, 2, 4], gi]  # (S, U[, P])
            # chronic: each recorded unit's trajectory is one of the bank's units, the same unit every session
            for unit in range(4):
                trace = values[net, :, unit]
                matches = [u for u in range(source.shape[1]) if np.array_equal(source[:, u], trace)]
                assert matches, f"{observable}: network {net} unit {unit} is not a bank unit"


def test_acute_recording_draws_new_units_each_session(tiny_bank: Any) -> None:
    bank = tiny_bank.bank
    chronic = virtual_recording(bank, RecordingProtocol(n_units=6, n_sessions=5, noise_model="none", seed=2))
    acute = virtual_recording(bank, RecordingProtocol(n_units=6, n_sessions=5, noise_model="none", seed=2,
                                                      chronic=False))
    assert chronic.values[0].shape == acute.values[0].shape
    assert not np.array_equal(chronic.values[0], acute.values[0])


def test_seed_determines_the_recording(tiny_bank: Any) -> None:
    bank = tiny_bank.bank
    p = RecordingProtocol(n_units=9, n_sessions=3, noise=0.5, seed=4)
    a, b = virtual_recording(bank, p), virtual_recording(bank, p)
    c = virtual_recording(bank, RecordingProtocol(n_units=9, n_sessions=3, noise=0.5, seed=5))
    for x, y, z in zip(a.values, b.values, c.values, strict=True):
        np.testing.assert_array_equal(x, y)
        assert not np.array_equal(x, z)


def test_gaussian_noise_sd_is_relative_to_each_units_spread_in_the_first_session(tiny_bank: Any) -> None:
    bank = tiny_bank.bank
    for gains in (OFF, (0.5, 0.3, 0.7)):  # relative noise means the same whatever the gain
        kwargs: dict[str, Any] = {"n_units": 96, "n_sessions": 5, "seed": 3, "gain_sd": gains}
        clean = virtual_recording(bank, RecordingProtocol(noise_model="none", **kwargs))
        noisy = virtual_recording(bank, RecordingProtocol(noise=0.5, **kwargs))
        for gi in range(3):
            first = clean.values[gi][:, :1]  # (N, 1, k, P): what the experimenter saw in session one
            per_unit = first.std(axis=-1, keepdims=True)
            alive = per_unit > 0
            fallback = np.where(alive, per_unit, 0).sum(axis=2, keepdims=True) / alive.sum(axis=2, keepdims=True)
            spread = np.where(alive, per_unit, fallback)
            z = (noisy.values[gi] - clean.values[gi]) / (0.5 * spread)
            assert z.std() == pytest.approx(1.0, rel=0.05)  # 7680 draws: SE of an SD ~1%
            assert abs(z.mean()) < 0.05


def test_poisson_relative_error_falls_with_the_mean_spike_count(tiny_bank: Any) -> None:
    bank = tiny_bank.bank  # ReLU networks: rate = response, no shift
    clean = virtual_recording(bank, RecordingProtocol(n_units=96, n_sessions=5, noise_model="none", seed=3,
                                                      gain_sd=OFF)).values[2]
    errors = []
    for level in (2.0, 200.0):
        counts = virtual_recording(bank, RecordingProtocol(n_units=96, n_sessions=5, noise_model="poisson",
                                                           noise=level, seed=3, gain_sd=OFF)).values[2]
        expected = level * clean / clean[:, :1].mean(axis=(1, 2, 3), keepdims=True)
        errors.append(np.abs(counts - expected).mean() / expected.mean())
        assert (counts >= 0).all() and (counts == np.round(counts)).all()
        assert counts[:, 0].mean() == pytest.approx(level, rel=0.1)
    assert errors[1] < errors[0] / 4  # 100x the spikes: ~10x less relative error


# ----------------------------------------------------------------------------------------------- gains
def test_animal_gains_scale_every_value_of_a_network_by_one_lognormal_factor() -> None:
    rng = np.random.default_rng(1)
    bank = _fake_bank(np.abs(rng.standard_normal((800, 3, 3, 4, 2))).astype(np.float32) + 0.1)
    clean = _record(bank, n_units=6, n_sessions=3, noise_model="none", gain_sd=OFF, seed=5)
    gained = _record(bank, n_units=6, n_sessions=3, noise_model="none", gain_sd=(0.5, 0.0, 0.0), seed=5)
    ratio = np.concatenate([(g / c).reshape(800, -1) for g, c in zip(gained, clean, strict=True)], axis=1)
    # one factor per network, on the same units
    np.testing.assert_allclose(ratio, np.broadcast_to(ratio[:, :1], ratio.shape), rtol=1e-5)
    log_gain = np.log(ratio[:, 0])
    assert log_gain.std() == pytest.approx(0.5, rel=0.08)  # 800 networks: SE of an SD 2.5%
    assert abs(log_gain.mean()) < 0.06


def test_area_and_unit_gains_are_independent_lognormal_levels() -> None:
    rng = np.random.default_rng(2)
    bank = _fake_bank(np.abs(rng.standard_normal((300, 3, 3, 8, 2))).astype(np.float32) + 0.1)
    kwargs: dict[str, Any] = {"n_units": 24, "n_sessions": 3, "noise_model": "none", "seed": 6}
    clean = _record(bank, gain_sd=OFF, **kwargs)
    area = np.stack([np.log(g / c) for g, c in zip(_record(bank, gain_sd=(0, 0.4, 0), **kwargs), clean,
                                                   strict=True)], axis=1)  # (N, G, S, k, P)
    # one factor per network and area
    np.testing.assert_allclose(area, np.broadcast_to(area[:, :, :1, :1, :1], area.shape), atol=1e-5)
    assert area[:, :, 0, 0, 0].std() == pytest.approx(0.4, rel=0.08)
    both = np.stack([np.log(g / c) for g, c in zip(_record(bank, gain_sd=(0.3, 0.4, 0.5), **kwargs), clean,
                                                   strict=True)], axis=1)
    # chronic: a unit keeps its gain across sessions and stimuli
    np.testing.assert_allclose(both, np.broadcast_to(both[:, :, :1, :, :1], both.shape), atol=1e-5)
    assert both[:, :, 0, :, 0].std() == pytest.approx(math.sqrt(0.3**2 + 0.4**2 + 0.5**2), rel=0.05)
    unit = both - both.mean(axis=3, keepdims=True)  # animal and area factors cancel within a network and area
    assert unit[:, :, 0, :, 0].std() * math.sqrt(8 / 7) == pytest.approx(0.5, rel=0.05)


def test_acute_recordings_redraw_unit_gains_each_session() -> None:
    bank = _fake_bank()
    kwargs: dict[str, Any] = {"n_units": 30, "n_sessions": 4, "noise_model": "none", "seed": 2, "chronic": False}
    clean = _record(bank, gain_sd=OFF, **kwargs)  # all 10 units of each group, in a new order each session
    for gained, values in zip(_record(bank, gain_sd=(0, 0, 0.5), **kwargs), clean, strict=True):
        log_gain = np.log(gained / values)  # (N, S, k, P)
        # one gain per unit and session
        np.testing.assert_allclose(log_gain, np.broadcast_to(log_gain[..., :1], log_gain.shape), atol=1e-5)
        assert not np.allclose(log_gain[:, 0], log_gain[:, 1])


def test_gains_off_reproduce_the_gain_free_recording_and_keep_the_units(tiny_bank: Any) -> None:
    bank = tiny_bank.bank
    for observable in ("weights", "activations"):
        kwargs: dict[str, Any] = {"observable": observable, "n_units": 12, "n_sessions": 3, "seed": 1}
        off = _record(bank, noise_model="none", gain_sd=OFF, **kwargs)
        full = np.asarray(bank[observable], dtype=np.float32)[:, [0, 2, 4]]
        for gi, values in enumerate(off):
            pick = [[next(u for u in range(full.shape[3]) if np.array_equal(full[n, :, gi, u], values[n, :, j]))
                     for j in range(4)] for n in range(4)]
            np.testing.assert_array_equal(values, np.stack([full[n, :, gi, pick[n]] for n in range(4)], 0)
                                          .transpose(0, 2, 1, *range(3, values.ndim)))
        # gains change the values, never which units are recorded
        on = _record(bank, noise_model="none", gain_sd=(0.5, 0.3, 0.5), **kwargs)
        for a, b in zip(off, on, strict=True):
            assert np.array_equal(a == 0, b == 0)  # silent ReLU units stay silent
            ratio = np.where(a == 0, np.nan, b) / np.where(a == 0, 1, a)
            assert np.nanmin(ratio) > 0 and not np.allclose(ratio, 1, equal_nan=True)
            # chronic: the same units, the same gain in every session (and for every stimulus)
            gain = np.nan_to_num(ratio, nan=0.0).max(axis=(1, *range(3, ratio.ndim)), keepdims=True)
            np.testing.assert_allclose(b, a * gain, rtol=1e-3)


def test_recording_does_not_depend_on_the_chunk_size() -> None:
    bank = _fake_bank(np.random.default_rng(3).standard_normal((7, 4, 3, 10, 5)).astype(np.float32))
    for protocol in (RecordingProtocol(n_units=12, n_sessions=4, noise=0.4, seed=7, baseline=0.5),
                     RecordingProtocol(n_units=9, n_sessions=3, noise_model="poisson", noise=3.0, chronic=False,
                                       baseline=0.3, gain_sd=(1.0, 0.5, 0.8)),
                     RecordingProtocol(observable="weights", n_units=30, n_sessions=4, noise=0.2, chronic=False)):
        whole = virtual_recording(bank, protocol).values
        for chunk in (1, 3):
            parts: list[list[np.ndarray]] = [[] for _ in protocol.layers]
            for position, _, values in record_chunks(bank, protocol, chunk=chunk):
                parts[position].append(values)
            for a, b in zip(whole, parts, strict=True):
                np.testing.assert_array_equal(np.concatenate(b), a)


# ------------------------------------------------------------------------------------ causal noise spread
def test_noise_spread_comes_from_the_first_recorded_session_only() -> None:
    rng = np.random.default_rng(4)
    early = rng.standard_normal((5, 4, 3, 10, 6)).astype(np.float32)
    later = early.copy()
    later[:, 1:] *= 10.0  # the network changes after the first recorded session
    for observable in ("activations", "weights"):
        kwargs: dict[str, Any] = {"observable": observable, "n_units": 15, "n_sessions": 4, "seed": 3}
        noise = []
        for values in (early, later):
            bank = _fake_bank(values, values[..., 0])
            noise.append([n - c for n, c in zip(_record(bank, noise=0.8, **kwargs),
                                                _record(bank, noise_model="none", **kwargs), strict=True)])
        for a, b in zip(*noise, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)  # the same noise SD in every session


def test_noise_does_not_depend_on_units_that_were_not_recorded() -> None:
    bank = _fake_bank()
    kwargs: dict[str, Any] = {"n_units": 9, "n_sessions": 4, "seed": 8}
    clean = _record(bank, noise_model="none", gain_sd=OFF, **kwargs)
    changed = {k: v.copy() for k, v in bank.items()}
    for gi, values in enumerate(clean):
        for n in range(values.shape[0]):
            recorded = [u for u in range(10) if any(np.array_equal(bank["activations"][n, :, gi, u], values[n, :, j])
                                                    for j in range(3))]
            assert len(recorded) == 3
            others = [u for u in range(10) if u not in recorded]
            changed["activations"][n, :, gi, others] *= 100.0
    for noise_model, noise in (("gaussian", 0.7), ("poisson", 5.0)):
        for a, b in zip(_record(bank, noise_model=noise_model, noise=noise, baseline=0.4, **kwargs),
                        _record(changed, noise_model=noise_model, noise=noise, baseline=0.4, **kwargs),
                        strict=True):
            np.testing.assert_array_equal(a, b)


def test_reference_spread_of_silent_units_single_probes_weights_and_acute_sessions() -> None:
    y = np.zeros((1, 2, 3, 4), np.float32)
    y[0, 0, 0] = [0, 1, 0, 1]  # SD 0.5
    y[0, 0, 1] = [0, 2, 0, 2]  # SD 1
    y[0, 1, 2] = [0, 9, 0, 9]  # unit 2 is silent in the first session, active later
    spread = reference_spread(y, acute=False)
    assert spread.shape == (1, 1, 3, 1)
    np.testing.assert_allclose(spread.ravel(), [0.5, 1.0, 0.75])  # silent: the mean of the active units
    acute = reference_spread(y, acute=True)
    assert acute.shape == (1, 2, 3, 1)
    np.testing.assert_allclose(acute[0, 1].ravel(), [4.5, 4.5, 4.5])  # each session's own units
    one_probe = np.array([[[[1.0], [3.0]]]], np.float32)  # (1, 1, 2, 1): no spread across stimuli
    np.testing.assert_allclose(reference_spread(one_probe, acute=False).ravel(), [1.0, 1.0])  # SD over units
    w = np.array([[[1.0, 3.0], [0.0, 100.0]]], np.float32)  # (1, S=2, k=2) synapses
    np.testing.assert_allclose(reference_spread(w, acute=False).ravel(), [1.0])
    missing = np.full((1, 2, 3, 4), np.nan, np.float32)  # a group the network lacks: no warning, no noise
    assert (reference_spread(missing, acute=False) == 0).all()


# ---------------------------------------------------------------------------------------------- Poisson
def test_poisson_counts_keep_negative_responses_of_signed_units() -> None:
    rng = np.random.default_rng(5)
    tanh = np.tanh(rng.standard_normal((8, 3, 3, 20, 30))).astype(np.float32)
    floored = np.where(tanh < 0, np.float32(-1.0), tanh)  # differs only where the response is negative
    kwargs: dict[str, Any] = {"n_units": 60, "n_sessions": 3, "noise_model": "poisson", "noise": 20.0,
                              "gain_sd": OFF, "seed": 1}
    counts = _record(_fake_bank(tanh), **kwargs)
    counts_floored = _record(_fake_bank(floored), **kwargs)
    clean = _record(_fake_bank(tanh), n_units=60, n_sessions=3, noise_model="none", gain_sd=OFF, seed=1)
    for c, f, x in zip(counts, counts_floored, clean, strict=True):
        assert (c >= 0).all() and (c == np.round(c)).all()
        negative = x < 0
        assert (f[negative] == 0).all()  # rate 1 + r = 0 at the floor
        assert c[negative].mean() > 2.0  # a clip at 0 would give no spikes here
        assert c[x < -0.5].mean() < c[negative & (x > -0.5)].mean()  # and they grade with the response
        assert c[:, 0].mean() == pytest.approx(20.0, rel=0.05)


def test_poisson_level_is_the_mean_count_of_the_first_session_and_baseline_is_spontaneous() -> None:
    rng = np.random.default_rng(6)
    relu = np.maximum(rng.standard_normal((20, 3, 3, 10, 20)), 0).astype(np.float32)
    for baseline in (0.0, 0.5):
        values = _record(_fake_bank(relu), n_units=30, n_sessions=3, noise_model="poisson", noise=4.0,
                         baseline=baseline, seed=2)
        clean = _record(_fake_bank(relu), n_units=30, n_sessions=3, noise_model="none", gain_sd=OFF, seed=2)
        first = np.concatenate([v[:, 0].ravel() for v in values])
        assert first.mean() == pytest.approx(4.0, rel=0.05)
        silent = np.concatenate([v[x == 0] for v, x in zip(values, clean, strict=True)])
        if baseline == 0:
            assert (silent == 0).all()
        else:  # spontaneous spikes: per network and group, baseline / (1 + baseline) of the mean count
            assert silent.mean() == pytest.approx(4.0 * 0.5 / 1.5, rel=0.15)


@pytest.mark.parametrize("key", list(NOISE_MODELS))
def test_noise_model_registry_conformance(key: str) -> None:
    rng = np.random.default_rng(0)
    x = np.abs(rng.standard_normal((3, 2, 5, 4))).astype(np.float32)  # (m, S, k, P)
    x[1] = np.nan  # a network without this group
    gain = np.exp(rng.standard_normal((3, 1, 5, 1))).astype(np.float32)
    rigs = (Rig.off(x), Rig(gain, rng.standard_normal((3, 1, 5, 1)).astype(np.float32), 0.5, False),
            Rig.off(x, acute=True))
    model = NOISE_MODELS.get(key)
    level = max(model.level_range[0], min(1.0, model.level_range[1]))
    for rig in rigs:
        a = model.apply(x, level, rig, np.random.default_rng(1))
        b = model.apply(x, level, rig, np.random.default_rng(1))
        assert a.shape == x.shape and a.dtype == np.float32
        assert np.isnan(a[1]).all() and np.isfinite(a[[0, 2]]).all()
        np.testing.assert_array_equal(a, b)
        if key != "none":
            assert not np.array_equal(a[[0, 2]], model.apply(x, level, rig, np.random.default_rng(2))[[0, 2]])
    if key == "none":
        np.testing.assert_array_equal(model.apply(x, level, rigs[0], rng), x)

"""Recording protocols, noise models and the virtual recording of a bank."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest

from advisor.errors import AdvisorError
from advisor.protocol import NOISE_MODELS, RecordingProtocol, virtual_recording
from simulator.errors import ConfigError

# The tiny bank: 4 networks, 5 checkpoints, 3 groups x 32 units, 4 probes, 64 synapses per group.


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
    protocol = RecordingProtocol(observable=observable, n_units=12, n_sessions=3, noise_model="none", seed=1)
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


def test_gaussian_noise_sd_is_relative_to_each_networks_spread(tiny_bank: Any) -> None:
    bank = tiny_bank.bank
    clean = virtual_recording(bank, RecordingProtocol(n_units=96, n_sessions=5, noise_model="none", seed=3))
    noisy = virtual_recording(bank, RecordingProtocol(n_units=96, n_sessions=5, noise=0.5, seed=3))
    full = np.asarray(bank["activations"], dtype=np.float32)
    for gi in range(3):
        diff = noisy.values[gi] - clean.values[gi]
        for net in range(4):
            spread = full[net, :, gi].std()
            assert diff[net].std() == pytest.approx(0.5 * spread, rel=0.1)  # 640 draws: SE of an SD ~3%


def test_poisson_counts_scale_with_the_mean_spike_count(tiny_bank: Any) -> None:
    bank = tiny_bank.bank
    clean = virtual_recording(bank, RecordingProtocol(n_units=96, n_sessions=5, noise_model="none", seed=3))
    errors = []
    for level in (2.0, 200.0):
        noisy = virtual_recording(bank, RecordingProtocol(n_units=96, n_sessions=5, noise_model="poisson",
                                                          noise=level, seed=3))
        rel = np.abs(noisy.values[2] - clean.values[2]).mean() / np.abs(clean.values[2]).mean()
        errors.append(rel)
        assert (noisy.values[2] >= 0).all()
    assert errors[1] < errors[0] / 4  # 100x the spikes: ~10x less relative error


def test_noise_model_registry_conformance() -> None:
    rng = np.random.default_rng(0)
    x = np.abs(rng.standard_normal((3, 2, 4, 5, 2))).astype(np.float32)
    spread = np.ones((3, 1, 1, 1, 1), np.float32)
    for key in NOISE_MODELS:
        model = NOISE_MODELS.get(key)
        level = max(model.level_range[0], min(1.0, model.level_range[1]))
        a = model.apply(x, level, spread, np.random.default_rng(1))
        b = model.apply(x, level, spread, np.random.default_rng(1))
        assert a.shape == x.shape and np.isfinite(a).all()
        np.testing.assert_array_equal(a, b)
        if key != "none":
            assert not np.array_equal(a, model.apply(x, level, spread, np.random.default_rng(2)))

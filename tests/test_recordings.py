"""Lab recordings: the .npz layout, NWB files (two-photon and electrophysiology), matching a recording to a
protocol, and the calibration and misspecification statistics of ``advisor identify``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from advisor.errors import AdvisorError
from advisor.science.identification import (
    Typicality,
    expected_calibration_error,
    false_alarm_rate,
    fit_temperature,
)
from advisor.science.nwb import read_nwb, write_nwb
from advisor.science.recordings import LabRecording, match_protocol, read_npz, write_npz

S, U, P, R = 5, 12, 4, 3


def _recording(counts: bool = False, seed: int = 0) -> LabRecording:
    rng = np.random.default_rng(seed)
    responses = rng.poisson(2.0, (S, U, P, R)).astype(float) if counts else rng.normal(0, 1, (S, U, P, R))
    groups = np.array(["early"] * 6 + ["deep"] * 6)
    return LabRecording(responses, groups, np.linspace(0, 1, S), "test", behaviour=rng.random((S, 2)),
                        unit_id=np.arange(100, 100 + U), stimulus_id=np.array([3, 5, 7, 9]))


# ------------------------------------------------------------------------------------------------- npz
def test_npz_round_trip(tmp_path: Path) -> None:
    rec = _recording()
    back = read_npz(write_npz(rec, tmp_path / "a.npz"))
    np.testing.assert_allclose(back.responses, rec.responses, rtol=1e-6)
    assert back.unit_group.tolist() == rec.unit_group.tolist()
    np.testing.assert_array_equal(back.unit_id, rec.unit_id)
    np.testing.assert_array_equal(back.stimulus_id, rec.stimulus_id)
    np.testing.assert_allclose(back.behaviour, rec.behaviour)
    assert not list(tmp_path.glob(".*"))  # no temporary file left


def test_npz_without_presentations_axis_is_one_presentation(tmp_path: Path) -> None:
    np.savez(tmp_path / "b.npz", responses=np.ones((2, 3, 4)), unit_group=np.array(["early"] * 3),
             session_progress=np.array([0.0, 1.0]))
    assert read_npz(tmp_path / "b.npz").responses.shape == (2, 3, 4, 1)


@pytest.mark.parametrize(("arrays", "message"), [
    ({"responses": np.ones((2, 3, 4)), "unit_group": np.array(["early"] * 3)}, "missing array session_progress"),
    ({"responses": np.ones((2, 3, 4)), "unit_group": np.array(["early"] * 3), "session_progress": np.array([0, 1]),
      "spikes": np.ones(3)}, "unknown array spikes"),
    ({"responses": np.full((2, 3, 4), np.nan), "unit_group": np.array(["early"] * 3),
      "session_progress": np.array([0, 1])}, "24 non-finite values (first: session 1, unit 1, stimulus 1)"),
    ({"responses": np.ones((2, 3, 4)), "unit_group": np.array(["early", "V1", "deep"]),
      "session_progress": np.array([0, 1])}, "unit_group has 'V1'; allowed: early, middle, deep"),
    ({"responses": np.ones((2, 3, 4)), "unit_group": np.array(["early"] * 3),
      "session_progress": np.array([0.5, 0.2])}, "session_progress must increase"),
    ({"responses": np.ones((2, 3, 4)), "unit_group": np.array(["early"] * 3),
      "session_progress": np.array([0, 1.5])}, "session_progress must be numbers in [0, 1]"),
    ({"responses": np.ones((2, 3, 4)), "unit_group": np.array(["early"] * 2),
      "session_progress": np.array([0, 1])}, "unit_group must hold one layer group per unit (3)"),
])
def test_npz_bad_layouts_are_one_line(tmp_path: Path, arrays: dict, message: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(AdvisorError, match=None) as info:
        read_npz(path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_npz_unreadable_or_missing(tmp_path: Path) -> None:
    (tmp_path / "x.npz").write_text("not a zip")
    with pytest.raises(AdvisorError, match=r"not a readable \.npz archive"):
        read_npz(tmp_path / "x.npz")
    with pytest.raises(AdvisorError, match="no such file"):
        read_npz(tmp_path / "missing.npz")


# ------------------------------------------------------------------------------------------------- NWB
@pytest.mark.parametrize("flavour", ["two_photon", "ephys"])
def test_nwb_round_trip_is_valid_nwb(tmp_path: Path, flavour: str) -> None:
    import pynwb

    rec = _recording(counts=flavour == "ephys")
    path = write_nwb(rec, tmp_path / "a.nwb", flavour=flavour, identifier="a", description="test")
    assert pynwb.validate(path=str(path)) == []
    back = read_nwb([path])
    np.testing.assert_allclose(back.responses, rec.responses, atol=1e-6)
    assert back.unit_group.tolist() == rec.unit_group.tolist()
    np.testing.assert_array_equal(back.unit_id, rec.unit_id)
    np.testing.assert_allclose(back.session_progress, rec.session_progress)
    np.testing.assert_array_equal(back.stimulus_id, rec.stimulus_id)


def test_nwb_session_files_area_map_and_progress_option(tmp_path: Path) -> None:
    rec = _recording()
    paths = []
    for s in (2, 0, 1):  # given out of order: sorted by their position in learning
        single = LabRecording(rec.responses[s:s + 1], rec.unit_group, np.array([0.5]), "x", unit_id=rec.unit_id,
                              stimulus_id=rec.stimulus_id)
        paths.append(write_nwb(single, tmp_path / f"day{s}.nwb", flavour="two_photon", identifier=f"d{s}",
                               description="one session"))
    back = read_nwb(paths, session_progress=[1.0, 0.0, 0.5], area_map={"early": "middle", "deep": "deep"})
    np.testing.assert_allclose(back.responses, rec.responses[:3], atol=1e-6)
    np.testing.assert_allclose(back.session_progress, [0.0, 0.5, 1.0])
    assert set(back.unit_group) == {"middle", "deep"}


def test_nwb_response_window_counts_only_inside_it(tmp_path: Path) -> None:
    rec = _recording(counts=True)
    path = write_nwb(rec, tmp_path / "e.nwb", flavour="ephys", identifier="e", description="test")
    # spikes lie in the first 0.5 s of each 1 s presentation: a window after them counts nothing
    assert read_nwb([path], window=(0.6, 0.9)).responses.sum() == 0
    np.testing.assert_allclose(read_nwb([path], window=(0.0, 0.5)).responses, rec.responses)


def _bare_nwb(path: Path, *, trials: bool, units: bool, stimuli: list[list[int]] | None = None) -> Path:
    from datetime import UTC, datetime

    import pynwb

    nwb = pynwb.NWBFile(session_description="bare", identifier="bare", session_start_time=datetime(2026, 1, 1,
                                                                                                  tzinfo=UTC))
    if trials:
        nwb.add_trial_column("stimulus", "stimulus id")
        nwb.add_epoch_column("learning_progress", "progress")
        for s, ids in enumerate(stimuli or [[0, 1]]):
            nwb.add_epoch(start_time=100.0 * s, stop_time=100.0 * s + 50, learning_progress=s / 2)
            for i, sid in enumerate(ids):
                nwb.add_trial(start_time=100.0 * s + i, stop_time=100.0 * s + i + 0.5, stimulus=sid)
    if units:
        nwb.add_unit_column("area", "area")
        nwb.add_unit(spike_times=[0.1, 0.2], area="early")
    with pynwb.NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return path


def test_nwb_bad_files_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "text.nwb").write_text("hello")
    cases = [
        ([tmp_path / "text.nwb"], "not a readable NWB file"),
        ([tmp_path / "missing.nwb"], "no such file"),
        ([_bare_nwb(tmp_path / "nounits.nwb", trials=True, units=False)], "no responses: neither a units table"),
        ([_bare_nwb(tmp_path / "notrials.nwb", trials=False, units=True)], "no stimulus presentations"),
        ([_bare_nwb(tmp_path / "differ.nwb", trials=True, units=True, stimuli=[[0, 1], [0, 2]])],
         "stimuli {0, 2} differ from the first session's {0, 1}"),
    ]
    for paths, message in cases:
        with pytest.raises(AdvisorError) as info:
            read_nwb(paths)
        assert message in str(info.value), (paths, str(info.value))
        assert "\n" not in str(info.value)
    with pytest.raises(AdvisorError, match=r"area 'early' is not in --area-map \(V1=early\)"):
        read_nwb([tmp_path / "differ.nwb"], area_map={"V1": "early"})


# ------------------------------------------------------------------------------------------------- matching
def _match(rec: LabRecording, **changes: object) -> object:
    args: dict = {"layers": ("early", "deep"), "units_per_group": [4, 4], "sessions": np.array([0, 10, 20, 30, 40]),
                  "n_checkpoints": 41, "n_stimuli": P, "repeats": 2, "combine": "mean", "seed": 0}
    args.update(changes)
    return match_protocol(rec, **args)


def test_match_uses_a_subset_of_units_and_the_planned_presentations() -> None:
    rec = _recording()
    m = _match(rec)
    assert [v.shape for v in m.values] == [(1, S, 4, P), (1, S, 4, P)]
    early = m.units_used["early"]
    rows = [int(np.flatnonzero(rec.unit_id == i)[0]) for i in early]
    np.testing.assert_allclose(m.values[0][0], rec.responses[:, rows, :, :2].mean(axis=-1), rtol=1e-6)
    assert m.units_recorded == {"early": 6, "deep": 6}
    assert "early: 4 of the 6 recorded units used (a random subset)" in m.notes
    assert "the first 2 of 3 presentations of each stimulus used" in m.notes
    summed = _match(rec, combine="sum")
    np.testing.assert_allclose(summed.values[0][0], rec.responses[:, rows, :, :2].sum(axis=-1), rtol=1e-6)
    assert _match(rec).units_used == m.units_used  # seeded


@pytest.mark.parametrize(("changes", "message"), [
    ({"sessions": np.array([0, 20, 40])}, "5 sessions; the protocol records 3 (at 0, 0.5, 1 of learning)"),
    ({"sessions": np.array([0, 10, 24, 30, 40])}, "session 3 lies at 0.5 of learning; the protocol records it at 0.6"),
    ({"units_per_group": [4, 7]}, "6 units in the deep layer group; the protocol records 7 there (4 early, 7 deep)"),
    ({"n_stimuli": 6}, "4 stimuli per session; the protocol shows 6 probe stimuli"),
    ({"repeats": 5}, "3 presentations of each stimulus; the protocol averages 5"),
    ({"layers": ("early", "middle"), "units_per_group": [3, 3]}, "0 units in the middle layer group"),
])
def test_match_mismatches_are_one_line(changes: dict, message: str) -> None:
    with pytest.raises(AdvisorError) as info:
        _match(_recording(), **changes)
    assert message in str(info.value), str(info.value)


# ------------------------------------------------------------------------------------------------- calibration
def test_temperature_recovers_an_overconfident_classifier() -> None:
    rng = np.random.default_rng(0)
    true = rng.normal(0, 1.5, (4000, 4))
    p = np.exp(true) / np.exp(true).sum(axis=1, keepdims=True)
    y = np.array([rng.choice(4, p=row) for row in p])
    assert fit_temperature(true * 3.0, y) == pytest.approx(3.0, rel=0.1)
    assert fit_temperature(true, y) == pytest.approx(1.0, rel=0.1)


def test_ece_is_small_for_calibrated_and_large_for_overconfident_probabilities() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 1.5, (5000, 3))
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = np.array([rng.choice(3, p=row) for row in p])
    ece, bins = expected_calibration_error(p, y)
    assert ece < 0.03
    assert sum(b["count"] for b in bins) == 5000
    sharp = np.exp(4 * logits) / np.exp(4 * logits).sum(axis=1, keepdims=True)
    assert expected_calibration_error(sharp, y)[0] > 0.1


def test_typicality_p_values_are_valid_and_flag_outliers() -> None:
    rng = np.random.default_rng(2)
    ref, null = rng.normal(size=(200, 3, 5)), rng.normal(size=(200, 3, 5))
    model = Typicality.fit(ref, null, [f"s{i}" for i in range(5)], ["a", "b", "c"])
    assert false_alarm_rate(model) <= 0.08
    fresh = model.p_values(rng.normal(size=(400, 3, 5)))
    assert np.mean(fresh <= 0.05) <= 0.09
    far = rng.normal(size=(1, 3, 5))
    far[0, 1, 2] = 40.0  # one statistic far out: the most-extreme score catches it (Bonferroni: twice 1/201)
    assert model.p_values(far)[0] == pytest.approx(2 / 201)
    shifted = rng.normal(size=(1, 3, 5)) + 2.5  # every statistic a little out: the distance catches it
    assert model.p_values(shifted)[0] <= 0.05
    top = model.furthest(far)[0]
    assert top["statistic"] == "b: s2" and top["z"] > 4 and top["beyond"] == 0.0  # signed log: log1p(40)


# ------------------------------------------------------------------------------------------------- pilot
def _pilot(noise_rel: float, gain_sd: float, n_units: int = 300, n_stimuli: int = 30, n_rep: int = 10,
           seed: int = 3) -> LabRecording:
    """Responses ``gain_u · s_up + noise`` with each unit's signal of SD 1 over stimuli (ddof 0, as the simulation
    measures spread) and noise SD ``noise_rel`` times the unit's gained spread."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=(n_units, n_stimuli))
    signal = (signal - signal.mean(1, keepdims=True)) / signal.std(1, keepdims=True)
    gain = np.exp(gain_sd * rng.normal(size=(n_units, 1)))
    responses = (gain * signal)[..., None] + noise_rel * gain[..., None] * rng.normal(size=(n_units, n_stimuli, n_rep))
    return LabRecording(responses[None], np.array(["early"] * n_units), np.array([0.0]), "pilot")


def test_pilot_recovers_noise_and_unit_gains() -> None:
    from advisor.science.pilot import estimate_pilot

    est = estimate_pilot(_pilot(0.8, 0.6), "gaussian", simulated_var=0.0)
    assert est.single_trial_noise == pytest.approx(0.8, rel=0.05)
    assert est.unit_gain_sd == pytest.approx(0.6, abs=0.06)
    assert est.n_units == 300 and est.n_presentations == 10
    # the simulated units' own spread is not counted as gain
    assert estimate_pilot(_pilot(0.8, 0.6), "gaussian", simulated_var=0.6**2).unit_gain_sd < 0.12


def test_pilot_counts_spikes_for_poisson() -> None:
    from advisor.science.pilot import estimate_pilot

    rng = np.random.default_rng(4)
    rates = rng.gamma(2.0, 1.0, size=(50, 8, 1))
    counts = rng.poisson(np.broadcast_to(rates, (50, 8, 20)))
    rec = LabRecording(counts[None].astype(float), np.array(["deep"] * 50), np.array([0.0]), "ephys pilot")
    assert estimate_pilot(rec, "poisson", 0.0).single_trial_noise == pytest.approx(counts.mean())


@pytest.mark.parametrize(("shape", "message"), [
    ((1, 20, 5, 1), "1 presentation of each stimulus; a pilot needs at least 2"),
    ((1, 20, 1, 4), "1 stimulus; a pilot needs at least 2"),
])
def test_pilot_needs_repeats_and_stimuli(shape: tuple, message: str) -> None:
    from advisor.science.pilot import estimate_pilot

    rec = LabRecording(np.random.default_rng(0).normal(size=shape), np.array(["early"] * shape[1]),
                       np.array([0.0]), "p")
    with pytest.raises(AdvisorError, match=message):
        estimate_pilot(rec, "gaussian", 0.0)

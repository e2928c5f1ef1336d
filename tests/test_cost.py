"""Recording modalities: conformance of every built-in, the repeats and cost arithmetic, limits, search spaces,
and one-line errors for bad modality files."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from advisor.errors import AdvisorError
from advisor.science.cost import (
    COST_FORMULA,
    DEFAULT_MODALITY,
    Modality,
    Price,
    SearchSpace,
    list_modalities,
    load_modality,
    modality_dir,
)
from advisor.science.protocol import DEFAULT_GAIN_SD, GROUPS, NOISE_MODELS, OBSERVABLES, RecordingProtocol

REQUIRED = ("ephys", "generic", "paired_patch", "spine_imaging", "two_photon")
NUMBERS = ("single_trial_noise", "max_repeats", "max_units", "max_sessions", "session_overhead", "per_unit_cost",
           "per_unit_repeat_cost", "per_animal_cost")
GAINS = ("gains.animal", "gains.area", "gains.unit", "gains.baseline")

VALID = """\
name = "lab rig"
description = "our own rig"
observables = ["activations", "activity_change"]
noise_model = "gaussian"
single_trial_noise = 0.8
max_repeats = 16
max_units = 64
max_sessions = 5
session_overhead = 2
per_unit_cost = 0.5
per_unit_repeat_cost = 0.25
"""


def _write(tmp_path: Path, text: str, name: str = "rig.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _modality(**changes: object) -> Modality:
    fields: dict[str, object] = {
        "key": "rig", "name": "lab rig", "description": "our own rig", "observables": ("activations",),
        "noise_model": "gaussian", "single_trial_noise": 0.8, "max_repeats": 16, "max_units": 64,
        "max_sessions": 5, "session_overhead": 2.0, "per_unit_cost": 0.5, "per_unit_repeat_cost": 0.25,
    }
    return Modality(**{**fields, **changes})  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------- built-in conformance
def test_the_built_in_modalities_are_the_documented_ones() -> None:
    names = list_modalities()
    assert names == sorted(names)
    assert set(REQUIRED) <= set(names)
    assert DEFAULT_MODALITY in names
    assert load_modality(DEFAULT_MODALITY).observables == OBSERVABLES


def test_the_built_ins_measure_what_their_technique_can() -> None:
    expected = {
        "ephys": (("activations",), "poisson"),
        "two_photon": (("activations",), "gaussian"),
        "spine_imaging": (("weights",), "gaussian"),
        "paired_patch": (("activity_change",), "gaussian"),
        "generic": (OBSERVABLES, "gaussian"),
    }
    for key, (observables, noise_model) in expected.items():
        m = load_modality(key)
        assert (m.observables, m.noise_model) == (observables, noise_model), key
    assert load_modality("two_photon").max_units > load_modality("ephys").max_units
    assert load_modality("paired_patch").sampling == ("acute",)
    assert load_modality("two_photon").layers == ("early", "middle")


def test_all_built_ins_price_in_one_unit() -> None:
    assert {load_modality(k).cost_unit for k in list_modalities()} == {"hours"}


@pytest.mark.parametrize("key", list_modalities())
class TestConformance:
    def test_loads_with_valid_fields(self, key: str) -> None:
        m = load_modality(key)
        assert m.key == key
        assert Path(m.source) == modality_dir() / f"{key}.toml"
        assert m.name and m.description and "\n" not in m.description
        assert set(m.observables) <= set(OBSERVABLES)
        assert set(m.layers) <= set(GROUPS)
        for observable in m.observables:
            assert observable in NOISE_MODELS.get(m.noise_model).observables
        assert load_modality(m.source) == m  # by path, too

    def test_every_number_and_access_choice_has_an_assumption(self, key: str) -> None:
        m = load_modality(key)
        assert set(m.assumptions) == {*NUMBERS, "layers", "sampling", *GAINS}
        assert all(text.strip().endswith(".") for text in m.assumptions.values())

    def test_gains_are_on_and_reach_a_protocol(self, key: str) -> None:
        m = load_modality(key)
        assert len(m.gain_sd) == 3 and all(0 < sd <= 1 for sd in m.gain_sd)  # no rig knows absolute gains
        assert m.protocol_kwargs() == {"gain_sd": m.gain_sd, "baseline": m.baseline}
        protocol = RecordingProtocol(observable=m.observables[0], noise_model=m.noise_model,
                                     noise=m.single_trial_noise, **m.protocol_kwargs())
        assert (protocol.gain_sd, protocol.baseline) == (m.gain_sd, m.baseline)

    def test_noise_for_and_repeats_for_are_inverse(self, key: str) -> None:
        m = load_modality(key)
        levels = [m.noise_for(k) for k in range(1, m.max_repeats + 1)]
        assert [m.repeats_for(level) for level in levels] == list(range(1, m.max_repeats + 1))
        better = (lambda a, b: a < b) if m.noise_model == "gaussian" else (lambda a, b: a > b)
        assert all(better(b, a) for a, b in itertools.pairwise(levels))
        assert m.best_noise == levels[-1]

    def test_cost_is_positive_and_strictly_increasing(self, key: str) -> None:
        m = load_modality(key)
        units = sorted({1, 2, m.max_units // 2 or 1, m.max_units})
        sessions = sorted({1, 2, m.max_sessions})
        repeats = sorted({1, 2, m.max_repeats})
        for u in units:
            for s in sessions:
                for r in repeats:
                    c = m.cost(u, s, r)
                    assert c > 0 and math.isfinite(c)
                    assert m.cost(u + 1, s, r) > c
                    assert m.cost(u, s + 1, r) > c
                    assert m.cost(u, s, r + 1) > c

    def test_protocols_at_its_limits_validate_and_price(self, key: str) -> None:
        m = load_modality(key)
        for observable in m.observables:
            for chronic in (mode == "chronic" for mode in m.sampling):
                for repeats in (1, m.max_repeats):
                    protocol = RecordingProtocol(
                        observable=observable, n_units=m.max_units, layers=m.layers, n_sessions=m.max_sessions,
                        noise_model=m.noise_model, noise=m.noise_for(repeats), chronic=chronic,
                    )
                    price = m.price(protocol)
                    assert price == Price(repeats, m.cost(m.max_units, m.max_sessions, repeats), m.cost_unit)

    def test_search_space_defaults_to_its_limits(self, key: str) -> None:
        m = load_modality(key)
        assert m.search_space() == SearchSpace(
            modality=key, observables=m.observables, layers=m.layers, units=(1, m.max_units),
            sessions=(1, m.max_sessions), repeats=(1, m.max_repeats), noise_model=m.noise_model,
            noise=(m.single_trial_noise, m.best_noise), sampling=m.sampling,
        )

    def test_describe_is_one_line_and_to_dict_is_json(self, key: str) -> None:
        m = load_modality(key)
        line = m.describe()
        assert line.startswith(f"{key}: {m.name}; measures ") and "\n" not in line
        data = json.loads(json.dumps(m.to_dict()))
        assert data["key"] == key and data["cost_formula"] == COST_FORMULA
        assert data["observables"] == list(m.observables)
        assert data["assumptions"] == dict(m.assumptions)
        assert data["best_noise"] == pytest.approx(m.best_noise)
        assert (data["gain_sd"], data["baseline"]) == (list(m.gain_sd), m.baseline)
        assert line.endswith(f"unknown gains (log SD) animal {m.gain_sd[0]:g}, area {m.gain_sd[1]:g}, "
                             f"unit {m.gain_sd[2]:g}, baseline {m.baseline:g}")


def test_the_built_in_gains() -> None:
    expected = {
        "generic": ((0.5, 0.3, 0.5), 0.0),
        "two_photon": ((0.5, 0.3, 0.6), 0.3),
        "ephys": ((0.3, 0.3, 0.8), 0.5),
        "spine_imaging": ((0.3, 0.3, 0.5), 0.0),
        "paired_patch": ((0.2, 0.2, 0.3), 0.0),
    }
    assert {k: load_modality(k).protocol_kwargs() for k in expected} == {
        k: {"gain_sd": sd, "baseline": b} for k, (sd, b) in expected.items()}
    generic = load_modality("generic")
    default = RecordingProtocol()
    assert generic.gain_sd == default.gain_sd == DEFAULT_GAIN_SD and generic.baseline == default.baseline


# ---------------------------------------------------------------------------------------- cost arithmetic
def test_cost_of_a_hand_computed_case() -> None:
    m = _modality()
    # 3 sessions x (2 overhead + 4 units x (0.5 set-up + 2 repeats x 0.25 acquisition)) = 3 x 6
    assert m.cost(4, 3, 2) == pytest.approx(18.0, abs=1e-12)
    assert m.cost(1, 1, 1) == pytest.approx(2.75, abs=1e-12)
    # ephys, 200 units, 10 sessions, 10 repeats: 10 x (3 + 200 x (0.01 + 10 x 0.0001)) = 52 hours
    assert load_modality("ephys").cost(200, 10, 10) == pytest.approx(52.0, rel=1e-12)


def test_repeats_multiply_acquisition_but_not_the_session_overhead() -> None:
    m = _modality(per_unit_cost=0.0)
    extra = m.cost(4, 3, 5) - m.cost(4, 3, 1)
    assert extra == pytest.approx(3 * 4 * 4 * 0.25)


@pytest.mark.parametrize(("args", "message"), [
    ((0, 1, 1), "n_units must be a positive integer; got 0"),
    ((1, 2.0, 1), "n_sessions must be a positive integer; got 2.0"),
    ((1, 1, True), "repeats must be a positive integer; got True"),
])
def test_cost_rejects_non_positive_integers(args: tuple, message: str) -> None:
    with pytest.raises(AdvisorError) as e:
        _modality().cost(*args)
    assert str(e.value) == message


# ----------------------------------------------------------------------------------------- repeats math
def test_gaussian_averaging_divides_the_sd_by_sqrt_repeats() -> None:
    m = _modality()  # single trial 0.8, max 16 repeats
    assert m.noise_for(1) == pytest.approx(0.8)
    assert m.noise_for(4) == pytest.approx(0.4)
    assert m.noise_for(16) == pytest.approx(0.2)
    assert m.best_noise == pytest.approx(0.2)
    assert m.repeats_for(0.4) == 4
    assert m.repeats_for(0.3) == 8  # (0.8 / 0.3)^2 = 7.1 -> 8
    assert m.repeats_for(0.8) == 1
    assert m.repeats_for(5.0) == 1  # noisier than one presentation: one suffices
    assert m.repeats_for(0.2) == 16


def test_poisson_averaging_multiplies_the_count() -> None:
    m = load_modality("ephys")  # 2 spikes per presentation, max 50
    assert (m.noise_for(1), m.noise_for(5), m.best_noise) == (2.0, 10.0, 100.0)
    assert m.repeats_for(10.0) == 5
    assert m.repeats_for(10.5) == 6
    assert m.repeats_for(0.5) == 1  # fewer spikes than one presentation gives
    assert m.repeats_for(100.0) == 50


def test_an_unreachable_level_names_the_best_reachable_one() -> None:
    with pytest.raises(AdvisorError) as e:
        load_modality("ephys").repeats_for(150.0)
    assert str(e.value) == ("poisson noise 150 (mean spikes per stimulus) is out of reach for the ephys modality: "
                            "50 repeats (max_repeats) reach 100 at best")
    with pytest.raises(AdvisorError) as e:
        _modality().repeats_for(0.0)
    assert str(e.value) == ("gaussian noise 0 (noise SD / spread) is out of reach for the rig modality: "
                            "16 repeats (max_repeats) reach 0.2 at best")


@pytest.mark.parametrize(("noise", "message"), [
    (-0.1, "noise for the gaussian model (noise SD / spread) must be in [0, 10]; got -0.1"),
    (math.nan, "noise for the gaussian model (noise SD / spread) must be in [0, 10]; got nan"),
    (True, "noise for the gaussian model (noise SD / spread) must be in [0, 10]; got True"),
])
def test_repeats_for_rejects_levels_outside_the_model(noise: float, message: str) -> None:
    with pytest.raises(AdvisorError) as e:
        _modality().repeats_for(noise)
    assert str(e.value) == message


@pytest.mark.parametrize("repeats", [0, 17, 2.0])
def test_noise_for_rejects_repeats_outside_the_limit(repeats: int) -> None:
    with pytest.raises(AdvisorError) as e:
        _modality().noise_for(repeats)
    assert str(e.value) == f"repeats must be an integer in [1, 16] for the rig modality; got {repeats!r}"


@settings(max_examples=80, deadline=None)
@given(
    model=st.sampled_from(["gaussian", "poisson"]),
    single=st.floats(0.05, 5.0),
    max_repeats=st.integers(1, 400),
    costs=st.tuples(st.floats(0, 10), st.floats(0, 1), st.floats(1e-4, 1)),
    units=st.integers(1, 10_000),
    sessions=st.integers(1, 100),
    repeats=st.integers(1, 400),
)
def test_laws_hold_for_any_modality(model: str, single: float, max_repeats: int, costs: tuple[float, float, float],
                                    units: int, sessions: int, repeats: int) -> None:
    m = _modality(noise_model=model, single_trial_noise=single, max_repeats=max_repeats, session_overhead=costs[0],
                  per_unit_cost=costs[1], per_unit_repeat_cost=costs[2])
    k = min(repeats, max_repeats)
    assert m.repeats_for(m.noise_for(k)) == k
    c = m.cost(units, sessions, repeats)
    assert 0 < c < m.cost(units + 1, sessions, repeats)
    assert c < m.cost(units, sessions + 1, repeats)
    assert c < m.cost(units, sessions, repeats + 1)


# ------------------------------------------------------------------------------------------------- limits
@pytest.mark.parametrize(("args", "kwargs", "message"), [
    (("weights", 10, 2, GROUPS), {},
     "the ephys modality (extracellular electrophysiology (Neuropixels-like)) cannot measure weights; "
     "it measures activations"),
    (("activations", 1001, 2, GROUPS), {},
     "n_units must be an integer in [1, 1000] for the ephys modality (max_units); got 1001"),
    (("activations", 10, 21, GROUPS), {},
     "n_sessions must be an integer in [1, 20] for the ephys modality (max_sessions); got 21"),
    (("activations", 10, 0, GROUPS), {},
     "n_sessions must be an integer in [1, 20] for the ephys modality (max_sessions); got 0"),
])
def test_check_names_the_limit(args: tuple, kwargs: dict, message: str) -> None:
    with pytest.raises(AdvisorError) as e:
        load_modality("ephys").check(*args, **kwargs)
    assert str(e.value) == message


def test_check_names_unreachable_layers_and_sampling() -> None:
    with pytest.raises(AdvisorError) as e:
        load_modality("two_photon").check("activations", 10, 2, ("middle", "deep"))
    assert str(e.value) == ("layers must be a non-empty subset of early, middle for the two_photon modality; "
                            "got [middle, deep]")
    with pytest.raises(AdvisorError) as e:
        load_modality("paired_patch").check("activity_change", 10, 2, ("deep",), chronic=True)
    assert str(e.value) == "chronic sampling is not possible with the paired_patch modality; it allows acute"
    load_modality("paired_patch").check("activity_change", 10, 2, ("deep",), chronic=False)
    load_modality("two_photon").check("activations", 2000, 30, ["early"])


def test_price_checks_the_noise_model_and_the_level() -> None:
    m = load_modality("two_photon")
    protocol = RecordingProtocol(observable="activations", n_units=100, layers=("early",), n_sessions=5, noise=0.5)
    assert m.price(protocol) == Price(4, 5 * (1.5 + 100 * (0.002 + 4 * 0.0002)), "hours")
    with pytest.raises(AdvisorError) as e:
        m.price(RecordingProtocol(observable="activations", n_units=100, layers=("early",), noise_model="poisson",
                                  noise=5.0))
    assert str(e.value) == "noise_model must be 'gaussian' for the two_photon modality; got 'poisson'"
    with pytest.raises(AdvisorError, match=r"^gaussian noise 0 \(noise SD / spread\) is out of reach"):
        m.price(RecordingProtocol(observable="activations", n_units=100, layers=("early",), noise=0.0))


# ------------------------------------------------------------------------------------------- search space
def test_search_space_intersects_user_bounds_with_the_limits() -> None:
    m = load_modality("two_photon")
    space = m.search_space(max_units=500, max_sessions=100, observable="activations")
    assert (space.units, space.sessions, space.repeats) == ((1, 500), (1, 30), (1, 30))
    assert space.observables == ("activations",) and space.layers == ("early", "middle")
    assert space.noise == pytest.approx((1.0, 1 / math.sqrt(30)))
    assert load_modality("generic").search_space(observable="weights").observables == ("weights",)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"observable": "weights"},
     "the ephys modality (extracellular electrophysiology (Neuropixels-like)) cannot measure weights; "
     "it measures activations"),
    ({"observable": "spikes"}, "observable must be one of weights, activations, activity_change; got 'spikes'"),
    ({"max_units": 0}, "max_units must be a positive integer; got 0"),
    ({"max_sessions": 2.5}, "max_sessions must be a positive integer; got 2.5"),
])
def test_search_space_rejects_what_the_modality_cannot_do(kwargs: dict, message: str) -> None:
    with pytest.raises(AdvisorError) as e:
        load_modality("ephys").search_space(**kwargs)
    assert str(e.value) == message


# ---------------------------------------------------------------------------------------- user modalities
def test_a_user_modality_loads_from_a_path(tmp_path: Path) -> None:
    path = _write(tmp_path, VALID, "lab_rig.toml")
    m = load_modality(str(path))
    assert (m.key, m.source, m.name) == ("lab_rig", str(path), "lab rig")
    assert (m.layers, m.sampling, m.cost_unit, dict(m.assumptions)) == (GROUPS, ("chronic", "acute"), "hours", {})
    assert m.protocol_kwargs() == {"gain_sd": DEFAULT_GAIN_SD, "baseline": 0.0}  # no [gains]: the library's
    assert isinstance(m.session_overhead, int) and m.cost(4, 3, 2) == pytest.approx(18.0)
    assert load_modality(path) == m  # a Path works too
    assert m == _modality(key="lab_rig", observables=("activations", "activity_change"))


def test_a_user_modality_with_every_optional_key(tmp_path: Path) -> None:
    text = VALID + ('layers = ["deep"]\nsampling = ["acute"]\ncost_unit = "EUR"\n'
                    '[gains]\nanimal = 0.4\narea = 0\nunit = 1.5\nbaseline = 0.25\n'
                    '[assumptions]\nmax_units = "Our rig holds 64 channels."\ngains.unit = "Sparse expression."\n')
    m = load_modality(_write(tmp_path, text))
    assert (m.layers, m.sampling, m.cost_unit) == (("deep",), ("acute",), "EUR")
    assert dict(m.assumptions) == {"max_units": "Our rig holds 64 channels.", "gains.unit": "Sparse expression."}
    assert (m.gain_sd, m.baseline) == ((0.4, 0, 1.5), 0.25)
    assert m.protocol_kwargs() == {"gain_sd": (0.4, 0.0, 1.5), "baseline": 0.25}
    assert load_modality(_write(tmp_path, text.replace("baseline = 0.25\n", ""), "b.toml")).baseline == 0.0
    with pytest.raises(TypeError):
        m.assumptions["max_units"] = "changed"  # type: ignore[index]


def test_unknown_names_and_missing_files_name_the_built_ins(tmp_path: Path) -> None:
    known = f"built-in modalities: {', '.join(list_modalities())}; or give the path of a .toml file"
    with pytest.raises(AdvisorError) as e:
        load_modality("ephis")
    assert str(e.value) == f"unknown modality 'ephis' (did you mean 'ephys'?); {known}"
    missing = tmp_path / "nowhere.toml"
    with pytest.raises(AdvisorError) as e:
        load_modality(missing)
    assert str(e.value) == f"{missing}: modality file does not exist; {known}"
    folder = tmp_path / "folder.toml"
    folder.mkdir()
    with pytest.raises(AdvisorError) as e:
        load_modality(folder)
    assert str(e.value) == f"{folder}: is not a file; {known}"


def _drop(key: str) -> str:
    return "".join(line + "\n" for line in VALID.splitlines() if not line.startswith(f"{key} ="))


BAD_FILES = [
    # (id, file text, the message after "<file>: ")
    ("misspelt key", VALID + "max_unit = 5\n",
     "unknown key 'max_unit' (did you mean 'max_units'?); allowed: name, description, observables, layers, "
     "sampling, noise_model, single_trial_noise, max_repeats, max_units, max_sessions, session_overhead, "
     "per_unit_cost, per_unit_repeat_cost, cost_unit, per_animal_cost, gains, assumptions"),
    ("unknown key", VALID + "colour = 1\n", "unknown key 'colour'; allowed: name, description, observables, layers, "
     "sampling, noise_model, single_trial_noise, max_repeats, max_units, max_sessions, session_overhead, "
     "per_unit_cost, per_unit_repeat_cost, cost_unit, per_animal_cost, gains, assumptions"),
    ("misspelt assumption", VALID + '[assumptions]\nmax_unit = "x."\n',
     "assumptions.max_unit: no such field to document (did you mean 'max_units'?); allowed: single_trial_noise, "
     "max_repeats, max_units, max_sessions, session_overhead, per_unit_cost, per_unit_repeat_cost, "
     "per_animal_cost, layers, sampling, gains.animal, gains.area, gains.unit, gains.baseline"),
    ("misspelt gains assumption", VALID + '[assumptions]\ngains.units = "x."\n',
     "assumptions.gains.units: no such field to document (did you mean 'gains.unit'?); allowed: single_trial_noise, "
     "max_repeats, max_units, max_sessions, session_overhead, per_unit_cost, per_unit_repeat_cost, "
     "per_animal_cost, layers, sampling, gains.animal, gains.area, gains.unit, gains.baseline"),
    ("negative gain spread", VALID + "[gains]\nanimal = 0.5\narea = -0.3\nunit = 0.5\n",
     "gains.area must be a number in [0, 3] (SD of the log gain); got -0.3"),
    ("huge gain spread", VALID + "[gains]\nanimal = 0.5\narea = 0.3\nunit = 5\n",
     "gains.unit must be a number in [0, 3] (SD of the log gain); got 5"),
    ("negative baseline", VALID + "[gains]\nanimal = 0.5\narea = 0.3\nunit = 0.5\nbaseline = -1.0\n",
     "gains.baseline must be a number in [0, 10]; got -1.0"),
    ("unknown gains key", VALID + "[gains]\nanimal = 0.5\narea = 0.3\ncell = 0.5\n",
     "unknown key 'gains.cell'; allowed in [gains]: animal, area, unit, baseline"),
    ("misspelt gains key", VALID + "[gains]\nanimal = 0.5\naera = 0.3\nunit = 0.5\n",
     "unknown key 'gains.aera' (did you mean 'gains.area'?); allowed in [gains]: animal, area, unit, baseline"),
    ("string gain spread", VALID + '[gains]\nanimal = "large"\narea = 0.3\nunit = 0.5\n',
     "gains.animal must be a number; got 'large' (a string)"),
    ("boolean baseline", VALID + "[gains]\nanimal = 0.5\narea = 0.3\nunit = 0.5\nbaseline = true\n",
     "gains.baseline must be a number; got True (a boolean)"),
    ("missing gain spread", VALID + "[gains]\nanimal = 0.5\n", "missing required keys gains.area, gains.unit"),
    ("gains not a table", VALID + "gains = 0.5\n",
     "gains must be a table of animal, area, unit (and baseline) = number (a [gains] section); got 0.5 (a float)"),
    ("missing key", _drop("max_units"), "missing required key max_units"),
    ("missing keys", _drop("max_units").replace('name = "lab rig"\n', ""), "missing required keys name, max_units"),
    ("string for integer", VALID.replace("max_units = 64", 'max_units = "many"'),
     "max_units must be an integer; got 'many' (a string)"),
    ("float for integer", VALID.replace("max_units = 64", "max_units = 1.5"),
     "max_units must be an integer; got 1.5 (a float)"),
    ("boolean for number", VALID.replace("session_overhead = 2", "session_overhead = true"),
     "session_overhead must be a number; got True (a boolean)"),
    ("string for array", VALID.replace('observables = ["activations", "activity_change"]',
                                       'observables = "activations"'),
     "observables must be an array of strings; got 'activations' (a string)"),
    ("value for table", VALID + 'assumptions = "all made up"\n',
     "assumptions must be a table of field = \"sentence\" (an [assumptions] section); got 'all made up' (a string)"),
    ("negative cost", VALID.replace("per_unit_cost = 0.5", "per_unit_cost = -1"),
     "per_unit_cost must be a finite number >= 0 (hours); got -1"),
    ("infinite cost", VALID.replace("session_overhead = 2", "session_overhead = inf"),
     "session_overhead must be a finite number >= 0 (hours); got inf"),
    ("free repeats", VALID.replace("per_unit_repeat_cost = 0.25", "per_unit_repeat_cost = 0"),
     "per_unit_repeat_cost must be > 0: every presentation takes acquisition time; got 0"),
    ("no units", VALID.replace("max_units = 64", "max_units = 0"), "max_units must be an integer >= 1; got 0"),
    ("unknown observable", VALID.replace('["activations", "activity_change"]', '["spikes"]'),
     "observables must be a non-empty subset of weights, activations, activity_change without repeats; "
     "got [spikes]"),
    ("no observables", VALID.replace('["activations", "activity_change"]', "[]"),
     "observables must be a non-empty subset of weights, activations, activity_change without repeats; got []"),
    ("unknown layer", VALID + 'layers = ["early", "deepest"]\n',
     "layers must be a non-empty subset of early, middle, deep without repeats; got [early, deepest]"),
    ("unknown sampling", VALID + 'sampling = ["sometimes"]\n',
     "sampling must be a non-empty subset of chronic, acute without repeats; got [sometimes]"),
    ("unknown noise model", VALID.replace('noise_model = "gaussian"', 'noise_model = "calcium"'),
     "noise_model must be one of gaussian, poisson; got 'calcium'"),
    ("noiseless", VALID.replace('noise_model = "gaussian"', 'noise_model = "none"'),
     "noise_model must be one of gaussian, poisson; got 'none'"),
    ("poisson for activity changes", VALID.replace('noise_model = "gaussian"', 'noise_model = "poisson"'),
     "noise_model 'poisson' applies to activations only; observables include 'activity_change'"),
    ("zero noise", VALID.replace("single_trial_noise = 0.8", "single_trial_noise = 0"),
     "single_trial_noise must be a number in (0, 10] for the gaussian model (noise SD / spread); got 0"),
    ("too few spikes", VALID.replace('noise_model = "gaussian"', 'noise_model = "poisson"')
     .replace('"activations", "activity_change"', '"activations"').replace("0.8", "0.001"),
     "single_trial_noise must be a number in [0.01, 1e+06] for the poisson model (mean spikes per stimulus); "
     "got 0.001"),
    ("too many spikes", VALID.replace('noise_model = "gaussian"', 'noise_model = "poisson"')
     .replace('"activations", "activity_change"', '"activations"').replace("max_repeats = 16", "max_repeats = 2000000"),
     "max_repeats = 2000000 takes the poisson level to 1.6e+06, outside [0.01, 1e+06] (mean spikes per stimulus); "
     "lower max_repeats or single_trial_noise"),
    ("multi-line description", VALID.replace('"our own rig"', '"""our\nown rig"""'),
     "description must be a string on one line; got 'our\\nown rig'"),
    ("empty name", VALID.replace('"lab rig"', '""'), "name must be a non-empty string on one line; got ''"),
    ("empty assumption", VALID + '[assumptions]\nmax_units = ""\n',
     "assumptions.max_units must be one non-empty line of text; got ''"),
]


@pytest.mark.parametrize(("text", "message"), [(t, m) for _, t, m in BAD_FILES], ids=[i for i, _, _ in BAD_FILES])
def test_bad_files_give_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(AdvisorError) as e:
        load_modality(path)
    assert str(e.value) == f"{path}: {message}"


def test_malformed_toml_gives_the_parser_message_on_one_line(tmp_path: Path) -> None:
    path = _write(tmp_path, VALID + "max_sessions = \n")
    with pytest.raises(AdvisorError) as e:
        load_modality(path)
    assert str(e.value) == f"{path}: malformed TOML: Invalid value (at line 12, column 16)"


def test_a_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    path = tmp_path / "latin.toml"
    path.write_bytes(VALID.replace("our own rig", "caf\u00e9").encode("latin-1"))
    with pytest.raises(AdvisorError) as e:
        load_modality(path)
    offset = len('name = "lab rig"\ndescription = "caf')  # the é, one latin-1 byte
    assert str(e.value) == f"{path}: not UTF-8 text: invalid continuation byte at byte {offset}"


def test_modalities_built_in_code_validate_too() -> None:
    with pytest.raises(AdvisorError) as e:
        _modality(observables="activations")
    assert str(e.value) == ("observables must be a non-empty subset of weights, activations, activity_change "
                            "without repeats; got 'activations'")
    assert _modality(layers=["deep", "early"]).layers == ("deep", "early")
    assert _modality(gain_sd=[0.1, 0.2, 0.3]).gain_sd == (0.1, 0.2, 0.3)
    with pytest.raises(AdvisorError) as e:
        _modality(gain_sd=(0.1, 0.2))
    assert str(e.value) == "gains must be three numbers (SDs of the log gain per animal, area, unit); got (0.1, 0.2)"

"""Preset loading: every built-in preset, the TOML <-> config round trip, one-line errors for bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulator.config import SimulationConfig
from simulator.errors import ConfigError
from simulator.networks import ARCHITECTURES, NONLINEARITIES, Architecture
from simulator.optim import OPTIMIZERS
from simulator.presets import dump_preset, list_presets, load_preset, preset_dir
from simulator.rules import RULES

BUILT_IN = ("architectures", "families", "paper", "quick", "standard", "tiny")

VALID = """\
name = "small"
description = "a valid preset the error cases start from"
seed = 3

[population]
rules = ["sgdm", "fa"]
architectures = ["mlp3_relu"]
tasks = ["digits"]
curricula = ["iid"]
n_networks_per_rule = 2
batch_sizes = [16]
init_scale = [0.7, 1.4]

[population.lr_ranges]
sgdm = [0.001, 0.01]

[training]
n_steps = 20
max_ensemble = 8

[recording]
n_checkpoints = 5
n_probes = 4
units_per_group = 32
synapses_per_group = 64
"""


def _write(tmp_path: Path, text: str, name: str = "bad.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------------------- built-ins
def test_list_presets_names_the_built_in_files() -> None:
    names = list_presets()
    assert names == sorted(names)
    assert set(BUILT_IN) <= set(names)
    assert all((preset_dir() / f"{n}.toml").is_file() for n in names)


def test_list_presets_ignores_subfolders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "b.toml").write_text("")
    (tmp_path / "a.toml").write_text("")
    (tmp_path / "modalities").mkdir()
    (tmp_path / "modalities" / "ephys.toml").write_text("")
    (tmp_path / "notes.txt").write_text("")
    monkeypatch.setattr("simulator.presets.preset_dir", lambda: tmp_path)
    assert list_presets() == ["a", "b"]


@pytest.mark.parametrize("name", BUILT_IN)
def test_every_built_in_preset_loads(name: str) -> None:
    config = load_preset(name)
    assert isinstance(config, SimulationConfig)
    assert config.name == name
    assert config.description and "\n" not in config.description
    assert config.cells()
    for field in ("rules", "architectures", "tasks", "curricula", "batch_sizes", "init_scale"):
        assert isinstance(getattr(config, field), tuple), field


def test_built_in_presets_have_the_documented_populations() -> None:
    """The populations (rules x architectures x tasks x curricula, networks) that README and docs promise."""
    quick = load_preset("quick")
    assert quick.rules == ("sgdm", "adam", "fa", "ia")
    # two architectures per family and per nonlinearity: every held-out architecture has a relative of each kind
    assert quick.architectures == ("mlp3_relu", "mlp3_tanh", "conv2_relu", "conv2_tanh")
    assert quick.tasks == ("digits", "gaussian_mixture")
    assert quick.n_networks == 256
    # n_steps, checkpoints, probes and recorded units are tuned in the files; only the populations are pinned.

    families = load_preset("families")
    assert set(families.rules) == set(RULES) and len(families.rules) == 11
    assert families.architectures == ("mlp3_relu", "mlp4_tanh", "conv2_relu")
    assert families.n_networks_per_rule == 32

    paper = load_preset("paper")
    assert paper.rules == quick.rules
    assert paper.n_networks == 1056
    assert set(paper.architectures) == set(ARCHITECTURES) - {"mlp2_relu", "conv2_tanh"}
    assert paper.curricula == ("iid", "class_incremental", "easy_to_hard")
    assert paper.batch_sizes == (32, 64, 128)

    tiny = load_preset("tiny")
    assert tiny.rules == ("sgdm", "fa") and tiny.n_networks == 4
    assert (tiny.n_steps, tiny.n_checkpoints, tiny.n_probes) == (20, 5, 4)
    assert (tiny.units_per_group, tiny.synapses_per_group, tiny.batch_sizes) == (32, 64, (16,))


def test_a_preset_loads_by_path_and_the_name_defaults_to_the_stem(tmp_path: Path) -> None:
    path = _write(tmp_path, VALID.replace('name = "small"\n', ""), "my_population.toml")
    config = load_preset(str(path))
    assert config.name == "my_population"
    assert config.seed == 3
    assert config.lr_ranges == (("sgdm", 0.001, 0.01),)
    assert load_preset(path) == config  # a Path works too


def test_a_name_given_in_the_file_wins_over_the_stem(tmp_path: Path) -> None:
    assert load_preset(_write(tmp_path, VALID, "other.toml")).name == "small"


def test_integers_are_accepted_where_floats_are_expected(tmp_path: Path) -> None:
    config = load_preset(_write(tmp_path, VALID.replace("[0.7, 1.4]", "[1, 2]"), "ints.toml"))
    assert config.init_scale == (1.0, 2.0)
    assert all(isinstance(v, float) for v in config.init_scale)


# ----------------------------------------------------------------------------------------------- round trip
@pytest.mark.parametrize("name", BUILT_IN)
def test_dump_then_load_gives_the_same_config(name: str, tmp_path: Path) -> None:
    config = load_preset(name)
    again = load_preset(_write(tmp_path, dump_preset(config), "copy.toml"))
    assert again == config
    assert again.content_hash() == config.content_hash()
    assert (again.name, again.description) == (config.name, config.description)


def test_round_trip_keeps_lr_ranges_and_awkward_text(tmp_path: Path) -> None:
    config = load_preset(_write(tmp_path, VALID, "small.toml"))
    description = 'quotes " and \\ backslash, tab\tnewline\n, DEL \x7f, NUL \x00, ünïcødé ✓ 🧠'
    config = SimulationConfig(**{**_fields(config), "description": description, "name": "odd name [x]"})
    again = load_preset(_write(tmp_path, dump_preset(config), "odd.toml"))
    assert again == config
    assert again.description == description
    assert again.lr_ranges == (("sgdm", 0.001, 0.01),)


def _fields(config: SimulationConfig) -> dict:
    return {k: getattr(config, k) for k in config.__dataclass_fields__}


_positive = st.floats(min_value=1e-8, max_value=10.0, allow_nan=False, allow_infinity=False)


@st.composite
def _custom_architecture(draw: st.DrawFn, name: str) -> Architecture:
    """A custom architecture whose every layer has at least 16 units (the most units_per_group drawn below)."""
    widths = st.lists(st.integers(16, 96), min_size=1, max_size=3)
    nonlinearity = draw(st.sampled_from(NONLINEARITIES))
    if draw(st.booleans()):
        return Architecture.custom(name, kind="mlp", hidden=[*draw(widths), 16], nonlinearity=nonlinearity)
    n_conv = draw(st.integers(1, 2))
    return Architecture.custom(
        name, kind="conv", channels=draw(st.lists(st.integers(16, 32), min_size=n_conv, max_size=n_conv)),
        strides=draw(st.lists(st.integers(1, 3), min_size=n_conv, max_size=n_conv)),
        kernel=draw(st.sampled_from((1, 3, 5))), hidden=draw(widths), nonlinearity=nonlinearity,
    )


@st.composite
def _configs(draw: st.DrawFn) -> SimulationConfig:
    rules = draw(st.lists(st.sampled_from(sorted(RULES)), min_size=1, max_size=4, unique=True))
    # learning-rate ranges are per optimizer (the optimizer keys are also rule keys)
    lr_rules = draw(st.lists(st.sampled_from(sorted(OPTIMIZERS)), unique=True))
    lr_ranges: list[tuple[str, float, float]] = []
    for rule in lr_rules:
        lo, hi = sorted((draw(_positive), draw(_positive)))
        lr_ranges.append((rule, lo, hi))
    n_steps = draw(st.integers(1, 5000))
    scale = sorted((draw(st.floats(0.01, 100.0)), draw(st.floats(0.01, 100.0))))
    built_in = draw(st.lists(st.sampled_from(sorted(ARCHITECTURES)), max_size=3, unique=True))
    names = draw(st.lists(st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True)
                          .filter(lambda n: n not in ARCHITECTURES), min_size=0 if built_in else 1, max_size=2,
                          unique=True))
    custom = tuple(draw(_custom_architecture(n)) for n in names)
    return SimulationConfig(
        name=draw(st.text(min_size=1, max_size=20)),
        description=draw(st.text(max_size=40)),
        rules=tuple(rules),
        architectures=tuple(draw(st.permutations([*built_in, *names]))),
        custom_architectures=custom,
        tasks=("digits",),
        curricula=("iid",),
        n_networks_per_rule=draw(st.integers(1, 100_000)),
        n_steps=n_steps,
        n_checkpoints=draw(st.integers(2, min(1000, n_steps + 1))),
        batch_sizes=tuple(draw(st.lists(st.integers(1, 4096), min_size=1, max_size=4))),
        init_scale=(scale[0], scale[1]),
        lr_ranges=tuple(lr_ranges),
        n_probes=draw(st.integers(1, 256)),
        units_per_group=draw(st.integers(1, 16)),
        synapses_per_group=draw(st.integers(1, 65536)),
        max_ensemble=draw(st.integers(1, 65536)),
        seed=draw(st.integers(0, 2**63 - 1)),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(config=_configs())
def test_round_trip_property(config: SimulationConfig, tmp_path: Path) -> None:
    """TOML <-> config, custom architectures included; and config <-> the JSON a bank's manifest stores."""
    again = load_preset(_write(tmp_path, dump_preset(config), "prop.toml"))
    assert again == config
    assert (again.name, again.description) == (config.name, config.description)
    stored = SimulationConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert stored == config and stored.content_hash() == config.content_hash()


# ----------------------------------------------------------------------------------------------- bad files
BAD_FILES = [
    # (id, replace this in VALID, by this, substrings the message must contain)
    ("unknown top-level key", "seed = 3\n", "seed = 3\ncolour = 1\n", ["unknown key 'colour'"]),
    (
        "misspelt nested key",
        "n_networks_per_rule = 2",
        "n_network_per_rule = 2",
        ["unknown key 'population.n_network_per_rule'", "(did you mean 'n_networks_per_rule'?)"],
    ),
    (
        "key in the wrong table",
        "batch_sizes = [16]\n",
        "batch_sizes = [16]\nn_steps = 5\n",
        ["unknown key 'population.n_steps'", "(did you mean 'training.n_steps'?)"],
    ),
    (
        "unknown table",
        "[training]",
        "[optimizer]\nmomentum = 0.9\n\n[training]",
        ["unknown key 'optimizer'"],
    ),
    (
        "string for an integer",
        "n_networks_per_rule = 2",
        'n_networks_per_rule = "2"',
        ["population.n_networks_per_rule must be an integer", "'2' (a string)"],
    ),
    ("boolean for an integer", "seed = 3", "seed = true", ["seed must be an integer", "(a boolean)"]),
    ("float for an integer", "n_steps = 20", "n_steps = 20.5", ["training.n_steps must be an integer"]),
    (
        "string for a list",
        'rules = ["sgdm", "fa"]',
        'rules = "sgdm"',
        ["population.rules must be an array of strings"],
    ),
    (
        "string in an integer list",
        "batch_sizes = [16]",
        'batch_sizes = [16, "32"]',
        ["population.batch_sizes must be an array of integers"],
    ),
    (
        "pair of the wrong length",
        "init_scale = [0.7, 1.4]",
        "init_scale = [0.7]",
        ["population.init_scale must be a pair of numbers"],
    ),
    (
        "negative count",
        "n_networks_per_rule = 2",
        "n_networks_per_rule = -1",
        ["population.n_networks_per_rule must be an integer in [1,", "got -1"],
    ),
    (
        "zero ensemble",
        "max_ensemble = 8",
        "max_ensemble = 0",
        ["training.max_ensemble must be an integer in"],
    ),
    ("unknown rule", '["sgdm", "fa"]', '["sgdm", "backprop2"]', ["population.rules", "'backprop2'", "fa"]),
    (
        "unknown architecture",
        '["mlp3_relu"]',
        '["mlp9_relu"]',
        ["population.architectures", "'mlp9_relu'", "mlp3_relu"],
    ),
    ("rule listed twice", '["sgdm", "fa"]', '["sgdm", "sgdm"]', ["population.rules lists a value twice"]),
    (
        "custom architecture listed but not defined",
        '["mlp3_relu"]',
        '["mlp3_relu", "mlp4_wide"]',
        ["population.architectures", "'mlp4_wide'", "or define a custom architecture"],
    ),
    (
        "custom architecture with a bad width",
        "[training]",
        '[architectures.mlp4_wide]\nkind = "mlp"\nhidden = [64, 0]\nnonlinearity = "relu"\n\n[training]',
        ["architectures.mlp4_wide.hidden entries (dense widths) must be integers in [1, 4096]; got 0"],
    ),
    (
        "unknown optimizer in lr_ranges",
        "sgdm = [0.001, 0.01]",
        "sgdx = [0.001, 0.01]",
        ["population.lr_ranges.sgdx", "unknown optimizer 'sgdx'"],
    ),
    (
        "lr range for a rule that shares its optimizer",
        "sgdm = [0.001, 0.01]",
        "fa = [0.001, 0.01]",
        ["lr_ranges.fa", "ranges are per optimizer", "set sgdm = [low, high] instead"],
    ),
    (
        "bad lr range",
        "sgdm = [0.001, 0.01]",
        "sgdm = [0.01, 0.001]",
        ["population.lr_ranges.sgdm must be a pair"],
    ),
    (
        "too many checkpoints",
        "n_checkpoints = 5",
        "n_checkpoints = 50",
        ["recording.n_checkpoints must be at most n_steps + 1"],
    ),
    (
        "more units than the layers have",
        "units_per_group = 32",
        "units_per_group = 4000",
        ["recording.units_per_group = 4000 exceeds"],
    ),
    ("missing required key", 'tasks = ["digits"]\n', "", ["missing key 'population.tasks'"]),
    ("empty name", 'name = "small"', 'name = ""', ["name must be a non-empty string"]),
    ("malformed TOML", 'rules = ["sgdm", "fa"]', 'rules = ["sgdm", "fa"', ["malformed TOML", "line 7"]),
    ("duplicate key", "seed = 3\n", "seed = 3\nseed = 4\n", ["malformed TOML"]),
]


@pytest.mark.parametrize(
    ("old", "new", "expected"), [c[1:] for c in BAD_FILES], ids=[c[0] for c in BAD_FILES]
)
def test_bad_file_gives_one_line_naming_file_and_key(
    tmp_path: Path, old: str, new: str, expected: list[str]
) -> None:
    assert old in VALID
    path = _write(tmp_path, VALID.replace(old, new, 1))
    with pytest.raises(ConfigError) as info:
        load_preset(str(path))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    for part in expected:
        assert part in message


def test_a_scalar_where_a_table_belongs(tmp_path: Path) -> None:
    text = VALID.replace("[training]\nn_steps = 20\nmax_ensemble = 8\n", "").replace(
        "seed = 3\n", "seed = 3\ntraining = 20\n"
    )
    path = _write(tmp_path, text)
    with pytest.raises(
        ConfigError, match=r"bad\.toml: training must be a table \(a \[training\] section\); got 20"
    ):
        load_preset(str(path))


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError, match=r"absent\.toml: preset file does not exist$"):
        load_preset(str(path))


def test_missing_file_named_like_a_built_in_suggests_it() -> None:
    with pytest.raises(
        ConfigError, match=r"quick\.toml: preset file does not exist \(did you mean the built-in"
    ):
        load_preset("quick.toml")


def test_a_directory_is_not_a_preset(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a file"):
        load_preset(str(tmp_path) + "/")


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('description = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.toml: not UTF-8 text"):
        load_preset(str(path))


@pytest.mark.parametrize(("name", "hint"), [("nope", ""), ("quik", " (did you mean 'quick'?)")])
def test_unknown_preset_name_lists_the_built_in_ones(name: str, hint: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_preset(name)
    message = str(info.value)
    assert message.startswith(f"unknown preset {name!r}{hint}; built-in presets: ")
    assert all(n in message for n in BUILT_IN)
    assert "\n" not in message


def test_a_bare_name_that_is_an_existing_file_loads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(tmp_path, VALID, "custom")
    monkeypatch.chdir(tmp_path)
    assert load_preset("custom").name == "small"

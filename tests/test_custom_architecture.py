"""Custom architectures defined in a preset (``[architectures.NAME]`` tables, issue 12): parsing, one-line errors,
the bank hash, a tiny bank built with a custom MLP and a custom convnet, and the round trips (preset TOML, the
bank's stored config)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from advisor.science.evaluation import heldout_groups
from simulator.bank import load_bank
from simulator.config import SimulationConfig, sample_population
from simulator.ensemble import EnsembleTrainer
from simulator.errors import ConfigError
from simulator.networks import ARCHITECTURES, Architecture, layer_groups
from simulator.objectives import objective_for
from simulator.pipeline import simulate
from simulator.presets import dump_preset, load_preset
from simulator.rules import RULES
from simulator.tasks import TASKS

PRESET = """\
name = "custom"
seed = 1

[population]
rules = ["sgdm", "fa"]
architectures = ["mlp3_relu", "mlp4_wide", "conv_small"]
tasks = ["digits"]
n_networks_per_rule = 3
batch_sizes = [16]

[training]
n_steps = 20

[recording]
n_checkpoints = 5
n_probes = 4
units_per_group = 32
synapses_per_group = 64

[architectures.mlp4_wide]
kind = "mlp"
hidden = [512, 256, 128]
nonlinearity = "relu"

[architectures.conv_small]
kind = "conv"
channels = [8, 16]
strides = [1, 2]
hidden = [64]
nonlinearity = "tanh"
"""

MLP4_WIDE = Architecture.custom("mlp4_wide", kind="mlp", hidden=[512, 256, 128], nonlinearity="relu")
CONV_SMALL = Architecture.custom("conv_small", kind="conv", channels=[8, 16], strides=[1, 2], hidden=[64],
                                 nonlinearity="tanh")
BUILT_IN = ", ".join(sorted(ARCHITECTURES))


def _write(tmp_path: Path, text: str, name: str = "custom.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _tiny_with(*archs: Architecture, **overrides: object) -> SimulationConfig:
    """The ``tiny`` preset over ``archs`` instead of its built-in architecture."""
    fields: dict[str, object] = {"architectures": tuple(a.key for a in archs), "custom_architectures": archs}
    return dataclasses.replace(load_preset("tiny"), **(fields | overrides))  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------- parsing
def test_a_preset_defines_architectures_used_with_built_in_ones(tmp_path: Path) -> None:
    config = load_preset(_write(tmp_path, PRESET))
    assert config.architectures == ("mlp3_relu", "mlp4_wide", "conv_small")
    assert config.custom_architectures == (MLP4_WIDE, CONV_SMALL)
    assert config.architecture("mlp3_relu") is ARCHITECTURES.get("mlp3_relu")
    wide, conv = config.architecture("mlp4_wide"), config.architecture("conv_small")
    assert (wide.family, wide.activation, wide.conv, wide.dense) == ("mlp", "relu", (), (512, 256, 128))
    assert (conv.family, conv.activation, conv.conv, conv.dense) == ("conv", "tanh", ((8, 1), (16, 2)), (64,))
    assert conv.kernel == 3
    # the same layer-group mapping as a built-in: thirds by depth
    shape = TASKS.get("digits").input_shape
    assert wide.units_per_group(shape) == {"early": 512, "middle": 256, "deep": 128}
    assert conv.units_per_group(shape) == {"early": 8 * 64, "middle": 16 * 16, "deep": 64}
    assert layer_groups(conv.n_hidden) == ["early", "middle", "deep"]
    # the population knows each network's family and nonlinearity (the held-out splits need them)
    networks = {s.architecture: s for s in sample_population(config)}
    assert (networks["mlp4_wide"].arch_family, networks["mlp4_wide"].nonlinearity) == ("mlp", "relu")
    assert (networks["conv_small"].arch_family, networks["conv_small"].nonlinearity) == ("conv", "tanh")
    assert (networks["mlp3_relu"].arch_family, networks["mlp3_relu"].nonlinearity) == ("mlp", "relu")


def test_strides_and_kernel_are_optional(tmp_path: Path) -> None:
    text = PRESET.replace("strides = [1, 2]\n", "")
    conv = load_preset(_write(tmp_path, text)).architecture("conv_small")
    assert conv.conv == ((8, 1), (16, 1)) and conv.kernel == 3
    conv = load_preset(_write(tmp_path, text.replace('kind = "conv"\n', 'kind = "conv"\nkernel = 5\n'))).architecture(
        "conv_small")
    assert conv.kernel == 5
    assert [s.kernel for s in conv.layer_specs((1, 8, 8), 10)[:2]] == [5, 5]


def test_the_custom_definition_is_the_constructor_keywords() -> None:
    assert MLP4_WIDE.definition() == {"kind": "mlp", "hidden": [512, 256, 128], "nonlinearity": "relu"}
    assert CONV_SMALL.definition() == {"kind": "conv", "channels": [8, 16], "strides": [1, 2], "kernel": 3,
                                       "hidden": [64], "nonlinearity": "tanh"}
    for arch in (MLP4_WIDE, CONV_SMALL, *(a for _, a in ARCHITECTURES.items())):
        again = Architecture.custom(arch.key, **arch.definition())
        assert (again.family, again.activation, again.conv, again.dense, again.kernel) == (
            arch.family, arch.activation, arch.conv, arch.dense, arch.kernel)


# ----------------------------------------------------------------------------------------------- errors
BAD = [
    # (id, replace this in PRESET, by this, the whole message after "<file>: ")
    ("unknown kind", 'kind = "mlp"', 'kind = "mpl"',
     "architectures.mlp4_wide.kind: unknown architecture kind 'mpl' (did you mean 'mlp'?); allowed: mlp, conv"),
    ("zero width", "hidden = [512, 256, 128]", "hidden = [512, 0, 128]",
     "architectures.mlp4_wide.hidden entries (dense widths) must be integers in [1, 4096]; got 0"),
    ("negative width", "hidden = [512, 256, 128]", "hidden = [512, -3]",
     "architectures.mlp4_wide.hidden entries (dense widths) must be integers in [1, 4096]; got -3"),
    ("non-integer width", "hidden = [512, 256, 128]", "hidden = [512, 1.5]",
     "architectures.mlp4_wide.hidden entries (dense widths) must be integers in [1, 4096]; got 1.5"),
    ("too wide", "hidden = [512, 256, 128]", "hidden = [512, 5000]",
     "architectures.mlp4_wide.hidden entries (dense widths) must be integers in [1, 4096]; got 5000"),
    ("empty hidden", "hidden = [512, 256, 128]", "hidden = []",
     "architectures.mlp4_wide.hidden must be a non-empty array of dense widths; got []"),
    ("hidden not an array", "hidden = [512, 256, 128]", "hidden = 512",
     "architectures.mlp4_wide.hidden must be an array of integers; got 512 (an integer)"),
    ("one hidden layer", "hidden = [512, 256, 128]", "hidden = [512]",
     "architectures.mlp4_wide.hidden: an architecture has 2 to 16 hidden layers (conv and dense together; at least "
     "2 so that the early and deep layer groups both have units); got 1"),
    ("misspelt nonlinearity", 'nonlinearity = "relu"', 'nonlinearity = "rleu"',
     "architectures.mlp4_wide.nonlinearity: unknown nonlinearity 'rleu' (did you mean 'relu'?); allowed: relu, tanh"),
    ("unknown nonlinearity", 'nonlinearity = "relu"', 'nonlinearity = "sigmoid"',
     "architectures.mlp4_wide.nonlinearity: unknown nonlinearity 'sigmoid'; allowed: relu, tanh"),
    ("nonlinearity not a string", 'nonlinearity = "relu"', "nonlinearity = 1",
     "architectures.mlp4_wide.nonlinearity must be a string; got 1 (an integer)"),
    ("name of a built-in", "[architectures.mlp4_wide]", "[architectures.mlp3_relu]",
     f"architectures.mlp3_relu: 'mlp3_relu' is a built-in architecture; give the custom one another name "
     f"(built-in: {BUILT_IN})"),
    ("misspelt key in the table", "hidden = [512, 256, 128]", "hiden = [512, 256, 128]",
     "unknown key 'architectures.mlp4_wide.hiden' (did you mean 'hidden'?); allowed: kind, hidden, channels, "
     "strides, kernel, nonlinearity"),
    ("unknown key in the table", 'nonlinearity = "relu"', 'nonlinearity = "relu"\ndropout = 0.5',
     "unknown key 'architectures.mlp4_wide.dropout'; allowed: kind, hidden, channels, strides, kernel, "
     "nonlinearity"),
    ("missing key", 'kind = "mlp"\n', "", "missing key 'architectures.mlp4_wide.kind' (required)"),
    ("convnet without channels", "channels = [8, 16]\n", "",
     "missing key 'architectures.conv_small.channels' (required for kind = 'conv')"),
    ("convnet with no channel", "channels = [8, 16]", "channels = []",
     "architectures.conv_small.channels must be a non-empty array of conv channels for kind 'conv'; got []"),
    ("zero channels", "channels = [8, 16]", "channels = [8, 0]",
     "architectures.conv_small.channels entries (conv channels) must be integers in [1, 512]; got 0"),
    ("non-integer channels", "channels = [8, 16]", 'channels = [8, "16"]',
     "architectures.conv_small.channels entries (conv channels) must be integers in [1, 512]; got '16'"),
    ("channels in an MLP", 'kind = "mlp"', 'kind = "mlp"\nchannels = [8]',
     "architectures.mlp4_wide.channels: only kind = 'conv' has conv layers; got channels = [8] for kind 'mlp'"),
    ("strides in an MLP", 'kind = "mlp"', 'kind = "mlp"\nstrides = [2]',
     "architectures.mlp4_wide.strides: only kind = 'conv' has conv layers; got strides = [2] for kind 'mlp'"),
    ("strides not one per conv layer", "strides = [1, 2]", "strides = [1]",
     "architectures.conv_small.strides must have one entry per conv layer (2, as channels); got [1]"),
    ("stride out of range", "strides = [1, 2]", "strides = [1, 4]",
     "architectures.conv_small.strides entries (conv strides) must be integers in [1, 3]; got 4"),
    ("even kernel", "strides = [1, 2]", "strides = [1, 2]\nkernel = 4",
     "architectures.conv_small.kernel must be an odd integer in [1, 7]; got 4"),
    ("table that is not a table",
     '[architectures.mlp4_wide]\nkind = "mlp"\nhidden = [512, 256, 128]\nnonlinearity = "relu"\n',
     '[architectures]\nmlp4_wide = "big"\n',
     "architectures.mlp4_wide must be a table (a [architectures.mlp4_wide] section); got 'big' (a string)"),
    ("name that is not a bare key", "[architectures.mlp4_wide]", '[architectures."mlp 4"]',
     "architectures: an architecture name is 1 to 64 letters, digits, '_' or '-'; got 'mlp 4'"),
    ("listed, not defined", '"conv_small"]', '"conv_small", "mlp9"]',
     f"population.architectures: unknown architecture 'mlp9'; allowed: "
     f"{', '.join(sorted([*ARCHITECTURES, 'conv_small', 'mlp4_wide']))}; or define a custom architecture of that "
     "name ([architectures.NAME] in a preset)"),
    ("defined, not listed", '"mlp4_wide", "conv_small"]', '"mlp4_wide"]',
     "architectures.conv_small: defined but not listed in the population's architectures; list it there or remove "
     "its definition"),
    ("too few units for the recording", "units_per_group = 32", "units_per_group = 100",
     "recording.units_per_group = 100 exceeds the 64 units of the deep layers of architecture 'conv_small'; use at "
     "most 64"),
]


@pytest.mark.parametrize(("old", "new", "message"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_definition_gives_one_exact_line(tmp_path: Path, old: str, new: str, message: str) -> None:
    assert old in PRESET
    path = _write(tmp_path, PRESET.replace(old, new, 1), "bad.toml")
    with pytest.raises(ConfigError) as info:
        load_preset(path)
    assert str(info.value) == f"{path}: {message}"


def test_a_list_where_the_table_belongs_points_to_the_population(tmp_path: Path) -> None:
    text = PRESET.split("[architectures.mlp4_wide]")[0].replace("seed = 1\n", 'seed = 1\narchitectures = ["x"]\n')
    path = _write(tmp_path, text, "bad.toml")
    with pytest.raises(ConfigError) as info:
        load_preset(path)
    assert str(info.value) == (
        f"{path}: architectures must be a table of [architectures.NAME] tables, one per custom architecture (the "
        "list of architectures to train is population.architectures); got ['x'] (an array)")


@pytest.mark.parametrize(("custom", "message"), [
    ((MLP4_WIDE, MLP4_WIDE), "custom_architectures defines 'mlp4_wide' twice"),
    (("mlp4_wide",), "custom_architectures must be a tuple of Architecture; got ('mlp4_wide',)"),
    ((dataclasses.replace(MLP4_WIDE, key="mlp3_tanh"),),
     f"custom_architectures.mlp3_tanh: 'mlp3_tanh' is a built-in architecture; give the custom one another name "
     f"(built-in: {BUILT_IN})"),
])
def test_the_config_checks_custom_architectures_given_in_python(custom: tuple, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        _tiny_with(MLP4_WIDE, custom_architectures=custom)
    assert str(info.value) == message


def test_an_architecture_checks_itself() -> None:
    with pytest.raises(ConfigError, match=r"^kind: unknown architecture kind 'rnn'; allowed: mlp, conv$"):
        Architecture("x", "rnn", "relu", dense=(8, 8))
    with pytest.raises(ConfigError, match=r"^hidden: an architecture has 2 to 16 hidden layers .*; got 17$"):
        Architecture.custom("x", kind="mlp", hidden=[8] * 17, nonlinearity="tanh")


# ----------------------------------------------------------------------------------------------- hash
def test_the_definition_is_part_of_the_bank_hash() -> None:
    base = _tiny_with(MLP4_WIDE)
    wider = _tiny_with(dataclasses.replace(MLP4_WIDE, dense=(512, 256, 256)))
    tanh = _tiny_with(dataclasses.replace(MLP4_WIDE, activation="tanh"))
    strided = _tiny_with(dataclasses.replace(CONV_SMALL, conv=((8, 2), (16, 2))))
    hashes = {c.content_hash() for c in (base, wider, tanh, strided, _tiny_with(CONV_SMALL))}
    assert len(hashes) == 5  # same names, other shapes: never one bank
    assert base.content_hash() == dataclasses.replace(base, name="renamed").content_hash()
    # the order of the definitions is not part of the hash (the population's order still is)
    both = _tiny_with(MLP4_WIDE, CONV_SMALL)
    swapped = dataclasses.replace(both, custom_architectures=(CONV_SMALL, MLP4_WIDE))
    assert swapped.content_hash() == both.content_hash()


def test_a_config_without_custom_architectures_hashes_without_the_key() -> None:
    """Banks cached before custom architectures existed keep their hash."""
    tiny = load_preset("tiny")
    assert tiny.to_dict()["custom_architectures"] == []
    again = SimulationConfig.from_dict({k: v for k, v in tiny.to_dict().items() if k != "custom_architectures"})
    assert again == tiny and again.content_hash() == tiny.content_hash()


# ----------------------------------------------------------------------------------------------- round trips
def test_preset_round_trip_keeps_the_definitions(tmp_path: Path) -> None:
    config = load_preset(_write(tmp_path, PRESET))
    text = dump_preset(config)
    assert "[architectures.conv_small]\nkind = \"conv\"\nchannels = [8, 16]\nstrides = [1, 2]\nkernel = 3\n" in text
    again = load_preset(_write(tmp_path, text, "copy.toml"))
    assert again == config
    assert again.content_hash() == config.content_hash()


def test_stored_config_round_trip(tmp_path: Path) -> None:
    config = load_preset(_write(tmp_path, PRESET))
    stored = json.loads(json.dumps(config.to_dict()))
    assert stored["custom_architectures"] == [{"name": "mlp4_wide", **MLP4_WIDE.definition()},
                                              {"name": "conv_small", **CONV_SMALL.definition()}]
    again = SimulationConfig.from_dict(stored)
    assert again == config
    assert again.content_hash() == config.content_hash()
    assert again.description == config.description


@pytest.mark.parametrize(("change", "message"), [
    ({"n_step": 3}, "unknown config key 'n_step' (did you mean 'n_steps'?)"),
    ({"custom_architectures": [{"name": "mlp4_wide", "kind": "mlp", "hidden": [0, 1], "nonlinearity": "relu"}]},
     "custom_architectures.mlp4_wide.hidden entries (dense widths) must be integers in [1, 4096]; got 0"),
    ({"custom_architectures": [{"name": "mlp4_wide", "kind": "mlp", "hidden": [8, 8]}]},
     "custom_architectures.mlp4_wide: Architecture.custom() missing 1 required keyword-only argument: "
     "'nonlinearity'"),
    ({"custom_architectures": [{"kind": "mlp"}]},
     "custom_architectures entries must be objects with a name; got {'kind': 'mlp'}"),
])
def test_a_bad_stored_config_is_one_line(change: dict, message: str) -> None:
    stored = _tiny_with(MLP4_WIDE).to_dict() | change
    with pytest.raises(ConfigError) as info:
        SimulationConfig.from_dict(stored)
    assert str(info.value) == message


# ----------------------------------------------------------------------------------------------- rules
SMALL_MLP = Architecture.custom("small_mlp", kind="mlp", hidden=[48, 40, 32], nonlinearity="tanh")
SMALL_CONV = Architecture.custom("small_conv", kind="conv", channels=[4, 8], strides=[2, 1], kernel=5,
                                 hidden=[32], nonlinearity="relu")


@pytest.mark.parametrize("arch", [SMALL_MLP, SMALL_CONV], ids=lambda a: a.key)
@pytest.mark.parametrize("rule", sorted(RULES))
def test_every_rule_trains_a_custom_architecture(rule: str, arch: Architecture) -> None:
    """Rule conformance on custom layers: finite updates that move the weights, bit-identical for the same seeds."""
    data = TASKS.get("digits").load()
    specs = arch.layer_specs(TASKS.get("digits").input_shape, data.n_outputs)
    x = torch.tensor(np.array(data.x_train[:24])).reshape(3, 8, -1)
    y = torch.tensor(np.array(data.y_train[:24])).reshape(3, 8)

    def trained(seeds: list[int]) -> list[torch.Tensor]:
        trainer = EnsembleTrainer(specs, rule, [RULES.get(rule).default_lr_range[1]] * 3, [1.0] * 3, seeds,
                                  objective_for(data.kind), noise_seed=2)
        for _ in range(3):
            trainer.step(x, y)
        return trainer.weights

    before = EnsembleTrainer(specs, rule, [0.01] * 3, [1.0] * 3, [1, 2, 3], objective_for(data.kind)).weights
    after = trained([1, 2, 3])
    assert [w.shape for w in after] == [(3, s.n_out, s.n_in) for s in specs]
    assert all(torch.isfinite(w).all() for w in after)
    assert any(not torch.equal(u, v) for u, v in zip(before, after, strict=True))
    assert all(torch.equal(u, v) for u, v in zip(after, trained([1, 2, 3]), strict=True))


# ----------------------------------------------------------------------------------------------- bank
def test_a_tiny_bank_with_a_custom_mlp_and_convnet_reopens_and_rebuilds(tmp_path: Path) -> None:
    config = _tiny_with(SMALL_MLP, SMALL_CONV)
    result = simulate(config, tmp_path)
    bank = result.bank
    assert bank.hash == config.content_hash()
    meta = bank.metadata
    assert sorted(set(meta["architecture"])) == ["small_conv", "small_mlp"]
    by_arch = meta.groupby("architecture").first()
    assert by_arch.loc["small_mlp", ["arch_family", "nonlinearity", "n_hidden"]].tolist() == ["mlp", "tanh", 3]
    assert by_arch.loc["small_conv", ["arch_family", "nonlinearity", "n_hidden"]].tolist() == ["conv", "relu", 3]
    assert np.isfinite(bank["loss"]).all()
    # every layer group of a custom architecture is recorded
    assert not np.isnan(bank["activations"]).any()
    # the nonlinearity split reads the bank's column (no registry entry for a custom name)
    assert list(heldout_groups(meta, "nonlinearity")) == list(meta["nonlinearity"])

    reopened = load_bank(bank.path, verify=True)
    stored = SimulationConfig.from_dict(reopened.config)
    assert stored == config
    assert stored.content_hash() == reopened.hash
    shape, n_outputs = TASKS.get("digits").input_shape, TASKS.get("digits").load().n_outputs
    for spec in sample_population(stored):  # the population, and each network's layers, rebuild from the bank
        row = reopened.metadata.loc[spec.index]
        assert (row["architecture"], row["arch_family"], row["nonlinearity"], row["seed"]) == (
            spec.architecture, spec.arch_family, spec.nonlinearity, spec.seed)
        specs = stored.architecture(spec.architecture).layer_specs(shape, n_outputs)
        assert specs == config.architecture(spec.architecture).layer_specs(shape, n_outputs)
        assert len(specs) - 1 == row["n_hidden"]

    assert simulate(stored, tmp_path).cached
    other = _tiny_with(dataclasses.replace(SMALL_MLP, dense=(48, 40, 33)), SMALL_CONV)
    assert other.content_hash() != config.content_hash()

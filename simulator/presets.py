"""Simulation presets: TOML files that become a :class:`~simulator.config.SimulationConfig`.

This module is the only place that sees the dicts parsed from TOML. It rejects unknown keys at every level,
checks each value's type, and then lets :class:`SimulationConfig` validate ranges and registry keys. Every
problem is a :class:`~simulator.errors.ConfigError` with one line that names the file, the dotted key and the
reason, e.g.::

    presets/quick.toml: unknown key 'population.n_network_per_rule' (did you mean 'n_networks_per_rule'?)

Schema (every key but ``population.rules``, ``population.architectures`` and ``population.tasks`` is optional
and defaults to :class:`SimulationConfig`'s default; ``name`` defaults to the file's stem)::

    name = "quick"
    description = "one line"
    seed = 0
    [population]
    rules = ["sgdm", "adam", "fa", "ia"]
    architectures = ["mlp3_relu", "conv2_relu", "mlp4_wide", "conv2_wide"]  # built-in or custom (defined below)
    tasks = ["digits", "gaussian_mixture"]
    curricula = ["iid"]
    n_networks_per_rule = 64
    batch_sizes = [32, 64]
    init_scale = [0.7, 1.4]
    [population.lr_ranges]          # per-optimizer learning-rate log-range overrides (shared by its rules)
    sgdm = [0.001, 0.01]
    [training]
    n_steps = 600
    max_ensemble = 64
    mix_batch_sizes = false         # true: networks of different batch sizes share an ensemble (GPU)
    weight_decay = 0.01             # coupled L2 on every rule's forward weights
    [recording]
    n_checkpoints = 41
    n_probes = 16
    units_per_group = 256
    synapses_per_group = 512
    [architectures.mlp4_wide]       # a custom architecture (any number of such tables), listed in the population
    kind = "mlp"                    # "mlp" or "conv"
    hidden = [512, 256, 128]        # dense hidden widths, first to last, each in [1, 4096]
    nonlinearity = "relu"           # "relu" or "tanh"
    [architectures.conv2_wide]
    kind = "conv"
    channels = [16, 32]             # conv hidden channels, each in [1, 512]; the dense layers (hidden) follow
    strides = [1, 2]                # optional: one per conv layer, each in [1, 3]; default 1 each
    kernel = 3                      # optional: the square kernel's size, odd, in [1, 7]; default 3
    hidden = [128]
    nonlinearity = "tanh"

A custom architecture has 2 to 16 hidden layers (conv and dense together: the early and deep layer groups both
have units), and a name that no built-in architecture has. Its definition is part of the bank hash.
"""

from __future__ import annotations

import datetime
import math
import os
import re
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from simulator.config import SimulationConfig
from simulator.errors import ConfigError
from simulator.text import did_you_mean, one_line, read_toml

if TYPE_CHECKING:
    from simulator.networks import Architecture

__all__ = ["dump_preset", "list_presets", "load_preset", "preset_dir"]


# --------------------------------------------------------------------------------------------------- schema
# A leaf is (SimulationConfig field, converter); a nested dict is a TOML table.
Converter = Callable[[Any, str, str], Any]  # (value, dotted key, file) -> converted value


def toml_type_name(value: Any) -> str:
    """The TOML name of a parsed value's type, for error messages (shared with ``advisor.science.cost``)."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, datetime.date | datetime.time):
        return "a date/time"
    return type(value).__name__


def _got(value: Any) -> str:
    return f"got {value!r} ({toml_type_name(value)})"


def is_int(value: Any) -> bool:
    """An integer, not a boolean (TOML booleans are Python bools, a subclass of int)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """An integer or a float, not a boolean."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_str_list(value: Any) -> bool:
    """An array of strings."""
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _str(value: Any, key: str, file: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{file}: {key} must be a string; {_got(value)}")
    return value


def _int(value: Any, key: str, file: str) -> int:
    if not is_int(value):
        raise ConfigError(f"{file}: {key} must be an integer; {_got(value)}")
    return int(value)


def _bool(value: Any, key: str, file: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{file}: {key} must be true or false; {_got(value)}")
    return value


def _str_list(value: Any, key: str, file: str) -> tuple[str, ...]:
    if not is_str_list(value):
        raise ConfigError(f"{file}: {key} must be an array of strings; {_got(value)}")
    return tuple(value)


def _int_list(value: Any, key: str, file: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(is_int(v) for v in value):
        raise ConfigError(f"{file}: {key} must be an array of integers; {_got(value)}")
    return tuple(int(v) for v in value)


def _float_pair(value: Any, key: str, file: str) -> tuple[float, float]:
    if not isinstance(value, list) or len(value) != 2 or not all(is_number(v) for v in value):
        raise ConfigError(f"{file}: {key} must be a pair of numbers [low, high]; {_got(value)}")
    return (float(value[0]), float(value[1]))


def _float(value: Any, key: str, file: str) -> float:
    if not is_number(value):
        raise ConfigError(f"{file}: {key} must be a number; {_got(value)}")
    return float(value)


def _lr_ranges(value: Any, key: str, file: str) -> tuple[tuple[str, float, float], ...]:
    if not isinstance(value, dict):
        raise ConfigError(
            f"{file}: {key} must be a table of optimizer = [low, high] (a [{key}] section); {_got(value)}"
        )
    from simulator.optim import OPTIMIZERS
    from simulator.rules import RULES

    entries = []
    for optimizer, pair in value.items():
        if optimizer not in OPTIMIZERS and optimizer not in RULES:  # a rule's key: the config names its optimizer
            allowed = ", ".join(sorted(OPTIMIZERS))
            raise ConfigError(f"{file}: {key}.{optimizer}: unknown optimizer {optimizer!r} (learning-rate ranges "
                              f"are shared by every rule on one optimizer); allowed: {allowed}")
        lo, hi = _float_pair(pair, f"{key}.{optimizer}", file)
        entries.append((optimizer, lo, hi))
    return tuple(entries)


def _array(value: Any, key: str, file: str) -> tuple[Any, ...]:
    """An array whose entries the config checks (an architecture's sizes: it names the entry that is wrong)."""
    if not isinstance(value, list):
        raise ConfigError(f"{file}: {key} must be an array of integers; {_got(value)}")
    return tuple(value)


_ARCHITECTURE_KEYS: dict[str, Converter] = {
    "kind": _str,
    "hidden": _array,
    "channels": _array,
    "strides": _array,
    "kernel": _int,
    "nonlinearity": _str,
}
"""The keys of an ``[architectures.NAME]`` table: the keywords of ``Architecture.custom``."""

_ARCHITECTURE_REQUIRED = ("kind", "hidden", "nonlinearity")


def _architectures(value: Any, key: str, file: str) -> tuple[Architecture, ...]:
    """The custom architectures of ``[architectures.NAME]`` tables, in file order."""
    from simulator.networks import Architecture

    if not isinstance(value, dict):
        raise ConfigError(
            f"{file}: {key} must be a table of [{key}.NAME] tables, one per custom architecture (the list of "
            f"architectures to train is population.architectures); {_got(value)}"
        )
    archs = []
    for name, table in value.items():
        dotted = f"{key}.{_toml_key(name)}"
        if not isinstance(table, dict):
            raise ConfigError(f"{file}: {dotted} must be a table (a [{dotted}] section); {_got(table)}")
        for k in table:
            if k not in _ARCHITECTURE_KEYS:
                error = _unknown_key(k, f"{dotted}.{k}", _ARCHITECTURE_KEYS, file)
                raise ConfigError(f"{error}; allowed: {', '.join(_ARCHITECTURE_KEYS)}")
        for k in _ARCHITECTURE_REQUIRED:
            if k not in table:
                raise ConfigError(f"{file}: missing key '{dotted}.{k}' (required)")
        if table["kind"] == "conv" and "channels" not in table:
            raise ConfigError(f"{file}: missing key '{dotted}.channels' (required for kind = 'conv')")
        kwargs = {k: convert(table[k], f"{dotted}.{k}", file) for k, convert in _ARCHITECTURE_KEYS.items()
                  if k in table}
        try:
            archs.append(Architecture.custom(name, **kwargs))
        except ConfigError as e:  # its message starts with the key at fault: kind, hidden, channels, ...
            raise ConfigError(f"{file}: {dotted}.{one_line(str(e))}") from None
    return tuple(archs)


_SCHEMA: dict[str, Any] = {
    "name": ("name", _str),
    "description": ("description", _str),
    "seed": ("seed", _int),
    "architectures": ("custom_architectures", _architectures),
    "population": {
        "rules": ("rules", _str_list),
        "architectures": ("architectures", _str_list),
        "tasks": ("tasks", _str_list),
        "curricula": ("curricula", _str_list),
        "n_networks_per_rule": ("n_networks_per_rule", _int),
        "batch_sizes": ("batch_sizes", _int_list),
        "init_scale": ("init_scale", _float_pair),
        "lr_ranges": ("lr_ranges", _lr_ranges),
    },
    "training": {
        "n_steps": ("n_steps", _int),
        "max_ensemble": ("max_ensemble", _int),
        "mix_batch_sizes": ("mix_batch_sizes", _bool),
        "weight_decay": ("weight_decay", _float),
    },
    "recording": {
        "n_checkpoints": ("n_checkpoints", _int),
        "n_probes": ("n_probes", _int),
        "units_per_group": ("units_per_group", _int),
        "synapses_per_group": ("synapses_per_group", _int),
    },
}

_REQUIRED = ("population.rules", "population.architectures", "population.tasks")


def _leaf_paths(schema: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """SimulationConfig field -> dotted TOML key, for every leaf of ``schema``."""
    paths: dict[str, str] = {}
    for key, spec in schema.items():
        if isinstance(spec, dict):
            paths.update(_leaf_paths(spec, f"{prefix}{key}."))
        else:
            paths[spec[0]] = f"{prefix}{key}"
    return paths


_FIELD_PATHS = _leaf_paths(_SCHEMA)
_FIELD_PATHS_INV = {dotted: field for field, dotted in _FIELD_PATHS.items()}
_FIELD_AT_START = re.compile(r"^([a-z_]+)\b")


def _unknown_key(key: str, dotted: str, siblings: Mapping[str, Any], file: str) -> ConfigError:
    """An 'unknown key' error that suggests the closest key of the same table, or the right table."""
    hint = did_you_mean(key, siblings) or did_you_mean(key, _FIELD_PATHS, cutoff=0.8, shown=_FIELD_PATHS.__getitem__)
    return ConfigError(f"{file}: unknown key {dotted!r}{hint}")


def _walk(table: Mapping[str, Any], schema: Mapping[str, Any], prefix: str, file: str, out: dict) -> None:
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if key not in schema:
            raise _unknown_key(key, dotted, schema, file)
        spec = schema[key]
        if isinstance(spec, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{file}: {dotted} must be a table (a [{dotted}] section); {_got(value)}")
            _walk(value, spec, f"{dotted}.", file, out)
        else:
            field, convert = spec
            out[field] = convert(value, dotted, file)


# ------------------------------------------------------------------------------------------------- loading
def preset_dir() -> Path:
    """The built-in presets: the package data folder ``simulator/data/presets/`` (the repository's top-level
    ``presets/`` is a link to it, the same files), found through :mod:`importlib.resources` so that a wheel or a
    non-editable install finds them as an editable one does."""
    folder = resources.files("simulator").joinpath("data", "presets")
    # installed packages are directories (wheels are unpacked), so the traversable is a real path
    return Path(os.fspath(folder))  # type: ignore[call-overload]


def list_presets() -> list[str]:
    """Names (file stems) of the built-in presets, ``presets/*.toml`` (top level only), sorted."""
    return sorted(p.stem for p in preset_dir().glob("*.toml") if p.is_file())


def _resolve(name_or_path: str | os.PathLike[str]) -> Path:
    """The file a preset name or path refers to.

    A string that ends in ``.toml`` or contains a path separator is a path; otherwise it is a built-in name
    (or, failing that, an existing file of that name).
    """
    text = os.fspath(name_or_path)
    separators = {os.sep, "/"} | ({os.altsep} if os.altsep else set())
    is_path = text.endswith(".toml") or any(s in text for s in separators)
    builtins = list_presets()
    if not is_path:
        if text in builtins:
            return preset_dir() / f"{text}.toml"
        if text and Path(text).is_file():
            return Path(text)
        raise ConfigError(
            f"unknown preset {text!r}{did_you_mean(text, builtins)}; built-in presets: {', '.join(builtins)}; "
            "or give the path of a .toml file"
        )
    path = Path(text).expanduser()
    if not path.exists():
        hint = f" (did you mean the built-in preset {path.stem!r}?)" if path.stem in builtins else ""
        raise ConfigError(f"{text}: preset file does not exist{hint}")
    if not path.is_file():
        raise ConfigError(f"{text}: is not a file; a preset is a .toml file")
    return path


def load_preset(name_or_path: str | os.PathLike[str]) -> SimulationConfig:
    """Load a simulation preset.

    Args:
        name_or_path: a built-in preset name (see :func:`list_presets`), or the path of a TOML file.

    Returns:
        The validated config. TOML arrays become tuples; ``name`` defaults to the file's stem.

    Raises:
        ConfigError: one line naming the file, the dotted key and the reason, for an unknown name, a missing
            or unreadable file, malformed TOML, an unknown key, a value of the wrong type, or a value the
            config rejects.
    """
    path = _resolve(name_or_path)
    file = str(path)
    data = read_toml(path, "preset", ConfigError)

    fields: dict[str, Any] = {}
    _walk(data, _SCHEMA, "", file, fields)
    for dotted in _REQUIRED:
        if _FIELD_PATHS_INV[dotted] not in fields:
            raise ConfigError(f"{file}: missing key {dotted!r} (required)")
    fields.setdefault("name", path.stem)
    try:
        return SimulationConfig(**fields)
    except ConfigError as e:
        raise ConfigError(f"{file}: {_with_dotted_key(one_line(str(e)))}") from None


def _with_dotted_key(message: str) -> str:
    """Replace a leading config field name in ``message`` by its dotted TOML key (``n_steps`` ->
    ``training.n_steps``)."""
    match = _FIELD_AT_START.match(message)
    if match and match.group(1) in _FIELD_PATHS:
        return _FIELD_PATHS[match.group(1)] + message[match.end() :]
    return message


# ------------------------------------------------------------------------------------------------- dumping
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _toml_str(text: str) -> str:
    """A TOML basic string for ``text`` (escapes quotes, backslashes and every control character)."""
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _toml_str(key)


def _toml_float(value: float) -> str:
    value = float(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return repr(value)  # always has a '.' or an exponent, both valid TOML floats


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _toml_float(value)
    if isinstance(value, str):
        return _toml_str(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def dump_preset(config: SimulationConfig) -> str:
    """TOML text for ``config`` that :func:`load_preset` reads back to an equal config (description included).

    Args:
        config: the config to write.

    Returns:
        The preset's text, in the schema's section order.
    """
    lines = [
        f"name = {_toml_str(config.name)}",
        f"description = {_toml_str(config.description)}",
        f"seed = {config.seed}",
    ]
    for table, spec in _SCHEMA.items():
        if not isinstance(spec, dict):
            continue
        lines += ["", f"[{table}]"]
        for key, (field, _) in spec.items():
            if field == "lr_ranges":
                continue
            value = getattr(config, field)
            if field == "init_scale":
                value = tuple(float(v) for v in value)
            lines.append(f"{key} = {_toml_value(value)}")
        if table == "population" and config.lr_ranges:
            lines += ["", "[population.lr_ranges]"]
            for rule, lo, hi in config.lr_ranges:
                lines.append(f"{_toml_key(rule)} = [{_toml_float(lo)}, {_toml_float(hi)}]")
    for arch in config.custom_architectures:
        lines += ["", f"[architectures.{_toml_key(arch.key)}]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in arch.definition().items()]
    return "\n".join(lines) + "\n"

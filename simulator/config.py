"""Typed simulation config and the population it samples.

A :class:`SimulationConfig` says which rules, architectures, tasks and curricula to cross, how many networks per
rule, how long to train and what to record. :func:`sample_population` turns it into one :class:`NetworkSpec` per
network (hyperparameters drawn from the config's seed), and :func:`plan_shards` groups networks that can train
together as one batched ensemble (same rule, architecture, task, curriculum and batch size).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from simulator.constants import DEFAULT_WEIGHT_DECAY, GROUPS, SCHEMA_VERSION
from simulator.errors import ConfigError
from simulator.text import did_you_mean

if TYPE_CHECKING:
    from simulator.networks import Architecture

__all__ = ["DEFAULT_WEIGHT_DECAY", "GROUPS", "SCHEMA_VERSION", "NetworkSpec", "ShardSpec", "SimulationConfig",
           "mixes_batch_sizes", "plan_shards", "sample_population", "shard_summary"]


def _check_int(name: str, value: Any, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"{name} must be an integer in [{lo}, {hi}]; got {value!r}")


def _check_range(name: str, value: Any, lo: float, hi: float) -> None:
    ok = (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        and lo <= value[0] <= value[1] <= hi
    )
    if not ok:
        raise ConfigError(f"{name} must be a pair [low, high] with {lo} <= low <= high <= {hi}; got {value!r}")


ARCHITECTURE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""A custom architecture's name: a bare TOML key of at most 64 characters (it is a bank metadata value, an MLflow
tag and a ``--heldout architecture`` level, like a built-in's)."""


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate and record. Frozen; validated on construction.

    Attributes:
        name: a label (the preset name); not part of the bank hash.
        rules: learning-rule keys (``simulator.RULES``).
        architectures: architecture keys: built-in (``simulator.ARCHITECTURES``) or custom (below).
        tasks: task keys (``simulator.TASKS``).
        curricula: curriculum keys (``simulator.CURRICULA``); incompatible task/curriculum pairs are skipped.
        custom_architectures: architectures defined by the preset (``[architectures.NAME]`` tables,
            :meth:`Architecture.custom <simulator.networks.Architecture.custom>`), each listed in
            ``architectures`` under a name no built-in has. Their definitions are part of the bank hash and of
            :meth:`to_dict`, so a bank's stored config rebuilds them (:meth:`from_dict`).
        n_networks_per_rule: networks trained under each rule, spread evenly over the design cells.
        n_steps: parameter updates per network.
        n_checkpoints: recording times, evenly spaced over training, initialization and the end included.
        batch_sizes: mini-batch sizes to draw from (one per network).
        init_scale: range of a multiplier on the default (He/Xavier) init SD, drawn log-uniformly.
        lr_ranges: learning-rate log-range overrides per OPTIMIZER, as ``((optimizer, low, high), ...)``
            (optimizer keys: sgd, sgdm, adam, rmsprop). Every rule on an optimizer draws from its one range,
            so the learning rate alone never tells apart rules that share an optimizer; an entry keyed by a
            rule that is not an optimizer (e.g. ``fa``) is rejected.
        weight_decay: coupled L2 coefficient on the forward weights, applied identically by every optimizer
            (torch.optim's ``weight_decay``); Kolen-Pollack gives its feedback weights the same decay.
        n_probes: fixed probe stimuli shown at every checkpoint (from the task's test split).
        units_per_group: units whose responses are recorded per layer group.
        synapses_per_group: forward-weight entries recorded per layer group.
        max_ensemble: largest number of networks trained as one batched ensemble (bounds memory).
        mix_batch_sizes: let networks of different batch sizes share an ensemble, each batch tiled to the
            ensemble's (where the rule allows, :func:`mixes_batch_sizes`): fewer, larger ensembles, which pays
            where each step's overhead dominates (a GPU); on a CPU the tiled examples cost more than they save
            (``benchmarks/results/sharding-cpu2.json``). Curricula, learning rates and inits always share.
        seed: the one seed everything else is derived from.
    """

    name: str
    rules: tuple[str, ...]
    architectures: tuple[str, ...]
    tasks: tuple[str, ...]
    curricula: tuple[str, ...] = ("iid",)
    custom_architectures: tuple[Architecture, ...] = ()
    n_networks_per_rule: int = 64
    n_steps: int = 600
    n_checkpoints: int = 41
    batch_sizes: tuple[int, ...] = (32, 64)
    init_scale: tuple[float, float] = (0.7, 1.4)
    lr_ranges: tuple[tuple[str, float, float], ...] = ()
    weight_decay: float = DEFAULT_WEIGHT_DECAY
    n_probes: int = 12
    units_per_group: int = 192
    synapses_per_group: int = 512
    max_ensemble: int = 64
    mix_batch_sizes: bool = False
    seed: int = 0
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        from simulator.networks import ARCHITECTURES
        from simulator.rules import RULES
        from simulator.tasks import CURRICULA, TASKS

        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"name must be a non-empty string; got {self.name!r}")
        custom = self._check_custom_architectures()
        for key, registry, extra in (
            ("rules", RULES, ()),
            ("architectures", ARCHITECTURES, tuple(custom)),
            ("tasks", TASKS, ()),
            ("curricula", CURRICULA, ()),
        ):
            values = getattr(self, key)
            if not isinstance(values, tuple) or not values:
                raise ConfigError(f"{key} must be a non-empty list; got {values!r}")
            if len(set(values)) != len(values):
                raise ConfigError(f"{key} lists a value twice: {list(values)}")
            for v in values:
                if v not in registry and v not in extra:
                    names = sorted([*registry, *extra])
                    hint = did_you_mean(str(v), names)
                    define = ("; or define a custom architecture of that name ([architectures.NAME] in a preset)"
                              if key == "architectures" else "")
                    raise ConfigError(f"{key}: unknown {registry.kind} {v!r}{hint}; allowed: {', '.join(names)}"
                                      f"{define}")
        for name in custom:
            if name not in self.architectures:
                raise ConfigError(
                    f"custom_architectures.{name}: defined but not listed in the population's architectures; list "
                    "it there or remove its definition"
                )
        _check_int("n_networks_per_rule", self.n_networks_per_rule, 1, 100_000)
        _check_int("n_steps", self.n_steps, 1, 1_000_000)
        _check_int("n_checkpoints", self.n_checkpoints, 2, 1000)
        if self.n_checkpoints > self.n_steps + 1:
            raise ConfigError(
                f"n_checkpoints must be at most n_steps + 1 = {self.n_steps + 1}; got {self.n_checkpoints}"
            )
        if not isinstance(self.batch_sizes, tuple) or not self.batch_sizes:
            raise ConfigError(f"batch_sizes must be a non-empty list; got {self.batch_sizes!r}")
        for b in self.batch_sizes:
            _check_int("batch_sizes entries", b, 1, 4096)
        _check_range("init_scale", self.init_scale, 0.01, 100.0)
        if self.init_scale[0] <= 0:
            raise ConfigError(f"init_scale must be positive; got {self.init_scale!r}")
        from simulator.optim import OPTIMIZERS

        for entry in self.lr_ranges:
            if not (isinstance(entry, tuple) and len(entry) == 3 and entry[0] in RULES):
                raise ConfigError(
                    f"lr_ranges entries must be (optimizer, low, high) with a known optimizer; got {entry!r}"
                )
            if entry[0] not in OPTIMIZERS:
                opt = RULES.get(entry[0]).optimizer
                raise ConfigError(
                    f"lr_ranges.{entry[0]}: learning-rate ranges are per optimizer (every rule on one optimizer "
                    f"shares its range); {entry[0]!r} uses optimizer {opt!r}: set {opt} = [low, high] instead; "
                    f"allowed keys: {', '.join(sorted(OPTIMIZERS))}"
                )
            _check_range(f"lr_ranges.{entry[0]}", (entry[1], entry[2]), 1e-8, 10.0)
            if entry[1] <= 0:
                raise ConfigError(f"lr_ranges.{entry[0]} must be positive; got {entry[1:]!r}")
        wd = self.weight_decay
        if isinstance(wd, bool) or not isinstance(wd, int | float) or not 0.0 <= wd <= 1.0:
            raise ConfigError(f"weight_decay must be a number in [0, 1]; got {wd!r}")
        _check_int("n_probes", self.n_probes, 1, 256)
        _check_int("units_per_group", self.units_per_group, 1, 4096)
        _check_int("synapses_per_group", self.synapses_per_group, 1, 65536)
        _check_int("max_ensemble", self.max_ensemble, 1, 65536)
        if not isinstance(self.mix_batch_sizes, bool):
            raise ConfigError(f"mix_batch_sizes must be true or false; got {self.mix_batch_sizes!r}")
        _check_int("seed", self.seed, 0, 2**63 - 1)
        for arch_key in self.architectures:
            arch = self.architecture(arch_key)
            for task_key in self.tasks:
                task = TASKS.get(task_key)
                for group, n in arch.units_per_group(task.input_shape).items():
                    if 0 < n < self.units_per_group:
                        raise ConfigError(
                            f"units_per_group = {self.units_per_group} exceeds the {n} units of the {group} "
                            f"layers of architecture {arch_key!r}; use at most {n}"
                        )
        if not self.cells():
            raise ConfigError("no task is compatible with any listed curriculum; nothing to simulate")

    def _check_custom_architectures(self) -> dict[str, Architecture]:
        """The custom architectures by name, after checking their names: unique, well-formed, not built-in."""
        from simulator.networks import ARCHITECTURES, Architecture

        defs = self.custom_architectures
        if not isinstance(defs, tuple) or not all(isinstance(a, Architecture) for a in defs):
            raise ConfigError(f"custom_architectures must be a tuple of Architecture; got {defs!r}")
        out: dict[str, Architecture] = {}
        for arch in defs:
            name = arch.key
            if not isinstance(name, str) or not ARCHITECTURE_NAME.fullmatch(name):
                raise ConfigError(
                    f"custom_architectures: an architecture name is 1 to 64 letters, digits, '_' or '-'; got {name!r}"
                )
            if name in ARCHITECTURES:
                raise ConfigError(
                    f"custom_architectures.{name}: {name!r} is a built-in architecture; give the custom one another "
                    f"name (built-in: {', '.join(sorted(ARCHITECTURES))})"
                )
            if name in out:
                raise ConfigError(f"custom_architectures defines {name!r} twice")
            out[name] = arch
        return out

    # ------------------------------------------------------------------ derived
    def architecture(self, key: str) -> Architecture:
        """The architecture ``key`` names: the config's custom one of that name, else the built-in.

        Raises:
            ConfigError: neither defines ``key``.
        """
        from simulator.networks import ARCHITECTURES

        for arch in self.custom_architectures:
            if arch.key == key:
                return arch
        return ARCHITECTURES.get(key)

    def lr_range(self, rule: str) -> tuple[float, float]:
        """The learning-rate log-range for ``rule``: its optimizer's, as overridden by the preset."""
        from simulator.rules import RULES

        optimizer = RULES.get(rule).optimizer
        for key, lo, hi in self.lr_ranges:
            if key == optimizer:
                return (float(lo), float(hi))
        return RULES.get(rule).default_lr_range

    def cells(self) -> list[tuple[str, str, str]]:
        """Design cells (architecture, task, curriculum) that every rule is spread over evenly."""
        from simulator.tasks import CURRICULA, TASKS

        return [
            (a, t, c)
            for a, t, c in itertools.product(self.architectures, self.tasks, self.curricula)
            if CURRICULA.get(c).compatible(TASKS.get(t))
        ]

    @property
    def n_networks(self) -> int:
        return self.n_networks_per_rule * len(self.rules)

    def checkpoint_steps(self) -> np.ndarray:
        """Steps (0 = initialization) at which observables are recorded; shape (n_checkpoints,)."""
        return np.unique(np.round(np.linspace(0, self.n_steps, self.n_checkpoints)).astype(np.int64))

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON values (tuples become lists), as a bank's manifest stores it; :meth:`from_dict`
        reads it back. A custom architecture is ``{"name": ..., **Architecture.definition()}``."""
        d: dict[str, Any] = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["lr_ranges"] = [list(e) for e in self.lr_ranges]
        d["custom_architectures"] = [{"name": a.key, **a.definition()} for a in self.custom_architectures]
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SimulationConfig:
        """The config :meth:`to_dict` gave (e.g. a bank's stored ``config``): equal to the original, same hash.

        A dict without ``custom_architectures`` (a bank built before they existed) has none.

        Raises:
            ConfigError: ``d`` is not such a dict (an unknown key, a bad value).
        """
        from simulator.networks import Architecture

        if not isinstance(d, dict):
            raise ConfigError(f"a config must be a dict; got {type(d).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        for key in d:
            if key not in names:
                raise ConfigError(f"unknown config key {key!r}{did_you_mean(str(key), names)}")
        fields: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()}
        fields["lr_ranges"] = tuple(tuple(e) if isinstance(e, list) else e for e in d.get("lr_ranges", ()))
        archs = []
        for entry in d.get("custom_architectures", ()):
            if not isinstance(entry, dict) or "name" not in entry:
                raise ConfigError(f"custom_architectures entries must be objects with a name; got {entry!r}")
            definition = dict(entry)
            name = definition.pop("name")
            try:
                archs.append(Architecture.custom(name, **definition))
            except TypeError as e:  # a missing or unknown keyword
                raise ConfigError(f"custom_architectures.{name}: {e}") from None
            except ConfigError as e:
                raise ConfigError(f"custom_architectures.{name}.{e}") from None
        fields["custom_architectures"] = tuple(archs)
        return cls(**fields)

    def content_hash(self) -> str:
        """SHA-256 over everything that changes the bank's contents (not the name or description).

        A custom architecture counts by its name and definition, not by its place in ``custom_architectures``;
        a config without any hashes as before custom architectures existed (cached banks stay valid).
        """
        d = self.to_dict()
        d.pop("name")
        d.pop("description")
        custom = d.pop("custom_architectures")
        if custom:
            d["custom_architectures"] = {a.key: a.definition() for a in self.custom_architectures}
        d["schema_version"] = SCHEMA_VERSION
        # the learning-rate ranges actually drawn from (a rule's registered default changes the bank too)
        d["resolved_lr_ranges"] = {rule: list(self.lr_range(rule)) for rule in self.rules}
        blob = json.dumps(d, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()

    def with_seed(self, seed: int) -> SimulationConfig:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["seed"] = seed
        return SimulationConfig(**d)


@dataclass(frozen=True)
class NetworkSpec:
    """One network of the population: everything needed to train it reproducibly."""

    index: int
    rule: str
    family: str
    architecture: str
    arch_family: str
    nonlinearity: str
    task: str
    curriculum: str
    lr: float
    batch_size: int
    init_scale: float
    seed: int


@dataclass(frozen=True)
class ShardSpec:
    """Networks that train together as one batched ensemble: one rule, architecture and task (so one shape).

    Members may differ in curriculum, learning rate, init and seed (each draws its own batches), and in batch
    size where the rule allows replicated batches (:func:`plan_shards`): ``batch_size`` is the ensemble's,
    the largest of its members'.
    """

    index: int
    rule: str
    architecture: str
    task: str
    batch_size: int
    networks: tuple[int, ...]
    seed: int

def sample_population(config: SimulationConfig) -> list[NetworkSpec]:
    """Draw the population: every rule gets the same design (cells spread evenly), hyperparameters drawn
    from the config seed. Deterministic in the config."""
    from simulator.rules import RULES

    cells = config.cells()
    root = np.random.SeedSequence(config.seed)
    rule_seqs = root.spawn(len(config.rules))
    specs: list[NetworkSpec] = []
    for rule, seq in zip(config.rules, rule_seqs, strict=True):
        rng = np.random.default_rng(seq)
        lo, hi = config.lr_range(rule)
        lo_scale, hi_scale = config.init_scale
        for j in range(config.n_networks_per_rule):
            arch, task, curriculum = cells[j % len(cells)]
            lr = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
            init_scale = float(math.exp(rng.uniform(math.log(lo_scale), math.log(hi_scale))))
            batch_size = int(config.batch_sizes[int(rng.integers(len(config.batch_sizes)))])
            net_seed = int(rng.integers(0, 2**62))
            specs.append(
                NetworkSpec(
                    index=len(specs),
                    rule=rule,
                    family=RULES.get(rule).family,
                    architecture=arch,
                    arch_family=config.architecture(arch).family,
                    nonlinearity=config.architecture(arch).activation,
                    task=task,
                    curriculum=curriculum,
                    lr=lr,
                    batch_size=batch_size,
                    init_scale=init_scale,
                    seed=net_seed,
                )
            )
    return specs


def mixes_batch_sizes(config: SimulationConfig, rule: str) -> bool:
    """Whether networks of ``rule`` with different batch sizes share an ensemble: the config asks for it
    (``mix_batch_sizes``), every batch size of the config divides the largest, and the rule's update depends
    on its batch only through batch means (``LearningRule.replicable_batches``), so a network's batch tiled to
    the ensemble's size gives the same update."""
    from simulator.rules import RULES

    largest = max(config.batch_sizes)
    return (config.mix_batch_sizes and RULES.get(rule).replicable_batches
            and all(largest % b == 0 for b in config.batch_sizes))


def plan_shards(config: SimulationConfig, specs: list[NetworkSpec]) -> list[ShardSpec]:
    """Group networks into batched ensembles of at most ``config.max_ensemble`` networks.

    One ensemble holds networks of one rule, architecture and task (their weights have one shape); curricula,
    learning rates, inits and seeds differ freely (batch indices are drawn per network), and batch sizes differ
    where :func:`mixes_batch_sizes` allows (members sorted by batch size, so an ensemble's smaller batches are
    tiled as little as possible). The grouping depends only on the config, so a resumed run computes the same
    shards.
    """
    groups: dict[tuple[str, str, str, int], list[NetworkSpec]] = {}
    for s in specs:
        batch = 0 if mixes_batch_sizes(config, s.rule) else s.batch_size
        groups.setdefault((s.rule, s.architecture, s.task, batch), []).append(s)
    seqs = np.random.SeedSequence([config.seed, 1]).spawn(
        sum(math.ceil(len(v) / config.max_ensemble) for v in groups.values())
    )
    shards: list[ShardSpec] = []
    for (rule, arch, task, _), members in groups.items():
        ordered = sorted(members, key=lambda m: (m.batch_size, m.index))
        for start in range(0, len(ordered), config.max_ensemble):
            chunk = ordered[start : start + config.max_ensemble]
            seed = int(seqs[len(shards)].generate_state(1, dtype=np.uint64)[0] >> np.uint64(2))
            batch = max(m.batch_size for m in chunk)
            shards.append(ShardSpec(len(shards), rule, arch, task, batch, tuple(m.index for m in chunk), seed))
    return shards


def shard_summary(config: SimulationConfig) -> dict[str, Any]:
    """The shard plan without training: ``{"n_networks", "n_shards", "networks_per_shard": {mean, min, max}}``
    (``advisor simulate --dry-run --json``)."""
    shards = plan_shards(config, sample_population(config))
    sizes = [len(sh.networks) for sh in shards]
    return {
        "n_networks": config.n_networks,
        "n_shards": len(shards),
        "networks_per_shard": {"mean": round(sum(sizes) / len(sizes), 3), "min": min(sizes), "max": max(sizes)},
    }

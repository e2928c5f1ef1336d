"""Recording protocols and the virtual recording: what an experimenter would measure, taken from a bank.

A :class:`RecordingProtocol` says which observable is measured, from how many units (synapses, for weights) in
which layer groups, at how many sessions placed where over learning, through which noise, with the same units
every session (chronic) or new ones (acute), and on how many probe stimuli. :func:`virtual_recording` applies it
to a trajectory bank without re-simulating, with the protocol's own seed, and returns per network and session
the raw measured values; ``advisor.features`` turns them into statistics.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from advisor.errors import AdvisorError
from simulator.registry import Registry

OBSERVABLES = ("weights", "activations", "activity_change")
GROUPS = ("early", "middle", "deep")


# --------------------------------------------------------------------------------------------- noise models
class NoiseModel(ABC):
    """Measurement noise applied to recorded values of one network and layer group."""

    key: ClassVar[str]
    description: ClassVar[str]
    level_name: ClassVar[str]
    level_range: ClassVar[tuple[float, float]]
    observables: ClassVar[tuple[str, ...]] = OBSERVABLES

    @abstractmethod
    def apply(self, x: np.ndarray, level: float, spread: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Return noisy values.

        Args:
            x: clean values, (N, S, G, k[, P]) float32 (NaN for units a network does not have).
            level: the protocol's noise level.
            spread: (N, 1, G, 1[, 1]) the observable's SD over units, probes and sessions of each network and
                group (the unit of relative noise).
            rng: the protocol's generator.
        """


NOISE_MODELS: Registry[NoiseModel] = Registry("noise model")


class NoNoise(NoiseModel):
    key = "none"
    description = "no measurement noise"
    level_name = "unused"
    level_range = (0.0, 0.0)

    def apply(self, x: np.ndarray, level: float, spread: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return x


class GaussianNoise(NoiseModel):
    """x + ε, ε ~ N(0, (level · spread)²): level 0.5 is half the observable's spread in every network."""

    key = "gaussian"
    description = "additive Gaussian noise, SD relative to the observable's spread in each network and group"
    level_name = "noise SD / spread"
    level_range = (0.0, 10.0)

    def apply(self, x: np.ndarray, level: float, spread: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if level == 0:
            return x
        noise = rng.standard_normal(x.shape, dtype=np.float32)
        return x + noise * (level * spread).astype(np.float32)


class PoissonNoise(NoiseModel):
    """Spike counts: rates (rectified activations) are scaled so the mean count per stimulus in each network and
    group equals ``level``, counted as Poisson, and scaled back. Fewer spikes = noisier."""

    key = "poisson"
    description = "Poisson spike counts; level = mean spike count per stimulus (lower is noisier)"
    level_name = "mean spikes per stimulus"
    level_range = (0.01, 1e6)
    observables = ("activations",)

    def apply(self, x: np.ndarray, level: float, spread: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        rates = np.maximum(np.nan_to_num(x, nan=0.0), 0.0)
        axes = tuple(i for i in range(rates.ndim) if spread.shape[i] == 1)
        mean_rate = rates.mean(axis=axes, keepdims=True)
        scale = np.where(mean_rate > 0, level / np.where(mean_rate > 0, mean_rate, 1.0), 0.0)
        counts = rng.poisson(rates * scale).astype(np.float32)
        out = np.where(scale > 0, counts / np.where(scale > 0, scale, 1.0), 0.0).astype(np.float32)
        return np.where(np.isnan(x), np.nan, out)


for _model in (NoNoise(), GaussianNoise(), PoissonNoise()):
    NOISE_MODELS.add(_model.key, _model)


# --------------------------------------------------------------------------------------------- the protocol
def _fail(message: str) -> None:
    raise AdvisorError(message)


@dataclass(frozen=True)
class RecordingProtocol:
    """A recording protocol. Frozen; validated on construction (bank-independent checks; see :meth:`check`).

    Attributes:
        observable: ``weights``, ``activations`` or ``activity_change``.
        n_units: units (synapses for weights) recorded per network, split evenly over ``layers``.
        layers: layer groups recorded (any non-empty subset of early, middle, deep).
        n_sessions: recording sessions over learning.
        window: (start, end) fraction of training the sessions are spread over, evenly; (0, 1) = all of it.
        noise_model: ``none``, ``gaussian`` or ``poisson``.
        noise: the noise level (gaussian: SD relative to the spread; poisson: mean spikes per stimulus).
        chronic: the same units every session (True) or fresh units each session (False, acute).
        n_probes: stimuli shown per session (None: every probe in the bank).
        seed: the protocol's own seed (unit subsets, noise).
    """

    observable: str = "activations"
    n_units: int = 100
    layers: tuple[str, ...] = GROUPS
    n_sessions: int = 10
    window: tuple[float, float] = (0.0, 1.0)
    noise_model: str = "gaussian"
    noise: float = 0.0
    chronic: bool = True
    n_probes: int | None = None
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        if self.observable not in OBSERVABLES:
            _fail(f"observable must be one of {', '.join(OBSERVABLES)}; got {self.observable!r}")
        if isinstance(self.n_units, bool) or not isinstance(self.n_units, int) or self.n_units < 1:
            _fail(f"n_units must be a positive integer; got {self.n_units!r}")
        if not self.layers or any(g not in GROUPS for g in self.layers) or len(set(self.layers)) != len(self.layers):
            _fail(f"layers must be a non-empty subset of {', '.join(GROUPS)}; got {','.join(self.layers) or '(none)'}")
        if self.n_units < len(self.layers):
            _fail(f"n_units = {self.n_units} is fewer than one unit per recorded layer group ({len(self.layers)})")
        if isinstance(self.n_sessions, bool) or not isinstance(self.n_sessions, int) or self.n_sessions < 1:
            _fail(f"n_sessions must be a positive integer; got {self.n_sessions!r}")
        lo, hi = self.window
        if not (0.0 <= lo < hi <= 1.0):
            _fail(f"window must be start-end with 0 <= start < end <= 1; got {lo}-{hi}")
        model = NOISE_MODELS.get(self.noise_model)  # raises ConfigError naming the allowed models
        if self.observable not in model.observables:
            _fail(f"noise model {self.noise_model!r} applies to {', '.join(model.observables)} only; "
                  f"got observable {self.observable!r}")
        n_lo, n_hi = model.level_range
        if not (isinstance(self.noise, int | float) and math.isfinite(self.noise) and n_lo <= self.noise <= n_hi):
            _fail(f"noise for the {self.noise_model} model ({model.level_name}) must be in [{n_lo:g}, {n_hi:g}]; "
                  f"got {self.noise!r}")
        if self.n_probes is not None and (isinstance(self.n_probes, bool) or not isinstance(self.n_probes, int)
                                          or self.n_probes < 1):
            _fail(f"n_probes must be a positive integer; got {self.n_probes!r}")

    def units_per_group(self) -> list[int]:
        """Units recorded in each of ``layers``: an even split, the remainder to the deeper groups."""
        k, r = divmod(self.n_units, len(self.layers))
        return [k + (1 if i >= len(self.layers) - r else 0) for i in range(len(self.layers))]

    def session_indices(self, n_checkpoints: int) -> np.ndarray:
        """Checkpoints recorded: ``n_sessions`` evenly spaced within the window (distinct)."""
        lo, hi = self.window
        last = n_checkpoints - 1
        idx = np.unique(np.round(np.linspace(lo * last, hi * last, self.n_sessions)).astype(np.int64))
        return idx

    def check(self, bank_shape: dict[str, tuple[int, ...]]) -> None:
        """Bank-dependent validation. ``bank_shape[observable]`` is the bank array's shape."""
        shape = bank_shape[self.observable]
        n_t = shape[1]
        per_group = shape[3]
        most = per_group * len(self.layers)
        if max(self.units_per_group()) > per_group:
            _fail(f"n_units must be an integer in [{len(self.layers)}, {most}] for this bank "
                  f"({per_group} recorded per layer group × {len(self.layers)} groups); got {self.n_units}")
        lo, hi = self.window
        available = round(hi * (n_t - 1)) - round(lo * (n_t - 1)) + 1
        if self.n_sessions > available:
            _fail(f"n_sessions must be at most {available} for window {lo:g}-{hi:g} of this bank's {n_t} "
                  f"checkpoints; got {self.n_sessions}")
        if self.observable != "weights" and self.n_probes is not None and self.n_probes > shape[4]:
            _fail(f"n_probes must be at most {shape[4]} for this bank; got {self.n_probes}")

    def describe(self) -> str:
        where = ", ".join(self.layers)
        span = "over all of learning" if self.window == (0.0, 1.0) else \
            f"within {self.window[0]:.0%}-{self.window[1]:.0%} of learning"
        noise = "no noise" if self.noise_model == "none" or self.noise == 0 else \
            f"{self.noise_model} noise {self.noise:g}"
        mode = "chronic" if self.chronic else "acute"
        return (f"{self.n_units} {'synapses' if self.observable == 'weights' else 'units'} of {self.observable} "
                f"({where}) at {self.n_sessions} sessions {span}, {noise}, {mode}")


@dataclass(frozen=True)
class Recording:
    """What a protocol measured on every network of a bank.

    Attributes:
        values: per recorded group, an array (N, S, k_g[, P]) float32: units (or synapses) × probes per session.
        sessions: (S,) checkpoint indices recorded.
        groups: the recorded layer groups, in order.
        curve: (N, S, 2) training loss and training metric at the recorded sessions (the task-performance
            control sees only this).
    """

    values: list[np.ndarray]
    sessions: np.ndarray
    groups: tuple[str, ...]
    curve: np.ndarray


def _spread(block: np.ndarray) -> np.ndarray:
    """SD of each network's values over everything but the network axis, ignoring NaN: (N, 1, 1[, 1])."""
    axes = tuple(range(1, block.ndim))
    finite = np.isfinite(block)
    count = np.maximum(finite.sum(axis=axes, keepdims=True), 1)
    clean = np.where(finite, block, 0.0)
    mean = clean.sum(axis=axes, keepdims=True) / count
    var = np.where(finite, (clean - mean) ** 2, 0.0).sum(axis=axes, keepdims=True) / count
    return np.sqrt(var).astype(np.float32)


CHUNK_NETWORKS = 64
"""Networks recorded at a time: memory stays bounded by the chunk, not the bank (results do not depend on it)."""


def record_chunks(bank: Any, protocol: RecordingProtocol, chunk: int | None = None
                  ) -> Iterator[tuple[int, slice, np.ndarray]]:
    """Apply ``protocol`` to ``bank`` a chunk of networks at a time: yields ``(group_position, networks, values)``
    with values (n_chunk, S, k_g[, P]) float32, for each recorded group in order and, within it, each chunk.

    Random numbers come from two independent streams of the protocol's seed (unit and probe selection; noise),
    drawn in network order within each group, so the values do not depend on ``chunk``.

    Raises:
        AdvisorError: the protocol asks for more units, sessions or probes than the bank recorded.
    """
    chunk = chunk or CHUNK_NETWORKS
    arr = bank[protocol.observable]
    protocol.check({protocol.observable: arr.shape})
    n = arr.shape[0]
    sessions = protocol.session_indices(arr.shape[1])
    # independent streams: which units are recorded must not depend on the noise model or level
    select_seq, noise_seq = np.random.SeedSequence([protocol.seed, 20201021]).spawn(2)
    rng, noise_rng = np.random.default_rng(select_seq), np.random.default_rng(noise_seq)
    probe_sel: np.ndarray | None = None
    if protocol.observable != "weights" and protocol.n_probes is not None:
        probe_sel = np.sort(rng.choice(arr.shape[4], protocol.n_probes, replace=False))
    model = NOISE_MODELS.get(protocol.noise_model)
    for position, (group, k) in enumerate(zip(protocol.layers, protocol.units_per_group(), strict=True)):
        gi = GROUPS.index(group)
        for start in range(0, n, chunk):
            networks = slice(start, min(n, start + chunk))
            block = np.asarray(arr[networks, sessions, gi], dtype=np.float32)  # (n_chunk, S, U[, P])
            if probe_sel is not None:
                block = block[..., probe_sel]
            m, u = block.shape[0], block.shape[2]
            if protocol.chronic:
                pick = np.argsort(rng.random((m, 1, u)), axis=-1)[..., :k]  # same units every session
                pick = np.broadcast_to(pick, (m, len(sessions), k))
            else:
                pick = np.argsort(rng.random((m, len(sessions), u)), axis=-1)[..., :k]
            if block.ndim == 4:
                pick = pick[..., None]
            chosen = np.take_along_axis(block, pick, axis=2)
            yield position, networks, model.apply(chosen, float(protocol.noise), _spread(block), noise_rng)


def learning_curve(bank: Any, protocol: RecordingProtocol) -> np.ndarray:
    """(N, S, 2) float32: training loss and metric at the protocol's sessions (the control's only input)."""
    sessions = protocol.session_indices(bank["loss"].shape[1])
    curve = np.stack([np.asarray(bank["loss"])[:, sessions], np.asarray(bank["metric"])[:, sessions]], axis=-1)
    return curve.astype(np.float32)


def virtual_recording(bank: Any, protocol: RecordingProtocol) -> Recording:
    """Apply ``protocol`` to ``bank`` (a ``simulator.bank.TrajectoryBank``): choose sessions, units and probes
    with the protocol's seed, add measurement noise, and return the measured values (all networks in memory;
    ``advisor.features.featurize`` works chunk by chunk instead).

    Raises:
        AdvisorError: the protocol asks for more units, sessions or probes than the bank recorded.
    """
    parts: list[list[np.ndarray]] = [[] for _ in protocol.layers]
    for position, _, values in record_chunks(bank, protocol):
        parts[position].append(values)
    sessions = protocol.session_indices(bank[protocol.observable].shape[1])
    return Recording([np.concatenate(p, axis=0) for p in parts], sessions, tuple(protocol.layers),
                     learning_curve(bank, protocol))

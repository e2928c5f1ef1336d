"""Recording protocols and the virtual recording: what an experimenter would measure, taken from a bank.

A :class:`RecordingProtocol` says which observable is measured, from how many units (synapses, for weights) in
which layer groups, at how many sessions placed where over learning, through which noise, with the same units
every session (chronic) or new ones (acute), and on how many probe stimuli. :func:`virtual_recording` applies it
to a trajectory bank without re-simulating, with the protocol's own seed, and returns per network and session
the raw measured values; ``advisor.science.features`` turns them into statistics.

What a rig keeps and what it loses. No rig knows a neuron's absolute gain (indicator expression, electrode
distance, amplifier settings), so every recorded value is multiplied by an unknown gain, the product of three
independent lognormal factors: one per animal (= network), one per area (= layer group) and one per unit
(synapse, for weights), ``log gain ~ N(0, sd_animal²) + N(0, sd_area²) + N(0, sd_unit²)``
(:attr:`RecordingProtocol.gain_sd`). A chronic recording keeps each unit's gain across sessions; an acute one
records new units, so their gains are redrawn every session. Measurement noise is defined from what the recorded
units themselves show, as an experimenter could measure it: the reference spread of a unit is its SD across the
probe stimuli in its first recorded session, after its gain (see :func:`reference_spread`). Poisson recordings
return spike counts, not model units.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from advisor.errors import AdvisorError
from simulator.constants import GROUPS
from simulator.presets import is_number
from simulator.registry import Registry

if TYPE_CHECKING:
    from simulator.bank import TrajectoryBank

OBSERVABLES = ("weights", "activations", "activity_change")


# --------------------------------------------------------------------------------------------- rig draws
GAIN_LEVELS = ("animal", "area", "unit")
"""The levels of the unknown gain, in the order of :attr:`RecordingProtocol.gain_sd`."""

MAX_GAIN_SD = 3.0
"""The largest SD of a log gain a protocol accepts (a factor of e³ ≈ 20 per SD)."""

MAX_BASELINE = 10.0
"""The largest baseline a protocol accepts (in spreads, or in mean evoked rates for Poisson)."""

DEFAULT_GAIN_SD = (0.5, 0.3, 0.5)
"""The library's default gain spreads (animal, area, unit): the ``generic`` modality's, so that no protocol
defaults to a rig that knows absolute gains. ``(0, 0, 0)`` turns gains off."""


def gain_problem(gain_sd: Any, baseline: Any, what: str, names: tuple[str, str, str, str]) -> str | None:
    """The one-line message for invalid gain spreads or baseline, else None (one check for protocols and
    modalities).

    Args:
        gain_sd: the three SDs of the log gain (animal, area, unit).
        baseline: the baseline (see :attr:`RecordingProtocol.baseline`).
        what: how to call the three spreads together in the message.
        names: how to call the animal, area, unit and baseline values in the message.
    """
    if not (isinstance(gain_sd, tuple | list) and len(gain_sd) == len(GAIN_LEVELS)):
        return f"{what} must be three numbers (SDs of the log gain per {', '.join(GAIN_LEVELS)}); got {gain_sd!r}"
    for name, value in zip(names[:3], gain_sd, strict=True):
        if not (is_number(value) and math.isfinite(value) and 0 <= value <= MAX_GAIN_SD):
            return f"{name} must be a number in [0, {MAX_GAIN_SD:g}] (SD of the log gain); got {value!r}"
    if not (is_number(baseline) and math.isfinite(baseline) and 0 <= baseline <= MAX_BASELINE):
        return f"{names[3]} must be a number in [0, {MAX_BASELINE:g}]; got {baseline!r}"
    return None


@dataclass(frozen=True)
class Rig:
    """What the rig does to one chunk of recorded values of one layer group, drawn by :func:`record_chunks`.

    Attributes:
        gain: (m, 1 or S, k[, 1]) float32, each recorded value's multiplicative gain (1 when gains are off);
            the session axis is 1 for chronic recordings (the same units every session).
        offset: (m, 1 or S, k[, 1]) float32 standard normal draws, each unit's baseline offset in units of
            ``baseline`` times its reference spread (Gaussian and no-noise models).
        baseline: the protocol's baseline.
        acute: new units each session: the reference spread is measured in each session (else the first).
    """

    gain: np.ndarray
    offset: np.ndarray
    baseline: float
    acute: bool

    @classmethod
    def off(cls, x: np.ndarray, acute: bool = False) -> Rig:
        """A rig with unit gains and no baseline, for values shaped like ``x`` (tests and references)."""
        shape = (x.shape[0], x.shape[1] if acute else 1, x.shape[2]) + ((1,) if x.ndim == 4 else ())
        return cls(np.ones(shape, np.float32), np.zeros(shape, np.float32), 0.0, acute)


def _masked_sd(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """SD over ``axes`` ignoring non-finite values (0 where none is finite), keepdims, float32."""
    finite = np.isfinite(x)
    count = finite.sum(axis=axes, keepdims=True)
    clean = np.where(finite, x, 0.0).astype(np.float64)
    mean = clean.sum(axis=axes, keepdims=True) / np.maximum(count, 1)
    var = np.where(finite, (clean - mean) ** 2, 0.0).sum(axis=axes, keepdims=True) / np.maximum(count, 1)
    return np.sqrt(var).astype(np.float32)


def reference_spread(y: np.ndarray, acute: bool) -> np.ndarray:
    """The unit of relative noise and baseline, as an experimenter could measure it from the recorded units.

    Activity (with probes): each recorded unit's SD across the probe stimuli in its first recorded session
    (acute: in each session, since every session records new units). A unit that does not vary across stimuli
    there (a silent ReLU unit) gets the mean of the positive spreads of that network's recorded units of the group
    in the same session; where no unit varies (a single probe, a silent group), the SD over the recorded units and
    probes of that session. Weights (no stimuli): the SD over that network's recorded synapses of the group in the
    first session (acute: each session). Never uses unrecorded units or later sessions.

    Args:
        y: (m, S, k[, P]) recorded values after gains, NaN where a network lacks the group.
        acute: new units each session.

    Returns:
        (m, 1 or S, k, 1) for activity, (m, 1 or S, 1) for weights; float32, >= 0 (0 only where the group
        shows no variation at all or is missing).
    """
    first = y if acute else y[:, :1]
    if y.ndim == 3:
        return _masked_sd(first, (2,))
    per_unit = _masked_sd(first, (3,))  # (m, 1|S, k, 1)
    alive = per_unit > 0
    n_alive = alive.sum(axis=2, keepdims=True)
    mean_alive = np.where(alive, per_unit, 0.0).sum(axis=2, keepdims=True) / np.maximum(n_alive, 1)
    fallback = np.where(n_alive > 0, mean_alive, _masked_sd(first, (2, 3)))
    return np.where(alive, per_unit, fallback).astype(np.float32)


def _through_rig(x: np.ndarray, rig: Rig) -> tuple[np.ndarray, np.ndarray]:
    """Gains, then the baseline offset: (values, reference spread)."""
    y = x * rig.gain
    spread = reference_spread(y, rig.acute)
    if rig.baseline > 0:
        y = y + (rig.baseline * spread * rig.offset).astype(np.float32)
    return y.astype(np.float32), spread


# --------------------------------------------------------------------------------------------- noise models
class NoiseModel(ABC):
    """Measurement of recorded values of one network chunk and layer group: the rig's gains, then noise."""

    key: ClassVar[str]
    description: ClassVar[str]
    level_name: ClassVar[str]
    level_range: ClassVar[tuple[float, float]]
    observables: ClassVar[tuple[str, ...]] = OBSERVABLES

    @abstractmethod
    def apply(self, x: np.ndarray, level: float, rig: Rig, rng: np.random.Generator) -> np.ndarray:
        """Return the measured values.

        Args:
            x: clean values in model units, (m, S, k[, P]) float32 (NaN for units a network does not have).
            level: the protocol's noise level.
            rig: the gains and baseline draws of these values.
            rng: the protocol's noise generator.

        Returns:
            (m, S, k[, P]) float32, NaN where ``x`` is NaN.
        """


NOISE_MODELS: Registry[NoiseModel] = Registry("noise model")


class NoNoise(NoiseModel):
    """Gains and baseline offset only: ``gain · x + baseline · spread · z``."""

    key = "none"
    description = "no measurement noise (unknown gains and baseline still apply)"
    level_name = "unused"
    level_range = (0.0, 0.0)

    def apply(self, x: np.ndarray, level: float, rig: Rig, rng: np.random.Generator) -> np.ndarray:
        return _through_rig(x, rig)[0]


class GaussianNoise(NoiseModel):
    """``gain · x + baseline · spread · z + ε``, ε ~ N(0, (level · spread)²), with ``spread`` each recorded unit's
    reference spread (:func:`reference_spread`): level 0.5 is half of what the unit itself shows, whatever its
    gain."""

    key = "gaussian"
    description = "additive Gaussian noise, SD relative to each recorded unit's spread in its first session"
    level_name = "noise SD / spread"
    level_range = (0.0, 10.0)

    def apply(self, x: np.ndarray, level: float, rig: Rig, rng: np.random.Generator) -> np.ndarray:
        y, spread = _through_rig(x, rig)
        if level == 0:
            return y
        noise = rng.standard_normal(y.shape, dtype=np.float32)
        return y + noise * (level * spread).astype(np.float32)


class PoissonNoise(NoiseModel):
    """Spike counts from a non-negative rate: ``count ~ Poisson(c · (gain · f(x) + baseline · M))``.

    ``f`` maps a response to a rate without discarding its sign: ``f(r) = r`` for a non-negative (ReLU-like)
    group, ``f(r) = r + 1`` for a signed one (tanh responses lie in [-1, 1]; ``1 + tanh(a) = 2·sigmoid(2a)`` is a
    logistic rate function of the pre-activation with rest at half its maximum, so negative responses stay
    distinguishable instead of being clipped to zero). A network's group counts as signed when any recorded value
    of its first session is negative. Values below ``f``'s floor (none for ReLU or tanh) are clipped at 0. ``M``
    is the mean evoked rate ``gain · f(x)`` over the network's recorded units and probes of the group in the first
    session, so ``baseline`` is a spontaneous rate as a fraction of it; ``c`` scales the recorded units' mean count
    in the first session to ``level``. The counts are returned as they are (a rig gives counts, not model units).
    """

    key = "poisson"
    description = "Poisson spike counts; level = mean spike count per stimulus in the first session (lower is noisier)"
    level_name = "mean spikes per stimulus"
    level_range = (0.01, 1e6)
    observables = ("activations",)

    def apply(self, x: np.ndarray, level: float, rig: Rig, rng: np.random.Generator) -> np.ndarray:
        finite = np.isfinite(x)
        clean = np.where(finite, x, 0.0)
        signed = (clean[:, :1] < 0).any(axis=tuple(range(1, x.ndim)), keepdims=True)
        evoked = rig.gain * np.maximum(np.where(signed, clean + 1.0, clean), 0.0)
        axes = tuple(range(1, x.ndim))
        first_finite = finite[:, :1]
        mean_evoked = (np.where(first_finite, evoked[:, :1], 0.0).sum(axis=axes, keepdims=True)
                       / np.maximum(first_finite.sum(axis=axes, keepdims=True), 1))
        rate = evoked + rig.baseline * mean_evoked
        mean_rate = (1.0 + rig.baseline) * mean_evoked
        scale = np.where(mean_rate > 0, level / np.where(mean_rate > 0, mean_rate, 1.0), 0.0)
        counts = rng.poisson(np.where(finite, rate * scale, 0.0)).astype(np.float32)
        return np.where(finite, counts, np.float32(np.nan))


for _model in (NoNoise(), GaussianNoise(), PoissonNoise()):
    NOISE_MODELS.add(_model.key, _model)


# --------------------------------------------------------------------------------------------- the protocol
def _fail(message: str) -> None:
    raise AdvisorError(message)


STATISTIC_SETS = ("marginal", "population", "both")
"""What the classifier sees of a recording: the paper's marginal statistics, the population statistics, or both."""


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
        statistics: which statistics the classifier sees (``advisor.science.features``): ``marginal`` (the paper's 21
            statistics of each group's distribution over units), ``population`` (the gain-invariant statistics
            of ``advisor.science.population``: dimensionality, correlations, sparseness, representational drift) or
            ``both``. Weights have no stimuli: their population statistics do not exist, so ``both`` gives the
            marginal ones and ``population`` is refused.
        seed: the protocol's own seed (unit subsets, gains, noise).
        gain_sd: SDs of the log of the unknown multiplicative gain per animal (network), area (layer group) and
            unit (synapse, for weights), independent lognormal factors whose product multiplies every recorded
            value; unit gains are kept across sessions when chronic and redrawn each session when acute.
            Each in [0, 3]; ``(0, 0, 0)`` turns gains off. Default: the ``generic`` modality's
            (:data:`DEFAULT_GAIN_SD`).
        baseline: an unknown baseline, in [0, 10]. Gaussian and no-noise models: the SD of an additive offset of
            each unit (kept across sessions when chronic), in units of the unit's reference spread (F0 and
            neuropil errors). Poisson: a spontaneous rate, the same for every unit of a network and group, as a
            fraction of the recorded units' mean evoked rate in the first session. 0: none.
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
    gain_sd: tuple[float, float, float] = DEFAULT_GAIN_SD
    baseline: float = 0.0
    statistics: str = "marginal"
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
        problem = gain_problem(self.gain_sd, self.baseline, "gain_sd",
                               ("gain_sd (animal)", "gain_sd (area)", "gain_sd (unit)", "baseline"))
        if problem:
            _fail(problem)
        if self.statistics not in STATISTIC_SETS:
            _fail(f"statistics must be one of {', '.join(STATISTIC_SETS)}; got {self.statistics!r}")
        if self.statistics == "population" and self.observable == "weights":
            _fail("statistics 'population' needs stimuli (activations or activity_change); weights have none: use "
                  "marginal or both")
        if isinstance(self.gain_sd, list):  # from JSON or TOML
            object.__setattr__(self, "gain_sd", tuple(self.gain_sd))

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
        gains = "no unknown gains" if not any(self.gain_sd) else \
            "unknown gains (log SD " + ", ".join(f"{level} {sd:g}" for level, sd in
                                                 zip(GAIN_LEVELS, self.gain_sd, strict=True)) + ")"
        if self.baseline:
            gains += f", baseline {self.baseline:g}"
        return (f"{self.n_units} {'synapses' if self.observable == 'weights' else 'units'} of {self.observable} "
                f"({where}) at {self.n_sessions} sessions {span}, {noise}, {mode}, {gains}")


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


CHUNK_NETWORKS = 64
"""Networks recorded at a time: memory stays bounded by the chunk, not the bank (results do not depend on it)."""


def record_chunks(bank: TrajectoryBank, protocol: RecordingProtocol, chunk: int | None = None,
                  presentations: int = 1) -> Iterator[tuple[int, slice, np.ndarray]]:
    """Apply ``protocol`` to ``bank`` a chunk of networks at a time: yields ``(group_position, networks, values)``
    with values (n_chunk, S, k_g[, P]) float32, for each recorded group in order and, within it, each chunk.

    With ``presentations`` R > 1 every stimulus is measured R times through the same rig (the same units, gains
    and offsets; new noise each time, at the protocol's level per presentation) and values gain a last axis of
    length R (``advisor export`` writes such single presentations; averaging R Gaussian ones, or summing R Poisson
    counts, gives a recording at the level ``Modality.noise_for(R)``). R = 1 gives exactly the values without it.

    Random numbers come from four independent streams of the protocol's seed (unit and probe selection; noise;
    gains; baseline offsets), so which units are recorded depends neither on the noise nor on the gains. Animal
    and area gains are drawn for every network and every layer group up front (a network's animal gain is the
    same in every group; an area's gain does not depend on which other groups are recorded); everything else is
    drawn in network order within each group, so the values do not depend on ``chunk``.

    Raises:
        AdvisorError: the protocol asks for more units, sessions or probes than the bank recorded.
    """
    chunk = chunk or CHUNK_NETWORKS
    arr = bank[protocol.observable]
    protocol.check({protocol.observable: arr.shape})
    n = arr.shape[0]
    sessions = protocol.session_indices(arr.shape[1])
    # independent streams: which units are recorded must not depend on the noise model, level or gains
    select_seq, noise_seq, gain_seq, offset_seq = np.random.SeedSequence([protocol.seed, 20201021]).spawn(4)
    rng, noise_rng = np.random.default_rng(select_seq), np.random.default_rng(noise_seq)
    gain_rng, offset_rng = np.random.default_rng(gain_seq), np.random.default_rng(offset_seq)
    sd_animal, sd_area, sd_unit = (float(v) for v in protocol.gain_sd)
    log_animal = sd_animal * gain_rng.standard_normal((n,))  # (N,): the same draws as size n
    log_area = sd_area * gain_rng.standard_normal((n, len(GROUPS)))  # (N, 3)
    probe_sel: np.ndarray | None = None
    if protocol.observable != "weights" and protocol.n_probes is not None:
        probe_sel = np.sort(rng.choice(arr.shape[4], protocol.n_probes, replace=False))
    model = NOISE_MODELS.get(protocol.noise_model)
    n_s = len(sessions)
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
                pick = np.broadcast_to(pick, (m, n_s, k))
            else:
                pick = np.argsort(rng.random((m, n_s, u)), axis=-1)[..., :k]
            if block.ndim == 4:
                pick = pick[..., None]
            chosen = np.take_along_axis(block, pick, axis=2)
            # a unit's gain and offset belong to the unit: one per recorded unit (chronic) or per unit and session
            draws = (m, 1 if protocol.chronic else n_s, k)
            log_gain = (log_animal[networks, None, None] + log_area[networks, gi, None, None]
                        + sd_unit * gain_rng.standard_normal(draws))
            offset = offset_rng.standard_normal(draws)
            if block.ndim == 4:
                log_gain, offset = log_gain[..., None], offset[..., None]
            rig = Rig(np.exp(log_gain).astype(np.float32), offset.astype(np.float32), float(protocol.baseline),
                      not protocol.chronic)
            if presentations == 1:
                yield position, networks, model.apply(chosen, float(protocol.noise), rig, noise_rng)
            else:
                yield position, networks, np.stack([model.apply(chosen, float(protocol.noise), rig, noise_rng)
                                                    for _ in range(presentations)], axis=-1)


def learning_curve(bank: TrajectoryBank, protocol: RecordingProtocol) -> np.ndarray:
    """(N, S, 2) float32: training loss and metric at the protocol's sessions (the control's only input)."""
    sessions = protocol.session_indices(bank["loss"].shape[1])
    curve = np.stack([np.asarray(bank["loss"])[:, sessions], np.asarray(bank["metric"])[:, sessions]], axis=-1)
    return curve.astype(np.float32)


def virtual_recording(bank: TrajectoryBank, protocol: RecordingProtocol) -> Recording:
    """Apply ``protocol`` to ``bank`` (a ``simulator.bank.TrajectoryBank``): choose sessions, units and probes
    with the protocol's seed, apply the rig's unknown gains and measurement noise, and return the measured values
    (all networks in memory; ``advisor.science.features.featurize`` works chunk by chunk instead).

    Raises:
        AdvisorError: the protocol asks for more units, sessions or probes than the bank recorded.
    """
    parts: list[list[np.ndarray]] = [[] for _ in protocol.layers]
    for position, _, values in record_chunks(bank, protocol):
        parts[position].append(values)
    sessions = protocol.session_indices(bank[protocol.observable].shape[1])
    return Recording([np.concatenate(p, axis=0) for p in parts], sessions, tuple(protocol.layers),
                     learning_curve(bank, protocol))

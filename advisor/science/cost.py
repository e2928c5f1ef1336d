"""Recording modalities and their cost model: what a technique can measure, and what a protocol costs with it.

A :class:`Modality` (ephys, two-photon imaging, spine imaging, paired patch, or a user's own) is read from a TOML
file in ``presets/modalities/`` or anywhere else. It states which observables the technique measures, in which
layer groups, from how many units over how many sessions, how noisy one stimulus presentation is and how many
presentations a session can average, and what a session costs. The design search explores
:meth:`Modality.search_space` and prices each candidate with :meth:`Modality.cost`.

Noise and repeats. Averaging ``k`` presentations divides a Gaussian noise SD by ``sqrt(k)`` and multiplies a
Poisson spike count by ``k``; both are the power law ``level(k) = single_trial_noise * k**exponent``. Lower noise
is therefore bought with repeats, and repeats cost rig time.

Cost (per network, in the modality's ``cost_unit``; every built-in uses hours of experimenter time)::

    cost = n_sessions * (session_overhead + n_units * (per_unit_cost + repeats * per_unit_repeat_cost))

Why not ``n_sessions * (session_overhead + n_units * per_unit_cost) * repeats``: repeating a stimulus does not
repeat the surgery, the head-fixation, the probe insertion or the search for a field of view, so the session
overhead is paid once per session; likewise isolating, patching or curating a unit is paid once per unit and
session. Only acquisition time grows with repeats: one more pass of the stimulus set for every field of view,
insertion or patched cell, i.e. a time per unit per presentation (the pass's duration divided by the units
acquired in parallel). Under the simpler form ten repeats would cost ten surgeries, and overhead-heavy
techniques (patch clamp) would be priced out of averaging entirely. The linear per-unit terms approximate
"one more probe/field of view per few hundred units"; the figures are order-of-magnitude planning numbers.

Unknown gains. No rig knows a unit's absolute gain: a modality's ``[gains]`` table gives the SDs of the log gain
per animal, area and unit (synapse) and the baseline (see ``advisor.science.protocol.RecordingProtocol``), and
:meth:`Modality.protocol_kwargs` hands them to a protocol. A modality without a ``[gains]`` table gets the
library's default (``advisor.science.protocol.DEFAULT_GAIN_SD``, baseline 0), never a rig that knows absolute units.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from advisor.errors import AdvisorError
from advisor.science.protocol import (
    DEFAULT_GAIN_SD,
    GAIN_LEVELS,
    GROUPS,
    NOISE_MODELS,
    OBSERVABLES,
    RecordingProtocol,
    gain_problem,
)
from simulator.presets import is_int, is_number, is_str_list, toml_type_name
from simulator.text import did_you_mean, read_toml

__all__ = [
    "COST_FORMULA",
    "DEFAULT_MODALITY",
    "SAMPLING",
    "Modality",
    "Price",
    "SearchSpace",
    "list_modalities",
    "load_modality",
    "modality_dir",
]

DEFAULT_MODALITY = "generic"
"""The modality ``advisor plan`` uses when none is given: every observable, neutral costs."""

SAMPLING = ("chronic", "acute")
"""Sampling modes: the same units every session (chronic) or new units each session (acute)."""

COST_FORMULA = "n_sessions * (session_overhead + n_units * (per_unit_cost + repeats * per_unit_repeat_cost))"
"""The cost model in one line, for reports and tracking."""

AVERAGING_EXPONENT = {"gaussian": -0.5, "poisson": 1.0}
"""How averaging k presentations changes each noise model's level: level(k) = level(1) * k**exponent.
A negative exponent means lower levels are better (an SD); a positive one, higher levels (a spike count)."""

_TOLERANCE = 1e-9
"""Relative slack in repeats_for, so that rounding in noise_for(k) never asks for k + 1 repeats."""

_NUMBERS = ("single_trial_noise", "max_repeats", "max_units", "max_sessions", "session_overhead", "per_unit_cost",
            "per_unit_repeat_cost", "per_animal_cost")
_GAIN_KEYS = (*GAIN_LEVELS, "baseline")
"""Keys of a modality file's ``[gains]`` table: the SDs of the log gain per level, and the baseline."""
_DOCUMENTED = (*_NUMBERS, "layers", "sampling", *(f"gains.{k}" for k in _GAIN_KEYS))
"""Fields an ``assumptions`` entry may document: every number, the two access decisions and the gains."""


def _subset_error(key: str, values: Any, allowed: tuple[str, ...]) -> str | None:
    """The message for ``values`` that is not a non-empty, duplicate-free tuple from ``allowed``, else None."""
    if isinstance(values, tuple) and values and set(values) <= set(allowed) and len(set(values)) == len(values):
        return None
    got = f"[{', '.join(map(str, values))}]" if isinstance(values, tuple) else repr(values)
    return f"{key} must be a non-empty subset of {', '.join(allowed)} without repeats; got {got}"


@dataclass(frozen=True)
class SearchSpace:
    """The protocols a design search may explore with one modality under the user's bounds.

    Attributes:
        modality: the modality's key.
        observables: the observables to search over (one, when the user asked for one).
        layers: the layer groups the modality reaches; a protocol records a non-empty subset.
        units: (low, high) units per network, inclusive.
        sessions: (low, high) sessions, inclusive.
        repeats: (low, high) presentations averaged per session, inclusive.
        noise_model: the modality's noise model.
        noise: the noise level at ``repeats[0]`` and at ``repeats[1]`` presentations.
        sampling: the sampling modes possible (``chronic``, ``acute``).
    """

    modality: str
    observables: tuple[str, ...]
    layers: tuple[str, ...]
    units: tuple[int, int]
    sessions: tuple[int, int]
    repeats: tuple[int, int]
    noise_model: str
    noise: tuple[float, float]
    sampling: tuple[str, ...]


@dataclass(frozen=True)
class Price:
    """What a protocol costs with a modality.

    Attributes:
        repeats: presentations averaged per session to reach the protocol's noise level.
        cost: the protocol's cost in ``cost_unit``.
        cost_unit: the modality's cost unit.
    """

    repeats: int
    cost: float
    cost_unit: str


@dataclass(frozen=True)
class Modality:
    """A recording technique: what it measures, its limits, its noise, and its cost model. Frozen; validated.

    Attributes:
        key: the registry key (a preset's file stem), the same string in TOML, CLI and MLflow.
        name: human name ("two-photon calcium imaging").
        description: one line for catalogs.
        observables: the observables it measures, a subset of ``weights``, ``activations``, ``activity_change``.
        noise_model: ``gaussian`` or ``poisson`` (must apply to every observable; see ``advisor.science.protocol``).
        single_trial_noise: the noise level of ONE presentation: Gaussian SD relative to each unit's spread, or
            Poisson mean spike count per stimulus.
        max_repeats: presentations a session can average.
        max_units: units (synapses, for weights) recordable per network and session.
        max_sessions: sessions over learning.
        session_overhead: cost paid once per session.
        per_unit_cost: cost per unit and session, paid once whatever the repeats (isolating, patching, curating).
        per_unit_repeat_cost: cost per unit, session and presentation (acquisition time).
        layers: the layer groups it reaches.
        sampling: ``chronic`` (same units every session) and/or ``acute`` (new units each session).
        cost_unit: the unit of every cost ("hours").
        per_animal_cost: cost paid once per animal whatever the protocol (surgery, habituation, training the
            animal on the task, histology); needed to plan several animals (``advisor plan --max-animals``), where
            a plan's cost is ``n_animals × (per_animal_cost + cost per animal of the recording)``. None: not
            given (plans of one animal do not need it).
        gain_sd: SDs of the log of the unknown gain per animal, area and unit (synapse); the ``[gains]`` table's
            ``animal``, ``area`` and ``unit``. Default: the library's (``DEFAULT_GAIN_SD``).
        baseline: the unknown baseline (``[gains]`` ``baseline``): Gaussian, the SD of each unit's additive offset
            in units of its spread (F0, neuropil); Poisson, the spontaneous rate as a fraction of the mean evoked
            rate. 0: none.
        assumptions: where each number comes from, one sentence per field name.
        source: the file it was loaded from ("" when built in code); not compared.
    """

    key: str
    name: str
    description: str
    observables: tuple[str, ...]
    noise_model: str
    single_trial_noise: float
    max_repeats: int
    max_units: int
    max_sessions: int
    session_overhead: float
    per_unit_cost: float
    per_unit_repeat_cost: float
    layers: tuple[str, ...] = GROUPS
    sampling: tuple[str, ...] = SAMPLING
    cost_unit: str = "hours"
    gain_sd: tuple[float, float, float] = DEFAULT_GAIN_SD
    baseline: float = 0.0
    assumptions: Mapping[str, str] = field(default_factory=dict, hash=False)
    source: str = field(default="", compare=False)
    per_animal_cost: float | None = None

    def __post_init__(self) -> None:
        for name in ("observables", "layers", "sampling", "gain_sd"):
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "assumptions", MappingProxyType(dict(self.assumptions)))
        problem = self._problem()
        if problem:
            raise AdvisorError(problem)

    def _problem(self) -> str | None:
        """The first invalid field, as a one-line message, or None."""
        for name in ("key", "name", "cost_unit"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip() or "\n" in value:
                return f"{name} must be a non-empty string on one line; got {value!r}"
        if not isinstance(self.description, str) or "\n" in self.description:
            return f"description must be a string on one line; got {self.description!r}"
        for name, allowed in (("observables", OBSERVABLES), ("layers", GROUPS), ("sampling", SAMPLING)):
            message = _subset_error(name, getattr(self, name), allowed)
            if message:
                return message
        allowed_models = tuple(m for m in AVERAGING_EXPONENT if m in NOISE_MODELS)
        if self.noise_model not in allowed_models:
            return f"noise_model must be one of {', '.join(allowed_models)}; got {self.noise_model!r}"
        model = NOISE_MODELS.get(self.noise_model)
        unmeasurable = [o for o in self.observables if o not in model.observables]
        if unmeasurable:
            return (f"noise_model {self.noise_model!r} applies to {', '.join(model.observables)} only; "
                    f"observables include {unmeasurable[0]!r}")
        for name in ("max_repeats", "max_units", "max_sessions"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                return f"{name} must be an integer >= 1; got {value!r}"
        lo, hi = model.level_range
        lo_text = f"({lo:g}" if lo == 0 else f"[{lo:g}"
        stn = self.single_trial_noise
        if not (is_number(stn) and math.isfinite(stn) and lo <= stn <= hi and stn > 0):
            return (f"single_trial_noise must be a number in {lo_text}, {hi:g}] for the {self.noise_model} model "
                    f"({model.level_name}); got {stn!r}")
        best = self.noise_for(self.max_repeats)
        if not lo <= best <= hi:
            return (f"max_repeats = {self.max_repeats} takes the {self.noise_model} level to {best:g}, outside "
                    f"[{lo:g}, {hi:g}] ({model.level_name}); lower max_repeats or single_trial_noise")
        for name in ("session_overhead", "per_unit_cost", "per_unit_repeat_cost"):
            value = getattr(self, name)
            if not (is_number(value) and math.isfinite(value) and value >= 0):
                return f"{name} must be a finite number >= 0 ({self.cost_unit}); got {value!r}"
        pac = self.per_animal_cost
        if pac is not None and not (is_number(pac) and math.isfinite(pac) and pac >= 0):
            return f"per_animal_cost must be a finite number >= 0 ({self.cost_unit}); got {pac!r}"
        if self.per_unit_repeat_cost == 0:
            return "per_unit_repeat_cost must be > 0: every presentation takes acquisition time; got 0"
        gains = gain_problem(self.gain_sd, self.baseline, "gains",
                             ("gains.animal", "gains.area", "gains.unit", "gains.baseline"))
        if gains:
            return gains
        for name, text in self.assumptions.items():
            if name not in _DOCUMENTED:
                hint = did_you_mean(str(name), _DOCUMENTED)
                return f"assumptions.{name}: no such field to document{hint}; allowed: {', '.join(_DOCUMENTED)}"
            if not isinstance(text, str) or not text.strip() or "\n" in text:
                return f"assumptions.{name} must be one non-empty line of text; got {text!r}"
        return None

    # ------------------------------------------------------------------------------------------ noise
    @property
    def level_name(self) -> str:
        """What the noise level measures ("noise SD / spread", "mean spikes per stimulus")."""
        return NOISE_MODELS.get(self.noise_model).level_name

    @property
    def best_noise(self) -> float:
        """The best level reachable: ``noise_for(max_repeats)`` (lowest SD, or highest spike count)."""
        return self.noise_for(self.max_repeats)

    def noise_for(self, repeats: int) -> float:
        """The noise level after averaging ``repeats`` presentations.

        Args:
            repeats: presentations averaged, in [1, max_repeats].

        Returns:
            Gaussian: ``single_trial_noise / sqrt(repeats)``; Poisson: ``single_trial_noise * repeats``.

        Raises:
            AdvisorError: ``repeats`` is not an integer in [1, max_repeats].
        """
        if not is_int(repeats) or not 1 <= repeats <= self.max_repeats:
            raise AdvisorError(f"repeats must be an integer in [1, {self.max_repeats}] for the {self.key} "
                               f"modality; got {repeats!r}")
        return float(self.single_trial_noise * repeats ** AVERAGING_EXPONENT[self.noise_model])

    def repeats_for(self, noise: float) -> int:
        """The fewest presentations whose average reaches ``noise`` or better.

        "Better" is a lower Gaussian SD, or a higher Poisson spike count. A level worse than one presentation's
        needs one presentation.

        Args:
            noise: the wanted level, in the noise model's range (see ``advisor.science.protocol.NOISE_MODELS``).

        Returns:
            The smallest ``k`` in [1, max_repeats] with ``noise_for(k)`` at ``noise`` or better.

        Raises:
            AdvisorError: ``noise`` is not a level of the model, or is out of reach within max_repeats (the message
                names the best reachable level).
        """
        lo, hi = NOISE_MODELS.get(self.noise_model).level_range
        if not (is_number(noise) and math.isfinite(noise) and lo <= noise <= hi):
            raise AdvisorError(f"noise for the {self.noise_model} model ({self.level_name}) must be in "
                               f"[{lo:g}, {hi:g}]; got {noise!r}")
        exponent = AVERAGING_EXPONENT[self.noise_model]
        ratio = noise / self.single_trial_noise
        log_k = math.log(ratio) / exponent if ratio > 0 else math.inf  # noise 0 needs infinitely many repeats
        if log_k > math.log(self.max_repeats) + _TOLERANCE:
            raise AdvisorError(
                f"{self.noise_model} noise {noise:g} ({self.level_name}) is out of reach for the {self.key} "
                f"modality: {self.max_repeats} repeats (max_repeats) reach {self.best_noise:.3g} at best")
        return max(1, math.ceil(math.exp(max(log_k, 0.0)) * (1 - _TOLERANCE)))

    def protocol_kwargs(self) -> dict[str, Any]:
        """The rig's unknown gains as :class:`~advisor.science.protocol.RecordingProtocol` keywords:
        ``{"gain_sd": (animal, area, unit), "baseline": b}``."""
        return {"gain_sd": tuple(float(v) for v in self.gain_sd), "baseline": float(self.baseline)}

    # ------------------------------------------------------------------------------------------- cost
    def cost(self, n_units: int, n_sessions: int, repeats: int) -> float:
        """What recording ``n_units`` over ``n_sessions``, averaging ``repeats`` presentations, costs.

        ``n_sessions * (session_overhead + n_units * (per_unit_cost + repeats * per_unit_repeat_cost))``: the
        session overhead and the per-unit set-up are paid once per session, acquisition time once per unit and
        presentation (see the module docstring for why repeats do not multiply the overhead). Limits are not
        checked here (see :meth:`check`), so reports can price what a modality cannot do.

        Args:
            n_units: units (synapses) per network, >= 1.
            n_sessions: sessions, >= 1.
            repeats: presentations averaged per session, >= 1.

        Returns:
            The cost in ``cost_unit``; positive and strictly increasing in each argument.

        Raises:
            AdvisorError: an argument is not a positive integer.
        """
        for name, value in (("n_units", n_units), ("n_sessions", n_sessions), ("repeats", repeats)):
            if not is_int(value) or value < 1:
                raise AdvisorError(f"{name} must be a positive integer; got {value!r}")
        per_unit = self.per_unit_cost + repeats * self.per_unit_repeat_cost
        return float(n_sessions * (self.session_overhead + n_units * per_unit))

    def total_cost(self, n_units: int, n_sessions: int, repeats: int, n_animals: int) -> float:
        """What recording ``n_animals`` animals with the protocol costs: ``n_animals × (per_animal_cost +
        cost(n_units, n_sessions, repeats))``.

        Raises:
            AdvisorError: ``n_animals`` is not a positive integer, or the modality has no ``per_animal_cost``
                (one line naming the file).
        """
        if not is_int(n_animals) or n_animals < 1:
            raise AdvisorError(f"n_animals must be a positive integer; got {n_animals!r}")
        if self.per_animal_cost is None:
            raise AdvisorError(f"modality {self.source or self.key!r} has no per_animal_cost (surgery and training "
                               f"per animal, {self.cost_unit}); add it to plan several animals")
        return float(n_animals * (self.per_animal_cost + self.cost(n_units, n_sessions, repeats)))

    # ------------------------------------------------------------------------------------------ limits
    def check(self, observable: str, n_units: int, n_sessions: int, layers: tuple[str, ...] | list[str],
              chronic: bool | None = None) -> None:
        """Raise if this modality cannot record the given protocol dimensions.

        Args:
            observable: the observable measured.
            n_units: units (synapses) per network.
            n_sessions: sessions.
            layers: the layer groups recorded.
            chronic: the sampling mode (True: chronic, False: acute, None: not checked).

        Raises:
            AdvisorError: naming the limit that is exceeded and what the modality allows.
        """
        if observable not in self.observables:
            raise self._cannot_measure(observable)
        for name, value, limit in (("n_units", n_units, "max_units"), ("n_sessions", n_sessions, "max_sessions")):
            most = getattr(self, limit)
            if not is_int(value) or not 1 <= value <= most:
                raise AdvisorError(f"{name} must be an integer in [1, {most}] for the {self.key} modality "
                                   f"({limit}); got {value!r}")
        layers = tuple(layers)
        if _subset_error("layers", layers, GROUPS) or any(g not in self.layers for g in layers):
            raise AdvisorError(f"layers must be a non-empty subset of {', '.join(self.layers)} for the {self.key} "
                               f"modality; got [{', '.join(layers)}]")
        if chronic is not None and SAMPLING[0 if chronic else 1] not in self.sampling:
            raise AdvisorError(f"{SAMPLING[0 if chronic else 1]} sampling is not possible with the {self.key} "
                               f"modality; it allows {', '.join(self.sampling)}")

    def _cannot_measure(self, observable: str) -> AdvisorError:
        return AdvisorError(f"the {self.key} modality ({self.name}) cannot measure {observable}; "
                            f"it measures {', '.join(self.observables)}")

    def price(self, protocol: RecordingProtocol) -> Price:
        """Check ``protocol`` against this modality and price it.

        Args:
            protocol: the protocol; its noise model must be the modality's and its level reachable.

        Returns:
            The repeats its noise level needs and its cost.

        Raises:
            AdvisorError: a limit is exceeded, the noise model differs, or the level is out of reach.
        """
        self.check(protocol.observable, protocol.n_units, protocol.n_sessions, protocol.layers, protocol.chronic)
        if protocol.noise_model != self.noise_model:
            raise AdvisorError(f"noise_model must be {self.noise_model!r} for the {self.key} modality; "
                               f"got {protocol.noise_model!r}")
        repeats = self.repeats_for(protocol.noise)
        return Price(repeats, self.cost(protocol.n_units, protocol.n_sessions, repeats), self.cost_unit)

    def search_space(self, max_units: int | None = None, max_sessions: int | None = None,
                     observable: str | None = None) -> SearchSpace:
        """The protocols a design search may explore: the user's bounds intersected with this modality's limits.

        Args:
            max_units: the user's largest unit count (None: the modality's).
            max_sessions: the user's largest session count (None: the modality's).
            observable: the one observable to search (None: every observable the modality measures).

        Returns:
            The bounds, inclusive.

        Raises:
            AdvisorError: a bound is not a positive integer, or the modality cannot measure ``observable`` (the
                message names the ones it can).
        """
        for name, value in (("max_units", max_units), ("max_sessions", max_sessions)):
            if value is not None and (not is_int(value) or value < 1):
                raise AdvisorError(f"{name} must be a positive integer; got {value!r}")
        if observable is not None and observable not in OBSERVABLES:
            raise AdvisorError(f"observable must be one of {', '.join(OBSERVABLES)}; got {observable!r}")
        if observable is not None and observable not in self.observables:
            raise self._cannot_measure(observable)
        return SearchSpace(
            modality=self.key,
            observables=(observable,) if observable else self.observables,
            layers=self.layers,
            units=(1, min(self.max_units, max_units or self.max_units)),
            sessions=(1, min(self.max_sessions, max_sessions or self.max_sessions)),
            repeats=(1, self.max_repeats),
            noise_model=self.noise_model,
            noise=(self.noise_for(1), self.best_noise),
            sampling=self.sampling,
        )

    # -------------------------------------------------------------------------------------- reporting
    def describe(self) -> str:
        """One line for catalogs (``advisor compare``, reports)."""
        mode = " or ".join(self.sampling)
        return (f"{self.key}: {self.name}; measures {', '.join(self.observables)} in {', '.join(self.layers)}; "
                f"up to {self.max_units} units and {self.max_sessions} sessions, {mode}; {self.noise_model} noise "
                f"({self.level_name}) {self.noise_for(1):.3g} at 1 presentation to {self.best_noise:.3g} at "
                f"{self.max_repeats}; {self.session_overhead:g} + {self.per_unit_cost:g}/unit + "
                f"{self.per_unit_repeat_cost:g}/unit/repeat {self.cost_unit} per session; unknown gains (log SD) "
                + ", ".join(f"{level} {sd:g}" for level, sd in zip(GAIN_LEVELS, self.gain_sd, strict=True))
                + f", baseline {self.baseline:g}")

    def to_dict(self) -> dict[str, Any]:
        """Every field plus the derived noise range and the cost formula, JSON-ready (lists, not tuples)."""
        return {
            "key": self.key,
            "name": self.name,
            "description": self.description,
            "observables": list(self.observables),
            "layers": list(self.layers),
            "sampling": list(self.sampling),
            "noise_model": self.noise_model,
            "level_name": self.level_name,
            "single_trial_noise": float(self.single_trial_noise),
            "max_repeats": self.max_repeats,
            "best_noise": self.best_noise,
            "max_units": self.max_units,
            "max_sessions": self.max_sessions,
            "session_overhead": float(self.session_overhead),
            "per_unit_cost": float(self.per_unit_cost),
            "per_unit_repeat_cost": float(self.per_unit_repeat_cost),
            "cost_unit": self.cost_unit,
            "cost_formula": COST_FORMULA,
            "per_animal_cost": None if self.per_animal_cost is None else float(self.per_animal_cost),
            "gain_sd": [float(v) for v in self.gain_sd],
            "baseline": float(self.baseline),
            "assumptions": dict(self.assumptions),
            "source": self.source,
        }


# --------------------------------------------------------------------------------------------- loading
_TYPES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    # TOML key: (expected, check) -- TOML keys are the Modality's field names
    "name": ("a string", lambda v: isinstance(v, str)),
    "description": ("a string", lambda v: isinstance(v, str)),
    "observables": ("an array of strings", is_str_list),
    "layers": ("an array of strings", is_str_list),
    "sampling": ("an array of strings", is_str_list),
    "noise_model": ("a string", lambda v: isinstance(v, str)),
    "single_trial_noise": ("a number", is_number),
    "max_repeats": ("an integer", is_int),
    "max_units": ("an integer", is_int),
    "max_sessions": ("an integer", is_int),
    "session_overhead": ("a number", is_number),
    "per_unit_cost": ("a number", is_number),
    "per_unit_repeat_cost": ("a number", is_number),
    "cost_unit": ("a string", lambda v: isinstance(v, str)),
    "per_animal_cost": ("a number", is_number),
    "gains": ("a table of animal, area, unit (and baseline) = number (a [gains] section)",
              lambda v: isinstance(v, dict)),
    "assumptions": ("a table of field = \"sentence\" (an [assumptions] section)", lambda v: isinstance(v, dict)),
}
_OPTIONAL = ("layers", "sampling", "cost_unit", "per_animal_cost", "gains", "assumptions")


def _gain_fields(gains: dict[str, Any], file: str) -> dict[str, Any]:
    """A ``[gains]`` table as Modality fields; raises naming the file and the dotted key."""
    for key, value in gains.items():
        if key not in _GAIN_KEYS:
            hint = did_you_mean(key, _GAIN_KEYS, shown=lambda k: f"gains.{k}")
            raise AdvisorError(f"{file}: unknown key 'gains.{key}'{hint}; allowed in [gains]: {', '.join(_GAIN_KEYS)}")
        if not is_number(value):
            raise AdvisorError(f"{file}: gains.{key} must be a number; got {value!r} ({toml_type_name(value)})")
    missing = [f"gains.{k}" for k in GAIN_LEVELS if k not in gains]
    if missing:
        raise AdvisorError(f"{file}: missing required key{'s' * (len(missing) > 1)} {', '.join(missing)}")
    return {"gain_sd": tuple(gains[k] for k in GAIN_LEVELS), "baseline": gains.get("baseline", 0.0)}


def _flat_assumptions(assumptions: dict[str, Any]) -> dict[str, Any]:
    """``[assumptions]`` with TOML's dotted keys (``gains.unit = "..."``, a nested table) as ``"gains.unit"``."""
    flat: dict[str, Any] = {}
    for key, value in assumptions.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in _flat_assumptions(value).items()})
        else:
            flat[key] = value
    return flat


def modality_dir() -> Path:
    """The folder of built-in modalities, ``presets/modalities/`` (package data of ``simulator``, next to the
    built-in populations: :func:`simulator.presets.preset_dir`)."""
    from simulator.presets import preset_dir

    return preset_dir() / "modalities"


def list_modalities() -> list[str]:
    """Keys (file stems) of the built-in modalities, sorted."""
    return sorted(p.stem for p in modality_dir().glob("*.toml") if p.is_file())


def _resolve(name_or_path: str | os.PathLike[str]) -> Path:
    """The file a built-in key or a path refers to (a text ending in .toml or holding a separator is a path)."""
    text = os.fspath(name_or_path)
    builtins = list_modalities()
    known = f"built-in modalities: {', '.join(builtins)}"
    if not (text.endswith(".toml") or "/" in text or os.sep in text):
        if text in builtins:
            return modality_dir() / f"{text}.toml"
        hint = did_you_mean(text, builtins)
        raise AdvisorError(f"unknown modality {text!r}{hint}; {known}; or give the path of a .toml file")
    path = Path(text).expanduser()
    if not path.is_file():
        reason = "is not a file" if path.exists() else "modality file does not exist"
        raise AdvisorError(f"{text}: {reason}; {known}; or give the path of a .toml file")
    return path


def load_modality(name_or_path: str | os.PathLike[str]) -> Modality:
    """Load a modality from a built-in key (see :func:`list_modalities`) or a TOML file's path.

    The file's keys are :class:`Modality`'s field names (``key`` is the file's stem and ``source`` its path),
    except the gains: a ``[gains]`` table with ``animal``, ``area``, ``unit`` (SDs of the log gain) and optionally
    ``baseline`` becomes ``gain_sd`` and ``baseline``. ``layers``, ``sampling``, ``cost_unit``, ``gains`` and
    ``assumptions`` are optional; ``[assumptions]`` documents gains as ``gains.unit = "..."``.

    Args:
        name_or_path: a built-in key such as ``ephys``, or a path ending in ``.toml``.

    Returns:
        The validated modality.

    Raises:
        AdvisorError: one line naming the file, the dotted key and what is allowed, for an unknown key or name, a
            missing or unreadable file, malformed TOML, a missing or misspelt key, a wrong type or a bad value.
    """
    path = _resolve(name_or_path)
    file = str(path)
    data = read_toml(path, "modality", AdvisorError)
    for key, value in data.items():
        if key not in _TYPES:
            raise AdvisorError(f"{file}: unknown key {key!r}{did_you_mean(key, _TYPES)}; allowed: {', '.join(_TYPES)}")
        expected, ok = _TYPES[key]
        if not ok(value):
            raise AdvisorError(f"{file}: {key} must be {expected}; got {value!r} ({toml_type_name(value)})")
    missing = [k for k in _TYPES if k not in data and k not in _OPTIONAL]
    if missing:
        raise AdvisorError(f"{file}: missing required key{'s' * (len(missing) > 1)} {', '.join(missing)}")
    fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    if "gains" in fields:  # else the Modality's defaults
        fields.update(_gain_fields(fields.pop("gains"), file))
    if "assumptions" in fields:
        fields["assumptions"] = _flat_assumptions(fields["assumptions"])
    try:
        return Modality(key=path.stem, source=file, **fields)
    except AdvisorError as e:
        raise AdvisorError(f"{file}: {e}") from None

"""One animal's recording, real or exported from a simulation, and how it is matched to a plan's protocol.

A :class:`LabRecording` holds what a rig gives after spike sorting or ROI extraction: per session, unit and probe
stimulus the response to each presentation, each unit's layer group, and each session's position in learning.
It is read from the documented ``.npz`` layout (:func:`read_npz`, :func:`write_npz`) or from NWB files
(``advisor.science.nwb``); :func:`match_protocol` checks it against a protocol and turns it into the per-group
arrays the statistics are computed from, exactly as a virtual recording of the bank is.

The ``.npz`` layout (one animal, all its sessions, one file)::

    responses         (sessions, units, stimuli[, presentations]) float   responses per presentation (dF/F,
                                                                          spike counts, ...); NaN is refused
    unit_group        (units,) str                                        early, middle or deep
    session_progress  (sessions,) float in [0, 1]                         0 = before training, 1 = its end
    behaviour         (sessions, 2) float, optional                       loss and task metric per session
    unit_id           (units,) int, optional                              the rig's unit / ROI ids
    stimulus_id       (stimuli,) int, optional                            the probe stimuli's ids

A recording without a presentations axis holds one presentation per stimulus. How presentations combine follows
the protocol's noise model, as the simulation defines its noise: Gaussian (imaging) responses are averaged, so
``r`` presentations divide the noise SD by √r; Poisson (spike count) responses are summed, so the count per
stimulus grows with ``r`` (``advisor.science.cost.Modality.noise_for``).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from advisor.errors import AdvisorError
from simulator.constants import GROUPS

__all__ = ["NPZ_KEYS", "LabRecording", "ProtocolMatch", "match_protocol", "planned_progress", "read_npz",
           "write_npz"]

NPZ_KEYS = ("responses", "unit_group", "session_progress", "behaviour", "unit_id", "stimulus_id")
"""The arrays of the ``.npz`` layout; the first three are required."""

UNIT_SEED = 31
"""Stream of the protocol's seed that picks a subset of a recording's units when it has more than planned."""


@dataclass(frozen=True)
class LabRecording:
    """One animal's recording.

    Attributes:
        responses: (S, U, P, R) float64, the response of each unit to each presentation of each stimulus in each
            session (R presentations; 1 when the source has none).
        unit_group: (U,) str, each unit's layer group (early, middle, deep).
        session_progress: (S,) float, each session's position in learning (0 before training, 1 at its end).
        source: where it was read from (file names), for messages and reports.
        behaviour: (S, 2) loss and task metric per session, or None.
        unit_id: (U,) int ids of the units (the rig's), for reports.
        stimulus_id: (P,) int ids of the stimuli.
    """

    responses: np.ndarray
    unit_group: np.ndarray
    session_progress: np.ndarray
    source: str
    behaviour: np.ndarray | None = None
    unit_id: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    stimulus_id: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __post_init__(self) -> None:
        r = np.asarray(self.responses, dtype=np.float64)
        if r.ndim == 3:
            r = r[..., None]
        where = self.source
        if r.ndim != 4:
            raise AdvisorError(f"{where}: responses must be (sessions, units, stimuli[, presentations]); got "
                               f"{r.ndim} dimensions")
        s, u, p, k = r.shape
        if min(s, u, p, k) < 1:
            raise AdvisorError(f"{where}: responses has an empty axis (shape {r.shape})")
        if not np.isfinite(r).all():
            bad = np.argwhere(~np.isfinite(r))[0]
            raise AdvisorError(f"{where}: responses hold {int((~np.isfinite(r)).sum())} non-finite values (first: "
                               f"session {bad[0] + 1}, unit {bad[1] + 1}, stimulus {bad[2] + 1}); responses must be "
                               "finite numbers")
        groups = np.asarray(self.unit_group).astype(str)
        if groups.shape != (u,):
            raise AdvisorError(f"{where}: unit_group must hold one layer group per unit ({u}); got shape "
                               f"{groups.shape}")
        unknown = sorted({str(g) for g in groups} - set(GROUPS))
        if unknown:
            raise AdvisorError(f"{where}: unit_group has {', '.join(map(repr, unknown))}; allowed: "
                               f"{', '.join(GROUPS)} (map areas to layer groups with --area-map)")
        progress = np.asarray(self.session_progress, dtype=np.float64)
        if progress.shape != (s,):
            raise AdvisorError(f"{where}: session_progress must hold one number per session ({s}); got shape "
                               f"{progress.shape}")
        if not (np.isfinite(progress).all() and (progress >= 0).all() and (progress <= 1).all()):
            raise AdvisorError(f"{where}: session_progress must be numbers in [0, 1] (0 = before training, 1 = its "
                               f"end); got {', '.join(f'{v:g}' for v in progress)}")
        if s > 1 and not (np.diff(progress) > 0).all():
            raise AdvisorError(f"{where}: session_progress must increase from session to session; got "
                               f"{', '.join(f'{v:g}' for v in progress)}")
        behaviour = self.behaviour
        if behaviour is not None:
            behaviour = np.asarray(behaviour, dtype=np.float64)
            if behaviour.shape != (s, 2):
                raise AdvisorError(f"{where}: behaviour must be (sessions, 2) = ({s}, 2), loss and task metric; got "
                                   f"shape {behaviour.shape}")
        unit_id = np.asarray(self.unit_id, dtype=np.int64) if len(self.unit_id) else np.arange(u, dtype=np.int64)
        stimulus_id = (np.asarray(self.stimulus_id, dtype=np.int64) if len(self.stimulus_id)
                       else np.arange(p, dtype=np.int64))
        if unit_id.shape != (u,) or stimulus_id.shape != (p,):
            raise AdvisorError(f"{where}: unit_id must hold {u} ids and stimulus_id {p}; got {unit_id.shape[0]} "
                               f"and {stimulus_id.shape[0]}")
        for name, value in (("responses", r), ("unit_group", groups), ("session_progress", progress),
                            ("behaviour", behaviour), ("unit_id", unit_id), ("stimulus_id", stimulus_id)):
            object.__setattr__(self, name, value)

    @property
    def n_sessions(self) -> int:
        return int(self.responses.shape[0])

    @property
    def n_presentations(self) -> int:
        return int(self.responses.shape[3])

    def units_in(self, group: str) -> int:
        """Units recorded in ``group``."""
        return int(np.sum(self.unit_group == group))


# ----------------------------------------------------------------------------------------------- npz
def write_npz(recording: LabRecording, path: str | Path) -> Path:
    """Write ``recording`` in the documented ``.npz`` layout (atomically: a temporary file, then a rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.npz")
    arrays: dict[str, Any] = {"responses": recording.responses.astype(np.float32),
                              "unit_group": recording.unit_group.astype("U6"),
                              "session_progress": recording.session_progress,
                              "unit_id": recording.unit_id, "stimulus_id": recording.stimulus_id}
    if recording.behaviour is not None:
        arrays["behaviour"] = recording.behaviour
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)
    return path


def read_npz(path: str | Path) -> LabRecording:
    """Read one animal's recording from the ``.npz`` layout (module docstring).

    Raises:
        AdvisorError: the file is missing, not an ``.npz`` archive, lacks a required array, has an unknown one,
            or its arrays do not fit together (one line naming the file and what is expected).
    """
    path = Path(path)
    if not path.is_file():
        raise AdvisorError(f"recording {path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: np.asarray(data[key]) for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise AdvisorError(f"recording {path}: not a readable .npz archive ({type(e).__name__}); expected the "
                           f"layout of `advisor identify --help` (arrays {', '.join(NPZ_KEYS[:3])})") from None
    missing = [key for key in NPZ_KEYS[:3] if key not in arrays]
    if missing:
        raise AdvisorError(f"recording {path}: missing array {', '.join(missing)}; an .npz recording holds "
                           f"{', '.join(NPZ_KEYS[:3])} (and optionally {', '.join(NPZ_KEYS[3:])})")
    unknown = sorted(set(arrays) - set(NPZ_KEYS))
    if unknown:
        raise AdvisorError(f"recording {path}: unknown array {', '.join(unknown)}; allowed: {', '.join(NPZ_KEYS)}")
    responses = arrays["responses"]
    if not np.issubdtype(responses.dtype, np.number):
        raise AdvisorError(f"recording {path}: responses must be numbers; got dtype {responses.dtype}")
    return LabRecording(responses, arrays["unit_group"], arrays["session_progress"], str(path),
                        behaviour=arrays.get("behaviour"), unit_id=arrays.get("unit_id", np.zeros(0, np.int64)),
                        stimulus_id=arrays.get("stimulus_id", np.zeros(0, np.int64)))


# ----------------------------------------------------------------------------------------- the protocol
def planned_progress(sessions: np.ndarray, n_checkpoints: int) -> np.ndarray:
    """(S,) positions in learning (0-1) of the protocol's sessions (checkpoint indices)."""
    return np.asarray(sessions, dtype=np.float64) / max(1, n_checkpoints - 1)


def progress_tolerance(planned: np.ndarray) -> float:
    """How far a recorded session may lie from its planned position: half the smallest gap between planned
    sessions (so every recorded session maps to one planned session), at most 0.05 of learning."""
    if len(planned) < 2:
        return 0.05
    return float(min(0.05, np.min(np.diff(planned)) / 2))


@dataclass(frozen=True)
class ProtocolMatch:
    """A recording matched to a protocol.

    Attributes:
        values: per protocol layer group, (1, S, k_g, P) float32: the planned number of units (a seeded subset
            where more were recorded), presentations combined as the noise model defines.
        curve: (1, S, 2) loss and metric per session (zeros without behaviour).
        units_used: per group, the ids of the units used.
        units_recorded: per group, how many units the recording has.
        presentations_used: presentations combined per stimulus.
        notes: what was adapted (subsets), for the report.
    """

    values: list[np.ndarray]
    curve: np.ndarray
    units_used: dict[str, list[int]]
    units_recorded: dict[str, int]
    presentations_used: int
    notes: list[str]


def match_protocol(recording: LabRecording, *, layers: tuple[str, ...], units_per_group: list[int],
                   sessions: np.ndarray, n_checkpoints: int, n_stimuli: int, repeats: int, combine: str,
                   seed: int) -> ProtocolMatch:
    """Check ``recording`` against a protocol and return what its statistics are computed from.

    Sessions must be as many as planned, each within :func:`progress_tolerance` of its planned position; every
    session shows the same ``n_stimuli`` stimuli; each recorded layer group has at least its planned units (more
    are fine: a subset drawn with ``seed`` is used) and every stimulus at least ``repeats`` presentations (more are
    fine: the first ``repeats`` are used, so the noise is the planned one).

    Args:
        layers, units_per_group: the protocol's layer groups and units per group.
        sessions: the protocol's checkpoint indices; ``n_checkpoints`` the bank's.
        n_stimuli: probe stimuli per session the classifier was trained with.
        repeats: presentations per stimulus the protocol averages (Gaussian) or sums (Poisson).
        combine: ``mean`` or ``sum``.
        seed: the protocol's seed.

    Raises:
        AdvisorError: one line naming the first mismatch and what the protocol expects.
    """
    where = recording.source
    planned = planned_progress(sessions, n_checkpoints)
    if recording.n_sessions != len(planned):
        raise AdvisorError(f"{where}: {recording.n_sessions} session{'s' if recording.n_sessions != 1 else ''}; the "
                           f"protocol records {len(planned)} (at {_fractions(planned)} of learning)")
    tolerance = progress_tolerance(planned)
    for i, (got, want) in enumerate(zip(recording.session_progress, planned, strict=True)):
        if abs(got - want) > tolerance + 1e-9:
            raise AdvisorError(f"{where}: session {i + 1} lies at {got:.3g} of learning; the protocol records it at "
                               f"{want:.3g} (±{tolerance:.2g}; all: {_fractions(planned)})")
    n_p = recording.responses.shape[2]
    if n_p != n_stimuli:
        raise AdvisorError(f"{where}: {n_p} stimuli per session; the protocol shows {n_stimuli} probe stimuli in "
                           "every session")
    if recording.n_presentations < repeats:
        raise AdvisorError(f"{where}: {recording.n_presentations} presentation"
                           f"{'s' if recording.n_presentations != 1 else ''} of each stimulus; the protocol "
                           f"{'averages' if combine == 'mean' else 'sums'} {repeats}")
    rng = np.random.default_rng([seed, UNIT_SEED])
    values, used, recorded, notes = [], {}, {}, []
    for group, k in zip(layers, units_per_group, strict=True):
        rows = np.flatnonzero(recording.unit_group == group)
        recorded[group] = len(rows)
        if len(rows) < k:
            raise AdvisorError(f"{where}: {len(rows)} unit{'s' if len(rows) != 1 else ''} in the {group} layer "
                               f"group; the protocol records {k} there ({_plan_units(layers, units_per_group)})")
        if len(rows) > k:
            rows = np.sort(rng.choice(rows, k, replace=False))
            notes.append(f"{group}: {k} of the {recorded[group]} recorded units used (a random subset)")
        block = recording.responses[:, rows, :, :repeats]
        block = block.mean(axis=-1) if combine == "mean" else block.sum(axis=-1)
        values.append(block[None].astype(np.float32))
        used[group] = [int(v) for v in recording.unit_id[rows]]
    if recording.n_presentations > repeats:
        notes.append(f"the first {repeats} of {recording.n_presentations} presentations of each stimulus used")
    curve = (recording.behaviour if recording.behaviour is not None else np.zeros((len(planned), 2)))
    return ProtocolMatch(values, curve[None].astype(np.float32), used, recorded, int(repeats), notes)


def _fractions(planned: np.ndarray) -> str:
    shown = [f"{v:.3g}" for v in planned]
    return ", ".join(shown) if len(shown) <= 8 else ", ".join([*shown[:4], "...", *shown[-2:]])


def _plan_units(layers: tuple[str, ...], units: list[int]) -> str:
    return ", ".join(f"{k} {g}" for g, k in zip(layers, units, strict=True))


def combine_rule(noise_model: str) -> str:
    """How presentations combine under ``noise_model``: ``sum`` for spike counts, ``mean`` otherwise."""
    return "sum" if noise_model == "poisson" else "mean"


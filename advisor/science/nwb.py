"""Recordings in Neurodata Without Borders (NWB) files, through pynwb (the optional extra ``lr-advisor[nwb]``).

What is read (and what ``advisor export --format nwb`` writes):

* **Responses.** Two-photon imaging: the ``RoiResponseSeries`` of a ``DfOverF`` (else ``Fluorescence``) interface
  in the ``ophys`` processing module, whose ``rois`` region points into a ``PlaneSegmentation`` (the ROIs);
  the response to a presentation is the mean of its samples inside the response window. Electrophysiology: the
  file's ``units`` table; the response is the number of spikes inside the response window.
* **Presentations.** The rows of the ``trials`` table (or the intervals table named by ``intervals``), each a
  presentation of the probe stimulus in its ``stimulus`` column (any column name, ``stimulus_column``). The
  response window is the trial's own ``start_time``-``stop_time`` unless ``window`` gives (start, end) seconds
  from each trial's start.
* **Layer groups.** A column of the units table or of the ``PlaneSegmentation`` (``area`` by default) names each
  unit's area; ``area_map`` maps areas to layer groups (``{"V1": "early", "LM": "middle"}``), else the column
  must hold the group names themselves (early, middle, deep).
* **Sessions.** One file per session, or one file whose ``epochs`` table has one row per session (trials belong
  to the epoch containing their start). Each session's position in learning (0 = before training, 1 = its end)
  is the epochs table's ``learning_progress`` column (:data:`PROGRESS_COLUMN`), else ``session_progress`` (one
  number per session, in order). Several files of one animal are matched by unit (ROI) id: the units present in
  every session are used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from advisor.errors import AdvisorError
from advisor.science.recordings import LabRecording
from simulator.constants import GROUPS

__all__ = ["FLAVOURS", "PROGRESS_COLUMN", "import_pynwb", "read_nwb", "write_nwb"]

FLAVOURS = ("two_photon", "ephys")
PROGRESS_COLUMN = "learning_progress"
"""The ``epochs`` column that gives each session's position in learning."""
STIMULUS_COLUMN = "stimulus"
AREA_COLUMN = "area"
TRIAL_PERIOD_S = 1.0
"""Exported timing: one presentation per second, the stimulus on for the first half."""
STIMULUS_ON_S = 0.5
SESSION_GAP_S = 3600.0
START = datetime(2026, 1, 1, tzinfo=UTC)


def import_pynwb() -> Any:
    """pynwb, or a one-line error saying how to install it."""
    try:
        import pynwb
    except ImportError:
        raise AdvisorError("NWB files need pynwb: pip install 'lr-advisor[nwb]'") from None
    return pynwb


# ------------------------------------------------------------------------------------------------- writing
def write_nwb(recording: LabRecording, path: str | Path, *, flavour: str, identifier: str, description: str,
              seed: int = 0) -> Path:
    """Write one animal's recording (all its sessions) as one NWB file, sessions as epochs.

    Args:
        flavour: ``two_photon`` (responses as one dF/F sample per presentation of an ``RoiResponseSeries``) or
            ``ephys`` (responses, which must be non-negative integer counts, as spike times spread uniformly over
            each presentation's stimulus window of a ``units`` table).
        identifier: the file's unique identifier.
        seed: of the spike times within a window (ephys).

    Raises:
        AdvisorError: an unknown flavour, or non-integer counts for ephys.
    """
    pynwb = import_pynwb()
    from hdmf.common import VectorData  # noqa: F401  (pynwb's tables; imported to fail early if hdmf is broken)

    if flavour not in FLAVOURS:
        raise AdvisorError(f"NWB flavour must be one of {', '.join(FLAVOURS)}; got {flavour!r}")
    r = recording.responses
    n_s, n_u, n_p, n_r = r.shape
    nwb = pynwb.NWBFile(session_description=description, identifier=identifier, session_start_time=START,
                        source_script="lr-advisor (advisor export)", source_script_file_name="advisor")
    nwb.add_epoch_column(PROGRESS_COLUMN, "position of the session in learning: 0 = before training, 1 = its end")
    nwb.add_trial_column(STIMULUS_COLUMN, "id of the probe stimulus presented")
    times = []  # (session, presentation, stimulus) -> trial start
    for s in range(n_s):
        t0 = s * SESSION_GAP_S
        nwb.add_epoch(start_time=t0, stop_time=t0 + n_r * n_p * TRIAL_PERIOD_S,
                      **{PROGRESS_COLUMN: float(recording.session_progress[s])})
        for rep in range(n_r):
            for p in range(n_p):
                start = t0 + (rep * n_p + p) * TRIAL_PERIOD_S
                nwb.add_trial(start_time=start, stop_time=start + STIMULUS_ON_S,
                              **{STIMULUS_COLUMN: int(recording.stimulus_id[p])})
                times.append((s, rep, p, start))
    if flavour == "ephys":
        counts = np.rint(r)
        if not np.allclose(counts, r) or (counts < 0).any():
            raise AdvisorError("ephys NWB files hold spike counts: responses must be non-negative integers (a "
                               "Poisson modality's); export a Gaussian modality's plan as two_photon")
        rng = np.random.default_rng([seed, 53])
        nwb.add_unit_column(AREA_COLUMN, "brain area (here: the layer group of the simulated network)")
        for u in range(n_u):
            spikes = [np.sort(start + STIMULUS_ON_S * rng.random(int(counts[s, u, p, rep])))
                      for s, rep, p, start in times]
            nwb.add_unit(spike_times=np.concatenate(spikes) if spikes else np.zeros(0), id=int(recording.unit_id[u]),
                         **{AREA_COLUMN: str(recording.unit_group[u])})
    else:
        from pynwb.ophys import DfOverF, ImageSegmentation, OpticalChannel, RoiResponseSeries

        device = nwb.create_device(name="microscope", description="two-photon microscope (virtual)")
        channel = OpticalChannel(name="green", description="GCaMP emission", emission_lambda=510.0)
        plane = nwb.create_imaging_plane(name="plane", optical_channel=channel, description="virtual imaging plane",
                                         device=device, excitation_lambda=920.0, indicator="GCaMP6",
                                         location="simulated network", imaging_rate=1.0 / TRIAL_PERIOD_S)
        segmentation = ImageSegmentation()
        rois = segmentation.create_plane_segmentation(name="PlaneSegmentation", description="one ROI per unit",
                                                      imaging_plane=plane)
        rois.add_column(AREA_COLUMN, "brain area (here: the layer group of the simulated network)")
        for u in range(n_u):
            rois.add_roi(pixel_mask=[(u % 512, u // 512, 1.0)], id=int(recording.unit_id[u]),
                         **{AREA_COLUMN: str(recording.unit_group[u])})
        module = nwb.create_processing_module(name="ophys", description="responses to the probe stimuli")
        module.add(segmentation)
        region = rois.create_roi_table_region(region=list(range(n_u)), description="every ROI")
        data = np.stack([r[s, :, p, rep] for s, rep, p, _ in times]).astype(np.float32)  # (presentations, units)
        stamps = np.array([start + STIMULUS_ON_S / 2 for *_, start in times])
        dff = DfOverF(name="DfOverF")
        module.add(dff)  # first, so that the series and its ROI region share an ancestor
        dff.add_roi_response_series(RoiResponseSeries(name="RoiResponseSeries", data=data, rois=region, unit="dF/F",
                                                      timestamps=stamps))
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp.nwb")
    with pynwb.NWBHDF5IO(str(tmp), "w") as io:
        io.write(nwb)
    tmp.replace(path)
    return path


# ------------------------------------------------------------------------------------------------- reading
def _open(path: Path, pynwb: Any) -> tuple[Any, Any]:
    if not path.is_file():
        raise AdvisorError(f"recording {path}: no such file")
    try:
        io = pynwb.NWBHDF5IO(str(path), "r")
        return io, io.read()
    except Exception as e:  # h5py, hdmf and pynwb raise many kinds for a file that is not NWB
        raise AdvisorError(f"recording {path}: not a readable NWB file ({type(e).__name__}); expected an NWB 2 "
                           "(HDF5) file with units or ophys ROI responses and a trials table") from None


def _series(nwb: Any) -> Any | None:
    """The ROI response series of the ophys module (DfOverF first, then Fluorescence), or None."""
    module = nwb.processing.get("ophys")
    if module is None:
        return None
    for kind in ("DfOverF", "Fluorescence"):
        for interface in module.data_interfaces.values():
            if type(interface).__name__ == kind and interface.roi_response_series:
                return next(iter(interface.roi_response_series.values()))
    return None


def _column(table: Any, name: str, path: Path, what: str) -> list[Any]:
    if table is None or name not in table.colnames:
        have = ", ".join(table.colnames) if table is not None else "no table"
        raise AdvisorError(f"recording {path}: the {what} has no column {name!r} (it has: {have})")
    return list(table[name].data[:])


def _groups(areas: Any, area_map: Mapping[str, str] | None, path: Path, column: str) -> np.ndarray:
    names = [a.decode() if isinstance(a, bytes) else str(a) for a in areas]
    if area_map:
        unmapped = sorted({str(n) for n in names} - set(area_map))
        if unmapped:
            raise AdvisorError(f"recording {path}: area {', '.join(map(repr, unmapped))} is not in --area-map "
                               f"({', '.join(f'{k}={v}' for k, v in area_map.items())})")
        names = [area_map[n] for n in names]
    unknown = sorted({str(n) for n in names} - set(GROUPS))
    if unknown:
        raise AdvisorError(f"recording {path}: column {column!r} holds {', '.join(map(repr, unknown))}, not a layer "
                           f"group ({', '.join(GROUPS)}); map areas with --area-map AREA=GROUP,...")
    return np.array(names)


def _presentations(nwb: Any, path: Path, intervals: str, stimulus_column: str) -> tuple[np.ndarray, ...]:
    table = nwb.trials if intervals == "trials" else nwb.intervals.get(intervals) if nwb.intervals else None
    if table is None or len(table) == 0:
        raise AdvisorError(f"recording {path}: no stimulus presentations (the {intervals!r} intervals table is "
                           "missing or empty); each presentation of a probe stimulus is one row")
    stimuli = np.array(_column(table, stimulus_column, path, f"{intervals!r} table"))
    try:
        stimuli = stimuli.astype(np.int64)
    except ValueError:
        stimuli = np.unique(stimuli, return_inverse=True)[1].astype(np.int64)
    return np.asarray(table["start_time"].data[:], float), np.asarray(table["stop_time"].data[:], float), stimuli


def _sessions(nwb: Any, starts: np.ndarray) -> tuple[list[np.ndarray], list[float] | None]:
    """Trial indices per session (epochs, else the whole file) and the epochs' learning progress (None: absent)."""
    epochs = nwb.epochs
    if epochs is None or len(epochs) == 0:
        return [np.arange(len(starts))], None
    lo, hi = np.asarray(epochs["start_time"].data[:], float), np.asarray(epochs["stop_time"].data[:], float)
    rows = [np.flatnonzero((starts >= a) & (starts < b)) for a, b in zip(lo, hi, strict=True)]
    progress = [float(v) for v in epochs[PROGRESS_COLUMN].data[:]] if PROGRESS_COLUMN in epochs.colnames else None
    keep = [i for i, r in enumerate(rows) if len(r)]
    return [rows[i] for i in keep], ([progress[i] for i in keep] if progress is not None else None)


def _responses(nwb: Any, path: Path, starts: np.ndarray, stops: np.ndarray, area_map: Mapping[str, str] | None,
               area_column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(presentations, units) responses, unit ids and groups of one file."""
    series = _series(nwb)
    if series is not None:
        rois = series.rois
        ids = np.asarray(rois.table.id.data[:])[np.asarray(rois.data[:], dtype=np.int64)]
        areas = np.asarray(_column(rois.table, area_column, path, "ROI table (PlaneSegmentation)"),
                           dtype=object)[np.asarray(rois.data[:], dtype=np.int64)]
        data = np.asarray(series.data[:], dtype=np.float64)
        if data.ndim == 1:
            data = data[:, None]
        stamps = (np.asarray(series.timestamps[:], float) if series.timestamps is not None
                  else series.starting_time + np.arange(len(data)) / series.rate)
        lo = np.searchsorted(stamps, starts, side="left")
        hi = np.searchsorted(stamps, stops, side="left")
        empty = np.flatnonzero(hi <= lo)
        if len(empty):
            raise AdvisorError(f"recording {path}: presentation {empty[0] + 1} (at {starts[empty[0]]:g} s) has no "
                               "imaging sample inside its response window; widen --response-window")
        sums = np.cumsum(np.vstack([np.zeros((1, data.shape[1])), data]), axis=0)
        responses = (sums[hi] - sums[lo]) / (hi - lo)[:, None]
        return responses, ids.astype(np.int64), _groups(areas, area_map, path, area_column)
    units = nwb.units
    if units is None or len(units) == 0:
        raise AdvisorError(f"recording {path}: no responses: neither a units table (electrophysiology) nor ROI "
                           "responses (an ophys module with DfOverF or Fluorescence)")
    unit_areas = _column(units, area_column, path, "units table")
    counts = np.zeros((len(starts), len(units)))
    for u in range(len(units)):
        spikes = np.sort(np.asarray(units["spike_times"][u], float))
        counts[:, u] = np.searchsorted(spikes, stops, side="left") - np.searchsorted(spikes, starts, side="left")
    return counts, np.asarray(units.id.data[:], dtype=np.int64), _groups(unit_areas, area_map, path, area_column)


def read_nwb(paths: Sequence[str | Path], *, area_map: Mapping[str, str] | None = None,
             area_column: str = AREA_COLUMN, stimulus_column: str = STIMULUS_COLUMN, intervals: str = "trials",
             window: tuple[float, float] | None = None, session_progress: Sequence[float] | None = None,
             require_progress: bool = True) -> LabRecording:
    """Read one animal's recording from NWB files (module docstring for what is read and how).

    Raises:
        AdvisorError: a file is missing or not NWB, has no responses or no presentations, a session's stimuli differ
            from the others', a unit's area is not a layer group, or the sessions' positions in learning are
            missing (one line naming the file and what is expected).
    """
    pynwb = import_pynwb()
    sessions: list[Any] = []  # (progress, responses, stimuli, unit ids, groups, name) per session
    kinds = set()
    for raw in paths:
        path = Path(raw)
        io, nwb = _open(path, pynwb)
        try:
            starts, stops, stimuli = _presentations(nwb, path, intervals, stimulus_column)
            if window is not None:
                stops = starts + window[1]
                starts = starts + window[0]
            responses, ids, groups = _responses(nwb, path, starts, stops, area_map, area_column)
            kinds.add("ephys" if _series(nwb) is None else "two_photon")
            rows, progress = _sessions(nwb, starts)
            for i, r in enumerate(rows):
                sessions.append((progress[i] if progress is not None else None, responses[r], stimuli[r], ids,
                                 groups, f"{path.name}" + (f" epoch {i + 1}" if len(rows) > 1 else "")))
        finally:
            io.close()
    source = ", ".join(str(Path(p)) for p in paths)
    if len(kinds) > 1:
        raise AdvisorError(f"recording {source}: mixes imaging and electrophysiology files; give one animal's "
                           "recording of one kind")
    if session_progress is not None:
        if len(session_progress) != len(sessions):
            raise AdvisorError(f"--session-progress gives {len(session_progress)} values; the recording has "
                               f"{len(sessions)} session{'s' if len(sessions) != 1 else ''}")
        sessions = [(float(v), *rest) for v, (_, *rest) in zip(session_progress, sessions, strict=True)]
    if not require_progress and any(s[0] is None for s in sessions):  # a pilot: in file order
        sessions = [(i / max(1, len(sessions) - 1), *rest) for i, (_, *rest) in enumerate(sessions)]
    if any(s[0] is None for s in sessions):
        raise AdvisorError(f"recording {source}: no position in learning for its sessions; add a "
                           f"{PROGRESS_COLUMN!r} column to the epochs table or give --session-progress (0 = before "
                           "training, 1 = its end, one per session)")
    sessions.sort(key=lambda s: float(s[0]))
    common = set(sessions[0][3].tolist())
    for s in sessions[1:]:
        common &= set(s[3].tolist())
    first_ids, first_groups = sessions[0][3], sessions[0][4]
    keep_ids = np.array([i for i in first_ids if i in common], dtype=np.int64)
    if len(keep_ids) == 0:
        raise AdvisorError(f"recording {source}: no unit (ROI) id is present in every session; chronic sessions of "
                           "one animal share unit ids")
    stimulus_ids = np.unique(sessions[0][2])
    blocks = []
    for _progress_value, responses, stimuli, ids, _, name in sessions:
        if not np.array_equal(np.unique(stimuli), stimulus_ids):
            raise AdvisorError(f"recording {name}: stimuli {_ids(np.unique(stimuli))} differ from the first "
                               f"session's {_ids(stimulus_ids)}; every session shows the same probe stimuli")
        column = {int(v): j for j, v in enumerate(ids)}
        cols = [column[int(i)] for i in keep_ids]
        per = [np.flatnonzero(stimuli == sid) for sid in stimulus_ids]
        blocks.append((responses, cols, per))
    n_rep = min(len(p) for _, _, per in blocks for p in per)
    data = np.stack([np.stack([responses[p[:n_rep]][:, cols].T for p in per], axis=1)
                     for responses, cols, per in blocks])  # (S, U, P, R)
    position = {int(v): j for j, v in enumerate(first_ids)}
    groups = np.array([first_groups[position[int(i)]] for i in keep_ids])
    return LabRecording(data, groups, np.array([float(s[0]) for s in sessions]),
                        source, unit_id=keep_ids, stimulus_id=stimulus_ids)


def _ids(values: np.ndarray) -> str:
    shown = [str(int(v)) for v in values[:6]]
    return "{" + ", ".join(shown) + (", ..." if len(values) > 6 else "") + "}"

"""After the experiment: virtual recordings in the lab's formats (``advisor export``) and a calibrated verdict on a
real one (``advisor identify``).

:class:`PlanSettings` is what both take from a past plan (:func:`plan_settings`, its recommended protocol, else
its cheapest feasible candidate, else its most accurate protocol; the plan's bank, rules, classifier, seed and
set-aside share) or from protocol flags (:func:`flag_settings`). :func:`build_identifier` fits, on the plan's
search networks, the calibrated classifier and the misspecification check of ``advisor.science.identification``
and measures both on the plan's set-aside networks; it is cached in the workspace (``cache/identify/``), keyed
by the bank, the protocol and every setting, so a second recording under the same plan takes seconds.
:func:`export_recordings` records set-aside networks under the protocol afresh (a new recording seed: other
units, gains and noise than any the plan scored) and writes one file per animal; :func:`identify_document` turns
one recording into the ``identify`` document that the CLI prints, MLflow stores and the reports render.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from advisor.application.documents import Document, Entry
from advisor.errors import AdvisorError
from advisor.science.features import featurize, featurize_recording
from advisor.science.identification import (
    ALPHA,
    CalibratedClassifier,
    Typicality,
    calibration_report,
    conformal_p,
    false_alarm_rate,
    fit_identifier,
)
from advisor.science.protocol import Recording, RecordingProtocol, learning_curve, record_chunks
from advisor.science.recordings import (
    LabRecording,
    ProtocolMatch,
    combine_rule,
    match_protocol,
    planned_progress,
    write_npz,
)

if TYPE_CHECKING:
    from simulator.bank import TrajectoryBank

__all__ = ["EXPORT_FORMATS", "Identifier", "PlanSettings", "build_identifier", "export_recordings",
           "flag_settings", "identify_document", "load_identifier", "plan_settings", "read_recording",
           "setaside_rows"]

EXPORT_FORMATS = ("nwb", "npz")
EXPORT_SEED = 104729
"""Exported recordings use the protocol's seed plus this: units, gains and noise that no plan score used."""
IDENTIFIER_VERSION = 2
"""Part of the cache key: bump when what :func:`build_identifier` computes changes."""


@dataclass(frozen=True)
class PlanSettings:
    """What ``export`` and ``identify`` take from a plan (or from flags).

    Attributes:
        protocol: the recording protocol (its ``noise`` is the level after ``repeats`` presentations).
        repeats: presentations per stimulus that the protocol averages (Gaussian) or sums (Poisson).
        single_trial_noise: the noise level of one presentation (the modality's).
        rules, target, classifier, seed, setaside: the plan's question.
        run_id: the plan's run id (None with flags).
        plan: what the identify document shows of the plan (accuracies, CI, modality, protocol in words).
    """

    protocol: RecordingProtocol
    repeats: int
    single_trial_noise: float
    rules: tuple[str, ...]
    target: str
    classifier: str
    seed: int
    setaside: float
    run_id: str | None = None
    plan: Entry | None = None

    def cache_key(self, bank_hash: str) -> str:
        protocol = {f.name: getattr(self.protocol, f.name) for f in fields(self.protocol) if f.name != "extra"}
        payload = {"bank": bank_hash, "protocol": protocol, "repeats": self.repeats, "rules": list(self.rules),
                   "target": self.target, "classifier": self.classifier, "seed": self.seed,
                   "setaside": self.setaside, "version": IDENTIFIER_VERSION}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def plan_settings(doc: Document, run_id: str) -> PlanSettings:
    """The settings of a plan document (``runs show --json``'s): its headline protocol and its question.

    Raises:
        AdvisorError: the document is not a finished plan with a protocol.
    """
    from advisor.application.search import TrialResult

    question = doc.get("question") or {}
    chosen = doc.get("recommendation") or doc.get("candidate") or doc.get("best")
    if not chosen:
        raise AdvisorError(f"--run {run_id}: the plan has no protocol (its search finished no trial)")
    names = {f.name for f in fields(TrialResult)}
    trial = TrialResult.from_dict({k: v for k, v in chosen.items() if k in names})
    modality = doc.get("modality") or {}
    setaside = doc.get("setaside") or {}
    return PlanSettings(
        protocol=trial.protocol(int(question["seed"])), repeats=int(trial.repeats),
        single_trial_noise=float(modality.get("single_trial_noise", trial.noise)),
        rules=tuple(question["rules"]), target=str(question.get("target", "rule")),
        classifier=str(question["classifier"]), seed=int(question["seed"]),
        setaside=float(question.get("setaside", 0.25)), run_id=run_id,
        plan={"run_id": run_id, "description": chosen.get("description"), "feasible": doc.get("feasible"),
              "recommended": doc.get("recommendation") is not None, "search_accuracy": chosen.get("accuracy"),
              "setaside_accuracy": setaside.get("accuracy"), "setaside_ci": setaside.get("ci"),
              "modality": modality.get("key"), "modality_name": modality.get("name"),
              "cost": chosen.get("cost"), "cost_unit": chosen.get("cost_unit"), "trial": chosen,
              "chance": doc.get("chance")})


def flag_settings(protocol: RecordingProtocol, *, repeats: int, rules: Sequence[str], target: str, classifier: str,
                  seed: int, setaside: float) -> PlanSettings:
    """Settings from protocol flags (no plan): the protocol's noise is that of one presentation times the
    repeats as the noise model combines them."""
    from advisor.science.cost import AVERAGING_EXPONENT

    exponent = AVERAGING_EXPONENT.get(protocol.noise_model, 0.0)
    single = float(protocol.noise) / repeats ** exponent if protocol.noise else 0.0
    return PlanSettings(protocol, int(repeats), single, tuple(rules), target, classifier, int(seed), float(setaside))


# ---------------------------------------------------------------------------------------------- the model
@dataclass
class Identifier:
    """Everything needed to identify a recording under one protocol (pickled in the workspace's cache).

    Attributes:
        key: the cache key.
        bank_hash: the bank it was fitted on.
        labels: the rules (families) of the question.
        classifier: the calibrated classifier (fitted on the search networks).
        typicality: the misspecification check (reference: search networks; null: set-aside networks).
        calibration: :func:`~advisor.science.identification.calibration_report` on the set-aside networks.
        false_alarm_rate: leave-one-out on the set-aside networks, at :data:`ALPHA`.
        names: the statistics (feature channels).
        sessions: the protocol's checkpoint indices; n_checkpoints the bank's.
        n_stimuli: probe stimuli per session the statistics were computed on.
        n_search, n_setaside: networks on each side.
        seconds: how long fitting took.
    """

    key: str
    bank_hash: str
    labels: list[str]
    classifier: CalibratedClassifier
    typicality: Typicality
    calibration: dict[str, Any]
    false_alarm_rate: float
    names: list[str]
    sessions: list[int]
    n_checkpoints: int
    n_stimuli: int
    n_search: int
    n_setaside: int
    seconds: float


def setaside_rows(bank: TrajectoryBank, settings: PlanSettings) -> tuple[np.ndarray, np.ndarray]:
    """Bank rows of the plan's search and set-aside networks (the plan's own draw: same rules, target, share and
    seed)."""
    from advisor.application.search import setaside_partition

    partition = setaside_partition(bank.metadata, settings.rules, settings.target, settings.setaside, settings.seed)
    return np.flatnonzero(partition.search), np.flatnonzero(partition.setaside)


def n_stimuli(bank: TrajectoryBank, protocol: RecordingProtocol) -> int:
    """Probe stimuli per session under ``protocol`` (its ``n_probes``, else every probe of the bank)."""
    if protocol.observable == "weights":
        raise AdvisorError("identify reads responses to stimuli (activations); a weights protocol records synapses")
    return int(protocol.n_probes or bank[protocol.observable].shape[4])


def build_identifier(bank: TrajectoryBank, settings: PlanSettings,
                     status: Callable[[str], None] | None = None) -> Identifier:
    """Fit the calibrated classifier and the misspecification check on the plan's search networks and measure
    both on its set-aside networks (module docstring of ``advisor.science.identification``)."""
    status = status or (lambda text: None)
    started = time.perf_counter()
    protocol = settings.protocol
    stimuli = n_stimuli(bank, protocol)
    search, setaside = setaside_rows(bank, settings)
    status(f"recording the {len(search) + len(setaside)} simulated networks under the protocol")
    features = featurize(bank, protocol)
    y_all = bank.metadata.reset_index(drop=True)[settings.target].astype(str).to_numpy()
    labels = sorted(set(y_all[search]))
    index = {label: i for i, label in enumerate(labels)}
    y_search = np.array([index[v] for v in y_all[search]])
    y_set = np.array([index[v] for v in y_all[setaside]])
    status(f"fitting and calibrating the {settings.classifier} classifier on {len(search)} search networks")
    model = fit_identifier(features.X[search], y_search, labels, settings.classifier, settings.seed)
    calibration = calibration_report(model, features.X[setaside], y_set)
    sessions = features.sessions
    n_checkpoints = int(bank[protocol.observable].shape[1])
    labels_s = [f"session {i + 1} ({p:.0%})" for i, p in enumerate(planned_progress(sessions, n_checkpoints))]
    typicality = Typicality.fit(features.X[search], features.X[setaside],
                                [n for n in features.names[: features.X.shape[2]]], labels_s)
    return Identifier(settings.cache_key(bank.hash), bank.hash, labels, model, typicality, calibration,
                      false_alarm_rate(typicality), list(features.names), [int(s) for s in sessions], n_checkpoints,
                      stimuli, len(search), len(setaside), round(time.perf_counter() - started, 2))


def load_identifier(bank: TrajectoryBank, settings: PlanSettings, cache_dir: Path | None,
                    status: Callable[[str], None] | None = None) -> tuple[Identifier, bool]:
    """The identifier of ``settings`` on ``bank``: from ``cache_dir`` when there (True), else built and cached
    (written atomically; an unreadable cache file is rebuilt)."""
    key = settings.cache_key(bank.hash)
    path = cache_dir / f"{key}.pkl" if cache_dir is not None else None
    if path is not None and path.is_file():
        try:
            with path.open("rb") as f:
                cached = pickle.load(f)
            if isinstance(cached, Identifier) and cached.key == key:
                return cached, True
        except Exception:  # a cache written by another version or cut short: rebuild it
            pass
    identifier = build_identifier(bank, settings, status)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("wb") as f:
            pickle.dump(identifier, f, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(path)
    return identifier, False


# ---------------------------------------------------------------------------------------------- export
def export_rows(bank: TrajectoryBank, settings: PlanSettings, n: int) -> np.ndarray:
    """``n`` set-aside networks, balanced over the labels (round robin over them in a seeded order)."""
    _, setaside = setaside_rows(bank, settings)
    if not 1 <= n <= len(setaside):
        raise AdvisorError(f"--networks must be in [1, {len(setaside)}] (the plan's set-aside networks); got {n}")
    y = bank.metadata.reset_index(drop=True)[settings.target].astype(str).to_numpy()
    rng = np.random.default_rng([settings.seed, 61])
    pools = [list(rng.permutation(setaside[y[setaside] == label])) for label in sorted(set(y[setaside]))]
    order = [pool[i] for i in range(max(map(len, pools))) for pool in pools if i < len(pool)]
    return np.array(sorted(order[:n]))


def virtual_lab_recordings(bank: TrajectoryBank, settings: PlanSettings, rows: np.ndarray,
                           seed_offset: int = EXPORT_SEED) -> list[LabRecording]:
    """Recordings of the networks ``rows`` under the protocol, one presentation at a time: the same units, gains
    and offsets for every presentation of a session, new noise each time at the single-presentation level, with
    the protocol's seed plus ``seed_offset``."""
    protocol = replace(settings.protocol, seed=settings.protocol.seed + seed_offset,
                       noise=settings.single_trial_noise if settings.protocol.noise else 0.0)
    stimuli = n_stimuli(bank, protocol)
    parts: list[dict[int, np.ndarray]] = [{} for _ in protocol.layers]
    wanted = set(int(r) for r in rows)
    for position, networks, values in record_chunks(bank, protocol, presentations=settings.repeats):
        for j, row in enumerate(range(networks.start, networks.stop)):
            if row in wanted:
                v = values[j]
                parts[position][row] = v if v.ndim == 4 else v[..., None]  # (S, k, P, R)
    sessions = protocol.session_indices(bank[protocol.observable].shape[1])
    progress = planned_progress(sessions, int(bank[protocol.observable].shape[1]))
    curve = learning_curve(bank, protocol)
    out = []
    for row in rows:
        blocks = [parts[g][int(row)] for g in range(len(protocol.layers))]
        groups = np.concatenate([[g] * b.shape[1] for g, b in zip(protocol.layers, blocks, strict=True)])
        out.append(LabRecording(np.concatenate(blocks, axis=1), groups, progress, f"network {int(row)}",
                                behaviour=curve[int(row)], stimulus_id=np.arange(stimuli)))
    return out


def export_recordings(bank: TrajectoryBank, settings: PlanSettings, n: int, out_dir: Path, fmt: str,
                      tick: Callable[[], None] | None = None) -> list[dict[str, Any]]:
    """Write ``n`` set-aside networks' virtual recordings to ``out_dir`` (``network-ROW.nwb`` or ``.npz``, one
    animal per file); NWB files are two-photon for a Gaussian protocol, electrophysiology for a Poisson one.

    Returns:
        ``{"path", "network", "rule", "family", "architecture", "task"}`` per file (the truth, for checking).
    """
    from advisor.science.nwb import write_nwb

    if fmt not in EXPORT_FORMATS:
        raise AdvisorError(f"--format must be one of {', '.join(EXPORT_FORMATS)}; got {fmt!r}")
    if fmt == "nwb":
        from advisor.science.nwb import import_pynwb

        import_pynwb()
    rows = export_rows(bank, settings, n)
    meta = bank.metadata.reset_index(drop=True)
    flavour = "ephys" if settings.protocol.noise_model == "poisson" else "two_photon"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for row, recording in zip(rows, virtual_lab_recordings(bank, settings, rows), strict=True):
        name = f"network-{int(row):04d}"
        path = out_dir / f"{name}.{fmt}"
        if fmt == "npz":
            write_npz(recording, path)
        else:
            write_nwb(recording, path, flavour=flavour, identifier=f"lr-advisor-{bank.hash[:12]}-{name}",
                      description=f"virtual recording of simulated network {int(row)} (one animal) under the "
                                  f"protocol of plan {settings.run_id or '(flags)'}: {settings.protocol.describe()}",
                      seed=settings.seed + int(row))
        entry = meta.iloc[int(row)]
        written.append({"path": str(path), "network": name, "rule": str(entry["rule"]),
                        "family": str(entry.get("family", "")), "architecture": str(entry["architecture"]),
                        "task": str(entry["task"])})
        if tick:
            tick()
    return written


# ---------------------------------------------------------------------------------------------- identify
RECORDING_SUFFIXES = (".nwb", ".npz")


def read_recording(paths: tuple[Path, ...], *, area_map: dict[str, str] | None, area_column: str,
                   stimulus_column: str, intervals: str, window: list[float] | None,
                   session_progress: list[float] | None, require_progress: bool = True) -> tuple[LabRecording, str]:
    """One animal's recording from ``paths`` (NWB files, or one .npz) and its format (``nwb`` or ``npz``); NWB
    options as :func:`advisor.science.nwb.read_nwb` takes them.

    Raises:
        AdvisorError: an unknown file type, several .npz files, mixed formats, or what the reader refuses.
    """
    from advisor.science.recordings import read_npz

    suffixes = {p.suffix.lower() for p in paths}
    bad = sorted(s or "(none)" for s in suffixes - set(RECORDING_SUFFIXES))
    if bad:
        raise AdvisorError(f"recording {', '.join(str(p) for p in paths)}: unknown file type {', '.join(bad)}; "
                           f"allowed: {', '.join(RECORDING_SUFFIXES)}")
    if suffixes == {".npz"}:
        if len(paths) > 1:
            raise AdvisorError("an .npz recording holds all sessions of one animal in one file; give one file")
        return read_npz(paths[0]), "npz"
    if len(suffixes) > 1:
        raise AdvisorError("give one animal's recording in one format (NWB files or one .npz file)")
    from advisor.science.nwb import read_nwb

    return read_nwb(list(paths), area_map=area_map, area_column=area_column, stimulus_column=stimulus_column,
                    intervals=intervals, window=(window[0], window[1]) if window else None,
                    session_progress=session_progress, require_progress=require_progress), "nwb"


def recording_features(identifier: Identifier, settings: PlanSettings, recording: LabRecording
                       ) -> tuple[np.ndarray, ProtocolMatch]:
    """Match ``recording`` to the protocol and compute its statistics: (1, S, F) and the match."""
    protocol = settings.protocol
    match = match_protocol(recording, layers=tuple(protocol.layers), units_per_group=protocol.units_per_group(),
                           sessions=np.array(identifier.sessions), n_checkpoints=identifier.n_checkpoints,
                           n_stimuli=identifier.n_stimuli, repeats=settings.repeats,
                           combine=combine_rule(protocol.noise_model), seed=protocol.seed)
    rec = Recording(match.values, np.array(identifier.sessions), tuple(protocol.layers), match.curve)
    features = featurize_recording(rec, "zero", protocol.statistics, protocol.observable, protocol.chronic)
    return features.X, match


def verdict_sentence(doc: Mapping[str, Any], words: Callable[[str], str]) -> str:
    """The identify report's first sentence."""
    top, p, ci = doc["top_rule"], doc["p_top"], doc["p_top_ci"]
    mis = doc["misspecification"]
    rule = words(top)
    if not doc["in_distribution"]:
        return (f"This recording is unlike every simulated network (misspecification p = {mis['p']:.3f} ≤ "
                f"{mis['alpha']:g}): the rule posterior is not to be trusted. For the record, the classifier puts "
                f"{p:.2f} on {rule}.")
    cal = doc["calibration"]
    return (f"The recording is consistent with {rule}: posterior probability {p:.2f} (95% interval {ci[0]:.2f}-"
            f"{ci[1]:.2f} over refits of the classifier), among {len(doc['labels'])} simulated "
            f"{'families' if doc['target'] == 'family' else 'rules'}; it lies within the simulated population "
            f"(misspecification p = {mis['p']:.2f}). On {cal['n_networks']} set-aside networks the calibrated "
            f"classifier names the rule correctly {cal['accuracy']:.0%} of the time (expected calibration error "
            f"{cal['ece']:.3f}).")


def identify_document(identifier: Identifier, settings: PlanSettings, recording: LabRecording, *,
                      recording_format: str, command: str) -> Document:
    """Identify one animal's recording: its posterior over the simulated rules, the interval of the top
    probability, the misspecification check, the classifier's calibration, and what was adapted."""
    from advisor.application.figures import rule_words
    from advisor.application.planning import versions

    started = time.perf_counter()
    X, match = recording_features(identifier, settings, recording)
    probs = identifier.classifier.posterior(X)[0]
    top = int(np.argmax(probs))
    labels = identifier.labels
    ci = identifier.classifier.interval(X, top)
    typicality = identifier.typicality
    scores = typicality.scores(X)[0]
    p_value = float(typicality.p_values(X)[0])
    null = typicality.null
    mis = {"p": p_value, "alpha": ALPHA, "score": float(scores[0]), "max_z": float(scores[1]),
           "p_knn": float(conformal_p(scores[:1], null[:, 0])[0]),
           "p_max_z": float(conformal_p(scores[1:], null[:, 1])[0]),
           "in_distribution": bool(p_value > ALPHA),
           "null_scores": [float(v) for v in np.sort(null[:, 0])],
           "null_max_z": [float(v) for v in np.sort(null[:, 1])],
           "null_quantiles": {q: float(np.quantile(null[:, 0], float(q))) for q in ("0.5", "0.95", "0.99")},
           "null_max_z_quantiles": {q: float(np.quantile(null[:, 1], float(q))) for q in ("0.5", "0.95", "0.99")},
           "n_reference": identifier.n_search, "n_null": identifier.n_setaside,
           "false_alarm_rate": identifier.false_alarm_rate, "neighbours": typicality.k,
           "furthest": typicality.furthest(X)}
    target = settings.target
    doc: Document = {
        "kind": "identify",
        "title": "Which learning rule is this recording consistent with?",
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": command,
        "recording": {"source": recording.source, "format": recording_format, "n_sessions": recording.n_sessions,
                      "session_progress": [float(v) for v in recording.session_progress],
                      "units_recorded": match.units_recorded,
                      "units_used": {g: len(v) for g, v in match.units_used.items()},
                      "presentations": int(recording.n_presentations), "presentations_used": match.presentations_used,
                      "n_stimuli": int(recording.responses.shape[2]), "notes": match.notes,
                      "has_behaviour": recording.behaviour is not None},
        "protocol": {"description": settings.protocol.describe(), "repeats": settings.repeats,
                     "combine": combine_rule(settings.protocol.noise_model), **_protocol_entry(settings.protocol)},
        "plan": settings.plan or {"run_id": None},
        "labels": labels,
        "target": target,
        "classifier": settings.classifier,
        "posterior": {label: float(v) for label, v in zip(labels, probs, strict=True)},
        "top_rule": labels[top],
        "top_words": rule_words(labels[top], family=target == "family"),
        "p_top": float(probs[top]),
        "p_top_ci": [float(ci[0]), float(ci[1])],
        "in_distribution": bool(p_value > ALPHA),
        "misspecification_p": p_value,
        "misspecification": mis,
        "calibration": identifier.calibration,
        "identifier": {"key": identifier.key, "n_search": identifier.n_search, "n_setaside": identifier.n_setaside,
                       "fit_seconds": identifier.seconds, "bootstraps": len(identifier.classifier.bootstraps),
                       "n_stimuli": identifier.n_stimuli},
        "versions": versions(),
    }
    doc["verdict"] = verdict_sentence(doc, lambda k: rule_words(k, family=target == "family"))
    doc["elapsed_s"] = round(time.perf_counter() - started, 2)
    return doc


def _protocol_entry(protocol: RecordingProtocol) -> dict[str, Any]:
    d = asdict(protocol)
    d.pop("extra", None)
    d["layers"] = list(protocol.layers)
    d["window"] = list(protocol.window)
    d["gain_sd"] = list(protocol.gain_sd)
    d["units_per_group"] = protocol.units_per_group()
    return d

"""The design search: the cheapest recording protocol that still identifies the learning rule.

An Optuna study over recording protocols (observable, units, layer groups, sessions and their placement, repeats
and hence noise) with two objectives, cost (minimised) and accuracy (maximised), and one constraint: the lower end
of the accuracy's 95% confidence interval must reach the target (``trial.set_constraint``; feasible when
``target - ci_low <= 0``). The recommendation is the cheapest feasible protocol, and the trials give the
cost-accuracy Pareto front.

Every trial re-reads the bank (no re-simulation): record the networks under the protocol
(:func:`advisor.science.features.featurize`), then score a classifier on the same splits over networks for every trial,
so trials differ only in the protocol. Protocols the sampler proposes twice (after clamping) are scored once.

The study lives in an Optuna storage (a journal file in the workspace by default, or any RDB URL), named after
the question, so running the same command again resumes it: a study that already holds the requested number of
finished trials runs none and gives the same answer.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from advisor.errors import AdvisorError
from advisor.science.protocol import DEFAULT_GAIN_SD, GROUPS, RecordingProtocol
from simulator.text import error_line

if TYPE_CHECKING:
    from advisor.science.cost import Modality
    from simulator.bank import TrajectoryBank

WINDOWS = (0.3, 0.5, 1.0)
"""Session placements the search explores: evenly spaced within the first 30%, 50% or all of learning."""
LAYER_SUBSETS = tuple(",".join(c) for k in (1, 2, 3) for c in combinations(GROUPS, k))
"""Every non-empty subset of the layer groups, as comma lists."""
MIN_SESSIONS = 2
"""Fewest sessions searched: one session evenly placed would sit at the start of learning."""
MIN_UNITS = 3


@dataclass(frozen=True)
class Question:
    """What the user asked: the bounds of the search and the confidence required.

    Attributes:
        observables: observables the search may choose among (already intersected with the modality's).
        max_units: most units (synapses, for weights) per network, per observable.
        per_group: most units the bank recorded per layer group, per observable.
        max_sessions: most sessions.
        n_checkpoints: checkpoints in the bank (sessions within a window are capped by those it spans).
        layers: layer-group subsets the search may choose among (comma lists).
        target_accuracy: the lower 95% confidence bound of the accuracy must reach this.
        target: ``rule`` or ``family``.
        rules: the rules considered (the bank's, or the user's subset).
        heldout: ``none`` (repeated stratified splits), ``architecture`` (leave one architecture out) or
            ``arch_family`` (leave one architecture family out).
        classifier: classifier key (``advisor.science.classifiers.CLASSIFIERS``).
        n_trials: finished trials the study should hold.
        n_splits: train/test splits per trial (with ``heldout == "none"``; rounded up to whole repeats of a
            4-fold cross-validation).
        seed: seeds the sampler, the recording (unit subsets, noise), the splits and the set-aside draw.
        setaside: share of the networks set aside before the search (stratified by rule and design cell); the
            search, the re-check and any tuning never see them, and the recommended protocol's reported accuracy
            comes from them.
        robust: a protocol is feasible only if, leaving one architecture out at a time (over the search networks
            in the search, then on the set-aside networks), its lower CI bound also reaches the target and clears
            the behavioural control's upper bound on the same splits.
        statistics: the statistics every protocol is scored on (``RecordingProtocol.statistics``).
        max_animals: the most animals recorded with the protocol (``--max-animals``); above 1 the number of
            animals is searched with the protocol, accuracies are pooled over them (``advisor.science.animals``)
            and costs are totals over them, each animal's ``per_animal_cost`` included.
        budget: the most a plan may cost in all (``--budget-hours``), or None: it selects among the trials
            (``advisor.application.planning``), the search itself is the same.
        budget_mode: ``cheapest`` (a target and a budget: the cheapest protocol reaching the target within the
            budget) or ``most_accurate`` (a budget alone: the most accurate protocol within it).
    """

    observables: tuple[str, ...]
    max_units: dict[str, int]
    per_group: dict[str, int]
    max_sessions: int
    n_checkpoints: int
    layers: tuple[str, ...]
    target_accuracy: float
    target: str
    rules: tuple[str, ...]
    heldout: str
    classifier: str
    n_trials: int
    n_splits: int
    seed: int
    setaside: float = 0.25
    robust: bool = False
    statistics: str = "marginal"
    max_animals: int = 1
    budget: float | None = None
    budget_mode: str = "cheapest"

    def key(self, bank_hash: str, modality: str) -> str:
        """A short hash naming the study: the same question on the same bank and modality → the same study (a
        budget only selects among the trials, so it does not change the study)."""
        fields = asdict(self)
        fields.pop("budget")
        fields.pop("budget_mode")
        if not self.robust:  # studies from before --robust keep their names
            fields.pop("robust")
        if self.statistics == "marginal":  # and from before --statistics
            fields.pop("statistics")
        if self.max_animals == 1:  # and from before --max-animals
            fields.pop("max_animals")
        blob = json.dumps({"bank": bank_hash, "modality": modality, **fields, "n_trials": None},
                          sort_keys=True, default=list)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class TrialResult:
    """One evaluated protocol."""

    number: int
    observable: str
    n_units: int
    layers: tuple[str, ...]
    n_sessions: int
    window: tuple[float, float]
    repeats: int
    noise_model: str
    noise: float
    cost: float
    accuracy: float
    ci: tuple[float, float]
    balanced_accuracy: float
    feasible: bool
    chronic: bool = True
    beyond_control: bool = True
    gain_sd: tuple[float, float, float] = DEFAULT_GAIN_SD
    baseline: float = 0.0
    heldout_accuracy: float | None = None
    heldout_ci: tuple[float, float] | None = None
    statistics: str = "marginal"
    n_animals: int = 1
    animal_cost: float | None = None

    def protocol(self, seed: int) -> RecordingProtocol:
        """The recording protocol of this trial, with the given recording seed."""
        return RecordingProtocol(observable=self.observable, n_units=self.n_units, layers=self.layers,
                                 n_sessions=self.n_sessions, window=self.window, noise_model=self.noise_model,
                                 noise=self.noise, chronic=self.chronic, seed=seed, gain_sd=self.gain_sd,
                                 baseline=self.baseline, statistics=self.statistics)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["layers"], d["window"], d["ci"] = list(self.layers), list(self.window), list(self.ci)
        d["gain_sd"] = list(self.gain_sd)
        d["heldout_ci"] = list(self.heldout_ci) if self.heldout_ci is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrialResult:
        gains: dict[str, Any] = {"gain_sd": tuple(d["gain_sd"])} if "gain_sd" in d else {}
        if d.get("heldout_ci") is not None:
            gains["heldout_ci"] = tuple(d["heldout_ci"])
        return cls(**{**d, "layers": tuple(d["layers"]), "window": tuple(d["window"]), "ci": tuple(d["ci"]),
                      **gains})

    def describe(self) -> str:
        what = "synapses" if self.observable == "weights" else "units"
        animals = f"{self.n_animals} animals × " if self.n_animals > 1 else ""
        return (f"{animals}{self.n_units} {what} of {self.observable} ({', '.join(self.layers)}) at "
                f"{sessions_phrase(self.n_sessions, self.window)}, {self.noise_model} noise {self.noise:.3g} "
                f"({self.repeats} repeat{'s' if self.repeats != 1 else ''})"
                f"{'' if self.chronic else ', new units each session'}")


def sessions_phrase(n_sessions: int, window: Sequence[float]) -> str:
    """How the sessions sit in learning, in an experimenter's words: ``2 sessions, one before training starts
    and one at the end of learning``; ``5 sessions spread evenly over all of learning, the first before training
    starts``; ``3 sessions within the first 30% of learning, the first before training starts``."""
    lo, hi = float(window[0]), float(window[1])
    plural = "s" if n_sessions != 1 else ""
    if n_sessions == 1:
        return "1 session, before training starts" if lo == 0 else f"1 session at {lo:.0%} of learning"
    starts = lo == 0.0
    if n_sessions == 2 and starts:
        end = "at the end of learning" if hi >= 1.0 else f"at {hi:.0%} of learning"
        return f"2 sessions, one before training starts and one {end}"
    span = "spread evenly over all of learning" if (starts and hi >= 1.0) else (
        f"within the first {hi:.0%} of learning" if starts else f"within {lo:.0%}-{hi:.0%} of learning")
    return f"{n_sessions} session{plural} {span}" + (", the first before training starts" if starts else "")


@dataclass
class Scorer:
    """Scores protocols on one bank with fixed splits: the expensive, shared part of every trial.

    Attributes:
        bank: the trajectory bank.
        keep: which networks of the bank take part (the question's rules, set-aside networks excluded).
        y: their labels.
        labels: the label set, sorted.
        splits: train/test indices over the kept networks.
        classifier: classifier key.
        seed: seeds the classifiers and the bootstrap.
        n_checkpoints: checkpoints in the bank.
        cache: scores by protocol.
        partition: the question's networks, split into search and set-aside networks.
        controls: the controls on the search networks (same splits), by name.
        transfer_splits: leave-one-architecture-out splits over the search networks (``--robust``), else None.
        transfer_control: the behavioural control on ``transfer_splits`` (``--robust``), else None.
        transfer_cache: transfer scores by protocol.
    """

    bank: TrajectoryBank
    keep: np.ndarray
    y: np.ndarray
    labels: list[str]
    splits: list[tuple[np.ndarray, np.ndarray]]
    classifier: str
    seed: int
    n_checkpoints: int
    cache: dict[RecordingProtocol, Any] = field(default_factory=dict)
    partition: Partition | None = None
    controls: dict[str, Any] = field(default_factory=dict)
    transfer_splits: list[tuple[np.ndarray, np.ndarray]] | None = None
    transfer_control: Any = None
    transfer_cache: dict[RecordingProtocol, Any] = field(default_factory=dict)
    cells: np.ndarray | None = None
    pooled_cache: dict[tuple[RecordingProtocol, int], Any] = field(default_factory=dict)
    control_pooled: dict[int, float] = field(default_factory=dict)

    @property
    def y_index(self) -> np.ndarray:
        """The labels as indices into :attr:`labels`."""
        index = {label: i for i, label in enumerate(self.labels)}
        return np.array([index[v] for v in self.y])

    @property
    def test_fraction(self) -> float:
        """The splits' mean test share (for the corrected t interval of pooled accuracies)."""
        return float(np.mean([len(te) / (len(tr) + len(te)) for tr, te in self.splits]))

    def pooled(self, protocol: RecordingProtocol, k: int) -> Any:
        """``protocol``'s accuracy pooled over ``k`` animals on the search splits
        (``advisor.science.animals.pooled_scores``; cached). ``k == 1`` pools nothing: the plain accuracy."""
        from advisor.science.animals import pooled_scores

        if k == 1:
            return self.score(protocol)
        if (protocol, k) not in self.pooled_cache:
            scores = self.score(protocol)
            self.pooled_cache[(protocol, k)] = pooled_scores(scores.test_scores, self.y_index, k, self.seed,
                                                             cells=self.cells, test_fraction=self.test_fraction)
        return self.pooled_cache[(protocol, k)]

    def _pooled_candidates(self, control: Any, k: int) -> Any:
        from advisor.science.animals import pooled_candidates

        return pooled_candidates(control, self.y_index, k, self.seed, cells=self.cells,
                                 test_fraction=self.test_fraction)

    def pooled_controls(self, k: int) -> dict[str, dict[str, Any]]:
        """Each control pooled over ``k`` animals on the search splits (the better of its classifiers), as document
        entries ``{"accuracy", "ci", "classifier", "n_animals", "single_animal"}``."""
        from advisor.science.animals import best_pooled

        out = {}
        for name, control in self.controls.items():
            classifier, p = best_pooled(self._pooled_candidates(control, k))
            out[name] = {"accuracy": p.accuracy, "ci": [p.ci[0], p.ci[1]], "classifier": classifier,
                         "n_animals": k, "single_animal": control.to_dict()}
        return out

    def control_high_for(self, k: int) -> float:
        """The strongest control's upper CI bound with ``k`` animals pooled (each control the better of its
        classifiers pooled over the same k animals); ``k == 1`` is :attr:`control_high`."""
        if k == 1:
            return self.control_high
        if k not in self.control_pooled:
            highs = [p.ci[1] for control in self.controls.values()
                     for p in self._pooled_candidates(control, k).values()]
            self.control_pooled[k] = float(max(highs, default=-math.inf))
        return self.control_pooled[k]

    @property
    def transfer_control_high(self) -> float:
        """The behavioural control's upper CI bound leaving one architecture out (−inf without it)."""
        return float(self.transfer_control.scores.ci[1]) if self.transfer_control is not None else -math.inf

    def score_transfer(self, protocol: RecordingProtocol) -> Any:
        """Accuracy leaving one architecture out over the search networks (``--robust``; cached by protocol)."""
        from advisor.science.evaluation import score

        assert self.transfer_splits is not None
        if protocol not in self.transfer_cache:
            X = self.features(protocol).X[self.keep]
            self.transfer_cache[protocol] = score(X, self.y, self.transfer_splits, self.labels,
                                                  classifier=self.classifier, seed=self.seed, refits=0,
                                                  cross_validated=False)
        return self.transfer_cache[protocol]

    @property
    def control_high(self) -> float:
        """The strongest control's upper CI bound on the search networks (−inf without controls): a protocol
        counts only where its lower bound clears it."""
        from advisor.science.evaluation import strongest

        top = strongest(self.controls)
        return float(top.scores.ci[1]) if top is not None else -math.inf

    def features(self, protocol: RecordingProtocol) -> Any:
        from advisor.science.features import featurize

        return featurize(self.bank, protocol)

    def score(self, protocol: RecordingProtocol, *, importances: bool = False,
              splits: list[tuple[np.ndarray, np.ndarray]] | None = None) -> Any:
        """Accuracy of the classifier on ``protocol``'s features (cached by protocol, without importances)."""
        from advisor.science.evaluation import score

        if not importances and splits is None and protocol in self.cache:
            return self.cache[protocol]
        X = self.features(protocol).X[self.keep]
        result = score(X, self.y, splits or self.splits, self.labels, classifier=self.classifier,
                       seed=self.seed, importances=importances, keep_scores=True)
        if not importances and splits is None:
            self.cache[protocol] = result
        return result


@dataclass(frozen=True)
class Partition:
    """The question's networks, split before the search into search and set-aside networks.

    Attributes:
        members: (N_bank,) bool, the networks of the question's rules.
        search: (N_bank,) bool, members the search, re-checks and tuning may see.
        setaside: (N_bank,) bool, members set aside for the final estimate (disjoint from ``search``).
        share: the requested share.
    """

    members: np.ndarray
    search: np.ndarray
    setaside: np.ndarray
    share: float


STRATA = ("rule", "architecture", "task", "curriculum")
"""Set-aside draws are stratified by rule and design cell."""
SETASIDE_RANGE = (0.05, 0.5)
MIN_PER_SIDE = 2


def setaside_partition(metadata: Any, rules: Sequence[str], target: str, share: float, seed: int) -> Partition:
    """Set aside ``share`` of each stratum (rule × architecture × task × curriculum) of the question's networks,
    drawn with ``seed``; a stratum of n networks gives round(share · n) of them (at least one where n ≥ 2, so
    every design cell is represented on both sides where it can be).

    Raises:
        AdvisorError: ``share`` is outside [0.05, 0.5], or it leaves fewer than 2 networks of a label on
            either side.
    """
    lo, hi = SETASIDE_RANGE
    number = isinstance(share, int | float) and not isinstance(share, bool)
    if not (number and math.isfinite(share) and lo <= share <= hi):
        shown = f"{share:g}" if number else repr(share)
        raise AdvisorError(f"--setaside must be a share in [{lo:g}, {hi:g}] of the networks; got {shown}")
    meta = metadata.reset_index(drop=True)
    members = meta["rule"].astype(str).isin(rules).to_numpy()
    setaside = np.zeros(len(meta), dtype=bool)
    rng = np.random.default_rng([seed, 25])
    columns = [c for c in STRATA if c in meta.columns]
    strata = meta[columns].astype(str).agg("|".join, axis=1).to_numpy()
    for stratum in sorted(set(strata[members])):
        rows = np.flatnonzero(members & (strata == stratum))
        k = round(share * len(rows))
        if len(rows) >= 2:
            k = min(max(k, 1), len(rows) - 1)
        setaside[rng.permutation(rows)[:k]] = True
    search = members & ~setaside
    y = meta[target].astype(str).to_numpy()
    for label in sorted(set(y[members])):
        n_search, n_set = int(np.sum(search & (y == label))), int(np.sum(setaside & (y == label)))
        if min(n_search, n_set) < MIN_PER_SIDE:
            raise AdvisorError(f"--setaside {share:g} leaves {n_search} search and {n_set} set-aside networks of "
                               f"{target} {str(label)!r}; each side needs at least {MIN_PER_SIDE} (simulate more "
                               f"networks per rule, or change the share within [{lo:g}, {hi:g}])")
    return Partition(members, search, setaside, float(share))


def make_scorer(bank: TrajectoryBank, question: Question, seed: int | None = None, *, controls: bool = True) -> Scorer:
    """The scorer of ``question`` on ``bank``'s search networks (splits drawn from ``seed``, default the
    question's; the set-aside draw always from the question's seed, so re-checks never see set-aside networks).

    Args:
        controls: also score the behavioural and hyperparameter controls on the same splits (once; the
            search's feasibility needs them, a re-check does not).
    """
    from advisor.science.controls import behaviour_features, hyperparameter_features
    from advisor.science.evaluation import control_scores, heldout_groups, make_splits

    seed = question.seed if seed is None else seed
    meta = bank.metadata.reset_index(drop=True)
    partition = setaside_partition(meta, question.rules, question.target, question.setaside, question.seed)
    keep = partition.search
    meta = meta[keep].reset_index(drop=True)
    y = meta[question.target].astype(str).to_numpy()
    groups = heldout_groups(meta, question.heldout)
    splits = make_splits(y, question.heldout, groups, question.n_splits, seed)
    labels = sorted(set(y))
    scored = {}
    if controls:
        inputs = {"behaviour": behaviour_features(bank, keep), "hyperparameters": hyperparameter_features(meta)}
        scored = control_scores(inputs, y, splits, labels, seed)
    transfer_splits, transfer_control = None, None
    if question.robust:
        archs = heldout_groups(meta, "architecture")
        transfer_splits = make_splits(y, "architecture", archs, 0, seed)
        if controls:
            transfer_control = control_scores({"behaviour": behaviour_features(bank, keep)}, y, transfer_splits,
                                              labels, seed, cross_validated=False)["behaviour"]
    return Scorer(bank, keep, y, labels, splits, question.classifier, seed, int(bank["loss"].shape[1]),
                  partition=partition, controls=scored, transfer_splits=transfer_splits,
                  transfer_control=transfer_control, cells=design_cells(meta))


def design_cells(meta: Any) -> np.ndarray:
    """(n,) each network's design cell (architecture, task, curriculum) as one string: pooled animals come from
    one cell where it has enough of them (``advisor.science.animals``)."""
    columns = [c for c in STRATA[1:] if c in meta.columns]
    return meta[columns].astype(str).agg("|".join, axis=1).to_numpy()


def pareto_front(trials: Sequence[TrialResult]) -> list[TrialResult]:
    """Trials no other trial beats on both cost (lower) and accuracy (higher), sorted by cost; ties in both
    keep the earliest trial."""
    ordered = sorted(trials, key=lambda t: (t.cost, -t.accuracy, t.number))
    front: list[TrialResult] = []
    best = -math.inf
    for t in ordered:
        if t.accuracy > best:
            front.append(t)
            best = t.accuracy
    return front


def storage_for(url: str) -> Any:
    """An Optuna storage from a URL: ``journal:PATH`` (or a path ending in .log / .journal) → a journal file;
    anything with ``://`` → RDB storage (e.g. ``postgresql+psycopg://...``, ``sqlite:///...``)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if url.startswith("journal:") or ("://" not in url and url.endswith((".log", ".journal"))):
        path = url.removeprefix("journal:")
        try:
            return JournalStorage(JournalFileBackend(path))
        except OSError as e:
            raise AdvisorError(f"--storage {url!r} cannot be opened: {e.strerror or e}: {path}") from None
    if "://" in url:
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
        except Exception as e:  # SQLAlchemy and driver errors vary; the user gets one line
            reason = error_line(e)
            raise AdvisorError(f"--storage {url!r} cannot be opened: {reason}") from None
    raise AdvisorError(f"--storage must be journal:PATH, a .log/.journal file or a database URL such as "
                       f"postgresql+psycopg://user@host/db; got {url!r}")


def check_storage(url: str) -> None:
    """Validate a storage URL before any work: a journal's syntax only (nothing is created), a database by
    connecting to it (so an unreachable server fails in seconds, before a bank is built)."""
    if url.startswith("journal:") or ("://" not in url and url.endswith((".log", ".journal"))):
        return
    storage_for(url)


def _suggest(trial: Any, question: Question, modality: Modality) -> dict[str, Any]:
    """Sample one protocol; ranges are fixed per study so TPE sees consistent distributions."""
    observable = trial.suggest_categorical("observable", list(question.observables)) \
        if len(question.observables) > 1 else question.observables[0]
    layers = tuple(trial.suggest_categorical("layers", list(question.layers)).split(",")) \
        if len(question.layers) > 1 else tuple(question.layers[0].split(","))
    hi_units = max(question.max_units.values())
    units = trial.suggest_int("n_units", MIN_UNITS, hi_units, log=True) if hi_units > MIN_UNITS else hi_units
    units = max(len(layers), min(units, question.max_units[observable], question.per_group[observable] * len(layers)))
    sessions = trial.suggest_int("n_sessions", MIN_SESSIONS, question.max_sessions) \
        if question.max_sessions > MIN_SESSIONS else question.max_sessions
    window = trial.suggest_categorical("window", list(WINDOWS))
    sessions = min(sessions, round(window * (question.n_checkpoints - 1)) + 1)
    repeats = trial.suggest_int("repeats", 1, modality.max_repeats, log=True) if modality.max_repeats > 1 else 1
    animals = trial.suggest_int("n_animals", 1, question.max_animals) if question.max_animals > 1 else 1
    return {"observable": observable, "n_units": int(units), "layers": layers, "n_sessions": int(sessions),
            "window": (0.0, float(window)), "repeats": int(repeats), "n_animals": int(animals)}


def evaluate_choice(choice: dict[str, Any], scorer: Scorer, modality: Modality, question: Question,
                    number: int) -> TrialResult:
    """Score one protocol choice under ``modality``'s noise and cost."""
    noise = float(modality.noise_for(choice["repeats"]))
    chronic = "chronic" in modality.sampling  # chronic where the modality can
    rig = modality.protocol_kwargs()  # the modality's unknown gains and baseline
    # weights have no stimuli and so no population statistics: a population-only search scores them on the
    # marginal ones (the trial records which)
    statistics = "marginal" if choice["observable"] == "weights" and question.statistics == "population" \
        else question.statistics
    protocol = RecordingProtocol(observable=choice["observable"], n_units=choice["n_units"], layers=choice["layers"],
                                 n_sessions=choice["n_sessions"], window=choice["window"],
                                 noise_model=modality.noise_model, noise=noise, chronic=chronic, seed=question.seed,
                                 statistics=statistics, **rig)
    scores = scorer.score(protocol)
    k = int(choice.get("n_animals", 1))
    animal_cost = None
    if question.max_animals > 1:  # totals over the animals, each animal's own cost included
        cost = modality.total_cost(choice["n_units"], choice["n_sessions"], choice["repeats"], k)
        animal_cost = cost / k
    else:
        cost = float(modality.cost(choice["n_units"], choice["n_sessions"], choice["repeats"]))
    accuracy, balanced = float(scores.accuracy), float(scores.balanced_accuracy)
    ci = (float(scores.ci[0]), float(scores.ci[1]))
    if k > 1:
        pooled = scorer.pooled(protocol, k)
        accuracy, balanced, ci = pooled.accuracy, pooled.balanced_accuracy, (pooled.ci[0], pooled.ci[1])
    beyond = ci[0] > scorer.control_high_for(k)
    feasible = ci[0] >= question.target_accuracy and beyond
    held_acc, held_ci = None, None
    if question.robust:
        held = scorer.score_transfer(protocol)
        held_acc, held_ci = float(held.accuracy), (float(held.ci[0]), float(held.ci[1]))
        feasible = feasible and held_ci[0] >= question.target_accuracy and held_ci[0] > scorer.transfer_control_high
    return TrialResult(number, choice["observable"], choice["n_units"], tuple(choice["layers"]),
                       choice["n_sessions"], tuple(choice["window"]), choice["repeats"], modality.noise_model, noise,
                       cost, accuracy, ci, balanced, feasible, chronic, beyond,
                       rig["gain_sd"], rig["baseline"], held_acc, held_ci, statistics, k, animal_cost)


def constraint_value(result: TrialResult, question: Question, control_high: float) -> float:
    """The Optuna constraint (feasible when ≤ 0): the lower CI bound must reach the target and clear the
    strongest control's upper bound."""
    gap = question.target_accuracy - result.ci[0]
    if math.isfinite(control_high):
        gap = max(gap, control_high - result.ci[0] + 1e-9)
    if result.heldout_ci is not None:  # --robust: the held-out-architecture bound must reach the target too
        gap = max(gap, question.target_accuracy - result.heldout_ci[0])
        if not result.feasible:
            gap = max(gap, 1e-9)
    return float(gap)


def _sampler(question: Question) -> Any:
    from optuna.samplers import TPESampler

    return TPESampler(seed=question.seed, n_startup_trials=min(20, max(5, question.n_trials // 4)),
                      multivariate=True)


def _finished(study: Any) -> list[TrialResult]:
    from optuna.trial import TrialState

    return sorted((TrialResult.from_dict(t.user_attrs["result"])
                   for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                   if "result" in t.user_attrs), key=lambda t: t.number)


def _optimize(study: Any, scorer: Scorer, question: Question, modality: Modality, timeout: float | None,
              on_trial: Callable[[TrialResult, bool], None] | None) -> int:
    """Add trials until the study holds ``question.n_trials`` finished ones, counting every process's.

    Returns:
        How many trials this process finished (other processes' trials are not counted).
    """
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    done = 0

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        nonlocal done
        choice = _suggest(trial, question, modality)
        result = evaluate_choice(choice, scorer, modality, question, trial.number)
        trial.set_constraint("accuracy", constraint_value(result, question, scorer.control_high_for(result.n_animals)))
        trial.set_user_attr("result", result.to_dict())
        if on_trial:
            on_trial(result, True)
        done += 1
        return result.cost, result.accuracy

    remaining = question.n_trials - len(_finished(study))
    if remaining > 0:
        stop = MaxTrialsCallback(question.n_trials, states=(TrialState.COMPLETE,))
        study.optimize(objective, n_trials=remaining, timeout=timeout, gc_after_trial=False, callbacks=[stop])
    return done


def run_study(
    scorer: Scorer, question: Question, modality: Modality, *, storage: str, study_name: str,
    on_trial: Callable[[TrialResult, bool], None] | None = None,
    timeout: float | None = None, context: dict[str, Any] | None = None,
) -> list[TrialResult]:
    """Run (or resume, or join) the study until it holds ``question.n_trials`` finished trials; return them all.

    Several processes may run the same study at once (``advisor worker``): each stops when the study as a whole
    holds enough finished trials, and the result includes every process's trials.

    Args:
        on_trial: called as ``on_trial(result, new)``: for the trials a resumed study already held first
            (``new=False``, in order), then for each trial this process runs (``new=True``).
        timeout: stop starting trials after this many seconds (the answer then rests on fewer trials).
        context: stored in the study (bank path, modality source, MLflow parent run) so workers can join.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=study_name, storage=storage_for(storage),
                                directions=["minimize", "maximize"], sampler=_sampler(question), load_if_exists=True)
    modality_blob = json.dumps({k: v for k, v in modality.to_dict().items() if k != "source"}, sort_keys=True)
    identity = question.key(str(getattr(scorer.bank, "hash", "")), modality_blob)
    if study.user_attrs.get("question_key") not in (None, identity):
        raise AdvisorError(f"study {study_name!r} in {storage} was made for a different question; "
                           f"pass another --study name")
    study.set_user_attr("question_key", identity)
    study.set_user_attr("question", asdict(question))
    for key, value in (context or {}).items():
        study.set_user_attr(key, value)
    for result in _finished(study):
        if on_trial:
            on_trial(result, False)
    _optimize(study, scorer, question, modality, timeout, on_trial)
    return _finished(study)


def question_from_dict(d: dict[str, Any]) -> Question:
    """The inverse of ``asdict(question)`` (tuples restored)."""
    return Question(**{**d, "observables": tuple(d["observables"]), "layers": tuple(d["layers"]),
                       "rules": tuple(d["rules"])})


def _study_names(storage: str) -> list[str] | None:
    """The studies in ``storage``, or None for a journal file that does not exist (reading creates nothing)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if storage.startswith("journal:") and not Path(storage.removeprefix("journal:")).is_file():
        return None
    return [s.study_name for s in optuna.get_all_study_summaries(storage_for(storage), include_best_trial=False)]


def study_context(storage: str, study_name: str) -> dict[str, Any]:
    """The context a plan stored in its study (question, bank path, modality, MLflow parent run).

    Raises:
        AdvisorError: the study does not exist (the message lists those that do) or was not made by a plan.
    """
    import optuna

    names = _study_names(storage)
    if names is None:
        raise AdvisorError(f"no study {study_name!r} in {storage}: the journal file does not exist (start the "
                           f"plan first, with the same workspace or --storage)")
    if study_name not in names:
        raise AdvisorError(f"no study {study_name!r} in {storage}; its studies: {', '.join(names) or '(none)'}")
    attrs = dict(optuna.load_study(study_name=study_name, storage=storage_for(storage)).user_attrs)
    if "question" not in attrs or "bank_path" not in attrs:
        raise AdvisorError(f"study {study_name!r} was not started by `advisor plan`; a worker cannot join it")
    return attrs


def finished_trials(storage: str, study_name: str) -> int:
    """How many trials of ``study_name`` have finished (0 when there is no such study); creates nothing."""
    import optuna

    if study_name not in (_study_names(storage) or []):
        return 0
    study = optuna.load_study(study_name=study_name, storage=storage_for(storage))
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


def join_study(storage: str, study_name: str, *, on_trial: Callable[[TrialResult, bool], None] | None = None,
               timeout: float | None = None) -> tuple[dict[str, Any], int]:
    """Add trials to a running study as a worker (``advisor worker``); return its context and how many trials it ran.

    Raises:
        AdvisorError: the study does not exist (the message lists those that do) or was not made by a plan.
    """
    import optuna

    from advisor.science.cost import load_modality
    from simulator.bank import load_bank

    attrs = study_context(storage, study_name)
    study = optuna.load_study(study_name=study_name, storage=storage_for(storage))
    question = question_from_dict(attrs["question"])
    # Not the plan's seed: the same seed would propose the plan's own random start-up trials again.
    study.sampler = _sampler(replace(question, seed=question.seed + 1 + os.getpid()))
    modality = load_modality(attrs["modality_source"])
    overrides = attrs.get("modality_overrides")  # a plan's pilot numbers (advisor plan --pilot)
    if overrides:
        animal, area, unit = (float(v) for v in overrides["gain_sd"])
        modality = replace(modality, single_trial_noise=float(overrides["single_trial_noise"]),
                           gain_sd=(animal, area, unit))
    bank = load_bank(attrs["bank_path"])
    scorer = make_scorer(bank, question)
    return dict(attrs), _optimize(study, scorer, question, modality, timeout, on_trial)


def verify(trial: TrialResult, bank: TrajectoryBank, question: Question, seeds: Sequence[int],
           control_high: float = -math.inf) -> dict[str, Any]:
    """Re-evaluate ``trial``'s protocol with fresh seeds on the search networks (never the set-aside ones):
    new unit subsets, noise, splits and classifier seeds.

    The accuracy and the CI bounds are means over the fresh seeds; ``meets_target`` asks what the search asked:
    that the lower CI bound reach the target and clear ``control_high`` (the strongest control's upper bound).
    """
    accs, lows, highs = [], [], []
    for s in seeds:
        scorer = make_scorer(bank, question, seed=s, controls=False)
        scores = scorer.pooled(trial.protocol(seed=s), trial.n_animals)
        accs.append(float(scores.accuracy))
        lows.append(float(scores.ci[0]))
        highs.append(float(scores.ci[1]))
    low = float(np.mean(lows))
    meets = low >= question.target_accuracy and low > control_high
    return {"accuracy": float(np.mean(accs)), "ci": [low, float(np.mean(highs))],
            "per_seed": accs, "seeds": list(seeds), "meets_target": meets}


def recommend(trials: Sequence[TrialResult], bank: TrajectoryBank, question: Question, seeds: Sequence[int],
              max_checks: int = 5, control_high: float | Callable[[int], float] = -math.inf,
              ) -> tuple[TrialResult | None, dict[str, Any] | None, list[dict[str, Any]]]:
    """The cheapest feasible trial whose protocol still meets the target with fresh seeds.

    Cheapest-of-many is optimistic (the winner's curse), so feasible trials are re-checked in order of cost
    on the search networks and the first that holds up is the candidate; its reported accuracy then comes from
    the set-aside networks (``advisor.application.planning``), tested once. Returns (candidate, its verification, the
    candidates that failed the re-check with their verification).
    """
    feasible = sorted((t for t in trials if t.feasible and (question.budget is None or t.cost <= question.budget)),
                      key=lambda t: (t.cost, -t.accuracy, t.number))
    rejected: list[dict[str, Any]] = []
    seen: set[tuple[RecordingProtocol, int]] = set()
    for t in feasible:
        key = (t.protocol(0), t.n_animals)
        if key in seen:
            continue
        seen.add(key)
        high = control_high(t.n_animals) if callable(control_high) else control_high
        check = verify(t, bank, question, seeds, high)
        if check["meets_target"]:
            return t, check, rejected
        rejected.append({"trial": t.to_dict(), "verification": check})
        if len(rejected) >= max_checks:
            break
    return None, None, rejected

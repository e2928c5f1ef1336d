"""The plan and compare documents: one typed definition that the producers (``advisor.application.planning``, the
CLI) and
the renderers (``advisor.application.reports``, ``advisor.application.figures``, the CLI's tables,
``advisor.application.tracking``'s metrics) share.

A document is plain JSON data (it is stored as the MLflow run's ``summary.json`` and printed by ``--json``), so
the types are :class:`~typing.TypedDict`: a misspelt key is a type error (mypy) instead of a silent ``None``.
Every top-level key is typed; the nested parts (trials, estimates, the question) are plain dictionaries
(:data:`Entry`) whose keys are listed beside them, because renderers read them from documents of older runs too.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

__all__ = ["OBSERVABLE_WORDS", "REPORT_FORMATS", "Document", "Entry", "headline_trial"]

REPORT_FORMATS = ("md", "html", "pdf")
"""The formats a document is rendered to (``advisor.application.reports.write_reports``; ``advisor report
--format``)."""

OBSERVABLE_WORDS = {"activations": ("units", "activations"), "activity_change": ("units", "activity changes"),
                    "weights": ("synapses", "weights")}
"""Per observable: what is counted (units or synapses) and its name in reports, figures and tables."""

Entry = dict[str, Any]
"""A nested part of a document (a trial, an estimate, the question, a modality's column): plain JSON data,
read with ``.get`` where a key may be absent; the keys are listed on :class:`Document`."""


class Document(TypedDict, total=False):
    """A plan (``kind == "plan"``) or a comparison (``kind == "compare"``) document. Every key is optional at the
    type level because the two kinds share the header and differ in the body: a plan has the search's results, a
    comparison one entry per modality."""

    # header, both kinds
    kind: Literal["plan", "compare", "identify"]
    title: str
    created: str
    command: str
    elapsed_s: float
    question: Entry  # observable(s), modality, max_units, max_sessions, target_accuracy, rules, target,
    #   heldout, classifier, trials, n_splits, seed, setaside, robust, statistics (compare: modalities)
    bank: Entry  # preset, hash, path, n_networks, rules, architectures, tasks, n_steps, n_checkpoints
    versions: dict[str, str]
    storage: str
    run_id: str
    tracking_uri: str
    workspace: str
    run_url: str
    reports: dict[str, str]
    # a plan
    modality: Entry  # the modality file as data: key, name, observables, noise_model, costs, ...
    feasible: bool
    verdict: str
    recommendation: Entry | None  # a trial (number, observable, n_units, layers, n_sessions, window,
    #   repeats, noise_model, noise, cost, cost_unit, accuracy, ci, balanced_accuracy, feasible, chronic,
    #   description, beyond_control) with setaside, heldout {accuracy, ci, control, level, transfers},
    #   verified_accuracy
    candidate: Entry | None  # the cheapest feasible trial, recommended or not
    best: Entry | None  # the most accurate trial
    verification: Entry | None  # accuracy, ci, per_seed, seeds, meets_target
    rejected_by_recheck: list[Entry]
    labels: list[str]
    chance: float
    confusion_matrix: list[list[int]]
    setaside: Entry  # accuracy, ci, n_networks, n_train, balanced_accuracy, reaches_target,
    #   beyond_controls, classifier
    controls: dict[str, Entry]  # per control: accuracy, ci, classifier, ...
    search_controls: dict[str, Entry]
    strongest_control: str | None
    heldout_architecture: Entry | None  # accuracy, ci, control_*, level, levels, per_level, transfers
    importances: Entry | None  # statistics, sessions
    trials: list[Entry]
    pareto: list[Entry]
    insufficient: list[Entry]  # description, accuracy, ci, cost, trial, why
    curves: dict[str, Entry] | None
    power_table: Entry | None  # animals, target, protocol, units/sessions: [{value, cells: [{accuracy, ci, cost,
    #   reaches}]}] (advisor.application.planning.power_table)
    budget: Entry | None  # hours, mode, n_within, chosen, next_step, would_take
    # a comparison
    modalities: list[Entry]  # name, title, cost_unit, feasible, cost, recommendation, best, reason,
    #   trials, pareto, candidate, setaside, controls, verification, chance, verdict, heldout_architecture,
    #   modality (advisor.application.planning.modality_entry)
    # an identification (advisor.application.identify.identify_document)
    recording: Entry  # source, format, n_sessions, session_progress, units_recorded, units_used, presentations,
    #   presentations_used, n_stimuli, notes, has_behaviour
    protocol: Entry  # description, repeats, combine and the RecordingProtocol's fields
    plan: Entry  # run_id, description, feasible, recommended, search_accuracy, setaside_accuracy, setaside_ci,
    #   modality, modality_name, cost, cost_unit, trial, chance
    target: str
    classifier: str
    posterior: dict[str, float]
    top_rule: str
    top_words: str
    p_top: float
    p_top_ci: list[float]
    in_distribution: bool
    misspecification_p: float
    misspecification: Entry  # p, alpha, score, in_distribution, null_scores, null_quantiles, n_reference, n_null,
    #   false_alarm_rate, neighbours, furthest [{statistic, z, beyond}]
    calibration: Entry  # n_networks, accuracy, accuracy_ci, nll, brier, ece, ece_uncalibrated, temperature, bins,
    #   mean_confidence
    identifier: Entry  # key, n_search, n_setaside, fit_seconds, bootstraps, n_stimuli


def headline_trial(doc: Document) -> Entry:
    """The trial a plan reports: the recommendation, else the cheapest feasible candidate, else the most accurate.

    Raises:
        KeyError: the document has none of them (a plan whose search ran no trial).
    """
    trial = doc.get("recommendation") or doc.get("candidate") or doc.get("best")
    if trial is None:
        raise KeyError("the plan document has no recommendation, candidate or best trial")
    return trial

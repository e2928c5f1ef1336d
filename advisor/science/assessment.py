"""How well one recording protocol identifies the rule in a bank, next to the controls: what ``advisor evaluate``
computes, as a library call (:func:`evaluate_protocol`) and its JSON document (:meth:`ProtocolEvaluation.document`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from advisor.errors import AdvisorError
from advisor.science.controls import CONTROL_LABELS, controls_document
from advisor.science.protocol import RecordingProtocol

if TYPE_CHECKING:
    from advisor.science.evaluation import EvaluationResult
    from advisor.science.features import Features
    from simulator.bank import TrajectoryBank

__all__ = ["TOP_FEATURES", "TOP_SESSIONS", "ProtocolEvaluation", "evaluate_protocol", "protocol_document"]

TOP_FEATURES = 8
"""Statistics listed by importance."""
TOP_SESSIONS = 3
"""Sessions listed by importance."""

Status = Callable[[str], AbstractContextManager[Any]]
"""``status(text)``: a context manager shown while a slow step runs (a spinner on a terminal)."""


def protocol_document(protocol: RecordingProtocol) -> dict[str, Any]:
    """The protocol as plain data (the ``"protocol"`` of ``advisor evaluate --json``)."""
    return {
        "observable": protocol.observable,
        "n_units": int(protocol.n_units),
        "layers": list(protocol.layers),
        "n_sessions": int(protocol.n_sessions),
        "window": [float(v) for v in protocol.window],
        "noise_model": protocol.noise_model,
        "noise": float(protocol.noise),
        "chronic": bool(protocol.chronic),
        "n_probes": None if protocol.n_probes is None else int(protocol.n_probes),
        "seed": int(protocol.seed),
        "gain_sd": [float(v) for v in protocol.gain_sd],
        "baseline": float(protocol.baseline),
        "statistics": protocol.statistics,
    }


def check_stratified_splits(y: Sequence[str], target: str) -> None:
    """AdvisorError (instead of scikit-learn's ValueError) when stratified 4-fold splits cannot test every
    network: each label needs at least 4 networks."""
    from advisor.science.evaluation import FOLDS

    counts = {label: list(y).count(label) for label in sorted(set(y))}
    few = min(counts, key=lambda label: counts[label])
    if counts[few] < FOLDS:
        raise AdvisorError(
            f"{len(y)} networks are too few for stratified {FOLDS}-fold splits over {len(counts)} {target}s: "
            f"{target} {few!r} has {counts[few]}, each needs at least {FOLDS}; simulate more networks per rule"
        )


@dataclass(frozen=True)
class ProtocolEvaluation:
    """One protocol scored on one bank.

    Attributes:
        protocol: what was recorded.
        result: the classifier's scores and the controls' on the same splits.
        features: the recorded statistics (names, sessions, non-finite counts).
        top_features: the most important statistics, ``(name, accuracy drop)``, most important first.
        top_sessions: the most important sessions, ``(checkpoint, accuracy drop)``.
        verdict: one line: identified beyond the strongest control, or not.
        classifier, heldout, augment, target: the settings it was scored with.
    """

    protocol: RecordingProtocol
    result: EvaluationResult
    features: Features
    top_features: list[tuple[str, float]]
    top_sessions: list[tuple[int, float]]
    verdict: str
    classifier: str
    heldout: str
    augment: int
    target: str

    def document(self) -> dict[str, Any]:
        """The ``advisor evaluate --json`` document."""
        scores, control, top = self.result.scores, self.result.control, self.result.strongest_control
        return {
            "accuracy": float(scores.accuracy),
            "ci": [float(v) for v in scores.ci],
            "balanced_accuracy": float(scores.balanced_accuracy),
            "chance": float(self.result.chance),
            "control_accuracy": float(control.accuracy) if control is not None else None,
            "control_ci": [float(v) for v in control.ci] if control is not None else None,
            "controls": controls_document(self.result.controls),
            "strongest_control": top.name if top is not None else None,
            "ci_method": scores.ci_method,
            "beyond_control": bool(self.result.beyond_controls),
            "verdict": self.verdict,
            "confusion_matrix": np.asarray(scores.confusion_matrix).astype(int).tolist(),
            "labels": list(self.result.labels),
            "n_networks": int(self.result.n_networks),
            "protocol": protocol_document(self.protocol),
            "protocol_description": self.protocol.describe(),
            "classifier": self.classifier,
            "heldout": self.heldout,
            "statistics": self.protocol.statistics,
            "augment": self.augment,
            "target": self.target,
            "n_splits": len(scores.split_accuracies),
            "sessions": [int(s) for s in self.features.sessions],
            "top_features": [{"name": n, "importance": v} for n, v in self.top_features],
            "top_sessions": [{"checkpoint": c, "importance": v} for c, v in self.top_sessions],
            "nonfinite": int(self.features.nan_report.n_nonfinite),
        }


def evaluate_protocol(
    bank: TrajectoryBank, protocol: RecordingProtocol, *, rules: Sequence[str] | None = None,
    target: str = "rule", classifier: str = "svm", heldout: str = "none", n_splits: int = 10, seed: int = 0,
    augment: int = 1, status: Status | None = None,
) -> ProtocolEvaluation:
    """Record every network of ``bank`` (of ``rules``, all by default) under ``protocol`` and score
    ``classifier`` on splits over networks, next to the behavioural and hyperparameter controls, with
    permutation importances of statistics and sessions.

    Raises:
        AdvisorError: ``augment`` below 1; a rule not in the bank; too few networks per label for stratified
            splits (checked before the recording, which is the slow part).
    """
    from advisor.science.controls import behaviour_features
    from advisor.science.evaluation import evaluate
    from advisor.science.features import augmented_features, check_augment, featurize

    check_augment(augment)
    show = status or (lambda _text: nullcontext())
    meta = bank.metadata.reset_index(drop=True)
    in_bank = sorted(set(meta["rule"].astype(str)))
    keep = np.ones(len(meta), dtype=bool)
    if rules is not None:
        unknown = [r for r in rules if r not in in_bank]
        if unknown:
            raise AdvisorError(f"--rules: {', '.join(unknown)} not in the bank; its rules are {', '.join(in_bank)}")
        keep = meta["rule"].astype(str).isin(list(rules)).to_numpy()
    meta = meta[keep].reset_index(drop=True)
    if heldout == "none":  # before the (slow) recording: scikit-learn would fail later with a ValueError
        check_stratified_splits(list(meta[target].astype(str)), target)
    with show("recording and computing features"):
        features = featurize(bank, protocol)
        extra = [x[keep] for x in augmented_features(bank, protocol, augment)]
    X, curve = features.X[keep], behaviour_features(bank, np.flatnonzero(keep))
    with show(f"evaluating {classifier} and the controls on {len(meta)} networks"):
        result = evaluate(X, curve, meta, target=target, classifier=classifier, heldout=heldout, n_splits=n_splits,
                          seed=seed, importances=True, augment=extra)
    scores = result.scores
    top_features: list[tuple[str, float]] = []
    top_sessions: list[tuple[int, float]] = []
    if scores.feature_importance is not None and scores.session_importance is not None:
        per_feature = dict(zip(features.names, (float(v) for v in scores.feature_importance), strict=True))
        top_features = sorted(per_feature.items(), key=lambda kv: kv[1], reverse=True)[:TOP_FEATURES]
        per_session = np.asarray(scores.session_importance, dtype=float)
        order = np.argsort(-per_session, kind="stable")[:TOP_SESSIONS]
        top_sessions = [(int(features.sessions[i]), float(per_session[i])) for i in order]
    top = result.strongest_control
    top_name = CONTROL_LABELS.get(top.name, top.name) if top is not None else "none"
    verdict = (f"identified beyond the strongest control ({top_name})" if result.beyond_controls
               else f"not distinguishable from the strongest control ({top_name})")
    return ProtocolEvaluation(protocol, result, features, top_features, top_sessions, verdict, classifier, heldout,
                              augment, target)

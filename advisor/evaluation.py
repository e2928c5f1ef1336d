"""How well do recorded features identify the learning rule? Splits by network, accuracy with a confidence
interval, the task-performance control.

Each network is one sample and never sits on both sides of a split. Modes: ``none`` (repeated stratified
75/25 splits over networks, as the paper's ten splits), ``architecture`` (leave one architecture family out)
and ``task`` (leave one task out). The 95% interval is a percentile bootstrap over networks of each network's
out-of-split correctness (its fraction of correct predictions over the splits that tested it), so it reflects
how many distinct networks were tested, not how many times. The control is the same classifier given only the
learning curve (training loss and metric at the same sessions): identification beyond it is more than learning
speed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from advisor.classifiers import make_classifier
from advisor.errors import AdvisorError

HELDOUT = {"none": None, "architecture": "arch_family", "task": "task"}
IMPORTANCE_SPLITS = 3
"""Permutation importances are averaged over the first splits only (they cost (F + S) x 3 predictions each)."""


@dataclass(frozen=True)
class Scores:
    """Out-of-split predictions of one classifier on one feature set."""

    accuracy: float
    ci: tuple[float, float]
    balanced_accuracy: float
    split_accuracies: list[float]
    confusion_matrix: np.ndarray
    feature_importance: np.ndarray | None = None
    session_importance: np.ndarray | None = None


@dataclass(frozen=True)
class EvaluationResult:
    """Identification of ``labels`` from features, and the task-performance control."""

    scores: Scores
    control: Scores | None
    labels: list[str]
    chance: float
    n_networks: int
    heldout: str
    classifier: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        return self.scores.accuracy


def make_splits(
    y: np.ndarray, heldout: str, groups: np.ndarray | None, n_splits: int, seed: int, test_size: float = 0.25
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Train/test indices over networks. Raises AdvisorError if a held-out factor has fewer than 2 levels."""
    from sklearn.model_selection import StratifiedShuffleSplit

    if heldout not in HELDOUT:
        raise AdvisorError(f"heldout must be one of {', '.join(HELDOUT)}; got {heldout!r}")
    if heldout == "none":
        counts = np.unique(y, return_counts=True)[1]
        if counts.min() < 2:
            raise AdvisorError("every label needs at least 2 networks for stratified splits")
        sss = StratifiedShuffleSplit(n_splits=n_splits, test_size=test_size, random_state=seed)
        return list(sss.split(np.zeros(len(y)), y))
    assert groups is not None
    levels = np.unique(groups)
    if len(levels) < 2:
        raise AdvisorError(f"held-out {heldout} needs at least 2 {heldout}s in the bank; it has only {levels[0]!r}")
    return [(np.flatnonzero(groups != g), np.flatnonzero(groups == g)) for g in levels]


def bootstrap_ci(correct_per_network: np.ndarray, seed: int, n_boot: int = 2000) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean over networks."""
    rng = np.random.default_rng(seed)
    n = len(correct_per_network)
    means = correct_per_network[rng.integers(0, n, (n_boot, n))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def grouped_importances(
    estimator: Any, X: np.ndarray, y: np.ndarray, seed: int, n_repeats: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """Permutation importance by feature channel (all sessions of a channel permuted together across networks)
    and by session (all channels of a session permuted together): mean accuracy drops, shapes (F,) and (S,).

    Grouping keeps the cost at (F + S) · n_repeats predictions instead of F · S · n_repeats, and answers the two
    questions a protocol needs: which statistics matter, and which sessions.
    """
    rng = np.random.default_rng(seed)
    base = float(np.mean(estimator.predict(X) == y))
    n, s, f = X.shape
    feat, sess = np.zeros(f), np.zeros(s)
    for _ in range(n_repeats):
        for j in range(f):
            Xp = X.copy()
            Xp[:, :, j] = X[rng.permutation(n), :, j]
            feat[j] += base - float(np.mean(estimator.predict(Xp) == y))
        for t in range(s):
            Xp = X.copy()
            Xp[:, t, :] = X[rng.permutation(n), t, :]
            sess[t] += base - float(np.mean(estimator.predict(Xp) == y))
    return feat / n_repeats, sess / n_repeats


def score(
    X: np.ndarray, y: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]], labels: list[str], *,
    classifier: str, seed: int, importances: bool = False,
) -> Scores:
    """Fit ``classifier`` on every split and pool the out-of-split predictions."""
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix

    n = len(y)
    hits, tested = np.zeros(n), np.zeros(n)
    cm = np.zeros((len(labels), len(labels)), dtype=np.int64)
    accs, bal, feat_imps, sess_imps = [], [], [], []
    for i, (train, test) in enumerate(splits):
        est = make_classifier(classifier, random_state=seed + i, n_sessions=X.shape[1])
        est.fit(X[train], y[train])
        pred = est.predict(X[test])
        hits[test] += pred == y[test]
        tested[test] += 1
        accs.append(float(np.mean(pred == y[test])))
        bal.append(float(balanced_accuracy_score(y[test], pred)))
        cm += confusion_matrix(y[test], pred, labels=labels)
        if importances and i < IMPORTANCE_SPLITS:
            fi, si = grouped_importances(est, X[test], y[test], seed + i)
            feat_imps.append(fi)
            sess_imps.append(si)
    seen = tested > 0
    ci = bootstrap_ci(hits[seen] / tested[seen], seed)
    return Scores(float(np.mean(accs)), ci, float(np.mean(bal)), accs, cm,
                  np.mean(feat_imps, axis=0) if feat_imps else None,
                  np.mean(sess_imps, axis=0) if sess_imps else None)


def evaluate(
    X: np.ndarray, curve: np.ndarray | None, metadata: Any, *, target: str = "rule", classifier: str = "rf",
    heldout: str = "none", n_splits: int = 10, seed: int = 0, importances: bool = False,
) -> EvaluationResult:
    """Identify ``metadata[target]`` (``rule`` or ``family``) from features X (networks, sessions, features).

    Args:
        X: features, one row per network of ``metadata`` in the same order.
        curve: (networks, sessions, 2) learning curves for the control, or None to skip it.
        metadata: the bank's metadata table (pandas DataFrame).
    """
    y = metadata[target].astype(str).to_numpy()
    labels = sorted(set(y))
    if len(labels) < 2:
        raise AdvisorError(f"need at least 2 different {target}s to identify; the bank has only {labels}")
    column = HELDOUT.get(heldout)
    groups = metadata[column].astype(str).to_numpy() if column else None
    splits = make_splits(y, heldout, groups, n_splits, seed)
    scores = score(X, y, splits, labels, classifier=classifier, seed=seed, importances=importances)
    control = score(curve, y, splits, labels, classifier=classifier, seed=seed) if curve is not None else None
    chance = float(max(np.mean(y == label) for label in labels))
    return EvaluationResult(scores, control, labels, chance, len(y), heldout, classifier)

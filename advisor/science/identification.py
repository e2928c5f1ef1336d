"""From one animal's statistics to a calibrated posterior over the simulated rules, and a check that the recording
is like any simulated one before the posterior is trusted.

Honest by construction (``advisor identify`` and its report rely on this):

* :func:`fit_identifier` fits the classifier on the plan's **search** networks only. Its temperature (the
  calibration, :func:`fit_temperature`) is fitted on *cross-fitted* scores of those same networks (each scored by
  a model that never saw it), so the **set-aside** networks stay untouched: the reliability diagram, the expected
  calibration error and the accuracy of the calibrated posterior are measured on them (:func:`calibration_report`).
* :class:`Typicality` measures how far a recording's statistics lie from the search networks' (the mean distance
  to its ``k`` nearest simulated networks in robustly standardised, signed-log statistics, and its single most
  extreme statistic) and turns both into one conformal p-value against the same scores of the set-aside
  networks: if the recording is exchangeable with simulated networks, ``P(p ≤ α) ≤ α``.
  :func:`false_alarm_rate` measures it leave-one-out on the set-aside networks themselves.
* The posterior's interval comes from refits of the classifier on bootstrap resamples of the search networks:
  how much the probability depends on which simulated networks trained the classifier.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from advisor.science.classifiers import make_classifier
from advisor.science.evaluation import class_scores, wilson_interval

__all__ = ["CalibratedClassifier", "Typicality", "calibration_report", "cross_fitted_scores",
           "expected_calibration_error", "false_alarm_rate", "fit_identifier", "fit_temperature"]

CALIBRATION_FOLDS = 4
CALIBRATION_REPEATS = 2
BOOTSTRAPS = 40
RELIABILITY_BINS = 10
NEIGHBOURS = 5
ALPHA = 0.05
"""A recording whose misspecification p-value is at most this is called unlike the simulations."""
TEMPERATURE_RANGE = (1e-3, 1e3)


def _nll(scores: np.ndarray, y: np.ndarray, temperature: float) -> float:
    return float(-np.mean(log_softmax(scores / temperature, axis=1)[np.arange(len(y)), y]))


def fit_temperature(scores: np.ndarray, y: np.ndarray) -> float:
    """The temperature T minimising the negative log-likelihood of ``softmax(scores / T)`` for labels ``y``
    (indices), searched on log T within :data:`TEMPERATURE_RANGE`."""
    lo, hi = np.log(TEMPERATURE_RANGE)
    result = minimize_scalar(lambda log_t: _nll(scores, y, float(np.exp(log_t))), bounds=(lo, hi), method="bounded",
                             options={"xatol": 1e-4})
    return float(np.exp(result.x))


def cross_fitted_scores(X: np.ndarray, y: np.ndarray, n_labels: int, classifier: str, seed: int,
                        folds: int = CALIBRATION_FOLDS, repeats: int = CALIBRATION_REPEATS) -> np.ndarray:
    """(n, C) scores of every network from models that never saw it: stratified ``folds``-fold splits, ``repeats``
    times with different shuffles, scores averaged over the repeats."""
    from sklearn.model_selection import StratifiedKFold

    out = np.zeros((len(y), n_labels))
    for r in range(repeats):
        splitter = StratifiedKFold(folds, shuffle=True, random_state=seed + 101 * r)
        for train, test in splitter.split(np.zeros(len(y)), y):
            model = make_classifier(classifier, random_state=seed, n_sessions=X.shape[1]).fit(X[train], y[train])
            out[test] += class_scores(model, X[test], list(range(n_labels)))
    return out / repeats


@dataclass
class CalibratedClassifier:
    """A fitted classifier and its temperature: ``posterior(X) = softmax(class_scores(X) / temperature)``.

    Attributes:
        estimator: fitted on the search networks (labels are indices into ``labels``).
        temperature: fitted on cross-fitted scores of the same networks.
        labels: the rule (or family) keys.
        bootstraps: estimators refitted on bootstrap resamples of the search networks (the posterior's interval).
    """

    estimator: Any
    temperature: float
    labels: list[str]
    bootstraps: list[Any] = field(default_factory=list)

    def scores(self, estimator: Any, X: np.ndarray) -> np.ndarray:
        """(n, C) class scores of ``estimator`` (this one's or a bootstrap refit's) in label-index order."""
        return class_scores(estimator, X, list(range(len(self.labels))))

    def posterior(self, X: np.ndarray) -> np.ndarray:
        """(n, C) calibrated probabilities."""
        return np.exp(log_softmax(self.scores(self.estimator, X) / self.temperature, axis=1))

    def uncalibrated(self, X: np.ndarray) -> np.ndarray:
        """(n, C) probabilities with temperature 1, for comparison."""
        return np.exp(log_softmax(self.scores(self.estimator, X), axis=1))

    def interval(self, X: np.ndarray, label: int, level: float = 0.95) -> tuple[float, float]:
        """The central ``level`` interval of the probability of ``label`` for the single sample ``X`` (1, S, F)
        over the bootstrap refits."""
        if not self.bootstraps:
            p = float(self.posterior(X)[0, label])
            return p, p
        values = [float(np.exp(log_softmax(self.scores(m, X) / self.temperature, axis=1))[0, label])
                  for m in self.bootstraps]
        lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
        return float(lo), float(hi)


def fit_identifier(X: np.ndarray, y: np.ndarray, labels: list[str], classifier: str, seed: int,
                   n_bootstraps: int = BOOTSTRAPS) -> CalibratedClassifier:
    """Fit the classifier on (search) networks ``X`` (n, S, F) with label indices ``y``, its temperature on their
    cross-fitted scores, and ``n_bootstraps`` refits on stratified bootstrap resamples."""
    scores = cross_fitted_scores(X, y, len(labels), classifier, seed)
    temperature = fit_temperature(scores, y)
    estimator = make_classifier(classifier, random_state=seed, n_sessions=X.shape[1]).fit(X, y)
    rng = np.random.default_rng([seed, 41])
    boots = []
    for _ in range(n_bootstraps):
        rows = np.concatenate([rng.choice(np.flatnonzero(y == c), int(np.sum(y == c)), replace=True)
                               for c in range(len(labels))])
        boots.append(make_classifier(classifier, random_state=seed, n_sessions=X.shape[1]).fit(X[rows], y[rows]))
    return CalibratedClassifier(estimator, temperature, list(labels), boots)


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, bins: int = RELIABILITY_BINS
                               ) -> tuple[float, list[dict[str, float]]]:
    """ECE of the top-class confidence over ``bins`` equal-width bins, and the bins (lower, upper, confidence,
    accuracy, count) of the non-empty ones: the reliability diagram's data."""
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    ece, out = 0.0, []
    for b in range(bins):
        mask = index == b
        if not mask.any():
            continue
        conf, acc = float(confidence[mask].mean()), float(correct[mask].mean())
        ece += mask.mean() * abs(conf - acc)
        out.append({"lower": float(edges[b]), "upper": float(edges[b + 1]), "confidence": conf, "accuracy": acc,
                    "count": int(mask.sum())})
    return float(ece), out


def calibration_report(model: CalibratedClassifier, X: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """The calibrated classifier on networks it never saw (the set-aside networks): accuracy, negative
    log-likelihood, Brier score, ECE and reliability bins, with the uncalibrated (temperature 1) ECE beside."""
    probs = model.posterior(X)
    raw = model.uncalibrated(X)
    ece, bins = expected_calibration_error(probs, y)
    raw_ece, _ = expected_calibration_error(raw, y)
    onehot = np.eye(len(model.labels))[y]
    accuracy = float(np.mean(probs.argmax(axis=1) == y))
    lower, upper = wilson_interval(accuracy, len(y))
    return {"n_networks": len(y), "accuracy": accuracy,
            "accuracy_ci": [lower, upper],
            "nll": float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, 1)))),
            "brier": float(np.mean(np.sum((probs - onehot) ** 2, axis=1))), "ece": ece,
            "ece_uncalibrated": raw_ece, "temperature": float(model.temperature), "bins": bins,
            "mean_confidence": float(probs.max(axis=1).mean())}


# -------------------------------------------------------------------------------------- misspecification
def _signed_log(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


@dataclass
class Typicality:
    """How unlike the simulated networks a recording's statistics are: two scores, each turned into a conformal
    p-value against held-back simulated networks, combined by Bonferroni (``p = min(1, 2 · min(p_knn, p_max))``,
    still valid: ``P(p ≤ α) ≤ α`` for a recording exchangeable with the simulated networks).

    * ``knn``: the mean Euclidean distance to the ``k`` nearest reference networks, per √d: catches a recording
      that differs a little in many statistics.
    * ``max_z``: the largest |robust z| over every (session, statistic) cell: catches one statistic far out of
      the simulated range, which the distance dilutes over hundreds of cells.

    Attributes:
        center, scale: (d,) median and robust spread (IQR / 1.349, floored) of the reference networks' flattened,
            signed-log statistics.
        reference: (n_ref, d) the reference networks' standardised statistics.
        null: (n_null, 2) both scores of held-back simulated networks (the conformal null).
        names: (d,) ``"{session}: {statistic}"`` per flattened cell.
        k: neighbours averaged.
    """

    center: np.ndarray
    scale: np.ndarray
    reference: np.ndarray
    null: np.ndarray
    names: list[str]
    k: int = NEIGHBOURS

    SCORES = ("knn", "max_z")

    @classmethod
    def fit(cls, X_ref: np.ndarray, X_null: np.ndarray, names: list[str], session_labels: list[str],
            k: int = NEIGHBOURS) -> Typicality:
        """Reference statistics ``X_ref`` (n_ref, S, F) (the search networks), null networks ``X_null`` (the
        set-aside networks); ``names`` (F,) the statistics, ``session_labels`` (S,) the sessions."""
        flat = _signed_log(X_ref.reshape(len(X_ref), -1).astype(np.float64))
        center = np.median(flat, axis=0)
        q1, q3 = np.quantile(flat, [0.25, 0.75], axis=0)
        spread = (q3 - q1) / 1.349
        floor = max(1e-6, float(np.median(spread[spread > 0])) * 1e-2) if np.any(spread > 0) else 1.0
        scale = np.maximum(spread, floor)
        cells = [f"{s}: {n}" for s in session_labels for n in names]
        model = cls(center, scale, (flat - center) / scale, np.zeros((0, 2)), cells, min(k, len(X_ref) - 1))
        model.null = model.scores(X_null)
        return model

    def standardise(self, X: np.ndarray) -> np.ndarray:
        """(n, S, F) statistics → (n, d) standardised cells."""
        return (_signed_log(X.reshape(len(X), -1).astype(np.float64)) - self.center) / self.scale

    def scores(self, X: np.ndarray) -> np.ndarray:
        """(n, 2): the ``knn`` and ``max_z`` scores (class docstring)."""
        Z = self.standardise(X)
        d2 = (np.sum(Z**2, axis=1)[:, None] + np.sum(self.reference**2, axis=1)[None, :]
              - 2.0 * Z @ self.reference.T)
        nearest = np.sort(np.sqrt(np.maximum(d2, 0.0)), axis=1)[:, : self.k]
        return np.stack([nearest.mean(axis=1) / np.sqrt(Z.shape[1]), np.abs(Z).max(axis=1)], axis=1)

    def p_values(self, X: np.ndarray) -> np.ndarray:
        """(n,) combined conformal p-values: small = unlike the simulations."""
        return combined_p(self.scores(X), self.null)

    def furthest(self, X: np.ndarray, n: int = 5) -> list[dict[str, Any]]:
        """The ``n`` cells of the single sample ``X`` (1, S, F) furthest from the reference networks' median, in
        robust SDs, with the share of reference networks beyond them."""
        z = self.standardise(X)[0]
        order = np.argsort(-np.abs(z), kind="stable")[:n]
        out = []
        for i in order:
            beyond = np.mean(self.reference[:, i] >= z[i]) if z[i] > 0 else np.mean(self.reference[:, i] <= z[i])
            out.append({"statistic": self.names[i], "z": float(z[i]), "beyond": float(beyond)})
        return out


def conformal_p(scores: np.ndarray, null: np.ndarray) -> np.ndarray:
    """(n,) ``(1 + #{null ≥ score}) / (1 + n_null)`` for (n,) scores against (n_null,) null scores."""
    return (1.0 + np.sum(null[None, :] >= scores[:, None], axis=1)) / (1.0 + len(null))


def combined_p(scores: np.ndarray, null: np.ndarray) -> np.ndarray:
    """(n,) Bonferroni combination of the conformal p-values of each score column."""
    ps = np.stack([conformal_p(scores[:, j], null[:, j]) for j in range(scores.shape[1])], axis=1)
    return np.minimum(1.0, scores.shape[1] * ps.min(axis=1))


def false_alarm_rate(typicality: Typicality, alpha: float = ALPHA) -> float:
    """Leave-one-out on the null networks: the share called unlike the simulations at ``alpha`` when each is
    compared with the others (what the check does to a recording of a simulated network nothing was fitted on)."""
    null = typicality.null
    n = len(null)
    if n < 2:
        return float("nan")
    p = np.array([combined_p(null[i:i + 1], np.delete(null, i, axis=0))[0] for i in range(n)])
    return float(np.mean(p <= alpha))

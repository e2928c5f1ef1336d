"""How well do recorded features identify the learning rule? Splits by network, accuracy with a confidence
interval that counts both the test networks and the training set, the controls, and set-aside networks.

Each network is one sample and never sits on both sides of a split. Modes: ``none`` (repeated stratified 4-fold
cross-validation over networks: every network is tested once per repeat, 75/25 as the paper's splits),
``architecture`` (leave one architecture family out) and ``task`` (leave one task out).

The point estimate and its interval describe the same quantity, the accuracy on networks the classifier was
not trained on (the pooled out-of-split hit rate over networks):

* repeated k-fold: the corrected resampled t-interval (Nadeau & Bengio 2003; Bouckaert & Frank 2004) over the
  split accuracies, whose variance correction ``1/J + n_test/n_train`` accounts for the overlap of the training
  sets, hence for the variance of the training set as well as of the test networks;
* a fixed partition (leave-one-out of a factor, or the set-aside networks): one fit tested once, with the
  test-network variance from a Wilson interval over the tested networks and the training-set variance from
  refits on bootstrap resamples of the training networks, added in quadrature.

Either interval is never narrower than the Wilson interval over the distinct networks tested, so a perfect
score on a few networks does not come with a zero-width interval.

The controls (``advisor.science.controls``) are scored on the same splits; identification counts only where the
protocol's interval clears the strongest control's.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from advisor.errors import AdvisorError
from advisor.science.classifiers import make_classifier
from advisor.science.controls import CONTROL_CLASSIFIERS, hyperparameter_features

HELDOUT = {"none": None, "architecture": "architecture", "arch_family": "arch_family", "task": "task",
           "nonlinearity": "nonlinearity"}
"""Held-out modes and the metadata column whose levels are left out one at a time: ``architecture`` leaves one
architecture out (train on the others), ``arch_family`` one family (mlp, conv), ``nonlinearity`` one activation
function (relu, tanh; from the architecture registry), ``task`` one task."""
HELDOUT_NAMES = {"architecture": ("architecture", "architectures"),
                 "arch_family": ("architecture family", "architecture families"), "task": ("task", "tasks"),
                 "nonlinearity": ("nonlinearity", "nonlinearities")}
IMPORTANCE_SPLITS = 3
"""Permutation importances are averaged over the first splits only (they cost (F + S) x 3 predictions each)."""
FOLDS = 4
"""Folds of the repeated stratified cross-validation: each fold tests 25% of the networks, as the paper's splits."""
REFITS = 20
"""Refits on bootstrap resamples of the training networks that measure the training-set variance of a fixed
partition's accuracy."""
Z95 = 1.959963984540054


@dataclass(frozen=True)
class Scores:
    """Out-of-split predictions of one classifier on one feature set.

    Attributes:
        accuracy: pooled out-of-split hit rate over networks (every tested network weighs the same).
        ci: its 95% interval (see the module docstring for how).
        balanced_accuracy: mean over labels of the per-label hit rate, pooled like ``accuracy``.
        split_accuracies: accuracy of every split.
        confusion_matrix: pooled counts, true label × predicted label.
        n_tested: distinct networks tested.
        ci_method: ``corrected_t`` or ``refit``.
    """

    accuracy: float
    ci: tuple[float, float]
    balanced_accuracy: float
    split_accuracies: list[float]
    confusion_matrix: np.ndarray
    feature_importance: np.ndarray | None = None
    session_importance: np.ndarray | None = None
    n_tested: int = 0
    ci_method: str = "corrected_t"
    test_scores: tuple[tuple[np.ndarray, np.ndarray], ...] = ()
    """Per split, (test positions, (n_test, n_labels) class scores in ``labels`` order), kept with
    ``score(..., keep_scores=True)``: what pooling several animals needs (``advisor.science.animals``)."""

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy": float(self.accuracy), "ci": [float(v) for v in self.ci]}


@dataclass(frozen=True)
class ControlScores:
    """A control: the best of a linear and a nonlinear classifier on features an experimenter gets for free.

    Attributes:
        name: ``behaviour`` (the whole learning curve) or ``hyperparameters`` (learning rate, batch size, init).
        classifier: the classifier that scored best (the control reported).
        scores: its scores.
        candidates: accuracy of every classifier tried.
    """

    name: str
    classifier: str
    scores: Scores
    candidates: dict[str, float]
    candidate_scores: dict[str, Scores] = field(default_factory=dict)
    """Every candidate's scores with their test scores kept (pooling several animals picks the better pooled
    candidate); not serialised."""

    def to_dict(self) -> dict[str, Any]:
        return {**self.scores.to_dict(), "classifier": self.classifier,
                "candidates": {k: float(v) for k, v in self.candidates.items()}}


@dataclass(frozen=True)
class EvaluationResult:
    """Identification of ``labels`` from features, and the controls."""

    scores: Scores
    controls: dict[str, ControlScores]
    labels: list[str]
    chance: float
    n_networks: int
    heldout: str
    classifier: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        return self.scores.accuracy

    @property
    def control(self) -> Scores | None:
        """The behavioural control's scores (None when it was not computed)."""
        c = self.controls.get("behaviour")
        return c.scores if c is not None else None

    @property
    def strongest_control(self) -> ControlScores | None:
        return strongest(self.controls)

    @property
    def beyond_controls(self) -> bool:
        return beyond(self.scores, self.controls)


def strongest(controls: Mapping[str, ControlScores]) -> ControlScores | None:
    """The control with the highest upper CI bound (ties: the higher accuracy), or None without controls."""
    if not controls:
        return None
    return max(controls.values(), key=lambda c: (c.scores.ci[1], c.scores.accuracy))


def beyond(scores: Scores | Mapping[str, Any], controls: Mapping[str, ControlScores]) -> bool:
    """True where the lower CI bound clears every control's upper CI bound (True without controls)."""
    low = scores.ci[0] if isinstance(scores, Scores) else scores["ci"][0]
    top = strongest(controls)
    return top is None or low > top.scores.ci[1]


# ----------------------------------------------------------------------------------------------- splits
def n_repeats(n_splits: int) -> int:
    """Repeats of the 4-fold cross-validation for a requested number of splits (rounded up)."""
    return max(1, math.ceil(n_splits / FOLDS))


def heldout_groups(metadata: Any, heldout: str) -> np.ndarray | None:
    """The level of every network (row of ``metadata``) that ``heldout`` leaves out one at a time, or None for
    ``none``. ``nonlinearity`` is read from the architecture registry where the bank has no such column.

    Raises:
        AdvisorError: an unknown mode.
    """
    if heldout not in HELDOUT:
        raise AdvisorError(f"heldout must be one of {', '.join(HELDOUT)}; got {heldout!r}")
    column = HELDOUT[heldout]
    if column is None:
        return None
    if column == "nonlinearity" and column not in metadata.columns:
        from simulator.networks import ARCHITECTURES

        return np.array([ARCHITECTURES.get(str(a)).activation for a in metadata["architecture"]])
    return metadata[column].astype(str).to_numpy()


def make_splits(
    y: np.ndarray, heldout: str, groups: np.ndarray | None, n_splits: int, seed: int,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Train/test indices over networks.

    ``heldout == "none"``: repeated stratified 4-fold cross-validation, ``ceil(n_splits / 4)`` repeats, so every
    network is tested once per repeat. Otherwise one split per level of ``groups`` (leave one out).

    Raises:
        AdvisorError: an unknown mode, a label with fewer networks than folds, or a factor with one level.
    """
    from sklearn.model_selection import RepeatedStratifiedKFold

    if heldout not in HELDOUT:
        raise AdvisorError(f"heldout must be one of {', '.join(HELDOUT)}; got {heldout!r}")
    if heldout == "none":
        labels, counts = np.unique(y, return_counts=True)
        if counts.min() < FOLDS:
            few = str(labels[np.argmin(counts)])
            raise AdvisorError(f"every label needs at least {FOLDS} networks for stratified {FOLDS}-fold splits; "
                               f"{few!r} has {counts.min()}")
        rkf = RepeatedStratifiedKFold(n_splits=FOLDS, n_repeats=n_repeats(n_splits), random_state=seed)
        return [(train, test) for train, test in rkf.split(np.zeros(len(y)), y)]
    assert groups is not None
    levels = np.unique(groups)
    if len(levels) < 2:
        one, many = HELDOUT_NAMES[heldout]
        raise AdvisorError(f"held-out {one} needs at least 2 {many} in the bank; it has only {levels[0]!r}")
    return [(np.flatnonzero(groups != g), np.flatnonzero(groups == g)) for g in levels]


# ---------------------------------------------------------------------------------------------- intervals
def bootstrap_ci(correct_per_network: np.ndarray, seed: int, n_boot: int = 2000) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean over networks (test-network variance only)."""
    rng = np.random.default_rng(seed)
    n = len(correct_per_network)
    means = correct_per_network[rng.integers(0, n, (n_boot, n))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def wilson_interval(p: float, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a proportion ``p`` observed on ``n`` networks."""
    if n <= 0:
        return 0.0, 1.0
    z2 = Z95**2
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _clip(lo: float, hi: float) -> tuple[float, float]:
    return max(0.0, float(lo)), min(1.0, float(hi))


def corrected_t_interval(split_accuracies: np.ndarray, test_fraction: float, pooled: float,
                         n_networks: int) -> tuple[float, float]:
    """Nadeau-Bengio corrected resampled t-interval around ``pooled``, widened to at least the Wilson interval
    over the ``n_networks`` distinct networks tested."""
    from scipy import stats

    j = len(split_accuracies)
    wil = wilson_interval(pooled, n_networks)
    if j < 2:
        return wil
    var = float(np.var(split_accuracies, ddof=1)) * (1.0 / j + test_fraction / (1.0 - test_fraction))
    half = float(stats.t.ppf(0.975, j - 1)) * math.sqrt(var)
    return _clip(min(pooled - half, wil[0]), max(pooled + half, wil[1]))


def partition_interval(pooled: float, n_tested: int, train_sd: float) -> tuple[float, float]:
    """A fixed partition's interval: the Wilson half-widths (test networks) and ``1.96 · train_sd`` (training
    sets) added in quadrature."""
    lo, hi = wilson_interval(pooled, n_tested)
    spread = Z95 * train_sd
    return _clip(pooled - math.hypot(pooled - lo, spread), pooled + math.hypot(hi - pooled, spread))


def _stratified_resample(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Positions 0..len(y)-1 drawn with replacement within each label (every label keeps its count)."""
    out = [rng.choice(np.flatnonzero(y == label), np.sum(y == label), replace=True) for label in np.unique(y)]
    return np.concatenate(out)


# ------------------------------------------------------------------------------------------------ scoring
def score(
    X: np.ndarray, y: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]], labels: list[str], *,
    classifier: str | Callable[..., Any], seed: int, importances: bool = False, refits: int = REFITS,
    cross_validated: bool | None = None, augment: Sequence[np.ndarray] = (), keep_scores: bool = False,
) -> Scores:
    """Fit ``classifier`` on every split and pool the out-of-split predictions.

    Repeated cross-validation (every network tested equally often, at least 4 splits) gets the corrected t
    interval; any other set of splits (leave one level out, a set-aside partition) is treated as a fixed
    partition and gets ``refits`` refits per split on bootstrap resamples of its training networks.

    Args:
        classifier: a key of ``advisor.science.classifiers`` or a factory ``(random_state, n_sessions) -> estimator``
            (an estimator outside the registry, e.g. ``advisor.science.learned``'s, whose X need not be 3-D).
        refits: refits per split of a fixed partition for the training-set variance (below 2: none, the
            interval is binomial over the tested networks only).
        cross_validated: whether ``splits`` are repeated cross-validation folds (True) or a fixed partition
            (False); None infers it from the splits, which cannot tell leave-one-level-out over 4 or more
            levels (every network tested once) from one repeat of 4-fold cross-validation: callers that know
            say so.
        augment: other virtual recordings of the same networks (arrays shaped like ``X``, rows aligned:
            other unit subsets, gains and noise draws, ``advisor.science.features.augmented_features``). Each training
            network contributes one sample per recording; test networks are scored on ``X`` alone, one
            recording each, as an experimenter has.
        keep_scores: keep every split's class scores of its test networks (:attr:`Scores.test_scores`).
    """
    from sklearn.metrics import confusion_matrix

    def make(random_state: int) -> Any:
        if callable(classifier):
            return classifier(random_state=random_state, n_sessions=X.shape[1])
        return make_classifier(classifier, random_state=random_state, n_sessions=X.shape[1])

    extra = [np.asarray(a) for a in augment]
    if any(a.shape != X.shape for a in extra):
        raise ValueError(f"augment arrays must be shaped like X {X.shape}")

    def training(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not extra:
            return X[rows], y[rows]
        return np.concatenate([X[rows]] + [a[rows] for a in extra]), np.tile(y[rows], 1 + len(extra))

    n = len(y)
    hits, tested = np.zeros(n), np.zeros(n)
    cm = np.zeros((len(labels), len(labels)), dtype=np.int64)
    accs, feat_imps, sess_imps = [], [], []
    preds: list[np.ndarray] = []
    kept: list[tuple[np.ndarray, np.ndarray]] = []
    for i, (train, test) in enumerate(splits):
        est = make(seed + i)
        est.fit(*training(train))
        pred = est.predict(X[test])
        preds.append(pred)
        if keep_scores:
            kept.append((np.asarray(test), class_scores(est, X[test], labels)))
        hits[test] += pred == y[test]
        tested[test] += 1
        accs.append(float(np.mean(pred == y[test])))
        cm += confusion_matrix(y[test], pred, labels=labels)
        if importances and i < IMPORTANCE_SPLITS:
            fi, si = grouped_importances(est, X[test], y[test], seed + i)
            feat_imps.append(fi)
            sess_imps.append(si)
    seen = tested > 0
    n_seen = int(seen.sum())
    pooled = float(hits[seen].sum() / tested[seen].sum())
    per_label = [cm[k, k] / cm[k].sum() for k in range(len(labels)) if cm[k].sum()]
    balanced = float(np.mean(per_label)) if per_label else 0.0
    if cross_validated is None:
        cross_validated = len(splits) >= FOLDS and len(set(tested[seen].tolist())) == 1
    if cross_validated:
        fraction = float(np.mean([len(te) / (len(tr) + len(te)) for tr, te in splits]))
        ci, method = corrected_t_interval(np.asarray(accs), fraction, pooled, n_seen), "corrected_t"
    else:
        var_train = 0.0
        total = sum(len(te) for _, te in splits)
        rng = np.random.default_rng([seed, 7])
        for i, (train, test) in enumerate(splits):
            if refits < 2:
                break
            boot = []
            for r in range(refits):
                pick = train[_stratified_resample(y[train], rng)]
                est = make(seed + 1000 * (i + 1) + r)
                est.fit(*training(pick))
                boot.append(float(np.mean(est.predict(X[test]) == y[test])))
            var_train += (len(test) / total) ** 2 * float(np.var(boot, ddof=1))
        ci, method = partition_interval(pooled, n_seen, math.sqrt(var_train)), "refit"
    return Scores(pooled, ci, balanced, accs, cm,
                  np.mean(feat_imps, axis=0) if feat_imps else None,
                  np.mean(sess_imps, axis=0) if sess_imps else None, n_seen, method, tuple(kept))


def class_scores(estimator: Any, X: np.ndarray, labels: Sequence[Any]) -> np.ndarray:
    """(n, len(labels)) scores whose softmax is the estimator's posterior, columns in ``labels`` order:
    log-probabilities where it has them, else its decision function (a binary one d as [0, d]); a label the
    estimator never saw gets a score below every other."""
    if hasattr(estimator, "predict_proba"):
        raw = np.log(np.clip(estimator.predict_proba(X), 1e-9, 1.0))
    else:
        d = np.asarray(estimator.decision_function(X), dtype=np.float64)
        raw = np.stack([np.zeros_like(d), d], axis=1) if d.ndim == 1 else d
    classes = list(estimator.classes_)
    out = np.full((len(X), len(labels)), raw.min() - 10.0 if raw.size else -10.0)
    for j, label in enumerate(labels):
        if label in classes:
            out[:, j] = raw[:, classes.index(label)]
    return out


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


CONTROL_CACHE_SIZE = 64
"""Control scores kept per process (:func:`best_of`), by content of their inputs."""
_control_cache: dict[str, ControlScores] = {}


def _inputs_digest(*parts: Any) -> str:
    """A SHA-256 over arrays (dtype, shape and bytes) and plain values, in order."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            a = np.ascontiguousarray(part)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.tobytes())
        else:
            h.update(repr(part).encode())
        h.update(b"|")
    return h.hexdigest()


def best_of(name: str, X: np.ndarray, y: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]],
            labels: list[str], seed: int, cross_validated: bool | None = None) -> ControlScores:
    """Score a control's features with the linear and the nonlinear classifier on ``splits``; keep the more
    accurate (``advisor.science.controls``). On a fixed partition the candidates are compared on their fits, and only
    the winner pays for the refits of its interval.

    A control does not depend on the protocol, so one plan, a resumed plan and every modality of a comparison
    ask for the same control on the same networks and splits: the result is kept per process, keyed by the
    content of the features, labels, splits and seed (a pure function of them), for :data:`CONTROL_CACHE_SIZE`
    entries.
    """
    flat = [a for split in splits for a in (np.asarray(split[0]), np.asarray(split[1]), "/")]
    key = _inputs_digest(name, np.asarray(X), np.asarray(y).astype(str), *flat, tuple(labels), seed, REFITS,
                         CONTROL_CLASSIFIERS, cross_validated)
    cached = _control_cache.get(key)
    if cached is not None:
        return cached
    results = {c: score(X, y, splits, labels, classifier=c, seed=seed, refits=0, cross_validated=cross_validated,
                        keep_scores=True) for c in CONTROL_CLASSIFIERS}
    best = max(CONTROL_CLASSIFIERS, key=lambda k: (results[k].accuracy, results[k].ci[1]))
    winner = results[best]
    if winner.ci_method == "refit":
        winner = score(X, y, splits, labels, classifier=best, seed=seed, cross_validated=cross_validated)
    out = ControlScores(name, best, winner, {k: r.accuracy for k, r in results.items()}, results)
    if len(_control_cache) >= CONTROL_CACHE_SIZE:
        _control_cache.pop(next(iter(_control_cache)))
    _control_cache[key] = out
    return out


def control_scores(inputs: Mapping[str, np.ndarray], y: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]],
                   labels: list[str], seed: int, cross_validated: bool | None = None) -> dict[str, ControlScores]:
    """Every control in ``inputs`` (name → features, rows aligned with ``y``) on the same splits."""
    return {name: best_of(name, X, y, splits, labels, seed, cross_validated) for name, X in inputs.items()}


def fixed_partition_splits(search: np.ndarray, setaside: np.ndarray, groups: np.ndarray | None = None
                           ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Splits for a set-aside test: train on ``search``, test on ``setaside`` (positions into the same arrays).
    With ``groups``, one split per level: train on the search networks of the other levels, test on the
    set-aside networks of this one."""
    if groups is None:
        return [(np.asarray(search), np.asarray(setaside))]
    out = []
    for g in np.unique(groups[setaside]):
        train = search[groups[search] != g]
        test = setaside[groups[setaside] == g]
        if len(train) and len(test):
            out.append((train, test))
    return out


def evaluate(
    X: np.ndarray, curve: np.ndarray | None, metadata: Any, *, target: str = "rule",
    classifier: str | Callable[..., Any] = "rf", heldout: str = "none", n_splits: int = 10, seed: int = 0,
    importances: bool = False, hyperparameters: bool = True, augment: Sequence[np.ndarray] = (),
    refits: int = REFITS,
) -> EvaluationResult:
    """Identify ``metadata[target]`` (``rule`` or ``family``) from features X (networks, sessions, features).

    Args:
        X: features, one row per network of ``metadata`` in the same order.
        curve: (networks, checkpoints, k) behaviour for the behavioural control (the whole learning curve,
            ``advisor.science.controls.behaviour_features``), or None to skip it.
        metadata: the bank's metadata table (pandas DataFrame).
        hyperparameters: also score the hyperparameter control (needs ``lr``, ``batch_size`` and
            ``init_scale`` columns; skipped where they are missing).
        augment: more virtual recordings of the same networks for training (:func:`score`); the controls see
            one copy of each network (behaviour and hyperparameters do not change between recordings).
        classifier, refits: as in :func:`score` (the controls always get the full refits).
    """
    y = metadata[target].astype(str).to_numpy()
    labels = sorted(set(y))
    if len(labels) < 2:
        raise AdvisorError(f"need at least 2 different {target}s to identify; the bank has only {labels}")
    groups = heldout_groups(metadata, heldout)
    splits = make_splits(y, heldout, groups, n_splits, seed)
    cross_validated = heldout == "none"  # leave-one-level-out is a fixed partition, however many levels
    scores = score(X, y, splits, labels, classifier=classifier, seed=seed, importances=importances,
                   cross_validated=cross_validated, augment=augment, refits=refits)
    inputs: dict[str, np.ndarray] = {}
    if curve is not None:
        inputs["behaviour"] = curve
    if hyperparameters and {"lr", "batch_size", "init_scale"} <= set(metadata.columns):
        inputs["hyperparameters"] = hyperparameter_features(metadata)
    controls = control_scores(inputs, y, splits, labels, seed=seed, cross_validated=cross_validated)
    chance = float(max(np.mean(y == label) for label in labels))
    name = classifier if isinstance(classifier, str) else getattr(classifier, "__name__", type(classifier).__name__)
    return EvaluationResult(scores, controls, labels, chance, len(y), heldout, name)

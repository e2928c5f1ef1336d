"""Several animals, one rule: pooling the classifier's evidence over k animals recorded with the same protocol.

If the rule is shared by the animals of one species and area, recording k animals and adding their evidence
identifies it better than one. The evidence of one animal is the classifier's score vector (log-probabilities,
or a decision function whose softmax is one); the pooled decision is the label with the largest sum over the k
animals. Summing log-posteriors of calibrated probabilities gives the same decision for any temperature (the
per-animal normalising constants do not depend on the label), so pooling needs no calibration.

The pooled accuracy is estimated honestly, from networks the classifier never saw: on each split, every test
network is the first animal of ``draws`` groups, each completed by k − 1 other distinct test networks of the
same label (of the same design cell where that cell holds enough test networks, else of any cell: the quick
bank's test folds rarely hold k networks of one cell, so the pooled animals usually differ in architecture and
task, a documented simplification). With one animal this is exactly the classifier's accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from advisor.errors import AdvisorError

__all__ = ["DRAWS", "PooledScores", "best_pooled", "max_animals_for", "pooled_candidates", "pooled_correct",
           "pooled_scores"]

DRAWS = 8
"""Groups drawn per test network (as the first animal) and split."""
BOOTSTRAPS = 400
"""Bootstrap resamples of a fixed partition's pooled accuracy (over networks and draws)."""


def max_animals_for(y_test_sets: Sequence[np.ndarray]) -> int:
    """The most animals every label can supply on every test set: the smallest per-label count."""
    counts = [int(np.sum(y == label)) for y in y_test_sets for label in np.unique(y)]
    return min(counts) if counts else 0


def pooled_correct(scores: np.ndarray, y: np.ndarray, k: int, rng: np.random.Generator, *,
                   cells: np.ndarray | None = None, draws: int = DRAWS) -> np.ndarray:
    """(n, draws) bool: whether the pooled decision of each group is right.

    Args:
        scores: (n, C) class scores of n test networks (columns in label order).
        y: (n,) label indices of the test networks.
        k: animals per group (1: each network alone; then every draw is the same).
        rng: draws the companions.
        cells: (n,) design cells (same-cell companions where the cell has k networks of the label).
        draws: groups per network.

    Raises:
        AdvisorError: a label has fewer than k test networks.
    """
    n = len(y)
    if k == 1:
        return np.repeat((np.argmax(scores, axis=1) == y)[:, None], draws, axis=1)
    out = np.zeros((n, draws), dtype=bool)
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        if len(members) < k:
            raise AdvisorError(f"{k} animals need {k} test networks of each label; label {int(label)} has "
                               f"{len(members)}")
        pools: list[tuple[np.ndarray, np.ndarray]] = []  # (networks drawn for, the pool they draw from)
        rest = members
        if cells is not None:
            alone: list[int] = []
            for cell in np.unique(cells[members]):
                in_cell = members[cells[members] == cell]
                if len(in_cell) >= k:  # the cell holds k distinct animals: companions from the same cell
                    pools.append((in_cell, in_cell))
                else:
                    alone += [int(v) for v in in_cell]
            rest = np.asarray(sorted(alone), dtype=np.int64)
        if len(rest):
            pools.append((rest, members))
        for firsts, pool in pools:
            # companions: k - 1 distinct members of the pool other than the first animal, per draw
            keys = rng.random((len(firsts), draws, len(pool)))
            own = np.searchsorted(pool, firsts)  # both sorted: each first animal's place in its pool
            keys[np.arange(len(firsts)), :, own] = 2.0
            companions = pool[np.argsort(keys, axis=-1)[..., : k - 1]]  # (firsts, draws, k - 1)
            total = scores[firsts][:, None, :] + scores[companions].sum(axis=2)
            out[firsts] = np.argmax(total, axis=-1) == label
    return out


@dataclass(frozen=True)
class PooledScores:
    """The pooled accuracy of k animals.

    Attributes:
        k: animals.
        accuracy: mean over splits' groups.
        ci: 95% interval (the corrected t interval over cross-validation splits, or a bootstrap over networks and
            draws for a fixed partition).
        split_accuracies: per split.
        balanced_accuracy: the mean over labels of each label's pooled accuracy.
    """

    k: int
    accuracy: float
    ci: tuple[float, float]
    split_accuracies: list[float]
    balanced_accuracy: float


def pooled_scores(test_scores: Sequence[tuple[np.ndarray, np.ndarray]], y: np.ndarray, k: int, seed: int, *,
                  cells: np.ndarray | None = None, cross_validated: bool = True, test_fraction: float = 0.25,
                  draws: int = DRAWS) -> PooledScores:
    """Pool ``k`` animals on every split of a scoring (``advisor.science.evaluation.Scores.test_scores``).

    Args:
        test_scores: per split, (test positions, (n_test, C) scores in label order).
        y: (n,) label indices of every network the positions index.
        cells: (n,) design cells, or None.
        cross_validated: repeated cross-validation (corrected t interval over splits) or a fixed partition
            (bootstrap over networks, stratified by label, and draws).
        test_fraction: the splits' test share (for the corrected t interval).
    """
    from advisor.science.evaluation import corrected_t_interval

    accs, correct_all, labels_all = [], [], []
    for s, (test, scores) in enumerate(test_scores):
        rng = np.random.default_rng([seed, 83, s, k])
        correct = pooled_correct(scores, y[test], k, rng, cells=None if cells is None else cells[test], draws=draws)
        accs.append(float(correct.mean()))
        correct_all.append(correct)
        labels_all.append(y[test])
    pooled = float(np.mean(np.concatenate([c.ravel() for c in correct_all])))
    by_label = np.concatenate([c.mean(axis=1) for c in correct_all])
    tested_labels = np.concatenate(labels_all)
    balanced = float(np.mean([by_label[tested_labels == c].mean() for c in np.unique(tested_labels)]))
    if cross_validated and len(accs) > 1:
        n_tested = len(np.unique(np.concatenate([t for t, _ in test_scores])))
        ci = corrected_t_interval(np.asarray(accs), test_fraction, pooled, n_tested)
    else:
        correct = np.concatenate(correct_all)
        labels = np.concatenate(labels_all)
        rng = np.random.default_rng([seed, 89, k])
        boots = []
        for _ in range(BOOTSTRAPS):
            rows = np.concatenate([rng.choice(np.flatnonzero(labels == c), int(np.sum(labels == c)))
                                   for c in np.unique(labels)])
            cols = rng.integers(0, correct.shape[1], len(rows))
            boots.append(float(correct[rows, cols].mean()))
        lo, hi = np.quantile(boots, [0.025, 0.975])
        ci = (float(lo), float(hi))
    return PooledScores(k, pooled, (float(ci[0]), float(ci[1])), accs, balanced)


def pooled_candidates(control: Any, y: np.ndarray, k: int, seed: int, *, cells: np.ndarray | None = None,
                      cross_validated: bool = True, test_fraction: float = 0.25) -> dict[str, PooledScores]:
    """Every classifier of a control (``advisor.science.evaluation.ControlScores``; its candidates, else the one
    it reports) pooled over ``k`` animals, by classifier key (arguments as :func:`pooled_scores`)."""
    candidates = control.candidate_scores or {control.classifier: control.scores}
    return {name: pooled_scores(c.test_scores, y, k, seed, cells=cells, cross_validated=cross_validated,
                                test_fraction=test_fraction) for name, c in candidates.items()}


def best_pooled(pooled: dict[str, PooledScores]) -> tuple[str, PooledScores]:
    """The candidate a pooled control reports: the most accurate, then the one with the higher upper bound."""
    name = max(pooled, key=lambda n: (pooled[n].accuracy, pooled[n].ci[1]))
    return name, pooled[name]

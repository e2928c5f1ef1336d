"""A plan question with test defaults, shared by the search and planning tests."""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from advisor.application.planning import make_question
from advisor.application.search import Question

PLAN_SETASIDE = 0.5
"""The set-aside share of the tests' plans on ``plan_bank`` (96 networks): 48 search and 48 set-aside networks.

The set-aside networks are tested once (a Wilson interval widened by refits), so their count bounds what a plan
can claim: a perfect score on 24 networks has a lower bound of 0.86 and 22/24 one of 0.74, while a chance-level
control's upper bound on 24 networks reaches 0.7-0.85 (the better of two classifiers, with refits). On 48
networks, 46/48 has a lower bound near 0.84 against controls up to about 0.7. The default share, 0.25, would
leave 24."""


def question(bank: Any, modality: Any, **changes: Any) -> Question:
    """``make_question`` for every rule, no bounds, the ridge classifier, seed 0 and half the networks set aside;
    ``changes`` override any argument (tests set ``target_accuracy``, ``n_trials`` and ``n_splits`` to their own
    sizes)."""
    args: dict[str, Any] = {
        "observable": None, "max_units": None, "max_sessions": None, "target_accuracy": 0.75, "rules": None,
        "family": False, "heldout": "none", "classifier": "ridge", "n_trials": 12, "n_splits": 3, "seed": 0,
        "setaside": PLAN_SETASIDE,
    }
    args.update(changes)
    return make_question(bank, modality, **args)


class GarbageSetaside:
    """``bank`` with the recordings, learning curves and hyperparameters of the ``rows`` networks replaced by
    large random values: anything computed from them changes, anything that never reads them does not."""

    def __init__(self, bank: Any, rows: np.ndarray) -> None:
        self._bank, self._rows = bank, rows
        self.hash, self.path, self.config = bank.hash, bank.path, bank.config
        meta = bank.metadata.copy()
        rng = np.random.default_rng(99)
        for column in ("lr", "init_scale"):
            meta.loc[rows, column] = rng.uniform(10.0, 100.0, int(rows.sum()))
        self.metadata = meta

    def __getitem__(self, name: str) -> np.ndarray:
        array = np.array(self._bank[name])
        if name in ("weights", "activations", "activity_change", "loss", "metric", "test_metric"):
            rng = np.random.default_rng(zlib.crc32(name.encode()))
            array[self._rows] = rng.normal(50.0, 30.0, array[self._rows].shape).astype(array.dtype)
        return array

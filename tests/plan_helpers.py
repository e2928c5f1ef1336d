"""A plan question with test defaults, shared by the search and planning tests."""

from __future__ import annotations

from typing import Any

from advisor.planning import make_question
from advisor.search import Question


def question(bank: Any, modality: Any, **changes: Any) -> Question:
    """``make_question`` for every rule, no bounds, the ridge classifier and seed 0; ``changes`` override any
    argument (tests set ``target_accuracy``, ``n_trials`` and ``n_splits`` to their own sizes)."""
    args: dict[str, Any] = {
        "observable": None, "max_units": None, "max_sessions": None, "target_accuracy": 0.75, "rules": None,
        "family": False, "heldout": "none", "classifier": "ridge", "n_trials": 12, "n_splits": 3, "seed": 0,
    }
    args.update(changes)
    return make_question(bank, modality, **args)

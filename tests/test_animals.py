"""Several animals: pooling the classifier's evidence (advisor.science.animals), checked against a direct
computation, and `advisor plan --max-animals` / `--budget-hours` end to end on the plan bank."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cli_helpers import assert_one_error_line
from click.testing import CliRunner, Result

from advisor.cli import cli
from advisor.errors import AdvisorError
from advisor.science.animals import max_animals_for, pooled_correct, pooled_scores

PLAN = ["--trials", "8", "--splits", "5", "--setaside", "0.5", "--no-curves", "--statistics", "marginal",
        "--observable", "activations"]


@pytest.fixture(autouse=True)
def _no_tracking_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def _invoke(args: list[str]) -> Result:
    return CliRunner().invoke(cli, args, catch_exceptions=False)


# ---------------------------------------------------------------------------------------------- pooling
def _exact(scores: np.ndarray, y: np.ndarray, k: int) -> float:
    """The pooled accuracy by enumeration: every network with every set of k - 1 distinct companions of its
    label, equally weighted per network."""
    per = []
    for i in range(len(y)):
        others = [j for j in np.flatnonzero(y == y[i]) if j != i]
        hits = [int(np.argmax(scores[i] + scores[list(c)].sum(axis=0)) == y[i])
                for c in itertools.combinations(others, k - 1)]
        per.append(np.mean(hits))
    return float(np.mean(per))


def test_one_animal_is_the_plain_accuracy() -> None:
    rng = np.random.default_rng(0)
    scores, y = rng.normal(size=(30, 3)), rng.integers(0, 3, 30)
    correct = pooled_correct(scores, y, 1, rng)
    assert (correct == (np.argmax(scores, axis=1) == y)[:, None]).all()


@pytest.mark.parametrize("k", [2, 3])
def test_pooled_accuracy_matches_the_exact_enumeration(k: int) -> None:
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1, 2], 7)
    scores = rng.normal(size=(21, 3)) + 0.6 * np.eye(3)[y]  # weak evidence for the true label
    exact = _exact(scores, y, k)
    sampled = pooled_correct(scores, y, k, np.random.default_rng(2), draws=3000).mean()
    assert sampled == pytest.approx(exact, abs=0.01)
    assert exact > float(np.mean(np.argmax(scores, axis=1) == y))  # pooling weak evidence helps


def test_pooled_scores_over_splits_and_its_intervals() -> None:
    rng = np.random.default_rng(3)
    y = np.repeat([0, 1], 40)
    scores = rng.normal(size=(80, 2)) + 0.8 * np.eye(2)[y]
    folds = [np.arange(i, 80, 4) for i in range(4)]
    cv = pooled_scores([(f, scores[f]) for f in folds], y, 3, seed=0)
    assert cv.k == 3 and len(cv.split_accuracies) == 4
    assert cv.ci[0] <= cv.accuracy <= cv.ci[1]
    fixed = pooled_scores([(np.arange(80), scores)], y, 3, seed=0, cross_validated=False)
    assert fixed.ci[0] <= fixed.accuracy <= fixed.ci[1] and fixed.ci[1] - fixed.ci[0] < 0.3
    assert pooled_scores([(np.arange(80), scores)], y, 3, seed=0, cross_validated=False) == fixed  # seeded


def test_too_few_networks_of_a_label() -> None:
    with pytest.raises(AdvisorError, match="3 animals need 3 test networks of each label; label 1 has 2"):
        pooled_correct(np.zeros((5, 2)), np.array([0, 0, 0, 1, 1]), 3, np.random.default_rng(0))
    assert max_animals_for([np.array([0, 0, 0, 1, 1]), np.array([0, 1, 1, 1])]) == 1


def test_scorer_pooling_matches_a_direct_computation_on_a_small_bank(plan_bank: Any) -> None:
    """The scorer's pooled accuracy equals pooling, by hand, the decision scores of classifiers refitted on the
    same splits (a direct computation on the plan bank)."""
    from plan_helpers import question

    from advisor.application.search import make_scorer
    from advisor.science.classifiers import make_classifier
    from advisor.science.cost import load_modality
    from advisor.science.evaluation import class_scores
    from advisor.science.protocol import RecordingProtocol

    q = question(plan_bank, load_modality("generic"), n_splits=4, statistics="marginal", max_animals=3)
    scorer = make_scorer(plan_bank, q, controls=False)
    protocol = RecordingProtocol(n_units=24, layers=("early",), n_sessions=3, noise=0.3)
    single = scorer.score(protocol)
    assert scorer.pooled(protocol, 1) is single
    X = scorer.features(protocol).X[scorer.keep]
    y = scorer.y_index
    by_hand = []
    for i, (train, test) in enumerate(scorer.splits):
        model = make_classifier("ridge", random_state=scorer.seed + i, n_sessions=X.shape[1])
        model.fit(X[train], scorer.y[train])
        by_hand.append((test, class_scores(model, X[test], scorer.labels)))
    direct = pooled_scores(by_hand, y, 3, scorer.seed, cells=scorer.cells)
    pooled = scorer.pooled(protocol, 3)
    assert pooled.accuracy == pytest.approx(direct.accuracy)
    assert pooled.ci == pytest.approx(direct.ci)
    assert np.mean([a for a in single.split_accuracies]) == pytest.approx(
        pooled_scores(by_hand, y, 1, scorer.seed).accuracy)


# ---------------------------------------------------------------------------------------------- the CLI
@pytest.fixture(scope="module")
def animals_plan(plan_bank: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    workspace = tmp_path_factory.mktemp("animals-ws")
    result = _invoke(["plan", "--bank", str(plan_bank.path), "--workspace", str(workspace), *PLAN,
                      "--trials", "12", "--target-accuracy", "0.6", "--max-animals", "3", "--json"])
    assert result.exit_code == 0, result.stderr
    return workspace, json.loads(result.stdout)


def test_max_animals_searches_animals_and_prices_them(animals_plan: tuple[Path, dict[str, Any]]) -> None:
    from advisor.science.cost import load_modality

    _, doc = animals_plan
    generic = load_modality("generic")
    assert doc["question"]["max_animals"] == 3
    assert {t["n_animals"] for t in doc["trials"]} <= {1, 2, 3} and len({t["n_animals"] for t in doc["trials"]}) > 1
    for t in doc["trials"]:
        per = generic.per_animal_cost + generic.cost(t["n_units"], t["n_sessions"], t["repeats"])
        assert t["cost"] == pytest.approx(t["n_animals"] * per)
        assert t["animal_cost"] == pytest.approx(per)
    head = doc["recommendation"] or doc["candidate"] or doc["best"]
    assert "n_animals" in head and head["cost"] == pytest.approx(head["n_animals"] * head["animal_cost"])
    final = doc["setaside"]
    if head["n_animals"] > 1:
        assert final["n_animals"] == head["n_animals"] and "single_animal" in final
        assert all(c["n_animals"] == head["n_animals"] for c in doc["controls"].values())
    md = Path(doc["reports"]["md"]).read_text()
    if doc["recommendation"] and head["n_animals"] > 1:
        assert f"Record {head['n_animals']} animals × " in md


def test_power_table_is_in_the_json_and_the_report(plan_bank: Any, tmp_path: Path) -> None:
    result = _invoke(["plan", "--bank", str(plan_bank.path), "--workspace", str(tmp_path), "--trials", "8",
                      "--splits", "5", "--setaside", "0.5", "--statistics", "marginal", "--observable", "activations",
                      "--target-accuracy", "0.6", "--max-animals", "2", "--json"])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    table = doc["power_table"]
    assert table["animals"] == [1, 2, 3, 4]
    for axis in ("units", "sessions"):
        rows = table[axis]
        assert rows and all(len(r["cells"]) == 4 for r in rows)
        for r in rows:
            for cell in r["cells"]:
                assert cell["ci"][0] <= cell["accuracy"] <= cell["ci"][1]
                assert cell["reaches"] == (cell["ci"][0] >= 0.6 and cell["reaches"])
    md = Path(doc["reports"]["md"]).read_text()
    assert "## Power analysis: how many units, sessions and animals" in md
    assert "| units | 1 animal | 2 animals | 3 animals | 4 animals |" in md


def test_budget_alone_gives_the_most_accurate_protocol_within_it(plan_bank: Any, tmp_path: Path) -> None:
    result = _invoke(["plan", "--bank", str(plan_bank.path), "--workspace", str(tmp_path), *PLAN,
                      "--budget-hours", "40", "--json"])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    budget = doc["budget"]
    assert budget["mode"] == "most_accurate" and budget["hours"] == 40
    within = [t for t in doc["trials"] if t["cost"] <= 40]
    assert budget["n_within"] == len(within)
    best = max(within, key=lambda t: (t["ci"][0], t["accuracy"], -t["cost"]))
    assert budget["chosen"]["trial"] == best["number"] and doc["best"]["trial"] == best["number"]
    step = budget["next_step"]
    if step is not None:
        assert step["cost"] > 40 and step["ci"][0] > best["ci"][0]
    assert "Within the budget of 40.0 hours" in Path(doc["reports"]["md"]).read_text()


def test_budget_with_a_target_says_what_it_would_take(plan_bank: Any, tmp_path: Path) -> None:
    from advisor.science.cost import load_modality

    cheapest = load_modality("generic").cost(3, 2, 1)
    result = _invoke(["plan", "--bank", str(plan_bank.path), "--workspace", str(tmp_path), *PLAN,
                      "--target-accuracy", "0.6", "--budget-hours", f"{cheapest + 0.5}"])
    assert result.exit_code == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "within the budget of" in text.lower()


def _modality_without_animal_cost(tmp_path: Path) -> Path:
    from advisor.science.cost import modality_dir

    text = (modality_dir() / "generic.toml").read_text()
    lines = [line for line in text.splitlines() if not line.startswith("per_animal_cost")]
    path = tmp_path / "no_animals.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_animals_and_budget_bad_input(plan_bank: Any, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    for args, message in [
        (["--max-animals", "0"], "--max-animals must be a positive integer (animals recorded with the protocol); "
                                 "got 0"),
        (["--budget-hours", "0"], "--budget-hours must be a positive number of hours; got 0"),
        (["--budget-hours", "-5"], "--budget-hours must be a positive number of hours; got -5"),
        (["--max-animals", "2", "--modality", str(_modality_without_animal_cost(tmp_path))],
         "has no per_animal_cost"),
    ]:
        assert_one_error_line(_invoke(["plan", "--workspace", str(empty), *args]), message)
        assert not (empty / "banks").exists()  # checked before any bank is built
    bank = ["--bank", str(plan_bank.path), "--workspace", str(empty), *PLAN]
    for args, message in [
        (["--max-animals", "99"], "--max-animals must be at most"),
        (["--budget-hours", "0.5"], "--budget-hours 0.5 is below the cheapest protocol the search can propose"),
    ]:
        assert_one_error_line(_invoke(["plan", *bank, *args]), message)
    assert not (empty / "reports").exists()
    assert not list((empty / "mlflow").glob("artifacts/*")) if (empty / "mlflow").exists() else True


def test_compare_with_a_budget_reports_each_modalitys_choice(plan_bank: Any, tmp_path: Path) -> None:
    result = _invoke(["compare", "--bank", str(plan_bank.path), "--workspace", str(tmp_path), "--trials", "6",
                      "--splits", "5", "--setaside", "0.5", "--statistics", "marginal", "--observable",
                      "activations", "--modalities", "ephys,two_photon", "--budget-hours", "150", "--json"])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["question"]["budget_hours"] == 150
    for entry in doc["modalities"]:
        budget = entry["budget"]
        assert budget["mode"] == "most_accurate" and budget["hours"] == 150
        within = [t for t in entry["trials"] if t["cost"] <= 150]
        assert budget["n_within"] == len(within)
        if within:
            assert budget["chosen"]["cost"] <= 150
    assert "Within the budget of 150 hours" in Path(doc["reports"]["md"]).read_text()

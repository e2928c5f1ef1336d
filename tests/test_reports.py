"""Reports: Markdown, self-contained HTML and PDF rendered from hand-written plan and compare documents.

The fixtures in ``tests/data`` follow the document schema that ``advisor.application.planning`` produces (a feasible
plan, tested
on 64 set-aside networks, whose cheapest search-feasible protocol failed the re-check; a compare of three modalities:
one recommended, one with no protocol feasible in the search, one that cannot measure the observable).
"""

from __future__ import annotations

import base64
import copy
import html
import json
import re
import struct
import subprocess
import sys
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from advisor.application import figures as figures_module
from advisor.application import reports as reports_module
from advisor.application.figures import RULE_WORDS, make_figures, rule_words, statistic_label
from advisor.application.reports import (
    Formula,
    methods_paragraph,
    recommendation_sentence,
    render_html,
    render_markdown,
    render_pdf,
    report_blocks,
    rule_list,
    write_reports,
)
from advisor.errors import AdvisorError

DATA = Path(__file__).parent / "data"
PLAN_FIGURES = ("pareto", "curves", "confusion", "importances")
COMPARE_FIGURES = ("compare", "modalities")
PLAN_HEADINGS = ("# Recording plan", "## Recommendation", "## Protocol", "## Predicted accuracy", "## Controls",
                 "## Pareto front", "## What would not suffice", "## Figures", "## Caveats", "## Methods",
                 "## How to reproduce")
PLAN_PAGES = 8
"""Four pages of text and tables (title to the insufficient protocols), the four figures floating among the caveats
and the methods over the next three, and the reproduction page."""
COMPARE_PAGES = 5


def load(name: str) -> dict[str, Any]:
    with open(DATA / f"{name}_document.json", encoding="utf-8") as stream:
        return json.load(stream)


def pdf_page_count(data: bytes) -> int:
    return len(re.findall(rb"/Type\s*/Page\b", data))


def pdf_pages_text(path: Path) -> list[str]:
    """The text of each page of a PDF, as a reader extracts it (pdfium, independent of the renderer)."""
    import pypdfium2

    document = pypdfium2.PdfDocument(path)
    try:
        return [page.get_textpage().get_text_range() for page in document]
    finally:
        document.close()


def words(text: str) -> str:
    """Text with every run of white space (line breaks, no-break spaces) as one space."""
    return " ".join(text.split())


def png_width(data: bytes) -> int:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">I", data[16:20])[0]


@pytest.fixture(scope="module")
def plan_reports(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], dict[str, Any]]:
    doc = load("plan")
    return write_reports(doc, tmp_path_factory.mktemp("plan-report")), doc


@pytest.fixture(scope="module")
def compare_reports(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], dict[str, Any]]:
    doc = load("compare")
    return write_reports(doc, tmp_path_factory.mktemp("compare-report")), doc


@pytest.fixture
def infeasible() -> dict[str, Any]:
    """The plan fixture as if no protocol had met the target in the search (the re-check rejected them all): the
    set-aside test is of the most accurate protocol."""
    doc = load("plan")
    final = doc["setaside"]
    doc.update(feasible=False, verdict="none_in_search", recommendation=None, candidate=None, verification=None)
    doc["best"]["setaside"] = final
    return doc


def verdict(doc: dict[str, Any], name: str) -> dict[str, Any]:
    """The plan fixture with the candidate failing on the set-aside networks in the way ``name`` says."""
    doc.update(feasible=False, verdict=name, recommendation=None)
    if name == "setaside_below_target":
        doc["setaside"].update(accuracy=0.7, ci=[0.58, 0.8], reaches_target=False)
    else:
        doc["controls"]["behaviour"].update(accuracy=0.86, ci=[0.76, 0.93])
        doc["setaside"]["beyond_controls"] = False
    doc["candidate"]["setaside"] = doc["setaside"]
    return doc


PROTOCOL = ("167 units of activations in the early, middle and deep layers at 7 sessions spread evenly over all of "
            "learning, the first before training starts, with noise ≤ 0.58 (3 repeats)")
RULES = ("the learning rule (one of SGD with momentum (backprop), Adam (backprop), feedback alignment, information "
         "alignment)")


# ------------------------------------------------------------------------------------------------ sentences
def test_recommendation_sentence_feasible_plan() -> None:
    assert recommendation_sentence(load("plan")) == (
        f"Record ≥ {PROTOCOL}: {RULES} is identified with 0.91 accuracy (95% CI 0.81-0.96) on 64 networks the "
        "search never saw; chance 0.25; the strongest control, behaviour, reaches 0.52 (0.40-0.64).")


def test_recommendation_sentence_matches_the_documented_wording() -> None:
    doc = load("plan")
    doc["recommendation"].update(n_units=150, layers=["deep"], n_sessions=2, noise=0.35, repeats=3)
    doc["setaside"].update(accuracy=0.81, ci=[0.74, 0.87])
    doc["controls"]["behaviour"].update(accuracy=0.52, ci=[0.45, 0.6])
    assert recommendation_sentence(doc) == (
        "Record ≥ 150 units of activations in the deep layers at 2 sessions, one before training starts and one at "
        f"the end of learning, with noise ≤ 0.35 (3 repeats): {RULES} is identified with 0.81 accuracy (95% CI "
        "0.74-0.87) on 64 networks the search never saw; chance 0.25; the strongest control, behaviour, reaches "
        "0.52 (0.45-0.60).")


def test_recommendation_sentence_variants_of_the_protocol() -> None:
    doc = load("plan")
    doc["recommendation"].update(observable="weights", window=[0.0, 0.3], repeats=1, chronic=False, n_sessions=3)
    doc["question"]["target"] = "family"
    doc["labels"] = ["backprop", "feedback_alignment"]
    assert recommendation_sentence(doc).startswith(
        "Record ≥ 167 synapses of weights in the early, middle and deep layers at 3 sessions within the first 30% "
        "of learning, the first before training starts, with noise ≤ 0.58, new units each session: the "
        "learning-rule family (one of backpropagation, feedback alignment (and relatives)) is identified with 0.91 "
        "accuracy")


def test_recommendation_sentence_setaside_below_target() -> None:
    assert recommendation_sentence(verdict(load("plan"), "setaside_below_target")) == (
        f"The protocol chosen on the search networks to identify {RULES}, {PROTOCOL}, reaches 0.70 (95% CI "
        "0.58-0.80) on 64 set-aside networks, below the target 0.80 for the lower 95% CI bound (search estimate "
        "0.90, 95% CI 0.86-0.94; chance 0.25): no protocol is recommended.")


def test_recommendation_sentence_setaside_not_beyond_controls() -> None:
    assert recommendation_sentence(verdict(load("plan"), "setaside_not_beyond_controls")) == (
        f"The protocol chosen on the search networks to identify {RULES}, {PROTOCOL}, reaches 0.91 (95% CI "
        "0.81-0.96) on 64 set-aside networks but does not clear the behavioural control, which reaches 0.86 (95% "
        "CI 0.76-0.93) from the whole learning curve alone (chance 0.25): no protocol is recommended.")


def test_recommendation_sentence_infeasible_gives_the_best_reachable(infeasible: dict[str, Any]) -> None:
    assert recommendation_sentence(infeasible) == (
        f"No protocol within the bounds (≤ 500 units, ≤ 41 sessions, modality generic) identifies {RULES} with "
        "accuracy ≥ 0.80 at the lower 95% CI bound beyond the controls; the most "
        "accurate found, 201 units of activations in the middle and deep layers at 13 sessions spread evenly over "
        "all of learning, the first before training starts, with noise ≤ 0.29 (12 repeats), reaches 0.98 (95% CI "
        "0.96-1.00) in the search, where the strongest control, behaviour, reaches 0.55 (0.49-0.61), and 0.91 (95% "
        "CI 0.81-0.96) on 64 set-aside networks; chance 0.25.")
    assert "Record ≥" not in recommendation_sentence(infeasible)  # the best is described, not recommended


def test_recommendation_sentence_of_an_old_document() -> None:
    """A document from before the set-aside networks still renders, with its search estimate."""
    doc = load("plan")
    for key in ("setaside", "controls", "search_controls", "strongest_control", "verdict", "candidate"):
        del doc[key]
    del doc["recommendation"]["setaside"], doc["question"]["setaside"]
    doc["control"] = {"accuracy": 0.55, "ci": [0.49, 0.61]}
    assert recommendation_sentence(doc) == (
        f"Record ≥ {PROTOCOL}: {RULES} is identified with 0.90 accuracy (95% CI 0.86-0.94; chance 0.25).")
    md = render_markdown(doc, {})
    assert "| task-performance control: learning curve only | 0.55 | 0.49-0.61 |" in md
    assert "percentile bootstrap over networks" in methods_paragraph(doc)


def test_recommendation_sentence_compare() -> None:
    doc = load("compare")
    assert recommendation_sentence(doc) == (
        f"The cheapest modality that identifies {RULES} with accuracy ≥ 0.90 at the lower 95% CI bound, beyond the "
        "controls, on networks the search never saw is ephys: record ≥ 166 units of activations in the early, "
        "middle and deep layers at 6 sessions spread evenly over all of learning, the first before training "
        "starts, with ≥ 30 spikes per stimulus (15 repeats), for 29.5 hours per animal, and it is identified with "
        "0.98 accuracy (95% CI 0.91-1.00) on 64 networks the search never saw; chance 0.25.")
    doc["modalities"][0].update(feasible=False, recommendation=None, verdict="setaside_below_target")
    doc["modalities"][0]["setaside"].update(accuracy=0.85, ci=[0.75, 0.92])
    assert recommendation_sentence(doc).startswith(
        f"None of the modalities compared (ephys, two_photon and spine_imaging) identifies {RULES} with accuracy ≥ "
        "0.90 at the lower 95% CI bound beyond the controls on networks the "
        "search never saw; the most accurate there is two_photon, with 0.88 accuracy (95% CI 0.77-0.94) on 64 "
        "networks the search never saw when recording 292 units")
    assert recommendation_sentence(doc).endswith(
        ", but no protocol met the target beyond the controls in the search; chance 0.25.")


def test_methods_paragraph_names_the_statistics_and_the_robust_test() -> None:
    doc = load("plan")
    assert "we computed 21 statistics of the recorded values" in methods_paragraph(doc)
    assert "robust" not in methods_paragraph(doc)
    doc["question"].update(statistics="population", robust=True)
    text = methods_paragraph(doc)
    assert "21 statistics of the recorded values (raw" not in text
    assert "statistics of the recorded population that no unknown gain or offset changes" in text
    assert "The plan was robust: a protocol counted only if it also identified the rule leaving one architecture" \
           in text
    doc["question"]["statistics"] = "both"
    assert "kurtosis), and statistics of the recorded population" in methods_paragraph(doc)


def test_methods_paragraph_has_every_number() -> None:
    doc = load("plan")
    text = methods_paragraph(doc)
    bank = doc["bank"]
    for fragment in (
        f"We simulated {bank['n_networks']} artificial neural networks", "preset quick, bank 28a02cc9c7b6",
        "4 candidate rules (Adam (backprop), feedback alignment, information alignment, SGD with momentum "
        "(backprop))", "conv2_relu and mlp3_relu architectures",
        "digits and gaussian_mixture tasks", "600 training steps each", "41 checkpoints",
        "one network stands for one animal, so costs are per animal and accuracy is the probability of naming the "
        "rule correctly from one animal's recording",
        "25% of the question's networks (64; the search used the other 192)",
        "rule, architecture, task and curriculum", "used only once",
        "167 units of activations", "7 sessions spread evenly over all of learning", "noise ≤ 0.58 (3 repeats)",
        "unknown gains", "log SD 0.5 per animal, 0.3 per area (layer group) and 0.5 per unit; no baseline",
        "21 statistics", "raw, absolute and squared values", "mean, median, third quartile, variance, L2 norm",
        "skewness coefficient and kurtosis", "linear support-vector machine",
        "three repeats of stratified 4-fold cross-validation over the search networks",
        "no network was on both sides", "pooled out-of-fold hit rate", "Nadeau-Bengio corrected resampled t-interval",
        "at least the Wilson interval over the distinct networks", "fit once on all search networks",
        "20 refits on bootstrap resamples of the training networks", "in quadrature",
        "In the search it reached 0.90 (95% CI 0.86-0.94); on the 64 set-aside networks, 0.91 (95% CI 0.81-0.96; "
        "balanced accuracy 0.91; chance 0.25)",
        "the whole learning curve (log training loss, training and test metric at every checkpoint)",
        "the hyperparameters alone (log learning rate, batch size, init scale)",
        "multinomial logistic regression", "random forest (200 trees)",
        "behaviour 0.52 (95% CI 0.40-0.64, logreg) and hyperparameters 0.39 (95% CI 0.28-0.51, rf)",
        "Leaving one architecture out at a time (conv2_relu and mlp3_relu) (trained on the search networks of the "
        "other architectures, tested on the set-aside networks of the one left out), it reached 0.71 (95% CI "
        "0.65-0.77) against 0.50 (0.44-0.56) for the behavioural control",
        "Optuna search (TPE sampler, 100 trials, seed 0)", "lower 95% CI bound", "target accuracy 0.80",
        "above the strongest control's upper bound",
        "fresh seeds (1001, 1002, 1003) on the search networks gave 0.90 (95% CI 0.85-0.94)",
        "Nayebi, Srivastava, Ganguli & Yamins", "NeurIPS 2020 (arXiv:2010.11765)",
    ):
        assert fragment in text, fragment
    assert "transfers" not in text


def test_methods_paragraph_compare_names_every_modality() -> None:
    text = methods_paragraph(load("compare"))
    assert "Modality ephys: recommended protocol 166 units" in text
    assert "set-aside 0.98 (95% CI 0.91-1.00), search 0.96 (95% CI 0.93-0.98)" in text
    assert "cost 29.5 hours per animal; unknown gains lognormal, log SD 0.3 per animal" in text
    assert "Modality two_photon: most accurate protocol 292 units" in text
    assert "Modality spine_imaging: cannot measure activations." in text
    assert "Optuna search (TPE sampler, 40 trials, seed 0)" in text
    assert "Two controls measure what an experimenter gets without recording a unit" in text


# --------------------------------------------------------------------------------------------- all formats
def test_plan_reports_are_written(plan_reports: tuple[dict[str, Path], dict[str, Any]]) -> None:
    paths, _ = plan_reports
    assert set(paths) == {"md", "html", "pdf"}
    for fmt, path in paths.items():
        assert path.name == f"report.{fmt}" and path.stat().st_size > 1000
    out = paths["md"].parent
    assert sorted(p.name for p in out.iterdir()) == ["figures", "report.html", "report.md", "report.pdf"]
    assert sorted(p.name for p in (out / "figures").iterdir()) == sorted(f"{k}.png" for k in PLAN_FIGURES)


def test_plan_pdf(plan_reports: tuple[dict[str, Path], dict[str, Any]]) -> None:
    import pypdfium2

    paths, doc = plan_reports
    data = paths["pdf"].read_bytes()
    assert data.startswith(b"%PDF")
    assert pdf_page_count(data) == PLAN_PAGES
    assert b"/CreationDate (D:20261128100000Z)" in data
    document = pypdfium2.PdfDocument(paths["pdf"])
    try:
        assert len(document) == PLAN_PAGES
        metadata = document.get_metadata_dict()
    finally:
        document.close()
    assert metadata["Title"] == "Recording plan: which learning rule, from what recording?"
    assert metadata["Author"] == "lr-advisor"
    assert metadata["Subject"] == recommendation_sentence(doc)
    assert metadata["Creator"] == "lr-advisor 0.1.0"
    assert metadata["CreationDate"] == "D:20261128100000Z"


def test_plan_pdf_text(plan_reports: tuple[dict[str, Path], dict[str, Any]]) -> None:
    """What a reader extracts from the PDF: the recommendation, a footer with "page N of M" on every page, the
    bank hash and run id unbroken, every number and interval of the tables on one line, the cost formula."""
    paths, doc = plan_reports
    pages = pdf_pages_text(paths["pdf"])
    for number, page in enumerate(pages, start=1):
        assert page.rstrip().endswith(f"page {number} of {len(pages)}"), page[-80:]
        assert "lr-advisor report · Recording plan" in page
    text = "\n".join(pages)
    flat = words(text)
    assert recommendation_sentence(doc) in flat
    assert "Reading the numbers: one simulated network stands for one animal." in flat
    assert "accuracy is the probability of naming the rule correctly from one animal's recording" in flat
    lines = [words(line) for line in text.splitlines()]
    for token in ("28a02cc9c7b6", "7f3c2a9e41b04d2c8e5a1f6b9d0c3e27", "sqlite:////home/lab/advisor/mlflow/mlflow.db"):
        assert any(token in line for line in lines), token
    for row in ("search estimate: 3 × 4-fold cross-validation on the 192 search networks 0.90 0.86-0.94",
                "re-check: fresh seeds 1001, 1002, 1003, same search networks 0.90 0.85-0.94",
                "activations: this protocol 0.91 (0.81-0.96), svm 0.90 (0.86-0.94), svm",
                "86 22.2 0.90 0.86-0.94 yes, recommended activations, 167 units"):
        assert any(line.startswith(row) for line in lines), row
    assert "cost 22.2 hours per animal" in lines
    assert "For this protocol: 7 × (1 + 167 × (0.01 + 3 × 0.001)) = 22.2 hours per animal." in flat
    assert "cost = n" in flat and "n_sessions" not in flat  # typeset as math, not printed as code
    for number in range(1, 5):
        assert f"Figure {number}. " in flat


def test_pdf_is_reproducible(tmp_path: Path) -> None:
    doc = load("compare")
    assert render_pdf(doc, tmp_path / "a.pdf") == render_pdf(doc, tmp_path / "b.pdf") == COMPARE_PAGES
    assert (tmp_path / "a.pdf").read_bytes() == (tmp_path / "b.pdf").read_bytes()
    doc["created"] = "2026-11-29T08:15:00Z"
    render_pdf(doc, tmp_path / "c.pdf")
    assert b"/CreationDate (D:20261129081500Z)" in (tmp_path / "c.pdf").read_bytes()


def test_plan_html_is_self_contained(plan_reports: tuple[dict[str, Path], dict[str, Any]]) -> None:
    paths, doc = plan_reports
    text = paths["html"].read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and "<style>" in text
    for needle in ('src="http', "href=", "<script", "<link", "http://", "https://", "url("):
        assert needle not in text, needle
    images = re.findall(r'<img alt="Figure (\d)\. [^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)">', text)
    assert [n for n, _ in images] == ["1", "2", "3", "4"]
    for _, data in images:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    assert html.escape(recommendation_sentence(doc)) in re.sub(r"</?span[^>]*>", "", text)
    assert "<td>units per animal</td><td>167</td>" in text


def test_html_numbers_do_not_wrap(plan_reports: tuple[dict[str, Path], dict[str, Any]]) -> None:
    """Numeric cells (accuracies, CIs, costs) and their headers carry the class ``num``, which never wraps; number
    ranges in text and mixed cells do not break at their dash."""
    text = plan_reports[0]["html"].read_text(encoding="utf-8")
    assert re.search(r"th\.num, td\.num \{ white-space: nowrap;", text)
    assert re.search(r"span\.nb \{ white-space: nowrap; \}", text)
    assert ('<tr><td>search estimate: 3 × 4-fold cross-validation on the 192 search networks</td><td class="num">0.90'
            '</td><td class="num">0.86-0.94</td></tr>') in text
    assert '<th class="num">accuracy</th><th class="num">95% CI</th>' in text
    assert '<td>0.91 (<span class="nb">0.81-0.96</span>), svm</td>' in text
    assert 'is identified with 0.91 accuracy (95% CI <span class="nb">0.81-0.96</span>)' in text
    for cell in re.findall(r'<td class="num">([^<]*)</td>', text):
        assert re.fullmatch(r"|n/a|\d[\d,.]*(-\d[\d.]*)?", cell), cell


def test_plan_markdown(plan_reports: tuple[dict[str, Path], dict[str, Any]]) -> None:
    paths, doc = plan_reports
    text = paths["md"].read_text(encoding="utf-8")
    positions = [text.index(f"{heading}") for heading in PLAN_HEADINGS]
    assert positions == sorted(positions)
    assert f"**{recommendation_sentence(doc)}**" in text
    for row in ("| property | value |", "| units per animal | 167 |", "| layer groups | early, middle, deep |",
                "| sessions | 7 |",
                "| placement | spread evenly over all of learning, the first before training starts |",
                "| measurement noise | Gaussian, SD 0.58 × the observable's spread |",
                "| repeats averaged per stimulus | 3 |", "| cost | 22.2 hours per animal |",
                "| unknown gains | lognormal, log SD 0.5 per animal, 0.3 per area (layer group) and 0.5 per unit; no "
                "baseline |"):
        assert row in text, row
    # the accuracy table: which number is which, and the one recommended on
    for row in ("| search estimate: 3 × 4-fold cross-validation on the 192 search networks | 0.90 | 0.86-0.94 |",
                "| re-check: fresh seeds 1001, 1002, 1003, same search networks | 0.90 | 0.85-0.94 |",
                "| set-aside test: one fit on the search networks, tested once on 64 networks the search never saw "
                "(the number recommended on) | 0.91 | 0.81-0.96 |", "| target (lower 95% CI bound) | 0.80 |  |"):
        assert row in text, row
    assert "it is the number the recommendation rests on. Here the set-aside accuracy equals the search estimate" \
        in text
    # both controls, with their classifiers, and the verdict against the strongest
    for row in ("| classifier input | set-aside networks (95% CI), classifier | search networks (95% CI), classifier |",
                "| activations: this protocol | 0.91 (0.81-0.96), svm | 0.90 (0.86-0.94), svm |",
                "| behaviour (whole learning curve) | 0.52 (0.40-0.64), logreg | 0.55 (0.49-0.61), rf |",
                "| hyperparameters alone | 0.39 (0.28-0.51), rf | 0.41 (0.35-0.47), logreg |",
                "| behaviour (whole learning curve) | logreg | 0.50 (0.44-0.56) |"):
        assert row in text, row
    assert ("On the set-aside networks the strongest control is behaviour, 0.52 (95% CI 0.40-0.64) with logreg; the "
            "protocol's set-aside lower bound 0.81 clears its upper bound 0.64") in text
    assert "it is not shown to carry over to an unseen architecture (its lower bound 0.65 is below the target 0.80)" \
        in text
    assert "transfers" not in text
    assert "| 1 | 10.0 | 0.82 | 0.80-0.86 | yes, failed re-check |" in text
    assert "| 86 | 22.2 | 0.90 | 0.86-0.94 | yes, recommended |" in text
    assert "only the recommended protocol was tested on the set-aside networks: 0.91 (95% CI 0.81-0.96)" in text
    assert f"Only the simulated rules were considered ({RULES.split('(one of ')[1]}." in text
    assert "Unknown gains (generic): the virtual recording scales every value by gains the classifier never sees" \
        in text
    assert "| set-aside share | 25% of the networks (64 set aside, 192 searched), drawn with the search seed |" in text
    assert "```bash\nadvisor plan --max-units 500" in text
    assert "| MLflow run id | 7f3c2a9e41b04d2c8e5a1f6b9d0c3e27 |" in text
    links = re.findall(r"!\[Figure \d\. [^\]]+\]\((figures/[a-z]+\.png)\)", text)
    assert links == [f"figures/{key}.png" for key in PLAN_FIGURES]
    for link in links:
        png = (paths["md"].parent / link).read_bytes()
        assert png_width(png) == round(figures_module.FIGURES[0].size[0] * 300) or link.endswith("confusion.png")
    assert png_width((paths["md"].parent / "figures/confusion.png").read_bytes()) == round(6.0 * 300)


def test_compare_reports(compare_reports: tuple[dict[str, Path], dict[str, Any]]) -> None:
    paths, doc = compare_reports
    md = paths["md"].read_text(encoding="utf-8")
    assert "## Modalities side by side" in md and "## Per modality" in md
    assert "| modality | meets target | cost (hours per animal) | set-aside accuracy (95% CI) | protocol |" in md
    assert "| ephys | yes | 29.5 | 0.98 (0.91-1.00) | activations, 166 units, early+middle+deep" in md
    assert "| two_photon | no: none in the search | 82.9 | 0.88 (0.77-0.94) |" in md
    assert "- two_photon: not sufficient (no protocol met the target beyond the controls in the search)" in md
    assert "| spine_imaging | no: cannot measure activations | n/a | n/a | - |" in md
    assert ("identified with 0.98 (95% CI 0.91-1.00) on 64 set-aside networks (search estimate 0.96, 95% CI "
            "0.93-0.98); held-out architecture 0.93 (95% CI 0.90-0.96): it transfers to an unseen architecture.") in md
    assert "held-out architecture 0.84 (95% CI 0.79-0.88): not shown to carry over to an unseen architecture." in md
    assert md.count("transfers") == 1  # only ephys's held-out architecture transfers
    assert "- spine_imaging: not sufficient (cannot measure activations)." in md
    assert "### Pareto front: ephys" in md and "### Pareto front: spine_imaging\n\nNo trials." in md
    assert re.findall(r"\]\((figures/[a-z]+\.png)\)", md) == [f"figures/{k}.png" for k in COMPARE_FIGURES]
    page = paths["html"].read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 2 and 'src="http' not in page
    assert html.escape(recommendation_sentence(doc)) in re.sub(r"</?span[^>]*>", "", page)
    assert pdf_page_count(paths["pdf"].read_bytes()) == COMPARE_PAGES
    pages = pdf_pages_text(paths["pdf"])
    assert len(pages) == COMPARE_PAGES and pages[-1].rstrip().endswith(f"page {COMPARE_PAGES} of {COMPARE_PAGES}")
    flat = words("\n".join(pages))
    assert recommendation_sentence(doc) in flat
    assert "Costs are hours of recording per animal" in flat
    assert "ephys yes 29.5 0.98 (0.91-1.00)" in flat


# ------------------------------------------------------------------------------------ infeasible and absent
def test_infeasible_plan_says_so(infeasible: dict[str, Any]) -> None:
    figures = make_figures(infeasible)
    md = render_markdown(infeasible, {key: f"figures/{key}.png" for key in figures})
    assert "**No protocol within the bounds" in md
    assert "No protocol met the target beyond the controls in the search; the most accurate one found:" in md
    assert f"| units per animal | {infeasible['best']['n_units']} |" in md
    assert "No independent re-check with fresh seeds was run." in md
    assert "the diamond marks the most accurate protocol found (none met the target)" in md
    assert "Virtual recordings followed the most accurate protocol" in methods_paragraph(infeasible)
    assert "(the number the verdict rests on)" in md


@pytest.mark.parametrize("name", ["setaside_below_target", "setaside_not_beyond_controls"])
def test_candidate_failing_on_setaside_networks(name: str) -> None:
    doc = verdict(load("plan"), name)
    md = render_markdown(doc, {})
    assert "| units per animal | 167 |" in md  # the candidate is shown, not the most accurate trial
    assert "it falls below the target on the set-aside networks" in md if name == "setaside_below_target" else \
        "on the set-aside networks it does not clear the controls" in md
    assert "| 86 | 22.2 | 0.90 | 0.86-0.94 | yes, chosen, fails set-aside |" in md
    assert "Virtual recordings followed the chosen protocol" in methods_paragraph(doc)
    if name == "setaside_not_beyond_controls":
        assert "does not clear its upper bound 0.93: the identification may reflect no more than what the learning " \
               "curve already tells" in md


def test_transfers_only_when_the_document_says_so() -> None:
    doc = load("plan")
    doc["heldout_architecture"].update(accuracy=0.9, ci=[0.85, 0.94], transfers=True)
    md = render_markdown(doc, {})
    assert ("it reaches 0.90 (95% CI 0.85-0.94) against 0.50 (95% CI 0.44-0.56) for the behavioural control "
            "(logreg): it transfers to an unseen architecture") in md
    doc["heldout_architecture"]["transfers"] = False  # e.g. its lower bound does not clear the control
    doc["heldout_architecture"]["control_ci"] = [0.6, 0.9]
    md = render_markdown(doc, {})
    assert "transfers" not in md
    assert "(its lower bound does not clear the control's upper bound 0.90)" in md


def test_absent_optional_sections(tmp_path: Path) -> None:
    doc = load("plan")
    for key in ("curves", "importances", "heldout_architecture", "controls", "search_controls", "verification",
                "modality"):
        doc[key] = None
    doc["insufficient"] = []
    del doc["rejected_by_recheck"]
    assert list(make_figures(doc)) == ["pareto", "confusion"]
    paths = write_reports(doc, tmp_path)
    md = paths["md"].read_text(encoding="utf-8")
    assert "*Figure 2. Accuracy vs. units, sessions and noise: not shown, the result has no accuracy curves.*" in md
    assert "*Figure 4. Most informative statistics and sessions: not shown, the result has no feature importances.*" \
        in md
    assert "No control was computed, so it is unknown how much is behaviour or hyperparameters alone." in md
    assert "No held-out-architecture score was computed." in md
    assert "No independent re-check with fresh seeds was run." in md
    assert "The result lists no insufficient alternatives." in md
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == ["confusion.png", "pareto.png"]
    assert paths["html"].read_text(encoding="utf-8").count("data:image/png;base64,") == 2
    # less text and two figures instead of four: five pages instead of eight
    assert pdf_page_count(paths["pdf"].read_bytes()) == 5
    flat = words("\n".join(pdf_pages_text(paths["pdf"])))
    assert "Figure 2. Accuracy vs. units, sessions and noise: not shown, the result has no accuracy curves." in flat


def test_markdown_without_a_figure_path_says_not_rendered() -> None:
    md = render_markdown(load("compare"), {})
    assert "*Figure 1. Cost vs. accuracy by modality: not rendered.*" in md
    assert "![" not in md


def test_markdown_escapes_table_cells() -> None:
    doc = load("plan")
    doc["insufficient"][0]["description"] = "a | b"
    assert "| a \\| b |" in render_markdown(doc, {})


def test_html_renders_given_figures_only() -> None:
    doc = load("compare")
    page = render_html(doc, figures={})
    assert "data:image/png" not in page
    assert "Figure 1. Cost vs. accuracy by modality: not shown, not rendered." in page


# ------------------------------------------------------------------------------------------ errors, atomic
def test_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(AdvisorError, match=r"^format must be one of md, html, pdf; got 'docx'$"):
        write_reports(load("plan"), tmp_path / "out", formats=("md", "docx"))
    assert not (tmp_path / "out").exists()


def test_unknown_kind() -> None:
    with pytest.raises(AdvisorError, match=r"^document kind must be one of plan, compare, identify; got 'sweep'$"):
        recommendation_sentence({"kind": "sweep"})


def test_only_requested_formats(tmp_path: Path) -> None:
    paths = write_reports(load("compare"), tmp_path, formats=["html"])
    assert paths == {"html": tmp_path / "report.html"}
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_failed_rendering_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The PDF fails to build after the Markdown, its figures and the HTML were rendered: no file (and no temporary
    file) may appear, and an older report stays untouched."""
    from reportlab.platypus.doctemplate import BaseDocTemplate

    rendered = []
    render = reports_module.render_html

    def html(*args: Any, **kwargs: Any) -> str:
        rendered.append("html")
        return render(*args, **kwargs)

    def fail(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(reports_module, "render_html", html)
    monkeypatch.setattr(BaseDocTemplate, "build", fail)
    (tmp_path / "report.md").write_text("older report\n", encoding="utf-8")
    with pytest.raises(RuntimeError, match="boom"):
        write_reports(load("plan"), tmp_path)
    assert rendered == ["html"]
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]
    assert (tmp_path / "report.md").read_text(encoding="utf-8") == "older report\n"


# ----------------------------------------------------------------------------------------------- layout
def _texts(figure: Any) -> list[Any]:
    """The texts matplotlib draws: visible, non-empty, and (tick labels) at a tick inside the axis' view."""
    from matplotlib.text import Text

    hidden: set[int] = set()
    for ax in figure.get_axes():
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            span = hi - lo
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if not lo - 1e-9 * span <= tick.get_loc() <= hi + 1e-9 * span:
                    hidden.update((id(tick.label1), id(tick.label2)))
    return [t for t in figure.findobj(Text) if t.get_visible() and t.get_text().strip() and id(t) not in hidden]


def _overlap(a: tuple[float, ...], b: tuple[float, ...], slack: float = 1.0) -> float:
    """The area two (left, bottom, right, top) boxes share, each shrunk by ``slack`` points on every side (an
    italic letter's overhang, a subscript's descent)."""
    width = min(a[2], b[2]) - max(a[0], b[0]) - 2 * slack
    height = min(a[3], b[3]) - max(a[1], b[1]) - 2 * slack
    return max(0.0, width) * max(0.0, height)


def long_ids() -> dict[str, Any]:
    """The plan fixture with a long title, a 64-digit bank hash and a run URL wider than the page."""
    doc = load("plan")
    doc["title"] = "Recording plan " * 12
    doc["bank"]["hash"] = "0123456789abcdef" * 4
    doc["run_url"] = "http://127.0.0.1:5000/#/experiments/1/runs/" + "7f3c2a9e41b04d2c" * 12
    return doc


@pytest.mark.parametrize("name", ["plan", "compare", "long ids"])
def test_pdf_stays_in_the_text_block(name: str, tmp_path: Path) -> None:
    """On every PDF page every character and image lies inside the text block (the footer in the bottom margin),
    no two pieces of text overlap, and the figures are the text width at most and embedded at ≥ 200 dpi; a hash
    that fits on a line is never broken, a URL wider than the page is cut to fit."""
    import pypdfium2
    import pypdfium2.raw as pdfium_c

    doc = long_ids() if name == "long ids" else load(name)
    render_pdf(doc, tmp_path / "report.pdf")
    if name == "long ids":
        lines = "\n".join(pdf_pages_text(tmp_path / "report.pdf")).splitlines()
        assert any(f"hash {doc['bank']['hash']}" in line for line in lines)
    width, height = reports_module.PAGE
    margin = reports_module.MARGIN
    document = pypdfium2.PdfDocument(tmp_path / "report.pdf")
    n_images = 0
    try:
        for number, page in enumerate(document, start=1):
            assert page.get_size() == (width, height)
            textpage = page.get_textpage()
            for i in range(textpage.count_chars()):
                x0, y0, x1, y1 = textpage.get_charbox(i)
                if x1 <= x0:  # a line break
                    continue
                assert margin - 0.5 <= x0 and x1 <= width - margin + 0.5, (number, textpage.get_text_range(i, 20))
                assert 0.4 * margin <= y0 and y1 <= height - margin + 0.5, (number, textpage.get_text_range(i, 20))
            rects = [textpage.get_rect(i) for i in range(textpage.count_rects())]
            for i, a in enumerate(rects):
                for b in rects[i + 1:]:
                    assert _overlap(a, b) < 1.0, (number, textpage.get_text_bounded(*a), textpage.get_text_bounded(*b))
            for image in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE]):
                n_images += 1
                left, bottom, right, top = image.get_bounds()
                assert margin - 0.5 <= left and right <= width - margin + 0.5 and margin - 0.5 <= bottom
                assert top <= height - margin + 0.5
                assert image.get_px_size()[0] / ((right - left) / 72) >= 200
    finally:
        document.close()
    assert n_images == len(make_figures(doc))


@pytest.mark.parametrize("name", ["plan", "compare"])
def test_figures_stay_in_their_frame(name: str) -> None:
    """Every text of every figure lies inside it; tick labels of one axis do not overlap, nor do the y tick labels
    overlap the x tick labels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    for figure in make_figures(load(name)).values():
        canvas = FigureCanvasAgg(figure)
        with figures_module.style():
            canvas.draw()
        renderer = canvas.get_renderer()
        page = figure.bbox
        for text in _texts(figure):
            box = text.get_window_extent(renderer)
            assert box.x0 >= page.x0 - 1 and box.x1 <= page.x1 + 1, text.get_text()
            assert box.y0 >= page.y0 - 1 and box.y1 <= page.y1 + 1, text.get_text()
        drawn = {id(t) for t in _texts(figure)}
        for ax in figure.get_axes():
            labels = [t for t in ax.get_xticklabels() if id(t) in drawn]
            boxes = sorted((t.get_window_extent(renderer) for t in labels), key=lambda b: b.x0)
            for left, right in pairwise(boxes):
                assert left.x1 <= right.x0 + 0.5, [t.get_text() for t in labels]
            for y in (t for t in ax.get_yticklabels() if id(t) in drawn):
                for x in labels:
                    assert not y.get_window_extent(renderer).overlaps(x.get_window_extent(renderer)), \
                        (y.get_text(), x.get_text())


def test_report_module_imports_no_matplotlib() -> None:
    code = ("import sys, advisor.application.reports; "
            "assert not {'matplotlib', 'reportlab', 'pypdfium2'} & set(sys.modules), 'a renderer was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_documents_are_not_modified() -> None:
    doc = load("plan")
    before = copy.deepcopy(doc)
    render_markdown(doc, {})
    methods_paragraph(doc)
    assert doc == before


# ---------------------------------------------------------------------------------- words a biologist knows
def test_every_registered_rule_has_words() -> None:
    """Conformance over the rule registry: every rule and every family has words; an unknown key stays itself."""
    from simulator.rules import RULES

    for key, rule in RULES.items():
        assert key in RULE_WORDS, key
        assert rule_words(key) != key and "_" not in rule_words(key), key
        assert rule_words(rule.family, family=True) != rule.family, rule.family
    assert set(RULE_WORDS) == set(RULES)
    assert rule_words("sgdm") == "SGD with momentum (backprop)" and rule_words("kp") == "Kolen-Pollack"
    assert rule_words("my_rule") == "my_rule" and rule_list(["fa", "my_rule"]) == "feedback alignment, my_rule"


def _all_statistic_names() -> set[tuple[str, str]]:
    """(feature name, observable) of every feature ``advisor.science.features`` can produce."""
    from advisor.science.features import group_names
    from advisor.science.protocol import GROUPS, OBSERVABLES, STATISTIC_SETS

    return {(f"{group}.{name}", observable) for group in GROUPS for observable in OBSERVABLES
            for statistics in STATISTIC_SETS for chronic in (True, False)
            if not (statistics == "population" and observable == "weights")
            for name in group_names(statistics, observable, chronic)}


def test_every_statistic_has_a_readable_label() -> None:
    names = _all_statistic_names()
    assert len({n for n, _ in names}) == 3 * (21 + 9)  # every group: 21 unit statistics and 9 population ones
    for name, observable in names:
        label = statistic_label(name, observable)
        group, _, statistic = name.partition(".")
        assert label.startswith(f"{group} layers: "), label
        assert label.split(": ", 1)[1] != statistic and "_" not in label, label  # words, not the key
    for observable in ("activations", "weights"):
        labels = [statistic_label(n, observable) for n, o in names if o == observable]
        assert len(set(labels)) == len({n for n, o in names if o == observable})  # no two statistics alike
    assert statistic_label("deep.sq_norm", "activations") == "deep layers: L2 norm of squared activity"
    assert statistic_label("early.raw_mean", "weights") == "early layers: mean of weights"
    assert statistic_label("middle.rsa_first") == "middle layers: similarity to the first session (RSA)"
    assert statistic_label("deep.mystery") == "deep layers: mystery"


def test_importance_figure_fits_its_data() -> None:
    """Three sessions at 0%, 50% and 100% of learning: the session axis spans them with a little padding, not
    -50% to 150%; the statistics are labelled in words, and the caption says what is plotted."""
    doc = load("plan")
    doc["importances"]["sessions"] = [{"session": 0, "fraction": 0.0, "importance": 0.02},
                                      {"session": 20, "fraction": 0.5, "importance": 0.05},
                                      {"session": 40, "fraction": 1.0, "importance": -0.01}]
    figure = make_figures(doc)["importances"]
    statistics, sessions = figure.get_axes()
    low, high = sessions.get_xlim()
    assert -10 <= low < 0 and 100 < high <= 110
    assert [t.get_text() for t in sessions.get_xticklabels()] == ["0%", "50%", "100%"]
    assert statistics.get_xlim()[0] == 0.0 and 0.081 < statistics.get_xlim()[1] < 0.1
    labels = [t.get_text() for t in statistics.get_yticklabels()]
    assert labels[0] == "deep layers: mean of absolute activity" and all("_" not in t for t in labels)
    caption = figures_module._importances_caption(doc)
    assert "the drop in held-out identification accuracy when one part of the recording is shuffled" in caption
    assert "each of the 3 recorded sessions at its point in learning" in caption


def test_rules_are_spelled_out_in_every_report() -> None:
    doc = load("plan")
    md = render_markdown(doc, {})
    assert md.count(RULES.split("(one of ")[1].rstrip(")")) >= 3  # question, recommendation, caveats
    assert "(one of sgdm" not in md and "(adam, fa" not in md


def test_the_reading_is_said_once_and_the_cost_unit_is_one() -> None:
    for name in ("plan", "compare"):
        doc = load(name)
        md = render_markdown(doc, {})
        assert md.count("one simulated network stands for one animal") == 1, name
        assert md.index("Reading the numbers") < md.index("## Recommendation")
        assert "per network" not in md.lower() and "per network" not in render_html(doc, figures={}).lower()
        for figure in make_figures(doc).values():
            texts = [t.get_text() for t in figure.findobj(lambda a: hasattr(a, "get_text"))]
            assert not any("per network" in t for t in texts)
    md = render_markdown(load("plan"), {})
    assert "| trial | cost (hours per animal) | accuracy | 95% CI | feasible | protocol |" in md
    assert "| recording | accuracy | 95% CI | cost (hours per animal) | why not |" in md
    assert "trial 1 (10.0 hours per animal), 0.82 in the search" in md


def test_every_recorded_unit_is_said_so() -> None:
    """A protocol that records every unit the simulation recorded in its groups says "all N units the simulation
    recorded", not "≥ N", and says more were allowed when the question allowed more."""
    doc = load("plan")
    assert recommendation_sentence(doc).startswith("Record ≥ 167 units")  # the document does not say
    doc["bank"]["units_per_group"] = {"early": 55, "middle": 56, "deep": 56}
    assert recommendation_sentence(doc).startswith(
        "Record all 167 units of activations the simulation recorded in the early, middle and deep layers (more "
        "were allowed) at 7 sessions spread evenly over all of learning")
    doc["question"]["max_units"] = 167
    assert recommendation_sentence(doc).startswith(
        "Record all 167 units of activations the simulation recorded in the early, middle and deep layers at 7 ")
    doc["bank"]["units_per_group"] = 56  # one number for every group: 168 recorded, 167 asked for
    assert recommendation_sentence(doc).startswith("Record ≥ 167 units")
    compare = load("compare")
    compare["bank"]["units_per_group"] = {"early": 55, "middle": 55, "deep": 56}
    compare["question"]["max_units"] = 500
    assert "ephys: record all 166 units of activations the simulation recorded in the early, middle and deep " \
           "layers (more were allowed) at 6 sessions" in render_markdown(compare, {})


def test_cost_formula_is_typeset() -> None:
    doc = load("plan")
    formula = next(b for b in report_blocks(doc) if isinstance(b, Formula))
    assert formula.expression == doc["modality"]["cost_formula"]
    md = render_markdown(doc, {})
    assert "`cost = n_sessions × (session_overhead + n_units × (per_unit_cost + repeats × per_unit_repeat_cost))`" \
        in md
    assert ("where `n_sessions` is the number of sessions, `session_overhead` = 1 hour per session (set-up: "
            "surgery, positioning, finding the cells)") in md
    assert "For this protocol: 7 × (1 + 167 × (0.01 + 3 × 0.001)) = 22.2 hours per animal." in md
    page = render_html(doc, figures={})
    assert ('<p class="formula">cost = <i>n</i><sub>sessions</sub> × (<i>c</i><sub>session</sub> + '
            "<i>n</i><sub>units</sub> × (<i>c</i><sub>unit</sub> + <i>r</i> × <i>c</i><sub>repeat</sub>))</p>") in page
    del doc["modality"]["cost_formula"]
    assert not any(isinstance(b, Formula) for b in report_blocks(doc))


def test_a_long_table_repeats_its_header(tmp_path: Path) -> None:
    """A Pareto front of 66 protocols runs over pages: its header opens every page it is on, and no row is cut."""
    doc = load("plan")
    doc["pareto"] = [dict(t, number=100 + i) for i, t in enumerate(doc["pareto"] * 6)]
    render_pdf(doc, tmp_path / "report.pdf")
    pages = [words(page) for page in pdf_pages_text(tmp_path / "report.pdf")]
    with_front = [page for page in pages if "noise 0.29 x12" in page]
    assert len(with_front) >= 2
    for page in with_front:
        assert "accuracy 95% CI feasible protocol" in page
    text = " ".join(pages)
    assert all(f" {100 + i} " in text for i in range(66))

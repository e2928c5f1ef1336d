"""Proposal-ready reports of a plan or compare result: Markdown, one self-contained HTML file, and a PDF.

Everything is rendered from the result document alone (the JSON-able dict the search produces, also stored in
MLflow), so a report can be re-rendered at any time. The document is first turned into a list of blocks
(headings, paragraphs, tables, bullet lists, code, the cost formula, figures) by :func:`report_blocks`; the three
renderers only lay those blocks out, so every format says exactly the same thing. The words are a biologist's:
near the top every report says once that one simulated network stands for one animal and what an accuracy means,
costs are "hours per animal" throughout, and learning rules are named in words (:data:`RULE_WORDS`).

The PDF is typeset with reportlab's platypus (:func:`pdf_story`, :func:`render_pdf`): ruled tables whose header
repeats over page breaks and whose numbers never wrap, the cost formula as math (italic symbols with subscripts),
figures embedded at :data:`PDF_DPI` and the text width, each kept with its numbered caption and floating past the
text when the page is full, and a "page N of M" footer. reportlab because it is well kept, pure Python (no system
library, no binary wheel) and its flowables give tables, captions, keep-together and page templates out of the
box; typst would need a binary and a second template language, and drawing pages by hand on matplotlib could not
wrap, rule or paginate properly. The fonts are DejaVu, shipped with matplotlib. reportlab runs in its invariant
mode with the metadata fixed by the document, so the same document gives a byte-identical PDF. reportlab and
matplotlib are imported inside functions only, which keeps ``advisor --help`` instant. Figures come from
:mod:`advisor.application.figures`.

:func:`write_reports` writes ``report.md`` (with PNGs at 300 dpi in ``figures/``), ``report.html`` and
``report.pdf`` atomically: everything is rendered to temporary files first and moved into place only when all
formats succeeded.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from advisor.application.documents import OBSERVABLE_WORDS, REPORT_FORMATS, Document
from advisor.application.figures import (
    FAMILY_WORDS,
    RULE_WORDS,
    chance_of,
    ci_of,
    controls_of,
    figure_specs,
    make_figures,
    png_bytes,
    protocol_of,
    recommended,
    rule_words,
    setaside_of,
    statistic_label,
    strongest_of,
    target_word,
)
from advisor.application.search import sessions_phrase
from advisor.errors import AdvisorError
from advisor.science.controls import CONTROL_LABELS, DESCRIPTIONS, LINEAR, NONLINEAR
from advisor.science.cost import COST_FORMULA
from advisor.science.protocol import GAIN_LEVELS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Doc = Document
FORMATS = REPORT_FORMATS
CITATION = ("Nayebi, Srivastava, Ganguli & Yamins, \"Identifying Learning Rules From Neural Network Observables\", "
            "NeurIPS 2020 (arXiv:2010.11765)")
CLASSIFIER_WORDS = {"svm": "linear support-vector machine (signed-log, standardised statistics, C = 1)",
                    "ridge": "ridge classifier (penalty 0.1 per feature; signed-log, standardised statistics)",
                    "lda": "linear discriminant analysis with Ledoit-Wolf covariance shrinkage (signed-log, "
                           "standardised statistics)",
                    "logreg": "multinomial logistic regression (signed-log, standardised statistics, C = 1)",
                    "rf": "random forest (200 trees)", "gbt": "gradient-boosted tree ensemble (150 iterations)",
                    "conv1d": "one-dimensional convolutional network over sessions (the paper's Conv1D MLP)"}
SPLIT_WORDS = {"none": "stratified 75/25 train/test splits over networks",
               "architecture": "leave-one-architecture-out splits", "task": "leave-one-task-out splits"}
FOLDS = 4
"""Folds of the search's repeated cross-validation (``advisor.science.evaluation.FOLDS``, which is not imported here: it
pulls in torch and scikit-learn)."""
VERDICTS = ("recommended", "none_in_search", "setaside_below_target", "setaside_not_beyond_controls",
            "setaside_does_not_transfer")
"""A plan's ``verdict``s (``advisor.application.planning.verdict``)."""
VERDICT_WORDS = {"recommended": "recommended",
                 "none_in_search": "no protocol met the target beyond the controls in the search",
                 "setaside_below_target": "the search's choice falls below the target on set-aside networks",
                 "setaside_not_beyond_controls": "the search's choice does not clear the controls on set-aside "
                                                 "networks",
                 "setaside_does_not_transfer": "the search's choice does not hold on set-aside networks of an "
                                               "architecture its classifier never saw"}
VERDICT_SHORT = {"recommended": "yes", "none_in_search": "none in the search",
                 "setaside_below_target": "below target on set-aside",
                 "setaside_not_beyond_controls": "not beyond controls on set-aside",
                 "setaside_does_not_transfer": "does not transfer"}
"""The verdicts in a table cell."""
CONTROL_NOUNS = {"behaviour": "behavioural control", "hyperparameters": "hyperparameter control"}
CONTROL_ALONE = {"behaviour": "from the whole learning curve alone",
                 "hyperparameters": "from the hyperparameters alone"}
CONTROL_SOURCES = {"behaviour": "the learning curve", "hyperparameters": "the hyperparameters"}
GAIN_WORDS = {"animal": "animal", "area": "area (layer group)", "unit": "unit"}
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


# ---------------------------------------------------------------------------------------------- the blocks
@dataclass(frozen=True)
class Heading:
    """A section heading (level 1 is the title)."""

    text: str
    level: int = 2


@dataclass(frozen=True)
class Para:
    """A paragraph; ``lead`` marks the recommendation, set in bold."""

    text: str
    lead: bool = False


@dataclass(frozen=True)
class Table:
    """A table of strings."""

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Bullets:
    """A bullet list."""

    items: tuple[str, ...]


@dataclass(frozen=True)
class Code:
    """A shell command."""

    text: str


@dataclass(frozen=True)
class FigureRef:
    """A figure of :mod:`advisor.application.figures`, numbered; ``missing`` says why it cannot be drawn (None: it
    can)."""

    key: str
    number: int
    title: str
    caption: str
    missing: str | None


@dataclass(frozen=True)
class Formula:
    """An equation ``name = expression``, the expression in the cost model's own names (``n_sessions * (...)``),
    typeset by each renderer (:func:`math_text`).

    Attributes:
        name: the left-hand side.
        expression: ``+``, ``-``, ``*``, ``/``, parentheses, numbers and names.
        legend: (name, what it stands for) of each name, in order.
        example: the protocol's numbers filled in, or empty.
    """

    name: str
    expression: str
    legend: tuple[tuple[str, str], ...]
    example: str = ""

    def legend_text(self, symbol: Callable[[str], str], escape: Callable[[str], str] = html.escape) -> str:
        """``where n_sessions is the number of sessions, ...`` with each name set by ``symbol``."""
        return "where " + _and(f"{symbol(name)} {escape(words)}" for name, words in self.legend) + "."


Block = Heading | Para | Table | Bullets | Code | Formula | FigureRef

COST_SYMBOLS = {"n_sessions": ("n", "sessions"), "n_units": ("n", "units"), "repeats": ("r", ""),
                "session_overhead": ("c", "session"), "per_unit_cost": ("c", "unit"),
                "per_unit_repeat_cost": ("c", "repeat")}
"""A name of the cost formula → (italic symbol, subscript): ``n_sessions`` is set as an italic n, subscript sessions."""


def markup_symbol(name: str) -> str:
    """A formula name as HTML (and reportlab Paragraph) markup: an italic letter and a subscript. A name not in
    :data:`COST_SYMBOLS` keeps its first word as the symbol and the others as the subscript."""
    head, _, rest = name.partition("_")
    base, sub = COST_SYMBOLS.get(name, (head, rest.replace("_", " ")))
    return f"<i>{html.escape(base)}</i>" + (f"<sub>{html.escape(sub)}</sub>" if sub else "")


def plain_symbol(name: str) -> str:
    """A formula name as it is (Markdown code)."""
    return name


MATH_OPERATORS = {"*": " × ", "/": " / ", "+": " + ", "-": " − "}


def math_text(expression: str, symbol: Callable[[str], str]) -> str:
    """``n_sessions * (session_overhead + ...)`` → ``n_sessions × (session_overhead + ...)`` with every name set by
    ``symbol`` (:func:`markup_symbol` for typeset math, :func:`plain_symbol` for text)."""
    out = []
    for token in re.findall(r"[A-Za-z_]\w*|\d+(?:\.\d+)?|\S", expression):
        if token[0].isalpha() or token[0] == "_":
            out.append(symbol(token))
        else:
            out.append(MATH_OPERATORS.get(token, token))
    return "".join(out)


# ----------------------------------------------------------------------------------------------- wording
def _num(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _ci(entry: Mapping[str, Any] | None) -> str:
    ci = (entry or {}).get("ci")
    return "n/a" if not ci or None in ci else f"{ci[0]:.2f}-{ci[1]:.2f}"


def _acc(entry: Mapping[str, Any] | None) -> str:
    """``0.81 (95% CI 0.74-0.87)``."""
    return f"{_num((entry or {}).get('accuracy'))} (95% CI {_ci(entry)})"


def _plain(entry: Mapping[str, Any] | None) -> str:
    """``0.96, 95% CI 0.93-0.98``: for inside parentheses."""
    return f"{_num((entry or {}).get('accuracy'))}, 95% CI {_ci(entry)}"


def _brief(entry: Mapping[str, Any] | None) -> str:
    """``0.52 (0.45-0.60)``: an accuracy and its 95% CI, where the CI is already named."""
    return "n/a" if not entry else f"{_num(entry.get('accuracy'))} ({_ci(entry)})"


def _cost(cost: float | None, unit: str | None) -> str:
    if cost is None:
        return "n/a"
    digits = 0 if abs(cost) >= 100 else 1 if abs(cost) >= 1 else 2
    value = f"{cost:,.{digits}f}"
    return f"{value} {unit}" if unit else value


def _per_animal(cost: float | None, unit: str | None) -> str:
    text = _cost(cost, unit)
    return text if text == "n/a" else f"{text} per animal"


def cost_words(p: Mapping[str, Any], unit: str | None) -> str:
    """A protocol's cost: ``22.2 hours per animal``, or for a plan over several animals ``312 hours for 4 animals
    (78.0 hours each, surgery and training included)``."""
    k = int(p.get("n_animals") or 1)
    if p.get("animal_cost") is None and k == 1:
        return _per_animal(p.get("cost"), unit)
    cost = p.get("cost")
    each = p.get("animal_cost") if p.get("animal_cost") is not None else (cost / k if cost is not None else None)
    return (f"{_cost(cost, unit)} for {k} animal{'s' if k != 1 else ''} ({_cost(each, unit)} each, surgery and "
            "training included)")


def _and(items: Iterable[Any]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    words = [str(i) for i in items]
    return " and ".join(filter(None, [", ".join(words[:-1]), *words[-1:]]))


def _count(n: int) -> str:
    return NUMBER_WORDS[n] if 0 <= n < len(NUMBER_WORDS) else str(n)


def _sessions(p: Mapping[str, Any]) -> str:
    """``2 sessions, one before training starts and one at the end of learning`` (see
    :func:`advisor.application.search.sessions_phrase`)."""
    n = p.get("n_sessions")
    return "n/a sessions" if n is None else sessions_phrase(int(n), p.get("window") or (0.0, 1.0))


def _placement(p: Mapping[str, Any]) -> str:
    """Where the sessions sit, without their number: ``one before training starts and one at the end of
    learning``."""
    text, n = _sessions(p), p.get("n_sessions")
    head = f"{n} session{'s' if n != 1 else ''}"
    return text[len(head):].lstrip(", ") if text.startswith(head) else text


def _noise(p: Mapping[str, Any]) -> str:
    model, level, repeats = p.get("noise_model", "gaussian"), p.get("noise"), p.get("repeats") or 1
    extra = f" ({repeats} repeats)" if repeats > 1 else ""
    if model == "none" or level is None:
        return "without measurement noise"
    if model == "poisson":
        return f"with ≥ {level:g} spikes per stimulus{extra}"
    return f"with noise ≤ {level:.2f}{extra}" if level > 0 else f"without measurement noise{extra}"


def protocol_phrase(p: Mapping[str, Any], *, everything: bool = False, more_allowed: bool = False) -> str:
    """``150 units of activations in the deep layers at 2 sessions, one before training starts and one at the end
    of learning, with noise ≤ 0.35 (3 repeats)``: a recording protocol in words.

    Args:
        p: a protocol entry of a document.
        everything: the protocol records every unit the simulation recorded in its layer groups: ``all 384 units
            of activations the simulation recorded in the early and deep layers``.
        more_allowed: with ``everything``, the question allowed more units: ``... (more were allowed)``.
    """
    unit, observable = OBSERVABLE_WORDS.get(p.get("observable", ""), ("units", str(p.get("observable"))))
    where = f"the {_and(p['layers'])} layers" if p.get("layers") else "all layers"
    if everything:
        what = (f"all {p.get('n_units')} {unit} of {observable} the simulation recorded in {where}"
                + (" (more were allowed)" if more_allowed else ""))
    else:
        what = f"{p.get('n_units')} {unit} of {observable} in {where}"
    text = f"{what} at {_sessions(p)}, {_noise(p)}"
    k = int(p.get("n_animals") or 1)
    return (f"{k} animals × " if k > 1 else "") + text + ("" if p.get("chronic", True) else ", new units each session")


def recorded_units(doc: Doc, p: Mapping[str, Any]) -> int | None:
    """The units the simulation recorded in ``p``'s layer groups, from ``doc["bank"]["units_per_group"]``
    (observable → units per group, as ``planning.bank_document`` writes it; or group → units, or one number for
    every group); None when the document does not say."""
    per = (doc.get("bank") or {}).get("units_per_group")
    if isinstance(per, Mapping) and p.get("observable") in per:  # per observable (advisor's bank_document)
        per = per[p["observable"]]
    if per is None:
        return None
    groups = p.get("layers") or (list(per) if isinstance(per, Mapping) else [])
    if isinstance(per, Mapping):
        counts = [per.get(g) for g in groups]
        return None if not counts or None in counts else sum(int(c) for c in counts if c is not None)
    return int(per) * len(groups) if groups else None


def _record(doc: Doc, p: Mapping[str, Any], entry: Mapping[str, Any] | None = None) -> str:
    """What to record: ``≥ 150 units of activations in ...``, or, when ``p`` records every unit the simulation
    recorded in its groups, ``all 384 units of activations the simulation recorded in ... (more were allowed)``
    (a bigger count was never simulated, so "≥" would promise what was not tested)."""
    n, recorded = p.get("n_units"), recorded_units(doc, p)
    k = int(p.get("n_animals") or 1)
    if k > 1:
        return f"{k} animals × " + _record(doc, {**p, "n_animals": 1}, entry)
    if n is None or recorded is None or int(n) < recorded:
        return f"≥ {protocol_phrase(p)}"
    limits = [v for v in ((doc.get("question") or {}).get("max_units"),
                          ((entry or {}).get("modality") or {}).get("max_units")) if v is not None]
    return protocol_phrase(p, everything=True, more_allowed=bool(limits) and min(limits) > int(n))


def _rule(label: str, family: bool) -> str:
    """A rule (or family) in words, :data:`~advisor.application.figures.RULE_WORDS`; an unknown one as it is."""
    return (FAMILY_WORDS.get(label) or RULE_WORDS.get(label, label)) if family else rule_words(label)


def rule_list(labels: Iterable[str], family: bool = False) -> str:
    """``SGD with momentum (backprop), Adam (backprop), feedback alignment, information alignment``."""
    return ", ".join(_rule(str(label), family) for label in labels)


def _candidates(doc: Doc) -> str:
    family = target_word(doc) != "rule"
    word = "learning-rule family" if family else "learning rule"
    labels = None if family else doc.get("question", {}).get("rules")
    labels = labels or doc.get("labels") or doc.get("bank", {}).get("rules") or []
    return f"the {word} (one of {rule_list(labels, family)})"


def _bounds(doc: Doc) -> str:
    q = doc.get("question", {})
    parts = [f"{q['observable']} only" if q.get("observable") else "",
             f"≤ {q['max_units']} units" if q.get("max_units") else "",
             f"≤ {q['max_sessions']} sessions" if q.get("max_sessions") else "",
             f"modality {q['modality']}" if q.get("modality") else ""]
    return ", ".join(p for p in parts if p) or "no bounds"


def _target(doc: Doc) -> str:
    return _num(doc.get("question", {}).get("target_accuracy"))


def _target_value(doc: Doc) -> float | None:
    value = doc.get("question", {}).get("target_accuracy")
    return None if value is None else float(value)


def _chance(doc: Doc) -> str:
    return _num(chance_of(doc))


def _headline(p: Mapping[str, Any], doc: Doc) -> str:
    """The search estimate of an entry without a set-aside test (documents from before the set-aside networks)."""
    return f"{_num(p.get('accuracy'))} accuracy (95% CI {_ci(p)}; chance {_chance(doc)})"


def _unseen(final: Mapping[str, Any]) -> str:
    """``0.81 accuracy (95% CI 0.74-0.87) on 64 networks the search never saw``."""
    return f"{_num(final.get('accuracy'))} accuracy (95% CI {_ci(final)}) on {final.get('n_networks')} networks the " \
           "search never saw"


def verdict_of(entry: Mapping[str, Any]) -> str:
    """A plan's (or compare entry's) ``verdict``: one of :data:`VERDICTS`; documents from before the verdicts get
    ``recommended`` or ``none_in_search``."""
    verdict = entry.get("verdict")
    if verdict in VERDICTS:
        return str(verdict)
    return "recommended" if recommended(entry) is not None else "none_in_search"


def _control_noun(name: str) -> str:
    return CONTROL_NOUNS.get(name, f"{name} control")


def recommendation_sentence(doc: Doc) -> str:
    """The recommendation in one sentence (the CLI prints it; every report leads with it).

    Args:
        doc: a plan or compare result document.

    Returns:
        For a plan, by its ``verdict``: ``recommended``: "Record ≥ 150 units of activations in the deep layers at
        2 sessions, one before training starts and one at the end of learning, with noise ≤ 0.35 (3 repeats): the
        learning rule (one of sgdm, adam, fa, ia) is identified with 0.81 accuracy (95% CI 0.74-0.87) on 64
        networks the search never saw; chance 0.25; the strongest control, behaviour, reaches 0.52 (0.45-0.60)."
        ``setaside_below_target``: "The protocol chosen on the search networks to identify ..., ..., reaches 0.70
        (95% CI 0.58-0.80) on 64 set-aside networks, below the target 0.75 for the lower 95% CI bound ...".
        ``setaside_not_beyond_controls``: "... but does not clear the behavioural control, which reaches ...".
        ``setaside_does_not_transfer`` (``--robust``): "... but only ... leaving one architecture out ...".
        ``none_in_search``: "No protocol within the bounds (...) identifies ... with accuracy ≥ 0.75 at the lower
        95% CI bound beyond the controls; the most accurate found, ..., reaches ... in the search ...".
        For a compare, the cheapest sufficient modality (or the most accurate one on the set-aside networks when
        none suffices).
    """
    _check_kind(doc)
    if doc["kind"] == "compare":
        return _compare_sentence(doc)
    budget = budget_sentence(doc)
    return _plan_sentence(doc) + (f" {budget}" if budget else "")


def budget_sentence(doc: Mapping[str, Any]) -> str:
    """What a plan's (or a compare entry's) budget (``--budget-hours``) bought, or what reaching the target would
    take; "" without one."""
    budget = doc.get("budget")
    if not budget:
        return ""
    unit = (doc.get("modality") or {}).get("cost_unit") or "hours"
    hours = _cost(budget.get("hours"), unit)
    if budget.get("mode") == "most_accurate":
        chosen, step = budget.get("chosen"), budget.get("next_step")
        if chosen is None:
            return f"No protocol the search tried costs {hours} or less."
        head = (f"Within the budget of {hours} ({budget.get('n_within')} of the protocols searched), the most "
                f"accurate is the one above, for {_cost(chosen.get('cost'), unit)} in all.")
        if step is None:
            return head + " No protocol the search tried above the budget is more accurate."
        return (f"{head} One step up, {_cost(step.get('cost'), unit)} would buy {_num(step.get('accuracy'))} "
                f"(95% CI {_ci(step)}) in the search: {step.get('description')}.")
    if doc.get("recommendation"):
        return f"It fits the budget of {hours}."
    take = budget.get("would_take")
    if take is None:
        return (f"Within the budget of {hours} no protocol reaches the target beyond the controls, and none the "
                "search tried does at any cost.")
    return (f"The target is not reached within the budget of {hours}; the cheapest protocol that reaches it in the "
            f"search costs {_cost(take.get('cost'), unit)}: {take.get('description')} (search estimate "
            f"{_num(take.get('accuracy'))}, 95% CI {_ci(take)}).")


def _rank(entry: Mapping[str, Any]) -> float:
    """What a compare entry is ranked by when none suffices: its set-aside accuracy, else its search estimate."""
    final = setaside_of(entry) or protocol_of(entry)[0] or {}
    return float(final.get("accuracy") or 0.0)


def _compare_sentence(doc: Doc) -> str:
    target, what = _target(doc), _candidates(doc)
    modalities = doc.get("modalities") or []
    sufficient = sorted(((m, p) for m in modalities if (p := recommended(m)) is not None),
                        key=lambda mp: mp[1].get("cost") or 0.0)
    if sufficient:
        (m, p), others = sufficient[0], sufficient[1:]
        also = _and(f"{o['name']} ({_per_animal(q.get('cost'), q.get('cost_unit') or o.get('cost_unit'))})"
                    for o, q in others)
        final = setaside_of(m)
        cost = cost_words(p, p.get("cost_unit") or m.get("cost_unit"))
        if final is None:
            return (f"The cheapest modality that identifies {what} with accuracy ≥ {target} at the lower 95% CI "
                    f"bound is {m['name']}: record {_record(doc, p, m)}, for {cost} and {_headline(p, doc)}."
                    + (f" Also sufficient, at higher cost: {also}." if others else ""))
        return (f"The cheapest modality that identifies {what} with accuracy ≥ {target} at the lower 95% CI bound, "
                f"beyond the controls, on networks the search never saw is {m['name']}: record "
                f"{_record(doc, p, m)}, for {cost}, and it is identified with {_unseen(final)}; chance "
                f"{_num(chance_of(m) or chance_of(doc))}."
                + (f" Also sufficient, at higher cost: {also}." if others else ""))
    names = _and(m["name"] for m in modalities)
    reached = [(m, p) for m in modalities if (p := protocol_of(m)[0]) is not None]
    if not reached:
        return f"None of the modalities compared ({names}) identifies {what} with accuracy ≥ {target}."
    m, p = max(reached, key=lambda mp: _rank(mp[0]))
    final = setaside_of(m)
    if final is None:
        return (f"None of the modalities compared ({names}) identifies {what} with accuracy ≥ {target} at the "
                f"lower 95% CI bound; the most accurate is {m['name']}, with {_headline(p, doc)} when recording "
                f"{protocol_phrase(p)}.")
    return (f"None of the modalities compared ({names}) identifies {what} with accuracy ≥ {target} at the lower 95% "
            f"CI bound beyond the controls on networks the search never saw; the most accurate there is "
            f"{m['name']}, with {_unseen(final)} when recording {protocol_phrase(p)}, but "
            f"{VERDICT_WORDS[verdict_of(m)]}; chance {_num(chance_of(m) or chance_of(doc))}.")


def _plan_sentence(doc: Doc) -> str:
    target, what = _target(doc), _candidates(doc)
    chosen, final = recommended(doc), setaside_of(doc)
    if final is None:  # a document from before the set-aside networks: its search estimate
        if chosen is not None:
            return f"Record {_record(doc, chosen)}: {what} is identified with {_headline(chosen, doc)}."
        best = doc.get("best")
        head = (f"No protocol within the bounds ({_bounds(doc)}) identifies {what} with accuracy ≥ {target} at the "
                f"lower 95% CI bound")
        if best is None:
            return head + "; no protocol could be evaluated."
        return f"{head}; the best reachable is {_headline(best, doc)}, recording {protocol_phrase(best)}."
    verdict, top = verdict_of(doc), strongest_of(doc)
    n = final.get("n_networks")
    if verdict == "recommended" and chosen is not None:
        clause = f"; the strongest control, {top[0]}, reaches {_brief(top[1])}" if top else ""
        return (f"Record {_record(doc, chosen)}: {what} is identified with {_unseen(final)}; chance "
                f"{_chance(doc)}{clause}.")
    candidate = doc.get("candidate")
    if verdict in ("setaside_below_target", "setaside_not_beyond_controls") and candidate:
        head = (f"The protocol chosen on the search networks to identify {what}, {protocol_phrase(candidate)}, "
                f"reaches {_acc(final)} on {n} set-aside networks")
        if verdict == "setaside_below_target":
            return (f"{head}, below the target {target} for the lower 95% CI bound (search estimate "
                    f"{_num(candidate.get('accuracy'))}, 95% CI {_ci(candidate)}; chance {_chance(doc)}): no "
                    "protocol is recommended.")
        name, strongest = top if top else ("strongest", None)
        alone = CONTROL_ALONE.get(name, "without the recording")
        return (f"{head} but does not clear the {_control_noun(name)}, which reaches {_acc(strongest)} {alone} "
                f"(chance {_chance(doc)}): no protocol is recommended.")
    held = doc.get("heldout_architecture")
    if verdict == "setaside_does_not_transfer" and candidate and held:
        return (f"The protocol chosen on the search networks to identify {what}, {protocol_phrase(candidate)}, "
                f"reaches {_acc(final)} on {n} set-aside networks of the simulated architectures, but only "
                f"{_acc(held)} leaving one architecture out (behavioural control {_brief(_held_control(held))}): "
                "the in-distribution answer does not transfer to an unseen architecture, so no robust protocol is "
                "recommended.")
    head = (f"No protocol within the bounds ({_bounds(doc)}) identifies {what} with accuracy ≥ {target} at the "
            "lower 95% CI bound beyond the controls")
    best = doc.get("best")
    if best is None:
        return head + "; no protocol could be evaluated."
    searched = strongest_of(doc, search=True)
    control = f", where the strongest control, {searched[0]}, reaches {_brief(searched[1])}," if searched else ""
    return (f"{head}; the most accurate found, {protocol_phrase(best)}, reaches {_acc(best)} in the search{control} "
            f"and {_acc(final)} on {n} set-aside networks; chance {_chance(doc)}.")


def _population(doc: Doc) -> str:
    b = doc.get("bank", {})
    return (f"We simulated {b.get('n_networks')} artificial neural networks (population preset "
            f"{b.get('preset')}, bank {b.get('hash')}) learning under {len(b.get('rules') or [])} candidate rules "
            f"({rule_list(b.get('rules') or [])}), with {_and(b.get('architectures') or [])} architectures on "
            f"{_and(b.get('tasks') or [])} tasks, {b.get('n_steps')} training steps each, recorded at "
            f"{b.get('n_checkpoints')} checkpoints over learning (initialization included); one network stands for "
            f"one animal, so costs are per animal and accuracy is the probability of naming the {_named(doc)} "
            "correctly from one animal's recording.")


def _named(doc: Doc) -> str:
    return "rule" if target_word(doc) == "rule" else "rule family"


def _cost_unit(doc: Doc) -> str | None:
    """The cost unit of every protocol in the document (``hours``), or None when none is named or they differ."""
    entries = [doc] if doc.get("kind") == "plan" else list(doc.get("modalities") or [])
    units = {str(u) for e in entries for u in ((protocol_of(e)[0] or {}).get("cost_unit"), e.get("cost_unit"),
                                               (e.get("modality") or {}).get("cost_unit")) if u}
    return units.pop() if len(units) == 1 else None


def _reading(doc: Doc) -> str:
    """Once, near the top: what one network, a cost and an accuracy are."""
    unit = _cost_unit(doc)
    cost = f"{unit} of recording per animal" if unit else "per animal, in each modality's own unit"
    chance = chance_of(doc)
    return (f"Reading the numbers: one simulated network stands for one animal. Costs are {cost}, and accuracy is "
            f"the probability of naming the {_named(doc)} correctly from one animal's recording"
            + (f" (chance: {chance:.2f})." if chance is not None else "."))


def _setaside_methods(doc: Doc, final: Mapping[str, Any] | None) -> str:
    share = doc.get("question", {}).get("setaside")
    if final is None and share is None:
        return ""
    counts = (f" ({final.get('n_networks')}; the search used the other {final.get('n_train')})"
              if final is not None else "")
    return (f" Before the search, {_share(share)} of the question's networks{counts}, drawn within every "
            "combination of rule, architecture, task and curriculum, were set aside and used only once, to test the "
            "protocol the search chose.")


def _share(share: Any) -> str:
    return "share" if share is None else f"{float(share):.0%}"


_MARGINAL_WORDS = ("21 statistics of the recorded values (raw, absolute and squared values, each summarised by "
                   "mean, median, third quartile, variance, L2 norm, Pearson's second skewness coefficient and "
                   "kurtosis)")
_POPULATION_WORDS = ("statistics of the recorded population that no unknown gain or offset changes (the "
                     "participation ratio of the units' correlations across stimuli, the mean and spread of "
                     "pairwise correlations, lifetime and population sparseness, the representational similarity "
                     "to the first and the previous session, tuning stability and the change of response spread "
                     "since the first session; weights, which have no stimuli, the 21 statistics of their values)")
STATISTICS_METHODS = {
    "marginal": f" For every recorded layer group and session we computed {_MARGINAL_WORDS}.",
    "population": f" For every recorded layer group and session we computed {_POPULATION_WORDS}.",
    "both": f" For every recorded layer group and session we computed {_MARGINAL_WORDS}, and {_POPULATION_WORDS}.",
}
"""The methods paragraph's words for each ``--statistics`` set."""


def _analysis(doc: Doc) -> str:
    q = doc.get("question", {})
    splits = q.get("n_splits") or 10
    heldout = q.get("heldout", "none")
    classifier = CLASSIFIER_WORDS.get(q.get("classifier", ""), str(q.get("classifier")))
    text = STATISTICS_METHODS.get(q.get("statistics", "marginal"), STATISTICS_METHODS["marginal"])
    text += (" A " + classifier + f" identified each network's {target_word(doc)} from these statistics.")
    if q.get("robust"):
        text += (" The plan was robust: a protocol counted only if it also identified the rule leaving one "
                 "architecture out at a time (trained on the others), its lower 95% CI bound reaching the target "
                 "and clearing the behavioural control on the same splits, in the search and on the set-aside "
                 "networks.")
    if "setaside" not in doc and "setaside" not in q:  # a document from before the set-aside networks
        split_text = (f"{_count(splits)} {SPLIT_WORDS['none']}" if heldout == "none"
                      else SPLIT_WORDS.get(heldout, f"held-out {heldout} splits"))
        return text + (f" It was evaluated on {split_text}, so that no network was on both sides of a split; "
                       "accuracy is the mean over test splits, with a 95% confidence interval from a percentile "
                       "bootstrap over networks.")
    if heldout == "none":
        repeats = max(1, math.ceil(splits / FOLDS))
        split_text = (f"{_count(repeats)} repeat{'s' if repeats != 1 else ''} of stratified {FOLDS}-fold "
                      "cross-validation over the search networks")
    else:
        split_text = f"{SPLIT_WORDS.get(heldout, f'held-out {heldout} splits')} over the search networks"
    return text + (
        f" During the search, each protocol was scored by {split_text}, so that no network was on both sides of a "
        "split: the accuracy is the pooled out-of-fold hit rate, with a 95% confidence interval from the "
        "Nadeau-Bengio corrected resampled t-interval, widened to at least the Wilson interval over the distinct "
        "networks. The chosen protocol was then fit once on all search networks and tested once on the set-aside "
        "networks; that 95% interval adds in quadrature the Wilson interval over the test networks and the "
        "training-set variance from 20 refits on bootstrap resamples of the training networks.")


_CONTROLS_TEXT = (
    " Two controls measure what an experimenter gets without recording a unit: behaviour, "
    f"{DESCRIPTIONS['behaviour']}, and {DESCRIPTIONS['hyperparameters']}; each was scored by the better of "
    f"{CLASSIFIER_WORDS[LINEAR]} and a {CLASSIFIER_WORDS[NONLINEAR]}, on the same splits as the protocol. A protocol "
    "counted as feasible only if its lower 95% CI bound reached the target and exceeded the upper bound of the "
    "strongest control (the one with the highest upper bound).")


def _controls_methods(doc: Doc) -> str:
    controls = controls_of(doc)
    if not controls:
        return ""
    if "controls" not in doc:  # a document from before the two controls: one learning-curve control
        return (" The task-performance control, the same classifier given only the learning curve (training loss "
                f"and accuracy at the same sessions), reached {_acc(controls['behaviour'])}.")
    text = _CONTROLS_TEXT
    measured = _and(f"{name} {_num(c.get('accuracy'))} (95% CI {_ci(c)}, {c.get('classifier')})"
                    for name, c in controls.items())
    return text + f" On the set-aside networks, the controls reached {measured}."


def _gains(modality: Mapping[str, Any] | None) -> str | None:
    """``lognormal, log SD 0.5 per animal, 0.3 per area (layer group) and 0.5 per unit; baseline offset SD 0.1 ×
    spread``, or None when the document does not say (older documents)."""
    m = modality or {}
    gains = m.get("gains")
    if isinstance(gains, Mapping):
        sd = [gains.get(level) for level in GAIN_LEVELS]
        baseline = gains.get("baseline")
    elif m.get("gain_sd"):
        sd, baseline = list(m["gain_sd"]), m.get("baseline")
    else:
        return None
    if len(sd) != len(GAIN_LEVELS) or any(v is None for v in sd):
        return None
    levels = _and(f"{float(v or 0.0):g} per {GAIN_WORDS[level]}" for level, v in zip(GAIN_LEVELS, sd, strict=True))
    if not baseline:
        base = "no baseline"
    elif m.get("noise_model") == "poisson":
        base = f"spontaneous rate {float(baseline):g} × the mean evoked rate"
    else:
        base = f"baseline offset SD {float(baseline):g} × the spread"
    return f"lognormal, log SD {levels}; {base}"


def _gain_assumptions(modality: Mapping[str, Any] | None) -> str:
    notes = {k.removeprefix("gains."): v for k, v in ((modality or {}).get("assumptions") or {}).items()
             if k.startswith("gains.")}
    return " ".join(f"{level.capitalize()}: {note}" for level, note in notes.items())


def _search(doc: Doc, scope: str, subject: str = "The protocol was chosen by an Optuna search") -> str:
    q = doc.get("question", {})
    entries = [doc, *(doc.get("modalities") or [])]
    controls = " and above the strongest control's upper bound" if any("controls" in e for e in entries) else ""
    return (f" {subject} (TPE sampler, {q.get('trials')} trials, seed "
            f"{q.get('seed')}) over {scope}, minimising the recording cost per animal subject to the lower 95% CI "
            f"bound being at least the target accuracy {_target(doc)}{controls}.")


def methods_paragraph(doc: Doc) -> str:
    """A methods paragraph with every number (population, set-aside networks, protocol, statistics, classifier,
    cross-validation, CI methods, search, controls, gains) and the citation of the paper, ready to paste into a
    proposal.

    Args:
        doc: a plan or compare result document.
    """
    _check_kind(doc)
    text = _population(doc)
    if doc["kind"] == "compare":
        names = _and(m["name"] for m in doc.get("modalities") or [])
        first = next((s for m in doc.get("modalities") or [] if (s := setaside_of(m)) is not None), None)
        text += _setaside_methods(doc, first) + _analysis(doc) + _search(
            doc, "the protocols that modality allows, under its own cost model and limits",
            f"Each modality's protocol ({names}) was chosen by its own Optuna search")
        if any(m.get("controls") for m in doc.get("modalities") or []):
            text += _CONTROLS_TEXT
        for m in doc.get("modalities") or []:
            p, feasible = protocol_of(m)
            if p is not None:
                final = setaside_of(m)
                which = ("recommended" if feasible else "chosen" if m.get("candidate") else "most accurate") \
                    if final is not None else ("cheapest sufficient" if feasible else "most accurate")
                where = f", set-aside {_acc(final)}, search {_acc(p)}" if final is not None else f", {_acc(p)}"
                top = strongest_of(m)
                if top is not None:
                    where += f", strongest control {top[0]} {_acc(top[1])}"
                gains = _gains(m.get("modality"))
                text += (f" Modality {m['name']}: {which} protocol {protocol_phrase(p)}{where}, cost "
                         f"{cost_words(p, m.get('cost_unit'))}"
                         + (f"; unknown gains {gains}" if gains else "") + ".")
            else:
                text += f" Modality {m['name']}: {m.get('reason') or 'no protocol evaluated'}."
        return text + f" The approach follows {CITATION}."
    protocol, feasible = protocol_of(doc)
    final = setaside_of(doc)
    text += _setaside_methods(doc, final)
    if protocol is not None:
        which = "recommended" if feasible else "chosen" if doc.get("candidate") else "most accurate"
        text += f" Virtual recordings followed the {which} protocol: {protocol_phrase(protocol)}."
    gains = _gains(doc.get("modality"))
    if gains:
        text += (" Every recorded value was scaled by unknown gains, as on a rig that does not know absolute gains: "
                 f"{gains}.")
    text += _analysis(doc)
    if protocol is not None and final is not None:
        text += (f" In the search it reached {_acc(protocol)}; on the {final.get('n_networks')} set-aside networks, "
                 f"{_num(final.get('accuracy'))} (95% CI {_ci(final)}; balanced accuracy "
                 f"{_num(final.get('balanced_accuracy'))}; chance {_chance(doc)}).")
    elif protocol is not None:
        text += (f" It reached {_num(protocol.get('accuracy'))} accuracy (95% CI {_ci(protocol)}; balanced "
                 f"accuracy {_num(protocol.get('balanced_accuracy'))}; chance {_chance(doc)}).")
    text += _controls_methods(doc)
    held = doc.get("heldout_architecture")
    if held:
        text += (f" {_heldout_scheme(held)}, it reached {_acc(held)} against {_brief(_held_control(held))} for "
                 "the behavioural control.")
    text += _search(doc, f"recording protocols ({_bounds(doc)})")
    v = doc.get("verification")
    if v:
        text += (f" An independent re-check with fresh seeds ({', '.join(map(str, v.get('seeds') or []))}) on the "
                 f"search networks gave {_acc(v)}.")
    return text + f" The approach follows {CITATION}."


# ------------------------------------------------------------------------------------------- the sections
def _question(doc: Doc) -> list[Block]:
    q = doc.get("question", {})
    modality = doc.get("modality") or {}
    modalities = ", ".join(q.get("modalities") or []) or str(q.get("modality") or modality.get("key") or "generic")
    limits = [f"observable {q.get('observable') or 'any'}", f"modality {modalities}",
              f"≤ {q['max_units']} units per animal" if q.get("max_units") else "",
              f"≤ {q['max_sessions']} sessions" if q.get("max_sessions") else "",
              f"classifier {q.get('classifier')}", f"held out {q.get('heldout', 'none')}",
              f"{_share(q['setaside'])} of the networks set aside" if q.get("setaside") is not None else "",
              f"{q.get('trials')} search trials", f"seed {q.get('seed')}"]
    ask = "which modality, and which recording protocol," if doc["kind"] == "compare" else "which recording protocol"
    return [Heading(doc.get("title") or "lr-advisor report", 1),
            Para(f"Question: {ask} identifies {_candidates(doc)} with accuracy ≥ {_target(doc)} (lower bound of the "
                 f"95% CI) at the lowest recording cost? Limits: {'; '.join(x for x in limits if x)}."),
            *([Para(pilot_sentence(q["pilot"]))] if q.get("pilot") else []),
            Para(_reading(doc)), Heading("Recommendation"), Para(recommendation_sentence(doc), lead=True)]


def pilot_sentence(pilot: Mapping[str, Any]) -> str:
    """Which of a plan's numbers came from a pilot recording (``advisor plan --pilot``)."""
    noise_old, noise_new = pilot["replaced"]["single_trial_noise"]
    gain_old, gain_new = pilot["replaced"]["unit_gain_sd"]
    what = ("the mean spike count per stimulus of one presentation" if pilot.get("noise_model") == "poisson"
            else "the noise of one presentation relative to each unit's signal spread")
    return (f"From the pilot recording {pilot['source']} ({pilot['n_units']} units, {pilot['n_presentations']} "
            f"presentations of each stimulus): {what}, {noise_new:g} (the modality's default: {noise_old:g}), and "
            f"the SD of the log unit gain, {gain_new:g} (default {gain_old:g}). Every other number is the "
            "modality's.")


def _short(p: Mapping[str, Any]) -> str:
    unit = OBSERVABLE_WORDS.get(p.get("observable", ""), ("units",))[0]
    start, end = p.get("window") or (0.0, 1.0)
    window = "" if start <= 0 and end >= 1 else f" ({start:.0%}-{end:.0%} of learning)"
    repeats = p.get("repeats") or 1
    noise = (f"{p.get('noise'):g} spikes/stimulus" if p.get("noise_model") == "poisson" and p.get("noise") is not None
             else f"noise {_num(p.get('noise'))}")
    animals = int(p.get("n_animals") or 1)
    return ((f"{animals} animals × " if animals > 1 else "")
            + f"{p.get('observable')}, {p.get('n_units')} {unit}, {'+'.join(p.get('layers') or [])}, "
            f"{p.get('n_sessions')} sessions{window}, {noise}" + (f" x{repeats}" if repeats > 1 else ""))


PROTOCOL_INTROS = {
    "recommended": "The recommended protocol, the cheapest one whose lower 95% CI bound meets the target beyond the "
                   "controls in the search, on re-check and on the set-aside networks:",
    "setaside_below_target": "The protocol the search chose (the cheapest that met the target in the search and on "
                             "re-check); it falls below the target on the set-aside networks, so it is not "
                             "recommended:",
    "setaside_not_beyond_controls": "The protocol the search chose (the cheapest that met the target in the search "
                                    "and on re-check); on the set-aside networks it does not clear the controls, so "
                                    "it is not recommended:",
    "none_in_search": "No protocol met the target beyond the controls in the search; the most accurate one found:",
}


def _protocol(doc: Doc) -> list[Block]:
    protocol, feasible = protocol_of(doc)
    blocks: list[Block] = [Heading("Protocol")]
    if protocol is None:
        return [*blocks, Para("No protocol was evaluated.")]
    p, modality = protocol, doc.get("modality") or {}
    unit = OBSERVABLE_WORDS.get(p.get("observable", ""), ("units",))[0]
    noise_model = p.get("noise_model", "gaussian")
    noise_words = {"gaussian": f"Gaussian, SD {_num(p.get('noise'))} × the observable's spread",
                   "poisson": f"Poisson spike counts, {p.get('noise')} spikes per stimulus on average"}
    noise = noise_words.get(noise_model, "none")
    cost_unit = p.get("cost_unit") or modality.get("cost_unit")
    rows = [("observable", str(p.get("observable"))), (f"{unit} per animal", str(p.get("n_units"))),
            ("layer groups", ", ".join(p.get("layers") or [])), ("sessions", str(p.get("n_sessions"))),
            ("placement", _placement(p)),
            ("sampling", "chronic: the same units every session" if p.get("chronic", True)
             else "acute: new units each session"),
            ("measurement noise", noise), ("repeats averaged per stimulus", str(p.get("repeats") or 1))]
    gains = _gains(modality)
    if gains:
        rows.append(("unknown gains", gains))
    if int(p.get("n_animals") or 1) > 1 or p.get("animal_cost") is not None:
        rows.insert(0, ("animals", f"{int(p.get('n_animals') or 1)} (evidence pooled over them)"))
    rows += [("cost", cost_words(p, cost_unit)), ("search trial", str(p.get("trial")))]
    verdict = verdict_of(doc)
    intro = PROTOCOL_INTROS[verdict] if setaside_of(doc) is not None else (
        "The recommended protocol, the cheapest one that meets the target:" if feasible else
        "No protocol meets the target; the most accurate one found:")
    name = modality.get("name") or doc.get("question", {}).get("modality") or "generic"
    formula = _cost_formula(p, modality, cost_unit)
    key = f" (modality {modality['key']})" if modality.get("key") else ""
    text = (f"Cost: {cost_words(p, cost_unit)} of recording, from the cost model of "
            f"{name}{key}" + (":" if formula else "."))
    after = ("Unknown gains: gains per animal, area and unit that the classifier never sees (see Caveats)."
             if gains else "")
    if not formula and after:
        text, after = f"{text} {after}", ""
    return [*blocks, Para(intro), Table(("property", "value"), tuple(rows)), Para(text),
            *([formula] if formula else []), *([Para(after)] if after else [])]


def _unit(unit: str | None, value: float) -> str:
    """``hours`` → ``hour`` for 1; no unit → ``cost units``."""
    if not unit:
        return "cost unit" if value == 1 else "cost units"
    return unit[:-1] if value == 1 and unit.endswith("s") else unit


def _cost_formula(p: Mapping[str, Any], modality: Mapping[str, Any], unit: str | None) -> Formula | None:
    """The modality's cost formula as an equation, its constants and, for the built-in formula, the protocol's
    numbers filled in; None when the document has no formula."""
    expression = modality.get("cost_formula")
    if not expression:
        return None
    constants = {"session_overhead": "per session (set-up: surgery, positioning, finding the cells)",
                 "per_unit_cost": "per unit and session", "per_unit_repeat_cost": "per unit, session and repeat"}
    words = {"n_sessions": "is the number of sessions", "n_units": "the units recorded per animal",
             "repeats": "the repeats averaged per stimulus"}
    names = list(dict.fromkeys(re.findall(r"[A-Za-z_]\w*", str(expression))))
    legend = []
    for name in names:
        if name in constants and modality.get(name) is not None:
            value = float(modality[name])
            legend.append((name, f"= {value:g} {_unit(unit, value)} {constants[name]}"))
        elif name in words:
            legend.append((name, words[name]))
    values: dict[str, Any] = {"n_sessions": p.get("n_sessions"), "n_units": p.get("n_units"),
                              "repeats": p.get("repeats") or 1, **{k: modality.get(k) for k in constants}}
    example = ""
    if expression == COST_FORMULA and None not in values.values() and p.get("cost") is not None:
        v = {k: float(x) for k, x in values.items()}
        total = v["n_sessions"] * (v["session_overhead"] + v["n_units"] * (v["per_unit_cost"] + v["repeats"]
                                                                           * v["per_unit_repeat_cost"]))
        if math.isclose(total, float(p["cost"]), rel_tol=0.01, abs_tol=0.05):
            example = (f"For this protocol: {v['n_sessions']:g} × ({v['session_overhead']:g} + {v['n_units']:g} × "
                       f"({v['per_unit_cost']:g} + {v['repeats']:g} × {v['per_unit_repeat_cost']:g})) = "
                       f"{cost_words(p, unit)}.")
    return Formula("cost", str(expression), tuple(legend), example)


def _difference(search: Mapping[str, Any], final: Mapping[str, Any]) -> str:
    """Why the set-aside accuracy differs from the search estimate."""
    a, b = search.get("accuracy"), final.get("accuracy")
    ci = ci_of(final)
    if a is None or b is None:
        return ""
    within = ci is not None and ci[0] <= a <= ci[1]
    tail = "; the search estimate lies within the set-aside interval, so the difference is within sampling error" \
        if within else ""
    if abs(b - a) < 0.005:
        text = "Here the set-aside accuracy equals the search estimate"
    elif b < a:
        text = (f"Here it is {a - b:.2f} lower than the search estimate, as expected when one protocol is picked "
                f"from many on the same networks that score it (the winner's curse){tail}")
    else:
        text = (f"Here it is {b - a:.2f} higher than the search estimate: the final classifier trains on all "
                f"{final.get('n_train')} search networks rather than three quarters of them, and "
                f"{final.get('n_networks')} test networks are a small sample{tail}")
    before = ci_of(search)
    if ci is not None and before is not None and ci[1] - ci[0] > before[1] - before[0]:
        text += (f". Its interval is wider than the search's because it rests on {final.get('n_networks')} test "
                 "networks, each tested once")
    return text + "."


def _accuracy(doc: Doc) -> list[Block]:
    protocol, feasible = protocol_of(doc)
    v, final = doc.get("verification"), setaside_of(doc)
    q = doc.get("question", {})
    rows: list[tuple[str, ...]]
    if final is None:  # a document from before the set-aside networks
        rows = [("accuracy on held-out networks", _num((protocol or {}).get("accuracy")), _ci(protocol)),
                ("balanced accuracy", _num((protocol or {}).get("balanced_accuracy")), "")]
    else:
        repeats = max(1, math.ceil((q.get("n_splits") or 10) / FOLDS))
        cv = f"{repeats} × {FOLDS}-fold cross-validation" if q.get("heldout", "none") == "none" else \
            SPLIT_WORDS.get(q.get("heldout", ""), "held-out splits")
        rests = "the number recommended on" if feasible else "the number the verdict rests on"
        rows = [(f"search estimate: {cv} on the {final.get('n_train')} search networks",
                 _num((protocol or {}).get("accuracy")), _ci(protocol))]
        if v:
            rows.append((f"re-check: fresh seeds {', '.join(map(str, v.get('seeds') or []))}, same search networks",
                         _num(v.get("accuracy")), _ci(v)))
        rows += [(f"set-aside test: one fit on the search networks, tested once on {final.get('n_networks')} "
                  f"networks the search never saw ({rests})", _num(final.get("accuracy")), _ci(final)),
                 ("set-aside balanced accuracy", _num(final.get("balanced_accuracy")), "")]
    rows += [("chance", _chance(doc), ""), ("target (lower 95% CI bound)", _target(doc), "")]
    paras: list[str] = []
    if final is not None and protocol is not None:
        role = "the recommendation rests on" if feasible else "the verdict rests on"
        paras.append(
            "Three estimates, from different networks. The search estimate is what the search optimised; as the "
            f"best of {q.get('trials')} trials on the same networks it is optimistic. The re-check repeats it with "
            "fresh seeds (new units, noise, splits and classifier seeds) on the same search networks. The set-aside "
            f"test uses {final.get('n_networks')} networks that no search trial saw, each tested once: it is the "
            f"number {role}. " + _difference(protocol, final))
    if v:
        verdict = ("meets the target: the search's choice holds up" if v.get("meets_target") else
                   "does not meet the target on re-check: part of its margin was luck of the search; prefer the "
                   "next protocol on the Pareto front")
        text = f"Re-checked independently with fresh seeds, the protocol reaches {_acc(v)} and {verdict}."
    else:
        text = "No independent re-check with fresh seeds was run."
    rejected = doc.get("rejected_by_recheck") or []
    if rejected:
        unit = (protocol or {}).get("cost_unit")
        text += (f" {_count(len(rejected)).capitalize()} cheaper protocol{'s' if len(rejected) > 1 else ''} met the "
                 "target in the search but not on re-check (the winner's curse of picking the cheapest of many): "
                 + "; ".join(f"trial {r['trial'].get('number')} ({_per_animal(r['trial'].get('cost'), unit)}), "
                             f"{_num(r['trial'].get('accuracy'))} in the search, {_acc(r['verification'])} on re-check"
                             for r in rejected) + ".")
    paras.append(text)
    return [Heading("Predicted accuracy"), Table(("measure", "accuracy", "95% CI"), tuple(rows)),
            *(Para(t) for t in paras)]


def _beats(entry: Mapping[str, Any] | None, control_high: float | None) -> bool | None:
    if not entry or not entry.get("ci") or entry["ci"][0] is None or control_high is None:
        return None
    return entry["ci"][0] > control_high


def _with(entry: Mapping[str, Any] | None, classifier: str | None = None) -> str:
    """``0.52 (0.40-0.64), logreg``: an accuracy, its CI and the classifier that produced it."""
    if not entry:
        return "n/a"
    clf = entry.get("classifier") or classifier
    return _brief(entry) + (f", {clf}" if clf else "")


def _held_control(held: Mapping[str, Any]) -> dict[str, Any]:
    return {"accuracy": held.get("control_accuracy"), "ci": held.get("control_ci")}


def _heldout_scheme(held: Mapping[str, Any]) -> str:
    """How the held-out-architecture score was measured, as the start of a sentence."""
    level = held.get("level", "architecture family")
    levels = _and(held.get("levels") or held.get("families") or [])
    where = (" (trained on the search networks of the other architectures, tested on the set-aside networks of "
             "the one left out)" if held.get("per_level") else ", over all the question's networks")
    return f"Leaving one {level} out at a time{f' ({levels})' if levels else ''}{where}"


def _heldout_text(doc: Doc, held: Mapping[str, Any]) -> str:
    """The held-out-architecture score in words; "it transfers to an unseen architecture" only when the document
    says ``transfers``."""
    control = _held_control(held)
    head = (f"{_heldout_scheme(held)}, it reaches {_acc(held)} against {_acc(control)} for the behavioural control"
            + (f" ({held['control_classifier']})" if held.get("control_classifier") else "") + ": ")
    if held.get("transfers"):
        return head + "it transfers to an unseen architecture (its lower bound reaches the target and clears the " \
                      "control)."
    reasons = []
    low, target = (ci_of(held) or (None, None))[0], doc.get("question", {}).get("target_accuracy")
    if low is not None and target is not None and low < target:
        reasons.append(f"its lower bound {low:.2f} is below the target {float(target):.2f}")
    high = (ci_of(control) or (None, control.get("accuracy")))[1]
    if low is not None and high is not None and low <= high:
        reasons.append(f"its lower bound does not clear the control's upper bound {high:.2f}")
    why = f" ({_and(reasons)})" if reasons else ""
    return (head + f"it is not shown to carry over to an unseen architecture{why}, so it may not hold for a brain "
            "whose architecture differs from the simulated ones.")


def _controls(doc: Doc) -> list[Block]:
    protocol, _ = protocol_of(doc)
    final, controls, searched = setaside_of(doc), controls_of(doc), controls_of(doc, search=True)
    held = doc.get("heldout_architecture")
    observable = (protocol or {}).get("observable", "the observable")
    classifier = str(doc.get("question", {}).get("classifier"))
    blocks: list[Block] = [Heading("Controls")]
    if final is None:  # a document from before the set-aside networks and the two controls
        old: list[tuple[str, ...]] = [(f"{observable} (this protocol)", _num((protocol or {}).get("accuracy")),
                                       _ci(protocol))]
        text = ["Identification is meaningful only where the observable beats the control: a classifier that sees "
                "only the learning curve measures how much of the \"identification\" is just learning speed."]
        if controls:
            control = controls["behaviour"]
            old.append(("task-performance control: learning curve only", _num(control.get("accuracy")),
                        _ci(control)))
            beats = _beats(protocol, (control.get("ci") or [None, control.get("accuracy")])[1])
            text.append({True: f"Here it does: {_acc(protocol)} against {_acc(control)} for the control.",
                         False: f"Here it does not: {_acc(protocol)} against {_acc(control)} for the control "
                                "overlap, so the identification may reflect only how fast the networks learn.",
                         None: "The comparison is undetermined (a number is missing)."}[beats])
        else:
            text.append("No task-performance control was computed, so it is unknown how much is learning speed "
                        "alone.")
        text.append(_heldout_text(doc, held) if held else "No held-out-architecture score was computed.")
        return [*blocks, Table(("classifier input", "accuracy", "95% CI"), tuple(old)), Para(" ".join(text))]
    rows = [(f"{observable}: this protocol", _with(final, classifier), _with(protocol, classifier))]
    for name in dict.fromkeys([*controls, *searched]):
        rows.append((CONTROL_LABELS.get(name, name), _with(controls.get(name)), _with(searched.get(name))))
    text = [f"A control is what an experimenter gets without recording a unit: behaviour is "
            f"{DESCRIPTIONS['behaviour']}, the other {DESCRIPTIONS['hyperparameters']}; each is the better of a "
            f"linear ({LINEAR}) and a nonlinear ({NONLINEAR}) classifier."]
    top_search = strongest_of(doc, search=True)
    if top_search:
        high = (ci_of(top_search[1]) or (None, top_search[1]["accuracy"]))[1]
        text.append(f"In the search, a protocol counted only if its lower 95% CI bound cleared the upper bound of "
                    f"the strongest control on the search networks, {top_search[0]} ({_num(high)}).")
    top = strongest_of(doc)
    if top:
        name, control = top
        high = (ci_of(control) or (None, control["accuracy"]))[1]
        low = (ci_of(final) or (None, None))[0]
        head = (f"On the set-aside networks the strongest control is {name}, {_acc(control)} with "
                f"{control.get('classifier')}; the protocol's set-aside lower bound {_num(low)}")
        clears = final.get("beyond_controls")
        if clears is None:
            clears = _beats(final, high)
        text.append(f"{head} clears its upper bound {_num(high)}: the {target_word(doc)} is identified from more "
                    "than behaviour and hyperparameters." if clears else
                    f"{head} does not clear its upper bound {_num(high)}: the identification may reflect no more "
                    f"than what {CONTROL_SOURCES.get(name, 'the control')} already tells.")
    else:
        text.append("No control was computed, so it is unknown how much is behaviour or hyperparameters alone.")
    out: list[Block] = [*blocks, Table(("classifier input", "set-aside networks (95% CI), classifier",
                                        "search networks (95% CI), classifier"), tuple(rows)), Para(" ".join(text))]
    if held:
        held_rows = ((f"{observable}: this protocol", classifier, _brief(held)),
                     (CONTROL_LABELS["behaviour"], str(held.get("control_classifier") or "n/a"),
                      _brief(_held_control(held))))
        out += [Heading("Held-out architecture", 3),
                Table(("classifier input", "classifier", "accuracy (95% CI)"), held_rows),
                Para(_heldout_text(doc, held))]
    else:
        out.append(Para("No held-out-architecture score was computed."))
    return out


def _pareto_table(front: Sequence[Mapping[str, Any]], unit: str | None, chosen: Any, target: float | None,
                  rejected: Iterable[Any] = (), chosen_word: str = "recommended") -> Table:
    failed = set(rejected)

    def verdict(t: Mapping[str, Any]) -> str:
        number = t.get("number")
        note = f", {chosen_word}" if number == chosen else ", failed re-check" if number in failed else ""
        if t.get("feasible"):
            return "yes" + note
        low = (ci_of(t) or (None, None))[0]
        reaches = low is not None and target is not None and low >= target
        return ("no: not beyond controls" if reaches and t.get("beyond_control") is False else "no") + note

    rows = tuple((str(t.get("number")), _cost(t.get("cost"), None), _num(t.get("accuracy")), _ci(t), verdict(t),
                  _short(t)) for t in front)
    totals = any(t.get("animal_cost") is not None for t in front)  # --max-animals: costs over all the animals
    per = ", all animals" if totals else " per animal"
    return Table(("trial", f"cost ({unit}{per})" if unit else f"cost{per}", "accuracy", "95% CI", "feasible",
                  "protocol"), rows)


def _pareto(doc: Doc) -> list[Block]:
    protocol, feasible = protocol_of(doc)
    front = doc.get("pareto") or []
    blocks: list[Block] = [Heading("Pareto front")]
    if not front:
        return [*blocks, Para("The result has no Pareto front.")]
    unit = (protocol or {}).get("cost_unit") or (doc.get("modality") or {}).get("cost_unit")
    candidate = doc.get("candidate") if "candidate" in doc else (protocol if feasible else None)
    chosen = (candidate or {}).get("trial", (candidate or {}).get("number")) if candidate else None
    rejected = [r["trial"].get("number") for r in doc.get("rejected_by_recheck") or []]
    cost = "total cost" if any(t.get("animal_cost") is not None for t in front) else "cost per animal"
    text = (f"The {len(front)} protocols no other protocol beats on both {cost} and search accuracy, of "
            f"{len(doc.get('trials') or [])} tried, cheapest first. Feasible: the lower 95% CI bound reaches the "
            "target and clears the strongest control in the search.")
    final = setaside_of(doc)
    if final is not None and protocol is not None:
        text += (" Accuracies are search estimates (cross-validation on the search networks); only the "
                 f"{'recommended' if feasible else 'chosen' if candidate else 'most accurate'} protocol was tested "
                 f"on the set-aside networks: {_acc(final)}.")
    if chosen is not None and chosen not in {t.get("number") for t in front}:
        text += (f" The {'recommended' if feasible else 'chosen'} protocol (trial {chosen}) is not on the front: the "
                 "cheaper or more accurate protocols that beat it in the search did not hold up on re-check.")
    word = "recommended" if feasible else "chosen, fails set-aside"
    return [*blocks, Para(text), _pareto_table(front, unit, chosen, _target_value(doc), rejected, word)]


def _insufficient(doc: Doc) -> list[Block]:
    items = doc.get("insufficient") or []
    blocks: list[Block] = [Heading("What would not suffice")]
    if not items:
        return [*blocks, Para("The result lists no insufficient alternatives.")]
    unit = (protocol_of(doc)[0] or {}).get("cost_unit")
    rows = tuple((i.get("description", ""), _num(i.get("accuracy")), _ci(i), _cost(i.get("cost"), None),
                  i.get("why", "")) for i in items)
    return [*blocks, Para("Cheaper or different recordings that miss the target in the search (search estimates):"),
            Table(("recording", "accuracy", "95% CI", f"cost ({unit} per animal)" if unit else "cost per animal",
                   "why not"), rows)]


def _figures(doc: Doc) -> list[Block]:
    refs = [FigureRef(spec.key, n, spec.title, spec.caption(doc) if missing is None else "", missing)
            for n, (spec, missing) in enumerate(figure_specs(doc), start=1)]
    return [Heading("Figures"), *refs]


def _caveats(doc: Doc) -> list[Block]:
    b = doc.get("bank", {})
    rules = rule_list(doc.get("question", {}).get("rules") or b.get("rules") or [])
    items = [f"Only the simulated rules were considered ({rules}). A circuit may use none of them, a mixture, or a "
             "rule outside this set; the classifier would still name one of these.",
             "Different rules can produce similar activity (Ramesh et al., eLife 2024): failing to tell two rules "
             "apart does not show that they are the same, and a rule identified here could be mimicked by one that "
             "was not simulated.",
             f"Simulated networks are not brains: the units are artificial-network units of "
             f"{_and(b.get('architectures') or [])} networks trained on {_and(b.get('tasks') or [])} tasks for "
             f"{b.get('n_steps')} steps. Real neurons, circuits, tasks and learning durations differ; the "
             "held-out-architecture score indicates how far results carry over to an unseen architecture.",
             f"All numbers are for the simulated population {b.get('preset')} (bank {b.get('hash')}, "
             f"{b.get('n_networks')} networks) and the modality cost models used; another population or cost model "
             "can give different numbers.",
             "Gaussian noise levels are relative to each observable's spread in each network and layer group "
             "(measure that spread on your rig to translate them); Poisson levels are mean spike counts per stimulus."]
    if doc["kind"] == "plan" and setaside_of(doc) is not None:
        final = setaside_of(doc) or {}
        items.insert(3, f"The {final.get('n_networks')} set-aside networks come from the same simulated population "
                        "as the search networks: they guard against fitting the search to its own networks, not "
                        "against a population that differs from the simulated one. With few test networks their "
                        "interval is wide.")
    if int((doc.get("question") or {}).get("max_animals") or 1) > 1:
        items.append("Several animals: the evidence of k animals is pooled as if they shared the rule, and the "
                     "pooled animals are distinct simulated networks of one rule, of the same architecture and task "
                     "where a split holds enough of them, else of any: on the quick bank they usually differ in "
                     "architecture and task, unlike animals of one species and area. The controls are pooled over "
                     "as many animals, so a protocol counts only where recording k animals beats watching k "
                     "animals learn.")
    modalities = [doc] if doc["kind"] == "plan" else list(doc.get("modalities") or [])
    for entry in modalities:
        modality = entry.get("modality") or {}
        gains = _gains(modality)
        if gains:
            name = modality.get("key") or entry.get("name") or "the modality"
            notes = _gain_assumptions(modality)
            items.append(f"Unknown gains ({name}): the virtual recording scales every value by gains the classifier "
                         f"never sees ({gains}), so an identification must survive them; a rig whose gains vary more "
                         "across animals, areas or units than this can do worse."
                         + (f" Where these numbers come from: {notes}" if notes else ""))
    return [Heading("Caveats"), Bullets(tuple(items)), Heading("Methods"), Para(methods_paragraph(doc))]


def _reproduce(doc: Doc) -> list[Block]:
    q, b = doc.get("question", {}), doc.get("bank", {})
    rows = [("created", str(doc.get("created"))), ("run time", f"{doc.get('elapsed_s', 0):.1f} s"),
            ("search seed", str(q.get("seed"))), ("bank", f"{b.get('preset')}, hash {b.get('hash')}"),
            ("MLflow run id", str(doc.get("run_id"))), ("tracking URI", str(doc.get("tracking_uri"))),
            ("browse the run", str(doc.get("run_url")))]
    if q.get("setaside") is not None:
        final = setaside_of(doc) if doc["kind"] == "plan" else None
        counts = f" ({final.get('n_networks')} set aside, {final.get('n_train')} searched)" if final else ""
        rows.insert(3, ("set-aside share", f"{_share(q['setaside'])} of the networks{counts}, drawn with the "
                                           "search seed"))
    verification = doc.get("verification")
    if verification:
        rows.insert(3, ("re-check seeds", ", ".join(map(str, verification.get("seeds") or []))))
    versions = tuple((k, str(v)) for k, v in (doc.get("versions") or {}).items())
    return [Heading("How to reproduce"), Para("Run the same command on the same bank:"),
            Code(str(doc.get("command"))), Table(("item", "value"), tuple(rows)),
            Table(("package", "version"), versions)]


def _power(doc: Doc) -> list[Block]:
    """The power table: accuracy against units × animals and sessions × animals around the reported protocol."""
    table = doc.get("power_table")
    if not table:
        return []
    animals = table["animals"]
    unit = table.get("cost_unit") or "hours"
    blocks: list[Block] = [
        Heading("Power analysis: how many units, sessions and animals"),
        Para(f"Accuracy (search estimate: cross-validated on the search networks; in brackets the lower end of its "
             "95% CI, which the target is judged on; the JSON's power_table has both ends) of "
             f"{table['protocol']}, changing one factor at a time and pooling the evidence of 1 to {animals[-1]} "
             f"animals recorded alike (each pooled group draws distinct animals of one rule that the classifier "
             f"never saw). ✓ marks where the lower CI bound reaches the target {table['target']:.2f} and clears the "
             "strongest control pooled over as many animals. Costs are totals over the animals.")]
    for axis, label in (("units", "units"), ("sessions", "sessions")):
        rows = []
        for row in table.get(axis) or []:
            cells = [f"{c['accuracy']:.2f} (≥ {c['ci'][0]:.2f})" + (" ✓" if c["reaches"] else "")
                     for c in row["cells"]]
            rows.append((str(row["value"]), *cells))
        header = (label, *(f"{k} animal{'s' if k != 1 else ''}" for k in animals))
        blocks.append(Table(header, tuple(rows)))
        costs = [row["cells"] for row in table.get(axis) or []]
        if costs:
            first, last = costs[0], costs[-1]
            blocks.append(Para(f"Cost of the {label} rows: from {_cost(first[0]['cost'], unit)} (1 "
                               f"animal, fewest {label}) to {_cost(last[-1]['cost'], unit)} ({animals[-1]} animals, "
                               f"most {label})."))
    return blocks


def _plan_blocks(doc: Doc) -> list[Block]:
    return [*_question(doc), *_protocol(doc), *_accuracy(doc), *_controls(doc), *_power(doc), *_pareto(doc),
            *_insufficient(doc), *_figures(doc), *_caveats(doc), *_reproduce(doc)]


def _modality_sentence(m: Mapping[str, Any], doc: Doc) -> str:
    p, chosen = protocol_of(m)[0], recommended(m)
    unit = (p or {}).get("cost_unit") or m.get("cost_unit")
    reason = m.get("reason") or ("below target" if p else "no protocol evaluated")
    if p is None:
        return f"{m['name']}: not sufficient ({reason})."
    cost = cost_words(p, unit)
    final = setaside_of(m)
    if final is None:
        return (f"{m['name']}: record {_record(doc, p, m)}; {_headline(p, doc)}, for {cost}." if chosen else
                f"{m['name']}: not sufficient ({reason}); its most accurate protocol, {protocol_phrase(p)}, reaches "
                f"{_headline(p, doc)}, for {cost}.")
    numbers = f"{_acc(final)} on {final.get('n_networks')} set-aside networks (search estimate {_plain(p)})"
    held = m.get("heldout_architecture")
    transfer = ""
    if held:
        transfer = ("; held-out architecture " + _acc(held) + (": it transfers to an unseen architecture" if
                    held.get("transfers") else ": not shown to carry over to an unseen architecture"))
    budget = budget_sentence(m)
    budget = f" {budget}" if budget else ""
    if chosen:
        return f"{m['name']}: record {_record(doc, p, m)}, for {cost}; identified with {numbers}{transfer}.{budget}"
    which = "chosen" if m.get("candidate") else "most accurate"
    return (f"{m['name']}: not sufficient ({VERDICT_WORDS[verdict_of(m)]}); its {which} protocol, "
            f"{protocol_phrase(p)}, for {cost}, reaches {numbers}{transfer}.{budget}")


def _compare_blocks(doc: Doc) -> list[Block]:
    rows, fronts = [], []
    any_final = any(setaside_of(m) is not None for m in doc.get("modalities") or [])
    shared = _cost_unit(doc)
    for m in doc.get("modalities") or []:
        p, chosen = protocol_of(m)[0], recommended(m)
        unit = (p or {}).get("cost_unit") or m.get("cost_unit")
        reason = m.get("reason") or ("below target" if p else "no protocol evaluated")
        if p is None:
            rows.append((m["name"], f"no: {reason}", "n/a", "n/a", "-"))
        else:
            final = setaside_of(m) or (None if any_final else p)
            verdict = "yes" if chosen else (f"no: {VERDICT_SHORT[verdict_of(m)]}" if setaside_of(m) is not None
                                            else f"no: {reason}")
            rows.append((m["name"], verdict, _cost(p.get("cost"), None if shared else unit), _brief(final),
                         _short(p)))
        front = m.get("pareto") or []
        candidate = m.get("candidate") or chosen
        fronts += [Heading(f"Pareto front: {m['name']}", 3),
                   _pareto_table(front, unit, (candidate or {}).get("trial"), _target_value(doc), (),
                                 "recommended" if chosen else "chosen, fails set-aside") if front
                   else Para("No trials.")]
    accuracy = "set-aside accuracy (95% CI)" if any_final else "accuracy (95% CI)"
    cost = f"cost ({shared} per animal)" if shared else "cost per animal"
    side = Table(("modality", "meets target", cost, accuracy, "protocol"), tuple(rows))
    note = ("Meets target: the recommended protocol's lower 95% CI bound reaches the target beyond the controls, in "
            "the search and on networks the search never saw; the accuracy is from those set-aside networks "
            "(one fit on the search networks, tested once).") if any_final else ""
    return [*_question(doc), Heading("Modalities side by side"), *([Para(note)] if note else []), side,
            Heading("Per modality"), Bullets(tuple(_modality_sentence(m, doc) for m in doc.get("modalities") or [])),
            *fronts, *_figures(doc), *_caveats(doc), *_reproduce(doc)]


def _identify_reading(doc: Doc) -> str:
    n = len(doc.get("labels") or [])
    what = "families" if doc.get("target") == "family" else "rules"
    return ("Reading the numbers: one simulated network stands for one animal. The posterior is the probability "
            f"of each of the {n} simulated {what} given this animal's recording, from the plan's classifier "
            "(trained on the plan's search networks) after calibration; the calibration and the misspecification "
            "check were measured on the plan's set-aside networks, which nothing was fitted on. A probability is "
            f"only as good as the assumption that the circuit uses one of these {what}: the misspecification check "
            "comes first.")


def _recording_para(doc: Doc) -> str:
    rec = doc.get("recording") or {}
    used, recorded = rec.get("units_used") or {}, rec.get("units_recorded") or {}
    groups = _and(f"{used[g]} of {recorded.get(g, used[g])} {g}-layer units" for g in used)
    progress = ", ".join(f"{v:.2f}" for v in rec.get("session_progress") or [])
    combine = "averaged" if (doc.get("protocol") or {}).get("combine") == "mean" else "spike counts summed"
    return (f"Recording: {rec.get('source')} ({str(rec.get('format', '')).upper()}), {rec.get('n_sessions')} "
            f"sessions at {progress} of learning, {rec.get('n_stimuli')} probe stimuli, "
            f"{rec.get('presentations_used')} presentation{'s' if rec.get('presentations_used') != 1 else ''} of each "
            f"{combine} ({rec.get('presentations')} recorded); {groups} used."
            + ("" if not rec.get("notes") else " " + "; ".join(rec["notes"]).capitalize() + "."))


def _identify_posterior(doc: Doc) -> list[Block]:
    family = doc.get("target") == "family"
    items = sorted((doc.get("posterior") or {}).items(), key=lambda kv: -kv[1])
    rows = tuple((rule_words(k, family=family), k, f"{v:.3f}") for k, v in items)
    ci = doc.get("p_top_ci") or [0.0, 0.0]
    return [Heading("Posterior over the simulated " + ("families" if family else "rules")),
            Table(("rule" if not family else "family", "key", "probability"), rows),
            Para(f"The top probability's 95% interval, {ci[0]:.2f}-{ci[1]:.2f}, is its spread over "
                 f"{(doc.get('identifier') or {}).get('bootstraps')} refits of the classifier on bootstrap resamples "
                 "of the search networks: how much it depends on which simulated networks trained the classifier. "
                 "It does not include the recording's own noise.")]


def _identify_check(doc: Doc) -> list[Block]:
    mis = doc.get("misspecification") or {}
    verdict = ("like the simulated networks" if doc.get("in_distribution") else "unlike every simulated network")
    observable = (doc.get("protocol") or {}).get("observable")
    rows = tuple((_cell_words(str(f["statistic"]), observable), f"{f['z']:+.1f}", f"{f['beyond']:.0%}")
                 for f in mis.get("furthest") or [])
    q, mz = mis.get("null_quantiles") or {}, mis.get("null_max_z_quantiles") or {}
    return [Heading("Is the recording like the simulations?"),
            Para(f"The recording is {verdict}: misspecification p = {mis.get('p', float('nan')):.3f} (called unlike "
                 f"at p ≤ {mis.get('alpha')}). Its distance to the {mis.get('neighbours')} nearest of the "
                 f"{mis.get('n_reference')} search networks is {mis.get('score', float('nan')):.3f} (p = "
                 f"{mis.get('p_knn', float('nan')):.3f}; among the {mis.get('n_null')} set-aside networks the median "
                 f"is {q.get('0.5', float('nan')):.3f} and 95% lie below {q.get('0.95', float('nan')):.3f}); its most "
                 f"extreme statistic lies {mis.get('max_z', float('nan')):.1f} robust SDs from the simulated median "
                 f"(p = {mis.get('p_max_z', float('nan')):.3f}; 95% of set-aside networks below "
                 f"{mz.get('0.95', float('nan')):.1f}). The check's p-value is twice the smaller of the two (at most "
                 "1). Compared leave-one-out, "
                 f"{mis.get('false_alarm_rate', float('nan')):.1%} of set-aside simulated networks are called unlike "
                 "the simulations (the false-alarm rate; by construction at most about "
                 f"{mis.get('alpha', 0.05):.0%})."),
            Para("The statistics furthest from the simulated networks (robust SDs from their median; share of search "
                 "networks at least as far out):"),
            Table(("session: statistic", "robust z", "simulated beyond"), rows)]


def _cell_words(cell: str, observable: str | None) -> str:
    """``session 5 (50%): deep.rsa_first`` → ``session 5 (50%): deep layers: similarity to the first session``."""
    session, sep, name = cell.partition(": ")
    return f"{session}: {statistic_label(name, observable)}" if sep else statistic_label(cell, observable)


def _identify_calibration(doc: Doc) -> list[Block]:
    cal = doc.get("calibration") or {}
    ci = cal.get("accuracy_ci") or [float("nan")] * 2
    rows = (("set-aside networks", str(cal.get("n_networks"))),
            ("accuracy of the calibrated classifier", f"{cal.get('accuracy', float('nan')):.2f} "
                                                      f"({ci[0]:.2f}-{ci[1]:.2f})"),
            ("mean top probability", f"{cal.get('mean_confidence', float('nan')):.2f}"),
            ("expected calibration error (10 bins)", f"{cal.get('ece', float('nan')):.3f}"),
            ("the same before calibration", f"{cal.get('ece_uncalibrated', float('nan')):.3f}"),
            ("temperature", f"{cal.get('temperature', float('nan')):.3g}"),
            ("negative log-likelihood", f"{cal.get('nll', float('nan')):.3f}"),
            ("Brier score", f"{cal.get('brier', float('nan')):.3f}"))
    return [Heading("Calibration of the classifier"),
            Para("Temperature scaling: the classifier's scores are divided by one temperature, fitted to the "
                 "cross-fitted scores of the search networks (each scored by a model that never saw it). Measured "
                 "on the set-aside networks:"),
            Table(("measure", "value"), rows)]


def _identify_plan(doc: Doc) -> list[Block]:
    plan = doc.get("plan") or {}
    protocol = doc.get("protocol") or {}
    b = doc.get("bank") or {}
    combine = "averaged" if protocol.get("combine") == "mean" else "summed"
    rows = [("protocol", str(protocol.get("description"))),
            ("presentations per stimulus", f"{protocol.get('repeats')} ({combine})"),
            ("classifier", f"{doc.get('classifier')} (fitted on {(doc.get('identifier') or {}).get('n_search')} "
                           "search networks)"),
            ("bank", f"{b.get('preset')}, hash {b.get('hash')}, {b.get('n_networks')} networks")]
    if plan.get("run_id"):
        ci = plan.get("setaside_ci") or [float("nan")] * 2
        rows[:0] = [("plan run", str(plan.get("run_id"))),
                    ("plan's verdict", "recommended" if plan.get("recommended") else "not recommended (its chosen or "
                                                                                   "most accurate protocol)"),
                    ("plan's set-aside accuracy", f"{_num(plan.get('setaside_accuracy'))} ({ci[0]:.2f}-{ci[1]:.2f})")]
    return [Heading("The plan and its protocol"), Table(("item", "value"), tuple(rows))]


def _identify_caveats(doc: Doc) -> list[Block]:
    what = "families" if doc.get("target") == "family" else "rules"
    labels = rule_list(doc.get("labels") or [], family=doc.get("target") == "family")
    mis = doc.get("misspecification") or {}
    cal = doc.get("calibration") or {}
    items = (f"Only the simulated {what} were considered ({labels}). A circuit may use none of them, a mixture, or a "
             "rule outside this set; the posterior always sums to one over these.",
             "Different rules can produce similar activity (Ramesh et al., eLife 2024): a confident posterior on one "
             "rule does not exclude a rule that was not simulated and behaves alike. The misspecification check "
             "catches recordings unlike every simulated network, not every rule outside the set (see README, "
             "'After the experiment', for its measured detection rates).",
             "The calibration was measured on simulated set-aside networks; a real circuit that differs from the "
             "simulations in ways the misspecification check cannot see may be less well calibrated.",
             f"The posterior's interval reflects the finite simulated population (bootstrap refits), not the "
             f"recording's noise; with {cal.get('n_networks')} set-aside networks the calibration measures themselves "
             "are uncertain.",
             f"The misspecification p-value compares the recording with {mis.get('n_null')} set-aside networks: "
             "it cannot be smaller than 1/(1 + that number).")
    methods = (f"The recording was matched to the protocol (sessions within half the gap between planned sessions "
               f"of their planned positions; the planned units per layer group drawn at random with the protocol's "
               f"seed where more were recorded; the planned presentations of each stimulus combined as the noise model "
               f"defines) and summarised by the same statistics as the simulations. "
               f"{STATISTICS_METHODS.get(str((doc.get('protocol') or {}).get('statistics')), '')} The classifier, a "
               f"{CLASSIFIER_WORDS.get(str(doc.get('classifier')), str(doc.get('classifier')))}, was fitted "
               f"on the plan's {(doc.get('identifier') or {}).get('n_search')} search networks recorded under the "
               "protocol; its temperature minimises the negative log-likelihood of cross-fitted scores (4-fold, two "
               "repeats) of those networks. Calibration (accuracy, expected calibration error over 10 equal-width "
               f"bins, negative log-likelihood, Brier score) was measured on the {cal.get('n_networks')} set-aside "
               "networks. The misspecification check standardises each session's statistics (signed log; median and "
               "interquartile range over the search networks) and scores the recording twice: the mean Euclidean "
               f"distance (per square root of the number of statistics) to the {mis.get('neighbours')} nearest "
               "search networks, and the largest absolute standardised statistic. Each score's conformal p-value is "
               "(1 + the number of set-aside networks scoring at least as high) / (1 + their number); the reported "
               "p-value is twice the smaller one, capped at 1 (Bonferroni), so a recording like the simulated "
               "networks is called unlike them at p ≤ 0.05 at most 5% of the time.")
    return [Heading("Caveats"), Bullets(items), Heading("Methods"), Para(methods)]


def _identify_blocks(doc: Doc) -> list[Block]:
    rows = [("created", str(doc.get("created"))), ("MLflow run id", str(doc.get("run_id"))),
            ("plan run id", str((doc.get("plan") or {}).get("run_id"))),
            ("tracking URI", str(doc.get("tracking_uri"))), ("browse the run", str(doc.get("run_url"))),
            ("classifier cache key", str((doc.get("identifier") or {}).get("key")))]
    versions = tuple((k, str(v)) for k, v in (doc.get("versions") or {}).items())
    return [Heading(doc.get("title") or "lr-advisor identification", 1), Para(_recording_para(doc)),
            Para(_identify_reading(doc)), Heading("Verdict"), Para(str(doc.get("verdict")), lead=True),
            *_identify_posterior(doc), *_identify_check(doc), *_identify_calibration(doc), *_identify_plan(doc),
            *_figures(doc), *_identify_caveats(doc),
            Heading("How to reproduce"), Para("Run the same command in the same workspace:"),
            Code(str(doc.get("command"))), Table(("item", "value"), tuple(rows)),
            Table(("package", "version"), versions)]


BLOCKS: dict[str, Callable[[Doc], list[Block]]] = {"plan": _plan_blocks, "compare": _compare_blocks,
                                                   "identify": _identify_blocks}
"""Document kind → its section builder."""


def _check_kind(doc: Doc) -> None:
    if doc.get("kind") not in BLOCKS:
        raise AdvisorError(f"document kind must be one of {', '.join(BLOCKS)}; got {doc.get('kind')!r}")


def report_blocks(doc: Doc) -> list[Block]:
    """The report's content, format-independent: headings, paragraphs, tables, bullets, code and figures.

    Raises:
        AdvisorError: the document's ``kind`` is not ``plan`` or ``compare``.
    """
    _check_kind(doc)
    return BLOCKS[doc["kind"]](doc)


# -------------------------------------------------------------------------------------- Markdown and HTML
NUMERIC = re.compile(r"n/a|[-+]?\d[\d,]*(?:\.\d+)?(?:[-–][-+]?\d[\d,]*(?:\.\d+)?)?")
"""A table cell that is one number or one range (``0.86-0.94``): set on one line, right-aligned."""
NUMBER_RUN = re.compile(r"\d[\d,]*(?:\.\d+)?(?:[-–]\d[\d,]*(?:\.\d+)?)+")
"""A range of numbers inside running text (``0.81-0.96``), which must not break at its dash."""


def numeric_columns(table: Table) -> list[bool]:
    """Which columns of ``table`` hold only numbers or ranges (empty cells aside): never wrapped, right-aligned."""
    return [any(row[i] for row in table.rows) and all(not row[i] or NUMERIC.fullmatch(row[i]) for row in table.rows)
            for i in range(len(table.header))]


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(doc: Doc, figure_paths: Mapping[str, str]) -> str:
    """The report as Markdown.

    Args:
        doc: a plan or compare result document.
        figure_paths: figure key → path of its PNG, relative to where the Markdown file will be written.
            A figure whose key is absent is reported as not rendered.
    """
    out: list[str] = []
    for block in report_blocks(doc):
        if isinstance(block, Heading):
            out.append(f"{'#' * block.level} {block.text}")
        elif isinstance(block, Para):
            out.append(f"**{block.text}**" if block.lead else block.text)
        elif isinstance(block, Table):
            lines = ["| " + " | ".join(map(_md_cell, block.header)) + " |", "|" + "---|" * len(block.header)]
            out.append("\n".join(lines + ["| " + " | ".join(map(_md_cell, row)) + " |" for row in block.rows]))
        elif isinstance(block, Bullets):
            out.append("\n".join(f"- {item}" for item in block.items))
        elif isinstance(block, Code):
            out.append(f"```bash\n{block.text}\n```")
        elif isinstance(block, Formula):
            out.append(f"`{block.name} = {math_text(block.expression, plain_symbol)}`\n\n"
                       + block.legend_text(lambda name: f"`{name}`", escape=str)
                       + (f" {block.example}" if block.example else ""))
        elif block.missing is not None:
            out.append(f"*Figure {block.number}. {block.title}: not shown, {block.missing}.*")
        elif block.key not in figure_paths:
            out.append(f"*Figure {block.number}. {block.title}: not rendered.*")
        else:
            out.append(f"![Figure {block.number}. {block.title}]({figure_paths[block.key]})\n\n"
                       f"*Figure {block.number}. {block.title}.* {block.caption}")
    return "\n\n".join(out) + "\n"


CSS = """
body { font-family: "DejaVu Sans", "Helvetica Neue", Arial, sans-serif; max-width: 56rem; margin: 2rem auto;
       padding: 0 1rem; color: #1a1a1a; line-height: 1.5; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; border-bottom: 1px solid #ddd; margin-top: 2rem; }
h3 { font-size: 1.05rem; }
p.lead { font-size: 1.1rem; font-weight: 600; background: #f3f7fb; border-left: 4px solid #1f77b4;
         padding: 0.6rem 0.9rem; }
p.formula { text-align: center; font-size: 1.05rem; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.9rem; border-top: 1.5px solid #333;
        border-bottom: 1.5px solid #333; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25rem 0.6rem; text-align: left; vertical-align: top; }
th { border-bottom: 1px solid #333; }
th.num, td.num { white-space: nowrap; text-align: right; }
span.nb { white-space: nowrap; }
pre { background: #f6f6f6; padding: 0.6rem; overflow-x: auto; white-space: pre-wrap; word-break: break-all; }
figure { margin: 1.5rem 0; } figure img { max-width: 100%; height: auto; }
figcaption, p.missing { font-size: 0.9rem; color: #333; }
"""


def _html_text(text: str) -> str:
    """Escaped text whose number ranges do not break at their dash."""
    return NUMBER_RUN.sub(lambda m: f'<span class="nb">{m.group(0)}</span>', html.escape(text))


def _html_table(table: Table) -> str:
    numeric = numeric_columns(table)

    def cell(tag: str, text: str, i: int) -> str:
        if numeric[i]:
            return f'<{tag} class="num">{html.escape(text)}</{tag}>'
        return f"<{tag}>{_html_text(text)}</{tag}>"

    head = "".join(cell("th", h, i) for i, h in enumerate(table.header))
    rows = "".join("<tr>" + "".join(cell("td", c, i) for i, c in enumerate(row)) + "</tr>" for row in table.rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def render_html(doc: Doc, *, figures: Mapping[str, Figure] | None = None, dpi: int = 150) -> str:
    """The report as one self-contained HTML file: inline CSS, figures embedded as base64 PNG data URIs, no
    external URL of any kind. Numeric table cells (accuracies, CIs, costs) carry the class ``num`` and never wrap.

    Args:
        doc: a plan or compare result document.
        figures: figures from :func:`~advisor.application.figures.make_figures` (drawn here when None).
        dpi: resolution of the embedded PNGs.
    """
    figures = make_figures(doc) if figures is None else figures
    e, t = html.escape, _html_text
    body: list[str] = []
    for block in report_blocks(doc):
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{e(block.text)}</h{block.level}>")
        elif isinstance(block, Para):
            body.append(f'<p class="lead">{t(block.text)}</p>' if block.lead else f"<p>{t(block.text)}</p>")
        elif isinstance(block, Table):
            body.append(_html_table(block))
        elif isinstance(block, Bullets):
            body.append("<ul>" + "".join(f"<li>{t(item)}</li>" for item in block.items) + "</ul>")
        elif isinstance(block, Code):
            body.append(f"<pre><code>{e(block.text)}</code></pre>")
        elif isinstance(block, Formula):
            body.append(f'<p class="formula">{e(block.name)} = {math_text(block.expression, markup_symbol)}'
                        f"</p>\n<p>{block.legend_text(markup_symbol)}"
                        + (f" {t(block.example)}" if block.example else "") + "</p>")
        elif block.missing is not None or block.key not in figures:
            reason = block.missing or "not rendered"
            body.append(f'<p class="missing"><em>Figure {block.number}. {e(block.title)}: not shown, '
                        f"{e(reason)}.</em></p>")
        else:
            data = base64.b64encode(png_bytes(figures[block.key], dpi)).decode("ascii")
            body.append(f'<figure><img alt="Figure {block.number}. {e(block.title)}" '
                        f'src="data:image/png;base64,{data}"><figcaption><strong>Figure {block.number}. '
                        f"{e(block.title)}.</strong> {t(block.caption)}</figcaption></figure>")
    title = e(doc.get("title") or "lr-advisor report")
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{title}</title>\n'
            f'<meta name="generator" content="lr-advisor">\n<style>{CSS}</style>\n</head>\n<body>\n'
            + "\n".join(body) + "\n</body>\n</html>\n")


# --------------------------------------------------------------------------------------------------- PDF
PAGE = (8.5 * 72, 11.0 * 72)
"""PDF page size in points (US letter; the 7-inch figures are the text width, which also fits A4)."""
MARGIN = 0.75 * 72
"""Page margin in points: a 7-inch (504 pt) text block."""
PDF_DPI = 250
"""Resolution of the figures embedded in the PDF (print quality, a few hundred kB each)."""
FONT_FILES = {"LRSans": "DejaVuSans.ttf", "LRSans-Bold": "DejaVuSans-Bold.ttf",
              "LRSans-Italic": "DejaVuSans-Oblique.ttf", "LRSans-BoldItalic": "DejaVuSans-BoldOblique.ttf",
              "LRMono": "DejaVuSansMono.ttf"}
"""The PDF's fonts: DejaVu, shipped with matplotlib (the figures use it too), embedded as subsets; it has ≥, ≤, ×
and the other signs the reports use, which the PDF base fonts lack."""
CELL_PAD = 4.0
"""Horizontal padding of a table cell, each side, in points."""
NUMERIC_HEADER = 64.0
"""A numeric column is as wide as its widest number, or its header up to this width (points), when the table must
wrap."""


def _register_fonts() -> None:
    import matplotlib
    from reportlab.lib.fonts import addMapping
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    if "LRSans" in pdfmetrics.getRegisteredFontNames():
        return
    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    for name, file in FONT_FILES.items():
        pdfmetrics.registerFont(TTFont(name, str(folder / file)))
    for bold, italic, name in ((0, 0, "LRSans"), (1, 0, "LRSans-Bold"), (0, 1, "LRSans-Italic"),
                               (1, 1, "LRSans-BoldItalic")):
        addMapping("LRSans", bold, italic, name)
    for bold, italic in ((0, 0), (1, 0), (0, 1), (1, 1)):
        addMapping("LRMono", bold, italic, "LRMono")


def _pdf_styles() -> dict[str, Any]:
    """Paragraph styles of the PDF (sizes in points)."""
    from reportlab.lib.enums import TA_CENTER, TA_RIGHT
    from reportlab.lib.styles import ParagraphStyle

    base = ParagraphStyle("body", fontName="LRSans", fontSize=9.5, leading=13.0, spaceAfter=5.0,
                          uriWasteReduce=0.3, splitLongWords=1)
    cell = ParagraphStyle("cell", base, fontSize=8.5, leading=10.8, spaceAfter=0.0)
    return {
        "body": base,
        "h1": ParagraphStyle("h1", base, fontName="LRSans-Bold", fontSize=16.0, leading=20.0, spaceAfter=8.0),
        "h2": ParagraphStyle("h2", base, fontName="LRSans-Bold", fontSize=12.0, leading=15.0, spaceBefore=10.0,
                             spaceAfter=4.0),
        "h3": ParagraphStyle("h3", base, fontName="LRSans-Bold", fontSize=10.0, leading=13.0, spaceBefore=6.0,
                             spaceAfter=3.0),
        "lead": ParagraphStyle("lead", base, fontSize=10.5, leading=14.5, spaceAfter=0.0),
        "legend": ParagraphStyle("legend", base, leading=15.0),
        "bullet": ParagraphStyle("bullet", base, leftIndent=12.0, bulletIndent=2.0, spaceAfter=3.0),
        "code": ParagraphStyle("code", base, fontName="LRMono", fontSize=8.0, leading=10.5, spaceAfter=0.0),
        "caption": ParagraphStyle("caption", base, fontSize=8.5, leading=11.0, spaceBefore=3.0, spaceAfter=10.0),
        "formula": ParagraphStyle("formula", base, fontSize=10.5, leading=16.0, alignment=TA_CENTER, spaceBefore=2.0,
                                  spaceAfter=4.0),
        "cell": cell,
        "num": ParagraphStyle("num", cell, alignment=TA_RIGHT),
        "head": ParagraphStyle("head", cell, fontName="LRSans-Bold"),
        "headnum": ParagraphStyle("headnum", cell, fontName="LRSans-Bold", alignment=TA_RIGHT),
    }


def _pdf_markup(text: str, style: Any = None, width: float | None = None) -> str:
    """Escaped Paragraph markup in which a number keeps its CI (``0.52 (0.40-0.64)``) and ``95% CI`` keeps its
    words on one line (no-break spaces); with a ``style`` and a ``width`` (points), a word wider than that (a long
    URL or hash) is cut into pieces that fit, one per line, so nothing runs off the text block."""
    if style is not None and width is not None:
        text = _cut_long_words(text, style.fontName, style.fontSize, width)
    text = html.escape(text, quote=False).replace("95% CI", "95%\u00a0CI").replace("\n", "<br/>")
    return re.sub(r"(\d) \((?=\d)", "\\1\u00a0(", text)


def _cut_long_words(text: str, font: str, size: float, width: float) -> str:
    """``text`` with every word wider than ``width`` points cut into lines that fit."""
    from reportlab.pdfbase.pdfmetrics import stringWidth

    def cut(word: str) -> str:
        if stringWidth(word, font, size) <= width:
            return word
        pieces, piece = [], ""
        for char in word:
            if piece and stringWidth(piece + char, font, size) > width - 0.5:
                pieces.append(piece)
                piece = ""
            piece += char
        return "\n".join([*pieces, piece])

    return " ".join(cut(word) for word in text.split(" "))


def _column_widths(table: Table, numeric: Sequence[bool], width: float) -> list[float]:
    """Column widths in points that fit ``width``: a numeric column as wide as its widest cell (never wrapped),
    the text columns sharing the rest in proportion to their length, each at least its longest word when
    possible."""
    from reportlab.pdfbase.pdfmetrics import stringWidth

    size = 8.5

    def measure(text: str, font: str) -> tuple[float, float]:
        words = re.split(r" +", _pdf_markup(text).replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))
        return (max(stringWidth(w, font, size) for w in words) + 2 * CELL_PAD,
                stringWidth(" ".join(words), font, size) + 2 * CELL_PAD)

    low, high = [], []
    for i, head in enumerate(table.header):
        cells = [measure(head, "LRSans-Bold"), *(measure(row[i], "LRSans") for row in table.rows)]
        longest = max(c[0] for c in cells)  # a text column's longest word counts up to half the width: cut beyond
        low.append(max(c[1] for c in cells[1:]) if numeric[i] else min(longest, 0.5 * width))
        high.append(max(low[-1], *(c[1] for c in cells)))
    text = [i for i, n in enumerate(numeric) if not n] or list(range(len(numeric)))
    if sum(high) <= width:  # everything fits on one line: a narrow table stays narrow, a wide one fills the width
        if sum(high) < 0.6 * width:
            return high
        extra = width - sum(high)
        share = sum(high[i] for i in text)
        return [w + (extra * w / share if i in text else 0.0) for i, w in enumerate(high)]
    widths = [0.0 if i in text else max(low[i], min(high[i], NUMERIC_HEADER)) for i in range(len(high))]
    room = width - sum(widths)
    if room < sum(low[i] for i in text):  # even the longest words do not fit: they will be split
        share = sum(low[i] for i in text)
        return [max(room, 0.0) * low[i] / share if i in text else w for i, w in enumerate(widths)]
    free = list(text)
    while free:  # a column shorter than its fair share gets its whole length; the others share the rest
        fair = {i: room * high[i] / sum(high[j] for j in free) for i in free}
        settled = [i for i in free if high[i] <= room / len(free) or fair[i] < low[i]]
        if not settled:
            for i in free:
                widths[i] = fair[i]
            break
        for i in settled:
            widths[i] = high[i] if high[i] <= room / len(free) else low[i]
            room -= widths[i]
            free.remove(i)
    return widths


def _pdf_table(table: Table, styles: Mapping[str, Any], width: float) -> Any:
    from reportlab.lib import colors
    from reportlab.platypus import Paragraph
    from reportlab.platypus import Table as RLTable

    numeric = numeric_columns(table)
    widths = _column_widths(table, numeric, width)

    def cell(text: str, i: int, head: bool) -> Any:
        style = styles[{(True, True): "headnum", (True, False): "head", (False, True): "num",
                        (False, False): "cell"}[head, numeric[i]]]
        return Paragraph(_pdf_markup(text, style, widths[i] - 2 * CELL_PAD), style)

    head = [cell(h, i, True) for i, h in enumerate(table.header)]
    body = [[cell(c, i, False) for i, c in enumerate(row)] for row in table.rows]
    rules = [("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), CELL_PAD),
             ("RIGHTPADDING", (0, 0), (-1, -1), CELL_PAD), ("TOPPADDING", (0, 0), (-1, -1), 2.5),
             ("BOTTOMPADDING", (0, 0), (-1, -1), 3.0),
             ("LINEABOVE", (0, 0), (-1, 0), 0.9, colors.black), ("LINEBELOW", (0, 0), (-1, 0), 0.6, colors.black),
             ("LINEBELOW", (0, -1), (-1, -1), 0.9, colors.black)]
    if len(body) > 1:
        rules.insert(0, ("LINEBELOW", (0, 1), (-1, -2), 0.25, colors.Color(0.78, 0.78, 0.78)))
    return RLTable([head, *body], colWidths=widths, repeatRows=1, hAlign="LEFT",
                   style=rules, spaceBefore=3.0, spaceAfter=8.0)


KEEP_ROWS = 3
"""A table of at most this many rows is kept on one page; a longer one breaks between rows (never before its
header and first row), its header repeated."""


def _boxed(flowable: Any, width: float, background: str, rule: str | None = None) -> Any:
    """``flowable`` in a shaded box the width of the text, with a coloured rule on its left."""
    from reportlab.lib import colors
    from reportlab.platypus import Table as RLTable

    style: list[tuple[Any, ...]] = [
        ("BACKGROUND", (0, 0), (-1, -1), colors.HexColor(background)), ("LEFTPADDING", (0, 0), (-1, -1), 8.0),
        ("RIGHTPADDING", (0, 0), (-1, -1), 8.0), ("TOPPADDING", (0, 0), (-1, -1), 5.0),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 6.0)]
    if rule:
        style.append(("LINEBEFORE", (0, 0), (0, -1), 3.0, colors.HexColor(rule)))
    return RLTable([[flowable]], colWidths=[width], style=style, hAlign="LEFT", spaceBefore=2.0, spaceAfter=8.0)


def _pdf_figure(ref: FigureRef, figure: Figure, styles: Mapping[str, Any], width: float) -> list[Any]:
    """The figure as a PNG at :data:`PDF_DPI`, at most the text width, and its numbered caption."""
    from PIL import Image as PILImage
    from reportlab.platypus import Image, Paragraph, Spacer

    rgb = io.BytesIO()
    PILImage.open(io.BytesIO(png_bytes(figure, PDF_DPI))).convert("RGB").save(rgb, format="PNG")
    w, h = (72 * float(v) for v in figure.get_size_inches())
    scale = min(1.0, width / w)
    caption = Paragraph(f"<b>Figure {ref.number}. {_pdf_markup(ref.title)}.</b> "
                        f"{_pdf_markup(ref.caption, styles['caption'], width)}", styles["caption"])
    return [Spacer(1, 8.0), Image(rgb, width=w * scale, height=h * scale), caption]


def pdf_story(doc: Doc, figures: Mapping[str, Figure] | None = None) -> list[Any]:
    """The PDF's content as reportlab flowables, in the order of :func:`report_blocks`: headings, paragraphs, ruled
    tables (header repeated over page breaks), the cost formula, and the figures where their section is, each kept
    with its numbered caption.

    Args:
        doc: a plan or compare result document.
        figures: figures from :func:`~advisor.application.figures.make_figures` (drawn here when None).

    Raises:
        AdvisorError: the document's ``kind`` is not ``plan`` or ``compare``.
    """
    from reportlab.lib.units import inch
    from reportlab.platypus import CondPageBreak, KeepTogether, Paragraph

    blocks = report_blocks(doc)
    _register_fonts()
    figures = make_figures(doc) if figures is None else figures
    styles, width = _pdf_styles(), PAGE[0] - 2 * MARGIN
    story: list[Any] = []
    pending: list[Any] = []  # a heading and the paragraphs under it, until what follows says how to keep them

    def flush() -> None:
        story.extend(pending)
        pending.clear()

    for i, block in enumerate(blocks):
        if isinstance(block, Heading):
            if i + 1 < len(blocks) and isinstance(blocks[i + 1], FigureRef):
                continue  # the figures float (see _float_template); a "Figures" heading would gather other text
            flush()
            style = styles[f"h{min(block.level, 3)}"]
            title = Paragraph(_pdf_markup(block.text, style, width), style)
            if block.level == 1:
                story.append(title)
            else:
                story.append(CondPageBreak(1.4 * inch))  # no heading with only a line or two under it
                pending.append(title)
        elif isinstance(block, Para):
            style = styles["lead" if block.lead else "body"]
            paragraph = Paragraph(_pdf_markup(block.text, style, width - 16.0 * block.lead), style)
            (pending if pending else story).append(
                _boxed(paragraph, width, "#f3f7fb", "#1f77b4") if block.lead else paragraph)
        elif isinstance(block, Table):
            table = _pdf_table(block, styles, width)
            if len(block.rows) <= KEEP_ROWS:
                story.append(KeepTogether([*pending, table]))
            else:  # it may break, but not before its heading, introduction, header and first row are on the page
                first = _pdf_table(dataclasses.replace(block, rows=block.rows[:1]), styles, width)
                room = 6.0 + sum(f.wrap(width, PAGE[1])[1] + f.getSpaceBefore() + f.getSpaceAfter()
                                 for f in [*pending, first])
                story += [CondPageBreak(room), *pending, table]
            pending.clear()
        else:
            flush()
            if isinstance(block, Bullets):
                story += [Paragraph(_pdf_markup(item, styles["bullet"], width - styles["bullet"].leftIndent),
                                    styles["bullet"], bulletText="•") for item in block.items]
            elif isinstance(block, Code):
                code = Paragraph(_pdf_markup(block.text, styles["code"], width - 16.0), styles["code"])
                story.append(_boxed(code, width, "#f4f4f4"))
            elif isinstance(block, Formula):
                legend = block.legend_text(markup_symbol) + (f" {_pdf_markup(block.example)}" if block.example else "")
                story.append(KeepTogether([
                    Paragraph(f"{_pdf_markup(block.name)} = {math_text(block.expression, markup_symbol)}",
                              styles["formula"]), Paragraph(legend, styles["legend"])]))
            elif block.missing is not None or block.key not in figures:
                reason = block.missing or "not rendered"
                story.append(Paragraph(f"<i>Figure {block.number}. {_pdf_markup(block.title)}: not shown, "
                                       f"{_pdf_markup(reason)}.</i>", styles["caption"]))
            else:
                content = _pdf_figure(block, figures[block.key], styles, width)
                story.append(KeepTogether(content))
                story[-1].lr_float = content
    return story + pending


def _float_template() -> Any:
    """A reportlab document template of one frame, the text block (margins :data:`MARGIN`, no padding), with
    floating figures: a figure (a ``KeepTogether`` marked ``lr_float``) that does not fit in what is left of the
    page lets the text after it go first, as LaTeX floats do, so no page ends half empty before a figure; it then
    opens the next page. Figures keep their order."""
    from reportlab.platypus import BaseDocTemplate, Frame, PageTemplate

    class FloatTemplate(BaseDocTemplate):
        def __init__(self, filename: str, **kwargs: Any) -> None:
            super().__init__(filename, pagesize=PAGE, leftMargin=MARGIN, rightMargin=MARGIN, topMargin=MARGIN,
                             bottomMargin=MARGIN, **kwargs)
            frame = Frame(self.leftMargin, self.bottomMargin, self.width, self.height, leftPadding=0,
                          rightPadding=0, topPadding=0, bottomPadding=0, id="text")
            self.addPageTemplates([PageTemplate(id="page", frames=[frame])])

        def filterFlowables(self, flowables: list[Any]) -> None:
            first, frame = flowables[0] if flowables else None, getattr(self, "frame", None)
            content = getattr(first, "lr_float", None)
            if content is None or frame is None or frame._atTop:
                return
            needed = sum(f.wrap(frame._aW, frame._aH)[1] + f.getSpaceBefore() + f.getSpaceAfter() for f in content)
            if needed <= frame._y - frame._y1p:
                return
            later = next((i for i, f in enumerate(flowables) if f is not None and not hasattr(f, "lr_float")), None)
            if later is not None:
                flowables.insert(0, flowables.pop(later))

    return FloatTemplate


def _pdf_date(doc: Doc) -> str | None:
    """``doc["created"]`` as a PDF date in UTC (``D:20261128100000Z``); None when absent or unreadable."""
    try:
        created = datetime.fromisoformat(str(doc.get("created")))
    except ValueError:
        return None
    if created.tzinfo is not None:
        created = created.astimezone(UTC)
    return created.strftime("D:%Y%m%d%H%M%SZ")


def _canvas_maker(footer: str, date: str | None) -> Any:
    """A reportlab canvas class that holds every page back until the end, then writes the footer ("lr-advisor
    report · title" and "page N of M") on each, and dates the file ``date``."""
    from reportlab.lib import colors
    from reportlab.pdfbase.pdfmetrics import stringWidth
    from reportlab.pdfgen.canvas import Canvas

    class NumberedCanvas(Canvas):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.pending: list[dict[str, Any]] = []
            if date is not None:
                self.setDateFormatter(lambda *_: date)

        def showPage(self) -> None:
            self.pending.append(dict(self.__dict__))
            self._startPage()

        def save(self) -> None:
            total = len(self.pending)
            for number, state in enumerate(self.pending, start=1):
                self.__dict__.update(state)
                self.draw_footer(number, total)
                super().showPage()
            super().save()

        def draw_footer(self, number: int, total: int) -> None:
            y = MARGIN * 0.55
            self.saveState()
            self.setStrokeColor(colors.Color(0.7, 0.7, 0.7))
            self.setLineWidth(0.4)
            self.line(MARGIN, y + 10.0, PAGE[0] - MARGIN, y + 10.0)
            self.setFont("LRSans", 7.5)
            self.setFillColor(colors.Color(0.35, 0.35, 0.35))
            page = f"page {number} of {total}"
            room = PAGE[0] - 2 * MARGIN - stringWidth(page, "LRSans", 7.5) - 24.0
            text = footer
            while stringWidth(text, "LRSans", 7.5) > room and len(text) > 2:
                text = text[:-2] + "…"
            self.drawString(MARGIN, y, text)
            self.drawRightString(PAGE[0] - MARGIN, y, page)
            self.restoreState()

    return NumberedCanvas


def render_pdf(doc: Doc, path: str | os.PathLike[str], *, figures: Mapping[str, Figure] | None = None) -> int:
    """Write the report as a typeset PDF (reportlab's platypus): US letter, 0.75-inch margins, a footer with
    "page N of M" on every page.

    The metadata (Title, Author ``lr-advisor``, Subject: the recommendation, Creator ``lr-advisor <version>``,
    CreationDate from ``doc["created"]``) is fixed by the document and reportlab runs in its invariant mode, so
    the same document gives a byte-identical file.

    Args:
        doc: a plan or compare result document.
        path: the file to write.
        figures: figures from :func:`~advisor.application.figures.make_figures` (drawn here when None).

    Returns:
        The number of pages written.

    Raises:
        AdvisorError: the document's ``kind`` is not ``plan`` or ``compare``.
    """
    story = pdf_story(doc, figures)
    title = doc.get("title") or "lr-advisor report"
    version = (doc.get("versions") or {}).get("lr-advisor", "")
    template = _float_template()(
        os.fspath(path), title=title, author="lr-advisor", subject=recommendation_sentence(doc),
        creator=f"lr-advisor {version}".strip(), producer="lr-advisor (ReportLab)", invariant=1, lang="en")
    template.build(story, canvasmaker=_canvas_maker(f"lr-advisor report · {title}", _pdf_date(doc)))
    return int(template.page)


# ----------------------------------------------------------------------------------------- write_reports
def _stage(out_dir: Path, data: bytes | None = None) -> Path:
    """A temporary file in ``out_dir`` (same file system as the final paths, so ``os.replace`` is atomic), with
    the permissions a plain ``open`` would give (``mkstemp`` makes it private)."""
    fd, name = tempfile.mkstemp(dir=out_dir, prefix=".report-", suffix=".tmp")
    umask = os.umask(0o022)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)
    with os.fdopen(fd, "wb") as stream:
        stream.write(data or b"")
    return Path(name)


def write_reports(doc: Doc, out_dir: str | os.PathLike[str], formats: Iterable[str] = FORMATS) -> dict[str, Path]:
    """Write the report in each format into ``out_dir``: ``report.md`` (figures as 300-dpi PNGs in ``figures/``,
    linked relatively), ``report.html`` and ``report.pdf``.

    Atomic: every file is rendered to a temporary file first and moved into place only when all formats were
    rendered, so a failure leaves no report file (and no temporary file) behind.

    Args:
        doc: a plan or compare result document.
        out_dir: the directory (created if missing).
        formats: any of ``md``, ``html``, ``pdf``.

    Returns:
        Format → path of the written file.

    Raises:
        AdvisorError: an unknown format (``format must be one of md, html, pdf; got 'docx'``) or document kind.
    """
    formats = tuple(dict.fromkeys(formats))
    for fmt in formats:
        if fmt not in FORMATS:
            raise AdvisorError(f"format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    _check_kind(doc)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    staged: list[tuple[Path, Path]] = []
    try:
        figures = make_figures(doc)
        if "md" in formats:
            paths = {key: f"figures/{key}.png" for key in figures}
            staged += [(_stage(out, png_bytes(fig, 300)), out / paths[key]) for key, fig in figures.items()]
            staged.append((_stage(out, render_markdown(doc, paths).encode()), out / "report.md"))
        if "html" in formats:
            staged.append((_stage(out, render_html(doc, figures=figures).encode()), out / "report.html"))
        if "pdf" in formats:
            staged.append((_stage(out), out / "report.pdf"))
            render_pdf(doc, staged[-1][0], figures=figures)
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    if figures and "md" in formats:
        (out / "figures").mkdir(exist_ok=True)
    for tmp, final in staged:
        os.replace(tmp, final)
    return {fmt: out / f"report.{fmt}" for fmt in formats}


__all__ = [
    "FORMATS",
    "make_figures",
    "methods_paragraph",
    "pdf_story",
    "protocol_phrase",
    "recommendation_sentence",
    "render_html",
    "render_markdown",
    "render_pdf",
    "report_blocks",
    "rule_list",
    "write_reports",
]

"""Proposal-ready reports of a plan or compare result: Markdown, one self-contained HTML file, and a PDF.

Everything is rendered from the result document alone (the JSON-able dict the search produces, also stored in
MLflow), so a report can be re-rendered at any time. The document is first turned into a list of blocks
(headings, paragraphs, tables, bullet lists, code, figures) by :func:`report_blocks`; the three renderers only
lay those blocks out, so every format says exactly the same thing. The PDF is made with matplotlib's
``PdfPages`` (no system libraries): text pages laid out line by line with ``textwrap``, then one page per figure,
then the methods, caveats and reproduction pages. Figures come from :mod:`advisor.application.figures`.

:func:`write_reports` writes ``report.md`` (with PNGs at 300 dpi in ``figures/``), ``report.html`` and
``report.pdf`` atomically: everything is rendered to temporary files first and moved into place only when all
formats succeeded.
"""

from __future__ import annotations

import base64
import html
import math
import os
import tempfile
import textwrap
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from advisor.application.documents import OBSERVABLE_WORDS, REPORT_FORMATS, Document
from advisor.application.figures import (
    FigureSpec,
    chance_of,
    ci_of,
    controls_of,
    draw,
    figure_specs,
    make_figures,
    png_bytes,
    protocol_of,
    recommended,
    setaside_of,
    strongest_of,
    style,
    target_word,
)
from advisor.application.search import sessions_phrase
from advisor.errors import AdvisorError
from advisor.science.controls import CONTROL_LABELS, DESCRIPTIONS, LINEAR, NONLINEAR
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


Block = Heading | Para | Table | Bullets | Code | FigureRef


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


def protocol_phrase(p: Mapping[str, Any]) -> str:
    """``150 units of activations in the deep layers at 2 sessions, one before training starts and one at the end
    of learning, with noise ≤ 0.35 (3 repeats)``: a recording protocol in words."""
    unit, observable = OBSERVABLE_WORDS.get(p.get("observable", ""), ("units", str(p.get("observable"))))
    where = f"the {_and(p['layers'])} layers" if p.get("layers") else "all layers"
    text = f"{p.get('n_units')} {unit} of {observable} in {where} at {_sessions(p)}, {_noise(p)}"
    return text + ("" if p.get("chronic", True) else ", new units each session")


def _candidates(doc: Doc) -> str:
    word = "learning rule" if target_word(doc) == "rule" else "learning-rule family"
    labels = doc.get("question", {}).get("rules") if target_word(doc) == "rule" else None
    labels = labels or doc.get("labels") or doc.get("bank", {}).get("rules") or []
    return f"the {word} (one of {', '.join(labels)})"


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
    return _compare_sentence(doc) if doc["kind"] == "compare" else _plan_sentence(doc)


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
        cost = _per_animal(p.get("cost"), p.get("cost_unit") or m.get("cost_unit"))
        if final is None:
            return (f"The cheapest modality that identifies {what} with accuracy ≥ {target} at the lower 95% CI "
                    f"bound is {m['name']}: record ≥ {protocol_phrase(p)}, for {cost} and {_headline(p, doc)}."
                    + (f" Also sufficient, at higher cost: {also}." if others else ""))
        return (f"The cheapest modality that identifies {what} with accuracy ≥ {target} at the lower 95% CI bound, "
                f"beyond the controls, on networks the search never saw is {m['name']}: record ≥ "
                f"{protocol_phrase(p)}, for {cost}, and it is identified with {_unseen(final)}; chance "
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
            return f"Record ≥ {protocol_phrase(chosen)}: {what} is identified with {_headline(chosen, doc)}."
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
        return (f"Record ≥ {protocol_phrase(chosen)}: {what} is identified with {_unseen(final)}; chance "
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
            f"({', '.join(b.get('rules') or [])}), with {_and(b.get('architectures') or [])} architectures on "
            f"{_and(b.get('tasks') or [])} tasks, {b.get('n_steps')} training steps each, recorded at "
            f"{b.get('n_checkpoints')} checkpoints over learning (initialization included); one network stands for "
            "one animal.")


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
                         f"{_per_animal(p.get('cost'), m.get('cost_unit'))}"
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
            Heading("Recommendation"), Para(recommendation_sentence(doc), lead=True)]


def _short(p: Mapping[str, Any]) -> str:
    unit = OBSERVABLE_WORDS.get(p.get("observable", ""), ("units",))[0]
    start, end = p.get("window") or (0.0, 1.0)
    window = "" if start <= 0 and end >= 1 else f" ({start:.0%}-{end:.0%} of learning)"
    repeats = p.get("repeats") or 1
    noise = (f"{p.get('noise'):g} spikes/stimulus" if p.get("noise_model") == "poisson" and p.get("noise") is not None
             else f"noise {_num(p.get('noise'))}")
    return (f"{p.get('observable')}, {p.get('n_units')} {unit}, {'+'.join(p.get('layers') or [])}, "
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
    rows += [("cost per animal", _cost(p.get("cost"), cost_unit)), ("search trial", str(p.get("trial")))]
    verdict = verdict_of(doc)
    intro = PROTOCOL_INTROS[verdict] if setaside_of(doc) is not None else (
        "The recommended protocol, the cheapest one that meets the target:" if feasible else
        "No protocol meets the target; the most accurate one found:")
    name = modality.get("name") or doc.get("question", {}).get("modality") or "generic"
    formula = f": cost = {modality['cost_formula']}" if modality.get("cost_formula") else ""
    key = f" (modality {modality['key']})" if modality.get("key") else ""
    text = (f"Cost: {_per_animal(p.get('cost'), cost_unit)} of recording (one simulated network stands for one "
            f"animal), from the cost model of {name}{key}{formula}.")
    if gains:
        text += " Unknown gains: gains per animal, area and unit that the classifier never sees (see Caveats)."
    return [*blocks, Para(intro), Table(("property", "value"), tuple(rows)), Para(text)]


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
                 + "; ".join(f"trial {r['trial'].get('number')} ({_cost(r['trial'].get('cost'), unit)}), "
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
    return Table(("trial", f"cost ({unit})" if unit else "cost", "accuracy", "95% CI", "feasible", "protocol"),
                 rows)


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
    text = (f"The {len(front)} protocols no other protocol beats on both cost per animal and search accuracy, of "
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
    rows = tuple((i.get("description", ""), _num(i.get("accuracy")), _ci(i), _cost(i.get("cost"), unit),
                  i.get("why", "")) for i in items)
    return [*blocks, Para("Cheaper or different recordings that miss the target in the search (search estimates):"),
            Table(("recording", "accuracy", "95% CI", "cost per animal", "why not"), rows)]


def _figures(doc: Doc) -> list[Block]:
    refs = [FigureRef(spec.key, n, spec.title, spec.caption(doc) if missing is None else "", missing)
            for n, (spec, missing) in enumerate(figure_specs(doc), start=1)]
    return [Heading("Figures"), *refs]


def _caveats(doc: Doc) -> list[Block]:
    b = doc.get("bank", {})
    rules = ", ".join(doc.get("question", {}).get("rules") or b.get("rules") or [])
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
             "can give different numbers. One simulated network stands for one animal: costs are per animal.",
             "Gaussian noise levels are relative to each observable's spread in each network and layer group "
             "(measure that spread on your rig to translate them); Poisson levels are mean spike counts per stimulus."]
    if doc["kind"] == "plan" and setaside_of(doc) is not None:
        final = setaside_of(doc) or {}
        items.insert(3, f"The {final.get('n_networks')} set-aside networks come from the same simulated population "
                        "as the search networks: they guard against fitting the search to its own networks, not "
                        "against a population that differs from the simulated one. With few test networks their "
                        "interval is wide.")
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


def _plan_blocks(doc: Doc) -> list[Block]:
    return [*_question(doc), *_protocol(doc), *_accuracy(doc), *_controls(doc), *_pareto(doc), *_insufficient(doc),
            *_figures(doc), *_caveats(doc), *_reproduce(doc)]


def _modality_sentence(m: Mapping[str, Any], doc: Doc) -> str:
    p, chosen = protocol_of(m)[0], recommended(m)
    unit = (p or {}).get("cost_unit") or m.get("cost_unit")
    reason = m.get("reason") or ("below target" if p else "no protocol evaluated")
    if p is None:
        return f"{m['name']}: not sufficient ({reason})."
    cost = _per_animal(p.get("cost"), unit)
    final = setaside_of(m)
    if final is None:
        return (f"{m['name']}: record ≥ {protocol_phrase(p)}; {_headline(p, doc)}, for {cost}." if chosen else
                f"{m['name']}: not sufficient ({reason}); its most accurate protocol, {protocol_phrase(p)}, reaches "
                f"{_headline(p, doc)}, for {cost}.")
    numbers = f"{_acc(final)} on {final.get('n_networks')} set-aside networks (search estimate {_plain(p)})"
    held = m.get("heldout_architecture")
    transfer = ""
    if held:
        transfer = ("; held-out architecture " + _acc(held) + (": it transfers to an unseen architecture" if
                    held.get("transfers") else ": not shown to carry over to an unseen architecture"))
    if chosen:
        return f"{m['name']}: record ≥ {protocol_phrase(p)}, for {cost}; identified with {numbers}{transfer}."
    which = "chosen" if m.get("candidate") else "most accurate"
    return (f"{m['name']}: not sufficient ({VERDICT_WORDS[verdict_of(m)]}); its {which} protocol, "
            f"{protocol_phrase(p)}, for {cost}, reaches {numbers}{transfer}.")


def _compare_blocks(doc: Doc) -> list[Block]:
    rows, fronts = [], []
    any_final = any(setaside_of(m) is not None for m in doc.get("modalities") or [])
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
            rows.append((m["name"], verdict, _cost(p.get("cost"), unit), _brief(final), _short(p)))
        front = m.get("pareto") or []
        candidate = m.get("candidate") or chosen
        fronts += [Heading(f"Pareto front: {m['name']}", 3),
                   _pareto_table(front, unit, (candidate or {}).get("trial"), _target_value(doc), (),
                                 "recommended" if chosen else "chosen, fails set-aside") if front
                   else Para("No trials.")]
    accuracy = "set-aside accuracy (95% CI)" if any_final else "accuracy (95% CI)"
    side = Table(("modality", "meets target", "cost per animal", accuracy, "protocol"), tuple(rows))
    note = ("Meets target: the recommended protocol's lower 95% CI bound reaches the target beyond the controls, in "
            "the search and on networks the search never saw; the accuracy is from those set-aside networks "
            "(one fit on the search networks, tested once).") if any_final else ""
    return [*_question(doc), Heading("Modalities side by side"), *([Para(note)] if note else []), side,
            Heading("Per modality"), Bullets(tuple(_modality_sentence(m, doc) for m in doc.get("modalities") or [])),
            *fronts, *_figures(doc), *_caveats(doc), *_reproduce(doc)]


BLOCKS: dict[str, Callable[[Doc], list[Block]]] = {"plan": _plan_blocks, "compare": _compare_blocks}
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
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
pre { background: #f6f6f6; padding: 0.6rem; overflow-x: auto; }
figure { margin: 1.5rem 0; } figure img { max-width: 100%; height: auto; }
figcaption, p.missing { font-size: 0.9rem; color: #333; }
"""


def render_html(doc: Doc, *, figures: Mapping[str, Figure] | None = None, dpi: int = 150) -> str:
    """The report as one self-contained HTML file: inline CSS, figures embedded as base64 PNG data URIs, no
    external URL of any kind.

    Args:
        doc: a plan or compare result document.
        figures: figures from :func:`~advisor.application.figures.make_figures` (drawn here when None).
        dpi: resolution of the embedded PNGs.
    """
    figures = make_figures(doc) if figures is None else figures
    e = html.escape
    body: list[str] = []
    for block in report_blocks(doc):
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{e(block.text)}</h{block.level}>")
        elif isinstance(block, Para):
            body.append(f'<p class="lead">{e(block.text)}</p>' if block.lead else f"<p>{e(block.text)}</p>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{e(h)}</th>" for h in block.header)
            rows = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in block.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(block, Bullets):
            body.append("<ul>" + "".join(f"<li>{e(item)}</li>" for item in block.items) + "</ul>")
        elif isinstance(block, Code):
            body.append(f"<pre><code>{e(block.text)}</code></pre>")
        elif block.missing is not None or block.key not in figures:
            reason = block.missing or "not rendered"
            body.append(f'<p class="missing"><em>Figure {block.number}. {e(block.title)}: not shown, '
                        f"{e(reason)}.</em></p>")
        else:
            data = base64.b64encode(png_bytes(figures[block.key], dpi)).decode("ascii")
            body.append(f'<figure><img alt="Figure {block.number}. {e(block.title)}" '
                        f'src="data:image/png;base64,{data}"><figcaption><strong>Figure {block.number}. '
                        f"{e(block.title)}.</strong> {e(block.caption)}</figcaption></figure>")
    title = e(doc.get("title") or "lr-advisor report")
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{title}</title>\n'
            f'<meta name="generator" content="lr-advisor">\n<style>{CSS}</style>\n</head>\n<body>\n'
            + "\n".join(body) + "\n</body>\n</html>\n")


# --------------------------------------------------------------------------------------------------- PDF
PAGE = (8.5, 11.0)
"""PDF page size in inches (US letter; the figures are 7 inches wide, which also fits A4)."""
MARGIN = 0.75
EM = {"sans": 0.6, "bold": 0.66, "mono": 0.602}
"""Widest average character width per font style, in ems (DejaVu; mono is exact), for wrapping by characters."""
STYLES = {"h1": (15.0, "bold"), "h2": (12.0, "bold"), "h3": (10.5, "bold"), "body": (9.5, "sans"),
          "lead": (10.5, "bold"), "mono": (8.0, "mono"), "caption": (9.0, "sans"), "footer": (7.5, "sans")}


class _Pages:
    """Blocks laid out line by line on letter pages (matplotlib figures), wrapped by character counts."""

    def __init__(self, title: str) -> None:
        self.pages: list[Figure] = []
        self.title = title if len(title) <= 70 else title[:69] + "…"
        self.y = PAGE[1]

    def new_page(self) -> Figure:
        from matplotlib.figure import Figure

        page = Figure(figsize=PAGE)
        self.pages.append(page)
        self._text(page, MARGIN, PAGE[1] - MARGIN / 2, f"lr-advisor report · {self.title} · page {len(self.pages)}",
                   "footer", color="0.4")
        self.y = MARGIN
        return page

    def room(self, height: float) -> None:
        if not self.pages or self.y + height > PAGE[1] - MARGIN:
            self.new_page()

    @staticmethod
    def _text(page: Figure, x: float, y: float, text: str, style: str, **kw: Any) -> None:
        size, font = STYLES[style]
        page.text(x / PAGE[0], 1 - y / PAGE[1], text, fontsize=size, va="top", ha="left",
                  family="monospace" if font == "mono" else "sans-serif",
                  weight="bold" if font == "bold" else "normal", **kw)

    @staticmethod
    def chars(style: str, width: float) -> int:
        size, font = STYLES[style]
        return max(int(width * 72 / (size * EM[font])), 10)

    @staticmethod
    def height(style: str) -> float:
        return STYLES[style][0] * 1.35 / 72

    def lines(self, lines: Sequence[str], style: str, x: float = 0.0, keep: int = 1) -> None:
        for i, line in enumerate(lines):
            self.room(self.height(style) * (keep if i == 0 else 1))
            self._text(self.pages[-1], MARGIN + x, self.y, line, style)
            self.y += self.height(style)

    def paragraph(self, text: str, style: str = "body", x: float = 0.0, mark: str = "") -> None:
        width = PAGE[0] - 2 * MARGIN - x
        wrapped = textwrap.wrap(text, self.chars(style, width), break_on_hyphens=False) or [""]
        self.room(self.height(style) * min(len(wrapped), 2))
        if mark:
            self._text(self.pages[-1], MARGIN + x - 0.17, self.y, mark, style)
        self.lines(wrapped, style, x)
        self.y += 0.08

    def table(self, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        widths = [max(len(c) for c in column) for column in zip(header, *rows, strict=True)]
        room = self.chars("mono", PAGE[0] - 2 * MARGIN) - 2 * (len(widths) - 1)
        cap = max(widths)  # the widest columns are capped to one width, just enough for the row to fit
        while sum(min(w, cap) for w in widths) > room and cap > 8:
            cap -= 1
        widths = [min(w, cap) for w in widths]

        def cells(row: Sequence[str]) -> list[str]:
            parts = [textwrap.wrap(c, w, break_on_hyphens=False) or [""] for c, w in zip(row, widths, strict=True)]
            return ["  ".join(p[i].ljust(w) if i < len(p) else " " * w for p, w in zip(parts, widths, strict=True))
                    .rstrip() for i in range(max(map(len, parts)))]

        def head() -> None:
            self.lines(cells(header), "mono")
            self.rule((sum(widths) + 2 * (len(widths) - 1)) * STYLES["mono"][0] * EM["mono"] / 72)

        wrapped = [cells(row) for row in rows]
        gap = 0.04 if any(len(lines) > 1 for lines in wrapped) else 0.0
        self.room(self.height("mono") * 3)
        head()
        for lines in wrapped:
            page = len(self.pages)
            self.room(self.height("mono") * len(lines))
            if len(self.pages) > page:  # the table goes on over a page break: repeat its header
                head()
            self.lines(lines, "mono")
            self.y += gap
        self.y += 0.12

    def rule(self, width: float) -> None:
        from matplotlib.lines import Line2D

        y = 1 - (self.y + 0.03) / PAGE[1]
        self.pages[-1].add_artist(Line2D([MARGIN / PAGE[0], (MARGIN + width) / PAGE[0]], [y, y], color="0.35",
                                         linewidth=0.6))
        self.y += 0.07

    def block(self, block: Block) -> None:
        if isinstance(block, Heading):
            style = f"h{min(block.level, 3)}"
            self.y += 0.12 if block.level > 1 else 0.0
            self.room(self.height(style) + 4 * self.height("body"))
            self.lines(textwrap.wrap(block.text, self.chars(style, PAGE[0] - 2 * MARGIN)), style)
            self.y += 0.04
        elif isinstance(block, Para):
            self.paragraph(block.text, "lead" if block.lead else "body")
        elif isinstance(block, Table):
            self.table(block.header, block.rows)
        elif isinstance(block, Bullets):
            for item in block.items:
                self.paragraph(item, x=0.2, mark="•")
        elif isinstance(block, Code):
            width = self.chars("mono", PAGE[0] - 2 * MARGIN)
            self.lines([w for line in block.text.splitlines() for w in textwrap.wrap(line, width) or [""]], "mono")
            self.y += 0.12

    def figure(self, ref: FigureRef, spec: FigureSpec, doc: Doc) -> None:
        page = self.new_page()
        self.lines([f"Figure {ref.number}. {ref.title}"], "h2")
        top, width = self.y + 0.1, spec.size[0]
        side = (PAGE[0] - width) / 2
        grid = page.add_gridspec(3, 3, left=0, right=1, bottom=0, top=1, wspace=0, hspace=0,
                                 width_ratios=[side, width, side],
                                 height_ratios=[top, spec.size[1], PAGE[1] - top - spec.size[1]])
        sub = page.add_subfigure(grid[1, 1])
        page.set_layout_engine("constrained")
        draw(spec, sub, doc)
        self.y = top + spec.size[1] + 0.15
        self.paragraph(ref.caption, "caption")


def pdf_pages(doc: Doc) -> list[Figure]:
    """The PDF's pages as letter-sized matplotlib figures: the summary text (title, recommendation, protocol,
    accuracy, controls, Pareto front), one page per figure, then caveats, methods and how to reproduce.

    Raises:
        AdvisorError: the document's ``kind`` is not ``plan`` or ``compare``.
    """
    blocks = report_blocks(doc)
    specs = {spec.key: spec for spec, _ in figure_specs(doc)}
    pages = _Pages(doc.get("title") or "lr-advisor report")
    first_figure = next(i for i, b in enumerate(blocks) if isinstance(b, Heading) and b.text == "Figures")
    refs = [b for b in blocks if isinstance(b, FigureRef)]
    with style():
        for block in blocks[:first_figure]:
            pages.block(block)
        for ref in refs:
            if ref.missing is None:
                pages.figure(ref, specs[ref.key], doc)
        pages.new_page()
        absent = [f"Figure {r.number}, {r.title.lower()}: not shown, {r.missing}." for r in refs if r.missing]
        if absent:
            pages.paragraph(" ".join(absent))
        for block in blocks[first_figure + 1 + len(refs):]:
            pages.block(block)
    return pages.pages


def _created(doc: Doc) -> datetime | None:
    try:
        return datetime.fromisoformat(str(doc.get("created")))
    except ValueError:
        return None


def render_pdf(doc: Doc, path: str | os.PathLike[str]) -> int:
    """Write the report as a multi-page PDF with matplotlib's ``PdfPages`` (no system libraries).

    The metadata (Title, Author ``lr-advisor``, CreationDate from ``doc["created"]``) is fixed by the document,
    so the same document gives a byte-identical file.

    Args:
        doc: a plan or compare result document.
        path: the file to write.

    Returns:
        The number of pages written.
    """
    from matplotlib.backends.backend_pdf import PdfPages

    pages = pdf_pages(doc)
    version = (doc.get("versions") or {}).get("lr-advisor", "")
    metadata = {"Title": doc.get("title") or "lr-advisor report", "Author": "lr-advisor",
                "Subject": recommendation_sentence(doc), "Creator": f"lr-advisor {version}".strip(),
                "CreationDate": _created(doc)}
    with style(), PdfPages(path, metadata=metadata) as pdf:
        for page in pages:
            pdf.savefig(page)
    return len(pages)


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
            render_pdf(doc, staged[-1][0])
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
    "pdf_pages",
    "protocol_phrase",
    "recommendation_sentence",
    "render_html",
    "render_markdown",
    "render_pdf",
    "report_blocks",
    "write_reports",
]

"""Proposal-ready reports of a plan or compare result: Markdown, one self-contained HTML file, and a PDF.

Everything is rendered from the result document alone (the JSON-able dict the search produces, also stored in
MLflow), so a report can be re-rendered at any time. The document is first turned into a list of blocks
(headings, paragraphs, tables, bullet lists, code, figures) by :func:`report_blocks`; the three renderers only
lay those blocks out, so every format says exactly the same thing. The PDF is made with matplotlib's
``PdfPages`` (no system libraries): text pages laid out line by line with ``textwrap``, then one page per figure,
then the methods, caveats and reproduction pages. Figures come from :mod:`advisor.figures`.

:func:`write_reports` writes ``report.md`` (with PNGs at 300 dpi in ``figures/``), ``report.html`` and
``report.pdf`` atomically: everything is rendered to temporary files first and moved into place only when all
formats succeeded.
"""

from __future__ import annotations

import base64
import html
import os
import tempfile
import textwrap
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from advisor.errors import AdvisorError
from advisor.figures import (
    FigureSpec,
    chance_of,
    draw,
    figure_specs,
    make_figures,
    png_bytes,
    protocol_of,
    recommended,
    style,
    target_word,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Doc = Mapping[str, Any]
FORMATS = ("md", "html", "pdf")
CITATION = ("Nayebi, Srivastava, Ganguli & Yamins, \"Identifying Learning Rules From Neural Network Observables\", "
            "NeurIPS 2020 (arXiv:2010.11765)")
OBSERVABLE_WORDS = {"activations": ("units", "activations"), "activity_change": ("units", "activity changes"),
                    "weights": ("synapses", "weights")}
CLASSIFIER_WORDS = {"svm": "linear support-vector machine (signed-log, standardised statistics, C = 1)",
                    "ridge": "ridge classifier (penalty 0.1 per feature; signed-log, standardised statistics)",
                    "lda": "linear discriminant analysis with Ledoit-Wolf covariance shrinkage (signed-log, "
                           "standardised statistics)",
                    "logreg": "multinomial logistic regression (signed-log, standardised statistics, C = 1)",
                    "rf": "random forest (200 trees)", "gbt": "gradient-boosted tree ensemble (150 iterations)",
                    "conv1d": "one-dimensional convolutional network over sessions (the paper's Conv1D MLP)"}
SPLIT_WORDS = {"none": "stratified 75/25 train/test splits over networks",
               "architecture": "leave-one-architecture-out splits", "task": "leave-one-task-out splits"}
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
    """A figure of :mod:`advisor.figures`, numbered; ``missing`` says why it cannot be drawn (None: it can)."""

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
    return f"{_num((entry or {}).get('accuracy'))} (95% CI {_ci(entry)})"


def _cost(cost: float | None, unit: str | None) -> str:
    if cost is None:
        return "n/a"
    digits = 0 if abs(cost) >= 100 else 1 if abs(cost) >= 1 else 2
    value = f"{cost:,.{digits}f}"
    return f"{value} {unit}" if unit else value


def _and(items: Iterable[Any]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    words = [str(i) for i in items]
    return " and ".join(filter(None, [", ".join(words[:-1]), *words[-1:]]))


def _count(n: int) -> str:
    return NUMBER_WORDS[n] if 0 <= n < len(NUMBER_WORDS) else str(n)


def _window(window: Sequence[float] | None) -> str:
    start, end = window or (0.0, 1.0)
    if start <= 0 and end >= 1:
        return "spread evenly over learning"
    if start <= 0:
        return f"spread evenly over the first {end:.0%} of learning"
    if end >= 1:
        return f"spread evenly over the last {1 - start:.0%} of learning"
    return f"spread evenly from {start:.0%} to {end:.0%} of learning"


def _noise(p: Mapping[str, Any]) -> str:
    model, level, repeats = p.get("noise_model", "gaussian"), p.get("noise"), p.get("repeats") or 1
    extra = f" ({repeats} repeats)" if repeats > 1 else ""
    if model == "none" or level is None:
        return "without measurement noise"
    if model == "poisson":
        return f"with ≥ {level:g} spikes per stimulus{extra}"
    return f"with noise ≤ {level:.2f}{extra}" if level > 0 else f"without measurement noise{extra}"


def protocol_phrase(p: Mapping[str, Any]) -> str:
    """``150 units of activations in the deep layers at 6 sessions spread evenly over learning, with noise ≤ 0.35
    (3 repeats)``: a recording protocol in words."""
    unit, observable = OBSERVABLE_WORDS.get(p.get("observable", ""), ("units", str(p.get("observable"))))
    sessions = p.get("n_sessions")
    where = f"the {_and(p['layers'])} layers" if p.get("layers") else "all layers"
    text = (f"{p.get('n_units')} {unit} of {observable} in {where} at {sessions} session{'s' if sessions != 1 else ''}"
            f" {_window(p.get('window'))}, {_noise(p)}")
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


def _headline(p: Mapping[str, Any], doc: Doc) -> str:
    return f"{_num(p.get('accuracy'))} accuracy (95% CI {_ci(p)}; chance {_num(chance_of(doc))})"


def recommendation_sentence(doc: Doc) -> str:
    """The recommendation in one sentence (the CLI prints it; every report leads with it).

    Args:
        doc: a plan or compare result document.

    Returns:
        For a feasible plan: "Record ≥ 150 units of activations in the deep layers at 6 sessions spread evenly
        over learning, with noise ≤ 0.35 (3 repeats): the learning rule (one of sgdm, adam, fa, ia) is
        identified with 0.93 accuracy (95% CI 0.89-0.96; chance 0.25)." Otherwise a sentence saying that nothing
        within the bounds reaches the target, with the best reachable accuracy and its protocol; for a compare,
        the cheapest sufficient modality (or the most accurate one when none suffices).
    """
    _check_kind(doc)
    return _compare_sentence(doc) if doc["kind"] == "compare" else _plan_sentence(doc)


def _compare_sentence(doc: Doc) -> str:
    target, what = _target(doc), _candidates(doc)
    modalities = doc.get("modalities") or []
    sufficient = sorted(((m, p) for m in modalities if (p := recommended(m)) is not None),
                        key=lambda mp: mp[1].get("cost") or 0.0)
    if sufficient:
        (m, p), others = sufficient[0], sufficient[1:]
        also = _and(f"{o['name']} ({_cost(q.get('cost'), q.get('cost_unit') or o.get('cost_unit'))})"
                    for o, q in others)
        return (f"The cheapest modality that identifies {what} with accuracy ≥ {target} at the lower 95% CI "
                f"bound is {m['name']}: record ≥ {protocol_phrase(p)}, for "
                f"{_cost(p.get('cost'), p.get('cost_unit') or m.get('cost_unit'))} and {_headline(p, doc)}."
                + (f" Also sufficient, at higher cost: {also}." if others else ""))
    names = _and(m["name"] for m in modalities)
    reached = [(m, p) for m in modalities if (p := protocol_of(m)[0]) is not None]
    if not reached:
        return f"None of the modalities compared ({names}) identifies {what} with accuracy ≥ {target}."
    m, p = max(reached, key=lambda mp: mp[1].get("accuracy") or 0.0)
    return (f"None of the modalities compared ({names}) identifies {what} with accuracy ≥ {target} at the "
            f"lower 95% CI bound; the most accurate is {m['name']}, with {_headline(p, doc)} when recording "
            f"{protocol_phrase(p)}.")


def _plan_sentence(doc: Doc) -> str:
    target, what = _target(doc), _candidates(doc)
    chosen = recommended(doc)
    if chosen is not None:
        return f"Record ≥ {protocol_phrase(chosen)}: {what} is identified with {_headline(chosen, doc)}."
    head = (f"No protocol within the bounds ({_bounds(doc)}) identifies {what} with accuracy ≥ {target} at the "
            f"lower 95% CI bound")
    best = doc.get("best")
    if best is None:
        return head + "; no protocol could be evaluated."
    return f"{head}; the best reachable is {_headline(best, doc)}, recording {protocol_phrase(best)}."


def _population(doc: Doc) -> str:
    b = doc.get("bank", {})
    return (f"We simulated {b.get('n_networks')} artificial neural networks (population preset "
            f"{b.get('preset')}, bank {b.get('hash')}) learning under {len(b.get('rules') or [])} candidate rules "
            f"({', '.join(b.get('rules') or [])}), with {_and(b.get('architectures') or [])} architectures on "
            f"{_and(b.get('tasks') or [])} tasks, {b.get('n_steps')} training steps each, recorded at "
            f"{b.get('n_checkpoints')} checkpoints over learning (initialization included).")


def _analysis(doc: Doc) -> str:
    q = doc.get("question", {})
    splits = q.get("n_splits") or 10
    heldout = q.get("heldout", "none")
    split_text = (f"{_count(splits)} {SPLIT_WORDS['none']}" if heldout == "none"
                  else SPLIT_WORDS.get(heldout, f"held-out {heldout} splits"))
    classifier = CLASSIFIER_WORDS.get(q.get("classifier", ""), str(q.get("classifier")))
    return (" For every recorded layer group and session we computed 21 statistics of the recorded values (raw, "
            "absolute and squared values, each summarised by mean, median, third quartile, variance, L2 norm, "
            "Pearson's second skewness coefficient and kurtosis). A " + classifier + f" identified each network's "
            f"{target_word(doc)} from these statistics. It was evaluated on {split_text}, so that no network was on "
            "both sides of a split; accuracy is the mean over test splits, with a 95% confidence interval from a "
            "percentile bootstrap over networks.")


def _search(doc: Doc, scope: str, subject: str = "The protocol was chosen by an Optuna search") -> str:
    q = doc.get("question", {})
    return (f" {subject} (TPE sampler, {q.get('trials')} trials, seed "
            f"{q.get('seed')}) over {scope}, minimising the recording cost subject to the lower 95% CI bound being at "
            f"least the target accuracy {_target(doc)}.")


def methods_paragraph(doc: Doc) -> str:
    """A methods paragraph with every number (population, protocol, statistics, classifier, splits, CI method,
    search, controls) and the citation of the paper, ready to paste into a proposal.

    Args:
        doc: a plan or compare result document.
    """
    _check_kind(doc)
    text = _population(doc)
    if doc["kind"] == "compare":
        names = _and(m["name"] for m in doc.get("modalities") or [])
        text += _analysis(doc) + _search(doc, "the protocols that modality allows, under its own cost model and limits",
                                         f"Each modality's protocol ({names}) was chosen by its own Optuna search")
        for m in doc.get("modalities") or []:
            p, feasible = protocol_of(m)
            if p is not None:
                text += (f" Modality {m['name']}: {'cheapest sufficient' if feasible else 'most accurate'} "
                         f"protocol {protocol_phrase(p)}, {_acc(p)}, cost {_cost(p.get('cost'), m.get('cost_unit'))}.")
            else:
                text += f" Modality {m['name']}: {m.get('reason') or 'no protocol evaluated'}."
    else:
        protocol, feasible = protocol_of(doc)
        if protocol is not None:
            text += (f" Virtual recordings followed the {'recommended' if feasible else 'most accurate'} protocol: "
                     f"{protocol_phrase(protocol)}.")
        text += _analysis(doc)
        if protocol is not None:
            text += (f" It reached {_num(protocol.get('accuracy'))} accuracy (95% CI {_ci(protocol)}; balanced "
                     f"accuracy {_num(protocol.get('balanced_accuracy'))}; chance {_num(chance_of(doc))}).")
        if doc.get("control"):
            text += (" The task-performance control, the same classifier given only the learning curve (training "
                     f"loss and accuracy at the same sessions), reached {_acc(doc['control'])}.")
        if doc.get("heldout_architecture"):
            h = doc["heldout_architecture"]
            text += (f" Trained on the other architectures and tested on a held-out one, it reached "
                     f"{_num(h.get('accuracy'))} (95% CI {_ci(h)}; learning-curve control "
                     f"{_num(h.get('control_accuracy'))}).")
        text += _search(doc, f"recording protocols ({_bounds(doc)})")
        if doc.get("verification"):
            v = doc["verification"]
            text += (f" An independent re-check with fresh seeds ({', '.join(map(str, v.get('seeds') or []))}) "
                     f"gave {_acc(v)}.")
    return text + f" The approach follows {CITATION}."


# ------------------------------------------------------------------------------------------- the sections
def _question(doc: Doc) -> list[Block]:
    q = doc.get("question", {})
    modality = doc.get("modality") or {}
    modalities = ", ".join(q.get("modalities") or []) or str(q.get("modality") or modality.get("key") or "generic")
    limits = [f"observable {q.get('observable') or 'any'}", f"modality {modalities}",
              f"≤ {q['max_units']} units per network" if q.get("max_units") else "",
              f"≤ {q['max_sessions']} sessions" if q.get("max_sessions") else "",
              f"classifier {q.get('classifier')}", f"held out {q.get('heldout', 'none')}",
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
    rows = (("observable", str(p.get("observable"))), (f"{unit} per network", str(p.get("n_units"))),
            ("layer groups", ", ".join(p.get("layers") or [])), ("sessions", str(p.get("n_sessions"))),
            ("placement", _window(p.get("window"))),
            ("sampling", "chronic: the same units every session" if p.get("chronic", True)
             else "acute: new units each session"),
            ("measurement noise", noise), ("repeats averaged per stimulus", str(p.get("repeats") or 1)),
            ("cost", _cost(p.get("cost"), cost_unit)), ("search trial", str(p.get("trial"))))
    intro = ("The recommended protocol, the cheapest one that meets the target:" if feasible else
             "No protocol meets the target; the most accurate one found:")
    name = modality.get("name") or doc.get("question", {}).get("modality") or "generic"
    formula = f": cost = {modality['cost_formula']}" if modality.get("cost_formula") else ""
    return [*blocks, Para(intro), Table(("property", "value"), rows),
            Para(f"Cost: {_cost(p.get('cost'), cost_unit)} of recording per network, from the cost model of {name}"
                 + (f" (modality {modality['key']})" if modality.get("key") else "") + f"{formula}.")]


def _accuracy(doc: Doc) -> list[Block]:
    protocol, _ = protocol_of(doc)
    v = doc.get("verification")
    rows = [("accuracy on held-out networks", _num((protocol or {}).get("accuracy")), _ci(protocol)),
            ("balanced accuracy", _num((protocol or {}).get("balanced_accuracy")), ""),
            ("chance", _num(chance_of(doc)), ""), ("target (lower 95% CI bound)", _target(doc), "")]
    if v:
        rows.append((f"re-check, fresh seeds {', '.join(map(str, v.get('seeds') or []))}", _num(v.get("accuracy")),
                     _ci(v)))
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
    return [Heading("Predicted accuracy"), Table(("measure", "value", "95% CI"), tuple(rows)), Para(text)]


def _beats(entry: Mapping[str, Any] | None, control_high: float | None) -> bool | None:
    if not entry or not entry.get("ci") or entry["ci"][0] is None or control_high is None:
        return None
    return entry["ci"][0] > control_high


def _controls(doc: Doc) -> list[Block]:
    protocol, _ = protocol_of(doc)
    control, held = doc.get("control"), doc.get("heldout_architecture")
    observable = (protocol or {}).get("observable", "the observable")
    rows = [(f"{observable} (this protocol)", _num((protocol or {}).get("accuracy")), _ci(protocol))]
    text = ["Identification is meaningful only where the observable beats the control: a classifier that sees only "
            "the learning curve (training loss and accuracy at the same sessions) measures how much of the "
            "\"identification\" is just learning speed."]
    if control:
        rows.append(("task-performance control: learning curve only", _num(control.get("accuracy")), _ci(control)))
        beats = _beats(protocol, (control.get("ci") or [None, control.get("accuracy")])[1])
        text.append({True: f"Here it does: {_acc(protocol)} against {_acc(control)} for the control, so the rule is "
                           "identified from more than learning speed.",
                     False: f"Here it does not: {_acc(protocol)} against {_acc(control)} for the control overlap, so "
                            "the identification may reflect only how fast the networks learn.",
                     None: "The comparison is undetermined (a number is missing)."}[beats])
    else:
        text.append("No task-performance control was computed, so it is unknown how much is learning speed alone.")
    if held:
        rows += [("held-out architecture", _num(held.get("accuracy")), _ci(held)),
                 ("held-out architecture, learning-curve control", _num(held.get("control_accuracy")), "")]
        beats = _beats(held, held.get("control_accuracy"))
        text.append(f"Trained on the other architectures and tested on an unseen one, it reaches {_acc(held)} "
                    f"against {_num(held.get('control_accuracy'))} for the control: " +
                    ("it transfers beyond the architectures it was trained on." if beats else
                     "it does not clearly transfer to an unseen architecture, so it may not carry over to a brain "
                     "whose architecture differs from the simulated ones."))
    else:
        text.append("No held-out-architecture score was computed.")
    return [Heading("Controls"), Table(("classifier input", "accuracy", "95% CI"), tuple(rows)), Para(" ".join(text))]


def _pareto_table(front: Sequence[Mapping[str, Any]], unit: str | None, chosen: Any,
                  rejected: Iterable[Any] = ()) -> Table:
    failed = set(rejected)

    def verdict(t: Mapping[str, Any]) -> str:
        number = t.get("number")
        note = ", recommended" if number == chosen else ", failed re-check" if number in failed else ""
        return ("yes" if t.get("feasible") else "no") + note

    rows = tuple((str(t.get("number")), _cost(t.get("cost"), None), _num(t.get("accuracy")), _ci(t), verdict(t),
                  _short(t)) for t in front)
    return Table(("trial", f"cost ({unit})" if unit else "cost", "accuracy", "95% CI", "meets target", "protocol"),
                 rows)


def _pareto(doc: Doc) -> list[Block]:
    protocol, feasible = protocol_of(doc)
    front = doc.get("pareto") or []
    blocks: list[Block] = [Heading("Pareto front")]
    if not front:
        return [*blocks, Para("The result has no Pareto front.")]
    unit = (protocol or {}).get("cost_unit") or (doc.get("modality") or {}).get("cost_unit")
    chosen = (protocol or {}).get("trial") if feasible else None
    rejected = [r["trial"].get("number") for r in doc.get("rejected_by_recheck") or []]
    text = (f"The {len(front)} protocols no other protocol beats on both cost and accuracy, of "
            f"{len(doc.get('trials') or [])} tried, cheapest first.")
    if chosen is not None and chosen not in {t.get("number") for t in front}:
        text += (f" The recommended protocol (trial {chosen}) is not on the front: the cheaper or more accurate "
                 "protocols that beat it in the search did not hold up on re-check.")
    return [*blocks, Para(text), _pareto_table(front, unit, chosen, rejected)]


def _insufficient(doc: Doc) -> list[Block]:
    items = doc.get("insufficient") or []
    blocks: list[Block] = [Heading("What would not suffice")]
    if not items:
        return [*blocks, Para("The result lists no insufficient alternatives.")]
    unit = (protocol_of(doc)[0] or {}).get("cost_unit")
    rows = tuple((i.get("description", ""), _num(i.get("accuracy")), _ci(i), _cost(i.get("cost"), unit),
                  i.get("why", "")) for i in items)
    return [*blocks, Para("Cheaper or different recordings that miss the target:"),
            Table(("recording", "accuracy", "95% CI", "cost", "why not"), rows)]


def _figures(doc: Doc) -> list[Block]:
    refs = [FigureRef(spec.key, n, spec.title, spec.caption(doc) if missing is None else "", missing)
            for n, (spec, missing) in enumerate(figure_specs(doc), start=1)]
    return [Heading("Figures"), *refs]


def _caveats(doc: Doc) -> list[Block]:
    b = doc.get("bank", {})
    rules = ", ".join(doc.get("question", {}).get("rules") or b.get("rules") or [])
    items = (f"Only the simulated rules were considered ({rules}). A circuit may use none of them, a mixture, or a "
             "rule outside this set; the classifier would still name one of these.",
             "Different rules can produce similar activity (Ramesh et al., eLife 2024): failing to tell two rules "
             "apart does not show that they are the same, and a rule identified here could be mimicked by one that "
             "was not simulated.",
             f"Simulated networks are not brains: the units are artificial-network units of "
             f"{_and(b.get('architectures') or [])} networks trained on {_and(b.get('tasks') or [])} tasks for "
             f"{b.get('n_steps')} steps. Real neurons, circuits, tasks and learning durations differ; the "
             "held-out-architecture score indicates how far results transfer to an unseen architecture.",
             f"All numbers are for the simulated population {b.get('preset')} (bank {b.get('hash')}, "
             f"{b.get('n_networks')} networks) and the modality cost models used; another population or cost model "
             "can give different numbers.",
             "Gaussian noise levels are relative to each observable's spread in each network and layer group "
             "(measure that spread on your rig to translate them); Poisson levels are mean spike counts per stimulus.")
    return [Heading("Caveats"), Bullets(items), Heading("Methods"), Para(methods_paragraph(doc))]


def _reproduce(doc: Doc) -> list[Block]:
    q, b = doc.get("question", {}), doc.get("bank", {})
    rows = [("created", str(doc.get("created"))), ("run time", f"{doc.get('elapsed_s', 0):.1f} s"),
            ("search seed", str(q.get("seed"))), ("bank", f"{b.get('preset')}, hash {b.get('hash')}"),
            ("MLflow run id", str(doc.get("run_id"))), ("tracking URI", str(doc.get("tracking_uri"))),
            ("browse the run", str(doc.get("run_url")))]
    if doc.get("verification"):
        rows.insert(3, ("re-check seeds", ", ".join(map(str, doc["verification"].get("seeds") or []))))
    versions = tuple((k, str(v)) for k, v in (doc.get("versions") or {}).items())
    return [Heading("How to reproduce"), Para("Run the same command on the same bank:"),
            Code(str(doc.get("command"))), Table(("item", "value"), tuple(rows)),
            Table(("package", "version"), versions)]


def _plan_blocks(doc: Doc) -> list[Block]:
    return [*_question(doc), *_protocol(doc), *_accuracy(doc), *_controls(doc), *_pareto(doc), *_insufficient(doc),
            *_figures(doc), *_caveats(doc), *_reproduce(doc)]


def _compare_blocks(doc: Doc) -> list[Block]:
    rows, sentences, fronts = [], [], []
    for m in doc.get("modalities") or []:
        p, chosen = protocol_of(m)[0], recommended(m)
        unit = (p or {}).get("cost_unit") or m.get("cost_unit")
        reason = m.get("reason") or ("below target" if p else "no protocol evaluated")
        if p is None:
            rows.append((m["name"], f"no: {reason}", "n/a", "n/a", "-"))
            sentences.append(f"{m['name']}: not sufficient ({reason}).")
        else:
            rows.append((m["name"], "yes" if chosen else f"no: {reason}", _cost(p.get("cost"), unit),
                         f"{_num(p.get('accuracy'))} ({_ci(p)})", _short(p)))
            sentences.append(
                f"{m['name']}: record ≥ {protocol_phrase(p)}; {_headline(p, doc)}, for {_cost(p.get('cost'), unit)}."
                if chosen else f"{m['name']}: not sufficient ({reason}); its most accurate protocol, "
                f"{protocol_phrase(p)}, reaches {_headline(p, doc)}, for {_cost(p.get('cost'), unit)}.")
        front = m.get("pareto") or []
        fronts += [Heading(f"Pareto front: {m['name']}", 3),
                   _pareto_table(front, unit, (chosen or {}).get("trial")) if front else Para("No trials.")]
    side = Table(("modality", "meets target", "cost", "accuracy (95% CI)", "protocol"), tuple(rows))
    return [*_question(doc), Heading("Modalities side by side"), side, Heading("Per modality"),
            Bullets(tuple(sentences)), *fronts, *_figures(doc), *_caveats(doc), *_reproduce(doc)]


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
        figures: figures from :func:`~advisor.figures.make_figures` (drawn here when None).
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

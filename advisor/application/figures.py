"""The figures of a plan or compare report, drawn from the result document alone.

Each figure is a :class:`FigureSpec` in :data:`FIGURES`: a key, the document kind it belongs to, a title, a
caption written from the document's numbers, a test of whether its data is present, and a function that draws
it into any matplotlib container (a standalone :class:`~matplotlib.figure.Figure`, which the PNGs, the HTML and
the PDF embed, or a subfigure). No pyplot: figures are created with ``matplotlib.figure.Figure`` directly, so
no global state and no display backend are involved. matplotlib is imported inside functions only, which keeps
``advisor --help`` instant.

The figures are meant to be pasted into a grant proposal unchanged: at most 7 inches wide (a page's text width),
8-10 pt fonts, axis labels with units (costs in hours per animal), legends, 95% confidence intervals on every
accuracy, chance and target levels drawn, axes fitted to the data, and words a biologist knows: rules by name
(:data:`RULE_WORDS`, :func:`rule_words`) and statistics in words (:func:`statistic_label`: ``deep.sq_norm`` is
"deep layers: L2 norm of squared activity"). :func:`png_bytes` renders one at any resolution (300 dpi for print).
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from advisor.application.documents import OBSERVABLE_WORDS, Document

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure, FigureBase

Doc = Document

RC: dict[Any, Any] = {
    "font.size": 9,
    "axes.titlesize": 9.5,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "figure.titlesize": 10.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "pdf.fonttype": 42,
    "svg.fonttype": "none",
}
"""matplotlib settings of every report figure (42: TrueType fonts in PDFs, editable in journals' tools)."""

OBSERVABLE_COLORS = {"activations": "#1f77b4", "activity_change": "#2ca02c", "weights": "#ff7f0e"}
OBSERVABLE_LABELS = {key: name for key, (_, name) in OBSERVABLE_WORDS.items()}
MODALITY_COLORS = ("#1f77b4", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")
TARGET_STYLE: dict[str, Any] = {"color": "#d62728", "linestyle": "--", "linewidth": 1.0}
CHANCE_STYLE: dict[str, Any] = {"color": "0.45", "linestyle": ":", "linewidth": 1.0}
CONTROL_STYLE: dict[str, Any] = {"color": "black", "linestyle": "-.", "linewidth": 1.0}

RULE_WORDS = {"sgd": "SGD (backprop)", "sgdm": "SGD with momentum (backprop)", "adam": "Adam (backprop)",
              "rmsprop": "RMSprop (backprop)", "fa": "feedback alignment", "sign_symmetry": "sign symmetry",
              "kp": "Kolen-Pollack", "ia": "information alignment", "dfa": "direct feedback alignment",
              "hebbian": "Hebbian (Oja)", "node_perturbation": "node perturbation"}
"""Learning-rule key (``simulator.rules.RULES``) → the words a report uses for it."""
FAMILY_WORDS = {"backprop": "backpropagation", "feedback_alignment": "feedback alignment (and relatives)",
                "local_hebbian": "local Hebbian learning", "perturbation": "perturbation learning"}
"""Learning-rule family (``LearningRule.family``) → the words a report uses for it."""
GROUP_WORDS = {"early": "early layers", "middle": "middle layers", "deep": "deep layers"}
"""Layer group (``simulator.constants.GROUPS``) → words."""
FUNCTION_WORDS = {"raw": "", "abs": "absolute ", "sq": "squared "}
"""Unit-statistic function (``advisor.science.statistics.FUNCTIONS``) → the adjective before the observable."""
SUMMARY_WORDS = {"mean": "mean", "median": "median", "q3": "third quartile", "var": "variance", "norm": "L2 norm",
                 "skew": "skewness", "kurtosis": "kurtosis"}
"""Unit statistic (``advisor.science.statistics.STATISTICS``) → words."""
POPULATION_WORDS = {"dimensionality": "dimensionality (participation ratio)",
                    "corr_mean": "mean pairwise correlation", "corr_sd": "spread of pairwise correlations",
                    "lifetime_sparseness": "lifetime sparseness", "population_sparseness": "population sparseness",
                    "rsa_first": "similarity to the first session (RSA)",
                    "rsa_previous": "similarity to the previous session (RSA)",
                    "tuning_stability": "tuning stability since the first session",
                    "spread_change": "change of response spread since the first session"}
"""Population statistic (``advisor.science.population.POPULATION_STATISTICS``) → words."""
OBSERVABLE_NOUNS = {"activations": "activity", "activity_change": "activity change", "weights": "weights"}
"""Observable → the noun a statistic's words end in."""


def rule_words(key: str, *, family: bool = False) -> str:
    """``sgdm`` → ``SGD with momentum (backprop)`` (a family with ``family``); an unknown key is returned as it is."""
    return (FAMILY_WORDS if family else RULE_WORDS).get(key, key)


def statistic_label(name: str, observable: str | None = None) -> str:
    """A classifier feature in words: ``deep.sq_norm`` → ``deep layers: L2 norm of squared activity``,
    ``early.corr_mean`` → ``early layers: mean pairwise correlation``.

    Args:
        name: a feature name, ``"{group}.{function}_{statistic}"`` or ``"{group}.{population statistic}"``
            (``advisor.science.features``); a name without a group is labelled without one.
        observable: what was recorded (``activations``, ``activity_change``, ``weights``); None: "values".

    Returns:
        The words; an unknown statistic keeps its name.
    """
    group, _, statistic = name.rpartition(".")
    noun = OBSERVABLE_NOUNS.get(observable or "", "values")
    function, _, summary = statistic.partition("_")
    if statistic in POPULATION_WORDS:
        words = POPULATION_WORDS[statistic]
    elif function in FUNCTION_WORDS and summary in SUMMARY_WORDS:
        words = f"{SUMMARY_WORDS[summary]} of {FUNCTION_WORDS[function]}{noun}"
    else:
        words = statistic
    return f"{GROUP_WORDS.get(group, group)}: {words}" if group else words


@contextmanager
def style() -> Iterator[None]:
    """Apply :data:`RC` while drawing or saving report figures (fonts are fixed when an artist is created)."""
    import matplotlib

    with matplotlib.rc_context(RC):
        yield


# ------------------------------------------------------------------------------------------ document access
def ci_of(entry: Mapping[str, Any] | None) -> tuple[float, float] | None:
    """The ``ci`` pair of a document entry, or None when the entry or either bound is missing."""
    ci = (entry or {}).get("ci")
    if not ci or len(ci) != 2 or ci[0] is None or ci[1] is None:
        return None
    return float(ci[0]), float(ci[1])


def target_word(doc: Mapping[str, Any]) -> str:
    """``rule`` or ``family``: what the classifier identifies."""
    return "family" if doc.get("question", {}).get("target") == "family" else "rule"


def recommended(entry: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The recommended protocol of a plan document or of one entry of a compare document's ``modalities``: its
    ``recommendation`` when it is feasible, else None."""
    return entry.get("recommendation") if entry.get("feasible") else None


def protocol_of(entry: Mapping[str, Any]) -> tuple[Mapping[str, Any] | None, bool]:
    """The protocol whose numbers a plan (or a compare entry) reports: (the recommendation, True) when it is
    feasible, else (the search's candidate, False) when the search chose one that then failed on the set-aside
    networks, else (the most accurate protocol found, False); (None, False) when there is none."""
    chosen = recommended(entry)
    if chosen is not None:
        return chosen, True
    return entry.get("candidate") or entry.get("best"), False


def setaside_of(entry: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The set-aside test of a plan (or compare entry): one fit on the search networks, tested once on the
    set-aside ones; None for a document from before the set-aside networks."""
    final = entry.get("setaside")
    if final is None:
        final = (protocol_of(entry)[0] or {}).get("setaside")
    return final if isinstance(final, Mapping) and final.get("accuracy") is not None else None


def controls_of(entry: Mapping[str, Any], *, search: bool = False) -> dict[str, Mapping[str, Any]]:
    """Control name → entry (``accuracy``, ``ci``, ``classifier``): measured on the set-aside networks, or with
    ``search`` on the search networks' splits. A document from before the two controls has one learning-curve
    ``control``, returned as ``behaviour``."""
    controls = entry.get("search_controls" if search else "controls")
    if controls:
        return {name: c for name, c in controls.items() if c and c.get("accuracy") is not None}
    old = entry.get("control")
    return {"behaviour": old} if old and old.get("accuracy") is not None else {}


def strongest_of(entry: Mapping[str, Any], *, search: bool = False) -> tuple[str, Mapping[str, Any]] | None:
    """The strongest control (name, entry): the document's ``strongest_control`` for the set-aside controls, else
    the one with the highest upper CI bound; None without controls."""
    controls = controls_of(entry, search=search)
    if not controls:
        return None
    named = entry.get("strongest_control")
    if not search and named in controls:
        return named, controls[named]
    name = max(controls, key=lambda k: ((ci_of(controls[k]) or (0.0, controls[k]["accuracy"]))[1],
                                        controls[k]["accuracy"]))
    return name, controls[name]


def chance_of(doc: Mapping[str, Any]) -> float | None:
    """The chance accuracy: the document's ``chance``, else (compare documents, which have none) one over the
    number of rules when rules are identified (every rule gets the same networks); None when unknown."""
    if doc.get("chance") is not None:
        return float(doc["chance"])
    rules = doc.get("question", {}).get("rules") or doc.get("bank", {}).get("rules")
    return 1.0 / len(rules) if rules and target_word(doc) == "rule" else None


def cost_label(units: Sequence[str | None]) -> str:
    """Axis label of a cost axis whose points come in ``units``."""
    distinct = sorted({u for u in units if u})
    if len(distinct) == 1:
        return f"recording cost ({distinct[0]} per animal)"
    return "recording cost per animal (each modality's own unit)" if distinct else "recording cost per animal"


def _errorbars(points: Sequence[Mapping[str, Any]]) -> list[list[float]]:
    """Asymmetric error-bar lengths of points with ``accuracy`` and ``ci`` (zero where a CI is missing)."""
    lows, highs = [], []
    for p in points:
        ci = ci_of(p) or (p["accuracy"], p["accuracy"])
        lows.append(max(p["accuracy"] - ci[0], 0.0))
        highs.append(max(ci[1] - p["accuracy"], 0.0))
    return [lows, highs]


def _accuracy_axis(ax: Axes, lowest: float) -> None:
    ax.set_ylim(max(0.0, math.floor(min(lowest, 0.9) * 10 - 0.5) / 10), 1.0)
    ax.grid(axis="y", color="0.9", linewidth=0.6)
    ax.set_axisbelow(True)


def _levels(ax: Axes, doc: Doc, target: float | None, horizontal: bool = True) -> None:
    """Draw the target (dashed red) and chance (dotted grey) accuracy levels."""
    line = ax.axhline if horizontal else ax.axvline
    if target is not None:
        line(target, label=f"target {target:.2f}", **TARGET_STYLE)
    chance = chance_of(doc)
    if chance is not None:
        line(chance, label=f"chance {chance:.2f}", **CHANCE_STYLE)


def _level_handles(doc: Doc) -> list[Any]:
    """Legend entries of the lines :func:`_levels` draws."""
    from matplotlib.lines import Line2D

    target, chance = _target(doc), chance_of(doc)
    handles = [Line2D([], [], **TARGET_STYLE, label=f"target {target:.2f}")] if target is not None else []
    return handles + ([Line2D([], [], **CHANCE_STYLE, label=f"chance {chance:.2f}")] if chance is not None else [])


def _log_if_wide(ax: Axes, values: Sequence[float], ratio: float = 20.0) -> None:
    """Use a log x axis, labelled with plain numbers (1, 2, 5, 10, 20, ...), when ``values`` span ``ratio`` or
    more."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    positive = [v for v in values if v and v > 0]
    if positive and max(positive) / min(positive) >= ratio:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


def _data_ticks(ax: Axes, xs: Sequence[float]) -> None:
    """On a log x axis, tick exactly the measured values (plain numbers, not powers of ten)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    ax.xaxis.set_major_locator(FixedLocator(sorted(set(xs))))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_locator(NullLocator())


def _target(doc: Doc) -> float | None:
    value = doc.get("question", {}).get("target_accuracy")
    return None if value is None else float(value)


# ------------------------------------------------------------------------------------------------- pareto
def _pareto_missing(doc: Doc) -> str | None:
    return None if doc.get("trials") else "the result has no search trials"


def _pareto_caption(doc: Doc) -> str:
    target = _target(doc)
    protocol, feasible = protocol_of(doc)
    chosen = "candidate" in doc and doc.get("candidate") is not None
    marked = "the star marks the recommended protocol" if feasible else (
        "the diamond marks the protocol the search chose, which fell short on the set-aside networks" if chosen
        else "the diamond marks the most accurate protocol found (none met the target)" if protocol else "")
    final = setaside_of(doc)
    cross = (f"; the cross with its 95% CI is the same protocol tested once on the {final.get('n_networks')} "
             "set-aside networks" if final is not None and protocol is not None else "")
    return (f"Recording cost per animal against rule-identification accuracy for the {len(doc['trials'])} protocols "
            "the search tried, coloured by observable; accuracies are search estimates (repeated 4-fold "
            "cross-validation on the search networks). Filled: meets the target "
            f"({target:.2f} for the lower 95% CI bound) beyond the controls; open: does not. The black line joins the "
            f"cost-accuracy Pareto front with its 95% CIs; {marked}{cross}. Dashed: target; dotted: chance.")


def _draw_pareto(container: FigureBase, doc: Doc) -> None:
    from matplotlib.lines import Line2D

    ax = container.subplots()
    trials, front = doc["trials"], doc.get("pareto") or []
    for observable in dict.fromkeys(t["observable"] for t in trials):
        color = OBSERVABLE_COLORS.get(observable, "0.3")
        for feasible in (True, False):
            pts = [t for t in trials if t["observable"] == observable and bool(t.get("feasible")) == feasible]
            if pts:
                ax.scatter([t["cost"] for t in pts], [t["accuracy"] for t in pts], s=18, linewidths=0.9,
                           facecolors=color if feasible else "none", edgecolors=color, alpha=0.8, zorder=2)
    if front:
        ax.errorbar([t["cost"] for t in front], [t["accuracy"] for t in front], yerr=_errorbars(front), color="black",
                    linewidth=1.0, elinewidth=0.8, capsize=2, marker="o", markersize=3, zorder=3)
    _levels(ax, doc, _target(doc))
    protocol, feasible = protocol_of(doc)
    handles = [Line2D([], [], marker="o", linestyle="", color=OBSERVABLE_COLORS.get(o, "0.3"),
                      label=OBSERVABLE_LABELS.get(o, o)) for o in dict.fromkeys(t["observable"] for t in trials)]
    handles += [Line2D([], [], marker="o", linestyle="", markerfacecolor="none", color="0.3",
                       label="below target or controls"),
                Line2D([], [], color="black", marker="o", markersize=3, label="Pareto front (95% CI)")]
    final = setaside_of(doc)
    if protocol and protocol.get("cost") is not None:
        chosen = doc.get("candidate") is not None
        marker, label = ("*", "recommended") if feasible else ("D", "chosen, fails set-aside" if chosen
                                                               else "most accurate found")
        ax.scatter([protocol["cost"]], [protocol["accuracy"]], marker=marker, s=190 if feasible else 70,
                   color="#ffbf00", edgecolors="black", linewidths=0.9, zorder=4)
        handles.append(Line2D([], [], marker=marker, linestyle="", markersize=11 if feasible else 7,
                              markerfacecolor="#ffbf00", markeredgecolor="black", label=label))
        if final is not None:
            ax.errorbar([protocol["cost"]], [final["accuracy"]], yerr=_errorbars([final]), color="#d62728",
                        marker="X", markersize=7, linestyle="", elinewidth=1.0, capsize=3, zorder=5)
            handles.append(Line2D([], [], marker="X", linestyle="", markersize=7, color="#d62728",
                                  label="same, set-aside networks"))
    handles += _level_handles(doc)
    _log_if_wide(ax, [t["cost"] for t in trials])
    _accuracy_axis(ax, min([t["accuracy"] for t in trials] + [(ci_of(t) or (1.0,))[0] for t in front]
                           + [chance_of(doc) or 1.0, (ci_of(final) or (1.0,))[0]]))
    unit = (protocol or {}).get("cost_unit") or (doc.get("modality") or {}).get("cost_unit")
    ax.set_xlabel(cost_label([unit]) + (", log scale" if ax.get_xscale() == "log" else ""))
    ax.set_ylabel("identification accuracy (95% CI)")
    ax.set_title(f"Cost vs. accuracy of {len(trials)} recording protocols")
    container.legend(handles=handles, loc="outside lower center", ncol=4, frameon=False)


# ------------------------------------------------------------------------------------------------- curves
CURVE_AXES = {
    "units": ("units recorded per animal", True),
    "sessions": ("sessions over learning", True),
    "noise": ("noise SD (relative to spread)", False),
}
"""Curve axis key → (x label, log scale)."""


def _curve_panels(doc: Doc) -> list[str]:
    curves = doc.get("curves") or {}
    return [axis for axis in CURVE_AXES if any((curves.get(o) or {}).get(axis) for o in curves)]


def _curves_missing(doc: Doc) -> str | None:
    return None if _curve_panels(doc) else "the result has no accuracy curves"


def _recommended_value(doc: Doc, axis: str) -> float | None:
    protocol, feasible = protocol_of(doc)
    key = {"units": "n_units", "sessions": "n_sessions", "noise": "noise"}[axis]
    return protocol.get(key) if protocol and feasible else None


CONTROL_WORDS = {"behaviour": "a classifier that sees only the whole learning curve",
                 "hyperparameters": "a classifier that sees only the learning rate, batch size and init scale"}


def _curve_control(doc: Doc) -> tuple[str, Mapping[str, Any]] | None:
    """The control the curves are compared with: the strongest on the search networks (the curves are scored
    there), else the set-aside one (older documents: the learning-curve control)."""
    return strongest_of(doc, search=True) or strongest_of(doc)


def _curves_caption(doc: Doc) -> str:
    top = _curve_control(doc)
    control_text = (f" Dash-dotted: the strongest control on the search networks, {top[0]} ({top[1]['accuracy']:.2f}"
                    f"), {CONTROL_WORDS.get(top[0], 'a classifier that sees no recording')}." if top else "")
    feasible = protocol_of(doc)[1]
    which = "recommended" if feasible else "chosen" if doc.get("candidate") is not None else "most accurate"
    marked = " The thin vertical line marks the recommended value." if feasible else ""
    return (f"Identification accuracy as one property of the recording varies and the others stay as in the {which} "
            "protocol, one line per observable, on the search networks (repeated 4-fold cross-validation; bands are "
            f"95% CIs).{marked} Dashed: target; dotted: chance.{control_text}")


def _draw_curves(container: FigureBase, doc: Doc) -> None:
    from matplotlib.lines import Line2D

    panels = _curve_panels(doc)
    curves = doc.get("curves") or {}
    axes = container.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    noise_model = (protocol_of(doc)[0] or {}).get("noise_model", "gaussian")
    top = _curve_control(doc)
    lowest = [chance_of(doc) or 1.0] + ([top[1]["accuracy"]] if top else [])
    for ax, axis in zip(axes, panels, strict=True):
        label, log = CURVE_AXES[axis]
        if axis == "noise" and noise_model == "poisson":
            label, log = "mean spikes per stimulus", True
        xs_all = []
        for observable, by_axis in curves.items():
            points = sorted((by_axis or {}).get(axis) or [], key=lambda p: p["x"])
            if not points:
                continue
            xs = [p["x"] for p in points]
            ys = [p["accuracy"] for p in points]
            cis = [ci_of(p) or (p["accuracy"], p["accuracy"]) for p in points]
            color = OBSERVABLE_COLORS.get(observable, "0.3")
            ax.plot(xs, ys, marker="o", markersize=3.5, color=color, linewidth=1.3)
            ax.fill_between(xs, [c[0] for c in cis], [c[1] for c in cis], color=color, alpha=0.18, linewidth=0)
            xs_all += xs
            lowest += [c[0] for c in cis]
        if log and min(xs_all) > 0:
            ax.set_xscale("log")
            _data_ticks(ax, xs_all)
        _levels(ax, doc, _target(doc))
        if top is not None:
            ax.axhline(top[1]["accuracy"], **CONTROL_STYLE)
        recommended = _recommended_value(doc, axis)
        if recommended is not None:
            ax.axvline(recommended, color="0.6", linewidth=0.8)
        ax.set_xlabel(label)
        ax.set_title(f"accuracy vs. {axis}")
    axes[0].set_ylabel("identification accuracy (95% CI)")
    _accuracy_axis(axes[0], min(lowest))
    handles = [Line2D([], [], color=OBSERVABLE_COLORS.get(o, "0.3"), marker="o", markersize=3.5,
                      label=OBSERVABLE_LABELS.get(o, o)) for o in curves if curves[o]]
    handles += _level_handles(doc)
    if top is not None:
        handles.append(Line2D([], [], **CONTROL_STYLE, label=f"strongest control ({top[0]})"))
    if protocol_of(doc)[1]:
        handles.append(Line2D([], [], color="0.6", linewidth=0.8, label="recommended value"))
    container.legend(handles=handles, loc="outside lower center", ncol=4, frameon=False)


# ---------------------------------------------------------------------------------------------- confusion
def _confusion_missing(doc: Doc) -> str | None:
    return None if doc.get("confusion_matrix") and doc.get("labels") else "the result has no confusion matrix"


def _confusion_caption(doc: Doc) -> str:
    total = sum(sum(row) for row in doc["confusion_matrix"])
    word = target_word(doc)
    which = ("recommended" if protocol_of(doc)[1] else "chosen" if doc.get("candidate") is not None
             else "most accurate")
    final = setaside_of(doc)
    where = (f"{total} predictions, one per set-aside network, from one fit on the {final.get('n_train')} search "
             "networks" if final is not None else
             f"{total} predictions pooled over the test splits; a network is tested once per split it is held out in")
    return (f"Confusion matrix of the {which} protocol: each row is a true {word}, normalised to 1, with the number "
            f"of test predictions in brackets ({where}).")


def _draw_confusion(container: FigureBase, doc: Doc) -> None:
    labels, counts = doc["labels"], doc["confusion_matrix"]
    ax = container.subplots()
    rows = [[c / max(sum(row), 1) for c in row] for row in counts]
    image = ax.imshow(rows, cmap="Blues", vmin=0.0, vmax=1.0)
    for i, row in enumerate(rows):
        for j, value in enumerate(row):
            ax.text(j, i, f"{value:.2f}\n({counts[i][j]})", ha="center", va="center", fontsize=8,
                    color="white" if value > 0.6 else "black")
    word = target_word(doc)
    names = [rule_words(label, family=word == "family") for label in labels]
    ax.set_xticks(range(len(labels)), [textwrap.fill(n, 14) for n in names], rotation=35, ha="right",
                  rotation_mode="anchor")
    ax.set_yticks(range(len(labels)), names)
    ax.set_xlabel(f"predicted {word}")
    ax.set_ylabel(f"true {word}")
    ax.spines[:].set_visible(False)
    ax.set_title(f"Which {word}s are confused (row-normalised)")
    container.colorbar(image, ax=ax, shrink=0.85, label=f"fraction of the true {word}'s test predictions")


# -------------------------------------------------------------------------------------------- importances
def _importances_missing(doc: Doc) -> str | None:
    imp = doc.get("importances") or {}
    return None if imp.get("statistics") or imp.get("sessions") else "the result has no feature importances"


def _importance_items(doc: Doc) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """The ten most important statistics (most important first) and every session (in order)."""
    imp = doc.get("importances") or {}
    stats = sorted(imp.get("statistics") or [], key=lambda s: -s["importance"])[:10]
    return stats, sorted(imp.get("sessions") or [], key=lambda s: s["session"])


def _importances_caption(doc: Doc) -> str:
    stats, sessions = _importance_items(doc)
    protocol, feasible = protocol_of(doc)
    which = "recommended" if feasible else "chosen" if doc.get("candidate") is not None else "most accurate"
    noun = OBSERVABLE_NOUNS.get((protocol or {}).get("observable", ""), "recorded values")
    parts = []
    if stats:
        parts.append(f"{'Left' if sessions else 'The bars'}: the {len(stats)} statistics whose shuffling costs most "
                     f"accuracy (each summarises the recorded {noun} of one layer group over its units; all its "
                     "sessions shuffled together)")
    if sessions:
        parts.append(f"{'right' if stats else 'The bars'}: each of the {len(sessions)} recorded sessions at its point "
                     "in learning (0%: before training starts, 100%: the end of training; all its statistics "
                     "shuffled together)")
    return (f"What the classifier relies on in the {which} protocol's recording: permutation importance, the drop in "
            "held-out identification accuracy when one part of the recording is shuffled across networks, averaged "
            "over the search networks' cross-validation splits. " + "; ".join(parts)
            + ". A drop near 0: the classifier does without it.")


def _draw_importances(container: FigureBase, doc: Doc) -> None:
    from matplotlib.ticker import FixedLocator, FuncFormatter

    stats, sessions = _importance_items(doc)
    observable = (protocol_of(doc)[0] or {}).get("observable")
    panels = [p for p in (("statistics", stats), ("sessions", sessions)) if p[1]]
    axes = container.subplots(1, len(panels), squeeze=False, width_ratios=[1.25, 1][: len(panels)])[0]
    for ax, (name, items) in zip(axes, panels, strict=True):
        ax.grid(axis="x" if name == "statistics" else "y", color="0.9", linewidth=0.6)
        ax.set_axisbelow(True)
        values = [s["importance"] for s in items]
        if name == "statistics":
            ax.barh(range(len(items)), values, color="#1f77b4", height=0.7)
            ax.set_yticks(range(len(items)), [statistic_label(s["name"], observable) for s in items])
            ax.invert_yaxis()
            ax.set_xlabel("accuracy drop when shuffled")
            ax.set_title(f"The {len(items)} most informative statistics", loc="right")  # clear of the next panel
            ax.axvline(0, color="0.3", linewidth=0.6)
            low, high = min(0.0, *values), max(0.0, *values)
            span = (high - low) or 0.01
            ax.set_xlim(low - 0.04 * span if low < 0 else 0.0, high + 0.08 * span)
        else:
            n_checkpoints = (doc.get("bank") or {}).get("n_checkpoints") or 41
            xs = [100 * (s["fraction"] if s.get("fraction") is not None else s["session"] / max(n_checkpoints - 1, 1))
                  for s in items]
            step = min((right - left for left, right in pairwise(xs) if right > left), default=10.0)
            width = min(0.8 * step, 6.0)
            ax.bar(xs, values, width=width, color="#2ca02c")
            pad = max(width, 3.0)
            ax.set_xlim(min(xs) - pad, max(xs) + pad)  # the sessions recorded, not the whole of learning
            if len(xs) <= 8:
                ax.xaxis.set_major_locator(FixedLocator(xs))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0f}%"))
            ax.set_xlabel("session: point in learning")
            ax.set_ylabel("accuracy drop when shuffled")
            ax.set_title(f"The {len(items)} recorded sessions", loc="left")
            ax.axhline(0, color="0.3", linewidth=0.6)


# ------------------------------------------------------------------------------------------------ compare
def _compare_missing(doc: Doc) -> str | None:
    return None if any(m.get("trials") for m in doc.get("modalities") or []) else "no modality has search trials"


def _not_shown(doc: Doc) -> str:
    absent = [f"{m['name']} ({m.get('reason') or 'no trials'})" for m in doc["modalities"] if not m.get("trials")]
    return f" Not shown: {', '.join(absent)}." if absent else ""


def _compare_caption(doc: Doc) -> str:
    return ("Recording cost per animal against rule-identification accuracy of every protocol tried, one colour per "
            "modality; accuracies are search estimates (repeated 4-fold cross-validation on the search networks). "
            "Lines join each modality's Pareto front with 95% CIs; stars mark each modality's recommended protocol "
            "(its lower 95% CI bound meets the target beyond the controls in the search and on the set-aside "
            f"networks). Dashed: target; dotted: chance.{_not_shown(doc)}")


def _draw_compare(container: FigureBase, doc: Doc) -> None:
    from matplotlib.lines import Line2D

    ax = container.subplots()
    handles, costs, lowest, units = [], [], [chance_of(doc) or 1.0], []
    for i, modality in enumerate(doc["modalities"]):
        trials = modality.get("trials") or []
        if not trials:
            continue
        color = MODALITY_COLORS[i % len(MODALITY_COLORS)]
        ax.scatter([t["cost"] for t in trials], [t["accuracy"] for t in trials], s=12, color=color, alpha=0.35,
                   linewidths=0)
        front = modality.get("pareto") or []
        if front:
            ax.errorbar([t["cost"] for t in front], [t["accuracy"] for t in front], yerr=_errorbars(front),
                        color=color, linewidth=1.2, elinewidth=0.7, capsize=2, marker="o", markersize=3)
        chosen = recommended(modality)
        if chosen is not None:
            ax.scatter([chosen["cost"]], [chosen["accuracy"]], marker="*", s=190, color=color,
                       edgecolors="black", linewidths=0.9, zorder=4)
        unit = modality.get("cost_unit")
        units.append(unit)
        handles.append(Line2D([], [], color=color, marker="o", markersize=3, label=modality["name"]))
        costs += [t["cost"] for t in trials]
        lowest += [t["accuracy"] for t in trials] + [(ci_of(t) or (1.0,))[0] for t in front]
    handles += [Line2D([], [], marker="*", linestyle="", markersize=11, color="0.6", markeredgecolor="black",
                       label="cheapest sufficient"), *_level_handles(doc)]
    _levels(ax, doc, _target(doc))
    _log_if_wide(ax, costs)
    _accuracy_axis(ax, min(lowest))
    ax.set_xlabel(cost_label(units) + (", log scale" if ax.get_xscale() == "log" else ""))
    ax.set_ylabel("identification accuracy (95% CI)")
    ax.set_title("Cost vs. accuracy by recording modality")
    container.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 4), frameon=False)


def _modalities_missing(doc: Doc) -> str | None:
    return None if doc.get("modalities") else "the result has no modalities"


def _modalities_caption(doc: Doc) -> str:
    return ("Per modality, on the set-aside networks the search never saw: the accuracy of its recommended protocol "
            "(solid bar) or, where none is recommended, of the protocol the search chose or the most accurate one "
            "found (pale bar), with 95% CIs. Dashed: target; dotted: chance.")


def _draw_modalities(container: FigureBase, doc: Doc) -> None:
    ax = container.subplots()
    modalities = doc["modalities"]
    labels = []
    for i, modality in enumerate(modalities):
        protocol, feasible = protocol_of(modality)
        color = MODALITY_COLORS[i % len(MODALITY_COLORS)]
        if protocol is None:
            labels.append(f"{modality['name']}\n{modality.get('reason') or 'no protocol'}")
            continue
        cost = protocol.get("cost")
        unit = protocol.get("cost_unit") or modality.get("cost_unit") or ""
        status = (f"{cost:g} {unit} per animal".replace("  ", " ") if feasible and cost is not None
                  else "not recommended")
        labels.append(f"{modality['name']}\n{status}")
        shown = setaside_of(modality) or protocol
        ax.barh(i, shown["accuracy"], color=color, alpha=1.0 if feasible else 0.35, height=0.6,
                xerr=_errorbars([shown]), error_kw={"elinewidth": 1.0, "capsize": 3})
    _levels(ax, doc, _target(doc), horizontal=False)
    ax.set_yticks(range(len(modalities)), labels)
    ax.set_ylim(len(modalities) - 0.5, -0.5)  # every modality has a row, with or without a bar
    ax.set_xlim(0, 1)
    ax.set_xlabel("identification accuracy (95% CI)")
    ax.grid(axis="x", color="0.9", linewidth=0.6)
    ax.set_axisbelow(True)
    ax.set_title("Best protocol per modality, on set-aside networks")
    container.legend(handles=_level_handles(doc), loc="outside lower center", ncol=2, frameon=False)


# ------------------------------------------------------------------------------------------------ power
def _power_missing(doc: Doc) -> str | None:
    table = doc.get("power_table") or {}
    return None if table.get("units") or table.get("sessions") else "the plan has no power table (--no-curves)"


def _power_caption(doc: Doc) -> str:
    table = doc.get("power_table") or {}
    return (f"Power analysis around {table.get('protocol')}: accuracy (search estimate, colour and number) against "
            "units and animals (left) and sessions and animals (right), one factor changed at a time, the evidence "
            f"of k animals pooled. A dark frame marks cells whose lower 95% CI bound reaches the target "
            f"{table.get('target', float('nan')):.2f} and clears the strongest control pooled over as many animals.")


def _draw_power(container: FigureBase, doc: Doc) -> None:
    from matplotlib.patches import Rectangle

    table = doc.get("power_table") or {}
    animals = table["animals"]
    axes = container.subplots(1, 2)
    image = None
    for ax, axis in zip(axes, ("units", "sessions"), strict=True):
        rows = table.get(axis) or []
        values = [[c["accuracy"] for c in row["cells"]] for row in rows]
        image = ax.imshow(values, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto", origin="lower")
        for i, row in enumerate(rows):
            for j, cell in enumerate(row["cells"]):
                ax.text(j, i, f"{cell['accuracy']:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if cell["accuracy"] < 0.6 else "black")
                if cell["reaches"]:
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=2, edgecolor="black"))
        ax.set_xticks(range(len(animals)), [str(k) for k in animals])
        ax.set_yticks(range(len(rows)), [str(r["value"]) for r in rows])
        ax.set_xlabel("animals")
        ax.set_ylabel(axis)
        ax.spines[:].set_visible(False)
    if image is not None:
        container.colorbar(image, ax=list(axes), shrink=0.85, label="accuracy (search estimate)")
    container.suptitle("How many units, sessions and animals?")


# ------------------------------------------------------------------------------------------------ identify
def _posterior_missing(doc: Doc) -> str | None:
    return None if doc.get("posterior") else "the result has no posterior"


def _posterior_caption(doc: Doc) -> str:
    family = doc.get("target") == "family"
    ci = doc.get("p_top_ci") or [0.0, 0.0]
    n = len(doc.get("labels") or [])
    return (f"Probability of each simulated {'family' if family else 'rule'} given this recording, from the plan's "
            f"classifier after temperature scaling (calibrated on cross-fitted scores of the search networks). The "
            f"bar of the most probable one, {rule_words(str(doc.get('top_rule')), family=family)}, carries the 95% "
            f"interval of its probability over {doc.get('identifier', {}).get('bootstraps', 0)} refits of the "
            f"classifier on bootstrap resamples of the search networks ({ci[0]:.2f}-{ci[1]:.2f}); the dotted line "
            f"is an uninformed 1/{n}."
            + ("" if doc.get("in_distribution") else " The misspecification check found the recording unlike every "
               "simulated network: these probabilities are not to be trusted."))


def _draw_posterior(container: FigureBase, doc: Doc) -> None:
    family = doc.get("target") == "family"
    items = sorted(doc["posterior"].items(), key=lambda kv: kv[1])
    names = [textwrap.fill(rule_words(k, family=family), 30) for k, _ in items]
    values = [v for _, v in items]
    top = doc["top_rule"]
    colors = ["#1f77b4" if k == top else "#a6bddb" for k, _ in items]
    ax = container.subplots()
    ax.barh(range(len(items)), values, color=colors)
    position = [k for k, _ in items].index(top)
    lo, hi = doc["p_top_ci"]
    ax.errorbar([doc["p_top"]], [position], xerr=[[doc["p_top"] - lo], [hi - doc["p_top"]]], fmt="none",
                ecolor="black", capsize=4, lw=1.2)
    for i, v in enumerate(values):
        right = hi if i == position else v  # past the interval's end on the top bar
        if right + 0.02 <= 0.92:
            ax.text(right + 0.02, i, f"{v:.2f}", va="center", fontsize=8)
        else:  # no room on the right: inside the bar, left of the interval
            ax.text(min(v, lo if i == position else v) - 0.02, i, f"{v:.2f}", va="center", ha="right", fontsize=8,
                    color="white")
    ax.axvline(1.0 / len(items), color="grey", ls=":", lw=1)
    ax.set_yticks(range(len(items)), names)
    ax.set_xlim(0, 1)
    ax.set_xlabel("posterior probability (calibrated)")
    ax.set_title("Which simulated " + ("family" if family else "rule") + " is this recording consistent with?")


def _reliability_missing(doc: Doc) -> str | None:
    return None if (doc.get("calibration") or {}).get("bins") else "the result has no calibration bins"


def _reliability_caption(doc: Doc) -> str:
    cal = doc.get("calibration") or {}
    return (f"Reliability of the calibrated classifier on the plan's {cal.get('n_networks')} set-aside networks "
            "(never used to fit or calibrate it): each point is a bin of the top probability, at the mean "
            "probability the classifier gave (x) and the share it got right (y); its size shows how many networks "
            f"fell in the bin. On the diagonal the probabilities mean what they say. Expected calibration error "
            f"{cal.get('ece', float('nan')):.3f} after temperature scaling (temperature "
            f"{cal.get('temperature', float('nan')):.2f}), {cal.get('ece_uncalibrated', float('nan')):.3f} before.")


def _draw_reliability(container: FigureBase, doc: Doc) -> None:
    cal = doc["calibration"]
    bins = cal["bins"]
    ax = container.subplots()
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="perfectly calibrated")
    total = max(1, sum(b["count"] for b in bins))
    ax.scatter([b["confidence"] for b in bins], [b["accuracy"] for b in bins],
               s=[30 + 400 * b["count"] / total for b in bins], color="#1f77b4", alpha=0.8, zorder=3,
               label="set-aside networks, binned")
    for b in bins:
        ax.annotate(str(b["count"]), (b["confidence"], b["accuracy"]), textcoords="offset points", xytext=(7, -3),
                    fontsize=7)
    ax.set_xlim(0, 1.02)
    ax.set_ylim(-0.02, 1.05)
    ax.set_xlabel("probability given to the top rule")
    ax.set_ylabel("share named correctly")
    ax.set_title(f"Calibration on {cal['n_networks']} set-aside networks (ECE {cal['ece']:.3f})")
    ax.legend(loc="upper left", frameon=False)


def _typicality_missing(doc: Doc) -> str | None:
    mis = doc.get("misspecification") or {}
    return None if mis.get("null_scores") and mis.get("null_max_z") else "the result has no null scores"


def _typicality_caption(doc: Doc) -> str:
    mis = doc.get("misspecification") or {}
    return (f"How far the recording lies from the simulated networks, by two scores. Left: the mean distance to its "
            f"{mis.get('neighbours')} nearest search networks in standardised statistics (signed log, then centred and "
            "scaled by each statistic's median and interquartile range over the search networks). Right: its single "
            "most extreme statistic, in robust SDs. Bars: the same scores of the "
            f"{mis.get('n_null')} set-aside networks, the check's null distribution; red lines: this recording. Each "
            "score's p-value is the share of set-aside networks at least as far out "
            f"({mis.get('p_knn', float('nan')):.3f} and {mis.get('p_max_z', float('nan')):.3f}); the check's "
            "p-value is twice the smaller, at most 1 "
            f"({mis.get('p', float('nan')):.3f}). At p ≤ {mis.get('alpha')} the recording is called unlike the "
            f"simulations, which happens to {mis.get('false_alarm_rate', float('nan')):.1%} of set-aside networks "
            "compared leave-one-out.")


def _draw_typicality(container: FigureBase, doc: Doc) -> None:
    mis = doc["misspecification"]
    panels = (("null_scores", "score", "null_quantiles", "p_knn",
               "distance to the nearest simulated networks\n(robust SD per statistic)"),
              ("null_max_z", "max_z", "null_max_z_quantiles", "p_max_z", "most extreme statistic (|robust z|)"))
    axes = container.subplots(1, 2)
    for ax, (null_key, key, quantiles, p_key, label) in zip(axes, panels, strict=True):
        null, value = mis[null_key], mis[key]
        hi = max(max(null), value) * 1.08
        ax.hist(null, bins=min(30, max(8, len(null) // 3)), range=(0, hi), color="#a6bddb",
                label="set-aside simulated networks")
        ax.axvline(value, color="#d62728", lw=2, label=f"this recording (p = {mis[p_key]:.3f})")
        ax.axvline(mis[quantiles]["0.95"], color="grey", ls=":", lw=1, label="95% of simulated networks")
        ax.set_xlabel(label)
        ax.legend(loc="upper right", frameon=False, fontsize=7)
    axes[0].set_ylabel("networks")
    container.suptitle(f"Is the recording like the simulations? (combined p = {mis['p']:.3f})")


# ------------------------------------------------------------------------------------------------ registry
@dataclass(frozen=True)
class FigureSpec:
    """One report figure.

    Attributes:
        key: file stem and dictionary key (``pareto``, ``curves``, ...).
        kind: the document kind it belongs to (``plan`` or ``compare``).
        title: short title for headings and alt text.
        size: (width, height) in inches of the standalone figure.
        missing: ``missing(doc)`` says why the figure cannot be drawn, or returns None when it can.
        caption: ``caption(doc)``, a legend-style paragraph with the document's numbers.
        draw: ``draw(container, doc)`` draws into a figure or subfigure.
    """

    key: str
    kind: str
    title: str
    size: tuple[float, float]
    missing: Callable[[Doc], str | None]
    caption: Callable[[Doc], str]
    draw: Callable[[FigureBase, Doc], None]


FIGURES: tuple[FigureSpec, ...] = (
    FigureSpec("pareto", "plan", "Cost vs. accuracy and the Pareto front", (7.0, 4.2), _pareto_missing,
               _pareto_caption, _draw_pareto),
    FigureSpec("curves", "plan", "Accuracy vs. units, sessions and noise", (7.0, 3.3), _curves_missing,
               _curves_caption, _draw_curves),
    FigureSpec("confusion", "plan", "Confusion matrix", (6.0, 4.6), _confusion_missing, _confusion_caption,
               _draw_confusion),
    FigureSpec("importances", "plan", "Most informative statistics and sessions", (7.0, 3.4), _importances_missing,
               _importances_caption, _draw_importances),
    FigureSpec("power", "plan", "Power analysis: units, sessions and animals", (7.0, 3.2), _power_missing,
               _power_caption, _draw_power),
    FigureSpec("compare", "compare", "Cost vs. accuracy by modality", (7.0, 4.2), _compare_missing, _compare_caption,
               _draw_compare),
    FigureSpec("modalities", "compare", "Best protocol per modality", (7.0, 2.6), _modalities_missing,
               _modalities_caption, _draw_modalities),
    FigureSpec("posterior", "identify", "Posterior over the simulated rules", (7.0, 2.8), _posterior_missing,
               _posterior_caption, _draw_posterior),
    FigureSpec("typicality", "identify", "Misspecification check", (7.0, 3.2), _typicality_missing,
               _typicality_caption, _draw_typicality),
    FigureSpec("reliability", "identify", "Calibration of the classifier", (5.0, 4.0), _reliability_missing,
               _reliability_caption, _draw_reliability),
)
"""Every report figure, in report order."""


def figure_specs(doc: Doc) -> list[tuple[FigureSpec, str | None]]:
    """The figures of ``doc``'s kind, each with the reason it is absent (None when it can be drawn)."""
    return [(spec, spec.missing(doc)) for spec in FIGURES if spec.kind == doc.get("kind")]


def draw(spec: FigureSpec, container: FigureBase, doc: Doc) -> None:
    """Draw ``spec`` into ``container`` with the report style."""
    with style():
        spec.draw(container, doc)


def make_figures(doc: Doc) -> dict[str, Figure]:
    """Draw every figure whose data the document has.

    Args:
        doc: a plan or compare result document (see ``advisor.application.reports``).

    Returns:
        Figure key → standalone :class:`~matplotlib.figure.Figure` with constrained layout, in report order.
        Figures whose data is absent are left out (:func:`figure_specs` says why).
    """
    from matplotlib.figure import Figure

    figures: dict[str, Figure] = {}
    for spec, missing in figure_specs(doc):
        if missing is None:
            with style():
                figure = Figure(figsize=spec.size, layout="constrained")
                spec.draw(figure, doc)
            figures[spec.key] = figure
    return figures


def png_bytes(figure: Figure, dpi: int = 300) -> bytes:
    """Render ``figure`` as PNG at ``dpi`` (300 for print, 150 for screens)."""
    buffer = io.BytesIO()
    with style():
        figure.savefig(buffer, format="png", dpi=dpi, metadata={"Software": "lr-advisor"})
    return buffer.getvalue()

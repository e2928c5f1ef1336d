"""``advisor evaluate``: how well one recording protocol identifies the rule, next to the controls."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from rich.console import Console

from advisor.cli.app import (
    CLASSIFIER_CHOICES,
    HELDOUT_CHOICES,
    NOISE_MODEL_CHOICES,
    OBSERVABLE_CHOICES,
    STATISTICS_CHOICES,
    App,
    check_bank_or_preset,
    ci_text,
    common_options,
    load_plan_run,
    open_bank,
    parse_gain_sd,
    parse_list,
    parse_rules,
    parse_window,
    tracking_uri_option,
)
from advisor.errors import AdvisorError
from simulator.constants import GROUPS


@click.command()
@click.option(
    "--preset",
    default=None,
    show_default="quick",
    metavar="NAME|PATH",
    help="Evaluate the bank of this preset (built, or read from the workspace if cached).",
)
@click.option(
    "--bank",
    "bank_dir",
    type=click.Path(path_type=Path),
    default=None,
    metavar="PATH",
    help="Evaluate this bank directory instead of a preset's (not with --preset).",
)
@click.option("--observable", type=click.Choice(OBSERVABLE_CHOICES), default="activations", show_default=True,
              help="What is recorded.")
@click.option("--units", type=click.IntRange(min=1), default=100, show_default=True, metavar="N",
              help="Units (synapses, for weights) recorded per animal (one simulated network), split evenly over "
                   "the layer groups.")
@click.option("--sessions", type=click.IntRange(min=1), default=10, show_default=True, metavar="S",
              help="Recording sessions over learning.")
@click.option("--noise", type=float, default=0.0, show_default=True, metavar="X",
              help="Noise level (gaussian: SD relative to the spread; poisson: mean spikes per stimulus).")
@click.option("--noise-model", type=click.Choice(NOISE_MODEL_CHOICES), default="gaussian", show_default=True,
              help="Measurement noise model.")
@click.option("--layers", default=None, metavar="LIST",
              help="Layer groups recorded, a comma list of early, middle, deep [default: all].")
@click.option("--window", default=None, metavar="START-END",
              help="Fractions of training the sessions are spread over, e.g. 0-0.3 [default: 0-1].")
@click.option("--acute", is_flag=True, help="Record fresh units every session (default: chronic, the same units).")
@click.option("--probes", type=click.IntRange(min=1), default=None, metavar="N",
              help="Probe stimuli shown per session [default: every probe in the bank].")
@click.option("--gain-sd", "gain_sd_text", default=None, metavar="ANIMAL,AREA,UNIT",
              help="SDs of the log of the unknown gain per animal, area (layer group) and unit; 0,0,0 turns gains "
                   "off [default: 0.5,0.3,0.5, the generic modality's].")
@click.option("--baseline", type=float, default=0.0, show_default=True, metavar="B",
              help="Unknown baseline: gaussian, SD of each unit's offset in units of its spread; poisson, the "
                   "spontaneous rate as a fraction of the mean evoked rate.")
@click.option("--classifier", type=click.Choice(CLASSIFIER_CHOICES), default="ridge", show_default=True,
              help="Classifier that identifies the rule (ridge, as `advisor plan`'s default).")
@click.option("--heldout", type=click.Choice(HELDOUT_CHOICES), default="none", show_default=True,
              help="none: repeated stratified 4-fold splits (75/25); architecture, arch_family (mlp/conv), task, "
                   "nonlinearity (relu/tanh): leave one out at a time.")
@click.option("--statistics", type=click.Choice(STATISTICS_CHOICES), default="marginal", show_default=True,
              help="marginal: the paper's 21 statistics of each group's values; population: gain-invariant "
                   "statistics of the recorded population (dimensionality, correlations, sparseness, drift); "
                   "both.")
@click.option("--augment", type=int, default=1, show_default=True, metavar="K",
              help="Train on K virtual recordings of every training network (other units, gains and noise); "
                   "test networks are recorded once.")
@click.option("--rules", "rules_text", default=None, metavar="LIST",
              help="Only these rules, a comma list (e.g. sgdm,fa) [default: every rule in the bank].")
@click.option("--family", is_flag=True, help="Identify rule families instead of rules.")
@click.option("--splits", type=click.IntRange(min=1), default=10, show_default=True, metavar="N",
              help="Train/test splits (with --heldout none), rounded up to whole repeats of a 4-fold split.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, metavar="N",
              help="Seed of the recording (units, noise) and of the splits and classifiers.")
@click.option("--run", "run_id", default=None, metavar="RUN_ID",
              help="Re-evaluate a past plan's protocol (its recommendation, else its best) with the plan's bank, "
                   "classifier, statistics, rules, target, held-out scheme and seed; not with protocol options.")
@tracking_uri_option
@common_options
def evaluate(
    app: App,
    preset: str | None,
    bank_dir: Path | None,
    observable: str,
    units: int,
    sessions: int,
    noise: float,
    noise_model: str,
    layers: str | None,
    window: str | None,
    acute: bool,
    probes: int | None,
    gain_sd_text: str | None,
    baseline: float,
    classifier: str,
    heldout: str,
    statistics: str,
    augment: int,
    rules_text: str | None,
    family: bool,
    splits: int,
    seed: int,
    run_id: str | None,
    tracking_uri: str | None,
) -> None:
    """Identify the learning rule from a recording protocol's statistics.

    Records every network of a bank under the protocol the options describe (no re-simulation; unknown gains
    per animal, area and unit as a rig has them), computes the unit statistics per layer group and session, and
    scores a classifier on splits over networks, next to the two controls an experimenter gets for free: the
    whole learning curve (behaviour) and the hyperparameters alone, each the better of a linear and a nonlinear
    classifier. The rule counts as identified only where the accuracy's CI clears the strongest control's.
    """
    from advisor.science.assessment import evaluate_protocol
    from advisor.science.features import check_augment
    from advisor.science.protocol import DEFAULT_GAIN_SD, RecordingProtocol

    if run_id is not None:
        _evaluate_run(app, run_id, tracking_uri, augment)
        return
    check_bank_or_preset(bank_dir, preset)
    check_augment(augment)
    protocol = RecordingProtocol(
        observable=observable,
        n_units=units,
        layers=parse_list(layers) if layers is not None else GROUPS,
        n_sessions=sessions,
        window=parse_window(window) if window is not None else (0.0, 1.0),
        noise_model=noise_model,
        noise=noise,
        chronic=not acute,
        n_probes=probes,
        seed=seed,
        gain_sd=parse_gain_sd(gain_sd_text) if gain_sd_text is not None else DEFAULT_GAIN_SD,
        baseline=baseline,
        statistics=statistics,
    )
    rules = parse_rules(rules_text)
    bank, _ = open_bank(app, preset, bank_dir)
    evaluation = evaluate_protocol(bank, protocol, rules=rules, target="family" if family else "rule",
                                   classifier=classifier, heldout=heldout, n_splits=splits, seed=seed,
                                   augment=augment, status=lambda text: app.consoles.err.status(text, spinner="dots"))
    if app.json_output:
        app.consoles.emit_json(evaluation.document())
        return
    _render_evaluation(app.consoles.out, protocol, evaluation.result, evaluation.verdict, evaluation.top_features,
                       evaluation.top_sessions, evaluation.features)


RUN_SETTINGS = ("preset", "bank_dir", "observable", "units", "sessions", "noise", "noise_model", "layers", "window",
                "acute", "probes", "gain_sd_text", "baseline", "classifier", "heldout", "statistics", "rules_text",
                "family", "splits", "seed")
"""What ``--run`` takes from the plan: giving one of these too is refused."""


def _evaluate_run(app: App, run_id: str, tracking_uri: str | None, augment: int) -> None:
    """``evaluate --run``: the plan's protocol, scored with the plan's settings on every network of its bank."""
    from dataclasses import fields

    from advisor.application.search import TrialResult
    from advisor.science.assessment import evaluate_protocol
    from advisor.science.features import check_augment

    ctx = click.get_current_context()
    given = [name for name in RUN_SETTINGS if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]
    if given:
        flags = ", ".join("--" + name.removesuffix("_text").removesuffix("_dir").replace("_", "-") for name in given)
        raise AdvisorError(f"--run takes the protocol and settings from the plan; drop {flags} (or drop --run)")
    check_augment(augment)
    summary, doc, bank = load_plan_run(app, run_id, tracking_uri)
    question = doc["question"]
    chosen = doc.get("recommendation") or doc.get("candidate") or doc.get("best")
    if not chosen:
        raise AdvisorError(f"--run {run_id}: the plan has no protocol to re-evaluate")
    names = {f.name for f in fields(TrialResult)}
    trial = TrialResult.from_dict({k: v for k, v in chosen.items() if k in names})
    protocol = trial.protocol(int(question["seed"]))
    target = question.get("target", "rule")
    evaluation = evaluate_protocol(bank, protocol, rules=tuple(question["rules"]), target=target,
                                   classifier=question["classifier"], heldout=question["heldout"],
                                   n_splits=int(question["n_splits"]), seed=int(question["seed"]), augment=augment,
                                   status=lambda text: app.consoles.err.status(text, spinner="dots"))
    if app.json_output:
        app.consoles.emit_json({**evaluation.document(), "run_id": summary.run_id,
                                "plan": {"search_accuracy": chosen.get("accuracy"),
                                         "setaside_accuracy": (doc.get("setaside") or {}).get("accuracy")}})
        return
    app.consoles.out.print(f"Re-evaluating plan {summary.run_id[:8]}'s protocol with its settings (classifier "
                           f"{question['classifier']}, {question.get('statistics', 'marginal')} statistics, "
                           f"seed {question['seed']}) on all {bank.metadata.shape[0]} networks of its bank; the "
                           f"plan measured {chosen['accuracy']:.3f} in its search and "
                           f"{doc['setaside']['accuracy']:.3f} on its set-aside networks.", highlight=False)
    _render_evaluation(app.consoles.out, protocol, evaluation.result, evaluation.verdict, evaluation.top_features,
                       evaluation.top_sessions, evaluation.features)


def _render_evaluation(
    out: Console,
    protocol: Any,
    result: Any,
    verdict: str,
    top_features: list[tuple[str, float]],
    top_sessions: list[tuple[int, float]],
    features: Any,
) -> None:
    from rich.table import Table

    from advisor.science.controls import CONTROL_LABELS

    scores = result.scores
    out.print(f"[bold]Protocol[/bold]: {protocol.describe()}", highlight=False)
    out.print(
        f"[bold]Classifier[/bold]: {result.classifier} · [bold]held out[/bold]: {result.heldout} · "
        f"[bold]networks[/bold]: {result.n_networks} · [bold]splits[/bold]: {len(scores.split_accuracies)}",
        highlight=False,
    )

    table = Table(title="Identification", title_justify="left", title_style="bold")
    table.add_column("measure", style="cyan", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column("95% CI", justify="right", no_wrap=True)
    table.add_row("accuracy", f"{scores.accuracy:.3f}", ci_text(scores.ci))
    table.add_row("balanced accuracy", f"{scores.balanced_accuracy:.3f}", "")
    table.add_row("chance", f"{result.chance:.3f}", "")
    for name, entry in result.controls.items():
        table.add_row(f"control: {CONTROL_LABELS.get(name, name)}, {entry.classifier}",
                      f"{entry.scores.accuracy:.3f}", ci_text(entry.scores.ci))
    out.print(table)
    out.print(f"[bold]Verdict[/bold]: {verdict}", highlight=False)

    cm = Table(title="Confusion matrix", title_justify="left", title_style="bold")
    cm.add_column("true \\ predicted", style="cyan", no_wrap=True)
    for label in result.labels:
        cm.add_column(label, justify="right", no_wrap=True)
    for label, row in zip(result.labels, scores.confusion_matrix, strict=True):
        cm.add_row(label, *(str(int(v)) for v in row))
    out.print(cm)

    if top_features:
        feats = Table(title=f"Top {len(top_features)} features",
                      title_justify="left", title_style="bold")
        feats.add_column("feature", style="cyan", no_wrap=True)
        feats.add_column("importance (channel permuted)", justify="right", no_wrap=True)
        for name, value in top_features:
            feats.add_row(name, f"{value:.4f}")
        out.print(feats)
    if top_sessions:
        sess = Table(title="Most informative sessions",
                     title_justify="left", title_style="bold")
        sess.add_column("session", style="cyan", justify="right", no_wrap=True)
        sess.add_column("checkpoint", justify="right", no_wrap=True)
        sess.add_column("importance (session permuted)", justify="right", no_wrap=True)
        positions = {int(c): i for i, c in enumerate(features.sessions)}
        for checkpoint, value in top_sessions:
            sess.add_row(str(positions[checkpoint] + 1), str(checkpoint), f"{value:.4f}")
        out.print(sess)

    report = features.nan_report
    if report.n_nonfinite:
        worst = sorted(report.by_feature.items(), key=lambda kv: kv[1], reverse=True)[:3]
        detail = ", ".join(f"{name} ({count})" for name, count in worst)
        out.print(
            f"Note: {report.n_nonfinite} of {report.n_values} feature values were non-finite "
            f"(policy: {getattr(report.policy, 'value', report.policy)})"
            + (f" (most: {detail})" if detail else ""),
            highlight=False,
        )

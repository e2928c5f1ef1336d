"""``advisor plan``, ``advisor compare`` and ``advisor worker``: the design search, tracked in MLflow, ending in
reports. Every check that needs no bank (options, modality files, the tracking store, the study storage) runs
before the bank is built, so a typo never costs a simulation."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from advisor.errors import AdvisorError

if TYPE_CHECKING:
    from advisor.application.documents import Document
    from advisor.application.search import Question
    from advisor.science.cost import Modality
    from simulator.bank import TrajectoryBank

    pass
from advisor.application.documents import headline_trial
from advisor.cli.app import (
    CLASSIFIER_CHOICES,
    OBSERVABLE_CHOICES,
    App,
    ProgressBar,
    command_line,
    common_options,
    finish_run,
    open_bank,
    open_tracker,
    parse_list,
    parse_rules,
    progress_bar,
    tracking_uri_option,
)

PLAN_HELDOUT = ("none", "architecture", "arch_family")
DEFAULT_TARGET = 0.75


DEFAULT_SETASIDE = 0.25


def _storage(app: App, storage: str | None) -> str:
    """The storage URL (checked; nothing created yet): the user's, or a journal file in the workspace."""
    from advisor.application.search import check_storage

    url = storage or f"journal:{app.workspace_dir.resolve() / 'studies' / 'journal.log'}"
    check_storage(url)
    return url


def _prepare_storage(url: str) -> None:
    """Create the journal file's directory (just before the study starts)."""
    if url.startswith("journal:"):
        Path(url.removeprefix("journal:")).parent.mkdir(parents=True, exist_ok=True)


def _plan_options(command: Any) -> Any:
    """Bounds shared by ``plan`` and ``compare``."""
    options = [
        click.option("--preset", default=None, show_default="quick", metavar="NAME|PATH",
                     help="Plan on this preset's bank (built with a progress bar if missing)."),
        click.option("--bank", "bank_dir", type=click.Path(path_type=Path), default=None, metavar="PATH",
                     help="Plan on this bank directory instead of a preset's (not with --preset)."),
        click.option("--observable", type=click.Choice(OBSERVABLE_CHOICES), default=None,
                     help="Fix what is recorded [default: searched among what the modality measures]."),
        click.option("--max-units", type=click.IntRange(min=1), default=None, metavar="N",
                     help="Most units (synapses, for weights) per animal (one simulated network) [default: what "
                          "the bank recorded]."),
        click.option("--max-sessions", type=click.IntRange(min=1), default=None, metavar="S",
                     help="Most recording sessions [default: the bank's checkpoints]."),
        click.option("--target-accuracy", type=click.FloatRange(min=0.0, max=1.0, min_open=True),
                     default=DEFAULT_TARGET, show_default=True, metavar="A",
                     help="The lower end of the accuracy's 95% CI must reach A (chance: 1 / number of rules)."),
        click.option("--rules", "rules_text", default=None, metavar="LIST",
                     help="Only these rules, a comma list [default: every rule in the bank]."),
        click.option("--family", is_flag=True, help="Tell rule families apart instead of rules."),
        click.option("--heldout", type=click.Choice(PLAN_HELDOUT), default="none", show_default=True,
                     help="none: stratified 75/25 splits; architecture: leave one architecture out; arch_family: "
                          "leave one architecture family (mlp, conv) out."),
        click.option("--statistics", type=click.Choice(("marginal", "population", "both")), default="population",
                     show_default=True,
                     help="What the classifier sees of each recorded group: population (gain-invariant "
                          "dimensionality, correlations, sparseness and drift over sessions), marginal (the "
                          "paper's 21 statistics of the values), or both. Weights have no stimuli: they are "
                          "scored on the marginal statistics."),
        click.option("--robust", is_flag=True,
                     help="Feasible only if the protocol also holds leaving one architecture out (its lower CI "
                          "bound reaching the target beyond the behavioural control), in the search and on the "
                          "set-aside networks: a protocol for a circuit unlike any simulated one."),
        click.option("--classifier", type=click.Choice(CLASSIFIER_CHOICES), default="ridge", show_default=True,
                     help="Classifier that identifies the rule in every trial."),
        click.option("--splits", type=click.IntRange(min=2), default=10, show_default=True, metavar="N",
                     help="Train/test splits per trial (with --heldout none)."),
        click.option("--setaside", type=float, default=DEFAULT_SETASIDE, show_default=True, metavar="SHARE",
                     help="Share of the networks set aside before the search (stratified by rule and design "
                          "cell); the recommended protocol's accuracy is measured on them, once."),
        click.option("--timeout", type=click.FloatRange(min=0.0, min_open=True), default=None, metavar="SEC",
                     help="Stop starting trials after SEC seconds."),
        click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, metavar="N",
                     help="Seeds the sampler, the recording and the splits: same command, same answer."),
        click.option("--storage", default=None, metavar="URL",
                     help="Optuna storage: journal:PATH or a database URL [default: a journal in the workspace]."),
        click.option("--max-animals", type=int, default=1, show_default=True, metavar="K",
                     help="Search the number of animals too (1..K): their evidence is pooled, and costs are "
                          "totals over the animals with each animal's per-animal cost (surgery, training)."),
        click.option("--budget-hours", "budget", type=float, default=None, metavar="H",
                     help="The most the experiment may cost in all. Alone: the most accurate protocol within H "
                          "and what one step more would buy; with --target-accuracy: the cheapest protocol "
                          "reaching the target within H, or what reaching it would take."),
        tracking_uri_option,
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _budget_mode(ctx: click.Context) -> str:
    """``most_accurate`` for a budget without an explicit --target-accuracy, else ``cheapest``."""
    given = ctx.get_parameter_source("target_accuracy") == click.core.ParameterSource.COMMANDLINE
    return "cheapest" if given else "most_accurate"


def _read_pilot(path: Path) -> Any:
    """The pilot recording (NWB or .npz; NWB sessions need no position in learning)."""
    from advisor.application.identify import read_recording
    from advisor.science.pilot import check_pilot

    recording, _ = read_recording((path,), area_map=None, area_column="area", stimulus_column="stimulus",
                                  intervals="trials", window=None, session_progress=None, require_progress=False)
    check_pilot(recording)
    return recording


def _run_plan(app: App, bank: TrajectoryBank, question: Question, modality: Modality, *, storage: str, study: str,
              timeout: float | None, curves: bool, run: Any, bar: ProgressBar, tracking_uri: str,
              reopened: bool = False, prefix: bool = False) -> Document:
    from advisor.application.planning import Progress, plan
    from advisor.application.tracking import trial_metrics, trial_params

    logged = run.logged_trials() if reopened else set()  # a reopened run holds the study's earlier trials

    def on_trial(result: Any, new: bool) -> None:
        if result.number in logged:
            return
        run.log_trial(result.number, trial_params(result), trial_metrics(result),
                      {"advisor.modality": modality.key, "advisor.resumed": str(not new).lower()})

    context = {"bank_path": str(bank.path), "modality_source": modality.source or modality.key,
               "modality_overrides": {"single_trial_noise": modality.single_trial_noise,
                                      "gain_sd": list(modality.gain_sd)},
               "parent_run_id": run.run_id, "tracking_uri": tracking_uri}

    def start(label: str, total: int) -> None:  # compare runs one search per modality: name it on every bar
        bar.start(f"{modality.key}: {label}" if prefix else label, total)

    return plan(bank, question, modality, storage=storage, study_name=study, timeout=timeout, curves=curves,
                progress=Progress(start, bar.advance), on_trial=on_trial, context=context)


@click.command()
@_plan_options
@click.option("--modality", default=None, metavar="NAME|PATH",
              help="Recording modality (see `advisor catalog`) or a modality .toml file [default: generic].")
@click.option("--trials", type=click.IntRange(min=1), default=100, show_default=True, metavar="N",
              help="Protocols the search evaluates (a resumed study runs only the missing ones).")
@click.option("--study", default=None, metavar="NAME",
              help="Optuna study name: start or join it [default: derived from the question].")
@click.option("--no-curves", is_flag=True, help="Skip the accuracy-vs-units/sessions/noise curves (faster).")
@click.option("--pilot", "pilot_path", type=click.Path(path_type=Path), default=None, metavar="RECORDING",
              help="A pilot recording (.npz or NWB, as `advisor identify` reads; repeated presentations of each "
                   "stimulus): plan with its single-presentation noise and unit-gain spread instead of the "
                   "modality's.")
@common_options
def plan(app: App, preset: str | None, bank_dir: Path | None, observable: str | None, max_units: int | None,
         max_sessions: int | None, target_accuracy: float, rules_text: str | None, family: bool, heldout: str,
         statistics: str, robust: bool, classifier: str, splits: int, setaside: float, timeout: float | None, seed: int,
         storage: str | None, max_animals: int, budget: float | None, tracking_uri: str | None,
         modality: str | None, trials: int, study: str | None, no_curves: bool, pilot_path: Path | None) -> None:
    """Find the cheapest recording protocol that identifies the learning rule.

    Sets a share of the networks aside (--setaside), then searches recording protocols (units, layer groups,
    sessions and their placement, repeats and hence noise, the observable where not fixed) with Optuna on the
    rest: minimise cost subject to the lower end of the accuracy's 95% CI reaching --target-accuracy and clearing
    the strongest control (the whole learning curve, or the hyperparameters alone). The cheapest such protocol is
    re-checked with fresh seeds, then tested once on the set-aside networks, which give the reported accuracy;
    written up as Markdown, HTML and PDF reports. One network stands for one animal. Every plan is an MLflow run
    with its trials nested.

    \b
    Examples:
      advisor plan --observable activations --max-units 500
      advisor plan --modality two_photon --pilot pilot-session.nwb
    """
    from advisor.application.planning import bank_document, make_question
    from advisor.science.cost import DEFAULT_MODALITY, load_modality

    ctx = click.get_current_context()
    command = command_line(ctx)
    rules = parse_rules(rules_text)
    mod = load_modality(modality or DEFAULT_MODALITY)
    if observable is not None and observable not in mod.observables:
        raise AdvisorError(f"modality {mod.key!r} cannot measure {observable}; it measures "
                           f"{', '.join(mod.observables)}")
    from advisor.application.planning import check_animal_options

    check_animal_options(max_animals, budget, [mod])
    pilot_recording = _read_pilot(pilot_path) if pilot_path is not None else None  # before any bank is built
    tracker = open_tracker(app, tracking_uri)
    storage_url = _storage(app, storage)  # a bad URL fails here, before the bank is built
    bank, preset_name = open_bank(app, preset, bank_dir)
    pilot = None
    if pilot_recording is not None:
        from advisor.application.planning import apply_pilot

        mod, pilot = apply_pilot(mod, pilot_recording, bank)
    question = make_question(bank, mod, observable=observable, max_units=max_units, max_sessions=max_sessions,
                             target_accuracy=target_accuracy, rules=rules, family=family, heldout=heldout,
                             classifier=classifier, n_trials=trials, n_splits=splits, seed=seed,
                             setaside=setaside, robust=robust, statistics=statistics, max_animals=max_animals,
                             budget=budget, budget_mode=_budget_mode(ctx))
    study_name = study or f"plan-{question.key(bank.hash, mod.key + (pilot['key'] if pilot else ''))}"
    workspace = app.open_workspace()
    _prepare_storage(storage_url)
    params = {"command": command, "preset": preset_name or "", "bank_hash": bank.hash, "modality": mod.key,
              "observables": ",".join(question.observables), "max_units": max(question.max_units.values()),
              "max_sessions": question.max_sessions, "target_accuracy": target_accuracy,
              "rules": ",".join(question.rules), "target": question.target, "heldout": heldout,
              "classifier": classifier, "trials": trials, "splits": splits, "seed": seed, "study": study_name,
              "storage": storage_url, "setaside": setaside, "statistics": statistics,
              **({"robust": True} if robust else {}), **({"pilot": pilot["source"]} if pilot else {}),
              **({"max_animals": max_animals} if max_animals > 1 else {}),
              **({"budget_hours": budget, "budget_mode": question.budget_mode} if budget is not None else {})}
    from advisor.application.search import finished_trials
    from advisor.application.tracking import plan_run_name

    reopen, resumed_from = tracker.resumable_run("plan", study_name, params)
    _announce_study(app, study_name, storage, finished_trials(storage_url, study_name), trials, reopen, resumed_from)
    name = plan_run_name({**params, "observables": list(question.observables), "max_units": params["max_units"]})
    tags = {"advisor.bank": bank.hash, "advisor.study": study_name,
            **({"advisor.resumed_from": resumed_from} if resumed_from else {})}
    with tracker.start_run("plan", name, params, tags, reopen=reopen) as run:
        with progress_bar(app.consoles.err) as bar:
            doc = _run_plan(app, bank, question, mod, storage=storage_url, study=study_name, timeout=timeout,
                            curves=not no_curves, run=run, bar=bar, tracking_uri=tracker.uri,
                            reopened=reopen is not None)
        doc["title"] = "Recording plan: which learning rule, from what recording?"
        doc["command"] = command
        if pilot:
            doc["question"]["pilot"] = pilot
        doc["bank"] = bank_document(bank, preset_name)
        doc["storage"] = storage_url
        from advisor.application.tracking import plan_metrics

        run.log_metrics(plan_metrics(doc))
        reports = finish_run(app, run, tracker, doc, workspace.reports / run.run_id)
    if app.json_output:
        app.consoles.emit_json(doc)
        return
    _render_plan(app.consoles.out, doc, reports)


def _announce_study(app: App, study: str, storage: str | None, done: int, trials: int, reopen: str | None,
                    resumed_from: str | None) -> None:
    """Say which study runs, whether it resumes one (and into which MLflow run), and how to add workers."""
    join = f"advisor worker --study {study}" + (f" --storage {shlex.quote(storage)}" if storage else "")
    if done:
        into = (f"; logging into its run {reopen[:8]} again" if reopen
                else f"; a new run, resumed from {resumed_from[:8]}" if resumed_from else "")
        left = max(trials - done, 0)
        state = f"{done} of {trials} trials done, {left} to run" if left else f"all {trials} trials done"
        app.consoles.err.print(f"study {study} resumed ({state}{into}) — more workers: {join}", highlight=False,
                               soft_wrap=True)
    else:
        app.consoles.err.print(f"study {study} — more workers: {join}", highlight=False, soft_wrap=True)


def _print_where(out: Any, doc: Document, reports: dict[str, str]) -> None:
    """Where the reports and the MLflow run of a plan or comparison are."""
    out.print(f"[bold]Reports[/bold]: {', '.join(reports.values())}", highlight=False, soft_wrap=True)
    out.print(f"[bold]MLflow run[/bold]: {doc['run_id']} ({doc['run_url']})", highlight=False, soft_wrap=True)


PANEL_TITLES = {
    "recommended": "Recommendation",
    "none_in_search": "No protocol within the bounds reaches the target beyond the controls",
    "setaside_below_target": "The search's choice falls short of the target on set-aside networks",
    "setaside_not_beyond_controls": "The search's choice does not clear the controls on set-aside networks",
}


def _ci_range(entry: dict[str, Any]) -> str:
    return f"{entry['accuracy']:.3f} (95% CI {entry['ci'][0]:.3f}-{entry['ci'][1]:.3f})"


def _render_plan(out: Any, doc: Document, reports: dict[str, str]) -> None:
    from rich.panel import Panel
    from rich.table import Table

    from advisor.application.reports import cost_words, recommendation_sentence
    from advisor.application.search import sessions_phrase
    from advisor.science.controls import CONTROL_LABELS

    verdict = doc.get("verdict", "recommended" if doc["feasible"] else "none_in_search")
    title = PANEL_TITLES.get(verdict, verdict)
    budget = doc.get("budget")
    if budget and budget.get("mode") == "most_accurate":
        title = f"What {budget['hours']:g} {doc['modality'].get('cost_unit', 'hours')} buy"
    out.print(Panel(recommendation_sentence(doc), title=title, border_style="green" if doc["feasible"] else "red"))
    if not doc["feasible"]:
        out.print("To reach the target: raise --max-units or --max-sessions, try another --modality or observable, "
                  "lower --target-accuracy, run more --trials, or plan on a larger population (--preset standard "
                  "doubles the default one; identification still improves with more simulated networks).",
                  highlight=False)
    rec = headline_trial(doc)
    unit = rec.get("cost_unit", "")
    title = {"recommended": "Protocol", "none_in_search": "Most accurate protocol found"}.get(
        verdict, "Protocol chosen on the search networks")
    table = Table(title=title, title_justify="left", title_style="bold")
    table.add_column("setting", style="cyan", no_wrap=True)
    table.add_column("value")
    what = "synapses" if rec["observable"] == "weights" else "units"
    final = doc["setaside"]
    if int(doc["question"].get("max_animals") or 1) > 1:
        table.add_row("animals", f"{int(rec.get('n_animals') or 1)} (evidence pooled; searched 1-"
                                 f"{doc['question']['max_animals']})")
    for key, value in (
        ("observable", rec["observable"]), (what, str(rec["n_units"])), ("layer groups", ", ".join(rec["layers"])),
        ("sessions", sessions_phrase(rec["n_sessions"], rec["window"])),
        ("noise", _noise_sentence(rec)),
        ("cost", f"{cost_words(rec, unit)} ({doc['modality']['key']})"),
        ("accuracy, set-aside", f"{_ci_range(final)} on {final['n_networks']} networks never searched; "
                                f"chance {doc['chance']:.3f}"),
        ("accuracy, search estimate", _ci_range(rec)),
        ("classifier", f"{doc['question']['classifier']} on {doc['question'].get('statistics', 'marginal')} "
                       "statistics (recheck: advisor evaluate --run RUN_ID)"),
    ):
        table.add_row(key, value)
    ver = doc.get("verification")
    if ver:
        table.add_row("re-checked, fresh seeds", _ci_range(ver))
    for name, entry in doc["controls"].items():
        table.add_row(f"control: {CONTROL_LABELS.get(name, name)}", f"{_ci_range(entry)}, {entry['classifier']}")
    held = doc.get("heldout_architecture")
    if held:
        verdict_text = "transfers" if held.get("transfers") else "does not reach the target"
        table.add_row(f"held-out {held.get('level', 'architecture family')}",
                      f"{_ci_range(held)} (control {held['control_accuracy']:.3f}): {verdict_text}")
    gains = (doc.get("modality") or {}).get("gains")
    if gains:
        table.add_row("unknown gains (log SD)", ", ".join(f"{k} {v:g}" for k, v in gains.items()))
    out.print(table)

    power = doc.get("power_table")
    if power and int(doc["question"].get("max_animals") or 1) > 1:
        out.print(_power_table(power))
    out.print(_protocol_table("Cost-accuracy Pareto front", doc["pareto"], with_trial=True))
    if doc["insufficient"]:
        numbers = {r["trial"] for r in doc["insufficient"]}
        cheaper = [t for t in doc["trials"] if t["number"] in numbers]
        out.print(_protocol_table("Would not suffice: cheaper protocols below the target", cheaper,
                                  with_trial=False, target=doc["question"]["target_accuracy"]))
    _print_where(out, doc, reports)
    out.print(f"[bold]Study[/bold]: {doc['question']['study']} in {doc['storage']}", highlight=False, soft_wrap=True)


def _power_table(power: dict[str, Any]) -> Any:
    """Accuracy (search estimate) against units × animals; ✓ where the target is reached beyond the controls."""
    from rich import box
    from rich.table import Table

    table = Table(title="Power: accuracy by units and animals (search estimate)", title_justify="left",
                  title_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("units", justify="right", no_wrap=True)
    for k in power["animals"]:
        table.add_column(f"{k} anim.", justify="right", no_wrap=True)
    for row in power.get("units") or []:
        table.add_row(str(row["value"]), *(f"{c['accuracy']:.2f}{' ✓' if c['reaches'] else ''}"
                                           for c in row["cells"]))
    table.caption = (f"✓: lower 95% CI bound ≥ {power['target']:.2f} beyond the controls pooled alike; sessions × "
                     "animals in the report")
    table.caption_justify = "left"
    return table


_OBS_SHORT = {"weights": "W", "activations": "A", "activity_change": "dA"}
_LAYER_SHORT = {"early": "E", "middle": "M", "deep": "D"}


NOISE_WORDS = {"gaussian": "noise: Gaussian SD relative to each unit's response spread (lower is better)",
               "poisson": "Poisson mean spikes per stimulus (more is better)", "none": "none: noise-free"}


def _noise_cell(p: dict[str, Any]) -> str:
    """The noise of a protocol labelled by its model (a Gaussian SD and Poisson spike counts go opposite ways),
    with the repeats averaged: ``SD 0.3 (4)``, ``12 sp. (4)``, ``none``."""
    model, repeats = p.get("noise_model", "gaussian"), p.get("repeats", 1)
    if model == "none":
        return "none"
    level = f"SD {p['noise']:.2g}" if model == "gaussian" else f"{p['noise']:.3g} sp."
    return f"{level} ({repeats})"


def _noise_sentence(p: dict[str, Any]) -> str:
    """The noise row of a plan: what the level means for its model."""
    model, repeats = p.get("noise_model", "gaussian"), p.get("repeats", 1)
    avg = f", {repeats} repeats averaged" if repeats != 1 else ", one presentation"
    if model == "none":
        return "none (noise-free)"
    if model == "gaussian":
        return f"Gaussian, SD {p['noise']:.3g} of each unit's response spread{avg}"
    return f"Poisson, {p['noise']:.3g} mean spikes per stimulus{avg}"


def _noise_caption(models: set[str]) -> str:
    words = [NOISE_WORDS["gaussian"] if "gaussian" in models else "",
             NOISE_WORDS["poisson"] if "poisson" in models else ""]
    said = "; or ".join(w for w in words if w)
    if not said:
        return "noise: none"
    return (said if said.startswith("noise") else "noise: " + said) + "; (N): repeats averaged"


def _protocol_table(title: str, trials: list[dict[str, Any]], *, with_trial: bool, target: float | None = None) -> Any:
    """One row per protocol, one short column per setting (fits an 80-column terminal)."""
    from rich import box
    from rich.table import Table

    several = len({t["observable"] for t in trials}) > 1
    animals = any(t.get("animal_cost") is not None for t in trials)  # --max-animals: a column, costs in all
    table = Table(title=title, title_justify="left", title_style="bold", caption_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    columns = (["#"] if with_trial else []) + ["cost", "acc.", "95% CI"] + (["an."] if animals else []) + (
        ["obs."] if several else []) + ["units", "groups", "sessions", "noise (rep.)"]
    for col in columns:
        table.add_column(col, justify="left" if col in ("obs.", "groups", "noise (rep.)") else "right",
                         no_wrap=True)
    rows = sorted(trials, key=lambda t: (t["cost"], -t["accuracy"])) if target is not None else trials
    for t in rows:
        span = "" if t["window"][1] >= 1.0 else f" in {t['window'][1]:.0%}"
        cells = ([str(t["number"])] if with_trial else []) + [
            f"{t['cost']:.1f}", f"{t['accuracy']:.3f}", f"{t['ci'][0]:.2f}-{t['ci'][1]:.2f}"] + (
            [str(t.get("n_animals") or 1)] if animals else []) + ([_OBS_SHORT[t["observable"]]] if several else []) + [
            str(t["n_units"]), "".join(_LAYER_SHORT[g] for g in t["layers"]), f"{t['n_sessions']}{span}",
            _noise_cell(t)]
        table.add_row(*cells, style="green" if t["feasible"] else None)
    table.caption = ("groups: E early, M middle, D deep; sessions 'in 30%': within the first 30% of learning; "
                     + _noise_caption({t.get("noise_model", "gaussian") for t in trials})
                     + ("; obs.: W weights, A activations, dA activity changes" if several else "")
                     + ("; an.: animals (cost in all, accuracy pooled over them)" if animals else "")
                     + ("; green: CI lower bound reaches the target and clears the controls" if with_trial else ""))
    return table


@click.command()
@_plan_options
@click.option("--modalities", "modalities_text", default="ephys,two_photon,spine_imaging,paired_patch",
              show_default=True, metavar="LIST", help="Modalities to compare (keys or .toml paths), a comma list.")
@click.option("--trials", type=click.IntRange(min=1), default=60, show_default=True, metavar="N",
              help="Protocols evaluated per modality.")
@common_options
def compare(app: App, preset: str | None, bank_dir: Path | None, observable: str | None, max_units: int | None,
            max_sessions: int | None, target_accuracy: float, rules_text: str | None, family: bool, heldout: str,
            statistics: str, robust: bool, classifier: str, splits: int, setaside: float, timeout: float | None,
            seed: int, storage: str | None, max_animals: int, budget: float | None, tracking_uri: str | None,
            modalities_text: str, trials: int) -> None:
    """Compare recording modalities: the cheapest sufficient protocol of each, side by side.

    One search per modality (its observables, limits, noise and cost), one MLflow parent run with every trial
    nested, and a figure of accuracy against cost per modality.
    """
    from advisor.application.planning import compare_document, make_question, modality_entry
    from advisor.science.cost import load_modality

    ctx = click.get_current_context()
    command = command_line(ctx)
    rules = parse_rules(rules_text)
    keys = parse_list(modalities_text)
    if not keys:
        raise AdvisorError("--modalities must name at least one modality (a comma list, e.g. ephys,two_photon)")
    modalities = [load_modality(key) for key in keys]
    from advisor.application.planning import check_animal_options

    check_animal_options(max_animals, budget, modalities)
    tracker = open_tracker(app, tracking_uri)
    storage_url = _storage(app, storage)
    bank, preset_name = open_bank(app, preset, bank_dir)
    # every modality's question is checked before anything is written (a bad bound fails in one line)
    questions = {mod.key: make_question(bank, mod, observable=observable, max_units=max_units,
                                        max_sessions=max_sessions, target_accuracy=target_accuracy, rules=rules,
                                        family=family, heldout=heldout, classifier=classifier, n_trials=trials,
                                        n_splits=splits, seed=seed, setaside=setaside, robust=robust,
                                        statistics=statistics, max_animals=max_animals, budget=budget,
                                        budget_mode=_budget_mode(ctx))
                 for mod in modalities if observable is None or observable in mod.observables}
    workspace = app.open_workspace()
    _prepare_storage(storage_url)
    entries: list[dict[str, Any]] = []
    params = {"command": command, "preset": preset_name or "", "bank_hash": bank.hash,
              "modalities": ",".join(m.key for m in modalities), "observable": observable or "",
              "target_accuracy": target_accuracy, "trials": trials, "seed": seed, "classifier": classifier,
              "splits": splits, "setaside": setaside, **({"max_animals": max_animals} if max_animals > 1 else {}),
              **({"budget_hours": budget} if budget is not None else {})}
    import hashlib
    import time

    from advisor.application.tracking import compare_run_name

    studies = {key: f"compare-{q.key(bank.hash, key)}" for key, q in questions.items()}
    params["study"] = "compare-" + hashlib.sha256(",".join(studies.values()).encode()).hexdigest()[:12]
    reopen, resumed_from = tracker.resumable_run("compare", params["study"], params)
    started = time.perf_counter()
    tags = {"advisor.bank": bank.hash, "advisor.study": params["study"],
            **({"advisor.resumed_from": resumed_from} if resumed_from else {})}
    with tracker.start_run("compare", compare_run_name([m.key for m in modalities], target_accuracy), params,
                           tags, reopen=reopen) as run:
        with progress_bar(app.consoles.err) as bar:
            for mod in modalities:
                question = questions.get(mod.key)
                doc = None
                if question is not None:
                    doc = _run_plan(app, bank, question, mod, storage=storage_url, study=studies[mod.key],
                                    timeout=timeout, curves=False, run=run, bar=bar, tracking_uri=tracker.uri,
                                    reopened=reopen is not None, prefix=True)
                entries.append(modality_entry(mod, doc, observable, target_accuracy))
                if doc is None:
                    continue
                rec = doc["recommendation"]
                run.log_metrics({f"{mod.key}.feasible": float(doc["feasible"]),
                                 **({f"{mod.key}.cost": rec["cost"], f"{mod.key}.accuracy": doc["setaside"]["accuracy"],
                                     f"{mod.key}.search_accuracy": rec["accuracy"]} if rec else {})})
        doc = compare_document(bank, preset_name, entries, command=command, observable=observable,
                               max_units=max_units, max_sessions=max_sessions, target_accuracy=target_accuracy,
                               rules=rules, family=family, heldout=heldout, classifier=classifier, trials=trials,
                               n_splits=splits, seed=seed, setaside=setaside, storage=storage_url,
                               elapsed_s=time.perf_counter() - started, max_animals=max_animals, budget=budget)
        reports = finish_run(app, run, tracker, doc, workspace.reports / run.run_id)
    if app.json_output:
        app.consoles.emit_json(doc)
        return
    _render_compare(app.consoles.out, doc, reports)


def _render_compare(out: Any, doc: Document, reports: dict[str, str]) -> None:
    from rich import box
    from rich.table import Table

    from advisor.application.reports import recommendation_sentence

    out.print(recommendation_sentence(doc), highlight=False)
    # one space between columns below 100 columns: the widest rows (a 13-letter modality, 4-digit cost, every
    # column) then still fit 80 (tests/test_terminal_width.py)
    table = Table(title="Modalities side by side (cheapest sufficient protocol, else the most accurate found)",
                  title_justify="left", title_style="bold", caption_justify="left", box=box.SIMPLE_HEAD,
                  pad_edge=False, padding=(0, 1) if out.width >= 100 else (0, 0))
    chosen = {m["name"]: m["recommendation"] or m.get("candidate") or m.get("best") for m in doc["modalities"]}
    several = len({p["observable"] for p in chosen.values() if p}) > 1
    names = [m["name"] + (" ✓" if m["feasible"] else "") for m in doc["modalities"]]
    for col in ("modality", "cost", "acc.", "95% CI", *(["obs."] if several else []), "units", "groups", "sessions",
                "noise (rep.)"):
        table.add_column(col, no_wrap=True, min_width=max(map(len, names)) if col == "modality" else None,
                         justify="left" if col in ("modality", "obs.", "groups", "noise (rep.)") else "right")
    reasons, models = [], set()
    for m in sorted(doc["modalities"], key=lambda m: (not m["feasible"], m["cost"] or 0.0)):
        p = chosen[m["name"]]
        name = m["name"] + (" ✓" if m["feasible"] else "")
        if p is None:
            table.add_row(name, *(["—"] * (8 if several else 7)))
        else:
            models.add(p.get("noise_model", "gaussian"))
            span = "" if p["window"][1] >= 1.0 else f" in {p['window'][1]:.0%}"
            final = m.get("setaside") or p
            table.add_row(name, f"{p['cost']:.0f}" if p["cost"] >= 100 else f"{p['cost']:.1f}",
                          f"{final['accuracy']:.3f}", f"{final['ci'][0]:.2f}-{final['ci'][1]:.2f}",
                          *([_OBS_SHORT[p["observable"]]] if several else []), str(p["n_units"]),
                          "".join(_LAYER_SHORT[g] for g in p["layers"]), f"{p['n_sessions']}{span}", _noise_cell(p),
                          style="green" if m["feasible"] else None)
        if m["reason"]:
            reasons.append(f"{m['name']}: {m['reason']}")
    units = sorted({m["cost_unit"] for m in doc["modalities"]})
    table.caption = (f"✓: reaches the target beyond the controls; cost in {', '.join(units)} per animal; acc.: on "
                     "set-aside networks never searched; "
                     + ("obs.: W weights, A activations, dA activity changes; " if several else "")
                     + f"groups: E early, M middle, D deep; {_noise_caption(models)}")
    out.print(table)
    for reason in reasons:
        out.print(f"[bold]Not enough[/bold] {reason}", highlight=False)
    if not any(m["feasible"] for m in doc["modalities"]) and int(doc["question"].get("trials") or 0) < MANY_TRIALS:
        out.print(f"[bold]Note[/bold]: {doc['question']['trials']} trials per modality; more (--trials "
                  f"{MANY_TRIALS}) may find a protocol that reaches the target.", highlight=False)
    _print_where(out, doc, reports)


MANY_TRIALS = 60
"""Trials per modality below which a comparison that found nothing says more trials may help."""


@click.command()
@click.option("--study", required=True, metavar="NAME", help="The study of a running `advisor plan` to join.")
@click.option("--storage", default=None, metavar="URL",
              help="The plan's Optuna storage [default: the journal in the workspace].")
@click.option("--timeout", type=click.FloatRange(min=0.0, min_open=True), default=None, metavar="SEC",
              help="Stop starting trials after SEC seconds.")
@common_options
def worker(app: App, study: str, storage: str | None, timeout: float | None) -> None:
    """Add a worker to a running plan's search: it evaluates trials until the study holds enough.

    Start it in a second terminal (or on another machine sharing the storage and the bank) with the study name
    `advisor plan` printed; the plan finishes sooner and reports every worker's trials. Trials are logged to the
    plan's MLflow run.
    """
    from advisor.application.search import join_study
    from advisor.application.tracking import Tracker, trial_metrics, trial_params

    storage_url = _storage(app, storage)
    parent: dict[str, Any] = {}

    def on_trial(result: Any, new: bool) -> None:
        if "run" not in parent:
            context = parent["context"]
            tracker = Tracker(app.open_workspace(), context.get("tracking_uri"))
            parent["run"] = tracker.attach(context["parent_run_id"])
        parent["run"].log_trial(result.number, trial_params(result), trial_metrics(result),
                                {"advisor.worker": "true"})
        app.consoles.err.print(f"trial {result.number}: accuracy {result.accuracy:.3f}, cost {result.cost:.1f}",
                               highlight=False)

    from advisor.application.search import study_context

    parent["context"] = study_context(storage_url, study)
    context, n = join_study(storage_url, study, on_trial=on_trial, timeout=timeout)
    if app.json_output:
        app.consoles.emit_json({"study": study, "storage": storage_url, "trials": n,
                                "parent_run_id": context.get("parent_run_id")})
        return
    app.consoles.out.print(f"worker finished: {n} trial{'s' if n != 1 else ''} added to study {study}",
                           highlight=False)

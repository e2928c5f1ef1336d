"""``advisor export`` (virtual recordings in the lab's formats) and ``advisor identify`` (a real recording through
the plan's classifier, calibrated, with a misspecification check)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from advisor.cli.app import (
    CLASSIFIER_CHOICES,
    NOISE_MODEL_CHOICES,
    STATISTICS_CHOICES,
    App,
    check_bank_or_preset,
    command_line,
    common_options,
    finish_run,
    load_plan_run,
    open_bank,
    open_tracker,
    parse_gain_sd,
    parse_list,
    parse_rules,
    parse_window,
    progress_bar,
    tracking_uri_option,
)
from advisor.errors import AdvisorError
from simulator.constants import GROUPS

if TYPE_CHECKING:
    from advisor.application.identify import PlanSettings
    from advisor.science.recordings import LabRecording

@click.command()
@click.option("--run", "run_id", required=True, metavar="RUN_ID",
              help="The plan whose protocol the recordings follow (`advisor runs list`; a unique prefix will do).")
@click.option("--networks", type=int, default=3, show_default=True, metavar="N",
              help="How many of the plan's set-aside networks (animals) to export, balanced over the rules.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True, metavar="DIR",
              help="Folder for the files, one per animal: DIR/network-ROW.nwb (or .npz).")
@click.option("--format", "fmt", type=click.Choice(("nwb", "npz")), default="nwb", show_default=True,
              help="nwb: two-photon (DfOverF ROI responses) for a Gaussian protocol, electrophysiology (units' "
                   "spike times) for a Poisson one; npz: the documented array layout (advisor identify --help).")
@tracking_uri_option
@common_options
def export(app: App, run_id: str, networks: int, out_dir: Path, fmt: str, tracking_uri: str | None) -> None:
    """Write virtual recordings of a plan's set-aside networks in the lab's formats.

    Each file is one animal (one simulated network nothing in the plan was fitted on) recorded under the plan's
    protocol afresh: other units, gains and noise than any the plan scored, every presentation of every probe
    stimulus kept. The files show what `advisor identify` expects, and `--json` names each file's true rule:

    \b
      {"recordings": [{"path", "network", "rule", ...}]}

    \b
    Example:
      advisor export --run RUN_ID --networks 3 --out demo/
      advisor identify demo/network-0012.nwb --run RUN_ID
    """
    from advisor.application.identify import export_recordings, export_rows, plan_settings
    from advisor.application.workspace import writable_dir_problem

    if networks < 1:
        raise AdvisorError(f"--networks must be a positive integer (animals to export); got {networks}")
    problem = writable_dir_problem(out_dir)
    if problem:
        raise AdvisorError(f"--out {out_dir}: {problem}")
    if fmt == "nwb":
        from advisor.science.nwb import import_pynwb

        import_pynwb()
    summary, doc, bank = load_plan_run(app, run_id, tracking_uri)
    settings = plan_settings(doc, summary.run_id)
    export_rows(bank, settings, networks)  # --networks against the plan's set-aside networks, before anything
    with progress_bar(app.consoles.err) as bar:
        bar.start(f"exporting {networks} recording{'s' if networks != 1 else ''} ({fmt})", networks)
        written = export_recordings(bank, settings, networks, out_dir, fmt, tick=bar.advance)
    if app.json_output:
        app.consoles.emit_json({"recordings": written, "run_id": summary.run_id, "format": fmt,
                                "protocol": settings.protocol.describe()})
        return
    out = app.consoles.out
    out.print(f"Wrote {len(written)} virtual recording{'s' if len(written) != 1 else ''} ({fmt}) of plan "
              f"{summary.run_id[:8]}'s set-aside networks, one animal each, under its protocol: "
              f"{settings.protocol.describe()}.", highlight=False)
    for entry in written:
        out.print(f"  {Path(entry['path']).name}  true rule: {entry['rule']}", highlight=False)
    out.print(f"Folder: {out_dir.resolve()}", highlight=False, soft_wrap=True)
    out.print(f"Identify one: advisor identify {written[0]['path']} --run {summary.run_id[:8]}", highlight=False,
              soft_wrap=True)


def _parse_area_map(text: str | None) -> dict[str, str] | None:
    if text is None:
        return None
    out: dict[str, str] = {}
    for item in parse_list(text):
        area, sep, group = item.partition("=")
        if not sep or not area or group not in GROUPS:
            raise AdvisorError(f"--area-map takes AREA=GROUP pairs with GROUP one of {', '.join(GROUPS)} (e.g. "
                               f"V1=early,LM=middle); got {item!r}")
        out[area] = group
    return out


def _parse_floats(text: str | None, option: str, count: int | None = None) -> list[float] | None:
    if text is None:
        return None
    try:
        values = [float(v) for v in parse_list(text)]
    except ValueError:
        raise AdvisorError(f"{option} must be a comma list of numbers; got {text!r}") from None
    if count is not None and len(values) != count:
        raise AdvisorError(f"{option} must be {count} numbers; got {text!r}")
    return values


@click.command()
@click.argument("recording", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--run", "run_id", default=None, metavar="RUN_ID",
              help="The plan the recording followed: its bank, protocol, rules, classifier and seed.")
@click.option("--preset", default=None, metavar="NAME|PATH",
              help="Without --run: identify against this preset's bank, with the protocol options below.")
@click.option("--bank", "bank_dir", type=click.Path(path_type=Path), default=None, metavar="PATH",
              help="Without --run: identify against this bank directory.")
@click.option("--units", type=click.IntRange(min=1), default=None, metavar="N",
              help="Without --run: units per animal the classifier uses, split evenly over --layers.")
@click.option("--layers", default=None, metavar="LIST", help="Without --run: layer groups [default: all].")
@click.option("--sessions", type=click.IntRange(min=1), default=None, metavar="S",
              help="Without --run: sessions, evenly spread over --window.")
@click.option("--window", default=None, metavar="START-END", help="Without --run: fractions of learning [0-1].")
@click.option("--noise-model", type=click.Choice(NOISE_MODEL_CHOICES), default=None,
              help="Without --run: gaussian (presentations averaged) or poisson (spike counts summed).")
@click.option("--noise", type=float, default=None, metavar="X",
              help="Without --run: the noise level after --repeats presentations.")
@click.option("--repeats", type=click.IntRange(min=1), default=None, metavar="R",
              help="Without --run: presentations per stimulus combined [default: 1].")
@click.option("--acute", is_flag=True, default=None, help="Without --run: new units every session.")
@click.option("--gain-sd", "gain_sd_text", default=None, metavar="ANIMAL,AREA,UNIT",
              help="Without --run: SDs of the log gains [default: 0.5,0.3,0.5].")
@click.option("--statistics", type=click.Choice(STATISTICS_CHOICES), default=None,
              help="Without --run: statistics the classifier sees [default: population].")
@click.option("--classifier", type=click.Choice(CLASSIFIER_CHOICES), default=None,
              help="Without --run: the classifier [default: ridge].")
@click.option("--rules", "rules_text", default=None, metavar="LIST",
              help="Without --run: only these rules [default: every rule in the bank].")
@click.option("--seed", type=click.IntRange(min=0), default=None, metavar="N",
              help="Without --run: seed of the set-aside draw, recording and classifier [default: 0].")
@click.option("--area-map", "area_map_text", default=None, metavar="AREA=GROUP,...",
              help="NWB: map each unit's area (--area-column) to a layer group, e.g. V1=early,LM=middle,AL=deep "
                   "[default: the column holds early/middle/deep].")
@click.option("--area-column", default="area", show_default=True, metavar="NAME",
              help="NWB: the column of the units (or ROI) table naming each unit's area.")
@click.option("--stimulus-column", default="stimulus", show_default=True, metavar="NAME",
              help="NWB: the column of the trials table naming the probe stimulus presented.")
@click.option("--intervals", default="trials", show_default=True, metavar="NAME",
              help="NWB: the intervals table of stimulus presentations.")
@click.option("--response-window", "window_text", default=None, metavar="START,END",
              help="NWB: seconds from each presentation's start over which responses are averaged (imaging) or "
                   "spikes counted [default: the presentation's own start to stop time].")
@click.option("--session-progress", "progress_text", default=None, metavar="LIST",
              help="Each session's position in learning (0 = before training, 1 = its end), in order, where the "
                   "files lack the epochs table's learning_progress column.")
@tracking_uri_option
@common_options
def identify(app: App, recording: tuple[Path, ...], run_id: str | None, preset: str | None, bank_dir: Path | None,
             units: int | None, layers: str | None, sessions: int | None, window: str | None,
             noise_model: str | None, noise: float | None, repeats: int | None, acute: bool | None,
             gain_sd_text: str | None, statistics: str | None, classifier: str | None, rules_text: str | None,
             seed: int | None, area_map_text: str | None, area_column: str, stimulus_column: str, intervals: str,
             window_text: str | None, progress_text: str | None, tracking_uri: str | None) -> None:
    """Say which simulated learning rule one animal's recording is consistent with, and how sure.

    RECORDING is one animal: one NWB file with its sessions as epochs, that animal's session files (NWB, one
    session each), or one .npz file. The recording is checked against the plan's protocol (sessions and their
    positions in learning, stimuli, units per layer group; more units than planned is fine, a random subset is
    used); its statistics go through the plan's classifier, fitted on the plan's search networks and calibrated
    (temperature scaling on cross-fitted scores), whose reliability is measured on the plan's set-aside networks.
    Before any verdict, a misspecification check asks whether the recording is like the simulated networks at
    all (a conformal p-value of its distance to them, with the false-alarm rate measured on set-aside networks).
    The result is an MLflow run linked to the plan, with Markdown, HTML and PDF reports.

    \b
    The .npz layout (one animal):
      responses         (sessions, units, stimuli[, presentations])
      unit_group        (units,): early, middle or deep
      session_progress  (sessions,): 0 = before training ... 1 = end
      behaviour         (sessions, 2), optional: loss and task metric

    Presentations are averaged (imaging, Gaussian noise) or their spike counts summed (electrophysiology).

    \b
    Examples:
      advisor identify mouse7.nwb --run RUN_ID \\
          --area-map V1=early,LM=middle,AL=deep
      advisor identify day1.nwb day5.nwb day9.nwb --run RUN_ID \\
          --session-progress 0,0.5,1
      advisor identify mouse7.npz --preset quick --units 300 --sessions 10
    """
    from advisor.application.identify import identify_document, load_identifier, plan_settings, read_recording

    ctx = click.get_current_context()
    flags = {"--units": units, "--layers": layers, "--sessions": sessions, "--window": window,
             "--noise-model": noise_model, "--noise": noise, "--repeats": repeats, "--acute": acute,
             "--gain-sd": gain_sd_text, "--statistics": statistics, "--classifier": classifier,
             "--rules": rules_text, "--seed": seed}
    given = [name for name, value in flags.items() if value is not None]
    if run_id is not None and (bank_dir is not None or preset is not None):
        raise AdvisorError(f"--run takes the bank from the plan; drop {'--bank' if bank_dir else '--preset'} (or "
                           "drop --run)")
    if run_id is not None and given:
        raise AdvisorError(f"--run takes the protocol and settings from the plan; drop {', '.join(given)} (or drop "
                           "--run)")
    if run_id is None and units is None:
        raise AdvisorError("give --run RUN_ID (a plan) or a bank (--preset/--bank) with the protocol: at least "
                           "--units and --sessions")
    check_bank_or_preset(bank_dir, preset)
    area_map = _parse_area_map(area_map_text)
    response_window = _parse_floats(window_text, "--response-window", 2)
    if response_window is not None and not response_window[0] < response_window[1]:
        raise AdvisorError(f"--response-window must be START,END with START < END (seconds); got {window_text}")
    progress = _parse_floats(progress_text, "--session-progress")
    rec, fmt = read_recording(recording, area_map=area_map, area_column=area_column,
                              stimulus_column=stimulus_column, intervals=intervals, window=response_window,
                              session_progress=progress)
    tracker = open_tracker(app, tracking_uri)
    if run_id is not None:
        summary, doc, bank = load_plan_run(app, run_id, tracking_uri)
        settings = plan_settings(doc, summary.run_id)
        preset_name = doc["bank"].get("preset")
    else:
        settings, bank, preset_name = _flag_settings(app, preset, bank_dir, units, layers, sessions, window,
                                                     noise_model, noise, repeats, bool(acute), gain_sd_text,
                                                     statistics, classifier, rules_text, seed)
    workspace = app.open_workspace()
    status = app.consoles.err.status("preparing the classifier", spinner="dots")
    with status:
        identifier, cached = load_identifier(bank, settings, workspace.root / "cache" / "identify",
                                             status=lambda text: status.update(text))
    command = command_line(ctx)
    doc = identify_document(identifier, settings, rec, recording_format=fmt, command=command)
    doc["bank"] = {"hash": bank.hash, "path": str(bank.path), "preset": preset_name,
                   "n_networks": len(bank.metadata)}
    doc["identifier"]["cached"] = cached
    reports = _track(app, tracker, doc, settings, rec)
    if app.json_output:
        app.consoles.emit_json(doc)
        return
    _render(app, doc, reports)


def _flag_settings(app: App, preset: str | None, bank_dir: Path | None, units: int | None, layers: str | None,
                   sessions: int | None, window: str | None, noise_model: str | None, noise: float | None,
                   repeats: int | None, acute: bool, gain_sd_text: str | None, statistics: str | None,
                   classifier: str | None, rules_text: str | None, seed: int | None
                   ) -> tuple[PlanSettings, Any, str | None]:
    from advisor.application.identify import flag_settings
    from advisor.science.protocol import DEFAULT_GAIN_SD, RecordingProtocol

    if sessions is None:
        raise AdvisorError("without --run give the protocol: --sessions is missing")
    rules = parse_rules(rules_text)
    protocol = RecordingProtocol(
        observable="activations", n_units=int(units or 0), layers=parse_list(layers) if layers else GROUPS,
        n_sessions=sessions, window=parse_window(window) if window else (0.0, 1.0),
        noise_model=noise_model or "gaussian", noise=float(noise or 0.0), chronic=not acute, seed=seed or 0,
        gain_sd=parse_gain_sd(gain_sd_text) if gain_sd_text else DEFAULT_GAIN_SD,
        statistics=statistics or "population")
    bank, preset_name = open_bank(app, preset, bank_dir)
    protocol.check({protocol.observable: bank[protocol.observable].shape})
    in_bank = sorted(set(bank.metadata["rule"].astype(str)))
    missing = [r for r in rules or () if r not in in_bank]
    if missing:
        raise AdvisorError(f"--rules: {', '.join(missing)} not in the bank; its rules are {', '.join(in_bank)}")
    settings = flag_settings(protocol, repeats=repeats or 1, rules=rules or tuple(in_bank), target="rule",
                             classifier=classifier or "ridge", seed=seed or 0, setaside=0.25)
    return settings, bank, preset_name


def _track(app: App, tracker: Any, doc: Any, settings: PlanSettings, recording: LabRecording) -> dict[str, str]:
    """The identify run: params, metrics, tags linking it to its plan, figures, reports and the document."""
    from advisor.application.tracking import identify_metrics, identify_run_name

    params = {"command": doc["command"], "recording": recording.source, "format": doc["recording"]["format"],
              "plan_run": settings.run_id or "", "bank_hash": doc["bank"]["hash"],
              "protocol": settings.protocol.describe(), "classifier": settings.classifier,
              "rules": ",".join(doc["labels"]), "seed": settings.seed}
    tags = {"advisor.bank": doc["bank"]["hash"], "advisor.top_rule": doc["top_rule"],
            **({"advisor.plan_run": settings.run_id} if settings.run_id else {})}
    with tracker.start_run("identify", identify_run_name(doc), params, tags) as run:
        run.log_metrics(identify_metrics(doc))
        return finish_run(app, run, tracker, doc, app.open_workspace().reports / run.run_id)


def _render(app: App, doc: Any, reports: dict[str, str]) -> None:
    from rich.panel import Panel
    from rich.table import Table

    from advisor.application.figures import rule_words

    out = app.consoles.out
    family = doc["target"] == "family"
    title = ("Consistent with " + doc["top_words"]) if doc["in_distribution"] else "Unlike every simulated network"
    out.print(Panel(doc["verdict"], title=title, title_align="left",
                    border_style="green" if doc["in_distribution"] else "red"), highlight=False)
    table = Table(title="Posterior over the simulated rules", title_justify="left", title_style="bold")
    table.add_column("rule", style="cyan")
    table.add_column("probability", justify="right", no_wrap=True)
    for label, p in sorted(doc["posterior"].items(), key=lambda kv: -kv[1]):
        table.add_row(rule_words(label, family=family), f"{p:.3f}")
    out.print(table)
    cal, mis = doc["calibration"], doc["misspecification"]
    checks = Table(title="Can the posterior be trusted?", title_justify="left", title_style="bold")
    checks.add_column("check", style="cyan")
    checks.add_column("value", justify="right", no_wrap=True)
    checks.add_row("misspecification p (small = unlike the simulations)", f"{mis['p']:.3f}")
    checks.add_row(f"false alarms at p ≤ {mis['alpha']:g}, set-aside networks", f"{mis['false_alarm_rate']:.3f}")
    checks.add_row(f"calibrated accuracy, {cal['n_networks']} set-aside networks",
                   f"{cal['accuracy']:.2f} ({cal['accuracy_ci'][0]:.2f}-{cal['accuracy_ci'][1]:.2f})")
    checks.add_row("expected calibration error (uncalibrated)", f"{cal['ece']:.3f} ({cal['ece_uncalibrated']:.3f})")
    out.print(checks)
    if not doc["in_distribution"]:
        out.print("Furthest out of the simulated range: " + "; ".join(
            f"{f['statistic']} ({f['z']:+.1f} robust SD)" for f in mis["furthest"][:3]), highlight=False)
    for note in doc["recording"]["notes"]:
        out.print(f"Note: {note}", highlight=False)
    out.print(f"[bold]Reports[/bold]: {', '.join(reports.values())}", highlight=False, soft_wrap=True)
    out.print(f"[bold]MLflow run[/bold]: {doc['run_id']}", highlight=False, soft_wrap=True)

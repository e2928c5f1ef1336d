"""``advisor runs list``, ``advisor runs show`` and ``advisor report``: past plans in the MLflow store."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from advisor.application.workspace import Workspace
from advisor.errors import AdvisorError

if TYPE_CHECKING:

    pass
from advisor.application.documents import REPORT_FORMATS
from advisor.cli.app import App, common_options, tracking_uri_option


@click.group()
def runs() -> None:
    """Review past plans, comparisons and identifications (MLflow runs)."""


def short_id(run_id: str, every: list[str]) -> str:
    """The shortest prefix of ``run_id`` (at least 8 characters) that no other run id in ``every`` starts with,
    as git abbreviates commits; ``runs show`` and ``report`` take it (``Tracker.resolve_run_id``)."""
    others = [o for o in every if o != run_id]
    for n in range(8, len(run_id)):
        if not any(o.startswith(run_id[:n]) for o in others):
            return run_id[:n]
    return run_id


def _run_row(summary: Any) -> dict[str, Any]:
    import json

    from advisor.application.tracking import RECOMMENDATION_TAG

    doc = summary.summary or {}
    tagged = summary.tags.get(RECOMMENDATION_TAG)
    rec = doc.get("recommendation") or (json.loads(tagged) if tagged else {})
    return {"run_id": summary.run_id, "kind": summary.kind, "name": summary.name, "status": summary.status,
            "start_time": summary.start_time.isoformat() if summary.start_time else None,
            "end_time": summary.end_time.isoformat() if summary.end_time else None,
            "command": summary.params.get("command"), "modality": summary.params.get("modality"),
            "target_accuracy": summary.params.get("target_accuracy"),
            "feasible": bool(summary.metrics["feasible"]) if "feasible" in summary.metrics else None,
            "accuracy": summary.metrics.get("accuracy"), "cost": summary.metrics.get("cost"),
            "recommendation": rec or None, "resumes": int(summary.tags.get("advisor.resumes", "0")),
            "resumed_from": summary.tags.get("advisor.resumed_from"),
            # an identification: the plan it used, its top rule and probability, and the misspecification check
            "plan_run": summary.tags.get("advisor.plan_run"), "top_rule": summary.tags.get("advisor.top_rule"),
            "p_top": summary.metrics.get("p_top"),
            "in_distribution": (bool(summary.metrics["in_distribution"]) if "in_distribution" in summary.metrics
                                else None)}


def _kind(row: dict[str, Any]) -> str:
    """The kind column: ``plan``, or ``plan ↻2`` for a run reopened twice by resumed studies, ``plan ↻`` for a
    new run that resumed another one's study."""
    if row["resumes"]:
        return f"{row['kind']} ↻{row['resumes']}"
    return f"{row['kind']} ↻" if row["resumed_from"] else row["kind"] or ""


@runs.command("list")
@tracking_uri_option
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, metavar="N",
              help="Newest N runs.")
@common_options
def runs_list(app: App, tracking_uri: str | None, limit: int) -> None:
    """List past plans, comparisons and identifications, newest first (the question each asked; `runs show`
    gives the command)."""
    from advisor.application.tracking import Tracker

    tracker = Tracker(app.open_workspace(), tracking_uri)
    tracker.check()
    listed = tracker.list_runs(max_results=50_000)  # all of them, once: short ids must be unique among all
    every = [s.run_id for s in listed]
    rows = [{"short_id": short_id(s.run_id, every), **_run_row(s)} for s in listed[:limit]]
    if app.json_output:
        app.consoles.emit_json({"runs": rows, "tracking_uri": tracker.uri})
        return
    from rich.table import Table

    if not rows:
        app.consoles.out.print("No runs yet: start one with `advisor plan`.", highlight=False)
        return
    from rich import box

    out = app.consoles.out
    table = Table(title=f"Runs in {tracker.uri}", title_justify="left", title_style="bold", box=box.SIMPLE_HEAD,
                  pad_edge=False, padding=(0, 1) if out.width >= 100 else (0, 0))
    for col in ("run id", "kind", "when (UTC)", "status", "ok", "accuracy", "cost", "question"):
        table.add_column(col, no_wrap=col != "question", ratio=1 if col == "question" else None,
                         justify="right" if col in ("accuracy", "cost") else "left")
    for r in rows:
        table.add_row(r["short_id"], _kind(r), (r["start_time"] or "")[:16].replace("T", " "), r["status"],
                      {True: "yes", False: "no", None: "—"}[r["feasible"] if r["kind"] != "identify"
                                                            else r["in_distribution"]],
                      f"{r['accuracy']:.3f}" if r["accuracy"] is not None else "—",
                      f"{r['cost']:.1f}" if r["cost"] is not None else "—", r["name"] or r["command"] or "")
    table.caption = ("ok: feasible (identify: like the simulations); accuracy on set-aside networks; cost per "
                     "animal; the command: runs show RUN_ID")
    if any(r["resumes"] or r["resumed_from"] for r in rows):
        table.caption += "; ↻N: reopened N times by a resumed study; ↻ alone: a new run resuming an earlier one's study"
    table.caption_justify = "left"
    out.print(table)


@runs.command("show")
@click.argument("run_id")
@tracking_uri_option
@common_options
def runs_show(app: App, run_id: str, tracking_uri: str | None) -> None:
    """Show one past run (plan, comparison or identification): question, bounds, result, when."""
    from advisor.application.tracking import Tracker
    from advisor.application.workspace import document_root, rebase_paths, relocate_document

    workspace = app.open_workspace()
    tracker = Tracker(workspace, tracking_uri)
    tracker.check()
    summary = tracker.get_run(run_id)
    run_id = summary.run_id  # the full id, where a unique prefix was given
    row = _run_row(summary)
    doc = relocate_document(summary.summary, workspace.root) if summary.summary else None
    if app.json_output:
        old = document_root(summary.summary or {})
        params = rebase_paths(summary.params, old, workspace.root) if old else summary.params
        app.consoles.emit_json({**row, "params": params, "metrics": summary.metrics,
                                "question": (doc or {}).get("question"), "reports": (doc or {}).get("reports"),
                                "run_url": tracker.run_url(run_id)})
        return
    from rich.table import Table

    from advisor.application.reports import recommendation_sentence

    out = app.consoles.out
    table = Table(title=f"Run {run_id}", title_justify="left", title_style="bold", show_header=False)
    table.add_column("key", style="cyan", no_wrap=True)
    table.add_column("value", overflow="fold")
    for key in ("kind", "status", "start_time", "end_time", "command"):
        table.add_row(key, str(row[key] or "—"))
    for key in ("bank_hash", "recording", "plan_run", "protocol", "modality", "modalities", "observables",
                "max_units", "max_sessions", "target_accuracy", "rules", "classifier", "trials", "seed", "study"):
        if key in summary.params:  # the bank's hash as its folder names it (12 characters; --json has it whole)
            value = summary.params[key]
            table.add_row(key, value[:12] if key == "bank_hash" else value)
    out.print(table)
    if doc:
        out.print(doc["verdict"] if doc.get("kind") == "identify" else recommendation_sentence(doc),
                  highlight=False)
        if doc.get("reports"):
            out.print(f"[bold]Reports[/bold]: {', '.join(doc['reports'].values())}", highlight=False, soft_wrap=True)
    else:
        out.print("This run has no summary (it did not finish).", highlight=False)
    out.print(f"[bold]MLflow[/bold]: {tracker.run_url(run_id)}", highlight=False, soft_wrap=True)


@click.command()
@click.argument("run_id")
@click.option("--format", "formats", type=click.Choice(REPORT_FORMATS), multiple=True,
              help="Report format; repeat for several [default: md, html and pdf].")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None, metavar="DIR",
              help="Directory for the report files [default: WORKSPACE/reports/RUN_ID].")
@tracking_uri_option
@common_options
def report(app: App, run_id: str, formats: tuple[str, ...], out_dir: Path | None, tracking_uri: str | None) -> None:
    """Render the report of a past plan, comparison or identification (Markdown, self-contained HTML, PDF)."""
    from advisor.application.reports import write_reports
    from advisor.application.tracking import Tracker
    from advisor.application.workspace import relocate_document

    workspace = app.open_workspace()
    tracker = Tracker(workspace, tracking_uri)
    tracker.check()
    summary = tracker.get_run(run_id)
    run_id = summary.run_id  # the full id, where a unique prefix was given
    if not summary.summary:
        raise AdvisorError(f"run {run_id!r} has no summary to report (status {summary.status}); rerun the plan")
    target = Workspace.open(out_dir).root if out_dir is not None else workspace.reports / run_id
    with app.consoles.err.status("writing reports", spinner="dots"):
        paths = write_reports(relocate_document(summary.summary, workspace.root), target, formats or REPORT_FORMATS)
    if app.json_output:
        app.consoles.emit_json({"run_id": run_id, "reports": {k: str(v) for k, v in paths.items()}})
        return
    for fmt, path in paths.items():
        app.consoles.out.print(f"{fmt}: {path}", highlight=False, soft_wrap=True)

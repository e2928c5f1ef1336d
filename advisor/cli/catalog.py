"""``advisor catalog``: what can be simulated, recorded and classified."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:

    pass
from advisor.cli.app import App, common_options


def _task_metric(task: Any) -> str:
    metric = getattr(task, "metric", None)
    if metric is None:  # tasks declare the metric on their loaded data; classification is scored by accuracy
        metric = "accuracy" if task.kind == "classification" else "r2"
    return str(metric)


def catalog_document() -> dict[str, list[dict[str, Any]]]:
    """Everything that can be simulated, as plain data (the ``catalog --json`` document)."""
    from simulator.networks import ARCHITECTURES
    from simulator.presets import list_presets, load_preset
    from simulator.rules import RULES
    from simulator.tasks import CURRICULA, TASKS

    presets = []
    for name in list_presets():
        config = load_preset(name)
        presets.append({"name": name, "n_networks": config.n_networks, "description": config.description})
    return {
        "rules": [
            {
                "key": key,
                "family": rule.family,
                "description": rule.description,
                "lr_range": [float(v) for v in rule.default_lr_range],
            }
            for key, rule in RULES.items()
        ],
        "architectures": [
            {
                "key": key,
                "family": arch.family,
                "layers": arch.layers_description,
                "description": arch.description,
            }
            for key, arch in ARCHITECTURES.items()
        ],
        "tasks": [
            {"key": key, "kind": task.kind, "metric": _task_metric(task), "description": task.description}
            for key, task in TASKS.items()
        ],
        "curricula": [{"key": key, "description": c.description} for key, c in CURRICULA.items()],
        "presets": presets,
        "modalities": _modalities(),
        "classifiers": [{"key": key, "description": spec.description} for key, spec in _classifiers()],
    }


def _modalities() -> list[dict[str, Any]]:
    from advisor.science.cost import list_modalities, load_modality

    out = []
    for key in list_modalities():
        m = load_modality(key)
        out.append({"key": key, "name": m.name, "observables": list(m.observables), "noise_model": m.noise_model,
                    "max_units": int(m.max_units), "max_sessions": int(m.max_sessions), "description": m.description})
    return out


def _classifiers() -> list[tuple[str, Any]]:
    from advisor.science.classifiers import CLASSIFIERS

    return CLASSIFIERS.items()


def _table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> Any:
    """A rich table whose last column (free text) wraps; the others (keys, short labels) never do."""
    from rich.table import Table

    table = Table(title=title, title_justify="left", title_style="bold")
    for i, name in enumerate(columns):
        wraps = i == len(columns) - 1
        table.add_column(name, no_wrap=not wraps, overflow="fold", style="cyan" if i == 0 else None)
    for row in rows:
        table.add_row(*row)
    return table


def _fmt_range(lo: float, hi: float) -> str:
    return f"{lo:g} – {hi:g}"


@click.command()
@common_options
def catalog(app: App) -> None:
    """List rules, architectures, tasks, curricula, presets, recording modalities and classifiers.

    Everything that can be simulated and recorded. The keys in the first column are the names to use in preset
    files and options.
    """
    doc = catalog_document()
    if app.json_output:
        app.consoles.emit_json(doc)
        return
    out = app.consoles.out
    out.print(
        _table(
            "Learning rules",
            ["rule", "family", "default lr range", "description"],
            [[r["key"], r["family"], _fmt_range(*r["lr_range"]), r["description"]] for r in doc["rules"]],
        )
    )
    out.print(
        _table(
            "Architectures",
            ["architecture", "family", "layers"],
            [[a["key"], a["family"], a["layers"]] for a in doc["architectures"]],
        )
    )
    out.print(
        _table(
            "Tasks",
            ["task", "kind", "metric", "description"],
            [[t["key"], t["kind"], t["metric"], t["description"]] for t in doc["tasks"]],
        )
    )
    out.print(
        _table(
            "Curricula",
            ["curriculum", "description"],
            [[c["key"], c["description"]] for c in doc["curricula"]],
        )
    )
    out.print(
        _table(
            "Presets (advisor simulate --preset NAME)",
            ["preset", "networks", "description"],
            [[p["name"], f"{p['n_networks']:,}", p["description"]] for p in doc["presets"]],
        )
    )
    out.print(
        _table(
            "Recording modalities (advisor plan --modality NAME)",
            ["modality", "noise", "max units", "max sessions", "measures"],
            [[m["key"], m["noise_model"], f"{m['max_units']:,}", str(m["max_sessions"]),
              ", ".join(m["observables"])] for m in doc["modalities"]],
        )
    )
    out.print(
        _table(
            "Classifiers (--classifier NAME)",
            ["classifier", "description"],
            [[c["key"], c["description"]] for c in doc["classifiers"]],
        )
    )

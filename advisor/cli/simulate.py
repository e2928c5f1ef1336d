"""``advisor simulate``: build (or read the cached) bank of a preset; ``--dry-run`` prints the shard plan."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    import pandas as pd
    from rich.console import Console

    from simulator.config import SimulationConfig
    from simulator.pipeline import SimulationResult
from advisor.cli.app import App, build_preset_bank, common_options


def _mean_sd(values: pd.Series) -> str:
    import numpy as np

    x = values.to_numpy(dtype=float)
    finite = x[np.isfinite(x)]
    n_bad = x.size - finite.size
    if finite.size == 0:
        text = "—"
    elif finite.size == 1:
        text = f"{finite[0]:.3f}"
    else:
        text = f"{finite.mean():.3f} ± {finite.std(ddof=1):.3f}"
    return text + (f" ({n_bad} non-finite)" if n_bad else "")


def _render_summary(out: Console, config: SimulationConfig, result: SimulationResult) -> None:
    import pandas as pd
    from rich.table import Table

    bank = result.bank
    meta = bank.metadata
    rules = [r for r in config.rules if r in set(meta["rule"])] or sorted(set(meta["rule"]))

    counts = pd.crosstab([meta["architecture"], meta["task"]], meta["rule"])
    counts = counts.reindex(columns=rules, fill_value=0)
    table = Table(title="Networks per rule", title_justify="left", title_style="bold")
    table.add_column("architecture", style="cyan", no_wrap=True)
    table.add_column("task", style="cyan", no_wrap=True)
    for rule in rules:
        table.add_column(rule, justify="right", no_wrap=True)
    table.add_column("total", justify="right", no_wrap=True)
    for (arch, task), row in counts.iterrows():
        table.add_row(arch, task, *(str(int(row[r])) for r in rules), str(int(row.sum())))
    table.add_row(
        "all",
        "",
        *(str(int(counts[r].sum())) for r in rules),
        str(int(counts.to_numpy().sum())),
        style="bold",
    )
    out.print(table)

    perf = Table(title="Final performance, mean ± SD over networks", title_justify="left", title_style="bold")
    for name in ("rule", "task", "metric"):
        perf.add_column(name, style="cyan" if name == "rule" else None, no_wrap=True)
    perf.add_column("networks", justify="right", no_wrap=True)
    perf.add_column("test", justify="right", no_wrap=True)
    perf.add_column("train", justify="right", no_wrap=True)
    perf.add_column("chance", justify="right", no_wrap=True)
    for rule in rules:
        for task, group in meta[meta["rule"] == rule].groupby("task", sort=False):
            metric = ", ".join(sorted(set(map(str, group["metric_name"]))))
            chance = group["chance"].to_numpy(dtype=float)
            perf.add_row(
                rule,
                str(task),
                metric,
                str(len(group)),
                _mean_sd(group["final_test_metric"]),
                _mean_sd(group["final_metric"]),
                f"{chance[0]:.3f}" if chance.size and math.isfinite(chance[0]) else "—",
            )
    out.print(perf)

    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    status = "yes: read from the workspace, nothing simulated" if result.cached else "no: simulated now"
    facts.add_row("preset", config.name)
    facts.add_row("networks", f"{bank.n_networks:,} ({', '.join(rules)})")
    facts.add_row("wall time", f"{result.seconds:.1f} s")
    facts.add_row("bank size", f"{bank.size_bytes() / 2**20:.1f} MiB")
    facts.add_row("bank", str(bank.path))
    facts.add_row("hash", str(bank.hash))
    facts.add_row("cached", status)
    out.print(facts)


@click.command()
@click.option(
    "--preset",
    default="quick",
    show_default=True,
    metavar="NAME|PATH",
    help="A built-in preset (see `advisor catalog`) or the path of a preset .toml file.",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=None,
    metavar="N",
    help="Override the preset's seed (a non-negative integer).",
)
@click.option(
    "--device",
    type=click.Choice(["cpu", "cuda"]),
    default="cpu",
    show_default=True,
    help="Where networks train.",
)
@click.option(
    "--scheduler",
    default=None,
    metavar="ADDRESS",
    help="Train the shards on a Dask cluster: local:N starts N worker processes on this machine, "
    "tcp://HOST:PORT uses a running `dask scheduler` (both need the `cluster` extra, dask[distributed]). The "
    "bank is the same as without it [default: train in this process].",
)
@click.option("--verify", is_flag=True,
              help="Check a cached bank's checksums; a corrupt one is reported in one line and rebuilt.")
@click.option("--dry-run", is_flag=True,
              help="Print the shard plan (networks, batched ensembles, networks per ensemble) without training.")
@common_options
def simulate(app: App, preset: str, seed: int | None, device: str, scheduler: str | None, verify: bool,
             dry_run: bool) -> None:
    """Simulate a population of networks into a trajectory bank.

    The bank is stored in the workspace's banks/ folder, content-addressed by the preset's settings: running
    the same preset and seed again reads the cached bank instead of training, and an interrupted run resumes
    where it stopped. With --scheduler, the shards train on a Dask cluster and this process writes the bank.
    Networks of one rule, architecture and task train together as one batched ensemble (shard), whatever their
    curriculum, learning rate, init and (where the rule allows) batch size: --dry-run shows the plan.
    """
    if dry_run:
        _render_shard_plan(app, preset, seed)
        return
    config, result = build_preset_bank(app, preset, seed=seed, device=device, scheduler=scheduler, verify=verify)
    bank = result.bank
    if app.json_output:
        app.consoles.emit_json(
            {
                "bank": str(bank.path),
                "hash": str(bank.hash),
                "n_networks": int(bank.n_networks),
                "rules": list(config.rules),
                "seconds": float(result.seconds),
                "cached": bool(result.cached),
                "size_bytes": int(bank.size_bytes()),
            }
        )
        return
    _render_summary(app.consoles.out, config, result)


def _render_shard_plan(app: App, preset: str, seed: int | None) -> None:
    """``simulate --dry-run``: the shard plan of a preset, computed from its config alone (nothing is trained
    or written; the workspace is not opened)."""
    from simulator.config import shard_summary
    from simulator.presets import load_preset

    config = load_preset(preset)
    if seed is not None:
        config = config.with_seed(seed)
    summary = shard_summary(config)
    if app.json_output:
        app.consoles.emit_json(summary)
        return
    per = summary["networks_per_shard"]
    app.consoles.out.print(
        f"{config.name}: {summary['n_networks']} networks in {summary['n_shards']} batched ensembles "
        f"(networks per ensemble: mean {per['mean']:.1f}, min {per['min']}, max {per['max']}; "
        f"at most {config.max_ensemble})", highlight=False)

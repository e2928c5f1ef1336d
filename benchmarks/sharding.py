"""How networks are grouped into batched ensembles, and what each grouping costs to train on this machine.

    python benchmarks/sharding.py --out benchmarks/results/sharding-cpu2.json [--steps 100] [--archs A,B]

Three groupings of the same networks, all computed by ``simulator.config.plan_shards`` or (the baseline) by the
grouping it replaced, in the same run:

* ``before``: one ensemble per rule, architecture, task, curriculum and batch size (the grouping up to issue 10);
* ``after``: one per rule, architecture and task (curricula, learning rates and inits share; the default);
* ``mixed``: ``after`` with ``mix_batch_sizes = true`` (batch sizes share too, each batch tiled to the largest).

For every built-in preset the table gives the shard plan of each grouping. Then, for one (rule, task) cell per
architecture of the ``paper`` preset (its 11 networks, three curricula and three batch sizes), it trains the
same networks under each grouping for ``--steps`` steps on one torch thread (as a bank build does) and reports
the wall time per network-step and the extrapolated single-process ``paper`` build time (every architecture
weighted by its share of the population, all steps, recording excluded). Medians of ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

PRESETS = ("tiny", "quick", "standard", "architectures", "families", "paper")


def before_shards(config: Any, specs: list[Any]) -> list[Any]:
    """The grouping before issue 10: one ensemble per (rule, architecture, task, curriculum, batch size)."""
    from simulator.config import ShardSpec

    groups: dict[tuple[str, str, str, str, int], list[int]] = {}
    for s in specs:
        groups.setdefault((s.rule, s.architecture, s.task, s.curriculum, s.batch_size), []).append(s.index)
    shards = []
    for (rule, arch, task, _curriculum, batch), members in groups.items():
        for start in range(0, len(members), config.max_ensemble):
            shards.append(ShardSpec(len(shards), rule, arch, task, batch,
                                    tuple(members[start:start + config.max_ensemble]), len(shards)))
    return shards


def summary(shards: list[Any]) -> dict[str, Any]:
    sizes = [len(s.networks) for s in shards]
    return {"n_shards": len(shards), "mean": round(sum(sizes) / len(sizes), 2), "min": min(sizes),
            "max": max(sizes)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--archs", default="mlp3_relu,mlp3_tanh,mlp4_relu,mlp4_tanh,conv2_relu,conv3_relu")
    args = parser.parse_args()

    import torch
    from rich.console import Console
    from rich.table import Table

    from simulator.config import plan_shards, sample_population
    from simulator.ensemble import train_shard
    from simulator.presets import load_preset

    torch.set_num_threads(1)
    console = Console(width=100)
    plans: dict[str, Any] = {}
    table = Table(title="Shard plans: networks per batched ensemble (mean, min-max)")
    for col in ("preset", "networks", "before", "after", "mixed batch sizes"):
        table.add_column(col, justify="left" if col == "preset" else "right")
    for name in PRESETS:
        config = load_preset(name)
        specs = sample_population(config)
        entry = {"n_networks": config.n_networks, "before": summary(before_shards(config, specs)),
                 "after": summary(plan_shards(replace(config, mix_batch_sizes=False), specs)),
                 "mixed": summary(plan_shards(replace(config, mix_batch_sizes=True), specs))}
        plans[name] = entry
        table.add_row(name, str(config.n_networks), *(
            f"{entry[k]['n_shards']} × {entry[k]['mean']:.1f} ({entry[k]['min']}-{entry[k]['max']})"
            for k in ("before", "after", "mixed")))
    console.print(table)

    paper = load_preset("paper")
    short = replace(paper, n_steps=args.steps, n_checkpoints=2)
    specs = sample_population(short)
    per_arch: dict[str, Any] = {}
    for arch in [a.strip() for a in args.archs.split(",") if a.strip()]:
        cell = [s for s in specs if s.rule == "sgdm" and s.architecture == arch and s.task == "digits"]
        ids = {s.index for s in cell}
        groupings = {
            "before": [s for s in before_shards(short, specs) if set(s.networks) <= ids],
            "after": [s for s in plan_shards(replace(short, mix_batch_sizes=False), specs) if set(s.networks) <= ids],
            "mixed": [s for s in plan_shards(replace(short, mix_batch_sizes=True), specs) if set(s.networks) <= ids],
        }
        train_shard(short, groupings["after"][0], specs)  # warm-up: task data, kernels
        entry: dict[str, Any] = {"n_networks": len(cell)}
        for key, shards in groupings.items():
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                for sh in shards:
                    train_shard(short, sh, specs)
                times.append(time.perf_counter() - t0)
            median = statistics.median(times)
            entry[key] = {"n_shards": len(shards), "seconds": round(median, 3),
                          "ms_per_network_step": round(1000 * median / (len(cell) * args.steps), 3)}
        per_arch[arch] = entry
        console.print(f"{arch}: " + ", ".join(f"{k} {entry[k]['n_shards']} shards {entry[k]['seconds']:.2f} s"
                                              for k in ("before", "after", "mixed")), highlight=False)

    share = {a: sum(s.architecture == a for s in sample_population(paper)) for a in per_arch}
    extrapolated = {k: sum(per_arch[a][k]["ms_per_network_step"] * share[a] for a in per_arch) * paper.n_steps
                    / 1000 / 60 * paper.n_networks / max(1, sum(share.values())) for k in ("before", "after", "mixed")}
    t2 = Table(title=f"Training cost on this machine ({args.steps} steps, one thread, medians of {args.repeats})")
    for col in ("architecture", "networks", "before ms/net-step", "after", "mixed", "after/before"):
        t2.add_column(col, justify="left" if col == "architecture" else "right")
    for arch, e in per_arch.items():
        t2.add_row(arch, str(e["n_networks"]), f"{e['before']['ms_per_network_step']:.2f}",
                   f"{e['after']['ms_per_network_step']:.2f}", f"{e['mixed']['ms_per_network_step']:.2f}",
                   f"{e['after']['seconds'] / e['before']['seconds']:.2f}")
    console.print(t2)
    console.print("extrapolated paper build (training only, one process): " + ", ".join(
        f"{k} {v:.0f} min" for k, v in extrapolated.items()), highlight=False)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "benchmark": "sharding", "plans": plans, "training": per_arch, "steps": args.steps,
        "repeats": args.repeats, "extrapolated_paper_minutes": {k: round(v, 1) for k, v in extrapolated.items()},
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "torch": torch.__version__, "threads": 1},
        "note": "extrapolated = ms per network-step x paper networks x paper steps; recording and I/O excluded",
        "log2_max_ensemble_paper": math.log2(paper.max_ensemble),
    }, indent=1))


if __name__ == "__main__":
    main()

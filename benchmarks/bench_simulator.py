"""Batched ensemble vs. a naive per-network torch loop, and both against the machine's float32 matmul peak.

Trains the same population (same init, same batches) twice in one run: once as one batched ensemble
(``simulator.ensemble.EnsembleTrainer``), once network by network with ``torch.nn`` + ``torch.optim``, for 16, 64
and 256 networks. Prints a table and writes a JSON with ``speedup_vs_naive`` and ``fraction_of_matmul_peak``
per network count. Timings are medians over repeats (these machines are noisy).

    python benchmarks/bench_simulator.py --out bench-out/simulator.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from simulator.ensemble import EnsembleTrainer
from simulator.networks import ARCHITECTURES, layer_flops
from simulator.objectives import objective_for
from simulator.tasks import TASKS


def matmul_peak(n: int = 2048, repeats: int = 10) -> float:
    """Median float32 GFLOP/s of an n×n×n matrix product (the machine's practical peak)."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen)
    a @ b
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


def naive_train(specs, init_w, init_b, lrs, x, y, n_steps: int) -> float:  # type: ignore[no-untyped-def]
    """One network after another: torch.nn.Linear/ReLU stack, torch.optim.SGD(momentum=0.9). Returns seconds."""
    start = time.perf_counter()
    for e in range(len(lrs)):
        layers: list[torch.nn.Module] = []
        for i, spec in enumerate(specs):
            lin = torch.nn.Linear(spec.n_in, spec.n_out)
            with torch.no_grad():
                lin.weight.copy_(init_w[i][e])
                lin.bias.copy_(init_b[i][e])
            layers.append(lin)
            if spec.activation == "relu":
                layers.append(torch.nn.ReLU())
        net = torch.nn.Sequential(*layers)
        opt = torch.optim.SGD(net.parameters(), lr=float(lrs[e]), momentum=0.9)
        for s in range(n_steps):
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(net(x[e, s]), y[e, s])
            loss.backward()
            opt.step()
    return time.perf_counter() - start


def ensemble_train(specs, lrs, seeds, x, y, n_steps: int, chunk: int) -> tuple[float, list, list]:  # type: ignore[no-untyped-def]
    """Train the networks as batched ensembles of ``chunk`` networks, one after another (as the simulator's
    shards do). Returns seconds and the initial weights and biases."""
    elapsed, init_w, init_b = 0.0, [], []
    for lo in range(0, len(lrs), chunk):
        sl = slice(lo, lo + chunk)
        trainer = EnsembleTrainer(
            specs, "sgdm", lrs[sl], [1.0] * len(lrs[sl]), seeds[sl], objective_for("classification")
        )
        init_w.append([w.clone() for w in trainer.weights])
        init_b.append([b.clone() for b in trainer.biases])
        xs, ys = x[sl], y[sl]
        start = time.perf_counter()
        for s in range(n_steps):
            trainer.step(xs[:, s], ys[:, s])
        elapsed += time.perf_counter() - start
    cat = lambda parts: [torch.cat([p[i] for p in parts]) for i in range(len(parts[0]))]  # noqa: E731
    return elapsed, cat(init_w), cat(init_b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--architecture", default="mlp3_relu", help="the quick preset's MLP by default")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--counts", default="16,64,256")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--chunk",
        type=int,
        default=16,
        help="networks per batched ensemble (the CPU shard size; one ensemble = --chunk 0)",
    )
    args = parser.parse_args()
    console = Console(stderr=True)

    data = TASKS.get("digits").load()
    specs = ARCHITECTURES.get(args.architecture).layer_specs((1, 8, 8), data.n_outputs)
    x_all = torch.tensor(np.array(data.x_train))
    y_all = torch.tensor(np.array(data.y_train))
    flops_fwd = layer_flops(specs, args.batch)
    # forward + weight gradients + input gradients of every layer but the first
    flops_step = 2 * flops_fwd + (flops_fwd - layer_flops(specs[:1], args.batch))
    peak = matmul_peak()
    console.print(f"float32 matmul peak: {peak:.1f} GFLOP/s ({torch.get_num_threads()} threads)")

    rows = []
    for n in [int(c) for c in args.counts.split(",")]:
        rng = np.random.default_rng(n)
        idx = torch.as_tensor(rng.integers(0, len(x_all), (n, args.steps, args.batch)))
        x, y = x_all[idx], y_all[idx]
        lrs = list(np.exp(rng.uniform(np.log(0.002), np.log(0.015), n)))
        seeds = [int(s) for s in rng.integers(0, 2**62, n)]
        t_ens, t_one, t_naive = [], [], []
        for _ in range(args.repeats):
            t, init_w, init_b = ensemble_train(specs, lrs, seeds, x, y, args.steps, args.chunk or n)
            t_ens.append(t)
            t_one.append(ensemble_train(specs, lrs, seeds, x, y, args.steps, n)[0])
            t_naive.append(naive_train(specs, init_w, init_b, lrs, x, y, args.steps))
        te, tn, t1 = statistics.median(t_ens), statistics.median(t_naive), statistics.median(t_one)
        gflops = flops_step * n * args.steps / te / 1e9
        rows.append(
            {
                "n_networks": n,
                "ensemble_s": te,
                "naive_s": tn,
                "speedup_vs_naive": tn / te,
                "ensemble_gflops": gflops,
                "naive_gflops": flops_step * n * args.steps / tn / 1e9,
                "fraction_of_matmul_peak": gflops / peak,
                "ensemble_ms_per_network_step": te / (n * args.steps) * 1e3,
                "one_ensemble_s": t1,
                "speedup_one_ensemble_vs_naive": tn / t1,
            }
        )
        console.print(f"  {n} networks: ensemble {te:.2f}s, naive {tn:.2f}s")

    table = Table(
        title=f"Simulator throughput: {args.architecture}, batch {args.batch}, {args.steps} steps, sgdm"
    )
    for col in (
        "networks",
        f"ensemble s (chunks of {args.chunk})",
        "naive s",
        "speed-up",
        "ensemble GFLOP/s",
        "naive GFLOP/s",
        "of peak",
        "one ensemble s",
        "speed-up",
    ):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            str(r["n_networks"]),
            f"{r['ensemble_s']:.2f}",
            f"{r['naive_s']:.2f}",
            f"{r['speedup_vs_naive']:.1f}×",
            f"{r['ensemble_gflops']:.0f}",
            f"{r['naive_gflops']:.0f}",
            f"{r['fraction_of_matmul_peak']:.0%}",
            f"{r['one_ensemble_s']:.2f}",
            f"{r['speedup_one_ensemble_vs_naive']:.1f}×",
        )
    Console(width=140).print(table)
    result = {
        "benchmark": "simulator",
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "architecture": args.architecture,
        "batch": args.batch,
        "chunk": args.chunk,
        "steps": args.steps,
        "repeats": args.repeats,
        "matmul_peak_gflops": peak,
        "flops_per_network_step": flops_step,
        "speedup_vs_naive": {str(r["n_networks"]): r["speedup_vs_naive"] for r in rows},
        "fraction_of_matmul_peak": {str(r["n_networks"]): r["fraction_of_matmul_peak"] for r in rows},
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

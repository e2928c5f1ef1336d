"""Check the simulator's CUDA path and measure GPU training throughput (run on a machine with a CUDA GPU).

1. Builds a small bank on CUDA and on the CPU from the same config and seed and compares what a recording sees:
   the statistics of every observable (``advisor.science.features.featurize`` at full observation) and the learning
   curves, within float tolerance (the devices round differently, so trajectories agree closely, not bitwise).
2. Trains ensembles of 256, 1,024 and 4,096 networks (mlp3_relu on digits, SGD with momentum, one ensemble per
   shard) and reports networks·steps per second and wall time, next to the CPU at 256 networks.

    python scripts/gpu_check.py --out gpu_check.json [--steps 200]

Prints a table, writes a JSON of the figures, and exits 1 if the CPU/CUDA comparison fails, 2 without CUDA.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def small_config(name: str, n_per_rule: int, steps: int, max_ensemble: int, rules: tuple[str, ...]) -> object:
    from simulator.config import SimulationConfig

    return SimulationConfig(name=name, rules=rules, architectures=("mlp3_relu",), tasks=("digits",),
                            n_networks_per_rule=n_per_rule, n_steps=steps, n_checkpoints=6, batch_sizes=(32,),
                            n_probes=4, units_per_group=32, synapses_per_group=64, max_ensemble=max_ensemble)


def compare_devices(tmp: Path) -> dict:
    from advisor.science.features import featurize
    from advisor.science.protocol import RecordingProtocol
    from simulator.pipeline import simulate

    config = small_config("gpucheck", 4, 60, 64, ("sgdm", "adam", "fa", "ia"))
    banks = {dev: simulate(config, tmp / dev, device=dev).bank for dev in ("cpu", "cuda")}
    worst: dict[str, float] = {}
    for obs, units in (("weights", 192), ("activations", 96), ("activity_change", 96)):
        p = RecordingProtocol(observable=obs, n_units=units, n_sessions=6, noise_model="none")
        a, b = (featurize(banks[d], p) for d in ("cpu", "cuda"))
        scale = np.maximum(np.abs(a.X), 1e-3)
        worst[obs] = float(np.max(np.abs(a.X - b.X) / scale))
    curve_cpu, curve_gpu = banks["cpu"]["loss"], banks["cuda"]["loss"]
    worst["loss"] = float(np.max(np.abs(curve_cpu - curve_gpu) / np.maximum(np.abs(curve_cpu), 1e-3)))
    return worst


def throughput(tmp: Path, n: int, steps: int, device: str) -> dict:
    from simulator.pipeline import simulate

    config = small_config(f"tp{n}{device}", n, steps, n, ("sgdm",))
    start = time.perf_counter()
    simulate(config, tmp / f"tp-{device}-{n}", device=device)
    seconds = time.perf_counter() - start
    return {"networks": n, "device": device, "steps": steps, "seconds": round(seconds, 2),
            "network_steps_per_s": round(n * steps / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--tolerance", type=float, default=0.02, help="largest relative difference accepted")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("Error: no CUDA device (torch.cuda.is_available() is False); run this on a GPU machine",
              file=sys.stderr)
        sys.exit(2)
    card = torch.cuda.get_device_name(0)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        worst = compare_devices(tmp)
        rows = [throughput(tmp, 256, args.steps, "cpu")]
        rows += [throughput(tmp, n, args.steps, "cuda") for n in (256, 1024, 4096)]
    ok = all(v <= args.tolerance for v in worst.values())
    from rich.console import Console
    from rich.table import Table

    console = Console()
    check = Table(title=f"CPU vs CUDA bank ({card}): largest relative difference")
    check.add_column("quantity")
    check.add_column("max rel. diff", justify="right")
    for key, value in worst.items():
        check.add_row(key, f"{value:.2e}")
    console.print(check)
    table = Table(title=f"Training throughput, mlp3_relu on digits, {args.steps} steps")
    for col in ("device", "networks", "seconds", "network·steps / s"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["device"], str(r["networks"]), f"{r['seconds']:.1f}", f"{r['network_steps_per_s']:.0f}")
    console.print(table)
    args.out.write_text(json.dumps({"card": card, "torch": torch.__version__, "max_relative_difference": worst,
                                    "tolerance": args.tolerance, "consistent": ok, "throughput": rows}, indent=2))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

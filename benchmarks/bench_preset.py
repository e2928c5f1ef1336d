"""Wall time, peak memory and bank size of `advisor simulate` on a preset, from a fresh workspace, and the time
of the cached second run.

    python benchmarks/bench_preset.py --preset quick --out bench-out/quick.json
    python benchmarks/bench_preset.py --preset paper --out bench-out/paper.json --workspace /data/ws-paper
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table


def run(preset: str, workspace: Path, device: str) -> tuple[float, dict]:
    cmd = [
        sys.executable,
        "-m",
        "advisor",
        "simulate",
        "--preset",
        preset,
        "--device",
        device,
        "--json",
        "--workspace",
        str(workspace),
    ]
    start = time.perf_counter()
    out = subprocess.run(
        cmd, check=True, capture_output=True, text=True, env={**os.environ, "COLUMNS": "120"}
    )
    return time.perf_counter() - start, json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--workspace", type=Path, default=None,
                        help="an empty workspace to build in and keep (default: a temporary one, removed after)")
    args = parser.parse_args()
    if args.workspace is not None and args.workspace.exists() and any(args.workspace.iterdir()):
        parser.error(f"--workspace {args.workspace} is not empty: the cold run must start from nothing")
    with tempfile.TemporaryDirectory() as tmp:
        ws = args.workspace or Path(tmp)
        cold_s, first = run(args.preset, ws, args.device)
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        warm_s, second = run(args.preset, ws, args.device)
    result = {
        "benchmark": "preset",
        "preset": args.preset,
        "device": args.device,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "n_networks": first["n_networks"],
        "wall_s": cold_s,
        "simulate_s": first["seconds"],
        "peak_rss_mib": peak_mib,
        "bank_mib": first["size_bytes"] / 2**20,
        "cached_wall_s": warm_s,
        "cached": second["cached"],
        "hash": first["hash"],
    }
    table = Table(title=f"advisor simulate --preset {args.preset} ({args.device})")
    for col in ("networks", "wall s (cold)", "peak RSS MiB", "bank MiB", "wall s (cached)"):
        table.add_column(col, justify="right")
    table.add_row(
        str(result["n_networks"]),
        f"{cold_s:.1f}",
        f"{peak_mib:.0f}",
        f"{result['bank_mib']:.0f}",
        f"{warm_s:.1f}",
    )
    Console(width=140).print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""Featurizing a whole bank under one recording protocol: ``advisor.science.features.featurize`` against a
straightforward numpy implementation (one numpy call per statistic) in the same run.

    python benchmarks/bench_features.py --out bench-out/features.json [--bank PATH | --preset quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics as stats_lib
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from advisor.science.features import featurize
from advisor.science.protocol import RecordingProtocol, virtual_recording


def reference_features(bank, protocol: RecordingProtocol) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The same features, one plain numpy reduction per (function, statistic)."""
    rec = virtual_recording(bank, protocol)
    blocks = []
    for values in rec.values:
        x = values.astype(np.float64)
        for fn in (lambda v: v, np.abs, np.square):
            v = fn(x)
            mean = np.mean(v, axis=2)
            median = np.median(v, axis=2)
            std = np.std(v, axis=2)
            feats = [mean, median, np.quantile(v, 0.75, axis=2), np.var(v, axis=2),
                     np.linalg.norm(v, axis=2), 3 * (mean - median) / std,
                     np.mean((v - np.expand_dims(mean, 2)) ** 4, axis=2) / std**4]
            f = np.stack(feats, axis=-1)
            blocks.append(f.mean(axis=2) if f.ndim == 4 else f)
    return np.concatenate(blocks, axis=-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--bank", type=Path, help="an existing bank (default: build/load --preset in a temp dir)")
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--units", type=int, default=500)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from simulator import load_bank, load_preset, simulate

    if args.bank is not None:
        bank = load_bank(args.bank)
    else:
        bank = simulate(load_preset(args.preset), Path(tempfile.mkdtemp()) / "banks").bank
    rows = []
    for observable in ("activations", "activity_change", "weights"):
        protocol = RecordingProtocol(observable=observable, n_units=args.units, n_sessions=args.sessions, noise=0.5)
        featurize(bank, protocol)  # warm the page cache
        fast, slow = [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            ours = featurize(bank, protocol).X
            fast.append(time.perf_counter() - t)
            t = time.perf_counter()
            ref = reference_features(bank, protocol)
            slow.append(time.perf_counter() - t)
        ok = np.isfinite(ref)
        max_rel = float(np.max(np.abs(ours[ok] - ref[ok]) / (np.abs(ref[ok]) + 1e-3)))
        rows.append({"observable": observable, "seconds_median": stats_lib.median(fast),
                     "reference_seconds_median": stats_lib.median(slow),
                     "speedup_vs_reference": stats_lib.median(slow) / stats_lib.median(fast),
                     "max_relative_difference": max_rel, "shape": list(ours.shape)})
    table = Table(title=f"Featurizing {bank.n_networks} networks: {args.units} units, {args.sessions} sessions")
    for col in ("observable", "ours s (median)", "numpy reference s", "speed-up", "max rel. diff"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["observable"], f"{r['seconds_median']:.3f}", f"{r['reference_seconds_median']:.3f}",
                      f"{r['speedup_vs_reference']:.1f}×", f"{r['max_relative_difference']:.1e}")
    Console(width=140).print(table)
    result = {"benchmark": "features", "machine": {"platform": platform.platform()}, "n_networks": bank.n_networks,
              "units": args.units, "sessions": args.sessions, "repeats": args.repeats,
              "seconds_median": rows[0]["seconds_median"], "speedup_vs_reference": rows[0]["speedup_vs_reference"],
              "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""Do featurizing and evaluating scale linearly in the number of networks, with bounded memory?

Takes a bank (e.g. the `standard` preset's 512 networks) and times, on 128, 256 and 512 of its networks (every
k-th network: a strided view of the memory-mapped bank, no copy): the virtual recording + statistics of one
protocol (500 units, 10 sessions, Gaussian noise 0.25) and one evaluation (ridge, ten 75/25 splits). Reports
seconds per network at each size (linear scaling = flat), the peak resident set size, and the bank's size on
disk.

    python benchmarks/bench_scaling.py --bank WORKSPACE/banks/standard-... --out FILE.json
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np


class Subset:
    """Every k-th network of a bank (k = bank size // n; every rule, architecture and task keeps its share):
    arrays are strided slices of the memory-mapped files (views, no copy), metadata the same rows."""

    def __init__(self, bank: Any, n: int) -> None:
        self._bank, self._n, self._step = bank, n, max(1, bank.n_networks // n)
        self.metadata = bank.metadata.iloc[:: self._step].iloc[:n].reset_index(drop=True)
        self.config, self.hash, self.path = bank.config, bank.hash, bank.path
        self.n_networks = n

    def __getitem__(self, name: str) -> np.ndarray:
        return self._bank[name][:: self._step][: self._n]

    def __contains__(self, name: object) -> bool:
        return name in self._bank


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bank", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from advisor.science.evaluation import make_splits, score
    from advisor.science.features import featurize
    from advisor.science.protocol import RecordingProtocol
    from simulator.bank import load_bank

    bank = load_bank(args.bank)
    protocol = RecordingProtocol(observable="activations", n_units=500, n_sessions=10, noise=0.25)
    sizes = [n for n in (128, 256, 512, 1024) if n <= bank.n_networks]
    rows = []
    for n in sizes:
        sub = Subset(bank, n)
        y = sub.metadata["rule"].astype(str).to_numpy()
        before = rss_mib()
        feat_t, eval_t = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            features = featurize(sub, protocol)
            feat_t.append(time.perf_counter() - start)
            splits = make_splits(y, "none", None, 10, 0)
            start = time.perf_counter()
            score(features.X, y, splits, sorted(set(y)), classifier="ridge", seed=0)
            eval_t.append(time.perf_counter() - start)
        rows.append({"networks": n, "featurize_s": round(statistics.median(feat_t), 3),
                     "evaluate_s": round(statistics.median(eval_t), 3),
                     "featurize_ms_per_network": round(1000 * statistics.median(feat_t) / n, 2),
                     "evaluate_ms_per_network": round(1000 * statistics.median(eval_t) / n, 3),
                     "peak_rss_mib_after": round(rss_mib(), 1), "peak_rss_growth_mib": round(rss_mib() - before, 1)})
    size_mib = sum(f.stat().st_size for f in Path(args.bank).rglob("*") if f.is_file()) / 2**20

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Scaling in the number of networks ({Path(args.bank).name}, {size_mib:.0f} MiB on disk)")
    for col in ("networks", "featurize s", "ms / network", "evaluate s", "ms / network", "peak RSS MiB"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["networks"]), f"{r['featurize_s']:.2f}", f"{r['featurize_ms_per_network']:.2f}",
                      f"{r['evaluate_s']:.2f}", f"{r['evaluate_ms_per_network']:.3f}", f"{r['peak_rss_mib_after']:.0f}")
    Console().print(table)
    first, last = rows[0], rows[-1]
    figures = {"bank": str(args.bank), "bank_mib": round(size_mib, 1), "protocol": protocol.describe(), "rows": rows,
               "featurize_per_network_ratio_largest_vs_smallest":
                   round(last["featurize_ms_per_network"] / first["featurize_ms_per_network"], 2),
               "evaluate_per_network_ratio_largest_vs_smallest":
                   round(last["evaluate_ms_per_network"] / first["evaluate_ms_per_network"], 2)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Peak memory of assembling a bank from its shards (`BankWriter.finalize`), against filling memory maps.

Writes a synthetic bank's shards (float16 rows of ``--mib-per-network`` MiB each, networks scattered over
shards of 16 as in real builds), then assembles it twice, each in a fresh process that reports its peak resident
set size above what it held before assembling:

* ``baseline``: the straightforward way (and this project's until it was measured on the ``paper`` preset):
  open each ``.npy`` as a writable memory map and assign each shard's rows into it;
* ``finalize``: the shipped :meth:`simulator.bank.BankWriter.finalize` (positioned writes, one shard in memory).

Both must produce the same bytes (checked). Dirty pages of a writable map count towards the process's resident
memory until it is unmapped, so the baseline's peak grows with the bank; finalize's should not.

    python benchmarks/bench_finalize.py --out FILE.json [--networks 1024] [--mib-per-network 1.3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHARD = 16
HASH = "be" * 32
CHILD = r"""
import json, resource, sys, time
from pathlib import Path
import numpy as np
from simulator.bank import BankWriter, _read_json

def rss_now():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")

mode, path, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
manifest = _read_json(path.parent / "spec.json")
layout = {k: (tuple(v["shape"]), v["dtype"]) for k, v in manifest["layout"].items()}
before = rss_now()
start = time.perf_counter()
if mode == "finalize":
    with BankWriter(path, manifest["config"], manifest["hash"], manifest["n_networks"], layout) as w:
        w.finalize(0.0)
    files = {n: str(path / "arrays" / f"{n}.npy") for n in layout}
else:
    out.mkdir(parents=True, exist_ok=True)
    maps = {n: np.lib.format.open_memmap(out / f"{n}.npy", mode="w+", dtype=np.dtype(d),
                                         shape=(manifest["n_networks"], *s)) for n, (s, d) in layout.items()}
    for side in sorted((path / "shards").glob("shard-*.json")):
        sel = np.asarray(_read_json(side)["network_indices"])
        with np.load(side.with_suffix(".npz")) as npz:
            for n, mm in maps.items():
                mm[sel] = npz[n]
    for mm in maps.values():
        mm.flush()
    files = {n: str(out / f"{n}.npy") for n in layout}
    del maps
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "rss_before_mib": before, "peak_rss_mib": peak,
                  "peak_above_before_mib": peak - before, "files": files}))
"""


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def write_shards(path: Path, n_networks: int, mib_per_network: float) -> dict:
    from simulator.bank import BankWriter

    per_network = int(mib_per_network * 2**20 / 2)  # float16 values
    layout = {"activations": ((per_network,), "float16"), "loss": ((41,), "float32")}
    order = np.random.default_rng(0).permutation(n_networks)
    rng = np.random.default_rng(1)
    with BankWriter(path, {"name": "bench-finalize"}, HASH, n_networks, layout) as w:
        for k, start in enumerate(range(0, n_networks, SHARD)):
            idx = order[start:start + SHARD].tolist()
            arrays = {"activations": rng.standard_normal((len(idx), per_network), dtype=np.float32),
                      "loss": rng.random((len(idx), 41))}
            w.write_shard(k, idx, arrays, [{"i": i} for i in idx])
    return {"config": {"name": "bench-finalize"}, "hash": HASH, "n_networks": n_networks,
            "layout": {k: {"shape": list(s), "dtype": d} for k, (s, d) in layout.items()}}


def child(mode: str, path: Path, out: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, mode, str(path), str(out)], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{mode} failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--networks", type=int, default=1024)
    parser.add_argument("--mib-per-network", type=float, default=1.3)
    args = parser.parse_args()

    from rich.console import Console
    from rich.table import Table

    results = {}
    with tempfile.TemporaryDirectory() as tmp, Console(stderr=True).status("writing shards") as status:
        bank = Path(tmp) / "bank"
        start = time.perf_counter()
        manifest = write_shards(bank, args.networks, args.mib_per_network)
        (Path(tmp) / "spec.json").write_text(json.dumps(manifest))  # what the children reopen the writer with
        write_s = time.perf_counter() - start
        status.update("assembling through memory maps")
        results["baseline"] = child("baseline", bank, Path(tmp) / "baseline")
        status.update("assembling with BankWriter.finalize")
        results["finalize"] = child("finalize", bank, Path(tmp) / "unused")
        status.update("comparing the bytes")
        same = all(sha256(results["baseline"]["files"][n]) == sha256(results["finalize"]["files"][n])
                   for n in results["finalize"]["files"])
        bank_mib = sum(Path(f).stat().st_size for f in results["finalize"]["files"].values()) / 2**20
    table = Table(title=f"Assembling a {bank_mib:.0f} MiB bank of {args.networks} networks from shards of {SHARD}")
    for col in ("method", "seconds", "peak RSS above start, MiB", "peak RSS, MiB"):
        table.add_column(col, justify="right" if col != "method" else "left")
    for name, label in (("baseline", "writable memory maps"), ("finalize", "BankWriter.finalize (pwrite)")):
        r = results[name]
        table.add_row(label, f"{r['seconds']:.1f}", f"{r['peak_above_before_mib']:.0f}", f"{r['peak_rss_mib']:.0f}")
    Console().print(table)
    Console().print(f"identical bytes: {same}")
    figures = {
        "benchmark": "finalize", "networks": args.networks, "bank_mib": round(bank_mib, 1),
        "machine": {"platform": platform.platform(), "python": sys.version.split()[0]},
        "write_shards_s": round(write_s, 2), "identical_bytes": same,
        **{f"{k}_{m}": round(v[m], 2) for k, v in results.items()
           for m in ("seconds", "peak_rss_mib", "peak_above_before_mib")},
        "peak_above_ratio_baseline_vs_finalize": round(results["baseline"]["peak_above_before_mib"]
                                                       / max(results["finalize"]["peak_above_before_mib"], 1.0), 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    if not same:
        raise SystemExit("the two methods wrote different bytes")


if __name__ == "__main__":
    main()

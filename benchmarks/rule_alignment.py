"""Feedback alignment, weight change and task performance per learning rule (issue 9).

For each rule, networks of one architecture are trained with :class:`~simulator.ensemble.EnsembleTrainer` at the
low / geometric middle / high end of the rule's learning-rate range (the same init seeds and the same batches for
every rule), and at the end of training we report, per layer:

- ``angle_deg``: the angle between the matrix used in place of W when the error is carried back and W itself
  (only for layers >= 1: layer 0's feedback carries nothing);
- ``norm_ratio``: ‖B‖/‖W‖;
- ``rel_change``: ‖W_T − W_0‖/‖W_0‖ of the forward weights;

and per network the final test accuracy. For ``dfa`` (no per-layer feedback matrix) it reports instead the ratio
of the hidden errors' RMS to backprop's at initialisation on the first batch. ``--sweep RULE`` adds a sweep
over a log grid of learning rates for one rule (used to choose adam's and rmsprop's ranges so that their
accuracy and weight change overlap sgdm's).

Run::

    .venv/bin/python benchmarks/rule_alignment.py --out benchmarks/results/rule_alignment-cpu2.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simulator.config import DEFAULT_WEIGHT_DECAY
from simulator.ensemble import EnsembleTrainer
from simulator.networks import (
    ARCHITECTURES,
    LayerSpec,
    activation_derivative,
    forward,
    from_canonical,
    input_grad,
)
from simulator.objectives import objective_for
from simulator.rules import RULES, StepContext
from simulator.tasks import TASKS

DEFAULT_RULES = ("sgdm", "fa", "kp", "ia", "dfa", "sign_symmetry", "adam", "rmsprop")


def _angle(a: torch.Tensor, b: torch.Tensor) -> float:
    cos = float((a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-30))
    return math.degrees(math.acos(max(-1.0, min(1.0, cos))))


def _dfa_error_ratio(trainer: EnsembleTrainer, x: torch.Tensor, y: torch.Tensor) -> list[list[float]]:
    """Per network and hidden layer: RMS of DFA's hidden error / RMS of backprop's, on one batch."""
    fwd = forward(trainer.specs, trainer.weights, trainer.biases, x)
    err = trainer.objective.error(fwd.output, y)
    n = len(trainer.specs)
    # backprop errors at every hidden pre-activation: gradient of bias = sum over rows of the error
    d_bp = []
    d_rows = err
    for i in range(n - 1, 0, -1):
        prev = trainer.specs[i - 1]
        d_in = input_grad(trainer.specs[i], d_rows, trainer.weights[i], x.shape[1])
        d_rows = from_canonical(prev, d_in * activation_derivative(fwd.hidden[i - 1], prev.activation))
        d_bp.insert(0, d_rows)
    out = []
    for j in range(x.shape[0]):
        row = []
        for i, spec in enumerate(trainer.specs[:-1]):
            d = torch.bmm(err, trainer.state["direct"][i]) * activation_derivative(fwd.hidden[i], spec.activation)
            d = from_canonical(spec, d)
            row.append(float(d[j].norm() / d_bp[i][j].norm().clamp_min(1e-30)))
        out.append(row)
    return out


def run_rule(
    rule: str,
    lrs: Sequence[float],
    arch: str,
    task: str,
    n_seeds: int,
    n_steps: int,
    batch: int,
    seed: int,
    weight_decay: float = DEFAULT_WEIGHT_DECAY,
) -> dict[str, Any]:
    """Train len(lrs) × n_seeds networks of one rule; the same init seeds and batches for every rule."""
    data = TASKS.get(task).load()
    specs: list[LayerSpec] = ARCHITECTURES.get(arch).layer_specs(TASKS.get(task).input_shape, data.n_outputs)
    lr_list = [lr for lr in lrs for _ in range(n_seeds)]
    seeds = [1000 + s for _ in lrs for s in range(n_seeds)]
    e = len(lr_list)
    trainer = EnsembleTrainer(
        specs, rule, lr_list, [1.0] * e, seeds, objective_for(data.kind), "cpu", seed, weight_decay
    )
    w0 = [w.clone() for w in trainer.weights]
    x_train = torch.tensor(np.array(data.x_train))
    y_train = torch.tensor(np.array(data.y_train))
    rng = np.random.default_rng(seed)
    # the same batches for every rule: network k (seed index) sees the k-th stream whatever its lr
    idx_all = rng.integers(0, x_train.shape[0], (n_steps, n_seeds, batch))
    dfa_ratio = None
    t0 = time.perf_counter()
    for step in range(n_steps):
        idx = torch.as_tensor(np.tile(idx_all[step], (len(lrs), 1)))
        if step == 0 and rule == "dfa":  # after DFA's first-batch calibration (gradients() runs it once)
            ctx = StepContext(
                trainer.specs, trainer.weights, trainer.biases, x_train[idx], y_train[idx], trainer.objective
            )
            with torch.no_grad():
                trainer.rule.gradients(ctx, trainer.state)
            dfa_ratio = _dfa_error_ratio(trainer, x_train[idx], y_train[idx])
        trainer.step(x_train[idx], y_train[idx])
    seconds = time.perf_counter() - t0
    x_test = torch.tensor(np.array(data.x_test)).expand(e, -1, -1)
    y_test = torch.tensor(np.array(data.y_test)).expand(e, -1)
    with torch.no_grad():
        out = forward(trainer.specs, trainer.weights, trainer.biases, x_test).output
        acc = trainer.objective.metric(out, y_test).numpy()
    fb = trainer.feedback()
    nets = []
    for j in range(e):
        layers = []
        for i, w in enumerate(trainer.weights):
            entry: dict[str, Any] = {
                "layer": i,
                "rel_change": float((w[j] - w0[i][j]).norm() / w0[i][j].norm()),
                "w_norm": float(w[j].norm()),
            }
            if fb is not None and i >= 1:
                entry["angle_deg"] = _angle(fb[i][j], w[j])
                entry["norm_ratio"] = float(fb[i][j].norm() / w[j].norm())
            layers.append(entry)
        net: dict[str, Any] = {"lr": lr_list[j], "seed": seeds[j], "test_accuracy": float(acc[j]), "layers": layers}
        if dfa_ratio is not None:
            net["dfa_hidden_error_ratio_at_init"] = dfa_ratio[j]
        nets.append(net)
    return {"rule": rule, "lrs": list(lrs), "seconds": seconds, "networks": nets}


def summarise(run: dict[str, Any], n_layers: int) -> list[dict[str, Any]]:
    """Mean over seeds per lr: accuracy, mean rel change, per-layer angle and norm ratio."""
    rows = []
    for lr in run["lrs"]:
        nets = [n for n in run["networks"] if n["lr"] == lr]
        row: dict[str, Any] = {
            "rule": run["rule"],
            "lr": lr,
            "test_accuracy": float(np.mean([n["test_accuracy"] for n in nets])),
            "rel_change": float(np.mean([[la["rel_change"] for la in n["layers"]] for n in nets])),
            "rel_change_per_layer": np.mean([[la["rel_change"] for la in n["layers"]] for n in nets], 0).tolist(),
        }
        if "angle_deg" in nets[0]["layers"][1]:
            row["angle_per_layer"] = [
                float(np.mean([n["layers"][i]["angle_deg"] for n in nets])) for i in range(1, n_layers)
            ]
            row["norm_ratio_per_layer"] = [
                float(np.mean([n["layers"][i]["norm_ratio"] for n in nets])) for i in range(1, n_layers)
            ]
        if "dfa_hidden_error_ratio_at_init" in nets[0]:
            row["dfa_hidden_error_ratio_at_init"] = np.mean(
                [n["dfa_hidden_error_ratio_at_init"] for n in nets], 0
            ).tolist()
        rows.append(row)
    return rows


def _fmt_list(v: Sequence[float], fmt: str) -> str:
    return "/".join(format(x, fmt) for x in v)


def print_table(rows: Sequence[dict[str, Any]]) -> None:
    print(f"{'rule':<14}{'lr':>9} {'acc':>6} {'dW/W':>6}  {'angle (layers 1..L-1)':<24}{'|B|/|W| (layers 1..)':<24}")
    for r in rows:
        angle = _fmt_list(r["angle_per_layer"], ".0f") if "angle_per_layer" in r else ""
        ratio = _fmt_list(r["norm_ratio_per_layer"], ".2f") if "norm_ratio_per_layer" in r else ""
        if "dfa_hidden_error_ratio_at_init" in r:
            ratio = "e/e_bp " + _fmt_list(r["dfa_hidden_error_ratio_at_init"], ".2f")
        head = f"{r['rule']:<14}{r['lr']:>9.2g} {r['test_accuracy']:>6.3f} {r['rel_change']:>6.3f}"
        print(f"{head}  {angle:<24}{ratio:<24}")


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rules", nargs="+", default=list(DEFAULT_RULES))
    p.add_argument("--arch", default="mlp3_relu")
    p.add_argument("--task", default="digits")
    p.add_argument("--n-seeds", type=int, default=2)
    p.add_argument("--n-steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sweep", nargs="*", default=[], help="rules to also sweep over --sweep-lrs")
    p.add_argument("--sweep-lrs", type=float, nargs="+", default=[1e-4, 3e-4, 1e-3, 3e-3, 1e-2])
    p.add_argument("--weight-decay", type=float, default=DEFAULT_WEIGHT_DECAY)
    p.add_argument("--label", default="", help="a label stored in the JSON (e.g. before / after)")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    data = TASKS.get(args.task).load()
    n_layers = len(ARCHITECTURES.get(args.arch).layer_specs(TASKS.get(args.task).input_shape, data.n_outputs))
    runs, rows = [], []
    for rule in args.rules:
        lo, hi = RULES.get(rule).default_lr_range
        lrs = [lo, math.sqrt(lo * hi), hi]
        run = run_rule(
            rule, lrs, args.arch, args.task, args.n_seeds, args.n_steps, args.batch, args.seed, args.weight_decay
        )
        run["lr_range"] = [lo, hi]
        runs.append(run)
        rows += summarise(run, n_layers)
    print_table(rows)
    sweeps, sweep_rows = [], []
    for rule in args.sweep:
        run = run_rule(
            rule,
            args.sweep_lrs,
            args.arch,
            args.task,
            args.n_seeds,
            args.n_steps,
            args.batch,
            args.seed,
            args.weight_decay,
        )
        sweeps.append(run)
        sweep_rows += summarise(run, n_layers)
    if sweep_rows:
        print("\nlearning-rate sweep")
        print_table(sweep_rows)
    if args.out is not None:
        doc = {
            "label": args.label,
            "arch": args.arch,
            "task": args.task,
            "n_steps": args.n_steps,
            "batch": args.batch,
            "n_seeds": args.n_seeds,
            "weight_decay": args.weight_decay,
            "torch_threads": 1,
            "summary": rows,
            "sweep_summary": sweep_rows,
            "runs": runs,
            "sweeps": sweeps,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

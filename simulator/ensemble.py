"""Train one shard (an ensemble of networks of one rule and shape) as one batched computation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from simulator.config import NetworkSpec, ShardSpec, SimulationConfig
from simulator.networks import LayerSpec, init_weights
from simulator.objectives import Objective, objective_for
from simulator.optim import OPTIMIZERS
from simulator.recording import Recorder
from simulator.rules import RULES, StepContext
from simulator.tasks import CURRICULA, TASKS, TaskData

N_EVAL = 256
"""Training examples on which the training loss and metric are measured at each checkpoint."""


def network_streams(
    seed: int,
) -> tuple[torch.Generator, np.random.Generator, np.random.Generator, torch.Generator]:
    """A network's independent random streams: init, data order, recorded units, feedback weights."""
    seqs = np.random.SeedSequence(seed).spawn(4)
    init = torch.Generator().manual_seed(int(seqs[0].generate_state(1, dtype=np.uint64)[0] >> np.uint64(1)))
    feedback = torch.Generator().manual_seed(int(seqs[3].generate_state(1, dtype=np.uint64)[0] >> np.uint64(1)))
    return init, np.random.default_rng(seqs[1]), np.random.default_rng(seqs[2]), feedback


@dataclass
class TrainedShard:
    """What training one shard produced: arrays with a leading network axis, and one metadata row each."""

    arrays: dict[str, np.ndarray]
    rows: list[dict[str, Any]]


def _targets(data: TaskData, split: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.tensor(np.array(getattr(data, f"x_{split}")), device=device)
    y = torch.tensor(np.array(getattr(data, f"y_{split}")), device=device)
    return x, y


class EnsembleTrainer:
    """E networks of one architecture trained by one rule as one batched computation.

    Args:
        specs: the layers (hidden then readout).
        rule_key: a key of ``simulator.rules.RULES``.
        lrs, init_scales, seeds: one per network (the seed drives its init and feedback weights).
        objective: the task loss.
        device: torch device.
        noise_seed: seed of the shard's generator for stochastic rules.
        weight_decay: coupled L2 on the forward weights, applied by the optimizer, the same for every rule
            (``SimulationConfig.weight_decay``; 0 here so that a bare trainer is plain torch.optim).
    """

    def __init__(
        self,
        specs: Sequence[LayerSpec],
        rule_key: str,
        lrs: Sequence[float],
        init_scales: Sequence[float],
        seeds: Sequence[int],
        objective: Objective,
        device: str | torch.device = "cpu",
        noise_seed: int = 0,
        weight_decay: float = 0.0,
    ) -> None:
        self.device = dev = torch.device(device)
        self.specs = list(specs)
        self.rule = RULES.get(rule_key)
        self.objective = objective
        self.streams = [network_streams(s) for s in seeds]
        weights, biases = init_weights(self.specs, init_scales, [s[0] for s in self.streams])
        self.weights = [w.to(dev) for w in weights]
        self.biases = [b.to(dev) for b in biases]
        self.state = self.rule.init_state(self.specs, self.weights, [s[3] for s in self.streams])
        self.lr = torch.tensor(list(lrs), dtype=torch.float32, device=dev)
        self.params = self.weights + self.biases
        decay = [True] * len(self.weights) + [False] * len(self.biases)
        self.optimizer = OPTIMIZERS.get(self.rule.optimizer)(self.params, self.lr, weight_decay, decay)
        self.extras = {"lr": self.lr, "weight_decay": torch.tensor(float(weight_decay))}
        self.generator = torch.Generator(device=dev).manual_seed(noise_seed)

    @torch.no_grad()
    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """One update of every network on its own batch: x (E, B, n_features), y (E, B[, n_outputs])."""
        ctx = StepContext(self.specs, self.weights, self.biases, x, y, self.objective, self.generator, self.extras)
        g_w, g_b = self.rule.gradients(ctx, self.state)
        updates = self.optimizer.step(self.params, g_w + g_b)
        self.rule.after_step(ctx, self.state, updates[: len(self.weights)])

    def feedback(self) -> list[torch.Tensor] | None:
        """The matrices standing in for W in the backward pass (None for rules without one)."""
        return self.rule.feedback(self.weights, self.state)


def member_batches(data: TaskData, n_steps: int, member: NetworkSpec, ensemble_batch: int,
                   rng: np.random.Generator) -> np.ndarray:
    """(n_steps, ensemble_batch) example indices of one member: its own curriculum's batches of its own size,
    each tiled ``ensemble_batch / member.batch_size`` times (a batch mean over the tiled batch is the mean over
    the member's batch; ``simulator.config.mixes_batch_sizes`` allows it only for rules where that is all that
    counts)."""
    own = CURRICULA.get(member.curriculum).batch_indices(data, n_steps, member.batch_size, rng)
    if ensemble_batch == member.batch_size:
        return own
    if ensemble_batch % member.batch_size:
        raise ValueError(f"batch size {member.batch_size} does not divide the ensemble's {ensemble_batch}")
    return np.tile(own, (1, ensemble_batch // member.batch_size))


def train_shard(
    config: SimulationConfig,
    shard: ShardSpec,
    networks: Sequence[NetworkSpec],
    device: str | torch.device = "cpu",
    on_step: Callable[[int, int], None] | None = None,
) -> TrainedShard:
    """Train the shard's networks together and record them at every checkpoint.

    Args:
        config: the simulation config (steps, checkpoints, recording sizes).
        shard: which networks, rule, architecture, task and ensemble batch size.
        networks: the population (indexed by network index).
        device: torch device to train on.
        on_step: called as ``on_step(step, n_steps)`` after every update (progress).
    """
    dev = torch.device(device)
    members = [networks[i] for i in shard.networks]
    e = len(members)
    task = TASKS.get(shard.task)
    data = task.load()
    objective = objective_for(data.kind)
    specs: list[LayerSpec] = config.architecture(shard.architecture).layer_specs(task.input_shape, data.n_outputs)
    trainer = EnsembleTrainer(
        specs,
        shard.rule,
        [m.lr for m in members],
        [m.init_scale for m in members],
        [m.seed for m in members],
        objective,
        dev,
        shard.seed,
        config.weight_decay,
    )
    streams = trainer.streams

    x_train, y_train = _targets(data, "train", dev)
    x_test, y_test = _targets(data, "test", dev)
    batches = np.stack([member_batches(data, config.n_steps, m, shard.batch_size, s[1])
                        for m, s in zip(members, streams, strict=True)])
    batches_t = torch.as_tensor(batches, device=dev)  # (E, n_steps, B)
    probe_idx = torch.as_tensor(data.probe_indices(config.n_probes), device=dev)
    n_eval = min(N_EVAL, x_train.shape[0])
    recorder = Recorder(
        specs,
        config,
        [s[2] for s in streams],
        x_test[probe_idx],
        x_train[:n_eval].expand(e, -1, -1),
        y_train[:n_eval].expand(e, *y_train[:n_eval].shape),
        x_test.expand(e, -1, -1),
        y_test.expand(e, *y_test.shape),
        objective,
    )
    checkpoints = {int(s): t for t, s in enumerate(config.checkpoint_steps())}
    recorder.record(0, trainer.weights, trainer.biases)
    for step in range(1, config.n_steps + 1):
        idx = batches_t[:, step - 1]
        trainer.step(x_train[idx], y_train[idx])
        if step in checkpoints:
            recorder.record(checkpoints[step], trainer.weights, trainer.biases)
        if on_step is not None:
            on_step(step, config.n_steps)

    arrays = recorder.arrays()
    rows = []
    for j, m in enumerate(members):
        final_loss = float(arrays["loss"][j, -1])
        rows.append(
            {
                "index": m.index,
                "rule": m.rule,
                "family": m.family,
                "architecture": m.architecture,
                "arch_family": m.arch_family,
                "nonlinearity": m.nonlinearity,
                "task": m.task,
                "task_kind": data.kind,
                "curriculum": m.curriculum,
                "lr": m.lr,
                "batch_size": m.batch_size,
                "init_scale": m.init_scale,
                "seed": m.seed,
                "n_hidden": len(specs) - 1,
                "metric_name": data.metric,
                "chance": data.chance,
                "initial_loss": float(arrays["loss"][j, 0]),
                "final_loss": final_loss,
                "final_metric": float(arrays["metric"][j, -1]),
                "final_test_metric": float(arrays["test_metric"][j, -1]),
                "diverged": bool(not np.isfinite(arrays["loss"][j]).all()),
            }
        )
    return TrainedShard(arrays, rows)

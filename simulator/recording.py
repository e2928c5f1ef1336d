"""Raw observables recorded at every checkpoint, per layer group, for a batched ensemble.

Per network and group: a fixed random subset of forward-weight entries (synapses); the responses of a fixed
random subset of units to fixed probe stimuli (post-nonlinearity); each recorded unit's layer-wise activity
change per probe, Σ_i ∂y_j/∂x_i (the Jacobian row sum of the layer output with respect to its input, i.e.
f'(a_j)·Σ_i W_ji for a dense layer); and the network's training loss, training metric and test metric.

Array shapes (per network): weights (T, G, S) float32; activations and activity_change (T, G, U, P) float16;
loss, metric, test_metric (T,) float32; unit_layer (G, U) int16 (hidden-layer index of every recorded unit).
Groups a network lacks (``middle`` for two hidden layers) hold NaN (and unit_layer −1).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from simulator.config import GROUPS, SimulationConfig
from simulator.networks import LayerSpec, activation_derivative, forward, layer_groups, ones_response
from simulator.objectives import Objective


def recording_layout(config: SimulationConfig) -> dict[str, tuple[tuple[int, ...], str]]:
    """Per-network array shapes and dtypes of a bank recorded under ``config``."""
    t, g = len(config.checkpoint_steps()), len(GROUPS)
    u, p, s = config.units_per_group, config.n_probes, config.synapses_per_group
    return {
        "weights": ((t, g, s), "float32"),
        "activations": ((t, g, u, p), "float16"),
        "activity_change": ((t, g, u, p), "float16"),
        "loss": ((t,), "float32"),
        "metric": ((t,), "float32"),
        "test_metric": ((t,), "float32"),
        "unit_layer": ((g, u), "int16"),
    }


def bank_bytes(config: SimulationConfig) -> int:
    """The size of the arrays of a bank recorded under ``config`` (the metadata and manifest add kilobytes)."""
    import math

    per_network = sum(math.prod(shape) * np.dtype(dtype).itemsize for shape, dtype in recording_layout(config).values())
    return per_network * config.n_networks


class Recorder:
    """Records the observables of E networks at each checkpoint into preallocated numpy arrays.

    Args:
        specs: the architecture's layers (hidden then readout).
        config: supplies n_checkpoints, units/synapses per group and n_probes.
        rngs: one numpy Generator per network (chooses its recorded units and synapses).
        probes: (P, n_features) probe stimuli, shared by every network of the task.
        eval_x, eval_y: fixed training examples for the training loss/metric.
        test_x, test_y: the test split for the test metric.
        objective: the task loss.
    """

    def __init__(
        self,
        specs: Sequence[LayerSpec],
        config: SimulationConfig,
        rngs: Sequence[np.random.Generator],
        probes: torch.Tensor,
        eval_x: torch.Tensor,
        eval_y: torch.Tensor,
        test_x: torch.Tensor,
        test_y: torch.Tensor,
        objective: Objective,
    ) -> None:
        self.specs = list(specs)
        self.objective = objective
        self.n_networks = e = len(rngs)
        self.device = probes.device
        self.probes, self.eval_x, self.eval_y, self.test_x, self.test_y = (
            probes,
            eval_x,
            eval_y,
            test_x,
            test_y,
        )
        hidden = self.specs[:-1]
        group_of = layer_groups(len(hidden))
        self.group_layers = [[i for i, g in enumerate(group_of) if g == name] for name in GROUPS]
        n_t = len(config.checkpoint_steps())
        u, s, p = config.units_per_group, config.synapses_per_group, config.n_probes
        self.unit_index: list[torch.Tensor | None] = []
        self.synapse_index: list[torch.Tensor | None] = []
        self.unit_layer = np.full((e, len(GROUPS), u), -1, dtype=np.int16)
        for gi, layers in enumerate(self.group_layers):
            if not layers:
                self.unit_index.append(None)
                self.synapse_index.append(None)
                continue
            n_units = sum(hidden[i].n_units for i in layers)
            n_syn = sum(hidden[i].n_out * hidden[i].n_in for i in layers)
            layer_of_unit = np.concatenate([np.full(hidden[i].n_units, i) for i in layers])
            units = np.stack([np.sort(r.choice(n_units, size=u, replace=False)) for r in rngs])
            syn = np.stack([np.sort(r.choice(n_syn, size=s, replace=n_syn < s)) for r in rngs])
            self.unit_layer[:, gi] = layer_of_unit[units]
            self.unit_index.append(torch.as_tensor(units, device=self.device))
            self.synapse_index.append(torch.as_tensor(syn, device=self.device))
        self.weights = np.full((e, n_t, len(GROUPS), s), np.nan, dtype=np.float32)
        self.activations = np.full((e, n_t, len(GROUPS), u, p), np.nan, dtype=np.float16)
        self.activity_change = np.full_like(self.activations, np.nan)
        self.loss = np.full((e, n_t), np.nan, dtype=np.float32)
        self.metric = np.full_like(self.loss, np.nan)
        self.test_metric = np.full_like(self.loss, np.nan)

    @torch.no_grad()
    def record(self, t: int, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor]) -> None:
        """Record checkpoint ``t`` (0-based) from the current parameters."""
        e = self.n_networks
        fwd = forward(self.specs, weights, biases, self.probes.expand(e, *self.probes.shape))
        for gi, layers in enumerate(self.group_layers):
            unit_idx, syn_idx = self.unit_index[gi], self.synapse_index[gi]
            if unit_idx is None or syn_idx is None:
                continue
            acts = torch.cat([fwd.hidden[i] for i in layers], dim=-1)  # (E, P, n_units)
            change = torch.cat(
                [
                    activation_derivative(fwd.hidden[i], self.specs[i].activation)
                    * ones_response(self.specs[i], weights[i]).unsqueeze(1)
                    for i in layers
                ],
                dim=-1,
            )
            idx = unit_idx.unsqueeze(1).expand(-1, acts.shape[1], -1)
            self.activations[:, t, gi] = acts.gather(2, idx).transpose(1, 2).to(torch.float16).cpu().numpy()
            self.activity_change[:, t, gi] = (
                change.gather(2, idx).transpose(1, 2).to(torch.float16).cpu().numpy()
            )
            flat = torch.cat([weights[i].reshape(e, -1) for i in layers], dim=-1)
            self.weights[:, t, gi] = flat.gather(1, syn_idx).cpu().numpy()
        out = forward(self.specs, weights, biases, self.eval_x).output
        self.loss[:, t] = self.objective.per_example(out, self.eval_y).mean(-1).cpu().numpy()
        self.metric[:, t] = self.objective.metric(out, self.eval_y).cpu().numpy()
        test_out = forward(self.specs, weights, biases, self.test_x).output
        self.test_metric[:, t] = self.objective.metric(test_out, self.test_y).cpu().numpy()

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "weights": self.weights,
            "activations": self.activations,
            "activity_change": self.activity_change,
            "loss": self.loss,
            "metric": self.metric,
            "test_metric": self.test_metric,
            "unit_layer": self.unit_layer,
        }

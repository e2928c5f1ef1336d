"""Task losses and performance metrics, batched over an ensemble.

Each loss gives the per-example loss and dL/d(readout) of the batch-mean loss, so rules never differentiate it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch


class Objective(ABC):
    metric_name: str = ""

    @abstractmethod
    def per_example(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Loss of every example: (E, B)."""

    @abstractmethod
    def error(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Gradient of the batch-mean loss with respect to the readout: (E, B, n_outputs)."""

    @abstractmethod
    def metric(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Task performance of every network on the batch: (E,)."""


class CrossEntropy(Objective):
    """Softmax cross-entropy over class logits; labels y: (E, B) int64. Metric: accuracy."""

    metric_name = "accuracy"

    def per_example(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(out, dim=-1)
        return -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1)

    def error(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        p = torch.softmax(out, dim=-1)
        p.scatter_add_(-1, y.unsqueeze(-1), -torch.ones_like(p[..., :1]))
        return p / out.shape[1]

    def metric(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (out.argmax(-1) == y).to(out.dtype).mean(-1)


class HalfSquaredError(Objective):
    """½‖out − y‖² summed over outputs; targets y: (E, B, n_outputs). Metric: R² (fraction of variance
    explained, pooled over outputs)."""

    metric_name = "r2"

    def per_example(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return 0.5 * (out - y).pow(2).sum(-1)

    def error(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (out - y) / out.shape[1]

    def metric(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        sse = (out - y).pow(2).sum((-1, -2))
        sst = (y - y.mean(-2, keepdim=True)).pow(2).sum((-1, -2))
        return 1.0 - sse / sst


def objective_for(kind: str) -> Objective:
    """The loss for a task kind: cross-entropy for classification, half squared error otherwise."""
    return CrossEntropy() if kind == "classification" else HalfSquaredError()

"""Batched optimizers: one learning rate per network, same update equations as ``torch.optim``.

Each optimizer turns a list of (pseudo-)gradients into the updates that are *subtracted* from the parameters,
so a learning rule's credit assignment and the optimizer stay separate.

Two things are the optimizer's, never a rule's, so that rules differ in credit assignment only:

- the learning-rate range (``default_lr_range``): every rule on one optimizer draws its learning rate from the
  same range, so the learning rate alone says nothing about which of them trained a network (adam's and
  rmsprop's ranges were chosen so that their final accuracy and relative weight change overlap sgdm's:
  ``benchmarks/rule_alignment.py``, ``benchmarks/results/rule_alignment-cpu2.json``);
- weight decay on the forward weights: torch-style coupled L2 (g ← g + λ·W before momentum or moments), the
  same λ for every rule (``SimulationConfig.weight_decay``), so backprop still equals ``torch.optim`` with
  ``weight_decay=λ`` on the weights.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

import torch

from simulator.registry import Registry


def _per_net(lr: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Broadcast a (E,) learning rate against a parameter of shape (E, ...)."""
    return lr.reshape((-1,) + (1,) * (like.dim() - 1))


MOMENTUM = 0.9
"""The momentum of ``sgdm`` (also the momentum Kolen-Pollack's feedback weights are updated with)."""


class Optimizer(ABC):
    """Keeps the optimizer state of E networks' parameters.

    Args:
        params: the parameters the gradients will refer to (only their shapes are used).
        lr: (E,) learning rates.
        weight_decay: coupled L2 coefficient λ (``torch.optim``'s ``weight_decay``), added as λ·p to the
            gradient of every parameter flagged in ``decay``.
        decay: one flag per parameter (default: none decayed); the trainer flags the forward weights.
    """

    key: str = ""
    default_lr_range: ClassVar[tuple[float, float]]
    """The learning-rate log-range shared by every rule on this optimizer."""

    def __init__(
        self,
        params: Sequence[torch.Tensor],
        lr: torch.Tensor,
        weight_decay: float = 0.0,
        decay: Sequence[bool] | None = None,
    ) -> None:
        self.lr = lr
        self.n_params = len(params)
        self.t = 0
        self.weight_decay = float(weight_decay)
        self.decay = [False] * len(params) if decay is None else list(decay)
        if len(self.decay) != len(params):
            raise ValueError(f"decay must have one flag per parameter ({len(params)}); got {len(self.decay)}")

    @abstractmethod
    def updates(self, grads: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Return the updates u such that ``param -= u`` applies one step (may overwrite ``grads``)."""

    def step(self, params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Apply one step in place (weight decay included) and return the updates."""
        if self.weight_decay:
            for p, g, d in zip(params, grads, self.decay, strict=True):
                if d:
                    g.add_(p, alpha=self.weight_decay)
        ups = self.updates(grads)
        for p, u in zip(params, ups, strict=True):
            p.sub_(u)
        return ups


OPTIMIZERS: Registry[type[Optimizer]] = Registry("optimizer")


class SGD(Optimizer):
    key = "sgd"
    default_lr_range = (0.008, 0.06)

    def updates(self, grads: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        self.t += 1
        return [g.mul_(_per_net(self.lr, g)) for g in grads]  # in place: the gradient buffer becomes the update


class SGDMomentum(Optimizer):
    """``torch.optim.SGD(momentum=0.9)``: buf ← μ·buf + g (buf = g at the first step); u = lr·buf."""

    key = "sgdm"
    default_lr_range = (0.001, 0.012)

    def __init__(
        self,
        params: Sequence[torch.Tensor],
        lr: torch.Tensor,
        weight_decay: float = 0.0,
        decay: Sequence[bool] | None = None,
        momentum: float = MOMENTUM,
    ) -> None:
        super().__init__(params, lr, weight_decay, decay)
        self.momentum = momentum
        self.buf = [torch.zeros_like(p) for p in params]

    def updates(self, grads: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        self.t += 1
        out = []
        for buf, g in zip(self.buf, grads, strict=True):
            torch.add(g, buf, alpha=self.momentum, out=buf)
            out.append(g.copy_(buf).mul_(_per_net(self.lr, buf)))  # reuse the gradient's memory for the update
        return out


class Adam(Optimizer):
    """``torch.optim.Adam`` (betas 0.9, 0.999; eps 1e-8), bias-corrected as torch does."""

    key = "adam"
    default_lr_range = (0.00005, 0.0004)

    def __init__(
        self,
        params: Sequence[torch.Tensor],
        lr: torch.Tensor,
        weight_decay: float = 0.0,
        decay: Sequence[bool] | None = None,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        super().__init__(params, lr, weight_decay, decay)
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]

    def updates(self, grads: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        self.t += 1
        bc1 = 1.0 - self.beta1**self.t
        bc2_sqrt = (1.0 - self.beta2**self.t) ** 0.5
        out = []
        for m, v, g in zip(self.m, self.v, grads, strict=True):
            m.lerp_(g, 1.0 - self.beta1)
            v.mul_(self.beta2).addcmul_(g, g, value=1.0 - self.beta2)
            denom = (v.sqrt() / bc2_sqrt).add_(self.eps)
            out.append(_per_net(self.lr, m) / bc1 * m / denom)
        return out


class RMSprop(Optimizer):
    """``torch.optim.RMSprop`` (alpha 0.99, eps 1e-8, no momentum, not centered)."""

    key = "rmsprop"
    default_lr_range = (0.00004, 0.00025)

    def __init__(
        self,
        params: Sequence[torch.Tensor],
        lr: torch.Tensor,
        weight_decay: float = 0.0,
        decay: Sequence[bool] | None = None,
        alpha: float = 0.99,
        eps: float = 1e-8,
    ) -> None:
        super().__init__(params, lr, weight_decay, decay)
        self.alpha = alpha
        self.eps = eps
        self.v = [torch.zeros_like(p) for p in params]

    def updates(self, grads: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        self.t += 1
        out = []
        for v, g in zip(self.v, grads, strict=True):
            v.mul_(self.alpha).addcmul_(g, g, value=1.0 - self.alpha)
            out.append(_per_net(self.lr, g) * g / v.sqrt().add_(self.eps))
        return out


for _key, _optimizer_type in (("sgd", SGD), ("sgdm", SGDMomentum), ("adam", Adam), ("rmsprop", RMSprop)):
    OPTIMIZERS.add(_key, _optimizer_type)
del _key, _optimizer_type

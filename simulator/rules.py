"""Learning rules: each one implements only its credit assignment (and its own state, e.g. feedback weights).

The forward pass, the loss and the recording live once (``networks``, ``objectives``, ``recording``); a rule
turns one training batch into pseudo-gradients for the forward weights, which the rule's optimizer
(``simulator.optim``) turns into updates. Feedback matrices are stored in the forward weight's shape
(E, n_out, n_in): the matrix used *in place of W* when the error is carried back (so it plays the role of Bᵀ).

Families: ``backprop`` (sgd, sgdm, adam, rmsprop), ``feedback_alignment`` (fa, dfa, kp, sign_symmetry, ia),
``local_hebbian`` (hebbian), ``perturbation`` (node_perturbation).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, TypeVar

import torch

from simulator.networks import (
    ForwardCache,
    LayerSpec,
    activation_derivative,
    forward,
    from_canonical,
    input_grad,
)
from simulator.objectives import Objective
from simulator.registry import Registry

FAMILIES = ("backprop", "feedback_alignment", "local_hebbian", "perturbation")

State = dict[str, list[torch.Tensor]]


@dataclass
class StepContext:
    """One training step of an ensemble of E networks.

    Attributes:
        specs: layers (hidden then readout).
        weights, biases: current parameters, (E, n_out, n_in) and (E, n_out) per layer (updated in place).
        x: inputs (E, B, n_features). y: targets (labels (E, B) or values (E, B, n_outputs)).
        objective: the task loss.
        generator: RNG for stochastic rules (node perturbation).
    """

    specs: Sequence[LayerSpec]
    weights: list[torch.Tensor]
    biases: list[torch.Tensor]
    x: torch.Tensor
    y: torch.Tensor
    objective: Objective
    generator: torch.Generator | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


class LearningRule(ABC):
    """A credit-assignment rule. Subclasses are final and registered in :data:`RULES`."""

    key: ClassVar[str]
    family: ClassVar[str]
    description: ClassVar[str]
    optimizer: ClassVar[str]
    default_lr_range: ClassVar[tuple[float, float]]

    def init_state(
        self,
        specs: Sequence[LayerSpec],
        weights: Sequence[torch.Tensor],
        generators: Sequence[torch.Generator],
    ) -> State:
        """Rule-specific state (feedback weights), one generator per network. Default: none."""
        return {}

    @abstractmethod
    def gradients(self, ctx: StepContext, state: State) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Pseudo-gradients (descent directions) for the weights and biases of every layer."""

    def after_step(  # noqa: B027 (a hook: most rules need nothing after the step)
        self, ctx: StepContext, state: State, weight_updates: Sequence[torch.Tensor]
    ) -> None:
        """Called after the optimizer applied ``weight_updates`` (``W -= u``). Default: nothing."""

    def feedback(self, weights: Sequence[torch.Tensor], state: State) -> list[torch.Tensor] | None:
        """The matrices used in place of W when carrying the error back (None for rules without one)."""
        return None


RULES: Registry[LearningRule] = Registry("learning rule")

_R = TypeVar("_R", bound=type[LearningRule])


def _register(cls: _R) -> _R:
    """Register one instance of a final rule class under its ``key``."""
    RULES.add(cls.key, cls())
    return cls


def _feedback_like(
    specs: Sequence[LayerSpec], generators: Sequence[torch.Generator], dtype: torch.dtype
) -> list[torch.Tensor]:
    """Random feedback matrices, distributed like the forward init (SD gain/√fan_in), one per layer."""
    out = []
    for spec in specs:
        sd = spec.gain / math.sqrt(spec.n_in)
        out.append(
            torch.stack(
                [torch.randn(spec.n_out, spec.n_in, generator=g, dtype=dtype) * sd for g in generators]
            )
        )
    return out


def propagate(
    ctx: StepContext, fwd: ForwardCache, error: torch.Tensor, feedback: Sequence[torch.Tensor]
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Carry the readout error back layer by layer through ``feedback`` (W for backprop).

    Args:
        error: dL/d(readout) of the batch-mean loss, (E, B, n_outputs).
    Returns:
        Weight gradients (E, n_out, n_in) and bias gradients (E, n_out) for every layer.
    """
    n_layers = len(ctx.specs)
    batch = ctx.x.shape[1]
    g_w: list[torch.Tensor] = [torch.empty(0)] * n_layers
    g_b: list[torch.Tensor] = [torch.empty(0)] * n_layers
    d_rows = error
    for i in range(n_layers - 1, -1, -1):
        g_w[i] = torch.bmm(d_rows.transpose(1, 2), fwd.inputs[i])
        g_b[i] = d_rows.sum(1)
        if i > 0:
            prev = ctx.specs[i - 1]
            d_in = input_grad(ctx.specs[i], d_rows, feedback[i], batch)
            d_rows = from_canonical(prev, d_in * activation_derivative(fwd.hidden[i - 1], prev.activation))
    return g_w, g_b


# --------------------------------------------------------------------------- backprop family
class _Backprop(LearningRule):
    family = "backprop"

    def gradients(self, ctx: StepContext, state: State) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        fwd = forward(ctx.specs, ctx.weights, ctx.biases, ctx.x)
        return propagate(ctx, fwd, ctx.objective.error(fwd.output, ctx.y), ctx.weights)

    def feedback(self, weights: Sequence[torch.Tensor], state: State) -> list[torch.Tensor] | None:
        return list(weights)


@_register
class SGDRule(_Backprop):
    key = "sgd"
    description = "backpropagation, plain stochastic gradient descent"
    optimizer = "sgd"
    default_lr_range = (0.005, 0.12)


@_register
class SGDMomentumRule(_Backprop):
    key = "sgdm"
    description = "backpropagation, SGD with momentum 0.9"
    optimizer = "sgdm"
    default_lr_range = (0.0005, 0.012)


@_register
class AdamRule(_Backprop):
    key = "adam"
    description = "backpropagation, Adam (Kingma & Ba 2015)"
    optimizer = "adam"
    default_lr_range = (0.00005, 0.001)


@_register
class RMSpropRule(_Backprop):
    key = "rmsprop"
    description = "backpropagation, RMSprop"
    optimizer = "rmsprop"
    default_lr_range = (0.00003, 0.0006)


# --------------------------------------------------------------------------- feedback-alignment family
class _FeedbackRule(LearningRule):
    family = "feedback_alignment"
    optimizer = "sgdm"
    default_lr_range = (0.002, 0.015)

    def init_state(
        self,
        specs: Sequence[LayerSpec],
        weights: Sequence[torch.Tensor],
        generators: Sequence[torch.Generator],
    ) -> State:
        return {
            "feedback": [f.to(weights[0].device) for f in _feedback_like(specs, generators, weights[0].dtype)]
        }

    def feedback(self, weights: Sequence[torch.Tensor], state: State) -> list[torch.Tensor] | None:
        return state["feedback"]

    def gradients(self, ctx: StepContext, state: State) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        fwd = forward(ctx.specs, ctx.weights, ctx.biases, ctx.x)
        fb = self.feedback(ctx.weights, state)
        assert fb is not None
        grads = propagate(ctx, fwd, ctx.objective.error(fwd.output, ctx.y), fb)
        self.learn_feedback(ctx, state, fwd)
        return grads

    def learn_feedback(self, ctx: StepContext, state: State, fwd: ForwardCache) -> None:
        """Update the feedback weights after they were used for this step's credit. Default: fixed."""


@_register
class FeedbackAlignment(_FeedbackRule):
    key = "fa"
    description = "feedback alignment: fixed random feedback weights (Lillicrap et al. 2016)"


@_register
class SignSymmetry(_FeedbackRule):
    key = "sign_symmetry"
    description = "sign symmetry: feedback = sign(W)ᵀ scaled by mean |W| (Liao et al. 2016)"

    def init_state(
        self,
        specs: Sequence[LayerSpec],
        weights: Sequence[torch.Tensor],
        generators: Sequence[torch.Generator],
    ) -> State:
        return {}

    def feedback(self, weights: Sequence[torch.Tensor], state: State) -> list[torch.Tensor] | None:
        return [torch.sign(w) * w.abs().mean((1, 2), keepdim=True) for w in weights]


@_register
class KolenPollack(_FeedbackRule):
    """Feedback gets the same update as the forward weights (transposed) plus decay on both, so B → Wᵀ."""

    key = "kp"
    description = "Kolen-Pollack: feedback gets the forward update plus decay, converging to Wᵀ (Akrout 2019)"
    decay = 3e-3

    def after_step(self, ctx: StepContext, state: State, weight_updates: Sequence[torch.Tensor]) -> None:
        keep = 1.0 - self.decay
        for w, fb, u in zip(ctx.weights, state["feedback"], weight_updates, strict=True):
            fb.sub_(u).mul_(keep)
            w.mul_(keep)


@_register
class InformationAlignment(_FeedbackRule):
    """Feedback B learned by the layer-local loss α·Amp + β·Null + γ·Decay (Kunin et al. 2020).

    With r = Wx on the layer's inputs x: Amp = −mean xᵀBr, Null = mean ‖Br‖², Decay = ‖W‖² + ‖B‖² (only B
    learns). Written for F = Bᵀ (W's shape): ∇_F = −α·RᵀX/N + 2β·Rᵀ(R·F)/N + 2γ·F, applied by SGD at the
    network's learning rate. As the reference code's ``batch_center_backward_input`` option does, x is centred
    over the batch, and x and r are scaled to unit mean squared norm, which keeps the local loss's
    curvature (hence F's stable step size) independent of the activity scale of the layer. Coefficients keep
    the public defaults' ratio 2:1:1 (α, β, γ = 1, 0.5, 0.5), scaled up so that alignment happens within a
    few hundred steps rather than the ImageNet-length runs of the paper.
    """

    key = "ia"
    description = "information alignment: feedback learned by a local amp + null + decay loss (Kunin 2020)"
    alpha, beta, gamma = 1.0, 0.5, 0.5
    default_lr_range = (0.002, 0.01)

    def learn_feedback(self, ctx: StepContext, state: State, fwd: ForwardCache) -> None:
        lr = ctx.extras["lr"]
        for i in range(1, len(ctx.specs)):  # layer 0's feedback carries nothing (no layer below it)
            x = fwd.inputs[i]
            x = x - x.mean(1, keepdim=True)
            x = x / x.pow(2).sum(-1).mean(-1).sqrt().clamp_min(1e-6).reshape(-1, 1, 1)
            w, fb = ctx.weights[i], state["feedback"][i]
            n = x.shape[1]
            r = torch.bmm(x, w.transpose(1, 2))
            r = r / r.pow(2).sum(-1).mean(-1).sqrt().clamp_min(1e-6).reshape(-1, 1, 1)
            # −α·RᵀX + 2β·Rᵀ(R·F), one product: Rᵀ(2β·RF − αX), all over N
            grad = torch.bmm(
                r.transpose(1, 2), torch.bmm(r, fb).mul_(2 * self.beta).sub_(x, alpha=self.alpha)
            )
            grad.div_(n).add_(fb, alpha=2 * self.gamma)
            fb.sub_(lr.reshape(-1, 1, 1) * grad)


@_register
class DirectFeedbackAlignment(LearningRule):
    """The output error is projected by a fixed random matrix straight to every hidden layer (Nøkland 2016)."""

    key = "dfa"
    family = "feedback_alignment"
    description = "direct feedback alignment: fixed random projections of the output error to every layer"
    optimizer = "sgdm"
    default_lr_range = (0.001, 0.005)

    def init_state(
        self,
        specs: Sequence[LayerSpec],
        weights: Sequence[torch.Tensor],
        generators: Sequence[torch.Generator],
    ) -> State:
        n_out = specs[-1].n_out
        direct = [
            torch.stack(
                [torch.randn(n_out, s.n_units, generator=g, dtype=weights[0].dtype) for g in generators]
            )
            .div_(math.sqrt(n_out))
            .to(weights[0].device)
            for s in specs[:-1]
        ]
        return {"direct": direct}

    def gradients(self, ctx: StepContext, state: State) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        fwd = forward(ctx.specs, ctx.weights, ctx.biases, ctx.x)
        err = ctx.objective.error(fwd.output, ctx.y)
        g_w, g_b = [], []
        for i, spec in enumerate(ctx.specs):
            if i == len(ctx.specs) - 1:
                d_rows = err
            else:
                d = torch.bmm(err, state["direct"][i]) * activation_derivative(fwd.hidden[i], spec.activation)
                d_rows = from_canonical(spec, d)
            g_w.append(torch.bmm(d_rows.transpose(1, 2), fwd.inputs[i]))
            g_b.append(d_rows.sum(1))
        return g_w, g_b


# --------------------------------------------------------------------------- local Hebbian
@_register
class Hebbian(LearningRule):
    """Oja's subspace rule in every hidden layer (ΔW ∝ y xᵀ − y yᵀ W with y = Wx, no labels), and the
    delta rule at the readout (ΔW ∝ −e hᵀ, the only place the task error enters)."""

    key = "hebbian"
    family = "local_hebbian"
    description = "Hebbian: Oja subspace rule in hidden layers, delta-rule readout"
    optimizer = "sgd"
    default_lr_range = (0.008, 0.03)
    hidden_rate = 0.2
    """Oja updates run at this fraction of the readout's learning rate (Oja's rule is unstable above ~0.02 here)."""

    def gradients(self, ctx: StepContext, state: State) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        fwd = forward(ctx.specs, ctx.weights, ctx.biases, ctx.x)
        g_w, g_b = [], []
        for i, w in enumerate(ctx.weights[:-1]):
            x = fwd.inputs[i]
            n = x.shape[1]
            y = torch.bmm(x, w.transpose(1, 2))
            # Oja subspace: yᵀx − (yᵀy)W, computed as yᵀ(x − yW) (cheaper and one product fewer)
            g_w.append(torch.bmm(y.transpose(1, 2), torch.bmm(y, w) - x).mul_(self.hidden_rate / n))
            g_b.append(torch.zeros_like(ctx.biases[i]))
        err = ctx.objective.error(fwd.output, ctx.y)
        g_w.append(torch.bmm(err.transpose(1, 2), fwd.inputs[-1]))
        g_b.append(err.sum(1))
        return g_w, g_b


# --------------------------------------------------------------------------- perturbation
@_register
class NodePerturbation(LearningRule):
    """REINFORCE-style three-factor rule: Gaussian noise ξ on every unit's pre-activation, a global scalar
    reward per example (−loss) compared with a baseline (the same example's noise-free loss), and
    ΔW ∝ −(L(ξ) − L(0))/σ² · ξ xᵀ (post-synaptic noise × pre-synaptic activity × reward)."""

    key = "node_perturbation"
    family = "perturbation"
    description = "node perturbation: global scalar reward vs. baseline times unit noise times input"
    optimizer = "sgd"
    default_lr_range = (0.0005, 0.004)
    sigma = 0.05

    def sample_noise(self, ctx: StepContext) -> list[torch.Tensor]:
        e, b = ctx.x.shape[:2]
        return [
            torch.randn(
                e, b * s.n_positions, s.n_out, generator=ctx.generator, dtype=ctx.x.dtype, device=ctx.x.device
            ).mul_(self.sigma)
            for s in ctx.specs
        ]

    def gradients(
        self, ctx: StepContext, state: State, noise: list[torch.Tensor] | None = None
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        if noise is None:
            noise = self.sample_noise(ctx)
        clean = forward(ctx.specs, ctx.weights, ctx.biases, ctx.x)
        noisy = forward(ctx.specs, ctx.weights, ctx.biases, ctx.x, noise=noise)
        batch = ctx.x.shape[1]
        reward_gap = (
            ctx.objective.per_example(noisy.output, ctx.y) - ctx.objective.per_example(clean.output, ctx.y)
        ) / (self.sigma**2 * batch)
        g_w, g_b = [], []
        for spec, xi, x in zip(ctx.specs, noise, noisy.inputs, strict=True):
            r = reward_gap.repeat_interleave(spec.n_positions, dim=1) if spec.n_positions > 1 else reward_gap
            d_rows = xi * r.unsqueeze(-1)
            g_w.append(torch.bmm(d_rows.transpose(1, 2), x))
            g_b.append(d_rows.sum(1))
        return g_w, g_b

"""Learning rules: each one implements only its credit assignment (and its own state, e.g. feedback weights).

The forward pass, the loss and the recording live once (``networks``, ``objectives``, ``recording``); a rule
turns one training batch into pseudo-gradients for the forward weights, which the rule's optimizer
(``simulator.optim``) turns into updates. Feedback matrices are stored in the forward weight's shape
(E, n_out, n_in): the matrix used *in place of W* when the error is carried back (so it plays the role of Bᵀ).

Families: ``backprop`` (sgd, sgdm, adam, rmsprop), ``feedback_alignment`` (fa, dfa, kp, sign_symmetry, ia),
``local_hebbian`` (hebbian), ``perturbation`` (node_perturbation).

Rules differ in credit assignment only: a rule's learning-rate range is its optimizer's (shared by every rule on
that optimizer), and the forward weights get nothing from a rule but its pseudo-gradients (weight decay is the
optimizer's, the same for every rule). Swapping the true gradient path in for a rule's feedback gives exactly
its optimizer's backprop update (``tests/test_rules.py``'s conformance test).
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
from simulator.optim import MOMENTUM, OPTIMIZERS
from simulator.registry import Registry

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
        extras: ``lr`` ((E,) learning rates) and ``weight_decay`` (scalar tensor: the optimizer's coupled L2
            coefficient on the forward weights; absent means 0).
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
    """Set at registration from the optimizer (``simulator.optim``): one range per optimizer, never per rule."""
    replicable_batches: ClassVar[bool] = True
    """The update depends on the batch only through means over its examples, so a batch repeated k times gives
    the same update: networks of different batch sizes may then share an ensemble (``simulator.config``).
    False for a rule that draws noise per example (node perturbation: a repeated example would get fresh noise,
    a lower-variance estimate than its own batch size gives)."""

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


def _final(cls: _R) -> _R:
    """A final rule class, its learning-rate range set to its optimizer's (a rule that defines its own is
    refused: the learning rate would identify it). Registered at the end of this module."""
    if "default_lr_range" in vars(cls):
        raise TypeError(f"rule {cls.key!r} defines its own default_lr_range; ranges belong to the optimizer")
    cls.default_lr_range = OPTIMIZERS.get(cls.optimizer).default_lr_range
    return cls


def _feedback_like(
    specs: Sequence[LayerSpec], generators: Sequence[torch.Generator], dtype: torch.dtype
) -> list[torch.Tensor]:
    """Random feedback matrices, distributed like the forward init (SD gain/√fan_in), one per layer."""
    out = []
    for spec in specs:
        sd = spec.gain / math.sqrt(spec.n_in)
        out.append(torch.stack([torch.randn(spec.n_out, spec.n_in, generator=g, dtype=dtype) * sd for g in generators]))
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


class SGDRule(_Backprop):
    key = "sgd"
    description = "backpropagation, plain stochastic gradient descent"
    optimizer = "sgd"


class SGDMomentumRule(_Backprop):
    key = "sgdm"
    description = "backpropagation, SGD with momentum 0.9"
    optimizer = "sgdm"


class AdamRule(_Backprop):
    key = "adam"
    description = "backpropagation, Adam (Kingma & Ba 2015)"
    optimizer = "adam"


class RMSpropRule(_Backprop):
    key = "rmsprop"
    description = "backpropagation, RMSprop"
    optimizer = "rmsprop"


# --------------------------------------------------------------------------- feedback-alignment family
class _FeedbackRule(LearningRule):
    family = "feedback_alignment"
    optimizer = "sgdm"

    def init_state(
        self,
        specs: Sequence[LayerSpec],
        weights: Sequence[torch.Tensor],
        generators: Sequence[torch.Generator],
    ) -> State:
        return {"feedback": [f.to(weights[0].device) for f in _feedback_like(specs, generators, weights[0].dtype)]}

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


class FeedbackAlignment(_FeedbackRule):
    key = "fa"
    description = "feedback alignment: fixed random feedback weights (Lillicrap et al. 2016)"


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


def _weight_decay(ctx: StepContext) -> float:
    wd = ctx.extras.get("weight_decay")
    return 0.0 if wd is None else float(wd)


class KolenPollack(_FeedbackRule):
    """Feedback B gets the same update as Wᵀ, decay included (Akrout et al. 2019), so B − Wᵀ decays to 0.

    The forward weights get only the optimizer's update (its weight decay λ is every rule's). B is updated
    as ``torch.optim.SGD(momentum=0.9, weight_decay=λ)`` would update it given W's pseudo-gradient: its own
    momentum buffer m ← μ·m + g + λ·B, then B −= lr·m. So B − W follows m_D ← μ·m_D + λ·(B − W) and shrinks
    by ~(1 − lr·λ/(1 − μ)) per step; with λ = 0 B − W stays at its initial value.
    """

    key = "kp"
    description = "Kolen-Pollack: feedback gets the forward update plus the same decay, converging to Wᵀ (Akrout 2019)"

    def init_state(
        self,
        specs: Sequence[LayerSpec],
        weights: Sequence[torch.Tensor],
        generators: Sequence[torch.Generator],
    ) -> State:
        state = super().init_state(specs, weights, generators)
        state["momentum"] = [torch.zeros_like(w) for w in weights]
        state["grad"] = [torch.zeros_like(w) for w in weights]
        return state

    def gradients(self, ctx: StepContext, state: State) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        g_w, g_b = super().gradients(ctx, state)
        for keep, g in zip(state["grad"], g_w, strict=True):
            keep.copy_(g)  # the optimizer consumes g in place
        return g_w, g_b

    def after_step(self, ctx: StepContext, state: State, weight_updates: Sequence[torch.Tensor]) -> None:
        lr = ctx.extras["lr"].reshape(-1, 1, 1)
        wd = _weight_decay(ctx)
        for fb, m, g in zip(state["feedback"], state["momentum"], state["grad"], strict=True):
            m.mul_(MOMENTUM).add_(g)
            if wd:
                m.add_(fb, alpha=wd)
            fb.sub_(lr * m)


class InformationAlignment(_FeedbackRule):
    """Feedback B learned by the layer-local loss α·Amp + β·Null + γ·Decay (Kunin et al. 2020).

    With r = Wx on the layer's centred inputs x (as the reference code's ``batch_center_backward_input``):
    Amp = −mean xᵀBr, Null = mean ‖Br‖², Decay = ‖W‖² + ‖B‖² (only B learns). For F = Bᵀ (W's shape) the loss
    is quadratic: ∇_F = H·F − α·G with G = RᵀX/N and H = 2β·RᵀR/N + 2γ·I (n_out × n_out), so its minimiser
    on the batch is F* = α·H⁻¹G.

    Scales (why the previous version faded instead of aligning: it normalised x and r separately, which
    made F*'s norm ≤ 1 against ‖W‖ ≈ 16-23): β is taken relative to r's per-unit variance (β/var(r)), so the
    null term's curvature is dimensionless, β = γ (the public defaults' ratio); and α is set per layer and
    batch so that ‖F*‖ = ``norm_ratio``·‖W‖ (α relative to the layer's activity scale ‖G‖, the only scale
    the amp term has).
    The direction of F* is then the primitives' (amp pulls F to W·C, null whitens it, decay regularises).

    Optimisation: the local loss is stiff (H's spread is that of the activity's covariance), so plain SGD on it
    is either unstable at the top of the shared learning-rate range or unconverged at the bottom. F therefore
    takes a Newton step on the batch's loss with step size η = ``feedback_rate``·lr: F ← (1 − η)·F + η·F*.
    ``norm_ratio`` = 0.5 (not 1): with ‖F‖ = ‖W‖ the top of the shared learning-rate range diverged.
    """

    key = "ia"
    description = "information alignment: feedback learned by a local amp + null + decay loss (Kunin 2020)"
    beta_over_gamma = 1.0
    norm_ratio = 0.5
    """α is chosen so that ‖F*‖ = ``norm_ratio``·‖W‖."""
    feedback_rate = 2.0
    """B's learning rate as a multiple of the network's (η = 2·lr: a time constant of 1/η ≈ 140 steps mid-range;
    faster makes F follow one batch's noisy F* too closely)."""

    def learn_feedback(self, ctx: StepContext, state: State, fwd: ForwardCache) -> None:
        lr = ctx.extras["lr"]
        eta = (self.feedback_rate * lr).clamp(max=1.0).reshape(-1, 1, 1)
        for i in range(1, len(ctx.specs)):  # layer 0's feedback carries nothing (no layer below it)
            x = fwd.inputs[i]
            x = x - x.mean(1, keepdim=True)
            w, fb = ctx.weights[i], state["feedback"][i]
            n, n_out = x.shape[1], w.shape[1]
            r = torch.bmm(x, w.transpose(1, 2))
            g = torch.bmm(r.transpose(1, 2), x).div_(n)  # RᵀX/N, (E, n_out, n_in)
            var_r = (r.pow(2).sum((1, 2)) / (n * n_out)).clamp_min(1e-12).reshape(-1, 1, 1)
            h = torch.bmm(r.transpose(1, 2), r).div_(n).mul_(2 * self.beta_over_gamma / var_r)
            h.diagonal(dim1=1, dim2=2).add_(2.0)  # + 2γ·I with γ = 1 (the scale of α, β, γ is set by α)
            target = torch.linalg.solve(h, g)
            scale = self.norm_ratio * w.norm(dim=(1, 2)) / target.norm(dim=(1, 2)).clamp_min(1e-12)
            fb.mul_(1.0 - eta).add_(target.mul_((eta.reshape(-1) * scale).reshape(-1, 1, 1)))


class DirectFeedbackAlignment(LearningRule):
    """The output error is projected by a fixed random matrix straight to every hidden layer (Nøkland 2016).

    The projections D_i are Gaussian, scaled once, on the first training batch, so that every hidden layer's
    error (e·D_i)⊙f'(a_i) has the same norm as backprop's error at that layer at initialisation (per network
    and layer): DFA's hidden errors are as large as backprop's, and it shares sgdm's learning-rate range.
    """

    key = "dfa"
    family = "feedback_alignment"
    description = "direct feedback alignment: fixed random projections of the output error to every layer"
    optimizer = "sgdm"

    def init_state(
        self,
        specs: Sequence[LayerSpec],
        weights: Sequence[torch.Tensor],
        generators: Sequence[torch.Generator],
    ) -> State:
        n_out = specs[-1].n_out
        direct = [
            torch.stack([torch.randn(n_out, s.n_units, generator=g, dtype=weights[0].dtype) for g in generators])
            .div_(math.sqrt(n_out))
            .to(weights[0].device)
            for s in specs[:-1]
        ]
        return {"direct": direct, "calibrated": []}

    def _calibrate(self, ctx: StepContext, state: State, fwd: ForwardCache, err: torch.Tensor) -> None:
        """Scale each D_i so that ‖(e·D_i)⊙f'(a_i)‖ equals backprop's ‖δ_i‖ on this batch (per network)."""
        batch = ctx.x.shape[1]
        d_rows = err
        for i in range(len(ctx.specs) - 1, 0, -1):  # backprop's δ_{i-1}, canonical (E, B, n_units)
            prev = ctx.specs[i - 1]
            d_in = input_grad(ctx.specs[i], d_rows, ctx.weights[i], batch)
            delta = d_in * activation_derivative(fwd.hidden[i - 1], prev.activation)
            d_rows = from_canonical(prev, delta)
            dfa = torch.bmm(err, state["direct"][i - 1]) * activation_derivative(fwd.hidden[i - 1], prev.activation)
            ratio = delta.flatten(1).norm(dim=1) / dfa.flatten(1).norm(dim=1).clamp_min(1e-30)
            state["direct"][i - 1].mul_(ratio.reshape(-1, 1, 1))
        state["calibrated"] = [torch.ones(1)]

    def gradients(self, ctx: StepContext, state: State) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        fwd = forward(ctx.specs, ctx.weights, ctx.biases, ctx.x)
        err = ctx.objective.error(fwd.output, ctx.y)
        if not state.get("calibrated"):
            self._calibrate(ctx, state, fwd, err)
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
class Hebbian(LearningRule):
    """Oja's subspace rule in every hidden layer (ΔW ∝ y xᵀ − y yᵀ W with y = Wx, no labels), and the
    delta rule at the readout (ΔW ∝ −e hᵀ, the only place the task error enters)."""

    key = "hebbian"
    family = "local_hebbian"
    description = "Hebbian: Oja subspace rule in hidden layers, delta-rule readout"
    optimizer = "sgd"
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
class NodePerturbation(LearningRule):
    """REINFORCE-style three-factor rule: Gaussian noise ξ on every unit's pre-activation, a global scalar
    reward per example (−loss) compared with a baseline (the same example's noise-free loss), and
    ΔW ∝ −(L(ξ) − L(0))/σ² · ξ xᵀ (post-synaptic noise × pre-synaptic activity × reward).

    The estimate is unbiased but its variance grows with the number of units, so at the ``sgd`` optimizer's
    shared learning rates it diverges; it is damped by the fixed ``step_scale`` (part of the rule, like
    Hebbian's ``hidden_rate``), which keeps its effective step in the stable range measured before the
    ranges were shared (0.0005-0.004), while its learning rate is drawn like every ``sgd`` rule's."""

    key = "node_perturbation"
    family = "perturbation"
    description = "node perturbation: global scalar reward vs. baseline times unit noise times input"
    optimizer = "sgd"
    replicable_batches = False
    sigma = 0.05
    step_scale = 0.065
    """Damping of the noisy gradient estimate (√(0.0005·0.004) / √(0.008·0.06): the old range's middle)."""

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
        ) * (self.step_scale / (self.sigma**2 * batch))
        g_w, g_b = [], []
        for spec, xi, x in zip(ctx.specs, noise, noisy.inputs, strict=True):
            r = reward_gap.repeat_interleave(spec.n_positions, dim=1) if spec.n_positions > 1 else reward_gap
            d_rows = xi * r.unsqueeze(-1)
            g_w.append(torch.bmm(d_rows.transpose(1, 2), x))
            g_b.append(d_rows.sum(1))
        return g_w, g_b


for _rule_type in (SGDRule, SGDMomentumRule, AdamRule, RMSpropRule,  # backprop
                   FeedbackAlignment, SignSymmetry, KolenPollack, InformationAlignment,  # feedback alignment
                   DirectFeedbackAlignment, Hebbian, NodePerturbation):
    RULES.add(_rule_type.key, _final(_rule_type)())
del _rule_type

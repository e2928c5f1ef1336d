"""Plain single-network reference implementations of the simulator's forward pass and learning rules.

Everything here is written from the definitions (the docstrings of ``simulator.rules`` and the papers they cite),
one network at a time and one layer at a time, with ``torch.nn.functional`` convolutions in NCHW layout and
``torch.autograd`` wherever a quantity is defined as a derivative. Nothing from ``simulator.rules``,
``simulator.optim`` or the batched ops of ``simulator.networks`` is used; only the :class:`LayerSpec` geometry is
read. Optimizers are ``torch.optim``'s.

Layout conventions (the simulator's, which the tests compare against): a layer's units are in canonical
channels-last order (unit ``p * C + c``, ``p = row * W_out + col``); a conv weight row is torch's
``Conv2d`` weight (C_in, k, k) flattened; a conv layer's input, canonical (B, H·W·C), is the NHWC map flattened.

Computations default to float64 so that the reference is the more exact side of every comparison.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.nn.grad import conv2d_input, conv2d_weight

from simulator.networks import LayerSpec

Tensor = torch.Tensor

# ------------------------------------------------------------------------------------------- layer maps


def to_nchw(spec: LayerSpec, x: Tensor) -> Tensor:
    """A conv layer's canonical input (B, H·W·C) as an NCHW image."""
    c, h, w = spec.in_shape
    return x.reshape(x.shape[0], h, w, c).permute(0, 3, 1, 2)


def out_to_canonical(spec: LayerSpec, a: Tensor) -> Tensor:
    """A layer's output in its natural layout ((B, n) or NCHW) -> canonical (B, n_units)."""
    if spec.kind == "linear":
        return a
    return a.permute(0, 2, 3, 1).reshape(a.shape[0], -1)


def out_to_natural(spec: LayerSpec, v: Tensor) -> Tensor:
    """Inverse of :func:`out_to_canonical`."""
    if spec.kind == "linear":
        return v
    ho, wo = spec.out_hw
    return v.reshape(v.shape[0], ho, wo, spec.n_out).permute(0, 3, 1, 2)


def kernel(spec: LayerSpec, m: Tensor) -> Tensor:
    """A (C_out, C_in·k·k) weight matrix as a Conv2d kernel (C_out, C_in, k, k)."""
    return m.reshape(spec.n_out, spec.in_shape[0], spec.kernel, spec.kernel)


def linear_map(spec: LayerSpec, w: Tensor, x: Tensor, b: Tensor | None = None) -> Tensor:
    """Pre-activation W∗x (+ b) of one network's layer: canonical input (B, n_in_units) -> canonical output."""
    if spec.kind == "linear":
        return F.linear(x, w, b)
    a = F.conv2d(to_nchw(spec, x), kernel(spec, w), b, stride=spec.stride, padding=spec.padding)
    return out_to_canonical(spec, a)


def patches(spec: LayerSpec, x: Tensor) -> Tensor:
    """The vectors a layer's weight rows are dotted with: (B, n_in) for dense, (B·P, C·k·k) for conv.

    Rows are example-major then position (row-major over the output map); columns follow the conv kernel's
    (C_in, kh, kw) order (``F.unfold``'s order).
    """
    if spec.kind == "linear":
        return x
    cols = F.unfold(to_nchw(spec, x), spec.kernel, padding=spec.padding, stride=spec.stride)  # (B, C·k·k, P)
    return cols.transpose(1, 2).reshape(-1, spec.n_in)


def weight_grad(spec: LayerSpec, d: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """∂/∂W and ∂/∂b of Σ d ⊙ (W∗x + b), for a canonical pre-activation error ``d`` and canonical input ``x``."""
    if spec.kind == "linear":
        return d.T @ x, d.sum(0)
    dn = out_to_natural(spec, d)
    c = spec.in_shape[0]
    gw = conv2d_weight(to_nchw(spec, x), (spec.n_out, c, spec.kernel, spec.kernel), dn, stride=spec.stride,
                       padding=spec.padding)
    return gw.reshape(spec.n_out, spec.n_in), dn.sum((0, 2, 3))


def carry_back(spec: LayerSpec, d: Tensor, fb: Tensor) -> Tensor:
    """∂/∂x of Σ d ⊙ (fb∗x): the error at the layer's input when ``fb`` stands in for W (canonical layout)."""
    if spec.kind == "linear":
        return d @ fb
    c, h, w = spec.in_shape
    gi = conv2d_input((d.shape[0], c, h, w), kernel(spec, fb), out_to_natural(spec, d), stride=spec.stride,
                      padding=spec.padding)
    return gi.permute(0, 2, 3, 1).reshape(d.shape[0], -1)


def act(a: Tensor, activation: str) -> Tensor:
    if activation == "relu":
        return torch.relu(a)
    if activation == "tanh":
        return torch.tanh(a)
    return a


def act_prime(a: Tensor, activation: str) -> Tensor:
    """f'(a) from the pre-activation a."""
    if activation == "relu":
        return (a > 0).to(a.dtype)
    if activation == "tanh":
        return 1.0 - torch.tanh(a) ** 2
    return torch.ones_like(a)


def ref_forward(
    specs: Sequence[LayerSpec], ws: Sequence[Tensor], bs: Sequence[Tensor], x: Tensor,
    noise: Sequence[Tensor] | None = None,
) -> tuple[list[Tensor], list[Tensor], Tensor]:
    """One network: returns (layer inputs (canonical), pre-activations (canonical, noise included), output).

    ``noise``: per layer, a canonical (B, n_units) perturbation added to the pre-activation.
    """
    h = x
    inputs, pre = [], []
    for i, (spec, w, b) in enumerate(zip(specs, ws, bs, strict=True)):
        inputs.append(h)
        a = linear_map(spec, w, h, b)
        if noise is not None:
            a = a + noise[i]
        pre.append(a)
        h = act(a, spec.activation)
    return inputs, pre, h


# ------------------------------------------------------------------------------------------- losses


def per_example_loss(kind: str, out: Tensor, y: Tensor) -> Tensor:
    """Cross-entropy (classification, integer labels) or ½‖out − y‖² summed over outputs: (B,)."""
    if kind == "classification":
        return F.cross_entropy(out, y, reduction="none")
    return 0.5 * (out - y).pow(2).sum(-1)


def output_error(kind: str, out: Tensor, y: Tensor) -> Tensor:
    """d(batch-mean loss)/d(output), by autograd."""
    o = out.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(per_example_loss(kind, o, y).mean(), o)
    return g


# ------------------------------------------------------------------------------------------- rules

OPTIMIZER_OF = {
    "sgd": "sgd", "sgdm": "sgdm", "adam": "adam", "rmsprop": "rmsprop",
    "fa": "sgdm", "dfa": "sgdm", "kp": "sgdm", "sign_symmetry": "sgdm", "ia": "sgdm",
    "hebbian": "sgd", "node_perturbation": "sgd",
}
KP_MOMENTUM = 0.9
IA_BETA_OVER_GAMMA = 1.0
IA_FEEDBACK_RATE = 2.0
IA_NORM_RATIO = 0.5
HEBBIAN_HIDDEN_RATE = 0.2
NP_SIGMA = 0.05
NP_STEP_SCALE = 0.065


def make_optimizer(
    name: str, weights: list[Tensor], biases: list[Tensor], lr: float, weight_decay: float = 0.0
) -> torch.optim.Optimizer:
    """torch.optim with coupled L2 ``weight_decay`` on the weights only (biases are not decayed)."""
    groups = [{"params": weights, "weight_decay": weight_decay}, {"params": biases, "weight_decay": 0.0}]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr)
    if name == "sgdm":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8)
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, alpha=0.99, eps=1e-8)
    raise ValueError(name)


class ReferenceNet:
    """One network trained by one rule, written from the rule's definition.

    Args:
        rule: a rule key.
        specs: the layers.
        weights, biases: the initial parameters of this one network, (n_out, n_in) and (n_out,).
        lr: its learning rate.
        kind: the task kind (selects the loss).
        feedback: initial feedback matrices in W's shape (fa, kp, ia), one per layer.
        direct: DFA's (n_outputs, n_units) projection per hidden layer (before its first-batch calibration).
        dtype: computation dtype.
        weight_decay: coupled L2 on the weights (every rule's; Kolen-Pollack's feedback gets it too).
    """

    def __init__(
        self, rule: str, specs: Sequence[LayerSpec], weights: Sequence[Tensor], biases: Sequence[Tensor],
        lr: float, kind: str = "classification", feedback: Sequence[Tensor] | None = None,
        direct: Sequence[Tensor] | None = None, dtype: torch.dtype = torch.float64, weight_decay: float = 0.0,
    ) -> None:
        self.rule, self.specs, self.lr, self.kind, self.dtype = rule, list(specs), lr, kind, dtype
        self.w = [w.detach().to(dtype).clone().requires_grad_(True) for w in weights]
        self.b = [b.detach().to(dtype).clone().requires_grad_(True) for b in biases]
        self.fb = [f.detach().to(dtype).clone() for f in feedback] if feedback is not None else None
        self.direct = [d.detach().to(dtype).clone() for d in direct] if direct is not None else None
        self.weight_decay = weight_decay
        self.opt = make_optimizer(OPTIMIZER_OF[rule], self.w, self.b, lr, weight_decay)
        self.kp_buf = [torch.zeros_like(f) for f in self.fb] if self.fb is not None else None
        self.dfa_calibrated = False
        self.min_margin = math.inf
        """Smallest |pre-activation| of a ReLU unit seen in any forward pass: how close the run came to a
        ReLU switching on or off, where float32 and float64 may take different branches."""
        self.max_abs_grad: list[Tensor] | None = None
        """Entry-wise max |(pseudo-)gradient| over the steps so far, weights then biases: how well-conditioned
        each entry's adaptive-optimizer update is (it divides by ~this)."""

    # -- helpers
    def _cast(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        x = x.to(self.dtype)
        y = y if self.kind == "classification" else y.to(self.dtype)
        return x, y

    def feedback_matrices(self) -> list[Tensor]:
        """The matrices used in place of W to carry the error back."""
        if self.rule == "sign_symmetry":
            return [torch.sign(w.detach()) * w.detach().abs().mean() for w in self.w]
        assert self.fb is not None
        return self.fb

    def _chain(self, inputs: list[Tensor], pre: list[Tensor], err: Tensor, fbs: list[Tensor]) -> list[Tensor]:
        """Errors at every layer's pre-activation, carrying ``err`` back through ``fbs`` (backprop with B)."""
        n = len(self.specs)
        deltas: list[Tensor] = [err] * n
        for i in range(n - 1, 0, -1):
            below = self.specs[i - 1]
            deltas[i - 1] = carry_back(self.specs[i], deltas[i], fbs[i]) * act_prime(pre[i - 1], below.activation)
        return deltas

    def _watch(self, pre: Sequence[Tensor]) -> None:
        # Exact zeros are not ambiguous: a conv patch of exact-zero pixels with a zero bias is 0 on both sides.
        for spec, a in zip(self.specs, pre, strict=True):
            if spec.activation == "relu":
                mag = a.detach().abs()
                mag = mag[mag > 0]
                if mag.numel():
                    self.min_margin = min(self.min_margin, float(mag.min()))

    def _apply(self, gw: list[Tensor], gb: list[Tensor]) -> None:
        for p, g in zip(self.w + self.b, gw + gb, strict=True):
            p.grad = g.detach().clone()
        self._step_optimizer()

    def _step_optimizer(self) -> None:
        grads = [p.grad.detach().abs() if p.grad is not None else torch.zeros_like(p) for p in self.w + self.b]
        if self.max_abs_grad is None:
            self.max_abs_grad = grads
        else:
            self.max_abs_grad = [torch.maximum(m, g) for m, g in zip(self.max_abs_grad, grads, strict=True)]
        self.opt.step()

    @torch.no_grad()
    def load(self, weights: Sequence[Tensor], biases: Sequence[Tensor]) -> None:
        """Overwrite the parameter values in place (the optimizer state is kept)."""
        for p, v in zip(self.w + self.b, [*weights, *biases], strict=True):
            p.copy_(v.to(self.dtype))

    # -- one step
    def step(self, x: Tensor, y: Tensor, noise: Sequence[Tensor] | None = None) -> None:
        x, y = self._cast(x, y)
        rule = self.rule
        if rule in ("sgd", "sgdm", "adam", "rmsprop"):
            self.opt.zero_grad()
            _, pre, out = ref_forward(self.specs, self.w, self.b, x)
            self._watch(pre)
            per_example_loss(self.kind, out, y).mean().backward()
            self._step_optimizer()
            return
        with torch.no_grad():
            inputs, pre, out = ref_forward(self.specs, self.w, self.b, x)
        self._watch(pre)
        err = output_error(self.kind, out, y)
        ws = [w.detach() for w in self.w]
        if rule in ("fa", "kp", "sign_symmetry", "ia"):
            deltas = self._chain(inputs, pre, err, self.feedback_matrices())
            grads = [weight_grad(s, d, xi) for s, d, xi in zip(self.specs, deltas, inputs, strict=True)]
            if rule == "ia":
                self._ia_learn_feedback(inputs, ws)
            if rule == "kp":
                # B: torch.optim.SGD(momentum, weight_decay) given W's pseudo-gradient (Akrout et al. 2019)
                assert self.fb is not None and self.kp_buf is not None
                for i, (gw, _) in enumerate(grads):
                    self.kp_buf[i] = KP_MOMENTUM * self.kp_buf[i] + gw + self.weight_decay * self.fb[i]
                    self.fb[i] = self.fb[i] - self.lr * self.kp_buf[i]
            self._apply([g[0] for g in grads], [g[1] for g in grads])
            return
        if rule == "dfa":
            assert self.direct is not None
            if not self.dfa_calibrated:  # scale D_i so the hidden errors match backprop's norm on this batch
                bp = self._chain(inputs, pre, err, ws)
                for i, spec in enumerate(self.specs[:-1]):
                    d = (err @ self.direct[i]) * act_prime(pre[i], spec.activation)
                    self.direct[i] = self.direct[i] * (bp[i].norm() / d.norm())
                self.dfa_calibrated = True
            gw, gb = [], []
            for i, spec in enumerate(self.specs):
                if i == len(self.specs) - 1:
                    d = err
                else:
                    d = (err @ self.direct[i]) * act_prime(pre[i], spec.activation)
                g = weight_grad(spec, d, inputs[i])
                gw.append(g[0])
                gb.append(g[1])
            self._apply(gw, gb)
            return
        if rule == "hebbian":
            gw, gb = [], []
            for i, spec in enumerate(self.specs[:-1]):
                xs = patches(spec, inputs[i])  # (N, n_in)
                w = ws[i]
                dw = torch.zeros_like(w)
                for xn in xs:  # Oja's subspace rule, example by example: Δw = y xᵀ − y yᵀ W with y = W x
                    yn = w @ xn
                    dw += torch.outer(yn, xn) - torch.outer(yn, yn) @ w
                dw /= xs.shape[0]
                gw.append(-HEBBIAN_HIDDEN_RATE * dw)  # descent direction: W -= lr·g  <=>  W += lr·rate·Δw
                gb.append(torch.zeros_like(self.b[i]))
            g = weight_grad(self.specs[-1], err, inputs[-1])  # delta rule at the readout
            self._apply([*gw, g[0]], [*gb, g[1]])
            return
        if rule == "node_perturbation":
            assert noise is not None
            xi = [n.to(self.dtype) for n in noise]
            with torch.no_grad():
                _, clean_pre, clean = ref_forward(self.specs, self.w, self.b, x)
                noisy_inputs, noisy_pre, noisy = ref_forward(self.specs, self.w, self.b, x, noise=xi)
                gap = per_example_loss(self.kind, noisy, y) - per_example_loss(self.kind, clean, y)
            self._watch(clean_pre)
            self._watch(noisy_pre)
            batch = x.shape[0]
            gw, gb = [], []
            for i, spec in enumerate(self.specs):
                # −ΔW ∝ mean over examples of (L(ξ) − L(0))/σ² · ξ xᵀ (summed over conv positions)
                d = xi[i] * (gap * NP_STEP_SCALE / (NP_SIGMA**2 * batch)).unsqueeze(1)
                g = weight_grad(spec, d, noisy_inputs[i])
                gw.append(g[0])
                gb.append(g[1])
            self._apply(gw, gb)
            return
        raise ValueError(rule)

    def _ia_learn_feedback(self, inputs: list[Tensor], ws: list[Tensor]) -> None:
        """Layers >= 1: F ← (1 − η)F + η·F*, F* the minimiser over F of the batch's α·Amp + β·Null + γ·‖F‖²
        (Kunin et al. 2020) with β = γ·var(r)⁻¹ and α such that ‖F*‖ = ‖W‖/2; η = 2·lr."""
        assert self.fb is not None
        eta = min(1.0, IA_FEEDBACK_RATE * self.lr)
        for i in range(1, len(self.specs)):
            x = patches(self.specs[i], inputs[i])
            x = x - x.mean(0, keepdim=True)
            r = x @ ws[i].T
            beta = IA_BETA_OVER_GAMMA / r.pow(2).mean()
            f = torch.zeros_like(self.fb[i]).requires_grad_(True)

            def loss(f: Tensor, x: Tensor = x, r: Tensor = r, beta: Tensor = beta, alpha: float = 1.0) -> Tensor:
                br = r @ f  # (B r_n)ᵀ for every example n, with B = Fᵀ
                amp = -(x * br).sum(1).mean()  # −mean xᵀ B r
                null = br.pow(2).sum(1).mean()  # mean ‖B r‖²
                return alpha * amp + beta * null + f.pow(2).sum()  # γ = 1; ‖W‖² is constant in F

            # quadratic in F: F* solves ∇L(F*) = 0, i.e. H F* = −∇L(0), with the gradient ∇L(0) by autograd and
            # the Hessian (it acts on F's columns) written out from the loss: H = 2β·RᵀR/N + 2·I (γ = 1)
            (g0,) = torch.autograd.grad(loss(f), f)
            n_out = r.shape[1]
            hess = 2.0 * beta * (r.T @ r) / r.shape[0] + 2.0 * torch.eye(n_out, dtype=r.dtype)
            target = torch.linalg.solve(hess, -g0)
            target = target * (IA_NORM_RATIO * ws[i].norm() / target.norm())
            self.fb[i] = ((1.0 - eta) * self.fb[i] + eta * target).detach()

    # -- read out
    def weights(self) -> list[Tensor]:
        return [w.detach() for w in self.w]

    def biases(self) -> list[Tensor]:
        return [b.detach() for b in self.b]

"""Architectures and the batched ensemble forward pass.

An ensemble holds E networks of one architecture as stacked tensors: layer ``l`` has forward weights
``W[l]`` of shape (E, n_out, n_in) and biases ``b[l]`` of shape (E, n_out). A convolution is the same thing
applied to every receptive-field patch (im2col with ``torch.nn.functional.unfold``), so every layer is a batched
matrix product and every learning rule works on conv and dense layers alike.

Unit layout: a layer's units are indexed position-major, channels last (``p * n_channels + c``, as a flattened
NHWC map), and hidden activity is kept in that canonical layout, shape (E, B, n_units). A conv weight row is
ordered like ``torch.nn.Conv2d``'s (C_in, kh, kw) flattened. im2col and its adjoint are k² strided slices on the
channels-last map (much faster on a CPU than ``F.unfold``/``F.fold``, and the layout change is free).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F

from simulator.constants import GROUPS
from simulator.registry import Registry


@dataclass(frozen=True)
class LayerSpec:
    """One layer of an architecture, resolved against an input shape.

    Attributes:
        kind: ``"linear"`` or ``"conv"``.
        n_in: inputs per output unit (features, or C_in·k·k for a conv patch).
        n_out: output features (linear) or channels (conv).
        activation: ``"relu"``, ``"tanh"`` or ``"none"`` (the readout).
        in_shape: (C, H, W) of the input image (conv only).
        out_hw: (H_out, W_out) of the output map (conv only).
        kernel, stride, padding: conv geometry.
    """

    kind: str
    n_in: int
    n_out: int
    activation: str
    in_shape: tuple[int, int, int] = (0, 0, 0)
    out_hw: tuple[int, int] = (1, 1)
    kernel: int = 3
    stride: int = 1
    padding: int = 1

    @property
    def n_positions(self) -> int:
        return self.out_hw[0] * self.out_hw[1]

    @property
    def n_units(self) -> int:
        return self.n_out * self.n_positions

    @property
    def n_in_units(self) -> int:
        """Units of the layer's input (features, or C·H·W)."""
        if self.kind == "conv":
            c, h, w = self.in_shape
            return c * h * w
        return self.n_in

    @property
    def gain(self) -> float:
        return math.sqrt(2.0) if self.activation == "relu" else 1.0


def layer_groups(n_hidden: int) -> list[str]:
    """Group of each hidden layer: thirds by depth, remainder to ``deep`` (as in Nayebi et al. 2020).

    With fewer than three hidden layers the first is ``early`` and the last ``deep``; ``middle`` is empty.
    """
    if n_hidden < 3:
        return ["early", "deep"][-n_hidden:] if n_hidden == 1 else ["early", "deep"]
    third = n_hidden // 3
    return ["early"] * third + ["middle"] * third + ["deep"] * (n_hidden - 2 * third)


@dataclass(frozen=True)
class Architecture:
    """A network shape: hidden conv layers (channels, stride), then hidden dense widths, then a linear readout."""

    key: str
    family: str
    activation: str
    conv: tuple[tuple[int, int], ...] = ()
    dense: tuple[int, ...] = ()
    description: str = ""
    kernel: int = 3
    registry_kind: ClassVar[str] = "architecture"
    _cache: dict[tuple[tuple[int, int, int], int], list[LayerSpec]] = field(
        default_factory=dict, compare=False, repr=False
    )

    @property
    def n_hidden(self) -> int:
        return len(self.conv) + len(self.dense)

    @property
    def layers_description(self) -> str:
        parts = [f"conv{c}/s{s}" for c, s in self.conv] + [str(w) for w in self.dense]
        return f"{self.n_hidden} hidden: {'-'.join(parts)}, {self.activation}"

    def layer_specs(self, input_shape: tuple[int, int, int], n_outputs: int) -> list[LayerSpec]:
        """Hidden layers then the readout, resolved for ``input_shape`` = (C, H, W)."""
        key = ((input_shape[0], input_shape[1], input_shape[2]), n_outputs)
        if key in self._cache:
            return self._cache[key]
        specs: list[LayerSpec] = []
        c, h, w = input_shape
        for channels, stride in self.conv:
            pad = self.kernel // 2
            ho = (h + 2 * pad - self.kernel) // stride + 1
            wo = (w + 2 * pad - self.kernel) // stride + 1
            specs.append(
                LayerSpec(
                    "conv",
                    c * self.kernel**2,
                    channels,
                    self.activation,
                    (c, h, w),
                    (ho, wo),
                    self.kernel,
                    stride,
                    pad,
                )
            )
            c, h, w = channels, ho, wo
        n = c * h * w
        for width in self.dense:
            specs.append(LayerSpec("linear", n, width, self.activation))
            n = width
        specs.append(LayerSpec("linear", n, n_outputs, "none"))
        self._cache[key] = specs
        return specs

    def units_per_group(self, input_shape: tuple[int, int, int]) -> dict[str, int]:
        """Hidden units available in each layer group (0 where a group is empty)."""
        specs = self.layer_specs(input_shape, 1)[:-1]
        out = dict.fromkeys(GROUPS, 0)
        for spec, group in zip(specs, layer_groups(len(specs)), strict=True):
            out[group] += spec.n_units
        return out


ARCHITECTURES: Registry[Architecture] = Registry("architecture")
for _arch in (
    Architecture(
        "mlp2_relu",
        "mlp",
        "relu",
        dense=(512, 256),
        description="2-hidden-layer ReLU MLP (no middle layer group)",
    ),
    Architecture("mlp3_relu", "mlp", "relu", dense=(256, 256, 256), description="3-hidden-layer ReLU MLP"),
    Architecture("mlp3_tanh", "mlp", "tanh", dense=(384, 256, 256), description="3-hidden-layer tanh MLP"),
    Architecture(
        "mlp4_relu", "mlp", "relu", dense=(512, 256, 256, 256), description="4-hidden-layer ReLU MLP"
    ),
    Architecture(
        "mlp4_tanh", "mlp", "tanh", dense=(256, 256, 128, 128), description="4-hidden-layer tanh MLP"
    ),
    Architecture(
        "conv2_relu",
        "conv",
        "relu",
        conv=((16, 1), (16, 2)),
        dense=(256,),
        description="2 conv layers (3x3) + 1 dense hidden layer, ReLU",
    ),
    Architecture(
        "conv2_tanh",
        "conv",
        "tanh",
        conv=((16, 1), (24, 2)),
        dense=(192,),
        description="2 conv layers (3x3) + 1 dense hidden layer, tanh (narrower dense layer than conv2_relu)",
    ),
    Architecture(
        "conv3_relu",
        "conv",
        "relu",
        conv=((16, 1), (32, 2), (32, 1)),
        dense=(256,),
        description="3 conv layers (3x3) + 1 dense hidden layer, ReLU",
    ),
):
    ARCHITECTURES.add(_arch.key, _arch)


# --------------------------------------------------------------------------- batched ops
def activate(a: torch.Tensor, activation: str) -> torch.Tensor:
    if activation == "relu":
        return torch.relu(a)
    if activation == "tanh":
        return torch.tanh(a)
    return a


def activation_derivative(h: torch.Tensor, activation: str) -> torch.Tensor:
    """f'(a) expressed through the post-activation h = f(a)."""
    if activation == "relu":
        return (h > 0).to(h.dtype)
    if activation == "tanh":
        return 1.0 - h * h
    return torch.ones_like(h)


def _offsets(spec: LayerSpec) -> list[tuple[slice, slice]]:
    ho, wo = spec.out_hw
    k, st = spec.kernel, spec.stride
    return [
        (slice(i, i + st * (ho - 1) + 1, st), slice(j, j + st * (wo - 1) + 1, st))
        for i in range(k)
        for j in range(k)
    ]


def layer_input(spec: LayerSpec, h: torch.Tensor) -> torch.Tensor:
    """The matrix a layer multiplies: (E, B, n_in) for dense, (E, B·P, C·k·k) patches for conv.

    Args:
        h: previous activity in canonical layout, (E, B, n_in_units).
    """
    if spec.kind == "linear":
        return h
    e, b, _ = h.shape
    c, hh, ww = spec.in_shape
    p = spec.padding
    img = F.pad(h.reshape(e * b, hh, ww, c), (0, 0, p, p, p, p))
    cols = torch.stack([img[:, si, sj, :] for si, sj in _offsets(spec)], dim=-1)  # (E·B, Ho, Wo, C, k²)
    return cols.reshape(e, b * spec.n_positions, spec.n_in)


def to_canonical(spec: LayerSpec, a: torch.Tensor, batch: int) -> torch.Tensor:
    """(E, B·P, C) rows -> (E, B, P·C) units (a free reshape; identity for dense)."""
    if spec.kind == "linear":
        return a
    return a.reshape(a.shape[0], batch, spec.n_units)


def from_canonical(spec: LayerSpec, d: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`to_canonical`: (E, B, P·C) -> (E, B·P, C)."""
    if spec.kind == "linear":
        return d
    e, b, _ = d.shape
    return d.reshape(e, b * spec.n_positions, spec.n_out)


def input_grad(spec: LayerSpec, d_rows: torch.Tensor, feedback: torch.Tensor, batch: int) -> torch.Tensor:
    """Carry an error back through a layer using ``feedback`` in place of W.

    Args:
        d_rows: error at the layer's pre-activation, (E, rows, n_out).
        feedback: (E, n_out, n_in); ``W`` gives backprop, a random or learned matrix gives the FA family.
        batch: B.
    Returns:
        Error at the layer's input in canonical layout, (E, B, n_in_units).
    """
    d_in = torch.bmm(d_rows, feedback)
    if spec.kind == "linear":
        return d_in
    e = d_in.shape[0]
    c, hh, ww = spec.in_shape
    p = spec.padding
    ho, wo = spec.out_hw
    cols = d_in.reshape(e * batch, ho, wo, c, spec.kernel**2)
    img = d_in.new_zeros(e * batch, hh + 2 * p, ww + 2 * p, c)
    for q, (si, sj) in enumerate(_offsets(spec)):  # adjoint of the patch extraction: scatter-add k² slices
        img[:, si, sj, :] += cols[..., q]
    return img[:, p : p + hh, p : p + ww, :].reshape(e, batch, c * hh * ww)


def ones_response(spec: LayerSpec, w: torch.Tensor) -> torch.Tensor:
    """Σ_i ∂a_j/∂x_i for every unit j: the layer's linear map applied to an all-ones input, bias excluded.

    Returns:
        (E, n_units) in canonical layout (conv border units see fewer inputs).
    """
    if spec.kind == "linear":
        return w.sum(-1)
    c, hh, ww = spec.in_shape
    ones = torch.ones(1, 1, c * hh * ww, dtype=w.dtype, device=w.device)
    mask = layer_input(spec, ones)[0]  # (P, C·k·k): which patch entries fall inside the image
    return torch.matmul(mask, w.transpose(1, 2)).reshape(
        w.shape[0], spec.n_units
    )  # (E, P, C_out) -> (E, P·C)


@dataclass
class ForwardCache:
    """What a forward pass leaves for the credit assignment.

    Attributes:
        inputs: per layer, the matrix it multiplied ((E, rows, n_in)).
        hidden: per hidden layer, post-activation activity in canonical layout (E, B, n_units).
        output: readout, (E, B, n_outputs).
    """

    inputs: list[torch.Tensor]
    hidden: list[torch.Tensor]
    output: torch.Tensor


def forward(
    specs: Sequence[LayerSpec],
    weights: Sequence[torch.Tensor],
    biases: Sequence[torch.Tensor],
    x: torch.Tensor,
    noise: Sequence[torch.Tensor] | None = None,
) -> ForwardCache:
    """Batched forward pass of E networks, each on its own inputs.

    Args:
        specs: layers (hidden then readout).
        weights: per layer (E, n_out, n_in). biases: per layer (E, n_out).
        x: (E, B, n_input_features).
        noise: optional per-layer perturbation of the pre-activation in row layout (E, rows, n_out)
            (node perturbation).
    """
    batch = x.shape[1]
    h = x
    inputs: list[torch.Tensor] = []
    hidden: list[torch.Tensor] = []
    for i, (spec, w, b) in enumerate(zip(specs, weights, biases, strict=True)):
        inp = layer_input(spec, h)
        inputs.append(inp)
        a = torch.baddbmm(b.unsqueeze(1), inp, w.transpose(1, 2))
        if noise is not None:
            a = a + noise[i]
        h = to_canonical(spec, activate(a, spec.activation), batch)
        if spec.activation != "none":
            hidden.append(h)
    return ForwardCache(inputs, hidden, h)


def init_weights(
    specs: Sequence[LayerSpec],
    init_scales: Sequence[float],
    generators: Sequence[torch.Generator],
    dtype: torch.dtype = torch.float32,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """He (ReLU) / Xavier-like (tanh, readout) Gaussian init, SD = gain·scale/√fan_in, one generator per network.

    Returns:
        weights (E, n_out, n_in) and zero biases (E, n_out) per layer, on the CPU.
    """
    weights, biases = [], []
    for spec in specs:
        per_net = [
            torch.randn(spec.n_out, spec.n_in, generator=g, dtype=dtype)
            * (spec.gain * s / math.sqrt(spec.n_in))
            for g, s in zip(generators, init_scales, strict=True)
        ]
        weights.append(torch.stack(per_net))
        biases.append(torch.zeros(len(per_net), spec.n_out, dtype=dtype))
    return weights, biases


def layer_flops(specs: Sequence[LayerSpec], batch: int) -> int:
    """Multiply-add FLOPs (×2) of one forward pass of one network on ``batch`` examples."""
    return sum(2 * batch * s.n_positions * s.n_in * s.n_out for s in specs)

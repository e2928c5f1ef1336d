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
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from simulator.constants import GROUPS
from simulator.errors import ConfigError
from simulator.registry import Registry
from simulator.text import did_you_mean


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


NONLINEARITIES = ("relu", "tanh")
"""The hidden layers' nonlinearities (the key of :func:`activate`; a readout's ``LayerSpec.activation`` is
``"none"``). ``--heldout nonlinearity`` leaves one of them out."""

ARCHITECTURE_KINDS = ("mlp", "conv")
"""An architecture's family (``kind`` in a preset's ``[architectures.NAME]`` table): dense layers only, or conv
layers before the dense ones. ``--heldout arch_family`` leaves one of them out."""

MAX_WIDTH = 4096
"""The widest dense hidden layer an architecture may have."""

MAX_CHANNELS = 512
"""The most channels a conv hidden layer may have."""

MAX_STRIDE = 3
"""The largest conv stride (a stride above the 3x3 kernel would skip pixels)."""

MAX_KERNEL = 7
"""The largest conv kernel (odd sizes only: padding ``kernel // 2`` keeps a stride-1 map's size)."""

MIN_HIDDEN_LAYERS, MAX_HIDDEN_LAYERS = 2, 16
"""Hidden layers (conv and dense together) of an architecture: at least two, so that the ``early`` and ``deep``
layer groups both have units (:func:`layer_groups`), as in every built-in."""


def _list_repr(values: Any) -> str:
    """A tuple shown as the TOML array it came from (``[16, 32]``), anything else as its ``repr``."""
    return repr(list(values)) if isinstance(values, tuple) else repr(values)


def _check_sizes(key: str, values: Any, lo: int, hi: int, what: str) -> None:
    """``values`` is a tuple of integers in [lo, hi] (``what`` names them in the error)."""
    if not isinstance(values, tuple):
        raise ConfigError(f"{key} must be an array of {what}; got {values!r}")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ConfigError(f"{key} entries ({what}) must be integers in [{lo}, {hi}]; got {v!r}")


@dataclass(frozen=True)
class Architecture:
    """A network shape: hidden conv layers (channels, stride), then hidden dense widths, then a linear readout.

    The built-ins are registered in :data:`ARCHITECTURES`; a preset defines more in ``[architectures.NAME]``
    tables (:meth:`custom`, carried by ``SimulationConfig.custom_architectures``). Both are this class, so they
    resolve to layers, layer groups and rules the same way. Validated on construction: every error names the
    preset key (``kind``, ``hidden``, ``channels``, ``strides``, ``kernel``, ``nonlinearity``), the value and
    what is allowed.

    Attributes:
        key: the name presets, CLI and bank metadata use.
        family: ``"mlp"`` or ``"conv"`` (:data:`ARCHITECTURE_KINDS`; the preset's ``kind``).
        activation: the hidden layers' nonlinearity (:data:`NONLINEARITIES`; the preset's ``nonlinearity``).
        conv: (channels, stride) of each hidden conv layer, first to last; empty for an MLP.
        dense: widths of the hidden dense layers after the conv layers (the preset's ``hidden``).
        description: one line for the catalog.
        kernel: the conv kernel size (square, odd).

    Raises:
        ConfigError: an unknown kind or nonlinearity, conv layers in an MLP (or none in a convnet), no dense
            layer, a size out of range, or fewer than 2 or more than 16 hidden layers.
    """

    key: str
    family: str
    activation: str
    conv: tuple[tuple[int, int], ...] = ()
    dense: tuple[int, ...] = ()
    description: str = ""
    kernel: int = 3
    registry_kind: ClassVar[str] = "architecture"
    _cache: dict[tuple[tuple[int, int, int], int], list[LayerSpec]] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )  # (not an __init__ argument: ``dataclasses.replace`` gives the new architecture a cache of its own)

    def __post_init__(self) -> None:
        if self.family not in ARCHITECTURE_KINDS:
            raise ConfigError(
                f"kind: unknown architecture kind {self.family!r}{did_you_mean(str(self.family), ARCHITECTURE_KINDS)}; "
                f"allowed: {', '.join(ARCHITECTURE_KINDS)}"
            )
        if self.activation not in NONLINEARITIES:
            raise ConfigError(
                f"nonlinearity: unknown nonlinearity {self.activation!r}"
                f"{did_you_mean(str(self.activation), NONLINEARITIES)}; allowed: {', '.join(NONLINEARITIES)}"
            )
        if not isinstance(self.dense, tuple) or not self.dense:
            raise ConfigError(f"hidden must be a non-empty array of dense widths; got {_list_repr(self.dense)}")
        _check_sizes("hidden", self.dense, 1, MAX_WIDTH, "dense widths")
        if not isinstance(self.conv, tuple) or not all(isinstance(c, tuple) and len(c) == 2 for c in self.conv):
            raise ConfigError(f"conv must be a tuple of (channels, stride) pairs; got {self.conv!r}")
        if self.family == "mlp" and self.conv:
            raise ConfigError(
                f"channels: only kind = 'conv' has conv layers; got channels = {_list_repr(self.channels)} for kind "
                "'mlp'"
            )
        if self.family == "conv" and not self.conv:
            raise ConfigError("channels must be a non-empty array of conv channels for kind 'conv'; got []")
        _check_sizes("channels", self.channels, 1, MAX_CHANNELS, "conv channels")
        _check_sizes("strides", self.strides, 1, MAX_STRIDE, "conv strides")
        k = self.kernel
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_KERNEL or k % 2 == 0:
            raise ConfigError(f"kernel must be an odd integer in [1, {MAX_KERNEL}]; got {k!r}")
        if self.n_hidden < 1:
            raise ConfigError(f"hidden: an architecture has at least one hidden layer; got {self.n_hidden}")

    def check_layer_groups(self) -> None:
        """ConfigError unless the architecture has enough hidden layers for every layer group (a preset's custom
        architecture; a one-hidden-layer network, as the rule conformance tests build, has no middle or deep)."""
        if not MIN_HIDDEN_LAYERS <= self.n_hidden <= MAX_HIDDEN_LAYERS:
            raise ConfigError(
                f"hidden: an architecture has {MIN_HIDDEN_LAYERS} to {MAX_HIDDEN_LAYERS} hidden layers (conv and "
                f"dense together; at least 2 so that the early and deep layer groups both have units); got "
                f"{self.n_hidden}"
            )

    @classmethod
    def custom(
        cls,
        key: str,
        *,
        kind: str,
        hidden: Sequence[int],
        nonlinearity: str,
        channels: Sequence[int] = (),
        strides: Sequence[int] | None = None,
        kernel: int | None = None,
    ) -> Architecture:
        """An architecture defined by a preset's ``[architectures.NAME]`` table (the same keywords).

        Args:
            key: its name (the table's).
            kind: ``"mlp"`` or ``"conv"``.
            hidden: dense hidden widths, first to last.
            nonlinearity: ``"relu"`` or ``"tanh"``.
            channels: conv hidden channels, first to last (``kind = "conv"`` only).
            strides: each conv layer's stride (default 1 for every layer: a stride-1 3x3 conv keeps the map's size).
            kernel: the conv kernel size (odd; default 3).

        Raises:
            ConfigError: ``strides`` not one per conv layer, ``strides`` or ``kernel`` for an architecture without
                conv layers, or anything :class:`Architecture` rejects.
        """
        chans = tuple(channels)
        if not chans and kind == "mlp":  # (a convnet without channels: Architecture names the missing channels)
            for name, value in (("strides", strides), ("kernel", kernel)):
                if value is not None:
                    raise ConfigError(
                        f"{name}: only kind = 'conv' has conv layers; got {name} = "
                        f"{_list_repr(tuple(value) if isinstance(value, Sequence) else value)} for kind {kind!r}"
                    )
        steps = (1,) * len(chans) if strides is None or not chans else tuple(strides)
        if len(steps) != len(chans):
            raise ConfigError(
                f"strides must have one entry per conv layer ({len(chans)}, as channels); got {list(steps)}"
            )
        arch = cls(
            key,
            kind,
            nonlinearity,
            conv=tuple(zip(chans, steps, strict=True)),
            dense=tuple(hidden),
            kernel=3 if kernel is None else kernel,
        )
        arch.check_layer_groups()
        return arch

    def definition(self) -> dict[str, Any]:
        """The keywords of :meth:`custom` that rebuild this architecture (JSON and TOML values): what a preset's
        table holds, the bank's manifest stores and the bank hash covers. ``channels``, ``strides`` and
        ``kernel`` only for a convnet."""
        out: dict[str, Any] = {"kind": self.family}
        if self.conv:
            out |= {"channels": list(self.channels), "strides": list(self.strides), "kernel": self.kernel}
        return out | {"hidden": list(self.dense), "nonlinearity": self.activation}

    @property
    def channels(self) -> tuple[int, ...]:
        """Channels of the hidden conv layers."""
        return tuple(c for c, _ in self.conv)

    @property
    def strides(self) -> tuple[int, ...]:
        """Strides of the hidden conv layers."""
        return tuple(s for _, s in self.conv)

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
        dense=(320,),
        description="2 conv layers (3x3) + 1 dense hidden layer, tanh (wider dense layer than conv2_relu)",
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

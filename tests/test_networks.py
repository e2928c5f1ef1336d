"""Correctness of the batched ensemble network ops against plain torch (``torch.nn.functional`` + autograd).

Layouts (the simulator's): a layer's units are channels-last (unit ``p * C + c``); a conv weight row is torch's
``Conv2d`` weight (C_in, k, k) flattened; inputs are 64 features viewed as an (H=8, W=8, C=1) map.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest
import torch
from reference_rules import act, act_prime, linear_map, ref_forward

from simulator.config import GROUPS, SimulationConfig, plan_shards, sample_population
from simulator.ensemble import N_EVAL, EnsembleTrainer, train_shard
from simulator.networks import (
    ARCHITECTURES,
    Architecture,
    LayerSpec,
    activation_derivative,
    forward,
    from_canonical,
    init_weights,
    input_grad,
    layer_groups,
    layer_input,
    ones_response,
    to_canonical,
)
from simulator.objectives import objective_for
from simulator.tasks import TASKS, TaskData

DEFAULT_UNITS_PER_GROUP = SimulationConfig.__dataclass_fields__["units_per_group"].default

INPUT_SHAPE = (1, 8, 8)
N_OUTPUTS = 10
ARCH_KEYS = ARCHITECTURES.keys()

CUSTOM = {
    a.key: a
    for a in (
        Architecture.custom("custom_mlp_tanh", kind="mlp", hidden=(256, 200, 192, 300), nonlinearity="tanh"),
        Architecture.custom("custom_conv_k5", kind="conv", channels=(4, 12), strides=(1, 2), kernel=5,
                            hidden=(192,), nonlinearity="relu"),
        Architecture.custom("custom_conv1_tanh", kind="conv", channels=(4,), hidden=(192,), nonlinearity="tanh"),
    )
}
"""Architectures a preset could define (``[architectures.NAME]``): the same checks as the built-ins, with a kernel
and strides no built-in has."""


def architecture(arch: str) -> Architecture:
    return CUSTOM[arch] if arch in CUSTOM else ARCHITECTURES.get(arch)


@functools.cache
def digits() -> TaskData:
    return TASKS.get("digits").load()


def specs_of(arch: str) -> list[LayerSpec]:
    return architecture(arch).layer_specs(INPUT_SHAPE, N_OUTPUTS)


def ensemble(
    arch: str, e: int, seed: int = 0, dtype: torch.dtype = torch.float32, bias_sd: float = 0.1
) -> tuple[list[LayerSpec], list[torch.Tensor], list[torch.Tensor]]:
    """E networks' init weights and (for the tests) random non-zero biases."""
    specs = specs_of(arch)
    gens = [torch.Generator().manual_seed(seed + j) for j in range(e)]
    weights, biases = init_weights(specs, [1.0] * e, gens, dtype=dtype)
    g = torch.Generator().manual_seed(seed + 1000)
    biases = [torch.randn(b.shape, generator=g, dtype=dtype) * bias_sd for b in biases]
    return specs, weights, biases


# ------------------------------------------------------------------------------------------- forward


@pytest.mark.parametrize("arch", ["conv2_relu", "conv3_relu", "mlp3_relu", "mlp3_tanh", "custom_conv_k5"])
def test_forward_equals_plain_torch(arch: str) -> None:
    """Hidden activity (canonical layout) and outputs of every network equal torch conv2d/linear, to 1e-5."""
    e, b = 3, 5
    specs, weights, biases = ensemble(arch, e)
    x = torch.rand(e, b, 64, generator=torch.Generator().manual_seed(1))
    fwd = forward(specs, weights, biases, x)
    assert len(fwd.hidden) == len(specs) - 1
    for j in range(e):
        h = x[j]
        for i, spec in enumerate(specs):
            if spec.kind == "conv":  # the plain NCHW conv, independently of the layout helpers
                c, hh, ww = spec.in_shape
                img = h.reshape(b, hh, ww, c).permute(0, 3, 1, 2)
                k = weights[i][j].reshape(spec.n_out, c, spec.kernel, spec.kernel)
                a = torch.nn.functional.conv2d(img, k, biases[i][j], stride=spec.stride, padding=spec.padding)
                assert a.shape[2:] == spec.out_hw
                a = a.permute(0, 2, 3, 1).reshape(b, -1)
            else:
                a = torch.nn.functional.linear(h, weights[i][j], biases[i][j])
            h = act(a, spec.activation)
            got = fwd.hidden[i][j] if i < len(specs) - 1 else fwd.output[j]
            torch.testing.assert_close(got, h, rtol=1e-5, atol=1e-5)
        # the layer inputs the rules multiply are the (example, position)-major patch rows of torch's unfold
        for i, spec in enumerate(specs):
            prev = x[j] if i == 0 else fwd.hidden[i - 1][j]
            if spec.kind == "conv":
                c, hh, ww = spec.in_shape
                cols = torch.nn.functional.unfold(prev.reshape(b, hh, ww, c).permute(0, 3, 1, 2), spec.kernel,
                                                  padding=spec.padding, stride=spec.stride)
                want = cols.transpose(1, 2).reshape(-1, spec.n_in)
            else:
                want = prev
            torch.testing.assert_close(fwd.inputs[i][j], want)


def test_forward_noise_is_added_to_the_pre_activation_in_row_layout() -> None:
    specs, weights, biases = ensemble("conv2_relu", 2)
    x = torch.rand(2, 3, 64, generator=torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(3)
    noise = [torch.randn(2, 3 * s.n_positions, s.n_out, generator=g) for s in specs]
    got = forward(specs, weights, biases, x, noise=noise)
    for j in range(2):
        _, pre, out = ref_forward(specs, [w[j] for w in weights], [b[j] for b in biases], x[j],
                                  noise=[n[j].reshape(3, -1) for n in noise])
        torch.testing.assert_close(got.output[j], out, rtol=1e-5, atol=1e-5)
        for i in range(len(specs) - 1):
            torch.testing.assert_close(got.hidden[i][j], act(pre[i], specs[i].activation), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ["conv2_relu", "conv3_relu"])
def test_canonical_layout_round_trip(arch: str) -> None:
    for spec in specs_of(arch):
        d = torch.randn(2, 3, spec.n_units)
        rows = from_canonical(spec, d)
        assert rows.shape == (2, 3 * spec.n_positions, spec.n_out)
        assert torch.equal(to_canonical(spec, rows, 3), d)


# ------------------------------------------------------------------------------------------- adjoint


@pytest.mark.parametrize("use_w", [True, False], ids=["feedback=W", "feedback=random"])
@pytest.mark.parametrize("arch", ["conv2_relu", "conv3_relu", "mlp3_relu", "custom_conv_k5"])
def test_input_grad_is_the_adjoint_of_the_layer(arch: str, use_w: bool) -> None:
    """input_grad(d, F) == ∂/∂x <d, F∗x> by torch.autograd through torch's conv2d/linear, every layer."""
    e, b = 2, 3
    specs, weights, _ = ensemble(arch, e, dtype=torch.float64)
    g = torch.Generator().manual_seed(4)
    for i, spec in enumerate(specs):
        fb = weights[i] if use_w else torch.randn(weights[i].shape, generator=g, dtype=torch.float64)
        d_rows = torch.randn(e, b * spec.n_positions, spec.n_out, generator=g, dtype=torch.float64)
        got = input_grad(spec, d_rows, fb, b)
        assert got.shape == (e, b, spec.n_in_units)
        for j in range(e):
            x = torch.randn(b, spec.n_in_units, generator=g, dtype=torch.float64, requires_grad=True)
            a = linear_map(spec, fb[j], x)  # canonical (B, n_units)
            (want,) = torch.autograd.grad((a * d_rows[j].reshape(b, -1)).sum(), x)
            torch.testing.assert_close(got[j], want, rtol=1e-10, atol=1e-10)


def test_input_grad_adjoint_identity_in_float32() -> None:
    """<d, L x> == <Lᵀ d, x> with the simulator's own patch extraction, float32 (what training runs in)."""
    specs, weights, _ = ensemble("conv3_relu", 2)
    g = torch.Generator().manual_seed(5)
    for spec, w in zip(specs, weights, strict=True):
        x = torch.randn(2, 4, spec.n_in_units, generator=g)
        d = torch.randn(2, 4 * spec.n_positions, spec.n_out, generator=g)
        lhs = (torch.bmm(layer_input(spec, x), w.transpose(1, 2)) * d).sum((1, 2))
        rhs = (input_grad(spec, d, w, 4) * x).sum((1, 2))
        torch.testing.assert_close(lhs, rhs, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------------- activity change


@pytest.mark.parametrize("arch", ["mlp3_relu", "mlp3_tanh", "conv2_relu", "conv3_relu", "custom_conv_k5"])
def test_ones_response_is_the_jacobian_row_sum(arch: str) -> None:
    """Σ_i ∂y_j/∂x_i of y = f(W x + b) at a real probe == activation_derivative(y)·ones_response(W), per layer."""
    specs, weights, biases = ensemble(arch, 2, dtype=torch.float64)
    probe = torch.tensor(np.array(digits().x_test[:1]), dtype=torch.float64)
    j = 1
    w_j, b_j = [w[j] for w in weights], [b[j] for b in biases]
    inputs, pre, _ = ref_forward(specs, w_j, b_j, probe)
    for i, spec in enumerate(specs[:-1]):
        x = inputs[i][0]

        def layer(v: torch.Tensor, spec: LayerSpec = spec, i: int = i) -> torch.Tensor:
            return act(linear_map(spec, w_j[i], v.unsqueeze(0), b_j[i]), spec.activation)[0]

        jac = torch.autograd.functional.jacobian(layer, x)  # (n_units, n_in_units)
        assert jac.shape == (spec.n_units, spec.n_in_units)
        h = act(pre[i], spec.activation)
        got = activation_derivative(h, spec.activation)[0] * ones_response(spec, weights[i])[j]
        torch.testing.assert_close(got, jac.sum(1), rtol=1e-10, atol=1e-10)
        if spec.kind == "conv":  # border units see fewer inputs than interior ones
            full = weights[i][j].sum(1)
            resp = ones_response(spec, weights[i])[j].reshape(spec.n_positions, spec.n_out)
            ho, wo = spec.out_hw
            interior = (ho // 2) * wo + wo // 2
            torch.testing.assert_close(resp[interior], full)
            assert not torch.allclose(resp[0], full)


def test_recorder_stores_the_activity_change_of_every_unit() -> None:
    """A tiny shard: at checkpoint 0 the bank's activations and activity change (float16) equal the plain
    recomputation from the init weights, f(a_j) and f'(a_j)·Σ_i W_ji, for all 256 units of each group."""
    config = SimulationConfig(
        name="t", rules=("sgdm",), architectures=("mlp3_relu",), tasks=("digits",), n_networks_per_rule=2,
        n_steps=10, n_checkpoints=3, batch_sizes=(8,), n_probes=4, units_per_group=256, synapses_per_group=32,
    )
    networks = sample_population(config)
    shards = plan_shards(config, networks)
    assert len(shards) == 1
    shard = shards[0]
    arrays = train_shard(config, shard, networks).arrays
    members = [networks[i] for i in shard.networks]
    e = len(members)
    data = digits()
    specs = specs_of("mlp3_relu")
    trainer = EnsembleTrainer(specs, "sgdm", [m.lr for m in members], [m.init_scale for m in members],
                              [m.seed for m in members], objective_for(data.kind))
    probes = torch.tensor(np.array(data.x_test)[data.probe_indices(config.n_probes)], dtype=torch.float64)
    assert arrays["activity_change"].shape == (e, 3, len(GROUPS), 256, 4)
    hidden_groups = layer_groups(len(specs) - 1)
    assert hidden_groups == ["early", "middle", "deep"]
    for j in range(e):
        w_j = [w[j].double() for w in trainer.weights]
        b_j = [b[j].double() for b in trainer.biases]
        _, pre, out = ref_forward(specs, w_j, b_j, probes)
        for gi, group in enumerate(GROUPS):
            i = hidden_groups.index(group)  # one layer per group here
            assert (arrays["unit_layer"][j, gi] == i).all()
            change = (act_prime(pre[i], "relu") * w_j[i].sum(1)).T.numpy()  # (U, P)
            acts = act(pre[i], "relu").T.numpy()
            np.testing.assert_allclose(arrays["activity_change"][j, 0, gi].astype(np.float64), change,
                                       rtol=1e-3, atol=1e-4)
            np.testing.assert_allclose(arrays["activations"][j, 0, gi].astype(np.float64), acts,
                                       rtol=1e-3, atol=1e-4)
        assert np.isfinite(arrays["activity_change"][j]).all()
    # the initial training loss is the batch-mean cross-entropy on the first N_EVAL training examples
    n_eval = min(N_EVAL, data.n_train)
    x_eval = torch.tensor(np.array(data.x_train[:n_eval]))
    y_eval = torch.tensor(np.array(data.y_train[:n_eval]))
    for j in range(e):
        _, _, out = ref_forward(specs, [w[j] for w in trainer.weights], [b[j] for b in trainer.biases], x_eval)
        loss = torch.nn.functional.cross_entropy(out, y_eval)
        np.testing.assert_allclose(arrays["loss"][j, 0], float(loss), rtol=1e-5)


# ------------------------------------------------------------------------------------------- groups, conformance


@pytest.mark.parametrize(("n", "groups"), [
    (2, ["early", "deep"]),
    (3, ["early", "middle", "deep"]),
    (4, ["early", "middle", "deep", "deep"]),
    (5, ["early", "middle", "deep", "deep", "deep"]),
    (6, ["early", "early", "middle", "middle", "deep", "deep"]),
    (7, ["early", "early", "middle", "middle", "deep", "deep", "deep"]),
])
def test_layer_groups_are_thirds_with_the_remainder_deep(n: int, groups: list[str]) -> None:
    assert layer_groups(n) == groups


@pytest.mark.parametrize("arch", [*ARCH_KEYS, *CUSTOM])
def test_architecture_conformance(arch: str) -> None:
    """Every built-in architecture and the custom examples: shapes chain, groups, forward, init."""
    a = architecture(arch)
    specs = a.layer_specs(INPUT_SHAPE, N_OUTPUTS)
    assert len(specs) == a.n_hidden + 1
    # shapes chain: each layer's input units are the previous layer's units
    assert specs[0].n_in_units == 64
    for prev, nxt in itertools.pairwise(specs):
        assert nxt.n_in_units == prev.n_units
        if nxt.kind == "conv":
            assert prev.kind == "conv"
            assert nxt.in_shape == (prev.n_out, *prev.out_hw)
    for s in specs:
        if s.kind == "conv":
            assert s.n_in == s.in_shape[0] * s.kernel**2
            _, h, w = s.in_shape
            assert s.out_hw == ((h + 2 * s.padding - s.kernel) // s.stride + 1,
                                (w + 2 * s.padding - s.kernel) // s.stride + 1)
    assert all(s.activation == a.activation for s in specs[:-1])
    assert specs[-1].kind == "linear" and specs[-1].activation == "none" and specs[-1].n_out == N_OUTPUTS
    # every non-empty layer group has at least the units a bank records by default (192, every built-in preset's
    # units_per_group; conv2_tanh's deep group has exactly 192, so a preset using it records at most that)
    per_group = a.units_per_group(INPUT_SHAPE)
    assert set(per_group) == set(GROUPS)
    assert sum(per_group.values()) == sum(s.n_units for s in specs[:-1])
    assert per_group["early"] > 0 and per_group["deep"] > 0
    for group, n in per_group.items():
        assert n == 0 or n >= DEFAULT_UNITS_PER_GROUP, f"{arch}: group {group} has {n} units"
    assert (per_group["middle"] == 0) == (a.n_hidden < 3)
    # forward: output shape, finite
    e, b = 3, 4
    _, weights, biases = ensemble(arch, e)
    x = torch.rand(e, b, 64, generator=torch.Generator().manual_seed(6))
    fwd = forward(specs, weights, biases, x)
    assert fwd.output.shape == (e, b, N_OUTPUTS)
    assert torch.isfinite(fwd.output).all()
    assert [h.shape for h in fwd.hidden] == [(e, b, s.n_units) for s in specs[:-1]]
    # init: same seed -> identical, different seed -> different; SD = gain·scale/√fan_in
    w1, _ = init_weights(specs, [1.0, 0.5], [torch.Generator().manual_seed(s) for s in (3, 4)])
    w2, b2 = init_weights(specs, [1.0, 0.5], [torch.Generator().manual_seed(s) for s in (3, 4)])
    w3, _ = init_weights(specs, [1.0, 0.5], [torch.Generator().manual_seed(s) for s in (3, 5)])
    for s, u, v, z in zip(specs, w1, w2, w3, strict=True):
        assert u.shape == (2, s.n_out, s.n_in)
        assert torch.equal(u, v)
        assert torch.equal(u[0], z[0]) and not torch.equal(u[1], z[1])
        assert not torch.equal(u[0], u[1] / 0.5)
        if u[0].numel() >= 2000:
            for j, scale in enumerate((1.0, 0.5)):
                sd = s.gain * scale / np.sqrt(s.n_in)
                assert abs(float(u[j].std()) / sd - 1.0) < 0.06
    assert all(torch.equal(bb, torch.zeros_like(bb)) for bb in b2)

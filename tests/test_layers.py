"""MultiScaleRetention (Eq. 8), FeedForward and RetNetBlock (Eq. 9): formulas, modes, state, bad
input."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from retnet_ref.decay import gamma_schedule
from retnet_ref.layers import FeedForward, MultiScaleRetention, RetNetBlock, RMSNorm
from retnet_ref.model import RetNetConfig
from retnet_ref.normalisation import normalised_retention
from retnet_ref.presets import count_parameters
from retnet_ref.retention import parallel_retention
from retnet_ref.rotation import rotate, theta_schedule
from retnet_ref.state import RetentionState

D, HEADS, T = 32, 4, 19
TOL64 = 1e-12   # float64 forms: measured ≤ 2e-15
# the paper's ablations of MSR (Table 6): the gate, the per-head norm, or both switched off
ABLATIONS = [dict(swish_gate=False), dict(group_norm=False),
             dict(swish_gate=False, group_norm=False)]
ABLATION_IDS = ["no-gate", "no-groupnorm", "neither"]


def msr(seed=0, qk_gain=1.0, **kwargs):
    torch.manual_seed(seed)
    layer = MultiScaleRetention(D, HEADS, **kwargs).double()
    with torch.no_grad():   # larger q, k: normalisation (3)'s clamp becomes active in some rows
        layer.q_proj.weight.mul_(qk_gain)
        layer.k_proj.weight.mul_(qk_gain)
    return layer


def x_input(length=T, seed=1, batch=2):
    return torch.randn(batch, length, D, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)


def run_modes(layer, x):
    return {mode: layer(x, mode, chunk_size)[0]
            for mode, chunk_size in [("parallel", None), ("recurrent", None), ("chunkwise", 5)]}


def test_shapes_and_widths():
    layer = MultiScaleRetention(D, HEADS)
    assert (layer.key_head_dim, layer.value_head_dim, layer.value_dim) == (D // HEADS,
                                                                           2 * D // HEADS, 2 * D)
    assert [p.shape for p in layer.parameters()] == [(D, D), (D, D), (2 * D, D), (2 * D, D),
                                                     (D, 2 * D)]
    assert layer.gamma.tolist() == gamma_schedule(HEADS).tolist()
    assert (
        MultiScaleRetention(D, HEADS, gamma="linspace").gamma.tolist()
        == gamma_schedule(HEADS, "linspace").tolist()
    )


def rotated_heads(layer, x):
    """q, k (rotated) and v of the layer's heads, written out from its weights: (B, H, T, d)
    each."""
    B = x.shape[0]
    heads = lambda w, d: (x @ w.T).view(B, T, HEADS, d).transpose(1, 2)      # (B, H, T, d)
    theta = theta_schedule(D // HEADS)
    q = rotate(heads(layer.q_proj.weight, D // HEADS), theta)
    k = rotate(heads(layer.k_proj.weight, D // HEADS), theta)
    return q, k, heads(layer.v_proj.weight, 2 * D // HEADS)


def test_msr_is_equation_8_written_out(rel_err):
    """With ε = 0 the per-head norm is blind to the row scales: plain retention heads give the same
    output."""
    layer = msr(eps=0.0, qk_gain=4.0)
    x = x_input()
    y, _ = layer(x)
    B = x.shape[0]
    q, k, v = rotated_heads(layer, x)
    o = parallel_retention(q, k, v, layer.gamma)                                # unnormalised
    Y = F.layer_norm(o, (2 * D // HEADS,), eps=0.0).transpose(1, 2).reshape(B, T, 2 * D)
    expected = (F.silu(x @ layer.g_proj.weight.T) * Y) @ layer.out_proj.weight.T
    assert rel_err(y, expected) < 1e-11


@pytest.mark.parametrize("ablation", ABLATIONS, ids=ABLATION_IDS)
def test_ablations_are_table_6_written_out(ablation, rel_err):
    """− swish gate: MSR(X) = Y W_O; − GroupNorm: Y = concat(normalised heads)."""
    layer = msr(qk_gain=4.0, **ablation)
    x = x_input()
    y, _ = layer(x)
    B = x.shape[0]
    q, k, v = rotated_heads(layer, x)
    o, _ = normalised_retention(q, k, v, layer.gamma)                          # (B, H, T, d_v)
    if ablation.get("group_norm", True):
        o = F.layer_norm(o, (2 * D // HEADS,), eps=1e-6)
    Y = o.transpose(1, 2).reshape(B, T, 2 * D)
    gated = F.silu(x @ layer.g_proj.weight.T) * Y if ablation.get("swish_gate", True) else Y
    assert rel_err(y, gated @ layer.out_proj.weight.T) < 1e-12


@pytest.mark.parametrize("ablation", ABLATIONS, ids=ABLATION_IDS)
def test_ablations_keep_the_modes_equal_and_the_decode_step(ablation, rel_err):
    layer = msr(qk_gain=4.0, **ablation)
    x = x_input()
    ys = run_modes(layer, x)
    assert rel_err(ys["recurrent"], ys["parallel"]) < TOL64
    assert rel_err(ys["chunkwise"], ys["parallel"]) < TOL64
    _, state = layer(x[:, :-1], "chunkwise", 5)
    assert rel_err(layer.step_(x[:, -1:], state), ys["parallel"][:, -1:]) < TOL64


def test_ablations_remove_exactly_their_parameters():
    """No gate: W_G (d × 2d) is gone; no GroupNorm: nothing to remove (the per-head norm has no
    affine)."""
    count = count_parameters
    full = count(MultiScaleRetention(D, HEADS))
    assert count(MultiScaleRetention(D, HEADS, swish_gate=False)) == full - D * 2 * D
    assert count(MultiScaleRetention(D, HEADS, group_norm=False)) == full
    assert MultiScaleRetention(D, HEADS, swish_gate=False).g_proj is None
    assert isinstance(MultiScaleRetention(D, HEADS, group_norm=False).head_norm, torch.nn.Identity)


@pytest.mark.parametrize("head_norm", ["layernorm", "rmsnorm"])
def test_modes_agree_with_exact_normalisation(head_norm, rel_err):
    layer = msr(qk_gain=4.0, head_norm=head_norm)
    ys = run_modes(layer, x_input())
    assert rel_err(ys["recurrent"], ys["parallel"]) < TOL64
    assert rel_err(ys["chunkwise"], ys["parallel"]) < TOL64


def test_parameter_gradients_agree_between_modes(rel_err):
    grads = {}
    for mode, chunk_size in [("parallel", None), ("recurrent", None), ("chunkwise", 4)]:
        layer = msr(qk_gain=4.0)
        y, _ = layer(x_input(), mode, chunk_size)
        (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)).sum().backward()
        grads[mode] = [p.grad for p in layer.parameters()]
    for mode in ("recurrent", "chunkwise"):
        for g, g_ref in zip(grads[mode], grads["parallel"]):
            assert rel_err(g, g_ref) < TOL64


def test_torchscale_normalisation_modes_disagree_unless_eps_is_zero(rel_err):
    """Per-mode row scales differ; a norm with ε > 0 sees them (measured here:
    recurrent 4.1e-5, chunkwise 3.8e-4 relative to parallel at ε = 1e-6; ≤ 8e-16 at ε = 0)."""
    errors = {}
    for eps in (1e-6, 0.0):
        layer = msr(qk_gain=4.0, head_norm="rmsnorm", eps=eps, normalisation="torchscale")
        ys = run_modes(layer, x_input())
        errors[eps] = max(rel_err(ys["recurrent"], ys["parallel"]),
                          rel_err(ys["chunkwise"], ys["parallel"]))
    assert errors[1e-6] > 1e-6
    assert errors[0.0] < TOL64


def test_state_continues_across_modes(rel_err):
    layer = msr(qk_gain=4.0)
    x = x_input()
    whole, whole_state = layer(x)
    a, state = layer(x[:, :8], "chunkwise", 3)
    b, state = layer(x[:, 8:12], "recurrent", state=state)
    c, state = layer(x[:, 12:], "parallel", state=state)
    assert rel_err(torch.cat((a, b, c), dim=1), whole) < TOL64
    assert state.n == whole_state.n == T
    assert rel_err(state.S, whole_state.S) < TOL64


def test_rotation_uses_the_state_position(rel_err):
    """The same token at another position gives another output: the offset reaches the rotation."""
    layer = msr()
    x = x_input()
    _, state = layer(x[:, :5])
    moved = RetentionState(state.S, state.z, state.n + 3)
    y_true, _ = layer(x[:, 5:6], "recurrent", state=state)
    y_moved, _ = layer(x[:, 5:6], "recurrent", state=moved)
    assert rel_err(y_moved, y_true) > 1e-3


def test_rmsnorm_formula():
    x = torch.randn(3, 7, dtype=torch.float64)
    norm = RMSNorm(7, eps=1e-3)
    with torch.no_grad():
        norm.weight.copy_(torch.arange(7.0))
    expected = x / torch.sqrt((x ** 2).mean(-1, keepdim=True)
                              + 1e-3) * torch.arange(7.0, dtype=torch.float64)
    assert torch.allclose(norm(x), expected, rtol=1e-14, atol=0)
    assert RMSNorm(7, affine=False).weight is None


def test_feed_forward_plain_and_gated():
    torch.manual_seed(0)
    x = torch.randn(2, 3, D, dtype=torch.float64)
    plain = FeedForward(D, 2 * D).double()
    assert torch.allclose(plain(x), F.gelu(x @ plain.fc1.weight.T) @ plain.fc2.weight.T, rtol=1e-14,
                          atol=1e-15)
    glu = FeedForward(D, 40, activation="swish", gated=True).double()
    expected = (F.silu(x @ glu.fc1.weight.T) * (x @ glu.gate.weight.T)) @ glu.fc2.weight.T
    assert torch.allclose(glu(x), expected, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_block_is_equation_9(variant, rel_err):
    config = RetNetConfig(d_model=D, num_heads=HEADS, variant=variant)
    torch.manual_seed(0)
    block = RetNetBlock(config).double()
    x = x_input()
    out, _ = block(x)
    y = block.retention(block.retention_norm(x))[0] + x
    assert rel_err(out, block.ffn(block.ffn_norm(y)) + y) < 1e-14


def test_paper_block_spends_12_d_squared():
    block = RetNetBlock(RetNetConfig(d_model=D, num_heads=HEADS))
    norms = 2 * 2 * D                                    # two LayerNorms, weight and bias
    assert count_parameters(block) == 12 * D * D + norms


# ---------------------------------------------------------------- bad input


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="num_heads"):
        MultiScaleRetention(30, 4)
    with pytest.raises(ValueError, match="even"):
        MultiScaleRetention(12, 4)
    with pytest.raises(ValueError, match="normalisation"):
        MultiScaleRetention(D, HEADS, normalisation="none")
    with pytest.raises(ValueError, match="norm"):
        MultiScaleRetention(D, HEADS, head_norm="batchnorm")
    with pytest.raises(ValueError, match="gamma"):
        MultiScaleRetention(D, HEADS, gamma=[0.9, 0.8])
    with pytest.raises(ValueError, match="activation"):
        FeedForward(D, D, activation="tanh")
    with pytest.raises(ValueError, match="swish_gate must be True or False, got 0"):
        MultiScaleRetention(D, HEADS, swish_gate=0)
    with pytest.raises(ValueError, match="group_norm must be True or False, got 'no'"):
        MultiScaleRetention(D, HEADS, group_norm="no")
    layer = msr()
    with pytest.raises(ValueError, match="x must"):
        layer(torch.zeros(2, T, D + 1, dtype=torch.float64))
    with pytest.raises(TypeError, match="state"):
        layer(x_input(), state=torch.zeros(1))
    with pytest.raises(ValueError, match="mode"):
        layer(x_input(), "causal")


def test_forward_hooks_on_the_layers_fire_in_a_model_forward():
    from retnet_ref.model import RetNet, RetNetConfig

    model = RetNet(RetNetConfig.preset("tiny"))
    seen = []
    hooks = [block.retention.register_forward_hook(lambda module, args, output: seen.append(module))
             for block in model.blocks]
    with torch.no_grad():
        model(torch.zeros(1, 3, dtype=torch.long), "chunkwise", chunk_size=2)
    for hook in hooks:
        hook.remove()
    assert seen == [block.retention for block in model.blocks]

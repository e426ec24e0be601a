"""Normalised retention (paper §2.2) in three forms: exact agreement, state hand-off, torchscale
scales."""
from __future__ import annotations

import math

import pytest
import torch

from retnet_ref.decay import decay_row_sum, gamma_schedule
from retnet_ref.normalisation import normalised_retention, row_sums
from retnet_ref.retention import parallel_retention
from retnet_ref.state import RetentionState

B, H, T, D_K, D_V = 2, 3, 23, 8, 5
GAMMA = gamma_schedule(H).tolist()
TOL64 = 1e-12   # float64: sums of ≤ T products, ~T·2^-53 (measured ≤ 5e-16)
FORMS = [("parallel", None), ("recurrent", None), ("chunkwise", 1), ("chunkwise", 4),
         ("chunkwise", 7),
         ("chunkwise", T), ("chunkwise", 64)]


def inputs(seed=0, q_scale=3.0, length=T, dtype=torch.float64, requires_grad=False):
    """q scaled up so that normalisation (3)'s max(|Σ R|, 1) is active in some rows and not in
    others."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, length, D_K, generator=gen, dtype=dtype) * q_scale
    k = torch.randn(B, H, length, D_K, generator=gen, dtype=dtype)
    v = torch.randn(B, H, length, D_V, generator=gen, dtype=dtype)
    return [x.requires_grad_(requires_grad) for x in (q, k, v)]


def paper_parallel(q, k, v, gamma):
    """§2.2 written out on the full matrices: D̃ = D / sqrt(row sums), R = QK^T/√d_k ⊙ D̃, R̃ = R /
    max(|Σ R|, 1)."""
    n = torch.arange(q.shape[2], dtype=torch.float64)
    lag = n[:, None] - n[None, :]
    g = torch.tensor(gamma, dtype=torch.float64)[:, None, None]
    D = torch.where(lag >= 0, g ** lag.clamp(min=0), torch.zeros(()))
    D_tilde = D / D.sum(-1, keepdim=True).sqrt()
    R = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1]) * D_tilde
    R_tilde = R / R.sum(-1, keepdim=True).abs().clamp(min=1.0)
    return R_tilde @ v


def test_normalisation_is_active_in_the_test_inputs():
    """The clamp of normalisation (3) bites in some rows and not in others (else the test proves
    less)."""
    q, k, v = inputs()
    o, _ = normalised_retention(q, k, v, GAMMA)
    row_sum = paper_parallel(q, k, torch.ones_like(v[..., :1]), GAMMA)   # Σ_m R̃_nm
    active = (row_sum.abs() > 1 - 1e-9).float().mean().item()
    assert 0.1 < active < 0.9, active


@pytest.mark.parametrize("mode,chunk_size", FORMS)
def test_every_form_equals_the_paper_parallel_normalisation(mode, chunk_size, rel_err):
    q, k, v = inputs()
    o, state = normalised_retention(q, k, v, GAMMA, mode, chunk_size)
    assert rel_err(o, paper_parallel(q, k, v, GAMMA)) < TOL64
    assert state.n == T


def test_gradients_agree_between_forms(rel_err):
    grads = {}
    for mode, chunk_size in [("parallel", None), ("recurrent", None), ("chunkwise", 5)]:
        q, k, v = inputs(requires_grad=True)
        o, state = normalised_retention(q, k, v, GAMMA, mode, chunk_size)
        weight = torch.linspace(-1, 1, o.numel(), dtype=o.dtype).view_as(o)
        ((o * weight).sum() + state.S.sum() + state.z.sum()).backward()
        grads[mode] = [x.grad for x in (q, k, v)]
    for mode in ("recurrent", "chunkwise"):
        for g, g_ref in zip(grads[mode], grads["parallel"]):
            assert rel_err(g, g_ref) < TOL64


@pytest.mark.parametrize("first,second,third", [
    (("chunkwise", 4), ("recurrent", None), ("parallel", None)),
    (("parallel", None), ("chunkwise", 3), ("recurrent", None)),
    (("recurrent", None), ("parallel", None), ("chunkwise", 2)),
])
def test_state_hands_off_between_forms(first, second, third, rel_err):
    q, k, v = inputs()
    whole, whole_state = normalised_retention(q, k, v, GAMMA)
    state, parts = None, []
    for (mode, chunk_size), (start, stop) in zip((first, second, third),
                                                 ((0, 10), (10, 15), (15, T))):
        part, state = normalised_retention(q[:, :, start:stop], k[:, :, start:stop],
                                           v[:, :, start:stop],
                                           GAMMA, mode, chunk_size, state)
        parts.append(part)
    assert rel_err(torch.cat(parts, dim=2), whole) < TOL64
    assert rel_err(state.S, whole_state.S) < TOL64 and rel_err(state.z, whole_state.z) < TOL64
    assert state.n == whole_state.n == T


def test_state_is_the_plain_sums():
    """S = Σ γ^(T-1-m) k_m^T v_m and z = Σ γ^(T-1-m) k_m, written out."""
    q, k, v = inputs()
    _, state = normalised_retention(q, k, v, GAMMA, "chunkwise", 6)
    g = torch.tensor(GAMMA, dtype=torch.float64)[:, None]
    weights = g ** torch.arange(T - 1, -1, -1, dtype=torch.float64)                  # (H, T)
    S = torch.einsum("ht,bhtk,bhtv->bhkv", weights, k, v)
    z = torch.einsum("ht,bhtk->bhk", weights, k)
    assert torch.allclose(state.S, S, rtol=1e-12, atol=1e-12)
    assert torch.allclose(state.z, z, rtol=1e-12, atol=1e-12)


def test_row_sums_at_an_offset_match_the_closed_form():
    log_g = torch.log(torch.tensor(GAMMA + [1.0], dtype=torch.float64))
    full = decay_row_sum(40, log_g)
    assert torch.allclose(row_sums(15, log_g, offset=25), full[:, 25:], rtol=1e-13, atol=0)
    assert torch.equal(row_sums(15, log_g), full[:, :15])
    assert row_sums(3, log_g, offset=25)[-1].tolist() == [26.0, 27.0, 28.0]    # γ = 1: c_n = n + 1


def test_torchscale_rows_are_positive_multiples_of_the_exact_rows():
    """Every torchscale mode scales whole rows: the ratio to the exact output is one positive number
    per row."""
    q, k, v = inputs()
    exact, _ = normalised_retention(q, k, v, GAMMA)
    for mode, chunk_size in [("parallel", None), ("recurrent", None), ("chunkwise", 4)]:
        out, _ = normalised_retention(q, k, v, GAMMA, mode, chunk_size, normalisation="torchscale")
        ratio = out / exact
        assert (ratio > 0).all()
        assert torch.allclose(ratio, ratio[..., :1].expand_as(ratio), rtol=1e-10, atol=0)


def test_torchscale_recurrent_keeps_only_the_first_two_normalisations(rel_err):
    q, k, v = inputs()
    out, _ = normalised_retention(q, k, v, GAMMA, "recurrent", normalisation="torchscale")
    c = decay_row_sum(T, torch.log(torch.tensor(GAMMA, dtype=torch.float64)))
    plain = parallel_retention(q, k, v, GAMMA)
    assert rel_err(out, plain / (D_K * c[..., None]).sqrt()) < TOL64


def test_torchscale_modes_differ_where_the_clamp_bites(rel_err):
    q, k, v = inputs()
    par, _ = normalised_retention(q, k, v, GAMMA, "parallel", normalisation="torchscale")
    rec, _ = normalised_retention(q, k, v, GAMMA, "recurrent", normalisation="torchscale")
    assert rel_err(rec, par) > 0.1


def test_detached_normaliser_changes_gradients_not_values(rel_err):
    outs, grads = [], []
    for detach in (False, True):
        q, k, v = inputs(requires_grad=True)
        o, _ = normalised_retention(q, k, v, GAMMA, detach_normaliser=detach)
        o.sum().backward()
        outs.append(o.detach())
        grads.append(q.grad)
    assert torch.equal(outs[0], outs[1])
    assert rel_err(grads[1], grads[0]) > 1e-3


def test_low_precision_keeps_the_state_in_float32():
    q, k, v = inputs(dtype=torch.bfloat16)
    o, state = normalised_retention(q, k, v, GAMMA, "chunkwise", 8)
    assert o.dtype == torch.bfloat16 and state.S.dtype == state.z.dtype == torch.float32


# ---------------------------------------------------------------- bad input


def test_unknown_mode_and_bad_chunk_sizes_are_rejected():
    q, k, v = inputs()
    with pytest.raises(ValueError, match="mode"):
        normalised_retention(q, k, v, GAMMA, "sequential")
    with pytest.raises(ValueError, match="chunk_size"):
        normalised_retention(q, k, v, GAMMA, "chunkwise")
    with pytest.raises(ValueError, match="chunk_size"):
        normalised_retention(q, k, v, GAMMA, "chunkwise", 0)
    with pytest.raises(TypeError, match="chunk_size"):
        normalised_retention(q, k, v, GAMMA, "chunkwise", 2.0)
    with pytest.raises(ValueError, match="chunk_size"):
        normalised_retention(q, k, v, GAMMA, "parallel", 4)
    with pytest.raises(ValueError, match="normalisation"):
        normalised_retention(q, k, v, GAMMA, normalisation="paper")


def test_bad_states_are_rejected():
    q, k, v = inputs()
    with pytest.raises(TypeError, match="state"):
        normalised_retention(q, k, v, GAMMA, state=torch.zeros(B, H, D_K, D_V, dtype=torch.float64))
    other_batch = RetentionState.zeros(B + 1, H, D_K, D_V, torch.float64)
    with pytest.raises(ValueError, match="state.S"):
        normalised_retention(q, k, v, GAMMA, state=other_batch)
    bad_z = RetentionState(torch.zeros(B, H, D_K, D_V, dtype=torch.float64), torch.zeros(B, H, D_V),
                           0)
    with pytest.raises(ValueError, match="state.z"):
        normalised_retention(q, k, v, GAMMA, state=bad_z)
    negative = RetentionState.zeros(B, H, D_K, D_V, torch.float64)
    negative.n = -1
    with pytest.raises(ValueError, match="state.n"):
        normalised_retention(q, k, v, GAMMA, state=negative)


def test_torchscale_chunkwise_scale_written_out_for_two_chunks(naive_retention, rel_err):
    """torchscale's chunkwise divisor (retnet_ref.torchscale) by hand, C = 2, one head, d_k = 2, γ =
    1/2:

        scale_r = √d_k sqrt(c_r) max(inner_r, cross_i),   c_r = Σ_{j≤r} γ^j (the chunk's own row
        sums) inner_r = max(Σ_{m in chunk, m ≤ n} |q_n·k_m| γ^(n-m) / (√d_k sqrt(c_r)), 1)
        cross_i = max(max_j Σ_l |S_{i-1}|_{lj} / (√d_k c_{C-1}), 1),   S_{i-1} the plain state at
        the chunk's start

    After chunk 0, S = γ k_0^T v_0 + k_1^T v_1 = [[0], [8]], so cross_1 = 8 / (√2 · 1.5) ≈ 3.8 beats
    inner in both rows of chunk 1: the cross term decides them."""
    q = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, -1.0]]
    k = [[3.0, 1.0], [2.0, -2.0], [1.0, 0.0], [0.0, 1.0]]
    v = [[4.0], [-3.0], [1.0], [2.0]]
    g, C, d_k = 0.5, 2, 2
    c = [sum(g ** j for j in range(r + 1)) for r in range(C)]                 # 1, 1.5
    S = [0.0, 0.0]                                                            # (d_k,), d_v = 1
    scale, decided_by_cross = [], []
    for start in (0, C):
        cross = max(sum(abs(s) for s in S) / (math.sqrt(d_k) * c[C - 1]), 1.0)
        for r in range(C):
            n = start + r
            row_norm = math.sqrt(d_k) * math.sqrt(c[r])
            inner = max(sum(abs(q[n][0] * k[m][0] + q[n][1] * k[m][1]) * g ** (n - m)
                            for m in range(start, n + 1)) / row_norm, 1.0)
            scale.append(row_norm * max(inner, cross))
            decided_by_cross.append(cross > inner)
        S = [g ** C * S[i] + sum(g ** (start + C - 1 - m) * k[m][i] * v[m][0]
                                 for m in range(start, start + C))
             for i in range(d_k)]
    assert decided_by_cross == [False, False, True, True]
    expected = naive_retention(q, k, v, g) / torch.tensor(scale,
                                                          dtype=torch.float64)[:, None].numpy()
    x = [torch.tensor(t, dtype=torch.float64)[None, None] for t in (q, k, v)]   # (1, 1, 4, d)
    out, _ = normalised_retention(*x, [g], "chunkwise", C, normalisation="torchscale")
    assert rel_err(out[0, 0], expected) < 1e-14

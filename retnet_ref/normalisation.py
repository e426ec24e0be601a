"""Normalised retention: the paper's three score normalisations, exact in all three forms (paper
§2.2).

The paper normalises the retention scores three times (§2.2, "Retention Score Normalization"):

    (1) scores / √d_k
    (2) D̃_nm = D_nm / sqrt(c_n),            c_n = Σ_{i≤n} D_ni = (1 - γ^(n+1)) / (1 - γ)
    (3) R_nm = (q_n · k_m / √d_k) D̃_nm,     R̃_nm = R_nm / max(|Σ_i R_ni|, 1)

and writes them for the parallel form only. Every factor divides a whole output row n by a positive
number, so the normalised output is the plain (unnormalised) retention o_n = Σ_m γ^(n-m) (q_n·k_m)
v_m divided by one scalar per row. The row sum of (3) is plain retention too, with a value column of
ones:

    Σ_i R_ni = (q_n · z_{n+1}) / (√d_k sqrt(c_n)),   z_{n+1} = γ z_n + k_n   (the running key sum)

(z_n: the key sum after n tokens, like the state S_n), and with a_n = q_n · z_{n+1} the three
factors together are

    õ_n = o_n / (√d_k sqrt(c_n) max(|a_n| / (√d_k sqrt(c_n)), 1)) = o_n / max(|a_n|, sqrt(d_k c_n)).

So every form computes o and a in one call of plain retention on [v | 1] (retnet_ref.retention),
carries the state [S | z] and the number n of tokens seen (c_n at absolute positions), and divides.
The forms hand off exactly: prefill with one, continue with another. A decode step (one token,
`normalised_step_`) updates S and z in place instead, without joining them: a concatenation there
would copy every layer's whole state for every token.

`normalisation="torchscale"` reproduces instead the row scales of the official code (torchscale
0.3.0), which differ per mode: retnet_ref.torchscale.
"""
from __future__ import annotations

import torch

from ._checks import check_choice, check_torch_qkv
from .decay import chunk_decay, decay_row_sum, geometric_sum, xi, zeta
from .retention import (
    _chunkwise,
    _parallel,
    _recurrent,
    accumulation_dtype,
    decay_and_add,
    decay_gap,
    exact_accumulation,
    log_gamma_per_head,
)
from .state import RetentionState, check_mode
from .torchscale import torchscale_row_scale

NORMALISATIONS = ("exact", "torchscale")


def row_sums(length: int, log_g: torch.Tensor, offset=0) -> torch.Tensor:
    """c at absolute positions offset..offset+length-1: (H, T), float64.

    The row sums split like the state does (the same identity as Eq. 7's cross-chunk term):
        c_{o+t} = c_t + γ^(t+1) c_{o-1},   c_{o-1} = (1 - γ^o) / (1 - γ)   (o when γ = 1)
    so the cost is O(T) whatever the offset (an int or a 0-d tensor on log_g's device).
    """
    # c_{o-1} = Σ_{i<o} γ^i
    before = geometric_sum(offset, log_g)                            # (H,)
    return decay_row_sum(length, log_g) + xi(length, log_g) * before[:, None]   # (H, T)


def _parallel_with_state(q, k, v, log_g, S0):
    """Eq. (5) for the whole input plus an initial state: (o, S at the end), like one chunk of Eq.
    (7)."""
    acc = accumulation_dtype(q.dtype)
    T = q.shape[2]
    o = _parallel(q, k, v, log_g).to(acc)                            # (B, H, T, d_v)
    with exact_accumulation(q):
        # S_T = K^T (V ⊙ ζ) + γ^T S_0,  ζ_m = γ^(T-1-m)
        # (B, H, d_k, d_v)
        S_end = k.to(acc).transpose(-1, -2) @ (v.to(acc) * zeta(T, log_g).to(acc)[..., None])
        if S0 is not None:
            S_end = S_end + chunk_decay(T, log_g).to(acc)[:, None, None] * S0
            # o_n += γ^(n+1) q_n S_0
            o = o + (q.to(acc) @ S0) * xi(T, log_g).to(acc)[..., None]   # (B, H, T, d_v)
    return o, S_end


def plain_retention_with_key_sum(q, k, v, log_g, mode, chunk_size=None, state=None,
                                 backend="torch"):
    """Unnormalised retention o and a_n = q_n · z_{n+1} in one call on [v | 1] → (o, a, S, z).

    o (B, H, T, d_v) and a (B, H, T) in the accumulation dtype; S, z the carried sums at the end
    (contiguous, ready to be updated in place by decode steps). log_g: log γ per head, (H,) float64.
    backend "triton" runs the chunkwise mode on the Triton kernels (retnet_ref.kernels), the other
    modes as they are.
    """
    acc = accumulation_dtype(q.dtype)
    ones = torch.ones(*v.shape[:3], 1, dtype=v.dtype, device=v.device)        # (B, H, T, 1)
    v_ones = torch.cat((v, ones), dim=-1)                                     # (B, H, T, d_v+1)
    # (B, H, d_k, d_v+1)
    S_z = None if state is None else torch.cat((state.S, state.z[..., None]), dim=-1).to(acc)
    if mode == "parallel":
        out, S_z = _parallel_with_state(q, k, v_ones, log_g, S_z)
    elif mode == "recurrent":
        S_z = S_z if S_z is not None else q.new_zeros(*q.shape[:2], q.shape[3], v.shape[3] + 1,
                                                      dtype=acc)
        out, S_z = _recurrent(q, k, v_ones, log_g, S_z)
    elif backend == "triton":
        from .kernels.chunkwise import _chunkwise as triton_chunkwise
        out, S_z = triton_chunkwise(q, k, v_ones, log_g, chunk_size, S_z)
    else:
        out, S_z = _chunkwise(q, k, v_ones, log_g, chunk_size, S_z)
    out = out.to(acc)
    return out[..., :-1], out[..., -1], S_z[..., :-1].contiguous(), S_z[..., -1].contiguous()


def exact_row_scale(a, c, d_k):
    """The three normalisations as one divisor per row: max(|a_n|, sqrt(d_k c_n)) (module
    docstring)."""
    return torch.maximum(a.abs(), (d_k * c).sqrt())


def normalised_retention(q, k, v, gamma, mode="parallel", chunk_size=None, state=None,
                         normalisation="exact", detach_normaliser=False):
    """Retention with the paper's three normalisations (§2.2) in any form → (õ, RetentionState).

    q, k (B, H, T, d_k) already rotated, v (B, H, T, d_v), gamma one value per head.
    mode "parallel" (Eq. 5), "recurrent" (Eq. 6) or "chunkwise" (Eq. 7, with chunk_size).
    state: a RetentionState (None = start of the sequence); positions continue from state.n.
    normalisation "exact" (all modes give the same õ) or "torchscale" (the official per-mode
    scales). detach_normaliser: stop gradients through the data-dependent divisor (the official code
    does). õ has q's dtype; the returned state the accumulation dtype (float32 or wider).
    """
    check_torch_qkv(q, k, v)
    chunk_size = check_mode(mode, chunk_size)
    check_choice(normalisation, NORMALISATIONS, "normalisation")
    if state is not None:
        if not isinstance(state, RetentionState):
            raise TypeError(f"state must be a RetentionState or None, got {type(state).__name__}")
        state.check(*q.shape[:2], q.shape[3], v.shape[3], q.device)
    return _normalised(q, k, v, log_gamma_per_head(gamma, q), mode, chunk_size, state,
                       normalisation,
                       detach_normaliser)


def _normalised(q, k, v, log_g, mode, chunk_size, state, normalisation, detach_normaliser,
                backend="torch"):
    """normalised_retention's body: arguments already checked, log_g (H,) float64 on q's device."""
    d_k = q.shape[-1]
    offset = 0 if state is None else state.n
    o, a, S, z = plain_retention_with_key_sum(q, k, v, log_g, mode, chunk_size, state, backend)
    c = row_sums(q.shape[2], log_g, offset).to(o.dtype)       # (H, T)
    if normalisation == "exact" or mode == "parallel":        # torchscale's parallel scale is exact
        scale = exact_row_scale(a, c, d_k)                    # (B, H, T)
    else:
        S0 = state.S.to(o.dtype) if state is not None else torch.zeros_like(S)
        scale = torchscale_row_scale(q, k, v, c, d_k, log_g, mode, chunk_size, S0).expand_as(a)
    if detach_normaliser:
        scale = scale.detach()
    # õ_n = o_n / scale_n
    out = o / scale[..., None]                                # (B, H, T, d_v)
    return out.to(q.dtype), RetentionState(S, z, offset + q.shape[2])


def step_decay_factors(log_g: torch.Tensor, position, d_k: int, dtype: torch.dtype):
    """What one decode step at `position` needs of the decay: the gap 1 - γ (H, 1, 1), and the floor
    of the row divisor, sqrt(d_k c_n) (H, 1) (normalisations (1) and (2); exact_row_scale's second
    term)."""
    return decay_gap(log_g, dtype), (d_k * row_sums(1, log_g, position)).sqrt().to(dtype)


def normalised_step_(q, k, v, state: RetentionState, gap, floor, normalisation="exact"):
    """One token of normalised recurrent retention, the state updated in place → õ (B, H, 1, d_v).

    q, k (B, H, 1, d_k) already rotated at position state.n, v (B, H, 1, d_v); gap and floor from
    step_decay_factors at that position. The same numbers as `normalised_retention(...,
    "recurrent")` for one token, but S, z and n are overwritten instead of copied (no [S | z]
    concatenation), and nothing is read on the host: a decode step built from it can be captured in
    a CUDA graph.
    """
    k_n, v_n = k[:, :, 0], v[:, :, 0]                                   # (B, H, d), the input dtype
    q_n = q[:, :, 0].to(state.S.dtype)                                  # (B, H, d_k)
    # S_{n+1} = γ S_n + k_n^T v_n;  z_{n+1} = γ z_n + k_n  (summed in the state's dtype)
    decay_and_add(state.S, k_n, v_n, gap, inplace=True)
    state.z.addcmul_(gap[..., 0], state.z, value=-1.0).add_(k_n)
    # o_n = q_n S_{n+1};  a_n = q_n · z_{n+1}
    o = q_n[..., None, :] @ state.S                                     # (B, H, 1, d_v)
    a = q_n[..., None, :] @ state.z[..., None]                          # (B, H, 1, 1)
    # õ_n = o_n / max(|a_n|, sqrt(d_k c_n)), or torchscale's recurrent o_n / sqrt(d_k c_n)
    scale = torch.maximum(a.abs(), floor[...,
                                         None]) if normalisation == "exact" else floor[..., None]
    state.n.add_(1)
    return (o / scale).to(q.dtype)                                      # (B, H, 1, d_v)

"""Retention in PyTorch: batched, one γ per head, the three forms of the paper (Eq. 5, 6, 7).

Shapes: q, k (B, H, T, d_k), v (B, H, T, d_v), state (B, H, d_k, d_v); gamma a length-H sequence or
tensor. Unnormalised retention, exactly as `retnet_ref.reference`, head by head:

    o_n = Σ_{m≤n} γ^(n-m) (q_n · k_m) v_m + γ^(n+1) q_n S_0

Precision: log γ is taken in float64; decay factors and the state live in the "accumulation dtype",
float32 for bf16/fp16 inputs and the input dtype otherwise; the products q k^T and (scores) v run in
the input dtype (tensor cores on a GPU) and the output has the input dtype.
"""
from __future__ import annotations

import torch

from ._checks import check_chunk_size, check_gammas, check_torch_qkv, check_torch_state
from .decay import chunk_decay, decay_matrix, xi, zeta


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half-precision inputs, the input dtype for float32 and float64."""
    return torch.promote_types(dtype, torch.float32)


def _log_gamma(gamma, q: torch.Tensor) -> torch.Tensor:
    """log γ per head, float64, on q's device (float32 where the device has no float64)."""
    values = check_gammas(gamma, q.shape[1])
    dtype = torch.float32 if q.device.type == "mps" else torch.float64
    return torch.log(torch.as_tensor(values, dtype=torch.float64)).to(q.device, dtype)   # (H,)


def _initial_state(state, q, v, acc):
    state = check_torch_state(state, q, v)
    if state is None:
        return q.new_zeros(q.shape[0], q.shape[1], q.shape[3], v.shape[3], dtype=acc)   # (B, H, d_k, d_v)
    return state.to(acc)


def _decayed_scores(q, k, decay, acc):
    """(q k^T) ⊙ D in the accumulation dtype: (B, H, L, L)."""
    return (q @ k.transpose(-1, -2)).to(acc) * decay


def parallel_retention(q, k, v, gamma):
    """Parallel form (Eq. 5): O = (Q K^T ⊙ D) V, D_nm = γ^(n-m) for n ≥ m, else 0.  O(T² d) time."""
    check_torch_qkv(q, k, v)
    acc = accumulation_dtype(q.dtype)
    D = decay_matrix(q.shape[2], _log_gamma(gamma, q)).to(acc)     # (H, T, T)
    scores = _decayed_scores(q, k, D, acc)                          # (B, H, T, T)
    # O = (Q K^T ⊙ D) V
    return scores.to(v.dtype) @ v                                   # (B, H, T, d_v)


def recurrent_retention(q, k, v, gamma, state=None):
    """Recurrent form (Eq. 6): S_n = γ S_{n-1} + k_n^T v_n, o_n = q_n S_n.  O(1) state per token.

    Returns (o, S_T); S_T has the accumulation dtype.
    """
    check_torch_qkv(q, k, v)
    acc = accumulation_dtype(q.dtype)
    S = _initial_state(state, q, v, acc)                            # (B, H, d_k, d_v)
    # the gap 1 - γ, from log γ in float64: rounding it to acc errs by 2^-24 of the gap, not of γ,
    # so the decay applied at every step does not drift with the head's memory 1/(1 - γ)
    gap = (-torch.expm1(_log_gamma(gamma, q))).to(acc)[:, None, None]   # (H, 1, 1)
    qa, ka, va = q.to(acc), k.to(acc), v.to(acc)
    out = []
    for n in range(q.shape[2]):
        # S_n = γ S_{n-1} + k_n^T v_n, written S_{n-1} - (1 - γ) S_{n-1} + k_n^T v_n
        S = S - gap * S + ka[:, :, n, :, None] * va[:, :, n, None, :]   # (B, H, d_k, d_v)
        # o_n = q_n S_n
        out.append((qa[:, :, n, None, :] @ S).squeeze(-2))        # (B, H, d_v)
    o = torch.stack(out, dim=2) if out else v.new_zeros(v.shape, dtype=acc)   # (B, H, T, d_v)
    return o.to(v.dtype), S


def chunkwise_retention(q, k, v, gamma, chunk_size, state=None):
    """Chunkwise form (Eq. 7, arXiv v4): matrix products inside a chunk, a loop over chunks.

        O_[i] = (Q_[i] K_[i]^T ⊙ D) V_[i] + (Q_[i] R_{i-1}) ⊙ ξ,     ξ_r = γ^(r+1)
        R_i   = K_[i]^T (V_[i] ⊙ ζ) + γ^L R_{i-1},                    ζ_r = γ^(L-r-1)

    L is the chunk's own length (the last chunk may be shorter).  Returns (o, R_last).
    """
    check_torch_qkv(q, k, v)
    chunk_size = check_chunk_size(chunk_size)
    acc = accumulation_dtype(q.dtype)
    lg = _log_gamma(gamma, q)                                       # (H,)
    R = _initial_state(state, q, v, acc)                            # (B, H, d_k, d_v)
    factors = {}                                                    # per chunk length: D, ξ, ζ, γ^L

    def chunk_factors(L):
        if L not in factors:
            factors[L] = (decay_matrix(L, lg).to(acc),                    # (H, L, L)
                          xi(L, lg).to(acc)[..., None],                   # (H, L, 1)
                          zeta(L, lg).to(acc)[..., None],                 # (H, L, 1)
                          chunk_decay(L, lg).to(acc)[:, None, None])      # (H, 1, 1)
        return factors[L]

    out = []
    for start in range(0, q.shape[2], chunk_size):
        qc, kc, vc = (x[:, :, start:start + chunk_size] for x in (q, k, v))   # (B, H, L, d)
        D, xi_c, zeta_c, gamma_L = chunk_factors(qc.shape[2])
        # inner-chunk term: (Q K^T ⊙ D) V
        inner = _decayed_scores(qc, kc, D, acc).to(v.dtype) @ vc      # (B, H, L, d_v)
        # cross-chunk term: (Q R_{i-1}) ⊙ ξ
        cross = (qc.to(acc) @ R) * xi_c                                 # (B, H, L, d_v)
        out.append(inner.to(acc) + cross)
        # R_i = K^T (V ⊙ ζ) + γ^L R_{i-1}
        R = kc.to(acc).transpose(-1, -2) @ (vc.to(acc) * zeta_c) + gamma_L * R   # (B, H, d_k, d_v)
    o = torch.cat(out, dim=2) if out else v.new_zeros(v.shape, dtype=acc)   # (B, H, T, d_v)
    return o.to(v.dtype), R

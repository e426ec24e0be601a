"""Deliberately broken chunkwise retention, one known mistake each, for the conformance report to
catch.

    python -m retnet_ref verify --impl examples/conformance/broken.py:no_zeta --dtypes float64

`chunk_loop` is Eq. 7 one chunk at a time; `flaw` switches on one mistake:
    no_zeta             R_i = K_[i]^T V_[i] + γ^C R_(i-1): ζ left out (arXiv v1 and the pseudocode
                        figure)
    float32_chunk_decay γ^L taken as a float32 γ to the power L, multiplied into the state at every
    chunk
    leaky_mask          the causal mask built with tril(diagonal=1): row n also sees token n + 1
    ragged_end          ξ of a short last chunk counted from the end of a full chunk, γ^(C-L+r+1)
The report's diagnoses name each; with flaw=None every row passes.
"""
from functools import partial

import torch

from retnet_ref.conformance import Conventions, Implementation

FLAWS = ("no_zeta", "float32_chunk_decay", "leaky_mask", "ragged_end")


def chunk_loop(q, k, v, gamma, form, chunk_size=None, state=None, flaw=None):
    """Chunkwise retention (B, H, T, d), chunk by chunk, with at most one flaw → (o, R_last)."""
    B, H, T, d_k = q.shape
    acc = torch.promote_types(q.dtype, torch.float32)
    log_g = torch.log(gamma.to(q.device, torch.float64))[:, None]          # (H, 1)
    R = q.new_zeros(B, H, d_k, v.shape[-1], dtype=acc) if state is None else state.to(acc)
    out = []
    for start in range(0, T, chunk_size):
        qc, kc, vc = (x[:, :, start:start + chunk_size] for x in (q, k, v))  # (B, H, L, d)
        L = qc.shape[2]
        r = torch.arange(L, dtype=torch.float64, device=q.device)           # (L,)
        lag = (r[:, None] - r[None, :]).clamp(min=0)                        # (L, L)
        mask = torch.ones(L, L, device=q.device).tril(1 if flaw == "leaky_mask" else 0)
        # D_nm = γ^(n-m) for n ≥ m, else 0
        D = (torch.exp(log_g[:, :, None] * lag) * mask).to(q.dtype)        # (H, L, L)
        inner = ((qc @ kc.transpose(-1, -2)) * D) @ vc                      # (B, H, L, d_v)
        # ξ_r = γ^(r+1); the ragged_end flaw counts r from the end of a full chunk
        shift = chunk_size - L if flaw == "ragged_end" else 0
        xi = torch.exp(log_g * (r + 1 + shift)).to(acc)[..., None]          # (H, L, 1)
        out.append((inner.to(acc) + (qc.to(acc) @ R) * xi).to(q.dtype))
        # ζ_r = γ^(L-r-1)
        # (H, L) or (L,)
        zeta = torch.ones_like(r) if flaw == "no_zeta" else torch.exp(log_g * (L - 1 - r))
        # γ^L from float64 log γ, or (the flaw) a float32 γ raised to L, rounded anew for every
        # chunk
        decay = (
            gamma.float().to(q.device) ** L
            if flaw == "float32_chunk_decay"
            else torch.exp(L * log_g[:, 0])
        )
        # (B, H, d_k, d_v)
        U = kc.to(acc).transpose(-1, -2) @ (vc.to(acc) * zeta.to(acc)[..., None])
        # R_i = K_[i]^T (V_[i] ⊙ ζ) + γ^L R_(i-1)
        R = U + decay.to(acc)[:, None, None] * R
    return torch.cat(out, dim=2), R                                         # (B, H, T, d_v)


def broken(flaw):
    return Implementation(partial(chunk_loop, flaw=flaw), Conventions(forms=("chunkwise",)),
                          f"broken: {flaw}")


unbroken = broken(None)
no_zeta, float32_chunk_decay, leaky_mask, ragged_end = (broken(flaw) for flaw in FLAWS)

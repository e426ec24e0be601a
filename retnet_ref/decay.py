"""Decay: the γ schedules of the heads and every decay factor built from them.

All factors are powers γ^p with p ≥ 0, computed as exp(p · log γ) — never by repeated products or
powers of a rounded γ — with log γ taken in float64 (log1p of -(1 - γ) for the schedules, where
1 - γ is known exactly). Each function accepts log γ either as a NumPy value/array (float64 result)
or as a torch tensor of shape (H,) (result on its device, in its dtype, with heads first).

Paper: Sun et al. 2023, Eq. (5) for D, Eq. (7) for ζ, ξ and γ^B, §2.2 for the row-sum normaliser.
"""
from __future__ import annotations

import numpy as np
import torch

from ._checks import check_choice, check_gamma_value, check_positive_int

GAMMA_SCHEDULES = ("default", "linspace")   # the kinds of gamma_gap_schedule

# ---------------------------------------------------------------- schedules (paper §2.2, §3.1)


def gamma_gap_schedule(num_heads: int, kind: str = "default") -> np.ndarray:
    """1 - γ_h for each head, in float64, exact before any rounding of γ itself.

    kind="default":  1 - γ_h = 2^(-5-h)                     (the paper's Eq. 8 setting)
    kind="linspace": 1 - γ_h = exp(linspace(log 1/32, log 1/512, H))  (the paper's experiments)
    """
    check_positive_int(num_heads, "num_heads")
    if check_choice(kind, GAMMA_SCHEDULES, "kind") == "default":
        return np.exp2(-5.0 - np.arange(num_heads, dtype=np.float64))
    return np.exp(np.linspace(np.log(1 / 32), np.log(1 / 512), num_heads))


def log_gamma_schedule(num_heads: int, kind: str = "default") -> np.ndarray:
    """log γ_h in float64: log1p(-(1 - γ_h)), accurate even where γ_h rounds to 1 in float32."""
    return np.log1p(-gamma_gap_schedule(num_heads, kind))


def gamma_schedule(num_heads: int, kind: str = "default") -> np.ndarray:
    """γ_h in float64 (see gamma_gap_schedule for the two schedules)."""
    return 1.0 - gamma_gap_schedule(num_heads, kind)


def effective_memory(gamma) -> np.ndarray:
    """1 / (1 - γ): the number of tokens a head effectively remembers (∞ for γ = 1); γ in (0, 1]."""
    values = np.asarray(gamma, dtype=np.float64)
    if not np.all((values > 0) & (values <= 1)):                    # also catches NaN
        raise ValueError(f"gamma must lie in (0, 1], got {values.tolist()}")
    gap = 1.0 - values
    with np.errstate(divide="ignore"):
        return np.where(gap > 0, 1.0 / np.where(gap > 0, gap, 1.0), np.inf)


def log_gamma(gamma) -> float:
    """log γ for one γ in (0, 1], in float64."""
    return float(np.log(check_gamma_value(gamma)))


# ---------------------------------------------------------------- decay factors


def _positions(length: int, log_g):
    """0..length-1 as a float array of the same kind (NumPy or torch) and placement as log_g.

    Positions are exact integers: float32 at least (bf16 cannot hold integers above 256 exactly).
    """
    if isinstance(log_g, torch.Tensor):
        dtype = torch.promote_types(log_g.dtype, torch.float32)
        return torch.arange(length, dtype=dtype, device=log_g.device)
    return np.arange(length, dtype=np.float64)


def _heads_first(log_g):
    """log γ as (..., 1) so that it broadcasts against a trailing position axis."""
    if isinstance(log_g, torch.Tensor):
        return log_g[..., None]
    return np.asarray(log_g, dtype=np.float64)[..., None]


def _lib(x):
    """The array library of x: torch for tensors, NumPy for everything else."""
    return torch if isinstance(x, torch.Tensor) else np


def _exp(x):
    return _lib(x).exp(x)


def decay_matrix(length: int, log_g):
    """D (Eq. 5): D_nm = γ^(n-m) for n ≥ m, else 0; shape (..., T, T) for log_g of shape (...)."""
    n = _positions(length, log_g)
    lag = n[:, None] - n[None, :]                                   # (T, T)
    lag = _lib(lag).where(lag > 0, lag, 0.0)                        # (T, T), n - m or 0
    # D_nm = exp((n - m) log γ) under the causal mask (the clamp keeps exp away from +inf)
    power = _exp(_heads_first(log_g)[..., None] * lag)              # (..., T, T)
    causal = (n[:, None] >= n[None, :])
    return power * causal


def decay_powers(length: int, log_g):
    """γ^p for p = 0..length-1: shape (..., length)."""
    return _exp(_heads_first(log_g) * _positions(length, log_g))


def decay_matrix_columns_reversed(length: int, log_g: torch.Tensor,
                                  dtype: torch.dtype) -> torch.Tensor:
    """D (Eq. 5) with its columns in reverse order, as a strided view: (H, T, T), no T×T storage.

    D_nm = γ^(n-m) depends on n - m only (a Toeplitz matrix). With the columns reversed, m' = T-1-m,
    entry (n, m') depends on n + m' only (a Hankel matrix): it is w[n + m'] for
    w = (0, …, 0, γ^0, γ^1, …, γ^(T-1)) with T-1 zeros first, and a view of w with strides (1, 1)
    is that matrix. So D costs 2T-1 numbers per head instead of T². Powers from float64 log γ.
    """
    powers = decay_powers(length, log_g).to(dtype)                              # (H, T)
    # (H, 2T-1)
    w = torch.cat((powers.new_zeros(powers.shape[0], max(length - 1, 0)), powers), dim=1)
    return w.as_strided((w.shape[0], length, length), (w.stride(0), 1, 1))        # (H, T, T) view


def causal_decay(length: int, log_g: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """D (Eq. 5) stored in dtype, (H, T, T), from its T distinct powers: 2T-1 exponentials, not T².

    The same numbers as decay_matrix(length, log_g).to(dtype): the reversed-columns view, flipped
    back.
    """
    return decay_matrix_columns_reversed(length, log_g, dtype).flip(-1)      # (H, T, T)


def zeta(length: int, log_g):
    """ζ_r = γ^(L-r-1), r = 0..L-1 (Eq. 7): how much key r of a chunk of length L has decayed at its
    end."""
    r = _positions(length, log_g)
    return _exp(_heads_first(log_g) * (length - 1 - r))            # (..., L)


def xi(length: int, log_g):
    """ξ_r = γ^(r+1), r = 0..L-1 (Eq. 7): how much the previous chunk's state has decayed at row
    r."""
    r = _positions(length, log_g)
    return _exp(_heads_first(log_g) * (r + 1))                     # (..., L)


def chunk_decay(length: int, log_g):
    """γ^L: the decay of the whole state across one chunk of length L."""
    return _exp(log_g * length)


def geometric_sum(count, log_g):
    """Σ_{i<count} γ^i = (1 - γ^count) / (1 - γ), or count when γ = 1; count and log γ broadcast
    (NumPy or torch; count may be a 0-d tensor).

    Computed as expm1(count log γ) / expm1(log γ), which stays accurate for γ close to 1.
    """
    lib = _lib(log_g)
    safe = lib.where(log_g < 0, log_g, -1.0)                         # avoid 0/0 where γ = 1
    return lib.where(log_g < 0, lib.expm1(count * safe) / lib.expm1(safe), count + 0 * log_g)


def decay_row_sum(length: int, log_g):
    """c_n = Σ_{i≤n} γ^(n-i) = (1 - γ^(n+1)) / (1 - γ), n = 0..T-1 (paper §2.2; n + 1 at γ = 1)."""
    # c_n = Σ_{i<n+1} γ^i
    return geometric_sum(_positions(length, log_g) + 1, _heads_first(log_g))     # (..., T)

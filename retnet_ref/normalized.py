"""Normalised retention: the paper's three score normalisations, exact in all three forms (paper §2.2).

The paper normalises the retention scores three times (§2.2, "Retention Score Normalization"):

    (1) scores / √d_k
    (2) D̃_nm = D_nm / sqrt(c_n),            c_n = Σ_{i≤n} D_ni = (1 - γ^(n+1)) / (1 - γ)
    (3) R_nm = (q_n · k_m / √d_k) D̃_nm,     R̃_nm = R_nm / max(|Σ_i R_ni|, 1)

and writes them for the parallel form only. Every factor divides a whole output row n by a positive
number, so the normalised output is the plain (unnormalised) retention o_n = Σ_m γ^(n-m) (q_n·k_m) v_m
divided by one scalar per row. The row sum of (3) is plain retention too, with a value column of ones:

    Σ_i R_ni = (q_n · z_n) / (√d_k sqrt(c_n)),   z_n = γ z_{n-1} + k_n   (the running key sum)

and with a_n = q_n · z_n the three factors together are

    õ_n = o_n / (√d_k sqrt(c_n) max(|a_n| / (√d_k sqrt(c_n)), 1)) = o_n / max(|a_n|, sqrt(d_k c_n)).

So every form computes o and a in one call of plain retention on [v | 1] (retnet_ref.retention),
carries the state [S | z] and the number n of tokens seen (c_n at absolute positions), and divides.
The forms hand off exactly: prefill with one, continue with another.

`normalisation="torchscale"` reproduces instead the row scales of the official code (torchscale 0.3.0),
which differ per mode: parallel as above; recurrent only (1) and (2); chunkwise (2) with the row sums of
the chunk alone and (3) replaced by max(Σ_m |R_nm| within the chunk, max-column-abs-sum of the carried
state, 1). Rows are still proportional to o_n, so after a per-head norm with ε = 0 the modes agree,
and with ε > 0 they do not (torchscale issues #40 and #77).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ._checks import check_chunk_size, check_gammas, check_torch_qkv
from .decay import chunk_decay, decay_matrix, decay_row_sum, xi, zeta
from .retention import accumulation_dtype, chunkwise_retention, parallel_retention, recurrent_retention

MODES = ("parallel", "recurrent", "chunkwise")
NORMALISATIONS = ("exact", "torchscale")


@dataclass
class RetentionState:
    """What one retention layer carries from token to token, for B sequences and H heads.

    S (B, H, d_k, d_v): Σ_m γ^(n-m) k_m^T v_m, the unnormalised state of Eq. (6);
    z (B, H, d_k):      Σ_m γ^(n-m) k_m, the running key sum behind normalisation (3);
    n:                  tokens seen so far (the position of the next token; the rotation offset).
    """

    S: torch.Tensor
    z: torch.Tensor
    n: int

    @classmethod
    def zeros(cls, batch: int, heads: int, d_k: int, d_v: int, dtype=torch.float32, device=None):
        return cls(torch.zeros(batch, heads, d_k, d_v, dtype=dtype, device=device),   # (B, H, d_k, d_v)
                   torch.zeros(batch, heads, d_k, dtype=dtype, device=device),        # (B, H, d_k)
                   0)

    @property
    def batch_size(self) -> int:
        return self.S.shape[0]

    def detach(self) -> "RetentionState":
        return RetentionState(self.S.detach(), self.z.detach(), self.n)

    def check(self, q: torch.Tensor, v: torch.Tensor, name: str = "state") -> "RetentionState":
        """The state fits inputs q (B, H, T, d_k), v (B, H, T, d_v): shapes, device, n ≥ 0."""
        if not isinstance(self.S, torch.Tensor) or not isinstance(self.z, torch.Tensor):
            raise TypeError(f"{name}.S and {name}.z must be torch tensors")
        expected = (q.shape[0], q.shape[1], q.shape[3], v.shape[3])
        if tuple(self.S.shape) != expected:
            raise ValueError(f"{name}.S must have shape (B, H, d_k, d_v) = {expected}, got {tuple(self.S.shape)}"
                             " (a state from another batch size or configuration?)")
        if tuple(self.z.shape) != expected[:3]:
            raise ValueError(f"{name}.z must have shape (B, H, d_k) = {expected[:3]}, got {tuple(self.z.shape)}")
        if self.S.device != q.device or self.z.device != q.device:
            raise ValueError(f"{name} must be on the inputs' device {q.device}, got {self.S.device}")
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 0:
            raise ValueError(f"{name}.n must be a non-negative integer (tokens seen), got {self.n!r}")
        return self


def check_mode(mode, chunk_size):
    """mode one of MODES; chunk_size a positive integer for chunkwise and None otherwise."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "chunkwise":
        if chunk_size is None:
            raise ValueError("chunk_size is required for mode='chunkwise'")
        return check_chunk_size(chunk_size)
    if chunk_size is not None:
        raise ValueError(f"chunk_size is used by mode='chunkwise' only, got chunk_size={chunk_size!r} "
                         f"with mode={mode!r}")
    return None


def _log_gamma(gamma, like: torch.Tensor) -> torch.Tensor:
    """log γ per head in float64 on like's device: (H,)."""
    values = check_gammas(gamma, like.shape[1])
    return torch.log(torch.as_tensor(values, dtype=torch.float64)).to(like.device)   # (H,)


def row_sums(length: int, log_g: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """c at absolute positions offset..offset+length-1: (H, T), float64.

    The row sums split like the state does (the same identity as Eq. 7's cross-chunk term):
        c_{o+t} = c_t + γ^(t+1) c_{o-1},   c_{o-1} = (1 - γ^o) / (1 - γ)   (o when γ = 1)
    so the cost is O(T) whatever the offset.
    """
    local = decay_row_sum(length, log_g)                             # (H, T)
    if offset == 0:
        return local
    # c_{o-1} = Σ_{i<o} γ^i = expm1(o log γ) / expm1(log γ)
    safe = torch.where(log_g < 0, log_g, -1.0)                       # (H,), avoids 0/0 at γ = 1
    before = torch.where(log_g < 0, torch.expm1(offset * safe) / torch.expm1(safe),
                         torch.full_like(log_g, float(offset)))      # (H,)
    return local + xi(length, log_g) * before[:, None]                # (H, T)


def _plain_parallel_with_state(q, k, v1, gamma, log_g, S1):
    """Eq. (5) for the whole input plus an initial state: (o1, S1 at the end), like one chunk of Eq. (7)."""
    acc = accumulation_dtype(q.dtype)
    T = q.shape[2]
    o1 = parallel_retention(q, k, v1, gamma).to(acc)                  # (B, H, T, d_v+1)
    # S_T = K^T (V ⊙ ζ) + γ^T S_0,  ζ_m = γ^(T-1-m)
    S_end = k.to(acc).transpose(-1, -2) @ (v1.to(acc) * zeta(T, log_g).to(acc)[..., None])   # (B, H, d_k, d_v+1)
    if S1 is not None:
        S_end = S_end + chunk_decay(T, log_g).to(acc)[:, None, None] * S1
        # o_n += γ^(n+1) q_n S_0
        o1 = o1 + (q.to(acc) @ S1) * xi(T, log_g).to(acc)[..., None]       # (B, H, T, d_v+1)
    return o1, S_end


def plain_retention_with_key_sum(q, k, v, gamma, mode, chunk_size=None, state=None):
    """Unnormalised retention o and a_n = q_n · z_n in one call on [v | 1] → (o, a, S, z).

    o (B, H, T, d_v) and a (B, H, T) in the accumulation dtype; S, z the carried sums at the end.
    """
    acc = accumulation_dtype(q.dtype)
    ones = torch.ones(*v.shape[:3], 1, dtype=v.dtype, device=v.device)        # (B, H, T, 1)
    v1 = torch.cat((v, ones), dim=-1)                                         # (B, H, T, d_v+1)
    S1 = None if state is None else torch.cat((state.S, state.z[..., None]), dim=-1).to(acc)   # (B, H, d_k, d_v+1)
    if mode == "parallel":
        o1, S1_end = _plain_parallel_with_state(q, k, v1, gamma, _log_gamma(gamma, q), S1)
    elif mode == "recurrent":
        o1, S1_end = recurrent_retention(q, k, v1, gamma, state=S1)
    else:
        o1, S1_end = chunkwise_retention(q, k, v1, gamma, chunk_size, state=S1)
    o1 = o1.to(acc)
    return o1[..., :-1], o1[..., -1], S1_end[..., :-1], S1_end[..., -1]


def exact_row_scale(a, c, d_k):
    """The three normalisations as one divisor per row: max(|a_n|, sqrt(d_k c_n)) (module docstring)."""
    return torch.maximum(a.abs(), (d_k * c).sqrt())


def torchscale_row_scale(q, k, v, a, c, d_k, gamma, log_g, mode, chunk_size, S0):
    """The divisor per row that the official code applies in each mode (module docstring)."""
    if mode == "parallel":
        return exact_row_scale(a, c, d_k)
    if mode == "recurrent":
        # (1) and (2) only: √d_k sqrt(c_n)
        return (d_k * c).sqrt().expand_as(a)
    return _torchscale_chunk_scale(q, k, v, d_k, gamma, log_g, chunk_size, S0)


def _torchscale_chunk_scale(q, k, v, d_k, gamma, log_g, chunk_size, S0):
    """torchscale's chunkwise divisor: √d_k sqrt(c^chunk_r) max(inner_r, cross_i), chunk by chunk.

    inner_r = max(Σ_{m in chunk, m ≤ r} |q_r·k_m| γ^(r-m) / (√d_k sqrt(c^chunk_r)), 1);
    cross_i = max(max_j Σ_l |S_{i-1}|_{lj} / (√d_k c^chunk_{B-1}), 1) with S_{i-1} the state at the
    chunk's start (the given initial state for the first chunk). Row sums c^chunk use the chunk size B
    (torchscale pads the last chunk to B).
    """
    acc = accumulation_dtype(q.dtype)
    c_chunk = decay_row_sum(chunk_size, log_g).to(acc)                # (H, B)
    root_dk = math.sqrt(d_k)
    S = S0
    scales = []
    for start in range(0, q.shape[2], chunk_size):
        qc, kc, vc = (x[:, :, start:start + chunk_size] for x in (q, k, v))   # (B, H, L, d)
        L = qc.shape[2]
        # √d_k sqrt(c^chunk_r): normalisations (1) and (2) with the chunk's own row sums
        row_norm = root_dk * c_chunk[:, :L].sqrt()[..., None]          # (H, L, 1)
        abs_scores = (qc.to(acc) @ kc.to(acc).transpose(-1, -2)).abs() * decay_matrix(L, log_g).to(acc)  # (B, H, L, L)
        inner = (abs_scores.sum(-1, keepdim=True) / row_norm).clamp(min=1.0)           # (B, H, L, 1)
        cross = (S.abs().sum(-2).amax(-1) / (root_dk * c_chunk[:, -1])).clamp(min=1.0)   # (B, H)
        scales.append(row_norm * torch.maximum(inner, cross[..., None, None]))        # (B, H, L, 1)
        S = chunkwise_retention(qc, kc, vc, gamma, L, state=S)[1]       # the state at the next chunk's start
    return torch.cat(scales, dim=2)[..., 0]                            # (B, H, T)


def normalized_retention(q, k, v, gamma, mode="parallel", chunk_size=None, state=None,
                         normalisation="exact", detach_normaliser=False):
    """Retention with the paper's three normalisations (§2.2) in any form → (õ, RetentionState).

    q, k (B, H, T, d_k) already rotated, v (B, H, T, d_v), gamma one value per head.
    mode "parallel" (Eq. 5), "recurrent" (Eq. 6) or "chunkwise" (Eq. 7, with chunk_size).
    state: a RetentionState (None = start of the sequence); positions continue from state.n.
    normalisation "exact" (all modes give the same õ) or "torchscale" (the official per-mode scales).
    detach_normaliser: stop gradients through the data-dependent divisor (the official code does).
    õ has q's dtype; the returned state the accumulation dtype (float32 or wider).
    """
    check_torch_qkv(q, k, v)
    chunk_size = check_mode(mode, chunk_size)
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"normalisation must be one of {NORMALISATIONS}, got {normalisation!r}")
    if state is not None:
        if not isinstance(state, RetentionState):
            raise TypeError(f"state must be a RetentionState or None, got {type(state).__name__}")
        state.check(q, v)
    d_k = q.shape[-1]
    offset = 0 if state is None else state.n
    log_g = _log_gamma(gamma, q)
    o, a, S, z = plain_retention_with_key_sum(q, k, v, gamma, mode, chunk_size, state)
    c = row_sums(q.shape[2], log_g, offset).to(o.dtype)                # (H, T)
    if normalisation == "exact":
        scale = exact_row_scale(a, c, d_k)                              # (B, H, T)
    else:
        S0 = state.S.to(o.dtype) if state is not None else torch.zeros_like(S)
        scale = torchscale_row_scale(q, k, v, a, c, d_k, gamma, log_g, mode, chunk_size, S0)
    if detach_normaliser:
        scale = scale.detach()
    # õ_n = o_n / scale_n
    out = o / scale[..., None]                                           # (B, H, T, d_v)
    return out.to(q.dtype), RetentionState(S, z, offset + q.shape[2])

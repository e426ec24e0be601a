"""One decode step of normalised recurrent retention as one Triton kernel (Eq. 6 with §2.2's
divisor).

    S_{n+1} = S_n - (1 - γ) S_n + k_n^T v_n         z_{n+1} = z_n - (1 - γ) z_n + k_n
    o_n = q_n S_{n+1},  a_n = q_n · z_{n+1},          õ_n = o_n / max(|a_n|, sqrt(d_k c_n))

The PyTorch step (normalisation.normalised_step_) makes five passes over the state S: the decay, the
outer product, the read for q_n S_{n+1}, each a kernel of its own. Here each program owns the block
S[b, h, :, j:j+BV] of one head: it reads the block once, updates it in registers, writes it back and
sums q_n S_{n+1} from the same registers, so a step moves the state's bytes twice (read and write),
the floor for an update in place. z is d_k numbers per head: every program of a head computes
z_{n+1} from z_n to get a_n, and a second, tiny kernel writes z_{n+1} afterwards (had one of the
programs written it, another could read the new z as if it were the old one: programs of one launch
run in no fixed order).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import require_triton


@triton.jit
def _normalised_step_kernel(q_ptr, k_ptr, v_ptr, S_ptr, z_ptr, gap_ptr, floor_ptr, o_ptr, H,
                            DK: tl.constexpr, DV: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                            EXACT: tl.constexpr):
    bh, j = tl.program_id(0), tl.program_id(1)                         # (batch·head, block of d_v)
    h = bh % H
    cols = j * BV + tl.arange(0, BV)
    col_ok = cols < DV
    gap = tl.load(gap_ptr + h)
    v = tl.load(v_ptr + bh * DV + cols, mask=col_ok, other=0.0).to(tl.float32)
    o = tl.zeros([BV], dtype=tl.float32)
    a = tl.zeros([BK], dtype=tl.float32)
    for r0 in range(0, DK, BK):
        rows = r0 + tl.arange(0, BK)
        row_ok = rows < DK
        q = tl.load(q_ptr + bh * DK + rows, mask=row_ok, other=0.0).to(tl.float32)
        k = tl.load(k_ptr + bh * DK + rows, mask=row_ok, other=0.0).to(tl.float32)
        block = bh * DK * DV + rows[:, None] * DV + cols[None, :]
        ok = row_ok[:, None] & col_ok[None, :]
        S = tl.load(S_ptr + block, mask=ok, other=0.0)                 # (BK, BV), float32
        # S_{n+1} = S_n - (1 - γ) S_n + k_n^T v_n
        S = S - gap * S + k[:, None] * v[None, :]
        tl.store(S_ptr + block, S, mask=ok)
        # o_n = q_n S_{n+1}
        o += tl.sum(q[:, None] * S, axis=0)
        # a_n = q_n · z_{n+1},  z_{n+1} = z_n - (1 - γ) z_n + k_n  (z itself is written by
        # _key_sum_kernel)
        z = tl.load(z_ptr + bh * DK + rows, mask=row_ok, other=0.0)
        a += q * (z - gap * z + k)
    floor = tl.load(floor_ptr + h)
    if EXACT:
        scale = tl.maximum(tl.abs(tl.sum(a, axis=0)), floor)
    else:
        scale = floor
    tl.store(o_ptr + bh * DV + cols, (o / scale).to(o_ptr.dtype.element_ty), mask=col_ok)


@triton.jit
def _key_sum_kernel(k_ptr, z_ptr, gap_ptr, H, DK: tl.constexpr, BK: tl.constexpr):
    """z_{n+1} = z_n - (1 - γ) z_n + k_n, in place, one program per (batch·head)."""
    bh = tl.program_id(0)
    gap = tl.load(gap_ptr + bh % H)
    for r0 in range(0, DK, BK):
        rows = r0 + tl.arange(0, BK)
        row_ok = rows < DK
        k = tl.load(k_ptr + bh * DK + rows, mask=row_ok, other=0.0).to(tl.float32)
        z = tl.load(z_ptr + bh * DK + rows, mask=row_ok, other=0.0)
        tl.store(z_ptr + bh * DK + rows, z - gap * z + k, mask=row_ok)


def _block(width: int, most: int) -> int:
    return min(most, triton.next_power_of_2(width))


def normalised_step_(q, k, v, state, gap, floor, normalisation="exact"):
    """normalisation.normalised_step_ as one kernel: the same arguments, the same numbers, S and z
    in place.

    q, k (B, H, 1, d_k) rotated, v (B, H, 1, d_v); state a RetentionState with float32 S and z;
    gap (H, 1, 1) and floor (H, 1) from normalisation.step_decay_factors. Returns õ (B, H, 1, d_v)
    in q's dtype; state.n advances by one (on the device).
    """
    require_triton(q, state.S)
    if state.S.dtype != torch.float32 or not (state.S.is_contiguous() and state.z.is_contiguous()):
        raise ValueError("backend='triton' decodes a contiguous float32 state (S, z)")
    B, H, _, d_k = q.shape
    d_v = v.shape[-1]
    q_n, k_n, v_n = (x[:, :, 0].contiguous() for x in (q, k, v))        # (B, H, d)
    out = torch.empty(B, H, 1, d_v, dtype=q.dtype, device=q.device)
    BK, BV = _block(d_k, 64), _block(d_v, 64)
    grid = (B * H, triton.cdiv(d_v, BV))
    _normalised_step_kernel[grid](q_n, k_n, v_n, state.S, state.z, gap.reshape(H), floor.reshape(H),
                                  out, H,
                                  DK=d_k, DV=d_v, BK=BK, BV=BV, EXACT=normalisation == "exact")
    _key_sum_kernel[(B * H,)](k_n, state.z, gap.reshape(H), H, DK=d_k, BK=BK)
    state.n.add_(1)
    return out

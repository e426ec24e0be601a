"""Experiment (chapter 11, section 7, "One walk with the outputs on the way"): the forward as one
sequential walk per segment that computes each chunk's outputs from the state it carries, so that
no chunk's state goes through memory.

The kept forward (chunkwise.py) writes every chunk's state R_{i-1} in pass 1 and reads it back in
the output pass: at 65,536 tokens of 8 heads × 128 in bfloat16 that is 256 MiB written and 256
read, as much as q, k, v and o together. Here one program per (batch·head, segment, block of BV
value columns) holds all d_k rows of its block of R in registers and, chunk by chunk,

    O_[i][:, block] = (Q_[i] K_[i]^T ⊙ D) V_[i][:, block] + (Q_[i] R_{i-1}[:, block]) ⊙ ξ
    R_i[:, block]   = γ^{L_i} R_{i-1}[:, block] + K_[i]^T (V_[i][:, block] ⊙ ζ)

so the forward reads q, k, v once per value block and writes o (plus, when a long sequence is cut
into segments, the segments' own sums and the scan over them from chunkwise.py). With
store_states it also writes every R_{i-1}, as a forward for training would have to. The output
product and the recursion's step are those of chunkwise.py's kernels.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .._checks import check_positive_int, check_torch_qkv
from ..retention import log_gamma_per_head
from . import check_tile_height, require_triton
from .chunkwise import (
    Tile,
    _blocks,
    _chunk_range,
    _decayed,
    _gap,
    _launch,
    _multiprocessors,
    _precision,
    _recursion,
    _segment_starts,
    _state_block,
    _tile,
    segment_length,
    states_tile,
)

# the fastest of the swept tiles at every length (results/kernels/walk-h200.json)
WALK_TILE = Tile(128, 64, 4, 2)


@triton.jit
def _walk_kernel(q_ptr, k_ptr, v_ptr, starts_ptr, states_ptr, last_ptr, o_ptr, log_g_ptr, T, N, H,
                 NS, G, HAS_START: tl.constexpr, STORE_EACH: tl.constexpr, C: tl.constexpr,
                 DK: tl.constexpr, DV: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                 PRECISION: tl.constexpr):
    """Segment s's walk over its G chunks for one block of BV value columns, outputs on the way;
    program (bh·NS + s, block). From starts[bh·NS + s] (HAS_START) or 0; with STORE_EACH
    states[bh, i] = R_{i-1} in the input dtype; last[bh·NS + s] = R at the segment's end."""
    seg, jv = tl.program_id(0).to(tl.int64), tl.program_id(1)
    bh, s = seg // NS, seg % NS
    log_g64 = tl.load(log_g_ptr + bh % H)                                  # float64
    log_g = log_g64.to(tl.float32)
    gap_whole, gap_last = _gap(C, log_g64), _gap(T - (N - 1) * C, log_g64)
    ptrs, ok = _state_block(starts_ptr, seg * DK * DV, 0, jv * BV, DK, DV, BK, BV)
    if HAS_START:
        X = tl.load(ptrs, mask=ok, other=0.0)                              # (BK, BV), float32
    else:
        X = tl.zeros([BK, BV], dtype=tl.float32)
    r = tl.arange(0, C)
    rf = r.to(tl.float32)
    xi = tl.exp((rf + 1.0) * log_g)
    cols = jv * BV + tl.arange(0, BV)
    first, n = s * G, tl.minimum(G, N - s * G)
    for step in range(n):
        i = first + step
        t, t_ok, L = _chunk_range(i, T, C)
        q = _tile(q_ptr, bh, t, t_ok, T, DK, 0, BK)                          # (C, BK)
        k = _tile(k_ptr, bh, t, t_ok, T, DK, 0, BK)                          # (C, BK)
        v = _tile(v_ptr, bh, t, t_ok, T, DV, jv * BV, BV)                    # (C, BV)
        R = X.to(q.dtype)                                                    # R_{i-1}
        if STORE_EACH:
            at, _ = _state_block(states_ptr, (bh * N + i) * DK * DV, 0, jv * BV, DK, DV, BK, BV)
            tl.store(at, R, mask=ok)
        # the output pass's product, non-finite values of v kept to the rows they may reach
        v_bad = (v - v) != 0
        first_bad = tl.min(tl.where(v_bad, r[:, None], C), axis=0)
        v_ok = tl.where(v_bad, 0.0, v).to(v.dtype)
        scores = tl.dot(q, tl.trans(k), input_precision=PRECISION)           # (C, C)
        # (Q R_{i-1}) ⊙ ξ, then + (Q K^T ⊙ D) V in the same accumulator
        o = tl.dot(q, R, input_precision=PRECISION) * xi[:, None]
        o = tl.dot(_decayed(scores, log_g, C).to(v.dtype), v_ok, acc=o, input_precision=PRECISION)
        o = tl.where(r[:, None] >= first_bad[None, :], float("nan"), o)
        tl.store(o_ptr + bh * T * DV + t[:, None] * DV + cols[None, :],
                 o.to(o_ptr.dtype.element_ty), mask=t_ok[:, None] & (cols < DV)[None, :])
        # R_i = R_{i-1} - (1 - γ^L) R_{i-1} + K^T (V ⊙ ζ),  ζ_r = γ^(L-1-r)
        zeta = tl.where(t_ok, tl.exp((L - 1.0 - rf) * log_g), 0.0)
        gap = tl.where(L < C, gap_last, gap_whole)
        X = tl.dot(tl.trans(k), (v * zeta[:, None]).to(v.dtype), acc=X - gap * X,
                   input_precision=PRECISION)
    last, _ = _state_block(last_ptr, seg * DK * DV, 0, jv * BV, DK, DV, BK, BV)
    tl.store(last, X, mask=ok)


def walk_forward(q, k, v, gamma, chunk_size: int = 64, *, store_states: bool = False,
                 segment_chunks: int | None = None, tile: Tile = WALK_TILE):
    """The forward of kernels.chunkwise_retention (no initial state, no gradients) as one walk per
    segment: (o (B, H, T, d_v), R_last (B, H, d_k, d_v) float32, and with store_states every
    chunk's state R_{i-1} (B·H, N, d_k, d_v) in the input dtype, else None). segment_chunks: the
    walk's chunks per segment (by default, where batch · heads · value blocks give fewer programs
    than multiprocessors, as many segments as give two per multiprocessor)."""
    check_torch_qkv(q, k, v)
    C = check_tile_height(chunk_size)
    B, H, T, DK = q.shape
    DV, N = v.shape[-1], math.ceil(T / C)
    BK, BV = _blocks(tile, DK, DV)
    if BK < DK:
        raise ValueError(f"tile.block_k must be at least d_k = {DK}, got {tile.block_k}")
    require_triton(q)
    programs, multiprocessors = B * H * math.ceil(DV / BV), _multiprocessors(q.device)
    # below one walk per multiprocessor, as many segments as give two (two 4-warp walks of 255
    # registers a thread fit one)
    wanted = 2 * multiprocessors if programs < multiprocessors else 1
    G = (segment_length(N, programs, wanted) if segment_chunks is None
         else check_positive_int(segment_chunks, "segment_chunks"))
    NS = max(1, triton.cdiv(N, G))
    log_g = log_gamma_per_head(gamma, q)
    q, k, v = (x.reshape(B * H, T, x.shape[-1]).contiguous() for x in (q, k, v))
    starts = None
    if NS > 1:
        recursion = states_tile(B * H, DK, DV, _multiprocessors(q.device))
        _, local = _recursion(k, v, None, log_g, C, False, NS, G, False, recursion)
        starts = _segment_starts(local, None, log_g, T, C, G, NS, False, recursion)
    o = torch.empty_like(v)
    last = torch.empty(B * H * NS, DK, DV, dtype=torch.float32, device=q.device)
    states = (torch.empty(B * H, N, DK, DV, dtype=q.dtype, device=q.device) if store_states
              else None)
    _walk_kernel[(B * H * NS, triton.cdiv(DV, BV))](
        q, k, v, starts if starts is not None else last, states if store_states else last, last,
        o, log_g, T, N, H, NS, G, HAS_START=starts is not None, STORE_EACH=store_states, C=C,
        DK=DK, DV=DV, BK=BK, BV=BV, PRECISION=_precision(q.dtype), **_launch(tile))
    final = last.view(B, H, NS, DK, DV)[:, :, NS - 1]
    return o.reshape(B, H, T, DV), final, states

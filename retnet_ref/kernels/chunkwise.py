"""Chunkwise retention (Eq. 7) forward and backward as Triton kernels, behind one autograd function.

The forward is two passes, as the equations fall apart:

1. chunk states, sequential in the chunk index i, parallel over (batch·head, d_k block, d_v block):
       R_i = γ^{L_i} R_{i-1} + K_[i]^T (V_[i] ⊙ ζ),   ζ_r = γ^{L_i-1-r},   R_{-1} = S_0
   written R_{i-1} - (1 - γ^{L_i}) R_{i-1} + …, with the gap 1 - γ^{L_i} computed in the kernel from
   float64 log γ (the drift of a rounded γ^L multiplied in N times stays out, as in
   retention._chunk_states). Each program keeps its (BK, BV) block of R in registers and stores
   R_{i-1} for every chunk. When batch · heads · blocks give too few programs for the GPU (one
   long sequence), the chunks are split into NS segments of G: each segment's own sum from zero
   (all segments at once), a scan over the NS segments for the state each starts from, then every
   segment's walk from its start (at once).
2. outputs, parallel over (chunk, batch·head, d_v block), no recursion left:
       O_[i] = (Q_[i] K_[i]^T ⊙ D) V_[i] + (Q_[i] R_{i-1}) ⊙ ξ,   ξ_r = γ^{r+1}

The backward is the same two passes run on the gradients. With dS_i = ∂loss/∂R_i (the state after
chunk i; dS_{N-1} the gradient of the returned final state):
       dS_{i-1} = γ^{L_i} dS_i + Q_[i]^T (dO_[i] ⊙ ξ)       (reverse time; dS_{-1} = ∂/∂S_0)
       dQ_[i] = (dO_[i] V_[i]^T ⊙ D) K_[i] + (dO_[i] R_{i-1}^T) ⊙ ξ
       dK_[i] = (dO_[i] V_[i]^T ⊙ D)^T Q_[i] + (V_[i] dS_i^T) ⊙ ζ
       dV_[i] = (Q_[i] K_[i]^T ⊙ D)^T dO_[i] + (K_[i] dS_i) ⊙ ζ
(notebooks/11_triton_kernel.ipynb derives them and checks them against autograd of the parallel
form).

Loads before the loops: the output pass loads its tile of v before its loop over blocks of d_k, so
that the load is in flight while the loop's products run instead of being issued after them. On an
H200 (results/kernels/loads-before-loops-h200.json, 65,536 tokens, 8 heads × 128) that made the
output pass 14 % faster (0.246 → 0.211 ms a call); the same move in dQ·dK and dV made them 6 % and
14 % slower, so those load after their loops.

A last chunk shorter than C has its own length L < C: loads past T are masked to zero and its ζ and
gap use L. Decay exponents inside a chunk are at most C, so they are taken in float32 from log γ.
Operands of every matrix product have the input dtype (float32 products in IEEE precision, not
tf32), sums are float32, states are stored in the input dtype between the passes and the final state
in float32.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from .._checks import check_positive_int, check_torch_qkv, check_torch_state
from ..retention import accumulation_dtype, log_gamma_per_head
from . import check_tile_height, require_triton


@triton.jit
def _chunk_range(i, T, C: tl.constexpr):
    """Positions of chunk i, whether each lies before T, and the chunk's length L."""
    r = tl.arange(0, C)
    return i * C + r, i * C + r < T, tl.minimum(C, T - i * C)


@triton.jit
def _tile(ptr, bh, t, t_ok, T, D: tl.constexpr, start, B: tl.constexpr):
    """x[bh, t, start:start+B] of a (BH, T, D) tensor: (C, B), zero past T and past D."""
    cols = start + tl.arange(0, B)
    return tl.load(ptr + bh * T * D + t[:, None] * D + cols[None, :],
                   mask=t_ok[:, None] & (cols < D)[None, :],
                   other=0.0)


@triton.jit
def _state_block(ptr, base, rows0, cols0, DK: tl.constexpr, DV: tl.constexpr, BK: tl.constexpr,
                 BV: tl.constexpr):
    """Pointers and mask of the block [rows0:rows0+BK, cols0:cols0+BV] of a (DK, DV) state at
    base."""
    rows, cols = rows0 + tl.arange(0, BK), cols0 + tl.arange(0, BV)
    return ptr + base + rows[:, None] * DV + cols[None, :], (rows < DK)[:,
                                                                        None] & (cols < DV)[None, :]


@triton.jit
def _decayed(scores, log_g, C: tl.constexpr):
    """scores ⊙ D, D_rs = γ^(r-s) for r ≥ s, else 0, by selection: (C, C), float32. A NaN or inf
    score above the diagonal (a non-finite future key) becomes 0 instead of NaN · 0 = NaN."""
    r = tl.arange(0, C)
    gap = (r[:, None] - r[None, :]).to(tl.float32)
    return tl.where(gap >= 0, scores * tl.exp(tl.maximum(gap, 0.0) * log_g), 0.0)


@triton.jit
def _gap(length, log_g64):
    """1 - γ^length in float32, from float64 log γ: absolute error ≤ ~1e-16 (what matters in
    X - gap · X), far below float32's resolution of X."""
    return (1.0 - tl.exp(length * log_g64)).to(tl.float32)


@triton.jit
def _states_kernel(a_ptr, b_ptr, init_ptr, states_ptr, last_ptr, log_g_ptr, T, N, H, NS, G,
                   REVERSE: tl.constexpr, HAS_INIT: tl.constexpr,
                   STORE_EACH: tl.constexpr, C: tl.constexpr, DA: tl.constexpr, DB: tl.constexpr,
                   BA: tl.constexpr, BB: tl.constexpr, PRECISION: tl.constexpr):
    """The recursion over the chunks of segment s (G chunks from chunk s·G), forward (a = k, b = v,
    weights ζ) or reversed (a = q, b = dO, weights ξ); program (bh·NS + s, block of a's columns,
    block of b's columns).

    X ← X - (1 - γ^{L_i}) X + A_[i]^T (B_[i] ⊙ w), from init[bh·NS + s] (HAS_INIT) or 0; with
    STORE_EACH states[bh, i] = X before chunk i's term is added; last[bh·NS + s] = X at the
    segment's end.
    """
    # int64: offsets pass 2^31
    seg, ja, jb = tl.program_id(0).to(tl.int64), tl.program_id(1), tl.program_id(2)
    bh, s = seg // NS, seg % NS
    log_g64 = tl.load(log_g_ptr + bh % H)                                  # float64
    log_g = log_g64.to(tl.float32)
    # the gaps 1 - γ^C of a whole chunk and 1 - γ^L of the ragged last one, from float64
    gap_whole, gap_last = _gap(C, log_g64), _gap(T - (N - 1) * C, log_g64)
    ptrs, ok = _state_block(init_ptr, seg * DA * DB, ja * BA, jb * BB, DA, DB, BA, BB)
    if HAS_INIT:
        X = tl.load(ptrs, mask=ok, other=0.0)                              # (BA, BB), float32
    else:
        X = tl.zeros([BA, BB], dtype=tl.float32)
    r = tl.arange(0, C).to(tl.float32)
    first, n = s * G, tl.minimum(G, N - s * G)
    for step in range(n):
        i = first + n - 1 - step if REVERSE else first + step
        if STORE_EACH:
            out_ptrs, _ = _state_block(states_ptr, (bh * N + i) * DA * DB, ja * BA, jb * BB, DA,
                                       DB, BA, BB)
            tl.store(out_ptrs, X.to(states_ptr.dtype.element_ty), mask=ok)
        t, t_ok, L = _chunk_range(i, T, C)
        A = _tile(a_ptr, bh, t, t_ok, T, DA, ja * BA, BA)                   # (C, BA)
        Bm = _tile(b_ptr, bh, t, t_ok, T, DB, jb * BB, BB)                  # (C, BB)
        # ζ_r = γ^(L-1-r) forward, ξ_r = γ^(r+1) reversed; zero past the chunk's end
        w = tl.where(t_ok, tl.exp((r + 1.0 if REVERSE else L - 1.0 - r) * log_g), 0.0)
        gap = tl.where(L < C, gap_last, gap_whole)
        Bw = (Bm * w[:, None]).to(Bm.dtype)
        X = X - gap * X + tl.dot(tl.trans(A), Bw, input_precision=PRECISION)
    last_ptrs, _ = _state_block(last_ptr, seg * DA * DB, ja * BA, jb * BB, DA, DB, BA, BB)
    tl.store(last_ptrs, X, mask=ok)


@triton.jit
def _segment_scan_kernel(local_ptr, init_ptr, starts_ptr, log_g_ptr, T, G, NS, H, C: tl.constexpr,
                         REVERSE: tl.constexpr, HAS_INIT: tl.constexpr, DA: tl.constexpr,
                         DB: tl.constexpr, BA: tl.constexpr, BB: tl.constexpr):
    """The state each segment's walk starts from, given every segment's own sum (local, from 0):
    forward starts[0] = S_0 (or 0), starts[s] = γ^{len s-1} starts[s-1] + local[s-1]; reversed
    from the last segment back, starts[NS-1] = ∂/∂R_last (or 0)."""
    bh, ja, jb = tl.program_id(0).to(tl.int64), tl.program_id(1), tl.program_id(2)
    log_g64 = tl.load(log_g_ptr + bh % H)                                  # float64
    # 1 - γ^{length of a segment}: G·C tokens, or fewer for the last segment
    gap_whole, gap_last = _gap(G * C, log_g64), _gap(T - (NS - 1) * G * C, log_g64)
    ptrs, ok = _state_block(init_ptr, bh * DA * DB, ja * BA, jb * BB, DA, DB, BA, BB)
    if HAS_INIT:
        X = tl.load(ptrs, mask=ok, other=0.0)                              # (BA, BB), float32
    else:
        X = tl.zeros([BA, BB], dtype=tl.float32)
    for step in range(NS - 1):
        s = NS - 1 - step if REVERSE else step
        at, _ = _state_block(starts_ptr, (bh * NS + s) * DA * DB, ja * BA, jb * BB, DA, DB, BA, BB)
        tl.store(at, X, mask=ok)
        gap = tl.where(s == NS - 1, gap_last, gap_whole)
        own, _ = _state_block(local_ptr, (bh * NS + s) * DA * DB, ja * BA, jb * BB, DA, DB, BA, BB)
        X = X - gap * X + tl.load(own, mask=ok, other=0.0)
    s = 0 if REVERSE else NS - 1
    at, _ = _state_block(starts_ptr, (bh * NS + s) * DA * DB, ja * BA, jb * BB, DA, DB, BA, BB)
    tl.store(at, X, mask=ok)


@triton.jit
def _output_kernel(q_ptr, k_ptr, v_ptr, states_ptr, o_ptr, log_g_ptr, T, N, H, C: tl.constexpr,
                   DK: tl.constexpr, DV: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                   PRECISION: tl.constexpr):
    """O_[i][:, block] = (Q_[i] K_[i]^T ⊙ D) V_[i][:, block] + (Q_[i] R_{i-1}[:, block]) ⊙ ξ."""
    i, bh, jv = tl.program_id(0), tl.program_id(1).to(tl.int64), tl.program_id(2)
    log_g = tl.load(log_g_ptr + bh % H).to(tl.float32)                   # from float64
    t, t_ok, L = _chunk_range(i, T, C)
    # v is loaded before the loop over d_k, so that its latency overlaps the loop's products
    # instead of following them (module docstring: loads before the loops)
    v = _tile(v_ptr, bh, t, t_ok, T, DV, jv * BV, BV)                        # (C, BV)
    scores = tl.zeros([C, C], dtype=tl.float32)
    cross = tl.zeros([C, BV], dtype=tl.float32)
    for k0 in range(0, DK, BK):
        q = _tile(q_ptr, bh, t, t_ok, T, DK, k0, BK)                         # (C, BK)
        k = _tile(k_ptr, bh, t, t_ok, T, DK, k0, BK)                         # (C, BK)
        scores += tl.dot(q, tl.trans(k), input_precision=PRECISION)
        R_ptrs, R_ok = _state_block(states_ptr, (bh * N + i) * DK * DV, k0, jv * BV, DK, DV, BK, BV)
        cross += tl.dot(q, tl.load(R_ptrs, mask=R_ok, other=0.0), input_precision=PRECISION)
    # a non-finite v_s[c] may reach o_r[c] for r ≥ s only: the product runs on finite values and the
    # rows from the first non-finite one on are set to NaN (a product with the zeros of D would not
    # keep it out of the rows above); later chunks receive it through R, which pass 1 carries
    # forward
    r = tl.arange(0, C)
    v_bad = (v - v) != 0                                                     # NaN or ±inf
    first_bad = tl.min(tl.where(v_bad, r[:, None], C), axis=0)               # (BV,), C where none
    v = tl.where(v_bad, 0.0, v).to(v.dtype)
    # (Q K^T ⊙ D) V, the scores rounded to the input dtype like the PyTorch forms'
    o = tl.dot(_decayed(scores, log_g, C).to(v.dtype), v, input_precision=PRECISION)
    o = tl.where(r[:, None] >= first_bad[None, :], float("nan"), o)
    # + (Q R_{i-1}) ⊙ ξ,  ξ_r = γ^(r+1)
    xi = tl.exp((r + 1.0) * log_g)
    o += cross * xi[:, None]
    cols = jv * BV + tl.arange(0, BV)
    tl.store(o_ptr + bh * T * DV + t[:, None] * DV + cols[None, :], o.to(o_ptr.dtype.element_ty),
             mask=t_ok[:, None] & (cols < DV)[None, :])


@triton.jit
def _dq_dk_kernel(q_ptr, k_ptr, v_ptr, do_ptr, states_ptr, dstates_ptr, dq_ptr, dk_ptr, log_g_ptr,
                  T, N, H,
                  C: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr, BK: tl.constexpr,
                  BV: tl.constexpr,
                  PRECISION: tl.constexpr):
    """dQ_[i] and dK_[i] for one block of d_k columns (module docstring)."""
    i, bh, jk = tl.program_id(0), tl.program_id(1).to(tl.int64), tl.program_id(2)
    log_g = tl.load(log_g_ptr + bh % H).to(tl.float32)                   # from float64
    t, t_ok, L = _chunk_range(i, T, C)
    dscores = tl.zeros([C, C], dtype=tl.float32)                             # dO V^T
    cross_q = tl.zeros([C, BK], dtype=tl.float32)                            # dO R_{i-1}^T
    cross_k = tl.zeros([C, BK], dtype=tl.float32)                            # V dS_i^T
    for v0 in range(0, DV, BV):
        do = _tile(do_ptr, bh, t, t_ok, T, DV, v0, BV)                       # (C, BV)
        v = _tile(v_ptr, bh, t, t_ok, T, DV, v0, BV)                         # (C, BV)
        dscores += tl.dot(do, tl.trans(v), input_precision=PRECISION)
        base = (bh * N + i) * DK * DV
        R_ptrs, ok = _state_block(states_ptr, base, jk * BK, v0, DK, DV, BK, BV)
        cross_q += tl.dot(do, tl.trans(tl.load(R_ptrs, mask=ok, other=0.0)),
                          input_precision=PRECISION)
        dS_ptrs, _ = _state_block(dstates_ptr, base, jk * BK, v0, DK, DV, BK, BV)
        cross_k += tl.dot(v, tl.trans(tl.load(dS_ptrs, mask=ok, other=0.0)),
                          input_precision=PRECISION)
    q = _tile(q_ptr, bh, t, t_ok, T, DK, jk * BK, BK)                        # (C, BK)
    k = _tile(k_ptr, bh, t, t_ok, T, DK, jk * BK, BK)                        # (C, BK)
    dscores = _decayed(dscores, log_g, C).to(q.dtype)
    r = tl.arange(0, C).to(tl.float32)
    xi = tl.exp((r + 1.0) * log_g)
    zeta = tl.where(t_ok, tl.exp((L - 1.0 - r) * log_g), 0.0)
    # dQ = (dO V^T ⊙ D) K + (dO R_{i-1}^T) ⊙ ξ
    dq = tl.dot(dscores, k, input_precision=PRECISION) + cross_q * xi[:, None]
    # dK = (dO V^T ⊙ D)^T Q + (V dS_i^T) ⊙ ζ
    dk = tl.dot(tl.trans(dscores), q, input_precision=PRECISION) + cross_k * zeta[:, None]
    cols = jk * BK + tl.arange(0, BK)
    offsets = bh * T * DK + t[:, None] * DK + cols[None, :]
    ok = t_ok[:, None] & (cols < DK)[None, :]
    tl.store(dq_ptr + offsets, dq.to(dq_ptr.dtype.element_ty), mask=ok)
    tl.store(dk_ptr + offsets, dk.to(dk_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _dv_kernel(q_ptr, k_ptr, do_ptr, dstates_ptr, dv_ptr, log_g_ptr, T, N, H, C: tl.constexpr,
               DK: tl.constexpr, DV: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
               PRECISION: tl.constexpr):
    """dV_[i][:, block] = (Q_[i] K_[i]^T ⊙ D)^T dO_[i][:, block] + (K_[i] dS_i[:, block]) ⊙ ζ."""
    i, bh, jv = tl.program_id(0), tl.program_id(1).to(tl.int64), tl.program_id(2)
    log_g = tl.load(log_g_ptr + bh % H).to(tl.float32)                   # from float64
    t, t_ok, L = _chunk_range(i, T, C)
    scores = tl.zeros([C, C], dtype=tl.float32)
    cross = tl.zeros([C, BV], dtype=tl.float32)
    for k0 in range(0, DK, BK):
        q = _tile(q_ptr, bh, t, t_ok, T, DK, k0, BK)                         # (C, BK)
        k = _tile(k_ptr, bh, t, t_ok, T, DK, k0, BK)                         # (C, BK)
        scores += tl.dot(q, tl.trans(k), input_precision=PRECISION)
        dS_ptrs, ok = _state_block(dstates_ptr, (bh * N + i) * DK * DV, k0, jv * BV, DK, DV, BK, BV)
        cross += tl.dot(k, tl.load(dS_ptrs, mask=ok, other=0.0), input_precision=PRECISION)
    do = _tile(do_ptr, bh, t, t_ok, T, DV, jv * BV, BV)                      # (C, BV)
    scores = _decayed(scores, log_g, C).to(do.dtype)
    r = tl.arange(0, C).to(tl.float32)
    zeta = tl.where(t_ok, tl.exp((L - 1.0 - r) * log_g), 0.0)
    dv = tl.dot(tl.trans(scores), do, input_precision=PRECISION) + cross * zeta[:, None]
    cols = jv * BV + tl.arange(0, BV)
    tl.store(dv_ptr + bh * T * DV + t[:, None] * DV + cols[None, :], dv.to(dv_ptr.dtype.element_ty),
             mask=t_ok[:, None] & (cols < DV)[None, :])


def _precision(dtype: torch.dtype) -> str:
    """float32 products in IEEE precision (tf32 would err by ~3e-4); half-precision operands as they
    are."""
    return "ieee" if dtype == torch.float32 else "tf32"


class Tile(NamedTuple):
    """How one kernel's launch is cut: each program's block of d_k and of d_v columns (powers of
    two from 16; a block wider than the head is cut to it), and the launch's warps and software
    pipeline stages."""
    block_k: int = 64
    block_v: int = 64
    warps: int = 4
    stages: int = 3


BLOCK_WIDTHS = (16, 32, 64, 128, 256)
# the kernels a Tile is set for: the chunk recursion (forward and reversed, and the scan over
# segments), the outputs, dQ with dK, and dV
KERNELS = ("states", "output", "dq_dk", "dv")
# the defaults, from one H200 sweep (results/kernels/tiles-h200.json, CUDA-graph replays): each
# within 1 % of that kernel's best tile at every length; the output pass's still the best at every
# length after its v moved before its loop (loads-before-loops-h200.json, tiles_all_moved). The
# recursion's is chosen by shape (states_tile).
TILES = {"output": Tile(64, 128, 4, 3), "dq_dk": Tile(128, 128, 4, 3),
         "dv": Tile(128, 128, 4, 3)}
WIDE_STATES, NARROW_STATES = Tile(128, 128, 8, 3), Tile(64, 64, 8, 4)


def _blocks(tile: Tile, d_k: int, d_v: int) -> tuple[int, int]:
    return (min(tile.block_k, triton.next_power_of_2(d_k)),
            min(tile.block_v, triton.next_power_of_2(d_v)))


def _launch(tile: Tile) -> dict:
    return {"num_warps": tile.warps, "num_stages": tile.stages}


def check_tiles(tiles) -> dict:
    """TILES with the given kernels' tiles replaced, and "states" where it is given; tiles a dict
    {kernel name: Tile} or None."""
    if tiles is None:
        return TILES
    if not isinstance(tiles, dict) or not set(tiles) <= set(KERNELS):
        raise ValueError(f"tiles must be a dict whose keys are among {KERNELS}, got {tiles!r}")
    for name, tile in tiles.items():
        if not (isinstance(tile, Tile) and all(type(n) is int for n in tile)
                and tile.block_k in BLOCK_WIDTHS and tile.block_v in BLOCK_WIDTHS
                and tile.warps in (1, 2, 4, 8, 16) and tile.stages >= 1):
            raise ValueError(f"tiles[{name!r}] must be a Tile with blocks among 16 … 256 (powers "
                             "of two), warps among 1 … 16 (powers of two), stages ≥ 1; got "
                             f"{tile!r}")
    return {**TILES, **tiles}


def states_tile(batch_heads: int, d_k: int, d_v: int, multiprocessors: int) -> Tile:
    """The recursion's default Tile: wide blocks where batch · heads · their blocks give at least
    half a program per multiprocessor; else narrow ones (four times the programs of a 128 × 128
    state) where those do; else, where even narrow blocks are too few and the recursion is split
    into segments anyway (split_target), wide blocks again. A wide block reads each chunk of k and
    v once; narrow blocks of a 128 × 128 state read each twice. On an H200 (65,536 tokens, 8 heads
    × 128): wide blocks made the forward 15 % faster than narrow ones at T = 1024 and 4096 (512 and
    128 wide programs; results/kernels/tiles-h200.json), narrow ones 25 % faster than wide at T =
    16,384, where wide blocks leave 32 programs for 132 multiprocessors; at T = 65,536 (8 wide
    programs, 32 narrow) wide blocks split into 16 segments made the forward 1.3 times and forward
    + backward 1.2 times as fast as narrow ones split into 5
    (results/kernels/split-wide-backward-h200.json)."""
    def programs(tile: Tile) -> int:
        return batch_heads * -(-d_k // tile.block_k) * -(-d_v // tile.block_v)
    if 2 * programs(WIDE_STATES) >= multiprocessors:
        return WIDE_STATES
    return NARROW_STATES if 2 * programs(NARROW_STATES) >= multiprocessors else WIDE_STATES


def _multiprocessors(device: torch.device) -> int:
    """The GPU's multiprocessors; 1 under the interpreter (no split, wide blocks)."""
    if device.type != "cuda":
        return 1
    return torch.cuda.get_device_properties(device).multi_processor_count


def _programs_wanted(device: torch.device, programs: int) -> int:
    """How many programs the state recursion is split up to: one per multiprocessor, but only when
    its batch · heads · state blocks give fewer than half as many. On an H200 (132 multiprocessors,
    65,536 tokens, 8 heads × 128): at T = 65,536 (batch 1, 8 whole-head programs) 16 segments
    made the forward 1.3 times as fast as narrow blocks in 5 and forward + backward 1.2 times; at
    T = 16,384 (128 narrow programs) every split tried was slower, in both passes
    (results/kernels/split-wide-backward-h200.json, segments-h200.json). Under the interpreter:
    no split (1)."""
    return split_target(programs, _multiprocessors(device))


def split_target(programs: int, multiprocessors: int) -> int:
    """_programs_wanted's rule: one program per multiprocessor where there are fewer than half."""
    return multiprocessors if 2 * programs < multiprocessors else 1


def segment_length(N: int, programs_per_segment: int, programs_wanted: int) -> int:
    """Chunks per segment G of N chunks: the most segments (each a sequential walk over its G
    chunks) whose programs do not pass programs_wanted, so that all of them run at once, in one
    wave; one segment when batch · heads · state blocks already reach it. On an H200, 8 programs
    in 17 segments (136 for 132 multiprocessors) took as long as in 8, and in 16 a quarter less
    in the forward, a fifth less in forward + backward
    (results/kernels/split-wide-backward-h200.json): the last 4 programs ran after the others, one
    whole-head program filling a multiprocessor. Any G computes the same function."""
    segments = max(1, min(N, programs_wanted // programs_per_segment))
    return max(1, -(-N // segments))


def _recursion(a, b, init, log_g, C, reverse, NS, G, store_each, tile):
    """_states_kernel over NS segments of G chunks: (states (BH, N, DA, DB) in a's dtype or None,
    each segment's end (BH·NS, DA, DB) float32)."""
    BH, T, DA = a.shape
    DB, N, H = b.shape[-1], triton.cdiv(T, C), log_g.shape[0]
    BA, BB = _blocks(tile, DA, DB)
    last = torch.empty(BH * NS, DA, DB, dtype=torch.float32, device=a.device)
    states = (torch.empty(BH, N, DA, DB, dtype=a.dtype, device=a.device) if store_each
              else None)
    _states_kernel[(BH * NS, triton.cdiv(DA, BA), triton.cdiv(DB, BB))](
        a, b, init if init is not None else last, states if store_each else last, last, log_g,
        T, N, H, NS, G, REVERSE=reverse, HAS_INIT=init is not None, STORE_EACH=store_each,
        C=C, DA=DA, DB=DB, BA=BA, BB=BB, PRECISION=_precision(a.dtype), **_launch(tile))
    return states, last


def _segment_starts(local, init, log_g, T, C, G, NS, reverse, tile):
    """Each segment's starting state (BH·NS, DA, DB) float32 from the segments' own sums."""
    BH, DA, DB = local.shape[0] // NS, *local.shape[1:]
    BA, BB = _blocks(tile, DA, DB)
    starts = torch.empty_like(local)
    _segment_scan_kernel[(BH, triton.cdiv(DA, BA), triton.cdiv(DB, BB))](
        local, init if init is not None else local, starts, log_g, T, G, NS, log_g.shape[0], C=C,
        REVERSE=reverse, HAS_INIT=init is not None, DA=DA, DB=DB, BA=BA, BB=BB, **_launch(tile))
    return starts


def _chunk_states(a, b, init, log_g, C, G, reverse, tile):
    """The chunk recursion (module docstring, pass 1), storing every chunk's state: (states
    (BH, N, DA, DB) in a's dtype, final (BH, DA, DB) float32). With several segments of G chunks,
    first each segment's own sum from zero (in parallel), then the short scan over segments for
    where each starts, then every segment's walk from its start (in parallel). log_g (H,) float64,
    tile the recursion's Tile."""
    BH, T, DA = a.shape
    N = triton.cdiv(T, C)
    NS = max(1, triton.cdiv(N, G))
    if NS > 1:
        _, local = _recursion(a, b, None, log_g, C, reverse, NS, G, False, tile)
        init = _segment_starts(local, init, log_g, T, C, G, NS, reverse, tile)
    states, last = _recursion(a, b, init, log_g, C, reverse, NS, G, True, tile)
    final = last.view(BH, NS, DA, -1)[:, 0 if reverse else NS - 1]
    return states, final


class _ChunkwiseRetention(torch.autograd.Function):
    """(q, k, v (BH, T, d) contiguous, S0 (BH, d_k, d_v) float32 or None) → (o, R_last); tiles as
    check_tiles returns them."""

    @staticmethod
    def forward(ctx, q, k, v, S0, log_g, C, G, H, tiles):
        BH, T, DK = q.shape
        DV, N = v.shape[-1], triton.cdiv(T, C)
        states, final = _chunk_states(k, v, S0, log_g, C, G, False, tiles["states"])
        o = torch.empty_like(v)
        BK, BV = _blocks(tiles["output"], DK, DV)
        if N:
            _output_kernel[(N, BH, triton.cdiv(DV, BV))](q, k, v, states, o, log_g, T, N, H, C=C,
                                                         DK=DK, DV=DV, BK=BK, BV=BV,
                                                         PRECISION=_precision(q.dtype),
                                                         **_launch(tiles["output"]))
        ctx.save_for_backward(q, k, v, states, log_g)
        ctx.C, ctx.G, ctx.H, ctx.tiles, ctx.has_init = C, G, H, tiles, S0 is not None
        return o, final

    @staticmethod
    def backward(ctx, do, d_final):
        q, k, v, states, log_g = ctx.saved_tensors
        C, H = ctx.C, ctx.H
        BH, T, DK = q.shape
        DV, N = v.shape[-1], triton.cdiv(T, C)
        do = do.contiguous()
        d_final = None if d_final is None else d_final.to(torch.float32).contiguous()
        # dS_i for every chunk, from the last chunk back; d_init = ∂loss/∂S_0
        tiles = ctx.tiles
        dstates, d_init = _chunk_states(q, do, d_final, log_g, C, ctx.G, True, tiles["states"])
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        precision = _precision(q.dtype)
        if N:
            BK, BV = _blocks(tiles["dq_dk"], DK, DV)
            _dq_dk_kernel[(N, BH, triton.cdiv(DK, BK))](q, k, v, do, states, dstates, dq, dk,
                                                        log_g, T, N, H, C=C, DK=DK, DV=DV,
                                                        BK=BK, BV=BV, PRECISION=precision,
                                                        **_launch(tiles["dq_dk"]))
            BK, BV = _blocks(tiles["dv"], DK, DV)
            _dv_kernel[(N, BH, triton.cdiv(DV, BV))](q, k, do, dstates, dv, log_g, T, N, H, C=C,
                                                     DK=DK, DV=DV, BK=BK, BV=BV,
                                                     PRECISION=precision, **_launch(tiles["dv"]))
        return dq, dk, dv, (d_init if ctx.has_init else None), None, None, None, None, None


def chunkwise_retention(q, k, v, gamma, chunk_size: int = 64, state=None, *,
                        segment_chunks: int | None = None, tiles: dict | None = None):
    """retention.chunkwise_retention on Triton kernels: the same arguments, contract and results.

    q, k (B, H, T, d_k), v (B, H, T, d_v) of one dtype (bfloat16 or float32; float16 is refused), on
    CUDA (or the CPU under TRITON_INTERPRET=1); gamma one value per head; chunk_size one of
    TILE_HEIGHTS; state (B, H, d_k, d_v) or None. Returns (o (B, H, T, d_v) in the input dtype,
    R_last (B, H, d_k, d_v) float32). Differentiable in q, k, v and state. segment_chunks, the
    chunks per segment of the state recursion (segment_length's choice when None), changes how
    the work is split, not the function; so does tiles, {kernel name: Tile} replacing entries of
    TILES (and the recursion's states_tile) for the kernels named in KERNELS.
    """
    check_torch_qkv(q, k, v)
    C = check_tile_height(chunk_size)
    state = check_torch_state(state, q, v)
    S0 = None if state is None else state.to(accumulation_dtype(q.dtype))
    G = None if segment_chunks is None else check_positive_int(segment_chunks, "segment_chunks")
    return _chunkwise(q, k, v, log_gamma_per_head(gamma, q), C, S0, G, check_tiles(tiles))


def _chunkwise(q, k, v, log_g, C, S0, G=None, tiles=TILES):
    """chunkwise_retention's body (retention._chunkwise's signature): log_g (H,) float64 on q's
    device, S0 None or (B, H, d_k, d_v) in the accumulation dtype; C a tile height; G chunks per
    segment or None; tiles a dict of Tile per kernel."""
    require_triton(q)
    if q.dtype == torch.float16:
        raise TypeError("backend='triton' does not take float16 for the chunkwise form: its "
                        "scores, rounded to float16 for the products, overflow past 65,504; use "
                        "bfloat16 or float32")
    B, H, T, DK = q.shape
    DV = v.shape[-1]
    if min(DK, DV) < 16:
        raise ValueError("backend='triton' needs head widths d_k, d_v ≥ 16 (matrix-unit tiles), "
                         f"got {DK}, {DV}")
    if "states" not in tiles:
        tiles = {**tiles, "states": states_tile(B * H, DK, DV, _multiprocessors(q.device))}
    if G is None:
        BK, BV = _blocks(tiles["states"], DK, DV)
        programs = B * H * math.ceil(DK / BK) * math.ceil(DV / BV)
        G = segment_length(math.ceil(T / C), programs, _programs_wanted(q.device, programs))
    S0 = None if S0 is None else S0.to(torch.float32).reshape(B * H, DK, DV).contiguous()
    o, final = _ChunkwiseRetention.apply(*(x.reshape(B * H, T, x.shape[-1]).contiguous()
                                           for x in (q, k, v)),
                                         S0, log_g, C, G, H, tiles)
    return o.reshape(B, H, T, DV), final.reshape(B, H, DK, DV)

"""Chunkwise retention (Eq. 7) forward and backward as Triton kernels, behind one autograd function.

The forward is two passes, as the equations fall apart:

1. chunk states, sequential in the chunk index i, parallel over (batch·head, d_k block, d_v block):
       R_i = γ^{L_i} R_{i-1} + K_[i]^T (V_[i] ⊙ ζ),   ζ_r = γ^{L_i-1-r},   R_{-1} = S_0
   written R_{i-1} - (1 - γ^{L_i}) R_{i-1} + …, with the gap 1 - γ^{L_i} from float64 (the drift of
   a rounded γ^L multiplied in N times stays out, as in retention._chunk_states). Each program keeps
   its (BK, BV) block of R in registers and stores R_{i-1} for every chunk.
2. outputs, parallel over (chunk, batch·head, d_v block), no recursion left:
       O_[i] = (Q_[i] K_[i]^T ⊙ D) V_[i] + (Q_[i] R_{i-1}) ⊙ ξ,   ξ_r = γ^{r+1}

The backward is the same two passes run on the gradients. With dS_i = ∂loss/∂R_i (the state after
chunk i; dS_{N-1} the gradient of the returned final state):
       dS_{i-1} = γ^{L_i} dS_i + Q_[i]^T (dO_[i] ⊙ ξ)                     (reverse time; dS_{-1} =
       ∂/∂S_0) dQ_[i] = (dO_[i] V_[i]^T ⊙ D) K_[i] + (dO_[i] R_{i-1}^T) ⊙ ξ
       dK_[i] = (dO_[i] V_[i]^T ⊙ D)^T Q_[i] + (V_[i] dS_i^T) ⊙ ζ
       dV_[i] = (Q_[i] K_[i]^T ⊙ D)^T dO_[i] + (K_[i] dS_i) ⊙ ζ
(notebooks/11_triton_kernel.ipynb derives them and checks them against autograd of the parallel
form).

A last chunk shorter than C has its own length L < C: loads past T are masked to zero and its ζ and
gap use L. Decay exponents inside a chunk are at most C, so they are taken in float32 from log γ.
Operands of every matrix product have the input dtype (float32 products in IEEE precision, not
tf32), sums are float32, states are stored in the input dtype between the passes and the final state
in float32.
"""
from __future__ import annotations

import math

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
def _states_kernel(a_ptr, b_ptr, init_ptr, states_ptr, last_ptr, log_g_ptr, gap_ptr,
                   T, N, H, NS, G, REVERSE: tl.constexpr, HAS_INIT: tl.constexpr,
                   STORE_EACH: tl.constexpr, C: tl.constexpr, DA: tl.constexpr, DB: tl.constexpr,
                   BA: tl.constexpr, BB: tl.constexpr, PRECISION: tl.constexpr):
    """The recursion over the G chunks of segment s (chunks s·G …), forward (a = k, b = v, weights
    ζ) or reversed (a = q, b = dO, weights ξ); program (bh·NS + s, block of a's columns, block of
    b's columns).

    X ← X - (1 - γ^{L_i}) X + A_[i]^T (B_[i] ⊙ w), from init (HAS_INIT, one segment only) or 0;
    with STORE_EACH states[bh, i] = X before chunk i's term is added; last[bh·NS + s] = X at the
    segment's end.
    """
    # int64: offsets pass 2^31
    seg, ja, jb = tl.program_id(0).to(tl.int64), tl.program_id(1), tl.program_id(2)
    bh, s = seg // NS, seg % NS
    log_g = tl.load(log_g_ptr + bh % H)
    ptrs, ok = _state_block(init_ptr, bh * DA * DB, ja * BA, jb * BB, DA, DB, BA, BB)
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
        gap = tl.load(gap_ptr + (bh % H) * 2 + (L < C).to(tl.int32))
        Bw = (Bm * w[:, None]).to(Bm.dtype)
        X = X - gap * X + tl.dot(tl.trans(A), Bw, input_precision=PRECISION)
    last_ptrs, _ = _state_block(last_ptr, seg * DA * DB, ja * BA, jb * BB, DA, DB, BA, BB)
    tl.store(last_ptrs, X, mask=ok)


@triton.jit
def _segment_scan_kernel(local_ptr, init_ptr, starts_ptr, seg_gap_ptr, NS, H,
                         HAS_INIT: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr,
                         BK: tl.constexpr, BV: tl.constexpr):
    """The state at each segment's start, from the segments' own sums (local, from zero):
    starts[bh, 0] = S_0 (or 0),  starts[bh, s] = γ^{G·C} starts[bh, s-1] + local[bh, s-1]."""
    bh, jk, jv = tl.program_id(0).to(tl.int64), tl.program_id(1), tl.program_id(2)
    ptrs, ok = _state_block(init_ptr, bh * DK * DV, jk * BK, jv * BV, DK, DV, BK, BV)
    if HAS_INIT:
        X = tl.load(ptrs, mask=ok, other=0.0)                              # (BK, BV), float32
    else:
        X = tl.zeros([BK, BV], dtype=tl.float32)
    gap = tl.load(seg_gap_ptr + bh % H)                                    # 1 - γ^{G·C}
    for s in range(NS - 1):
        out_ptrs, _ = _state_block(starts_ptr, (bh * NS + s) * DK * DV, jk * BK, jv * BV, DK, DV,
                                   BK, BV)
        tl.store(out_ptrs, X, mask=ok)
        in_ptrs, _ = _state_block(local_ptr, (bh * (NS - 1) + s) * DK * DV, jk * BK, jv * BV, DK,
                                  DV, BK, BV)
        X = X - gap * X + tl.load(in_ptrs, mask=ok, other=0.0)
    out_ptrs, _ = _state_block(starts_ptr, (bh * NS + NS - 1) * DK * DV, jk * BK, jv * BV, DK, DV,
                               BK, BV)
    tl.store(out_ptrs, X, mask=ok)


@triton.jit
def _output_kernel(q_ptr, k_ptr, v_ptr, starts_ptr, states_ptr, o_ptr, final_ptr, log_g_ptr,
                   gap_ptr, T, N, H, NS, G, HAS_START: tl.constexpr, STORE_STATES: tl.constexpr,
                   C: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr, BK: tl.constexpr,
                   BV: tl.constexpr, PRECISION: tl.constexpr):
    """The outputs of segment s's chunks for one block of d_v columns, the state carried along in
    registers (program (block of d_v columns, bh·NS + s)); BK ≥ d_k, the whole key width:
        O_[i] = (Q_[i] K_[i]^T ⊙ D) V_[i] + (Q_[i] R_{i-1}) ⊙ ξ,   then R_i as _states_kernel does.
    R starts at starts[bh·NS + s] (HAS_START) or 0; with STORE_STATES every R_{i-1} is stored for
    the backward; the last segment's program writes the final state."""
    jv, seg = tl.program_id(0), tl.program_id(1).to(tl.int64)
    bh, s = seg // NS, seg % NS
    log_g = tl.load(log_g_ptr + bh % H)
    ptrs, ok = _state_block(starts_ptr, seg * DK * DV, 0, jv * BV, DK, DV, BK, BV)
    if HAS_START:
        X = tl.load(ptrs, mask=ok, other=0.0)                              # (BK, BV), float32
    else:
        X = tl.zeros([BK, BV], dtype=tl.float32)
    r = tl.arange(0, C)
    xi = tl.exp((r + 1.0) * log_g)                                         # ξ_r = γ^(r+1)
    first, n = s * G, tl.minimum(G, N - s * G)
    for step in range(n):
        i = first + step
        t, t_ok, L = _chunk_range(i, T, C)
        R = X.to(q_ptr.dtype.element_ty)                                   # R_{i-1}, input dtype
        if STORE_STATES:
            out_ptrs, _ = _state_block(states_ptr, (bh * N + i) * DK * DV, 0, jv * BV, DK, DV, BK,
                                       BV)
            tl.store(out_ptrs, R, mask=ok)
        q = _tile(q_ptr, bh, t, t_ok, T, DK, 0, BK)                          # (C, BK)
        k = _tile(k_ptr, bh, t, t_ok, T, DK, 0, BK)                          # (C, BK)
        v = _tile(v_ptr, bh, t, t_ok, T, DV, jv * BV, BV)                    # (C, BV)
        scores = tl.dot(q, tl.trans(k), input_precision=PRECISION)          # (C, C), float32
        # a non-finite v_s[c] may reach o_r[c] for r ≥ s only: the product runs on finite values
        # and the rows from the first non-finite one on are set to NaN (a product with the zeros
        # of D would not keep it out of the rows above); later chunks receive it through R
        v_bad = (v - v) != 0                                                 # NaN or ±inf
        first_bad = tl.min(tl.where(v_bad, r[:, None], C), axis=0)           # (BV,), C where none
        v_ok = tl.where(v_bad, 0.0, v).to(v.dtype)
        # (Q K^T ⊙ D) V, the scores rounded to the input dtype like the PyTorch forms'
        o = tl.dot(_decayed(scores, log_g, C).to(v.dtype), v_ok, input_precision=PRECISION)
        o = tl.where(r[:, None] >= first_bad[None, :], float("nan"), o)
        # + (Q R_{i-1}) ⊙ ξ
        o += tl.dot(q, R, input_precision=PRECISION) * xi[:, None]
        cols = jv * BV + tl.arange(0, BV)
        tl.store(o_ptr + bh * T * DV + t[:, None] * DV + cols[None, :],
                 o.to(o_ptr.dtype.element_ty), mask=t_ok[:, None] & (cols < DV)[None, :])
        # R_i = γ^L R_{i-1} + K_[i]^T (V_[i] ⊙ ζ),  ζ_r = γ^(L-1-r), zero past the chunk's end
        zeta = tl.where(t_ok, tl.exp((L - 1.0 - r) * log_g), 0.0)
        gap = tl.load(gap_ptr + (bh % H) * 2 + (L < C).to(tl.int32))
        vz = (v * zeta[:, None]).to(v.dtype)
        X = X - gap * X + tl.dot(tl.trans(k), vz, input_precision=PRECISION)
    if s == NS - 1:
        final_ptrs, _ = _state_block(final_ptr, bh * DK * DV, 0, jv * BV, DK, DV, BK, BV)
        tl.store(final_ptrs, X, mask=ok)


@triton.jit
def _dq_dk_kernel(q_ptr, k_ptr, v_ptr, do_ptr, states_ptr, dstates_ptr, dq_ptr, dk_ptr, log_g_ptr,
                  T, N, H,
                  C: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr, BK: tl.constexpr,
                  BV: tl.constexpr,
                  PRECISION: tl.constexpr):
    """dQ_[i] and dK_[i] for one block of d_k columns (module docstring)."""
    i, bh, jk = tl.program_id(0), tl.program_id(1).to(tl.int64), tl.program_id(2)
    log_g = tl.load(log_g_ptr + bh % H)
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
    log_g = tl.load(log_g_ptr + bh % H)
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


def _blocks(d_k: int, d_v: int) -> tuple[int, int]:
    return min(64, triton.next_power_of_2(d_k)), min(64, triton.next_power_of_2(d_v))


# the output pass: a program holds the whole key width and OUTPUT_BV value columns of the state
OUTPUT_BV = 64
OUTPUT_LAUNCH = {"num_warps": 4, "num_stages": 3}


def _output_blocks(d_k: int, d_v: int) -> tuple[int, int]:
    return triton.next_power_of_2(d_k), min(OUTPUT_BV, triton.next_power_of_2(d_v))


def _decay_constants(log_g: torch.Tensor, C: int, T: int):
    """log γ (H,) and the gaps 1 - γ^C, 1 - γ^L of a whole and of the ragged last chunk (H, 2),
    float32."""
    last = T - (math.ceil(T / C) - 1) * C if T else C
    gaps = -torch.expm1(torch.stack((C * log_g, last * log_g), dim=1))        # (H, 2), from float64
    return log_g.to(torch.float32).contiguous(), gaps.to(torch.float32).contiguous()


def _programs_wanted(device: torch.device) -> int:
    """Programs that keep the GPU busy: two per multiprocessor (one under the interpreter)."""
    if device.type != "cuda":
        return 1
    return 2 * torch.cuda.get_device_properties(device).multi_processor_count


def segment_length(N: int, programs_per_segment: int, programs_wanted: int) -> int:
    """Chunks per segment G of N chunks: the fewest segments (each a sequential walk over its G
    chunks) that give the output pass programs_wanted programs, one segment when batch · heads ·
    d_v blocks already do. Any G computes the same function."""
    segments = max(1, min(N, -(-programs_wanted // programs_per_segment)))
    return max(1, -(-N // segments))


def _run_states(a, b, init, log_g32, gaps, C, reverse, dtype):
    """The chunk recursion (module docstring) over the whole sequence, storing every chunk's
    state: (states (BH, N, DA, DB) in dtype, final float32)."""
    BH, T, DA = a.shape
    DB, N, H = b.shape[-1], triton.cdiv(T, C), log_g32.shape[0]
    BA, BB = _blocks(DA, DB)
    states = torch.empty(BH, N, DA, DB, dtype=dtype, device=a.device)
    final = torch.empty(BH, DA, DB, dtype=torch.float32, device=a.device)
    grid = (BH, triton.cdiv(DA, BA), triton.cdiv(DB, BB))
    _states_kernel[grid](a, b, init if init is not None else final, states, final, log_g32, gaps,
                         T, N, H, 1, max(N, 1), REVERSE=reverse, HAS_INIT=init is not None,
                         STORE_EACH=True, C=C, DA=DA, DB=DB, BA=BA, BB=BB,
                         PRECISION=_precision(dtype))
    return states, final


def _segment_starts(k, v, S0, log_g, C, G, NS):
    """The state at the start of each of NS segments of G chunks (BH, NS, d_k, d_v) float32: the
    segments' own sums from zero, in parallel, then the short scan over segments."""
    BH, T, DK = k.shape
    DV, N, H = v.shape[-1], triton.cdiv(T, C), log_g.shape[0]
    log_g32, gaps = _decay_constants(log_g, C, T)
    BK, BV = _blocks(DK, DV)
    local = torch.empty(BH * (NS - 1), DK, DV, dtype=torch.float32, device=k.device)
    _states_kernel[(BH * (NS - 1), triton.cdiv(DK, BK), triton.cdiv(DV, BV))](
        k, v, local, local, local, log_g32, gaps, T, N, H, NS - 1, G, REVERSE=False,
        HAS_INIT=False, STORE_EACH=False, C=C, DA=DK, DB=DV, BA=BK, BB=BV,
        PRECISION=_precision(k.dtype))
    seg_gap = -torch.expm1(G * C * log_g).to(torch.float32).contiguous()      # (H,), from float64
    starts = torch.empty(BH, NS, DK, DV, dtype=torch.float32, device=k.device)
    _segment_scan_kernel[(BH, triton.cdiv(DK, BK), triton.cdiv(DV, BV))](
        local, S0 if S0 is not None else local, starts, seg_gap, NS, H, HAS_INIT=S0 is not None,
        DK=DK, DV=DV, BK=BK, BV=BV)
    return starts


def _forward(q, k, v, S0, log_g, C, G, store_states):
    """o, the final state and (store_states) every chunk's state R_{i-1} (BH, N, d_k, d_v) in the
    input dtype: segment starts (when there are several segments), then the output pass."""
    BH, T, DK = q.shape
    DV, N, H = v.shape[-1], triton.cdiv(T, C), log_g.shape[0]
    NS = max(1, triton.cdiv(N, G))
    starts = S0 if NS == 1 else _segment_starts(k, v, S0, log_g, C, G, NS)
    log_g32, gaps = _decay_constants(log_g, C, T)
    o = torch.empty_like(v)
    final = torch.empty(BH, DK, DV, dtype=torch.float32, device=q.device)
    states = (torch.empty(BH, N, DK, DV, dtype=q.dtype, device=q.device) if store_states
              else final)
    BK, BV = _output_blocks(DK, DV)
    _output_kernel[(triton.cdiv(DV, BV), BH * NS)](
        q, k, v, starts if starts is not None else final, states, o, final, log_g32, gaps, T, N,
        H, NS, G, HAS_START=starts is not None, STORE_STATES=store_states, C=C, DK=DK, DV=DV,
        BK=BK, BV=BV, PRECISION=_precision(q.dtype), **OUTPUT_LAUNCH)
    return o, final, (states if store_states else None)


class _ChunkwiseRetention(torch.autograd.Function):
    """(q, k, v (BH, T, d) contiguous, S0 (BH, d_k, d_v) float32 or None) → (o, R_last)."""

    @staticmethod
    def forward(ctx, q, k, v, S0, log_g, C, G, H):
        needs_backward = any(ctx.needs_input_grad[:4])
        o, final, states = _forward(q, k, v, S0, log_g, C, G, needs_backward)
        if needs_backward:
            ctx.save_for_backward(q, k, v, states, log_g)
            ctx.C, ctx.H, ctx.has_init = C, H, S0 is not None
        return o, final

    @staticmethod
    def backward(ctx, do, d_final):
        q, k, v, states, log_g = ctx.saved_tensors
        C, H = ctx.C, ctx.H
        BH, T, DK = q.shape
        DV, N = v.shape[-1], triton.cdiv(T, C)
        log_g32, gaps = _decay_constants(log_g, C, T)
        do = do.contiguous()
        d_final = None if d_final is None else d_final.to(torch.float32).contiguous()
        # dS_i for every chunk, from the last chunk back; d_init = ∂loss/∂S_0
        dstates, d_init = _run_states(q, do, d_final, log_g32, gaps, C, True, q.dtype)
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        BK, BV = _blocks(DK, DV)
        precision = _precision(q.dtype)
        if N:
            _dq_dk_kernel[(N, BH, triton.cdiv(DK, BK))](q, k, v, do, states, dstates, dq, dk,
                                                        log_g32, T, N, H, C=C, DK=DK, DV=DV,
                                                        BK=BK, BV=BV, PRECISION=precision)
            _dv_kernel[(N, BH, triton.cdiv(DV, BV))](q, k, do, dstates, dv, log_g32, T, N, H, C=C,
                                                     DK=DK, DV=DV, BK=BK, BV=BV,
                                                     PRECISION=precision)
        return dq, dk, dv, (d_init if ctx.has_init else None), None, None, None, None


def chunkwise_retention(q, k, v, gamma, chunk_size: int = 64, state=None, *,
                        segment_chunks: int | None = None):
    """retention.chunkwise_retention on Triton kernels: the same arguments, contract and results.

    q, k (B, H, T, d_k), v (B, H, T, d_v) of one dtype (bfloat16 or float32; float16 is refused), on
    CUDA (or the CPU under TRITON_INTERPRET=1); gamma one value per head; chunk_size one of
    TILE_HEIGHTS; state (B, H, d_k, d_v) or None. Returns (o (B, H, T, d_v) in the input dtype,
    R_last (B, H, d_k, d_v) float32). Differentiable in q, k, v and state. segment_chunks, the
    chunks per segment of the forward (segment_length's choice when None), changes the work's
    split only, not the function.
    """
    check_torch_qkv(q, k, v)
    C = check_tile_height(chunk_size)
    state = check_torch_state(state, q, v)
    S0 = None if state is None else state.to(accumulation_dtype(q.dtype))
    G = None if segment_chunks is None else check_positive_int(segment_chunks, "segment_chunks")
    return _chunkwise(q, k, v, log_gamma_per_head(gamma, q), C, S0, G)


def _chunkwise(q, k, v, log_g, C, S0, G=None):
    """chunkwise_retention's body (retention._chunkwise's signature): log_g (H,) float64 on q's
    device, S0 None or (B, H, d_k, d_v) in the accumulation dtype; C a tile height."""
    require_triton(q)
    if q.dtype == torch.float16:
        raise TypeError("backend='triton' does not take float16 for the chunkwise form: its "
                        "scores, rounded to "
                        "float16 for the products, overflow past 65,504; use bfloat16 or float32")
    B, H, T, DK = q.shape
    DV = v.shape[-1]
    if min(DK, DV) < 16:
        raise ValueError("backend='triton' needs head widths d_k, d_v ≥ 16 (matrix-unit tiles), "
                         f"got {DK}, {DV}")
    if G is None:
        G = segment_length(math.ceil(T / C), B * H * math.ceil(DV / _output_blocks(DK, DV)[1]),
                           _programs_wanted(q.device))
    S0 = None if S0 is None else S0.to(torch.float32).reshape(B * H, DK, DV).contiguous()
    o, final = _ChunkwiseRetention.apply(*(x.reshape(B * H, T, x.shape[-1]).contiguous()
                                           for x in (q, k, v)),
                                         S0, log_g, C, G, H)
    return o.reshape(B, H, T, DV), final.reshape(B, H, DK, DV)

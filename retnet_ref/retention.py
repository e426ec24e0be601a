"""Retention in PyTorch: batched, one γ per head, the three forms of the paper (Eq. 5, 6, 7).

Shapes: q, k (B, H, T, d_k), v (B, H, T, d_v), state (B, H, d_k, d_v); gamma a length-H sequence or
tensor. Unnormalised retention, exactly as `retnet_ref.reference`, head by head:

    o_n = Σ_{m≤n} γ^(n-m) (q_n · k_m) v_m + γ^(n+1) q_n S_0

Precision: log γ is taken in float64 and every decay factor γ^p is exp(p · log γ) with the exponent
in float64, rounded once to the dtype of what it multiplies: the "accumulation dtype" (float32 for
bf16/fp16 inputs, the input dtype otherwise) for states and sums, the input dtype for input-dtype
tensors (never a rounded γ multiplied again and again; same-dtype products also run at memory speed
on a GPU, mixed ones several times slower). Every matrix product takes operands in the input dtype
(tensor cores on a GPU; they accumulate in float32 inside). States are carried and summed in the
accumulation dtype (the recurrent form's float32 sums compensated). The output has the input dtype.

Each public function checks its arguments once and hands them to a private body (`_parallel`,
`_recurrent`, `_chunkwise`) that checks nothing and reads no tensor value on the host, so that the
layers, torch.compile and CUDA graphs can call the bodies directly.
"""
from __future__ import annotations

import functools

import torch

from ._checks import (
    check_gamma_tensor,
    check_gammas,
    check_positive_int,
    check_torch_qkv,
    check_torch_state,
)
from .decay import causal_decay, decay_matrix_columns_reversed, xi, zeta
from .memory import available_bytes


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half-precision inputs, the input dtype for float32 and float64."""
    return torch.promote_types(dtype, torch.float32)


def log_gamma_per_head(gamma, q: torch.Tensor) -> torch.Tensor:
    """log γ per head, float64 on q's device: (H,). gamma a sequence, array or tensor, checked."""
    if isinstance(gamma, torch.Tensor):
        check_gamma_tensor(gamma, q.shape[1])
        return torch.log(gamma.to(q.device, torch.float64))          # (H,)
    values = check_gammas(gamma, q.shape[1])
    if torch.compiler.is_compiling():      # traced once into the graph: no cache to keep
        return _log_gammas(values, q.device)
    return _shared_log_gammas(values, q.device)


def _log_gammas(values: tuple[float, ...], device: torch.device) -> torch.Tensor:
    return torch.log(torch.tensor(values, dtype=torch.float64, device=device))   # (H,)


@functools.lru_cache(maxsize=64)
def _shared_log_gammas(values: tuple[float, ...], device: torch.device) -> torch.Tensor:
    """_log_gammas made once per (values, device) and shared by every eager call with the same γ:
    a call copies nothing from the host (a copy from pageable memory costs a GPU forward ~0.2 ms,
    and a CUDA-graph capture refuses it). Never modified in place; made outside inference mode so
    that autograd may save it."""
    with torch.inference_mode(False):
        return _log_gammas(values, device)


def _initial_state(state, q, v, acc):
    """The given state S_0 (checked against q and v) in the accumulation dtype acc, or zeros for
    None."""
    state = check_torch_state(state, q, v)
    if state is None:
        # (B, H, d_k, d_v)
        return q.new_zeros(q.shape[0], q.shape[1], q.shape[3], v.shape[3], dtype=acc)
    return state.to(acc)


# ---------------------------------------------------------------- non-finite inputs stay causal


def finite_keys_and_values(k, v):
    """k and v with every non-finite entry replaced by 0, and where those entries were (bool, same
    shapes).

    A matrix product cannot keep a NaN or inf at a later position out of an earlier row: the causal
    mask is a 0 there, and NaN · 0 = NaN, inf · 0 = NaN. So the parallel and chunkwise forms compute
    on finite keys and values and then put the non-finite values back where they belong
    (with_non_finite_after), which is what the recurrent form, a sum over the past only, does
    anyway.
    """
    bad_k, bad_v = ~torch.isfinite(k), ~torch.isfinite(v)
    return k.masked_fill(bad_k, 0), v.masked_fill(bad_v, 0), bad_k, bad_v


def with_non_finite_after(o, S, bad_k, bad_v):
    """o (B, H, T, d_v) and the final state S (B, H, d_k, d_v) as the non-finite inputs make them.

    A non-finite key at position m makes every q_n · k_m with n ≥ m non-finite: all of o_n from m
    on, and row a of the state for a non-finite k_m[a]. A non-finite v_m[c] makes column c of o_n
    from m on and of the state non-finite. Earlier positions keep their values. Such entries become
    NaN.
    """
    # (B, H, T, 1): a bad key at or before n
    key_seen = bad_k.any(-1).cummax(dim=2).values[..., None]
    value_seen = bad_v.cummax(dim=2).values                            # (B, H, T, d_v)
    o = o.masked_fill(key_seen | value_seen, float("nan"))
    if S is not None:
        S = S.masked_fill(bad_k.any(2)[..., :, None] | bad_v.any(2)[..., None, :], float("nan"))
    return o, S


# ---------------------------------------------------------------- parallel (Eq. 5)


def check_scores_fit(q):
    """The parallel form holds one (B, H, T, T) score tensor in q's dtype: a call whose scores
    cannot fit in the memory the device has free is refused with MemoryError (instead of a crash, or
    the system killing the process). Skipped under torch.compile, where nothing may be read on the
    host."""
    if torch.compiler.is_compiling():
        return
    B, H, T, _ = q.shape
    need = B * H * T * T * q.element_size()
    free = available_bytes(q.device)
    if free is not None and need > free:
        raise MemoryError(f"parallel_retention needs {need / 2 ** 30:.1f} GiB for its (B, H, T, T) "
                          f"= ({B}, {H}, {T}, {T}) {q.dtype} scores, {free / 2 ** 30:.1f} GiB are "
                          "available: use chunkwise_retention (memory linear in T) "
                          "or a smaller batch")



def parallel_retention(q, k, v, gamma):
    """Parallel form (Eq. 5): O = (Q K^T ⊙ D) V, D_nm = γ^(n-m) for n ≥ m, else 0.  O(T² d) time."""
    check_torch_qkv(q, k, v)
    return _parallel(q, k, v, log_gamma_per_head(gamma, q))


def _parallel(q, k, v, log_g):
    """Eq. 5 with D never stored: the keys and values in reverse order meet D as a strided view.

    Reversing the sequence axis of k and v reverses the columns of Q K^T and the rows of V, so
    (Q K^T ⊙ D) V = (Q K_rev^T ⊙ D_rev) V_rev with D_rev = D with its columns reversed, a view of
    2T-1 numbers per head (decay.decay_matrix_columns_reversed). The only T×T tensor is the score
    matrix, in the input dtype, which the decay multiplies in place. Non-finite keys and values
    reach only their own and later positions (finite_keys_and_values).
    """
    if q.dtype == torch.float16:                 # q·k past 65,504 would overflow: scores in float32
        return _parallel(q.float(), k.float(), v.float(), log_g).half()
    check_scores_fit(q)
    k, v, bad_k, bad_v = finite_keys_and_values(k, v)
    D_rev = decay_matrix_columns_reversed(q.shape[2], log_g, q.dtype)   # (H, T, T) view
    # Q K^T ⊙ D, columns reversed
    scores = (q @ k.flip(2).transpose(-1, -2)).mul_(D_rev)           # (B, H, T, T)
    # O = (Q K^T ⊙ D) V
    return with_non_finite_after(scores @ v.flip(2), None, bad_k, bad_v)[0]   # (B, H, T, d_v)


# ---------------------------------------------------------------- recurrent (Eq. 6)


def recurrent_retention(q, k, v, gamma, state=None):
    """Recurrent form (Eq. 6): S_{n+1} = γ S_n + k_n^T v_n, o_n = q_n S_{n+1}.  O(1) state per
    token.

    Returns (o, S_T); S_T has the accumulation dtype. A float32 state is summed with compensation
    (compensated_decay_and_add), so that its rounding error does not grow with T.
    """
    check_torch_qkv(q, k, v)
    acc = accumulation_dtype(q.dtype)
    return _recurrent(q, k, v, log_gamma_per_head(gamma, q), _initial_state(state, q, v, acc))


def decay_gap(log_g: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """1 - γ per head as (H, 1, 1), from log γ in float64, stored in dtype.

    Rounding the gap errs by 2^-24 of the gap, not of γ, so the decay applied at every step does not
    drift with the head's memory 1/(1 - γ) (notebooks/10_numerics.ipynb).
    """
    return (-torch.expm1(log_g)).to(dtype)[:, None, None]            # (H, 1, 1)


def decay_and_add(S, k_n, v_n, gap, inplace: bool = False):
    """S_{n+1} = γ S_n + k_n^T v_n, written S_n - (1 - γ) S_n + k_n^T v_n.

    S (B, H, d_k, d_v), k_n (B, H, d_k), v_n (B, H, d_v), gap (H, 1, 1). Two passes over S: the
    decay, then the outer product as a matrix product of depth one (no outer product stored), summed
    in S's dtype; inplace=True overwrites S (a decode step), otherwise S is left as it was.
    """
    B, H, d_k, d_v = S.shape
    S = S.addcmul_(gap, S, value=-1.0) if inplace else torch.addcmul(S, gap, S, value=-1.0)
    # + k_n^T v_n
    S.view(B * H, d_k, d_v).baddbmm_(k_n.reshape(B * H, d_k, 1).to(S.dtype),
                                     v_n.reshape(B * H, 1, d_v).to(S.dtype))
    return S                                                          # (B, H, d_k, d_v)


def compensated_decay_and_add(S, e, k_n, v_n, gap):
    """S_{n+1} = γ S_n + k_n^T v_n as a compensated (Kahan) sum: (S_{n+1}, e_{n+1}), S + e the
    state.

    S, e (B, H, d_k, d_v), k_n (B, H, d_k), v_n (B, H, d_v), gap (H, 1, 1) as decay_and_add. A plain
    float32 sum rounds the state at every step (twice in decay_and_add: the decay, then the outer
    product), an error of u |S| each time at random signs: a random walk, about √N u after N
    remembered steps. Here the step's change x_n is formed from small numbers (its roundings are u
    |x_n|, not u |S|), the one rounding of S_n + x_n is recovered by Fast2Sum (exactly where |S_n| ≥
    |x_n|; Higham, "Accuracy and Stability of Numerical Algorithms", §4.3) and carried in e into the
    next step's change. The exact step would also decay e by (1 - γ) e_n; that term is left out: it
    is at most u (1 - γ) |S|, the size of the rounding of (1 - γ) S_n, which the step commits
    anyway. notebooks/10_numerics.ipynb, §4c.
    """
    B, H, d_k, d_v = S.shape
    # x_n = k_n^T v_n - (1 - γ) S_n + e_n: the step's change, with what the last rounding lost
    x = torch.addcmul(e, gap, S, value=-1.0)
    x.view(B * H, d_k, d_v).baddbmm_(k_n.reshape(B * H, d_k, 1).to(S.dtype),
                                     v_n.reshape(B * H, 1, d_v).to(S.dtype))
    # S_{n+1} = fl(S_n + x_n)
    S_next = S + x
    # e_{n+1} = x_n - (S_{n+1} - S_n): the rounding error of S_n + x_n, exactly (Fast2Sum)
    return S_next, x - (S_next - S)                                   # (B, H, d_k, d_v) each


def compensates(dtype: torch.dtype) -> bool:
    """Whether the recurrent form sums a state of this dtype with compensation: below float64 only.

    A plain float32 sum crosses the float32 tolerance by T = 16,384 on the slowest default heads;
    float64's plain sum errs 2^29 times less (1.6e-14 at T = 65,536, one seed; tolerance 1e-12): it
    keeps the plain sum.
    """
    return dtype != torch.float64


def _recurrent(q, k, v, log_g, S, compensated: bool | None = None):
    """The loop of Eq. 6 over the T tokens, the state summed with compensation where
    compensates(S.dtype) and T > 1, or as `compensated` asks (False: the plain sum, which
    notebooks/10_numerics.ipynb measures).

    One token (a decode step from a given state) keeps the plain step: there is no sum over time to
    compensate, and the compensated step costs two thirds more time there (measured on the CPU).
    """
    acc = S.dtype
    gap = decay_gap(log_g, acc)                            # (H, 1, 1)
    qa = q.to(acc)                                         # k and v enter S's sums as they are
    if compensated is None:
        compensated = compensates(acc) and q.shape[2] > 1
    e = torch.zeros_like(S) if compensated else None       # what the state's roundings lost
    out = []
    for n in range(q.shape[2]):
        if e is None:
            S = decay_and_add(S, k[:, :, n], v[:, :, n], gap)         # (B, H, d_k, d_v)
        else:
            S, e = compensated_decay_and_add(S, e, k[:, :, n], v[:, :, n], gap)
        # o_n = q_n S_{n+1}
        out.append((qa[:, :, n, None, :] @ S).squeeze(-2))            # (B, H, d_v)
    if not out:                                            # T = 0: a copy, never the caller's state
        return v.new_zeros(v.shape), S.clone()
    return torch.stack(out, dim=2).to(v.dtype), S          # (B, H, T, d_v)


# ---------------------------------------------------------------- chunkwise (Eq. 7)


def chunkwise_retention(q, k, v, gamma, chunk_size, state=None):
    """Chunkwise form (Eq. 7, arXiv v4): matrix products inside each chunk, all chunks at once.

        O_[i] = (Q_[i] K_[i]^T ⊙ D) V_[i] + (Q_[i] R_{i-1}) ⊙ ξ,     ξ_r = γ^(r+1)
        R_i   = K_[i]^T (V_[i] ⊙ ζ) + γ^C R_{i-1},                    ζ_r = γ^(C-r-1)

    C = chunk_size; a last chunk shorter than C is one more chunk with its own length.
    Returns (o, R_last).
    """
    check_torch_qkv(q, k, v)
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    state = check_torch_state(state, q, v)
    S = None if state is None else state.to(accumulation_dtype(q.dtype))
    return _chunkwise(q, k, v, log_gamma_per_head(gamma, q), chunk_size, S)


def _chunkwise(q, k, v, log_g, chunk_size, S):
    """The whole chunks in one batched pass, then the ragged rest (shorter than a chunk) as one
    chunk.

    S: the initial state in the accumulation dtype, or None for zeros (its term is then skipped).
    Non-finite keys and values reach only their own and later positions (finite_keys_and_values).
    """
    if q.dtype == torch.float16:               # q·k past 65,504 would overflow: products in float32
        o, S = _chunkwise(q.float(), k.float(), v.float(), log_g, chunk_size, S)
        return o.half(), S
    k, v, bad_k, bad_v = finite_keys_and_values(k, v)
    o, S = _finite_chunkwise(q, k, v, log_g, chunk_size, S)
    return with_non_finite_after(o, S, bad_k, bad_v)


def _finite_chunkwise(q, k, v, log_g, chunk_size, S):
    T = q.shape[2]
    whole = T - T % chunk_size
    pieces = []
    if whole:
        o, S = _equal_chunks(q[:, :, :whole], k[:, :, :whole], v[:, :, :whole], log_g, chunk_size,
                             S)
        pieces.append(o)
    if whole < T:
        o, S = _equal_chunks(q[:, :, whole:], k[:, :, whole:], v[:, :, whole:], log_g, T - whole, S)
        pieces.append(o)
    if not pieces:                                         # T = 0: a copy, never the caller's state
        if S is None:
            return v.new_zeros(v.shape), q.new_zeros(*q.shape[:2], q.shape[3], v.shape[3],
                                                    dtype=accumulation_dtype(q.dtype))
        return v.new_zeros(v.shape), S.clone()             # (B, H, 0, d_v)
    return (pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=2)), S   # (B, H, T, d_v)


def _equal_chunks(q, k, v, log_g, C, S0):
    """Eq. 7 for T = N·C, every chunk at once: (o (B, H, T, d_v), R after the last chunk)."""
    acc = accumulation_dtype(q.dtype)
    B, H, T, d_k = q.shape
    d_v, N = v.shape[-1], T // C
    qc, kc, vc = (x.reshape(B, H, N, C, x.shape[-1]) for x in (q, k, v))   # (B, H, N, C, d)
    # inner-chunk term of every chunk: (Q K^T ⊙ D) V
    D = causal_decay(C, log_g, q.dtype)[:, None]                  # (H, 1, C, C)
    inner = (qc @ kc.transpose(-1, -2)).mul_(D) @ vc              # (B, H, N, C, d_v)
    # each chunk's own contribution to the state: U_i = K_[i]^T (V_[i] ⊙ ζ)
    zeta_c = zeta(C, log_g).to(v.dtype)[:, None, :, None]         # (H, 1, C, 1)
    U = kc.transpose(-1, -2) @ (vc * zeta_c)                      # (B, H, N, d_k, d_v)
    R = _chunk_states(U.to(acc), log_g, C, S0)                    # (B, H, N+1, d_k, d_v)
    # cross-chunk term: + (Q_[i] R_{i-1}) ⊙ ξ
    xi_c = xi(C, log_g).to(q.dtype)[:, None, :, None]             # (H, 1, C, 1)
    o = inner.addcmul_(qc @ R[:, :, :N].to(q.dtype), xi_c)        # (B, H, N, C, d_v)
    return o.reshape(B, H, T, d_v), R[:, :, N].clone()            # (B, H, T, d_v), (B, H, d_k, d_v)


def exact_accumulation(t: torch.Tensor):
    """A context in which the products that build a state keep their float32 operands:
    torch.autocast is off there. Under autocast a float32 product is computed and returned in the
    autocast dtype, so a state built inside it would come back in bfloat16, a rounding per chunk
    that the float32 state exists to avoid; the products of q, k and v keep whatever dtype autocast
    gave them."""
    return torch.autocast(t.device.type, enabled=False)


def _chunk_states(U, log_g, C, S0):
    """R_{i-1} for i = 0..N, the state each chunk starts from, and the final one: (B, H, N+1, d_k,
    d_v).

    The chunk states obey Eq. 6 one level up: R_i = γ^C R_{i-1} + U_i with R_{-1} = S_0. Unrolled,
    R_{i-1} = γ^(C i) S_0 + Σ_{j<i} γ^(C (i-1-j)) U_j: the parallel form's decay matrix for γ^C, of
    size N+1, applied along the chunk axis. Every power comes straight from float64 log γ, so no
    rounded γ^C is multiplied in N times. S0 None stands for zeros.
    """
    B, H, N, d_k, d_v = U.shape
    D = causal_decay(N + 1, C * log_g, U.dtype)                   # (H, N+1, N+1), D_ij = γ^(C(i-j))
    # Σ_{j<i} γ^(C (i-1-j)) U_j: columns 1..N of D pair with U_0..U_{N-1}
    with exact_accumulation(U):
        R = (D[:, :, 1:] @ U.reshape(B, H, N, d_k * d_v)).reshape(B, H, N + 1, d_k, d_v)
    if S0 is None:
        return R
    # + γ^(C i) S_0: column 0 of D
    return R.addcmul_(D[:, :, 0, None, None], S0[:, :, None])     # (B, H, N+1, d_k, d_v)

"""The float64 / complex128 reference: the paper's equations one to one, one head, loops allowed.

Unnormalised retention of one head, with positions n, m = 0..T-1 and an optional initial state S_0
(S_n is the state after the first n tokens, as in the paper, whose tokens count from 1):

    o_n = Σ_{m≤n} γ^(n-m) (q_n · k_m) v_m + γ^(n+1) q_n S_0

q and k are already rotated (real pairs or the complex Θ / conj Θ form); "·" is the plain product
Σ_j q_nj k_mj with no further conjugation. With complex q and k the output is complex.
Each function returns the output and, where the paper defines one, the final state S_T (d_k, d_v).
"""
from __future__ import annotations

import numpy as np

from ._checks import check_gamma_value, check_numpy_qkv, check_numpy_state, check_positive_int
from .decay import chunk_decay, decay_matrix, log_gamma, xi, zeta


def _as_inputs(q, k, v, state):
    q, k, v = check_numpy_qkv(q, k, v)
    state = check_numpy_state(state, q.shape[1], v.shape[1])
    dtype = np.result_type(q, k, v, np.float64, *(() if state is None else (state,)))
    q, k, v = (x.astype(dtype) for x in (q, k, v))                  # (T, d) each
    if state is None:
        state = np.zeros((q.shape[1], v.shape[1]), dtype=dtype)     # (d_k, d_v)
    return q, k, v, state.astype(dtype)


# ---------------------------------------------------------------- the general linear recurrence


def linear_recurrence(q, k, v, A, state=None):
    """s_{n+1} = A s_n + k_n^T v_n,  o_n = q_n s_{n+1}  (paper Eq. 1) with a full d×d matrix A.

    Unrolled: o_n = Σ_{m≤n} q_n A^(n-m) k_m^T v_m + q_n A^(n+1) s_0.  Returns (o, s_T).
    """
    q, k, v, s = _as_inputs(q, k, v, state)
    A = np.asarray(A)
    d = q.shape[1]
    if A.shape != (d, d):
        raise ValueError(f"A must be square with the key dimension, expected {(d, d)}, got "
                         f"{A.shape}")
    s = s.astype(np.result_type(s, A))
    out = []
    for n in range(q.shape[0]):
        # s_{n+1} = A s_n + k_n^T v_n
        s = A @ s + np.outer(k[n], v[n])
        # o_n = q_n s_{n+1}
        out.append(q[n] @ s)
    return _stack(out, v.shape[1], s.dtype), s


def diagonal_recurrence(q, k, v, eigenvalues, state=None):
    """The same recurrence with A = diag(λ) (Λ absorbed into the projections, paper Eq. 3):

    o_n = Σ_{m≤n} Σ_j q_nj λ_j^(n-m) k_mj v_m.  With λ_j = γ e^{iθ_j} this is retention with
    rotation. Vectorised over j; returns (o, s_T).
    """
    q, k, v, s = _as_inputs(q, k, v, state)
    lam = np.asarray(eigenvalues)
    if lam.shape != (q.shape[1],):
        raise ValueError(f"eigenvalues must have shape (d_k,) = {(q.shape[1],)}, got {lam.shape}")
    s = s.astype(np.result_type(s, lam))
    out = []
    for n in range(q.shape[0]):
        # s_{n+1} = diag(λ) s_n + k_n^T v_n  (each row of the state decays by its own λ_j)
        s = lam[:, None] * s + np.outer(k[n], v[n])
        out.append(q[n] @ s)
    return _stack(out, v.shape[1], s.dtype), s


def _stack(rows, d_v, dtype):
    return np.stack(rows) if rows else np.zeros((0, d_v), dtype=dtype)   # (T, d_v)


# ---------------------------------------------------------------- retention: the three forms


def _causal_product(q, k, v, D):
    """(Q K^T ⊙ D) V summed row by row over the past only: o_n = Σ_{m≤n} (q_n · k_m) D_nm v_m.

    Multiplying by the zeros of D above the diagonal would let a NaN or inf at a later position into
    an earlier row (NaN · 0 = NaN); a sum that never reads the future cannot.
    """
    rows = [((q[n] @ k[:n + 1].T) * D[n, :n + 1]) @ v[:n + 1] for n in range(q.shape[0])]
    return _stack(rows, v.shape[1], np.result_type(q, k, v, D))       # (T, d_v)


def parallel(q, k, v, gamma):
    """Parallel form (Eq. 5): Retention(X) = (Q K^T ⊙ D) V with D_nm = γ^(n-m) for n ≥ m, else 0."""
    q, k, v, _ = _as_inputs(q, k, v, None)
    D = decay_matrix(q.shape[0], log_gamma(gamma))                  # (T, T)
    # O = (Q K^T ⊙ D) V
    return _causal_product(q, k, v, D)                              # (T, d_v)


def recurrent(q, k, v, gamma, state=None):
    """Recurrent form (Eq. 6): S_{n+1} = γ S_n + k_n^T v_n,  o_n = q_n S_{n+1}.  Returns (o,
    S_T)."""
    q, k, v, S = _as_inputs(q, k, v, state)
    gamma = check_gamma_value(gamma)
    out = []
    for n in range(q.shape[0]):
        # S_{n+1} = γ S_n + k_n^T v_n
        S = gamma * S + np.outer(k[n], v[n])                        # (d_k, d_v)
        # o_n = q_n S_{n+1}
        out.append(q[n] @ S)
    return _stack(out, v.shape[1], S.dtype), S


def chunkwise(q, k, v, gamma, chunk_size, state=None):
    """Chunkwise form (Eq. 7, arXiv v4), chunks of length B (the last may be shorter):

        O_[i] = (Q_[i] K_[i]^T ⊙ D) V_[i] + (Q_[i] R_{i-1}) ⊙ ξ,     ξ_r = γ^(r+1)
        R_i   = K_[i]^T (V_[i] ⊙ ζ) + γ^L R_{i-1},                    ζ_r = γ^(L-r-1)

    with L the chunk's own length and R_{-1} = S_0.  Returns (o, R_last).
    """
    q, k, v, R = _as_inputs(q, k, v, state)
    lg = log_gamma(gamma)
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    out = []
    for start in range(0, q.shape[0], chunk_size):
        qc, kc, vc = (x[start:start + chunk_size] for x in (q, k, v))   # (L, d) each
        L = qc.shape[0]
        # inner-chunk term: (Q K^T ⊙ D) V
        inner = _causal_product(qc, kc, vc, decay_matrix(L, lg))    # (L, d_v)
        # cross-chunk term: (Q R_{i-1}) ⊙ ξ
        cross = (qc @ R) * xi(L, lg)[:, None]                       # (L, d_v)
        out.append(inner + cross)
        # R_i = K^T (V ⊙ ζ) + γ^L R_{i-1}
        R = kc.T @ (vc * zeta(L, lg)[:, None]) + chunk_decay(L, lg) * R
    return (np.concatenate(out) if out else np.zeros((0, v.shape[1]), dtype=R.dtype)), R

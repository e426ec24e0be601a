"""Chapter 05's proofs: the chunk split's exponents, the chunkwise form (Eq. 7) for every small
case, and the published wrong variants on the same footing.

Every proof asserts with sp.simplify(lhs - rhs) == 0 (or an exact comparison); a failed proof raises
AssertionError naming the identity.
"""
from __future__ import annotations

import numpy as np
import sympy as sp

from .._checks import check_choice
from .common import is_zero_matrix, recurrence_symbolic, retention_symbols


def _powers(gamma, exponents, dtype):
    """γ^p for an array of integers p ≥ 0: floats for a float dtype, SymPy powers for
    dtype=object."""
    return np.power(np.full(exponents.shape, gamma, dtype=dtype), exponents)


CHUNK_VARIANTS = ("v4", "no_zeta", "v1_printed")


def chunkwise_variant(Q, K, V, gamma, chunk_size: int, S0, variant: str = "v4"):
    """Eq. 7 (or a wrong variant, see CHUNK_VARIANTS) on NumPy arrays: float64 for numbers, or
    dtype=object holding SymPy expressions for exact checks. L is each chunk's own length.

    Returns (O (T, d_v), R_last (d_k, d_v)).  Not part of the package's forms: the correct one is
    retnet_ref.reference.chunkwise; this one exists to compare the variants on equal terms.
    """
    check_choice(variant, CHUNK_VARIANTS, "variant")
    R, out = S0, []
    for start in range(0, Q.shape[0], chunk_size):
        q, k, v = (x[start:start + chunk_size] for x in (Q, K, V))             # (L, d) each
        L = q.shape[0]
        r = np.arange(L)
        lag = r[:, None] - r[None, :]                                           # (L, L), n - m
        D = np.where(lag >= 0, _powers(gamma, np.maximum(lag, 0), Q.dtype), 0)  # (L, L)
        xi = _powers(gamma, r + 1, Q.dtype)[:, None]                            # (L, 1), γ^(r+1)
        zeta = _powers(gamma, L - r - 1, Q.dtype)[:, None]                      # (L, 1), γ^(L-r-1)
        # R_i = K^T (V ⊙ ζ) + γ^L R_{i-1}    (ζ left out by "no_zeta" and "v1_printed")
        R_next = k.T @ (v * zeta if variant == "v4" else v) + gamma ** L * R
        # O_[i] = (Q K^T ⊙ D) V + (Q R_{i-1}) ⊙ ξ    (R_i in place of R_{i-1} by "v1_printed")
        out.append(((q @ k.T) * D) @ v + (q @ (R_next if variant == "v1_printed" else R)) * xi)
        R = R_next
    return np.concatenate(out), R


def _object_array(M) -> np.ndarray:
    return np.array(M.tolist(), dtype=object)


def chunk_split_difference(length: int, chunk_size: int, variant: str = "v4", d_k: int = 2,
                           d_v: int = 1):
    """Exactly (symbolic γ, entries and S_0): the chunk split's outputs and final state minus those
    of the recurrence S_n = γ S_{n-1} + k_n^T v_n, expanded.  Returns (dO (T, d_v), dR (d_k,
    d_v))."""
    gamma = sp.Symbol("gamma", positive=True)
    Q, K, V, S0 = retention_symbols(length, d_k, d_v, state=True)
    O, R = chunkwise_variant(*(_object_array(M) for M in (Q, K, V)), gamma, chunk_size,
                             _object_array(S0), variant)
    expected, states = recurrence_symbolic(Q, K, V, [gamma] * d_k, S0)
    return (sp.Matrix(O) - expected).applyfunc(sp.expand), (sp.Matrix(R) - states[-1]).applyfunc(
        sp.expand
    )


def chunk_split_matches(length: int, chunk_size: int, variant: str = "v4", d_k: int = 2,
                        d_v: int = 1) -> bool:
    """Does the chunk split give exactly the outputs and final state of the recurrence?"""
    dO, dR = chunk_split_difference(length, chunk_size, variant, d_k, d_v)
    return is_zero_matrix(dO) and is_zero_matrix(dR)


def prove_chunk_exponents():
    """The exponent bookkeeping behind Eq. 7, for a symbolic split n = iB + r (0 ≤ r < B):
    a key m before the chunk (m < iB) reaches row n as γ^(n-m) = γ^(r+1) · γ^(iB-1-m)  (ξ_r times
    its weight in R_{i-1}); its weight in R_i is γ^((i+1)B-1-m) = γ^B · γ^(iB-1-m)  (the γ^B R_{i-1}
    term); a key inside the chunk, m = iB + r', enters R_i with γ^((i+1)B-1-m) = γ^(B-r'-1) =
    ζ_{r'}.

    Returns {"xi": γ^(r+1), "zeta": γ^(B-r'-1)}.
    """
    gamma = sp.Symbol("gamma", positive=True)
    i, B, r, r2, m = sp.symbols("i B r r' m", integer=True, nonnegative=True)
    n = i * B + r
    xi_r, zeta_r2 = gamma ** (r + 1), gamma ** (B - r2 - 1)
    weight_before = gamma ** (i * B - 1 - m)  # key m's weight in R_{i-1}
    assert sp.simplify(gamma ** (n - m) - xi_r * weight_before) == 0, (
        "cross-chunk decay != ξ_r γ^(iB-1-m)"
    )
    assert sp.simplify(gamma ** ((i + 1) * B - 1 - m) - gamma**B * weight_before) == 0, (
        "R_i != γ^B R_{i-1}"
    )
    assert sp.simplify(gamma ** ((i + 1) * B - 1 - (i * B + r2)) - zeta_r2) == 0, (
        "in-chunk key weight != ζ"
    )
    return {"xi": xi_r, "zeta": zeta_r2}


def prove_chunkwise_equals_recurrence(max_length: int = 6):
    """Eq. 7 (arXiv v4) exactly, for every T ≤ max_length and every chunk size B ≤ T + 1 (ragged
    last chunks and B > T included), with symbolic γ, entries and initial state S_0.

    Returns {"pairs": how many (T, B) pairs were checked, "R_1": entry of R_1 for T = 4, B = 2}.
    """
    pairs = [(T, B) for T in range(1, max_length + 1) for B in range(1, T + 2)]
    for T, B in pairs:
        assert chunk_split_matches(T, B), f"chunkwise form (Eq. 7) != recurrence at T={T}, B={B}"
    gamma = sp.Symbol("gamma", positive=True)
    Q, K, V, S0 = retention_symbols(4, 1, 1, state=True)
    _, R_1 = chunkwise_variant(*(_object_array(M) for M in (Q, K, V)), gamma, 2, _object_array(S0))
    return {"pairs": len(pairs), "R_1": sp.expand(R_1[0, 0])}

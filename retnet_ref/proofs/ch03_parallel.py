"""Chapter 03's proof: the parallel form (Eq. 5) is the unrolled recurrence.

Every proof asserts with sp.simplify(lhs - rhs) == 0 (or an exact comparison); a failed proof raises
AssertionError naming the identity.
"""
from __future__ import annotations

import sympy as sp

from .common import (
    decay_matrix_symbolic,
    is_zero_matrix,
    parallel_symbolic,
    recurrence_symbolic,
    retention_symbols,
    rotation_symbolic,
)


def prove_parallel_equals_recurrence(length: int = 4, d_k: int = 2, d_v: int = 2):
    """Eq. 5 from Eq. 1-4: with A = diag(γ e^{iθ_j}), the unrolled recurrence equals (Q̃ K̃^T ⊙ D) V
    with Q̃ = Q ⊙ Θ, K̃ = K ⊙ conj Θ, for symbolic γ, θ_j and entries.

    Returns {"D": D for T = 4, "score": the rotated score q̃_2 · k̃_0 (it depends on n - m only)}.
    """
    gamma = sp.Symbol("gamma", positive=True)
    thetas = sp.symbols(f"theta_0:{d_k}", real=True)
    Q, K, V, S0 = retention_symbols(length, d_k, d_v)
    Theta, conj_Theta = rotation_symbolic(length, thetas)
    Q_rot, K_rot = Q.multiply_elementwise(Theta), K.multiply_elementwise(conj_Theta)
    parallel = parallel_symbolic(Q_rot, K_rot, V, gamma)
    recurrent, _ = recurrence_symbolic(Q, K, V, [gamma * sp.exp(sp.I * t) for t in thetas], S0)
    assert is_zero_matrix(parallel - recurrent), (
        "parallel form (Eq. 5) != unrolled recurrence (Eq. 1-4)"
    )
    score = sp.expand((Q_rot * K_rot.T)[2, 0])
    return {"D": decay_matrix_symbolic(4, gamma), "score": score}

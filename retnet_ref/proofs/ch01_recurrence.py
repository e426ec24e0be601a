"""Chapter 01's proofs: the linear recurrence unrolled, its causal scores, the rotation-scaling
block diagonalised.

Every proof asserts with sp.simplify(lhs - rhs) == 0 (or an exact comparison); a failed proof raises
AssertionError naming the identity.
"""
from __future__ import annotations

import sympy as sp

from .common import assert_identity


def _recurrence_symbols(steps: int, d_k: int, d_v: int):
    """A (d_k, d_k), the initial state s_0 (d_k, d_v) and rows q_n, k_n (1, d_k), v_n (1, d_v)."""
    A = sp.MatrixSymbol("A", d_k, d_k)
    s_0 = sp.MatrixSymbol("s_0", d_k, d_v)
    q, k, v = ([sp.MatrixSymbol(f"{name}_{n}", 1, width) for n in range(steps)]
               for name, width in (("q", d_k), ("k", d_k), ("v", d_v)))
    return A, s_0, q, k, v


def _recurrence_outputs(A, s_0, q, k, v):
    """o_n = q_n s_{n+1} with s_{n+1} = A s_n + k_n^T v_n, stepped from s_0 (paper Eq. 1), n =
    0..steps-1."""
    state, outputs = s_0, []
    for q_n, k_n, v_n in zip(q, k, v):
        # s_{n+1} = A s_n + k_n^T v_n
        state = A * state + k_n.T * v_n
        # o_n = q_n s_{n+1}
        outputs.append(q_n * state)
    return outputs


def prove_unrolled_recurrence(steps: int = 3, d_k: int = 2, d_v: int = 2, power=lambda n, m: n - m):
    """The recurrence unrolled (paper Eq. 1-2): o_n = Σ_{m≤n} q_n A^(n-m) k_m^T v_m + q_n A^(n+1)
    s_0.

    The initial state enters like a key at position m = -1, so its power is power(n, -1) = n + 1.
    Proved entry by entry for every n < steps with a general d_k × d_k matrix A; `power` is the
    exponent of A claimed for (n, m), a parameter so that tests can see a wrong power rejected.
    Returns (o_last as stepped by the recursion, o_last as the unrolled sum), both matrix
    expressions.
    """
    A, s_0, q, k, v = _recurrence_symbols(steps, d_k, d_v)
    stepped = _recurrence_outputs(A, s_0, q, k, v)
    for n in range(steps):
        # o_n = q_n (Σ_{m≤n} A^(n-m) k_m^T v_m + A^(n+1) s_0)
        terms = [A ** power(n, m) * k[m].T * v[m] for m in range(n + 1)]
        unrolled = q[n] * sp.MatAdd(*terms, A ** power(n, -1) * s_0)
        assert_identity(stepped[n], unrolled,
                        f"o_{n} = q_{n} (Σ_m A^(n-m) k_m^T v_m + A^(n+1) s_0)")
    return stepped[-1], unrolled


def prove_causal_scores(steps: int = 3, d_k: int = 2, d_v: int = 2):
    """From s_0 = 0 the outputs are a causal, attention-like sum without softmax: O = P V with

        P_nm = q_n A^(n-m) k_m^T  for m ≤ n,  0 for m > n.

    Proved by stacking the recursion's outputs o_0..o_{steps-1} and comparing them with P V.
    Returns P as a block matrix of 1×1 matrix expressions (the score of query n for key m).
    """
    A, _, q, k, v = _recurrence_symbols(steps, d_k, d_v)
    stepped = _recurrence_outputs(A, sp.ZeroMatrix(d_k, d_v), q, k, v)
    # P_nm = q_n A^(n-m) k_m^T under the causal mask
    scores = sp.BlockMatrix([[q[n] * A ** (n - m) * k[m].T if m <= n else sp.ZeroMatrix(1, 1)
                              for m in range(steps)] for n in range(steps)])
    values = sp.BlockMatrix([[v_m] for v_m in v])                                    # (T, d_v)
    outputs = sp.BlockMatrix([[o_n] for o_n in stepped])                             # (T, d_v)
    assert_identity(outputs.as_explicit(), (scores * values).as_explicit(),
                    "O = P V with P_nm = q_n A^(n-m) k_m^T")
    return scores


def rotation_scaling_block(gamma, theta):
    """γ R(θ) = γ [[cos θ, -sin θ], [sin θ, cos θ]]: a real 2×2 block with eigenvalues γ e^{±iθ}."""
    return gamma * sp.Matrix([[sp.cos(theta), -sp.sin(theta)], [sp.sin(theta), sp.cos(theta)]])


def prove_rotation_scaling_eigen(max_power: int = 3):
    """Diagonalise the rotation-scaling block (paper Eq. 3): γ R(θ) = Λ diag(γ e^{iθ}, γ e^{-iθ})
    Λ^{-1}.

    Checks that γ e^{±iθ} are the roots of the characteristic polynomial, that the columns of
    Λ = [[1, 1], [-i, i]] are their eigenvectors, the reconstruction, and that Λ can be absorbed
    into the projections: q (γR)^p k^T = (q Λ) diag(λ)^p (Λ^{-1} k^T) for p = 0..max_power.
    Returns (block, Λ, diag(λ)).
    """
    gamma = sp.Symbol("gamma", positive=True)
    theta = sp.Symbol("theta", real=True)
    block = rotation_scaling_block(gamma, theta)
    eigenvalues = [gamma * sp.exp(sp.I * theta), gamma * sp.exp(-sp.I * theta)]
    vectors = sp.Matrix([[1, 1], [-sp.I, sp.I]])
    diagonal = sp.diag(*eigenvalues)
    lam = sp.Symbol("lambda")
    for j, eigenvalue in enumerate(eigenvalues):
        assert_identity(block.charpoly(lam).as_expr().subs(lam, eigenvalue), 0,
                        f"det(γR - λ_{j} I) = 0")
        assert_identity(block * vectors[:, j], eigenvalue * vectors[:, j],
                        f"γR Λ_{j} = λ_{j} Λ_{j}")
    assert_identity(block, vectors * diagonal * vectors.inv(), "γR = Λ diag(λ) Λ^{-1}")
    q = sp.Matrix([sp.symbols("q_0 q_1")])                                            # (1, 2)
    k = sp.Matrix([sp.symbols("k_0 k_1")])                                            # (1, 2)
    for p in range(max_power + 1):
        # q A^p k^T = (q Λ) diag(λ^p) (Λ^{-1} k^T)
        absorbed = (q * vectors) * diagonal ** p * (vectors.inv() * k.T)
        assert_identity(q * block ** p * k.T, absorbed,
                        f"q (γR)^{p} k^T = (qΛ) diag(λ)^{p} (Λ^-1 k^T)")
    return block, vectors, diagonal

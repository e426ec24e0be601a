"""Building blocks shared by the chapters' proofs: an identity checker and symbolic retention.

Retention here is unnormalised and one head, as in retnet_ref.reference:
    o_n = Σ_{m≤n} γ^(n-m) (q_n · k_m) v_m + γ^(n+1) q_n S_0   (S_0 the initial state).
Symbolic γ powers are written γ**p: in exact arithmetic that is the definition (the float code
builds them as exp(p log γ) instead).

Every proof asserts with sp.simplify(lhs - rhs) == 0 (or an exact comparison); a failed proof raises
AssertionError naming the identity.
"""
from __future__ import annotations

import sympy as sp


def assert_identity(lhs, rhs, identity: str) -> None:
    """Assert lhs == rhs symbolically; raise AssertionError naming the identity if it fails.

    lhs and rhs may be scalar expressions, explicit matrices or matrix expressions built from
    MatrixSymbols (those are written out entry by entry first). Exponentials and trigonometric
    functions are brought to one form (exponentials) before sp.simplify(lhs - rhs) is compared to 0.
    """
    difference = _explicit(lhs) - _explicit(rhs)
    entries = difference if isinstance(difference, sp.MatrixBase) else [difference]
    for entry in entries:
        if sp.simplify(sp.expand(sp.sympify(entry).rewrite(sp.exp))) != 0:
            raise AssertionError(f"identity fails: {identity}; difference {entry}")


def _explicit(expr):
    """A matrix expression with every MatrixSymbol X replaced by a matrix of scalar symbols X_ij."""
    if not isinstance(expr, sp.MatrixExpr):
        return expr
    entries = {X: sp.Matrix(*X.shape, lambda i, j, X=X: sp.Symbol(f"{X.name}[{i},{j}]"))
               for X in expr.atoms(sp.MatrixSymbol)}
    return sp.Matrix(expr.xreplace(entries).doit())


def is_zero_matrix(M) -> bool:
    """Every entry of M expands to exactly 0."""
    return all(sp.expand(x) == 0 for x in M)


def retention_symbols(length: int, d_k: int, d_v: int, state: bool = False):
    """Q, K (T, d_k), V (T, d_v) and S_0 (d_k, d_v) as matrices of independent symbols (S_0 = 0
    unless state)."""
    Q = sp.Matrix(length, d_k, lambda n, j: sp.Symbol(f"q_{n}{j}"))
    K = sp.Matrix(length, d_k, lambda n, j: sp.Symbol(f"k_{n}{j}"))
    V = sp.Matrix(length, d_v, lambda n, j: sp.Symbol(f"v_{n}{j}"))
    S0 = sp.Matrix(d_k, d_v, lambda i, j: sp.Symbol(f"s_{i}{j}")) if state else sp.zeros(d_k, d_v)
    return Q, K, V, S0


def decay_matrix_symbolic(length: int, gamma) -> sp.Matrix:
    """D (Eq. 5): D_nm = γ^(n-m) for n ≥ m, else 0."""
    return sp.Matrix(length, length, lambda n, m: gamma ** (n - m) if n >= m else 0)


def rotation_symbolic(length: int, thetas):
    """Θ_nj = e^{i n θ_j} and conj Θ (Eq. 5), each (T, len(thetas)); θ_j must be real symbols."""
    Theta = sp.Matrix(length, len(thetas), lambda n, j: sp.exp(sp.I * n * thetas[j]))
    return Theta, Theta.applyfunc(sp.conjugate)


def parallel_symbolic(Q, K, V, gamma, S0=None) -> sp.Matrix:
    """(Q K^T ⊙ D) V (Eq. 5), plus the initial-state term γ^(n+1) q_n S_0 on row n when S0 is
    given."""
    T = Q.shape[0]
    # Retention(X) = (Q K^T ⊙ D) V
    out = (Q * K.T).multiply_elementwise(decay_matrix_symbolic(T, gamma)) * V
    if S0 is None:
        return out
    # + γ^(n+1) q_n S_0
    return out + sp.diag(*[gamma ** (n + 1) for n in range(T)]) * Q * S0


def recurrence_symbolic(Q, K, V, eigenvalues, S0):
    """Unrolled s_{n+1} = diag(λ) s_n + k_n^T v_n, o_n = q_n s_{n+1} (Eq. 1-3, Eq. 6 for λ_j = γ).

    Returns (O (T, d_v), [s_1, ..., s_T]): the state after each token.
    """
    S, states, rows = S0, [], []
    for n in range(Q.shape[0]):
        # s_{n+1} = diag(λ) s_n + k_n^T v_n
        S = sp.diag(*eigenvalues) * S + K[n, :].T * V[n, :]
        # o_n = q_n s_{n+1}
        rows.append(Q[n, :] * S)
        states.append(S)
    return sp.Matrix.vstack(*rows), states

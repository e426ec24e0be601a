"""Chapter 02's proofs: decay times rotation, effective memory, relative positions (complex and real
pairs).

Every proof asserts with sp.simplify(lhs - rhs) == 0 (or an exact comparison); a failed proof raises
AssertionError naming the identity.
"""
from __future__ import annotations

import sympy as sp

from .ch01_recurrence import rotation_scaling_block
from .common import assert_identity


def prove_decay_rotation_split():
    """λ = γ e^{iθ} splits into a decay and a rotation: λ^p = γ^p e^{ipθ} and |λ^p| = γ^p (p ≥ 0).

    Returns (λ^p unevaluated, γ^p e^{ipθ}).
    """
    gamma = sp.Symbol("gamma", positive=True)
    theta = sp.Symbol("theta", real=True)
    p = sp.Symbol("p", integer=True, nonnegative=True)
    power = sp.Pow(gamma * sp.exp(sp.I * theta), p, evaluate=False)
    split = gamma ** p * sp.exp(sp.I * p * theta)
    assert_identity(power.doit(), split, "(γ e^{iθ})^p = γ^p e^{ipθ}")
    assert_identity(sp.Abs(power.doit()), gamma ** p, "|(γ e^{iθ})^p| = γ^p")
    return power, split


def prove_effective_memory():
    """Σ_{p≥0} γ^p = 1 / (1 - γ) for 0 < γ < 1: the total weight a head gives to the past, in
    tokens.

    Returns (the sum, unevaluated, and 1 / (1 - γ)).
    """
    gamma = sp.Symbol("gamma", positive=True)
    p = sp.Symbol("p", integer=True, nonnegative=True)
    series = sp.Sum(gamma ** p, (p, 0, sp.oo))
    closed = 1 / (1 - gamma)
    converged = series.doit()   # Piecewise((1/(1-γ), γ < 1), (the sum, True))
    value, condition = converged.args[0]
    assert condition == (gamma < 1), (
        f"the geometric series should converge for γ < 1, got {condition}"
    )
    assert_identity(value, closed, "Σ_{p≥0} γ^p = 1/(1-γ)")
    return series, closed


def prove_relative_position(pairs: int = 2):
    """The relative-position identity (paper Eq. 4): with q_j, k_j complex and real θ_j,

        Σ_j (q_j e^{inθ_j}) conj(k_j e^{imθ_j}) = Σ_j q_j conj(k_j) e^{i(n-m)θ_j},

    so the score of a query at n and a key at m depends on n - m only. Returns (lhs unevaluated,
    rhs).
    """
    n, m = sp.symbols("n m", integer=True)
    theta = sp.symbols(f"theta_0:{pairs}", real=True)
    q = sp.symbols(f"q_0:{pairs}")
    k = sp.symbols(f"k_0:{pairs}")
    lhs = sp.Add(*[sp.Mul(q[j] * sp.exp(sp.I * n * theta[j]),
                          sp.conjugate(k[j] * sp.exp(sp.I * m * theta[j]), evaluate=False),
                          evaluate=False)
                   for j in range(pairs)], evaluate=False)
    rhs = sp.Add(*[q[j] * sp.conjugate(k[j]) * sp.exp(sp.I * (n - m) * theta[j])
                   for j in range(pairs)])
    assert_identity(lhs.doit(), rhs, "(q e^{inθ}) · conj(k e^{imθ}) = (q · conj k) e^{i(n-m)θ}")
    return lhs, rhs


def rotation_matrix(angle):
    """R(φ) = [[cos φ, -sin φ], [sin φ, cos φ]]: multiplying x_0 + i x_1 by e^{iφ}, as a real 2×2
    map."""
    return rotation_scaling_block(1, angle)


def prove_real_pair_rotation():
    """The real-pair form of the rotation (rotation.rotate) equals the complex form and is relative:

        (R(nθ) q) · (R(mθ) k) = Re[(q_0 + i q_1) e^{inθ} conj((k_0 + i k_1) e^{imθ})] = q^T
        R((m-n)θ) k

    for one pair of real features q = (q_0, q_1), k = (k_0, k_1). Returns (R(nθ), q^T R((m-n)θ) k).
    """
    n, m = sp.symbols("n m", integer=True)
    theta = sp.Symbol("theta", real=True)
    q = sp.Matrix(sp.symbols("q_0 q_1", real=True))                                   # (2, 1)
    k = sp.Matrix(sp.symbols("k_0 k_1", real=True))                                   # (2, 1)
    real_score = ((rotation_matrix(n * theta) * q).T * (rotation_matrix(m * theta) * k))[0, 0]
    complex_score = ((q[0] + sp.I * q[1]) * sp.exp(sp.I * n * theta)
                     * sp.conjugate((k[0] + sp.I * k[1]) * sp.exp(sp.I * m * theta)))
    relative = (q.T * rotation_matrix((m - n) * theta) * k)[0, 0]
    # Re z = (z + conj z) / 2
    real_part = (complex_score + sp.conjugate(complex_score)) / 2
    assert_identity(real_score, real_part, "(R(nθ) q)·(R(mθ) k) = Re[complex score]")
    assert_identity(real_score, relative, "(R(nθ) q)·(R(mθ) k) = q^T R((m-n)θ) k")
    return rotation_matrix(n * theta), sp.expand(relative)

"""SymPy derivations behind the notebooks: each function proves one identity and returns the objects
a notebook displays. tests/ runs every proof, so a notebook's claim and the test suite share one source.

Every proof asserts with sp.simplify(lhs - rhs) == 0 (or an exact comparison of rational expressions);
a failed proof raises AssertionError naming the identity.
"""
from __future__ import annotations

import sympy as sp

# ---------------------------------------------------------------- 01 recurrence, 02 rotation and decay


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


def _recurrence_symbols(steps: int, d_k: int, d_v: int):
    """A (d_k, d_k), the initial state s_0 (d_k, d_v) and rows q_n, k_n (1, d_k), v_n (1, d_v)."""
    A = sp.MatrixSymbol("A", d_k, d_k)
    s_0 = sp.MatrixSymbol("s_0", d_k, d_v)
    q, k, v = ([sp.MatrixSymbol(f"{name}_{n}", 1, width) for n in range(steps)]
               for name, width in (("q", d_k), ("k", d_k), ("v", d_v)))
    return A, s_0, q, k, v


def _recurrence_outputs(A, s_0, q, k, v):
    """o_n = q_n s_n with s_n = A s_{n-1} + k_n^T v_n, stepped from s_0 (paper Eq. 1-2), n = 0..steps-1."""
    state, outputs = s_0, []
    for q_n, k_n, v_n in zip(q, k, v):
        # s_n = A s_{n-1} + k_n^T v_n
        state = A * state + k_n.T * v_n
        # o_n = q_n s_n
        outputs.append(q_n * state)
    return outputs


def prove_unrolled_recurrence(steps: int = 3, d_k: int = 2, d_v: int = 2, power=lambda n, m: n - m):
    """The recurrence unrolled (paper Eq. 1-2): o_n = Σ_{m≤n} q_n A^(n-m) k_m^T v_m + q_n A^(n+1) s_0.

    The initial state enters like a key at position m = -1, so its power is power(n, -1) = n + 1.
    Proved entry by entry for every n < steps with a general d_k × d_k matrix A; `power` is the
    exponent of A claimed for (n, m), a parameter so that tests can see a wrong power rejected.
    Returns (o_last as stepped by the recursion, o_last as the unrolled sum), both matrix expressions.
    """
    A, s_0, q, k, v = _recurrence_symbols(steps, d_k, d_v)
    stepped = _recurrence_outputs(A, s_0, q, k, v)
    for n in range(steps):
        # o_n = q_n (Σ_{m≤n} A^(n-m) k_m^T v_m + A^(n+1) s_0)
        terms = [A ** power(n, m) * k[m].T * v[m] for m in range(n + 1)]
        unrolled = q[n] * sp.MatAdd(*terms, A ** power(n, -1) * s_0)
        assert_identity(stepped[n], unrolled, f"o_{n} = q_{n} (Σ_m A^(n-m) k_m^T v_m + A^(n+1) s_0)")
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
    assert_identity(outputs.as_explicit(), (scores * values).as_explicit(), "O = P V with P_nm = q_n A^(n-m) k_m^T")
    return scores


def rotation_scaling_block(gamma, theta):
    """γ R(θ) = γ [[cos θ, -sin θ], [sin θ, cos θ]]: a real 2×2 block with eigenvalues γ e^{±iθ}."""
    return gamma * sp.Matrix([[sp.cos(theta), -sp.sin(theta)], [sp.sin(theta), sp.cos(theta)]])


def prove_rotation_scaling_eigen(max_power: int = 3):
    """Diagonalise the rotation-scaling block (paper Eq. 3): γ R(θ) = Λ diag(γ e^{iθ}, γ e^{-iθ}) Λ^{-1}.

    Checks that γ e^{±iθ} are the roots of the characteristic polynomial, that the columns of
    Λ = [[1, 1], [-i, i]] are their eigenvectors, the reconstruction, and that Λ can be absorbed into
    the projections: q (γR)^p k^T = (q Λ) diag(λ)^p (Λ^{-1} k^T) for p = 0..max_power.
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
        assert_identity(block.charpoly(lam).as_expr().subs(lam, eigenvalue), 0, f"det(γR - λ_{j} I) = 0")
        assert_identity(block * vectors[:, j], eigenvalue * vectors[:, j], f"γR Λ_{j} = λ_{j} Λ_{j}")
    assert_identity(block, vectors * diagonal * vectors.inv(), "γR = Λ diag(λ) Λ^{-1}")
    q = sp.Matrix([sp.symbols("q_0 q_1")])                                            # (1, 2)
    k = sp.Matrix([sp.symbols("k_0 k_1")])                                            # (1, 2)
    for p in range(max_power + 1):
        # q A^p k^T = (q Λ) diag(λ^p) (Λ^{-1} k^T)
        absorbed = (q * vectors) * diagonal ** p * (vectors.inv() * k.T)
        assert_identity(q * block ** p * k.T, absorbed, f"q (γR)^{p} k^T = (qΛ) diag(λ)^{p} (Λ^-1 k^T)")
    return block, vectors, diagonal


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
    """Σ_{p≥0} γ^p = 1 / (1 - γ) for 0 < γ < 1: the total weight a head gives to the past, in tokens.

    Returns (the sum, unevaluated, and 1 / (1 - γ)).
    """
    gamma = sp.Symbol("gamma", positive=True)
    p = sp.Symbol("p", integer=True, nonnegative=True)
    series = sp.Sum(gamma ** p, (p, 0, sp.oo))
    closed = 1 / (1 - gamma)
    converged = series.doit()   # Piecewise((1/(1-γ), γ < 1), (the sum, True))
    value, condition = converged.args[0]
    assert condition == (gamma < 1), f"the geometric series should converge for γ < 1, got {condition}"
    assert_identity(value, closed, "Σ_{p≥0} γ^p = 1/(1-γ)")
    return series, closed


def prove_relative_position(pairs: int = 2):
    """The relative-position identity (paper Eq. 4): with q_j, k_j complex and real θ_j,

        Σ_j (q_j e^{inθ_j}) conj(k_j e^{imθ_j}) = Σ_j q_j conj(k_j) e^{i(n-m)θ_j},

    so the score of a query at n and a key at m depends on n - m only. Returns (lhs unevaluated, rhs).
    """
    n, m = sp.symbols("n m", integer=True)
    theta = sp.symbols(f"theta_0:{pairs}", real=True)
    q = sp.symbols(f"q_0:{pairs}")
    k = sp.symbols(f"k_0:{pairs}")
    lhs = sp.Add(*[sp.Mul(q[j] * sp.exp(sp.I * n * theta[j]),
                          sp.conjugate(k[j] * sp.exp(sp.I * m * theta[j]), evaluate=False), evaluate=False)
                   for j in range(pairs)], evaluate=False)
    rhs = sp.Add(*[q[j] * sp.conjugate(k[j]) * sp.exp(sp.I * (n - m) * theta[j]) for j in range(pairs)])
    assert_identity(lhs.doit(), rhs, "(q e^{inθ}) · conj(k e^{imθ}) = (q · conj k) e^{i(n-m)θ}")
    return lhs, rhs


def rotation_matrix(angle):
    """R(φ) = [[cos φ, -sin φ], [sin φ, cos φ]]: multiplying x_0 + i x_1 by e^{iφ}, as a real 2×2 map."""
    return rotation_scaling_block(1, angle)


def prove_real_pair_rotation():
    """The real-pair form of the rotation (rotation.rotate) equals the complex form and is relative:

        (R(nθ) q) · (R(mθ) k) = Re[(q_0 + i q_1) e^{inθ} conj((k_0 + i k_1) e^{imθ})] = q^T R((m-n)θ) k

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

# ---------------------------------------------------------------- 03 parallel, 04 recurrent, 05 chunkwise

# ---------------------------------------------------------------- 06 normalisation and GroupNorm

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
#
# Retention here is unnormalised and one head, as in retnet_ref.reference:
#     o_n = Σ_{m≤n} γ^(n-m) (q_n · k_m) v_m + γ^(n+1) q_n S_0.
# Symbolic γ powers are written γ**p: in exact arithmetic that is the definition (the float code
# builds them as exp(p log γ) instead).

import numpy as np  # noqa: E402  (object arrays let one chunkwise function run on numbers and symbols)


def retention_symbols(length: int, d_k: int, d_v: int, state: bool = False):
    """Q, K (T, d_k), V (T, d_v) and S_0 (d_k, d_v) as matrices of independent symbols (S_0 = 0 unless state)."""
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
    """(Q K^T ⊙ D) V (Eq. 5), plus the initial-state term γ^(n+1) q_n S_0 on row n when S0 is given."""
    T = Q.shape[0]
    # Retention(X) = (Q K^T ⊙ D) V
    out = (Q * K.T).multiply_elementwise(decay_matrix_symbolic(T, gamma)) * V
    if S0 is None:
        return out
    # + γ^(n+1) q_n S_0
    return out + sp.diag(*[gamma ** (n + 1) for n in range(T)]) * Q * S0


def recurrence_symbolic(Q, K, V, eigenvalues, S0):
    """Unrolled s_n = diag(λ) s_{n-1} + k_n^T v_n, o_n = q_n s_n (Eq. 1-3, Eq. 6 for λ_j = γ).

    Returns (O (T, d_v), [s_0, ..., s_{T-1}]).
    """
    S, states, rows = S0, [], []
    for n in range(Q.shape[0]):
        # s_n = diag(λ) s_{n-1} + k_n^T v_n
        S = sp.diag(*eigenvalues) * S + K[n, :].T * V[n, :]
        # o_n = q_n s_n
        rows.append(Q[n, :] * S)
        states.append(S)
    return sp.Matrix.vstack(*rows), states


def is_zero_matrix(M) -> bool:
    """Every entry of M expands to exactly 0."""
    return all(sp.expand(x) == 0 for x in M)


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
    assert is_zero_matrix(parallel - recurrent), "parallel form (Eq. 5) != unrolled recurrence (Eq. 1-4)"
    score = sp.expand((Q_rot * K_rot.T)[2, 0])
    return {"D": decay_matrix_symbolic(4, gamma), "score": score}


def prove_recurrent_equals_parallel(length: int = 4, d_k: int = 2, d_v: int = 2):
    """Eq. 6 = Eq. 5: S_{n+1} = γ S_n + k_n^T v_n from a symbolic S_0 has the closed form
    S_{n+1} = Σ_{m≤n} γ^(n-m) k_m^T v_m + γ^(n+1) S_0, so o_n = q_n S_{n+1} is row n of (Q K^T ⊙ D) V
    plus γ^(n+1) q_n S_0 (S_n: the state after the first n tokens).

    Returns {"S_3": entry (0, 0) of S_3, the state after three tokens: a small headline of the closed form}.
    """
    gamma = sp.Symbol("gamma", positive=True)
    Q, K, V, S0 = retention_symbols(length, d_k, d_v, state=True)
    recurrent, states = recurrence_symbolic(Q, K, V, [gamma] * d_k, S0)
    for n, S in enumerate(states):
        # S_{n+1} = Σ_{m≤n} γ^(n-m) k_m^T v_m + γ^(n+1) S_0
        closed = sum((gamma ** (n - m) * K[m, :].T * V[m, :] for m in range(n + 1)), gamma ** (n + 1) * S0)
        assert is_zero_matrix(S - closed), f"recurrent state S_{n + 1} != its closed form"
    assert is_zero_matrix(recurrent - parallel_symbolic(Q, K, V, gamma, S0)), "recurrent (Eq. 6) != parallel (Eq. 5)"
    return {"S_3": sp.expand(states[2][0, 0])}


def prove_state_handoff(length: int = 5, split: int = 2, d_k: int = 2, d_v: int = 1):
    """Running the recurrence over a prefix and handing its final state to the continuation gives the
    outputs and final state of one run over the whole sequence (from a symbolic S_0).

    Returns {"state": entry (0, 0) of the state handed over after the prefix}.
    """
    gamma = sp.Symbol("gamma", positive=True)
    Q, K, V, S0 = retention_symbols(length, d_k, d_v, state=True)
    whole, whole_states = recurrence_symbolic(Q, K, V, [gamma] * d_k, S0)
    head, head_states = recurrence_symbolic(Q[:split, :], K[:split, :], V[:split, :], [gamma] * d_k, S0)
    tail, tail_states = recurrence_symbolic(Q[split:, :], K[split:, :], V[split:, :], [gamma] * d_k,
                                            head_states[-1])
    assert is_zero_matrix(sp.Matrix.vstack(head, tail) - whole), "prefix + continuation != whole run"
    assert is_zero_matrix(tail_states[-1] - whole_states[-1]), "final state differs after a hand-off"
    return {"state": sp.expand(head_states[-1][0, 0])}


# The chunkwise form (Eq. 7) and two wrong versions of it that were published:
#   "v4"          arXiv v4:  O_[i] = (Q K^T ⊙ D) V + (Q R_{i-1}) ⊙ ξ,  R_i = K^T (V ⊙ ζ) + γ^L R_{i-1}
#   "no_zeta"     the paper's pseudocode: the same without ζ in the state update
#   "v1_printed"  arXiv v1: R_i instead of R_{i-1} in the cross-chunk term, and no ζ
CHUNK_VARIANTS = ("v4", "no_zeta", "v1_printed")


def _powers(gamma, exponents, dtype):
    """γ^p for an array of integers p ≥ 0: floats for a float dtype, SymPy powers for dtype=object."""
    return np.power(np.full(exponents.shape, gamma, dtype=dtype), exponents)


def chunkwise_variant(Q, K, V, gamma, chunk_size: int, S0, variant: str = "v4"):
    """Eq. 7 (or a wrong variant, see CHUNK_VARIANTS) on NumPy arrays: float64 for numbers, or
    dtype=object holding SymPy expressions for exact checks. L is each chunk's own length.

    Returns (O (T, d_v), R_last (d_k, d_v)).  Not part of the package's forms: the correct one is
    retnet_ref.reference.chunkwise; this one exists to compare the variants on equal terms.
    """
    if variant not in CHUNK_VARIANTS:
        raise ValueError(f"variant must be one of {CHUNK_VARIANTS}, got {variant!r}")
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


def chunk_split_difference(length: int, chunk_size: int, variant: str = "v4", d_k: int = 2, d_v: int = 1):
    """Exactly (symbolic γ, entries and S_0): the chunk split's outputs and final state minus those of
    the recurrence S_n = γ S_{n-1} + k_n^T v_n, expanded.  Returns (dO (T, d_v), dR (d_k, d_v))."""
    gamma = sp.Symbol("gamma", positive=True)
    Q, K, V, S0 = retention_symbols(length, d_k, d_v, state=True)
    O, R = chunkwise_variant(*(_object_array(M) for M in (Q, K, V)), gamma, chunk_size, _object_array(S0), variant)
    expected, states = recurrence_symbolic(Q, K, V, [gamma] * d_k, S0)
    return (sp.Matrix(O) - expected).applyfunc(sp.expand), (sp.Matrix(R) - states[-1]).applyfunc(sp.expand)


def chunk_split_matches(length: int, chunk_size: int, variant: str = "v4", d_k: int = 2, d_v: int = 1) -> bool:
    """Does the chunk split give exactly the outputs and final state of the recurrence?"""
    dO, dR = chunk_split_difference(length, chunk_size, variant, d_k, d_v)
    return is_zero_matrix(dO) and is_zero_matrix(dR)


def prove_chunk_exponents():
    """The exponent bookkeeping behind Eq. 7, for a symbolic split n = iB + r (0 ≤ r < B):
    a key m before the chunk (m < iB) reaches row n as γ^(n-m) = γ^(r+1) · γ^(iB-1-m)  (ξ_r times its
    weight in R_{i-1}); its weight in R_i is γ^((i+1)B-1-m) = γ^B · γ^(iB-1-m)  (the γ^B R_{i-1} term);
    a key inside the chunk, m = iB + r', enters R_i with γ^((i+1)B-1-m) = γ^(B-r'-1) = ζ_{r'}.

    Returns {"xi": γ^(r+1), "zeta": γ^(B-r'-1)}.
    """
    gamma = sp.Symbol("gamma", positive=True)
    i, B, r, r2, m = sp.symbols("i B r r' m", integer=True, nonnegative=True)
    n = i * B + r
    xi_r, zeta_r2 = gamma ** (r + 1), gamma ** (B - r2 - 1)
    weight_before = gamma ** (i * B - 1 - m)                         # key m's weight in R_{i-1}
    assert sp.simplify(gamma ** (n - m) - xi_r * weight_before) == 0, "cross-chunk decay != ξ_r γ^(iB-1-m)"
    assert sp.simplify(gamma ** ((i + 1) * B - 1 - m) - gamma ** B * weight_before) == 0, "R_i != γ^B R_{i-1}"
    assert sp.simplify(gamma ** ((i + 1) * B - 1 - (i * B + r2)) - zeta_r2) == 0, "in-chunk key weight != ζ"
    return {"xi": xi_r, "zeta": zeta_r2}


def prove_chunkwise_equals_recurrence(max_length: int = 6):
    """Eq. 7 (arXiv v4) exactly, for every T ≤ max_length and every chunk size B ≤ T + 1 (ragged last
    chunks and B > T included), with symbolic γ, entries and initial state S_0.

    Returns {"pairs": how many (T, B) pairs were checked, "R_1": entry of R_1 for T = 4, B = 2}.
    """
    pairs = [(T, B) for T in range(1, max_length + 1) for B in range(1, T + 2)]
    for T, B in pairs:
        assert chunk_split_matches(T, B), f"chunkwise form (Eq. 7) != recurrence at T={T}, B={B}"
    gamma = sp.Symbol("gamma", positive=True)
    Q, K, V, S0 = retention_symbols(4, 1, 1, state=True)
    _, R_1 = chunkwise_variant(*(_object_array(M) for M in (Q, K, V)), gamma, 2, _object_array(S0))
    return {"pairs": len(pairs), "R_1": sp.expand(R_1[0, 0])}

# ---------------------------------------------------------------- 06 normalisation and GroupNorm


def _layer_norm(xs, eps):
    """LayerNorm without affine of the entries xs: (x_i - μ) / sqrt(σ² + ε)."""
    mean = sum(xs) / len(xs)
    variance = sum((x - mean) ** 2 for x in xs) / len(xs)
    return [(x - mean) / sp.sqrt(variance + eps) for x in xs]


def prove_layer_norm_scale_invariance(size: int = 4):
    """GroupNorm (a LayerNorm over one head's d_v features, Eq. 8) and a positive row scale α:

        mean(αx) = α μ,  var(αx) = α² V                      (polynomial identities, `size` entries)
        LN_ε(αx) = LN_{ε/α²}(x)   for α > 0, ε ≥ 0          (a scale only rescales ε)
        LN_0(αx) = LN_0(x),  LN_0(-x) = -LN_0(x)             (ε = 0: blind to a positive scale, not to sign)
        RMS_0(αx) = RMS_0(x)                                 (RMSNorm, x / sqrt(mean(x²)), likewise)

    Returns {"lhs": LN_ε(αx)_i, "rhs": LN_{ε/α²}(x)_i} written with μ and V.
    """
    xs = sp.symbols(f"x0:{size}", real=True)
    alpha = sp.Symbol("alpha", positive=True)
    eps = sp.Symbol("epsilon", nonnegative=True)
    mean = sum(xs) / size
    variance = sum((x - mean) ** 2 for x in xs) / size
    scaled = [alpha * x for x in xs]
    assert_identity(sum(scaled) / size, alpha * mean, "mean(αx) = α mean(x)")
    assert_identity(sum((x - sum(scaled) / size) ** 2 for x in scaled) / size, alpha ** 2 * variance,
                    "var(αx) = α² var(x)")
    # with var(αx) = α² V: LN_ε(αx)_i = α (x_i - μ) / sqrt(α² V + ε)
    V = sp.Symbol("V", nonnegative=True)
    x_i, mu = sp.symbols("x_i mu", real=True)
    lhs = alpha * (x_i - mu) / sp.sqrt(alpha ** 2 * V + eps)
    rhs = (x_i - mu) / sp.sqrt(V + eps / alpha ** 2)
    assert_identity(lhs, rhs, "LN_ε(αx) = LN_{ε/α²}(x)")
    for a, b in zip(_layer_norm(scaled, 0), _layer_norm(xs, 0)):
        assert_identity(a, b, "LN_0(αx) = LN_0(x), entry by entry")
    for a, b in zip(_layer_norm([-x for x in xs], 0), _layer_norm(xs, 0)):
        assert_identity(a, -b, "LN_0(-x) = -LN_0(x), entry by entry")
    # RMSNorm (the official variant's per-head norm) is the case μ = 0, V = mean(x²): the same argument
    rms = lambda ys: [y / sp.sqrt(sum(t ** 2 for t in ys) / size) for y in ys]
    for a, b in zip(rms(scaled), rms(xs)):
        assert_identity(a, b, "RMS_0(αx) = RMS_0(x), entry by entry")
    return {"lhs": lhs, "rhs": rhs}


def prove_layer_norm_epsilon_effect():
    """What ε changes: LN_ε(x) = LN_0(x) · sqrt(V / (V + ε)) = LN_0(x) · (1 - ε/(2V) + O(ε²)).

    So y and s·y (s > 0) differ after LN_ε by LN_0(y) · (sqrt(V/(V + ε/s²)) - sqrt(V/(V + ε))), to first
    order LN_0(y) · (ε / 2V) (1 - 1/s²): zero at ε = 0 or s = 1, and large where V is not ≫ ε.
    Returns {"factor": sqrt(V/(V + ε)), "first_order": 1 - ε/(2V)}.
    """
    V, eps = sp.symbols("V epsilon", positive=True)
    x_i, mu = sp.symbols("x_i mu", real=True)
    factor = sp.sqrt(V / (V + eps))
    assert_identity(((x_i - mu) / sp.sqrt(V + eps)) / ((x_i - mu) / sp.sqrt(V)), factor, "LN_ε / LN_0")
    first_order = sp.series(factor, eps, 0, 2).removeO()
    assert_identity(first_order, 1 - eps / (2 * V), "sqrt(V/(V+ε)) = 1 - ε/(2V) + O(ε²)")
    return {"factor": factor, "first_order": first_order}


def prove_decay_row_sum():
    """c_n = Σ_{i=0}^{n} γ^(n-i) = (1 - γ^(n+1)) / (1 - γ) (n + 1 at γ = 1); c_n = γ c_{n-1} + 1, c_0 = 1.

    The second normaliser D̃_nm = D_nm / sqrt(c_n) divides row n of the output by sqrt(c_n) (paper §2.2);
    the closed form lets recurrent and chunkwise apply it without summing a row of D.
    Returns {"sum": the sum, "closed": the closed form}.
    """
    gamma = sp.Symbol("gamma", positive=True)
    n, i = sp.symbols("n i", integer=True, nonnegative=True)
    row_sum = sp.Sum(gamma ** (n - i), (i, 0, n))
    closed = (1 - gamma ** (n + 1)) / (1 - gamma)
    # SymPy sums the geometric series as a Piecewise: a branch for γ = 1, then the general one
    (at_one, condition), (general, _) = sp.piecewise_fold(row_sum.doit()).args
    assert_identity(general, closed, "Σ γ^(n-i) = (1 - γ^(n+1)) / (1 - γ) for γ ≠ 1")
    assert condition.subs(gamma, 1) == sp.true and at_one.subs(gamma, 1) == n + 1, "Σ = n + 1 at γ = 1"
    assert_identity(gamma * closed.subs(n, n - 1) + 1, closed, "c_n = γ c_{n-1} + 1")
    assert_identity(closed.subs(n, 0), 1, "c_0 = 1")
    assert sp.limit(closed, gamma, 1) == n + 1, "c_n → n + 1 as γ → 1"
    return {"sum": row_sum, "closed": closed}


def _symbol_rows(name: str, length: int, width: int) -> sp.Matrix:
    return sp.Matrix(length, width, lambda n, j: sp.Symbol(f"{name}_{n}{j}", real=True))


def prove_running_key_sum(length: int = 5, d_k: int = 2, chunk_size: int = 3):
    """The third normaliser's row sum is retention with a value column of ones (paper §2.2):

        Σ_{m≤n} γ^(n-m) (q_n · k_m) = q_n · z_n,   z_n = γ z_{n-1} + k_n                  (recurrent)
        inside a chunk of length L, row r:  Σ_{j≤r} γ^(r-j) q_n · k_j + γ^(r+1) q_n · z_prev      (chunkwise)
        across it:  z_end = γ^L z_prev + Σ_r γ^(L-r-1) k_r

    Checked exactly for symbolic q, k of `length` tokens in chunks of `chunk_size` (the last one may be
    shorter). Returns {"parallel": the last row's sum, "recurrent": q_n · z_n for it}.
    """
    gamma = sp.Symbol("gamma", positive=True)
    q, k = _symbol_rows("q", length, d_k), _symbol_rows("k", length, d_k)
    score = lambda n, m: (q.row(n) * k.row(m).T)[0]                 # q_n · k_m
    parallel = [sum(gamma ** (n - m) * score(n, m) for m in range(n + 1)) for n in range(length)]
    z, recurrent = sp.zeros(1, d_k), []
    for n in range(length):
        # z_n = γ z_{n-1} + k_n
        z = gamma * z + k.row(n)
        recurrent.append((q.row(n) * z.T)[0])
    z_prev, chunkwise = sp.zeros(1, d_k), []
    for start in range(0, length, chunk_size):
        L = min(chunk_size, length - start)
        for r in range(L):
            # Σ_{j≤r} γ^(r-j) q_n · k_j + γ^(r+1) q_n · z_prev
            inner = sum(gamma ** (r - j) * score(start + r, start + j) for j in range(r + 1))
            chunkwise.append(inner + gamma ** (r + 1) * (q.row(start + r) * z_prev.T)[0])
        # z_end = γ^L z_prev + Σ_r γ^(L-r-1) k_r
        z_prev = gamma ** L * z_prev + sum((gamma ** (L - r - 1) * k.row(start + r) for r in range(L)),
                                           sp.zeros(1, d_k))
    for n in range(length):
        assert_identity(recurrent[n], parallel[n], f"row {n}: q_n · z_n (recurrent) = Σ_m γ^(n-m) q_n · k_m")
        assert_identity(chunkwise[n], parallel[n], f"row {n}: chunkwise running key sum = parallel row sum")
    assert_identity(z_prev, z, "the chunkwise running key sum ends where the recurrent one does")
    return {"parallel": parallel[-1], "recurrent": recurrent[-1]}


def prove_normalisation_row_scalars(length: int = 3, d_k: int = 2, d_v: int = 2):
    """The paper's three normalisations (§2.2) divide output row n by one positive number s_n:

        R = (Q K^T / sqrt(d_k)) ⊙ D̃,  D̃_nm = D_nm / sqrt(c_n),  R̃_nm = R_nm / max(|Σ_i R_ni|, 1),  O = R̃ V
        o_n = (Σ_m γ^(n-m) (q_n · k_m) v_m) / s_n,   s_n = sqrt(d_k) sqrt(c_n) max(|Σ_i R_ni|, 1)
        Σ_i R_ni = q_n · z_n / (sqrt(d_k) sqrt(c_n))

    and, with a_n = q_n · z_n, s_n = max(|a_n|, sqrt(d_k c_n)) (one division per row, no clipping).
    Checked exactly for symbolic q, k, v of `length` tokens. Returns {"s_n", "compact": max(|a_n|,
    sqrt(d_k c_n)), "row_sum": Σ_i R_ni} written with the symbols c_n, d_k and a_n = q_n · z_n.
    """
    gamma = sp.Symbol("gamma", positive=True)
    q, k, v = _symbol_rows("q", length, d_k), _symbol_rows("k", length, d_k), _symbol_rows("v", length, d_v)
    D = sp.Matrix(length, length, lambda n, m: gamma ** (n - m) if n >= m else 0)
    c = [sum(D.row(n)) for n in range(length)]
    # D̃_nm = D_nm / sqrt(c_n);  R = (Q K^T / sqrt(d_k)) ⊙ D̃;  R̃_nm = R_nm / max(|Σ_i R_ni|, 1)
    D_tilde = sp.Matrix(length, length, lambda n, m: D[n, m] / sp.sqrt(c[n]))
    R = (q * k.T / sp.sqrt(d_k)).multiply_elementwise(D_tilde)
    clip = [sp.Max(sp.Abs(sum(R.row(n))), 1) for n in range(length)]
    R_tilde = sp.Matrix(length, length, lambda n, m: R[n, m] / clip[n])
    raw = (q * k.T).multiply_elementwise(D) * v                     # unnormalised retention (Eq. 5)
    normalised = R_tilde * v
    for n in range(length):
        s_n = sp.sqrt(d_k) * sp.sqrt(c[n]) * clip[n]
        assert_identity(normalised.row(n) * s_n, raw.row(n), f"row {n}: o_n = raw_n / s_n")
        z_n = sum((gamma ** (n - m) * k.row(m) for m in range(n + 1)), sp.zeros(1, d_k))
        assert_identity(sum(R.row(n)), (q.row(n) * z_n.T)[0] / (sp.sqrt(d_k) * sp.sqrt(c[n])),
                        f"row {n}: Σ_i R_ni = q_n · z_n / (sqrt(d_k) sqrt(c_n))")
    c_n, dk = sp.Symbol("c_n", positive=True), sp.Symbol("d_k", positive=True)
    a_n = sp.Symbol("a_n", real=True)                               # a_n = q_n · z_n
    row_sum = a_n / (sp.sqrt(dk) * sp.sqrt(c_n))
    s_n = sp.sqrt(dk) * sp.sqrt(c_n) * sp.Max(sp.Abs(row_sum), 1)
    compact = sp.Max(sp.Abs(a_n), sp.sqrt(dk * c_n))
    # s_n = max(|a_n|, sqrt(d_k c_n)): p max(|a|/p, 1) = max(|a|, p) for p > 0, case |a| ≥ p and case |a| ≤ p
    p, w = sp.Symbol("p", positive=True), sp.Symbol("w", nonnegative=True)
    for size in (p * (1 + w), p * (1 - w)):
        assert_identity(p * sp.Max(size / p, 1), sp.Max(size, p), "p max(|a|/p, 1) = max(|a|, p)")
    return {"s_n": s_n, "compact": compact, "row_sum": row_sum}


def prove_parameter_budget():
    """Weights per layer (paper §3.1, with Eq. 9; biases and norms aside): RetNet and a Transformer both spend 12 d².

        RetNet, paper:     W_Q, W_K d×d;  W_V, W_G d×w_v;  W_O w_v×d;  FFN d×f, f×d        w_v = f = 2d
        RetNet, official:  the same retention;  gated FFN d×f twice and f×d               w_v = f = 5d/3
        Transformer:       W_Q, W_K, W_V, W_O d×d;  FFN d×f, f×d                          f = 4d

    Returns {"retnet", "official", "transformer"}: the per-layer counts in d, w_v and f.
    """
    d, w_v, f = sp.symbols("d w_v f", positive=True)
    retnet = 2 * d ** 2 + 3 * d * w_v + 2 * d * f
    official = 2 * d ** 2 + 3 * d * w_v + 3 * d * f
    transformer = 4 * d ** 2 + 2 * d * f
    assert_identity(retnet.subs({w_v: 2 * d, f: 2 * d}), 12 * d ** 2, "RetNet (paper widths 2d) = 12 d²")
    assert_identity(official.subs({w_v: 5 * d / 3, f: 5 * d / 3}), 12 * d ** 2, "RetNet (official, 5d/3) = 12 d²")
    assert_identity(transformer.subs(f, 4 * d), 12 * d ** 2, "Transformer (FFN 4d) = 12 d²")
    return {"retnet": retnet, "official": official, "transformer": transformer}


def prove_swish_gate():
    """swish(x) = x σ(x) = x / (1 + e^{-x}), the gate of Eq. 8: swish(x) - swish(-x) = x, swish(x) - x → 0
    as x → ∞, swish(x) → 0 as x → -∞, swish'(0) = 1/2. Returns {"swish": x / (1 + e^{-x})}.
    """
    x = sp.Symbol("x", real=True)
    swish = x / (1 + sp.exp(-x))
    assert_identity(swish - swish.subs(x, -x), x, "swish(x) - swish(-x) = x")
    assert sp.limit(swish - x, x, sp.oo) == 0 and sp.limit(swish, x, -sp.oo) == 0, "swish's two limits"
    assert sp.diff(swish, x).subs(x, 0) == sp.Rational(1, 2), "swish'(0) = 1/2"
    return {"swish": swish}

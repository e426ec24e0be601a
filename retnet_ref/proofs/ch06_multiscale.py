"""Chapter 06's proofs: GroupNorm and a positive scale, the decay row sums, the running key sum, the
three normalisations as one divisor per row, the swish gate.

Every proof asserts with sp.simplify(lhs - rhs) == 0 (or an exact comparison); a failed proof raises
AssertionError naming the identity.
"""
from __future__ import annotations

import sympy as sp

from .common import assert_identity, decay_matrix_symbolic


def _layer_norm(xs, eps):
    """LayerNorm without affine of the entries xs: (x_i - μ) / sqrt(σ² + ε)."""
    mean = sum(xs) / len(xs)
    variance = sum((x - mean) ** 2 for x in xs) / len(xs)
    return [(x - mean) / sp.sqrt(variance + eps) for x in xs]


def prove_layer_norm_scale_invariance(size: int = 4):
    """GroupNorm (a LayerNorm over one head's d_v features, Eq. 8) and a positive row scale α:

        mean(αx) = α μ,  var(αx) = α² V              (polynomial identities, `size` entries)
        LN_ε(αx) = LN_{ε/α²}(x)   for α > 0, ε ≥ 0  (a scale only rescales ε)
        LN_0(αx) = LN_0(x),  LN_0(-x) = -LN_0(x)     (ε = 0: blind to a positive scale, not sign)
        RMS_0(αx) = RMS_0(x)                         (RMSNorm, x / sqrt(mean(x²)), likewise)

    Returns {"lhs": LN_ε(αx)_i, "rhs": LN_{ε/α²}(x)_i} written with μ and V.
    """
    xs = sp.symbols(f"x0:{size}", real=True)
    alpha = sp.Symbol("alpha", positive=True)
    _check_scaled_moments(xs, alpha)
    # with var(αx) = α² V: LN_ε(αx)_i = α (x_i - μ) / sqrt(α² V + ε)
    V, eps = sp.Symbol("V", nonnegative=True), sp.Symbol("epsilon", nonnegative=True)
    x_i, mu = sp.symbols("x_i mu", real=True)
    lhs = alpha * (x_i - mu) / sp.sqrt(alpha ** 2 * V + eps)
    rhs = (x_i - mu) / sp.sqrt(V + eps / alpha ** 2)
    assert_identity(lhs, rhs, "LN_ε(αx) = LN_{ε/α²}(x)")
    _check_norms_without_eps(xs, alpha)
    return {"lhs": lhs, "rhs": rhs}


def _check_scaled_moments(xs, alpha):
    """mean(αx) = α mean(x), var(αx) = α² var(x)."""
    size, scaled = len(xs), [alpha * x for x in xs]
    mean = sum(xs) / size
    assert_identity(sum(scaled) / size, alpha * mean, "mean(αx) = α mean(x)")
    assert_identity(sum((x - sum(scaled) / size) ** 2 for x in scaled) / size,
                    alpha ** 2 * sum((x - mean) ** 2 for x in xs) / size, "var(αx) = α² var(x)")


def _check_norms_without_eps(xs, alpha):
    """Entry by entry at ε = 0: LN_0(αx) = LN_0(x), LN_0(-x) = -LN_0(x), RMS_0(αx) = RMS_0(x)."""
    scaled = [alpha * x for x in xs]
    for a, b in zip(_layer_norm(scaled, 0), _layer_norm(xs, 0)):
        assert_identity(a, b, "LN_0(αx) = LN_0(x), entry by entry")
    for a, b in zip(_layer_norm([-x for x in xs], 0), _layer_norm(xs, 0)):
        assert_identity(a, -b, "LN_0(-x) = -LN_0(x), entry by entry")
    # RMSNorm (the official variant's per-head norm) is the case μ = 0, V = mean(x²)
    rms = lambda ys: [y / sp.sqrt(sum(t ** 2 for t in ys) / len(ys)) for y in ys]
    for a, b in zip(rms(scaled), rms(xs)):
        assert_identity(a, b, "RMS_0(αx) = RMS_0(x), entry by entry")


def prove_layer_norm_epsilon_effect():
    """What ε changes: LN_ε(x) = LN_0(x) · sqrt(V / (V + ε)) = LN_0(x) · (1 - ε/(2V) + O(ε²)).

    So y and s·y (s > 0) differ after LN_ε by LN_0(y) · (sqrt(V/(V + ε/s²)) - sqrt(V/(V + ε))), to
    first order LN_0(y) · (ε / 2V) (1 - 1/s²): zero at ε = 0 or s = 1, and large where V is not ≫ ε.
    Returns {"factor": sqrt(V/(V + ε)), "first_order": 1 - ε/(2V)}.
    """
    V, eps = sp.symbols("V epsilon", positive=True)
    x_i, mu = sp.symbols("x_i mu", real=True)
    factor = sp.sqrt(V / (V + eps))
    assert_identity(((x_i - mu) / sp.sqrt(V + eps)) / ((x_i - mu) / sp.sqrt(V)), factor,
                    "LN_ε / LN_0")
    first_order = sp.series(factor, eps, 0, 2).removeO()
    assert_identity(first_order, 1 - eps / (2 * V), "sqrt(V/(V+ε)) = 1 - ε/(2V) + O(ε²)")
    return {"factor": factor, "first_order": first_order}


def prove_decay_row_sum():
    """c_n = Σ_{i=0}^{n} γ^(n-i) = (1 - γ^(n+1)) / (1 - γ) (n + 1 at γ = 1); c_n = γ c_{n-1} + 1,
    c_0 = 1.

    The second normaliser D̃_nm = D_nm / sqrt(c_n) divides row n of the output by sqrt(c_n) (paper
    §2.2); the closed form lets recurrent and chunkwise apply it without summing a row of D.
    Returns {"sum": the sum, "closed": the closed form}.
    """
    gamma = sp.Symbol("gamma", positive=True)
    n, i = sp.symbols("n i", integer=True, nonnegative=True)
    row_sum = sp.Sum(gamma ** (n - i), (i, 0, n))
    closed = (1 - gamma ** (n + 1)) / (1 - gamma)
    # SymPy sums the geometric series as a Piecewise: a branch for γ = 1, then the general one
    (at_one, condition), (general, _) = sp.piecewise_fold(row_sum.doit()).args
    assert_identity(general, closed, "Σ γ^(n-i) = (1 - γ^(n+1)) / (1 - γ) for γ ≠ 1")
    assert condition.subs(gamma, 1) == sp.true and at_one.subs(gamma,
                                                               1) == n + 1, "Σ = n + 1 at γ = 1"
    assert_identity(gamma * closed.subs(n, n - 1) + 1, closed, "c_n = γ c_{n-1} + 1")
    assert_identity(closed.subs(n, 0), 1, "c_0 = 1")
    assert sp.limit(closed, gamma, 1) == n + 1, "c_n → n + 1 as γ → 1"
    return {"sum": row_sum, "closed": closed}


def _symbol_rows(name: str, length: int, width: int) -> sp.Matrix:
    return sp.Matrix(length, width, lambda n, j: sp.Symbol(f"{name}_{n}{j}", real=True))


def prove_running_key_sum(length: int = 5, d_k: int = 2, chunk_size: int = 3):
    """The third normaliser's row sum is retention with a value column of ones (paper §2.2):

        Σ_{m≤n} γ^(n-m) (q_n · k_m) = q_n · z_n,   z_n = γ z_{n-1} + k_n          (recurrent)
        inside a chunk of length L, row r:
            Σ_{j≤r} γ^(r-j) q_n · k_j + γ^(r+1) q_n · z_prev                       (chunkwise)
        across it:  z_end = γ^L z_prev + Σ_r γ^(L-r-1) k_r

    Checked exactly for symbolic q, k of `length` tokens in chunks of `chunk_size` (the last one may
    be shorter). Returns {"parallel": the last row's sum, "recurrent": q_n · z_n for it}.
    """
    gamma = sp.Symbol("gamma", positive=True)
    q, k = _symbol_rows("q", length, d_k), _symbol_rows("k", length, d_k)
    parallel = _row_sums_parallel(q, k, gamma)
    recurrent, z = _row_sums_recurrent(q, k, gamma)
    chunkwise, z_prev = _row_sums_chunkwise(q, k, gamma, chunk_size)
    for n in range(length):
        assert_identity(recurrent[n], parallel[n],
                        f"row {n}: q_n · z_n (recurrent) = Σ_m γ^(n-m) q_n · k_m")
        assert_identity(chunkwise[n], parallel[n],
                        f"row {n}: chunkwise running key sum = parallel row sum")
    assert_identity(z_prev, z, "the chunkwise running key sum ends where the recurrent one does")
    return {"parallel": parallel[-1], "recurrent": recurrent[-1]}


def _row_sums_parallel(q, k, gamma) -> list:
    # Σ_{m≤n} γ^(n-m) q_n · k_m
    return [sum(gamma ** (n - m) * (q.row(n) * k.row(m).T)[0] for m in range(n + 1))
            for n in range(q.rows)]


def _row_sums_recurrent(q, k, gamma):
    """q_n · z_n for every n, and the last z."""
    z, sums = sp.zeros(1, k.cols), []
    for n in range(q.rows):
        # z_n = γ z_{n-1} + k_n
        z = gamma * z + k.row(n)
        sums.append((q.row(n) * z.T)[0])
    return sums, z


def _row_sums_chunkwise(q, k, gamma, chunk_size: int):
    """The row sums chunk by chunk, and the running key sum at the end."""
    z_prev, sums = sp.zeros(1, k.cols), []
    for start in range(0, q.rows, chunk_size):
        L = min(chunk_size, q.rows - start)
        for r in range(L):
            # Σ_{j≤r} γ^(r-j) q_n · k_j + γ^(r+1) q_n · z_prev
            inner = sum(gamma ** (r - j) * (q.row(start + r) * k.row(start + j).T)[0]
                        for j in range(r + 1))
            sums.append(inner + gamma ** (r + 1) * (q.row(start + r) * z_prev.T)[0])
        # z_end = γ^L z_prev + Σ_r γ^(L-r-1) k_r
        z_prev = gamma ** L * z_prev + sum((gamma ** (L - r - 1) * k.row(start + r)
                                            for r in range(L)), sp.zeros(1, k.cols))
    return sums, z_prev


def prove_normalisation_row_scalars(length: int = 3, d_k: int = 2, d_v: int = 2):
    """The paper's three normalisations (§2.2) divide output row n by one positive number σ_n:

        R = (Q K^T / sqrt(d_k)) ⊙ D̃,   D̃_nm = D_nm / sqrt(c_n),
        R̃_nm = R_nm / max(|Σ_i R_ni|, 1),   O = R̃ V,
        o_n = (Σ_m γ^(n-m) (q_n · k_m) v_m) / σ_n,   σ_n = sqrt(d_k) sqrt(c_n) max(|Σ_i R_ni|, 1),
        Σ_i R_ni = q_n · z_n / (sqrt(d_k) sqrt(c_n)),

    and, with a_n = q_n · z_n, σ_n = max(|a_n|, sqrt(d_k c_n)) (one division per row, no clipping).
    Checked exactly for symbolic q, k, v of `length` tokens. Returns {"sigma_n", "compact":
    max(|a_n|, sqrt(d_k c_n)), "row_sum": Σ_i R_ni}, written with the symbols c_n, d_k and
    a_n = q_n · z_n.
    """
    _check_row_scalars(length, d_k, d_v)
    c_n, dk = sp.Symbol("c_n", positive=True), sp.Symbol("d_k", positive=True)
    a_n = sp.Symbol("a_n", real=True)                               # a_n = q_n · z_n
    row_sum = a_n / (sp.sqrt(dk) * sp.sqrt(c_n))
    sigma_n = sp.sqrt(dk) * sp.sqrt(c_n) * sp.Max(sp.Abs(row_sum), 1)
    _check_scaled_max()
    return {"sigma_n": sigma_n, "compact": sp.Max(sp.Abs(a_n), sp.sqrt(dk * c_n)),
            "row_sum": row_sum}


def _check_row_scalars(length: int, d_k: int, d_v: int):
    """Row by row, for symbolic q, k, v: o_n = raw_n / σ_n and Σ_i R_ni = q_n · z_n / (sqrt(d_k)
    sqrt(c_n)), with the three normalisations written out as the paper states them."""
    gamma = sp.Symbol("gamma", positive=True)
    q, k, v = (_symbol_rows(name, length, width) for name, width in (("q", d_k), ("k", d_k),
                                                                     ("v", d_v)))
    D = decay_matrix_symbolic(length, gamma)                         # Eq. 5's D
    c = [sum(D.row(n)) for n in range(length)]
    # D̃_nm = D_nm / sqrt(c_n);  R = (Q K^T / sqrt(d_k)) ⊙ D̃;  R̃_nm = R_nm / max(|Σ_i R_ni|, 1)
    D_tilde = sp.Matrix(length, length, lambda n, m: D[n, m] / sp.sqrt(c[n]))
    R = (q * k.T / sp.sqrt(d_k)).multiply_elementwise(D_tilde)
    clip = [sp.Max(sp.Abs(sum(R.row(n))), 1) for n in range(length)]
    R_tilde = sp.Matrix(length, length, lambda n, m: R[n, m] / clip[n])
    raw = (q * k.T).multiply_elementwise(D) * v                     # unnormalised retention (Eq. 5)
    normalised = R_tilde * v
    for n in range(length):
        sigma_n = sp.sqrt(d_k) * sp.sqrt(c[n]) * clip[n]
        assert_identity(normalised.row(n) * sigma_n, raw.row(n), f"row {n}: o_n = raw_n / σ_n")
        z_n = sum((gamma ** (n - m) * k.row(m) for m in range(n + 1)), sp.zeros(1, d_k))
        assert_identity(sum(R.row(n)), (q.row(n) * z_n.T)[0] / (sp.sqrt(d_k) * sp.sqrt(c[n])),
                        f"row {n}: Σ_i R_ni = q_n · z_n / (sqrt(d_k) sqrt(c_n))")


def _check_scaled_max():
    """σ_n = max(|a_n|, sqrt(d_k c_n)): p max(|a|/p, 1) = max(|a|, p) for p > 0, in the case
    |a| ≥ p and in the case |a| ≤ p."""
    p, w = sp.Symbol("p", positive=True), sp.Symbol("w", nonnegative=True)
    for size in (p * (1 + w), p * (1 - w)):
        assert_identity(p * sp.Max(size / p, 1), sp.Max(size, p), "p max(|a|/p, 1) = max(|a|, p)")


def prove_swish_gate():
    """swish(x) = x σ(x) = x / (1 + e^{-x}), the gate of Eq. 8: swish(x) - swish(-x) = x, swish(x) -
    x → 0 as x → ∞, swish(x) → 0 as x → -∞, swish'(0) = 1/2. Returns {"swish": x / (1 + e^{-x})}.
    """
    x = sp.Symbol("x", real=True)
    swish = x / (1 + sp.exp(-x))
    assert_identity(swish - swish.subs(x, -x), x, "swish(x) - swish(-x) = x")
    assert sp.limit(swish - x, x, sp.oo) == 0 and sp.limit(swish, x,
                                                           -sp.oo) == 0, "swish's two limits"
    assert sp.diff(swish, x).subs(x, 0) == sp.Rational(1, 2), "swish'(0) = 1/2"
    return {"swish": swish}

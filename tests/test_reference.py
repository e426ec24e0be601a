"""The NumPy float64 reference (retnet_ref.reference) against plain, independent computations.

Every form is compared with the defining double sum (conftest.naive_retention_loop), with each
other, and across a state hand-off; the general linear recurrence is compared with a brute-force sum
of matrix powers. Error measure: max |a - b| / max |b|; float64 forms agree to 1e-12 (sums of ≤ 40
products carry ~40·2^-53 ≈ 4e-15 relative error, so 1e-12 leaves a wide margin yet catches any
wrong factor, which shows up at 1e-2 or more).
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retnet_ref import reference
from retnet_ref.rotation import complex_rotate, rotate, theta_schedule, to_complex

TOL = 1e-12
GAMMAS = [1.0, 0.97, 0.5, 1e-9]
SHAPES = [(1, 1, 1), (7, 3, 5), (33, 8, 4)]        # (T, d_k, d_v)


def random_qkv(seed, T, d_k, d_v, complex_qk=False):
    """Seeded q, k (T, d_k) (complex when asked), v (T, d_v) and a state S_0 (d_k, d_v)."""
    rng = np.random.default_rng(seed)
    q, k = rng.standard_normal((2, T, d_k))
    if complex_qk:
        q, k = q + 1j * rng.standard_normal((T, d_k)), k + 1j * rng.standard_normal((T, d_k))
    v = rng.standard_normal((T, d_v))
    state = rng.standard_normal((d_k, d_v))
    return q, k, v, state


def final_state(k, v, gamma, state):
    """S_T = Σ_m γ^(T-1-m) k_m^T v_m + γ^T S_0, written as a loop."""
    T = k.shape[0]
    S = gamma ** T * state
    for m in range(T):
        S = S + gamma ** (T - 1 - m) * np.outer(k[m], v[m])
    return S


def chunk_sizes_for(T):
    """Chunk sizes that divide T, leave a ragged last chunk, equal 1, equal T and exceed T."""
    divisor = next(c for c in range(max(T // 3, 1), 0, -1) if T % c == 0)
    ragged = max(T // 3 + 1, 2)
    return sorted({divisor, ragged, 1, T, T + 17})


# ---------------------------------------------------------------- each form against the double sum


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("shape", SHAPES)
def test_parallel_equals_double_sum(shape, gamma, naive_retention, rel_err):
    q, k, v, _ = random_qkv(1, *shape)
    assert rel_err(reference.parallel(q, k, v, gamma), naive_retention(q, k, v, gamma)) <= TOL


@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("shape", SHAPES)
def test_recurrent_equals_double_sum(shape, gamma, with_state, naive_retention, rel_err):
    q, k, v, S0 = random_qkv(2, *shape)
    S0 = S0 if with_state else None
    o, S = reference.recurrent(q, k, v, gamma, state=S0)
    assert rel_err(o, naive_retention(q, k, v, gamma, S0)) <= TOL
    assert rel_err(S, final_state(k, v, gamma, np.zeros_like(S) if S0 is None else S0)) <= TOL


@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("T", [1, 12, 33])
def test_chunkwise_equals_double_sum_for_every_kind_of_chunk(T, gamma, with_state, naive_retention,
                                                             rel_err):
    q, k, v, S0 = random_qkv(3, T, 5, 3)
    S0 = S0 if with_state else None
    truth = naive_retention(q, k, v, gamma, S0)
    truth_state = final_state(k, v, gamma, np.zeros((5, 3)) if S0 is None else S0)
    for chunk_size in chunk_sizes_for(T):
        o, S = reference.chunkwise(q, k, v, gamma, chunk_size, state=S0)
        assert rel_err(o, truth) <= TOL, f"chunk_size={chunk_size}"
        assert rel_err(S, truth_state) <= TOL, f"chunk_size={chunk_size}"


def test_chunk_sizes_cover_every_kind():
    """The helper above really yields a divisor, a ragged size, 1, T and more than T."""
    sizes = chunk_sizes_for(33)
    assert 1 in sizes and 33 in sizes and max(sizes) > 33
    assert any(1 < c < 33 and 33 % c == 0 for c in sizes)
    assert any(1 < c < 33 and 33 % c != 0 for c in sizes)


# ---------------------------------------------------------------- complex q, k (Θ / conj Θ)


@pytest.mark.parametrize("gamma", GAMMAS)
def test_complex_inputs_all_forms_equal_double_sum(gamma, naive_retention, rel_err):
    q, k, v, S0 = random_qkv(4, 19, 4, 3, complex_qk=True)
    truth = naive_retention(q, k, v, gamma)
    assert np.iscomplexobj(reference.parallel(q, k, v, gamma))
    assert rel_err(reference.parallel(q, k, v, gamma), truth) <= TOL
    assert rel_err(reference.recurrent(q, k, v, gamma)[0], truth) <= TOL
    for chunk_size in (1, 4, 19, 40):
        assert rel_err(reference.chunkwise(q, k, v, gamma, chunk_size)[0], truth) <= TOL
    truth_with_state = naive_retention(q, k, v, gamma, S0)
    assert rel_err(reference.recurrent(q, k, v, gamma, state=S0)[0], truth_with_state) <= TOL
    assert rel_err(reference.chunkwise(q, k, v, gamma, 6, state=S0)[0], truth_with_state) <= TOL


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_theta_and_conj_theta_give_the_relative_phase(gamma, rel_err):
    """q̃_n = q_n e^{inθ}, k̃_m = k_m e^{-imθ}: o_n = Σ γ^(n-m) Σ_j q_nj k_mj e^{i(n-m)θ_j} v_m."""
    T, d = 15, 4
    q, k, v, _ = random_qkv(5, T, d, 2, complex_qk=True)
    theta = theta_schedule(2 * d)
    o = reference.parallel(complex_rotate(q, theta), complex_rotate(k, -theta), v, gamma)
    truth = np.zeros((T, 2), dtype=complex)
    for n in range(T):
        for m in range(n + 1):
            score = np.sum(q[n] * k[m] * np.exp(1j * (n - m) * theta))
            truth[n] += gamma ** (n - m) * score * v[m]
    assert rel_err(o, truth) <= TOL


@pytest.mark.parametrize("form", ["parallel", "recurrent", "chunkwise"])
def test_real_pair_rotation_is_the_real_part_of_complex_retention(form, rel_err):
    """Rotating real pairs of q and k by +nθ gives Re of retention on (q e^{inθ}, conj(k)
    e^{-imθ})."""
    T, d = 21, 8
    q, k, v, _ = random_qkv(6, T, d, 3)
    theta = theta_schedule(d)
    zq = complex_rotate(to_complex(q), theta)                      # (T, d/2)
    zk = complex_rotate(np.conj(to_complex(k)), -theta)            # (T, d/2)
    run = {"parallel": lambda a, b: reference.parallel(a, b, v, 0.9),
           "recurrent": lambda a, b: reference.recurrent(a, b, v, 0.9)[0],
           "chunkwise": lambda a, b: reference.chunkwise(a, b, v, 0.9, 5)[0]}[form]
    real = run(rotate(q, theta), rotate(k, theta))
    assert not np.iscomplexobj(real)
    assert rel_err(real, run(zq, zk).real) <= TOL


# ---------------------------------------------------------------- the forms against each other


@pytest.mark.parametrize("gamma", GAMMAS)
def test_forms_agree_with_each_other(gamma, rel_err):
    q, k, v, S0 = random_qkv(7, 40, 6, 5)
    parallel = reference.parallel(q, k, v, gamma)
    recurrent, S_rec = reference.recurrent(q, k, v, gamma)
    assert rel_err(recurrent, parallel) <= TOL
    for chunk_size in chunk_sizes_for(40):
        chunk, S_chunk = reference.chunkwise(q, k, v, gamma, chunk_size)
        assert rel_err(chunk, parallel) <= TOL
        assert rel_err(S_chunk, S_rec) <= TOL
    # with a state the recurrent and chunkwise forms still agree (parallel takes no state)
    o_rec, S_rec = reference.recurrent(q, k, v, gamma, state=S0)
    o_chunk, S_chunk = reference.chunkwise(q, k, v, gamma, 7, state=S0)
    assert rel_err(o_chunk, o_rec) <= TOL and rel_err(S_chunk, S_rec) <= TOL


def test_state_term_is_what_distinguishes_a_started_sequence(rel_err):
    """A nonzero state changes the output (so the state tests above are not vacuous)."""
    q, k, v, S0 = random_qkv(8, 10, 3, 3)
    with_state = reference.recurrent(q, k, v, 0.9, state=S0)[0]
    without = reference.recurrent(q, k, v, 0.9)[0]
    assert rel_err(with_state, without) > 1e-2


def test_low_precision_inputs_are_computed_in_float64(rel_err):
    """float32 inputs are widened first: the result is float64 and equals the float64 run on the
    same values."""
    q, k, v, S0 = (x.astype(np.float32) for x in random_qkv(14, 25, 4, 3))
    widened = [x.astype(np.float64) for x in (q, k, v, S0)]
    for run in (lambda *a: reference.recurrent(*a[:3], 0.97, state=a[3]),
                lambda *a: reference.chunkwise(*a[:3], 0.97, 6, state=a[3])):
        (o, S), (o64, S64) = run(q, k, v, S0), run(*widened)
        assert o.dtype == S.dtype == np.float64
        np.testing.assert_array_equal(o, o64)
        np.testing.assert_array_equal(S, S64)
    assert reference.parallel(q, k, v, 0.97).dtype == np.float64


# ---------------------------------------------------------------- state hand-off


def _run(form, q, k, v, gamma, state):
    if form == "recurrent":
        return reference.recurrent(q, k, v, gamma, state=state)
    return reference.chunkwise(q, k, v, gamma, 4, state=state)


@pytest.mark.parametrize("first,second", [("recurrent", "recurrent"), ("chunkwise", "chunkwise"),
                                          ("chunkwise", "recurrent"), ("recurrent", "chunkwise")])
@pytest.mark.parametrize("T1", [0, 1, 9, 13])
def test_state_hand_off_equals_one_pass(first, second, T1, rel_err):
    """T1 tokens, then T2 tokens from the returned state == T1 + T2 tokens at once."""
    q, k, v, S0 = random_qkv(9, 30, 4, 3)
    whole, S_whole = reference.recurrent(q, k, v, 0.95, state=S0)
    o1, S1 = _run(first, q[:T1], k[:T1], v[:T1], 0.95, S0)
    o2, S2 = _run(second, q[T1:], k[T1:], v[T1:], 0.95, S1)
    assert rel_err(np.concatenate([o1, o2]), whole) <= TOL
    assert rel_err(S2, S_whole) <= TOL


# ---------------------------------------------------------------- empty sequences


def test_empty_sequence():
    q, k, v, S0 = random_qkv(10, 0, 3, 2)
    assert reference.parallel(q, k, v, 0.9).shape == (0, 2)
    for o, S in (reference.recurrent(q, k, v, 0.9, state=S0),
                 reference.chunkwise(q, k, v, 0.9, 4, state=S0)):
        assert o.shape == (0, 2)
        np.testing.assert_array_equal(S, S0)
    for o, S in (reference.recurrent(q, k, v, 0.9), reference.chunkwise(q, k, v, 0.9, 4)):
        assert o.shape == (0, 2)
        np.testing.assert_array_equal(S, np.zeros((3, 2)))


# ---------------------------------------------------------------- the general linear recurrence


def _stable_matrix(rng, d):
    A = rng.standard_normal((d, d))
    return 0.9 * A / np.abs(np.linalg.eigvals(A)).max()           # spectral radius 0.9


def brute_force_linear(q, k, v, A, state):
    """o_n = Σ_{m≤n} q_n A^(n-m) k_m^T v_m + q_n A^(n+1) s_0, with explicit matrix powers."""
    T = q.shape[0]
    out = np.zeros((T, v.shape[1]), dtype=np.result_type(q, A))
    for n in range(T):
        for m in range(n + 1):
            out[n] += q[n] @ np.linalg.matrix_power(A, n - m) @ np.outer(k[m], v[m])
        out[n] += q[n] @ np.linalg.matrix_power(A, n + 1) @ state
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_linear_recurrence_equals_brute_force(seed, rel_err):
    rng = np.random.default_rng(seed)
    q, k, v, S0 = random_qkv(seed, 17, 4, 3)
    A = _stable_matrix(rng, 4)
    o, S = reference.linear_recurrence(q, k, v, A, state=S0)
    assert rel_err(o, brute_force_linear(q, k, v, A, S0)) <= TOL
    truth_state = np.linalg.matrix_power(A, 17) @ S0 + sum(
        np.linalg.matrix_power(A, 16 - m) @ np.outer(k[m], v[m]) for m in range(17))
    assert rel_err(S, truth_state) <= TOL
    o0, _ = reference.linear_recurrence(q, k, v, A)
    assert rel_err(o0, brute_force_linear(q, k, v, A, np.zeros_like(S0))) <= TOL


def test_diagonalised_recurrence_absorbs_p_into_q_and_k(rel_err):
    """A = P diag(λ) P^{-1}: (q P, k P^{-T}, state P^{-1} S_0) through diag(λ) gives the same
    output."""
    rng = np.random.default_rng(11)
    q, k, v, S0 = random_qkv(11, 17, 4, 3)
    A = _stable_matrix(rng, 4)
    lam, P = np.linalg.eig(A)                                   # complex in general
    assert np.iscomplexobj(lam) and np.abs(lam.imag).max() > 1e-3  # a genuine rotation part
    P_inv = np.linalg.inv(P)
    o_full, S_full = reference.linear_recurrence(q, k, v, A, state=S0)
    o_diag, S_diag = reference.diagonal_recurrence(q @ P, k @ P_inv.T, v, lam, state=P_inv @ S0)
    assert rel_err(o_diag, o_full) <= 1e-11                     # eig/inv conditioning costs a digit
    assert np.abs(o_diag.imag).max() <= 1e-11 * np.abs(o_full).max()
    assert rel_err(P @ S_diag, S_full) <= 1e-11


@pytest.mark.parametrize("gamma", [1.0, 0.9, 1e-9])
def test_diagonal_recurrence_with_gamma_e_i_theta_is_rotated_retention(gamma, rel_err):
    """λ_j = γ e^{iθ_j}  ⇔  retention on (q_n e^{inθ}, k_m e^{-imθ}) with decay γ."""
    q, k, v, _ = random_qkv(12, 23, 5, 3, complex_qk=True)
    theta = np.random.default_rng(12).uniform(0, np.pi, 5)
    o, _ = reference.diagonal_recurrence(q, k, v, gamma * np.exp(1j * theta))
    rotated = reference.parallel(complex_rotate(q, theta), complex_rotate(k, -theta), v, gamma)
    assert rel_err(o, rotated) <= TOL


def test_diagonal_recurrence_with_equal_eigenvalues_is_the_recurrent_form(rel_err):
    q, k, v, S0 = random_qkv(13, 20, 4, 2)
    o, S = reference.diagonal_recurrence(q, k, v, np.full(4, 0.8), state=S0)
    o_ref, S_ref = reference.recurrent(q, k, v, 0.8, state=S0)
    assert rel_err(o, o_ref) <= TOL and rel_err(S, S_ref) <= TOL
    o_lin, S_lin = reference.linear_recurrence(q, k, v, 0.8 * np.eye(4), state=S0)
    assert rel_err(o_lin, o_ref) <= TOL and rel_err(S_lin, S_ref) <= TOL


# ---------------------------------------------------------------- properties (hypothesis)

@settings(max_examples=40)
@given(T=st.integers(0, 40), d_k=st.integers(1, 6), d_v=st.integers(1, 6), data=st.data(),
       chunk_size=st.integers(1, 50), with_state=st.booleans(), complex_qk=st.booleans(),
       seed=st.integers(0, 2 ** 32 - 1))
def test_property_all_forms_equal_double_sum(T, d_k, d_v, data, chunk_size, with_state, complex_qk,
                                             seed,
                                             gamma_strategy, naive_retention, rel_err):
    gamma = data.draw(gamma_strategy, label="gamma")
    q, k, v, S0 = random_qkv(seed, T, d_k, d_v, complex_qk)
    S0 = S0 if with_state else None
    truth = naive_retention(q, k, v, gamma, S0)
    o_rec, S_rec = reference.recurrent(q, k, v, gamma, state=S0)
    o_chunk, S_chunk = reference.chunkwise(q, k, v, gamma, chunk_size, state=S0)
    assert o_rec.shape == o_chunk.shape == (T, d_v)
    assert rel_err(o_rec, truth) <= TOL
    assert rel_err(o_chunk, truth) <= TOL
    assert rel_err(S_chunk, S_rec) <= TOL
    if S0 is None:
        assert rel_err(reference.parallel(q, k, v, gamma), truth) <= TOL

"""Rotation (θ schedule, complex and real-pair forms) and decay (γ schedules, D, ζ, ξ, γ^L, c_n).

Truths are written independently: powers of γ with Python's `**` or mpmath at 50 digits, rotations
as complex exponentials, sums as loops.
"""
from __future__ import annotations

import mpmath
import numpy as np
import pytest
import torch

from retnet_ref import decay
from retnet_ref.rotation import (
    angles,
    complex_rotate,
    from_complex,
    rotate,
    theta_schedule,
    to_complex,
)

TOL = 1e-12


def _rng(seed):
    return np.random.default_rng(seed)


# ================================================================ rotation


def test_theta_schedule_values():
    theta = theta_schedule(64)
    assert theta.shape == (32,) and theta.dtype == np.float64
    assert theta[0] == 1.0
    assert abs(theta[-1] - 1e-4) <= 1e-16
    # θ_j = 10000^(-j / (d/2 - 1)): a geometric sequence
    j = np.arange(32)
    np.testing.assert_allclose(theta, 10000.0 ** (-j / 31), rtol=1e-14)
    assert np.all(np.diff(theta) < 0)


def test_theta_schedule_smallest_head_and_other_base():
    assert theta_schedule(2).tolist() == [1.0]
    assert abs(theta_schedule(8, base=100.0)[-1] - 1e-2) <= 1e-16


@pytest.mark.parametrize("head_dim, error",
                         [(0, ValueError), (-2, ValueError), (3, ValueError), (7, ValueError),
                                             (2.0, TypeError), (True, TypeError), ("8", TypeError)])
def test_theta_schedule_rejects_bad_head_dim(head_dim, error):
    with pytest.raises(error, match="head_dim"):
        theta_schedule(head_dim)


def test_to_complex_pairs_neighbours_and_round_trips():
    x = np.arange(12.0).reshape(2, 6)
    z = to_complex(x)
    assert z.tolist() == [[0 + 1j, 2 + 3j, 4 + 5j], [6 + 7j, 8 + 9j, 10 + 11j]]
    np.testing.assert_array_equal(from_complex(z), x)


def test_to_complex_rejects_odd_dimension():
    with pytest.raises(ValueError, match="x must have an even last dimension"):
        to_complex(np.zeros((3, 5)))


def test_angles_are_position_times_theta():
    theta = theta_schedule(6)
    a = angles(4, theta, offset=3)
    assert a.shape == (4, 3)
    for n in range(4):
        for j in range(3):
            assert a[n, j] == (3 + n) * theta[j]


def test_real_pair_rotation_equals_complex_rotation():
    x = _rng(0).standard_normal((2, 9, 8))
    theta = theta_schedule(8)
    for offset in (0, 5):
        z = to_complex(x) * np.exp(1j * (np.arange(offset, offset + 9)[:, None] * theta))
        np.testing.assert_allclose(rotate(x, theta, offset), from_complex(z), rtol=0, atol=1e-14)
        np.testing.assert_allclose(from_complex(complex_rotate(to_complex(x), theta, offset)),
                                   from_complex(z),
                                   rtol=0, atol=1e-14)


def test_rotation_preserves_pair_norms():
    x = _rng(1).standard_normal((30, 10))
    r = rotate(x, theta_schedule(10))
    np.testing.assert_allclose(np.abs(to_complex(r)), np.abs(to_complex(x)), rtol=1e-14)


def test_rotated_score_is_real_part_of_complex_score(rel_err):
    """rotate(q)_n · rotate(k)_m = Re[ (q e^{inθ}) · conj(k e^{imθ}) ] = Re[ Σ_j q_j conj(k_j)
    e^{i(n-m)θ_j} ]."""
    rng = _rng(2)
    T, d = 17, 12
    q, k = rng.standard_normal((2, T, d))
    theta = theta_schedule(d)
    real_scores = rotate(q, theta) @ rotate(k, theta).T            # (T, T)
    zq, zk = to_complex(q), to_complex(k)
    truth = np.array([[np.sum(zq[n] * np.conj(zk[m]) * np.exp(1j * (n - m) * theta)).real
                       for m in range(T)] for n in range(T)])
    assert rel_err(real_scores, truth) <= TOL
    # the paper's conj Θ form: k̃_m = conj(k_m) e^{-imθ}, plain product, same real part
    paper = complex_rotate(zq, theta) @ complex_rotate(np.conj(zk), -theta).T
    assert rel_err(real_scores, paper.real) <= TOL


@pytest.mark.parametrize("offset", [1, 7, 1000])
def test_scores_are_shift_invariant(offset, rel_err):
    """Rotating both q and k from position s instead of 0 gives the same score matrix."""
    q, k = _rng(3).standard_normal((2, 20, 8))
    theta = theta_schedule(8)
    base = rotate(q, theta) @ rotate(k, theta).T
    shifted = rotate(q, theta, offset) @ rotate(k, theta, offset).T
    assert rel_err(shifted, base) <= TOL


def test_scores_depend_only_on_the_distance():
    """With the same q and k at every position, the score matrix is constant along each diagonal."""
    rng = _rng(4)
    T, d = 25, 8
    q = np.tile(rng.standard_normal(d), (T, 1))
    k = np.tile(rng.standard_normal(d), (T, 1))
    theta = theta_schedule(d)
    scores = rotate(q, theta) @ rotate(k, theta).T
    for lag in range(-T + 1, T):
        diagonal = np.diagonal(scores, offset=-lag)
        np.testing.assert_allclose(diagonal, diagonal[0], rtol=0, atol=1e-13)
    assert np.ptp(scores) > 1e-2                                    # not constant everywhere


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-15), (torch.float32, 2e-6)])
def test_numpy_and_torch_rotate_agree(dtype, tol):
    x = _rng(5).standard_normal((2, 3, 50, 16))
    theta = theta_schedule(16)
    expected = rotate(x, theta, offset=3)
    got = rotate(torch.tensor(x, dtype=dtype), torch.tensor(theta), offset=3)
    assert isinstance(got, torch.Tensor) and got.dtype == dtype and got.shape == x.shape
    np.testing.assert_allclose(got.double().numpy(), expected, rtol=0,
                               atol=tol * np.abs(expected).max())


def test_torch_rotate_at_long_positions_keeps_the_phase_in_float32():
    """Angles are formed in float64, so a float32 rotation at position 10^6 is still right to
    float32 eps."""
    x = _rng(6).standard_normal((4, 8))
    theta = theta_schedule(8)
    expected = rotate(x, theta, offset=10 ** 6)
    got = rotate(torch.tensor(x, dtype=torch.float32), theta, offset=10 ** 6).double().numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6 * np.abs(expected).max())


def test_rotate_rejects_a_mismatched_theta():
    with pytest.raises(ValueError, match="last dimension"):
        rotate(np.zeros((3, 6)), theta_schedule(8))


# ================================================================ decay schedules


def test_default_schedule_is_one_minus_two_to_minus_five_minus_h():
    gamma = decay.gamma_schedule(8)
    assert gamma.tolist() == [1 - 2.0 ** (-5 - h) for h in range(8)]
    assert decay.gamma_gap_schedule(8).tolist() == [2.0 ** (-5 - h) for h in range(8)]


def test_linspace_schedule_endpoints_and_geometric_gaps():
    gap = decay.gamma_gap_schedule(5, kind="linspace")
    assert abs(gap[0] - 1 / 32) <= 1e-17 and abs(gap[-1] - 1 / 512) <= 1e-18
    ratios = gap[1:] / gap[:-1]
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-14)     # log-spaced
    np.testing.assert_allclose(decay.gamma_schedule(5, kind="linspace"), 1 - gap, rtol=0, atol=0)


def test_schedule_with_one_head():
    assert decay.gamma_schedule(1).tolist() == [1 - 1 / 32]
    assert decay.gamma_gap_schedule(1,
                                    kind="linspace").tolist() == pytest.approx([1 / 32], rel=1e-15)


@pytest.mark.parametrize("num_heads, error",
                         [(0, ValueError), (-1, ValueError), (2.0, TypeError), (True, TypeError)])
def test_schedule_rejects_bad_num_heads(num_heads, error):
    with pytest.raises(error, match="num_heads"):
        decay.gamma_schedule(num_heads)


def test_schedule_rejects_unknown_kind():
    with pytest.raises(ValueError, match="kind"):
        decay.gamma_schedule(4, kind="cosine")


def test_log_gamma_schedule_is_log_gamma_to_full_precision():
    """log γ_h in float64 equals log(1 - 2^(-5-h)) computed with 50 digits, for h = 0..30."""
    log_g = decay.log_gamma_schedule(31)
    mpmath.mp.dps = 50
    for h, value in enumerate(log_g):
        exact = float(mpmath.log(1 - mpmath.mpf(2) ** (-5 - h)))
        assert abs(value - exact) <= 2e-16 * abs(exact), h
    assert np.all(log_g < 0)
    np.testing.assert_allclose(log_g, np.log(decay.gamma_schedule(31)), rtol=1e-15)


def test_why_log_space_gamma_rounds_to_one_in_low_precision():
    """float32(γ_h) == 1 for every h ≥ 20 and bfloat16(γ_h) == 1 for h ≥ 4, while log γ_h < 0."""
    gamma = decay.gamma_schedule(31)
    f32 = gamma.astype(np.float32)
    assert np.all(f32[:20] < 1) and np.all(f32[20:] == 1)
    bf16 = torch.tensor(gamma).to(torch.bfloat16)
    assert bool((bf16[:4] < 1).all()) and bool((bf16[4:] == 1).all())
    assert np.all(decay.log_gamma_schedule(31) < 0)


def test_effective_memory():
    np.testing.assert_allclose(decay.effective_memory(decay.gamma_schedule(4)), [32, 64, 128, 256],
                               rtol=1e-12)
    assert decay.effective_memory(1.0) == np.inf
    assert decay.effective_memory(0.5) == 2.0


@pytest.mark.parametrize("gamma", [0.0, -0.1, 1.5, float("nan")])
def test_log_gamma_rejects_values_outside_the_unit_interval(gamma):
    with pytest.raises(ValueError, match="gamma"):
        decay.log_gamma(gamma)


# ================================================================ decay factors


@pytest.mark.parametrize("gamma", [1.0, 0.97, 0.5, 1e-9])
def test_decay_matrix_is_masked_powers(gamma):
    T = 30
    D = decay.decay_matrix(T, decay.log_gamma(gamma))
    truth = np.array([[gamma ** (n - m) if n >= m else 0.0 for m in range(T)] for n in range(T)])
    assert D.shape == (T, T) and D.dtype == np.float64
    np.testing.assert_allclose(D, truth, rtol=1e-13, atol=0)
    assert np.all(np.triu(D, 1) == 0)


def test_decay_matrix_is_finite_for_tiny_gamma_and_long_sequences():
    # 1e-300 and the smallest subnormal
    for log_g in (decay.log_gamma(1e-300), np.log(np.nextafter(0, 1))):
        D = decay.decay_matrix(2000, log_g)
        assert np.all(np.isfinite(D)) and np.all(D >= 0)
        np.testing.assert_array_equal(np.diag(D), 1.0)
        assert D[-1, 0] == 0.0 and np.all(np.triu(D, 1) == 0)
    assert decay.decay_matrix(3, decay.log_gamma(1e-300))[1,
                                                          0] == pytest.approx(1e-300, rel=1e-12,
                                                                              abs=0)
    Dt = decay.decay_matrix(2000, torch.tensor([decay.log_gamma(1e-300), 0.0], dtype=torch.float64))
    assert bool(torch.isfinite(Dt).all())
    assert bool((Dt[1] == torch.tril(torch.ones(2000, 2000, dtype=torch.float64))).all())


def test_decay_matrix_for_several_heads_stacks_heads_first():
    gammas = [0.9, 0.5, 1.0]
    D = decay.decay_matrix(6, np.log(gammas))
    assert D.shape == (3, 6, 6)
    for h, g in enumerate(gammas):
        np.testing.assert_allclose(D[h], decay.decay_matrix(6, np.log(g)), rtol=0, atol=0)


@pytest.mark.parametrize("L", [1, 5, 16])
@pytest.mark.parametrize("gamma", [1.0, 0.97, 1e-9])
def test_zeta_xi_and_chunk_decay_definitions(L, gamma):
    lg = decay.log_gamma(gamma)
    np.testing.assert_allclose(decay.zeta(L, lg), [gamma ** (L - r - 1) for r in range(L)],
                               rtol=1e-13, atol=0)
    np.testing.assert_allclose(decay.xi(L, lg), [gamma ** (r + 1) for r in range(L)], rtol=1e-13,
                               atol=0)
    assert decay.chunk_decay(L, lg) == pytest.approx(gamma ** L, rel=1e-13, abs=0)
    # ζ_0 γ = γ^L and ξ_{L-1} = γ^L: both ends meet the chunk decay
    assert decay.xi(L, lg)[-1] == pytest.approx(decay.chunk_decay(L, lg), rel=1e-15, abs=0)
    # the last row of D is ζ (key r decayed to the chunk's end)
    np.testing.assert_allclose(decay.decay_matrix(L, lg)[-1], decay.zeta(L, lg), rtol=1e-15)


def _direct_row_sum(gamma, T):
    """c_n = Σ_{i≤n} γ^(n-i) = Σ_{p=0}^{n} γ^p, as a running sum of Python powers."""
    out, total = [], 0.0
    for n in range(T):
        total += gamma ** n
        out.append(total)
    return np.array(out)


@pytest.mark.parametrize("gamma", [1.0, 1 - 2.0 ** -40, 1 - 2.0 ** -20, 0.97, 0.5, 1e-9])
def test_decay_row_sum_equals_direct_sum(gamma, rel_err):
    T = 500
    c = decay.decay_row_sum(T, decay.log_gamma(gamma))
    truth = _direct_row_sum(gamma, T)
    # each entry to 1e-12 relative (row sums are all ≥ 1, so entry-wise relative is meaningful)
    assert np.abs(c / truth - 1).max() <= 1e-12
    assert rel_err(c, decay.decay_matrix(T, decay.log_gamma(gamma)).sum(axis=1)) <= 1e-12


def test_decay_row_sum_is_n_plus_one_for_gamma_one():
    assert decay.decay_row_sum(6, 0.0).tolist() == [1, 2, 3, 4, 5, 6]


# ================================================================ NumPy and torch versions agree


@pytest.mark.parametrize("name", ["decay_matrix", "zeta", "xi", "chunk_decay", "decay_row_sum"])
def test_numpy_and_torch_decay_factors_agree(name):
    log_g = np.log([1.0, 1 - 2.0 ** -40, 0.97, 0.5, 1e-9, 1e-300])
    fn = getattr(decay, name)
    expected = fn(13, log_g)
    got = fn(13, torch.tensor(log_g, dtype=torch.float64))
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float64
    assert got.shape == np.shape(expected)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-15, atol=0)


def test_torch_decay_factors_follow_device_and_dtype_of_log_gamma():
    log_g = torch.tensor([-0.1, -0.01], dtype=torch.float32)
    for fn in (decay.decay_matrix, decay.zeta, decay.xi, decay.decay_row_sum):
        out = fn(4, log_g)
        assert out.dtype == torch.float32 and out.device == log_g.device and out.shape[0] == 2


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
def test_causal_decay_from_the_powers_equals_the_decay_matrix(dtype):
    log_g = torch.log(torch.tensor([1.0, 0.97, 0.5, 1e-9], dtype=torch.float64))
    for T in (1, 2, 37):
        assert torch.equal(decay.causal_decay(T, log_g, dtype),
                           decay.decay_matrix(T, log_g).to(dtype))


def test_geometric_sum_equals_the_sum_it_names_in_numpy_and_torch_and_at_gamma_one():
    geometric_sum = decay.geometric_sum
    log_g = np.log(np.array([0.5, 0.97, 1 - 2.0 ** -20, 1.0]))
    counts = np.arange(6.0)[:, None]                                    # (6, 1) against (4,)
    explicit = np.array([[sum(g ** i for i in range(int(n))) for g in np.exp(log_g)]
                         for n in counts[:, 0]])
    assert np.allclose(geometric_sum(counts, log_g), explicit, rtol=1e-13, atol=0)
    assert geometric_sum(counts, log_g)[:, -1].tolist() == list(range(6))      # γ = 1: count
    at = torch.tensor(5.0, dtype=torch.float64)                                # a 0-d tensor count
    assert torch.allclose(geometric_sum(at, torch.from_numpy(log_g)), torch.from_numpy(explicit[5]),
                          rtol=1e-13, atol=0)

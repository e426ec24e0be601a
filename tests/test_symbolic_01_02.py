"""The SymPy proofs behind notebooks 01 (recurrence) and 02 (rotation and decay).

Each proof asserts its identity itself; a test runs it and checks what it returns for display.
A proof that cannot fail would prove nothing, so the checker is also shown to reject wrong
identities.
"""
import pytest
import sympy as sp

from retnet_ref.proofs import ch01_recurrence, ch02_rotation_decay, common


def test_unrolled_recurrence_equals_the_recursion():
    stepped, unrolled = ch01_recurrence.prove_unrolled_recurrence(steps=3, d_k=2, d_v=2)
    assert str(unrolled) == "q_2*(A**2*k_0.T*v_0 + A**3*s_0 + A*k_1.T*v_1 + k_2.T*v_2)"
    assert str(stepped) == "q_2*(A*(A*(A*s_0 + k_0.T*v_0) + k_1.T*v_1) + k_2.T*v_2)"


@pytest.mark.parametrize("wrong_power", [lambda n, m: n - m + 1, lambda n, m: max(n - m - 1, 0),
                                         lambda n, m: n - m if m >= 0 else n])
def test_unrolled_recurrence_rejects_a_wrong_power_of_A(wrong_power):
    with pytest.raises(AssertionError, match="identity fails"):
        ch01_recurrence.prove_unrolled_recurrence(steps=3, d_k=2, d_v=1, power=wrong_power)


def test_outputs_are_a_causal_score_sum():
    scores = ch01_recurrence.prove_causal_scores(steps=3, d_k=2, d_v=2)
    assert scores.blockshape == (3, 3)
    assert all(scores.blocks[n, m] == sp.ZeroMatrix(1, 1) for n in range(3)
               for m in range(n + 1, 3))
    assert str(scores.blocks[2, 0]) == "q_2*A**2*k_0.T"


def test_rotation_scaling_block_diagonalises():
    block, vectors, diagonal = ch01_recurrence.prove_rotation_scaling_eigen(max_power=3)
    gamma, theta = sorted(block.free_symbols, key=str)
    assert diagonal == sp.diag(gamma * sp.exp(sp.I * theta), gamma * sp.exp(-sp.I * theta))
    assert vectors == sp.Matrix([[1, 1], [-sp.I, sp.I]])


def test_a_wrong_eigenvector_is_rejected():
    block, vectors, diagonal = ch01_recurrence.prove_rotation_scaling_eigen(max_power=0)
    swapped = vectors[:, [1, 0]]   # eigenvectors paired with the wrong eigenvalues
    with pytest.raises(AssertionError, match="identity fails"):
        common.assert_identity(block, swapped * diagonal * swapped.inv(),
                               "γR = Λ diag(λ) Λ^-1, columns swapped")


def test_decay_and_rotation_split():
    power, split = ch02_rotation_decay.prove_decay_rotation_split()
    assert str(split) == "gamma**p*exp(I*p*theta)"
    assert str(power) == "(gamma*exp(I*theta))**p"


def test_effective_memory_is_the_total_weight():
    series, closed = ch02_rotation_decay.prove_effective_memory()
    gamma = next(iter(closed.free_symbols))
    assert closed.subs(gamma, sp.Rational(31, 32)) == 32


def test_relative_position_identity():
    lhs, rhs = ch02_rotation_decay.prove_relative_position(pairs=2)
    n, m = sp.symbols("n m", integer=True)
    assert rhs.subs({n: 7, m: 4}) == rhs.subs({n: 3, m: 0})   # only n - m enters


def test_relative_position_rejects_an_absolute_phase():
    lhs, rhs = ch02_rotation_decay.prove_relative_position(pairs=1)
    n, m = sp.symbols("n m", integer=True)
    with pytest.raises(AssertionError, match="identity fails"):
        common.assert_identity(lhs.doit(), rhs.subs(m, -m), "phase e^{i(n+m)θ}")


def test_real_pair_rotation_is_the_real_part_and_relative():
    rotation, relative = ch02_rotation_decay.prove_real_pair_rotation()
    n, m = sp.symbols("n m", integer=True)
    theta = sp.Symbol("theta", real=True)
    assert rotation == ch02_rotation_decay.rotation_matrix(n * theta)
    assert sp.simplify(relative.subs({n: n + 5, m: m + 5}) - relative) == 0


def test_real_pair_rotation_rejects_a_backward_key_rotation():
    rotation, relative = ch02_rotation_decay.prove_real_pair_rotation()
    n, m = sp.symbols("n m", integer=True)
    # rotating k by -mθ instead of +mθ gives a score that depends on n + m
    with pytest.raises(AssertionError, match="identity fails"):
        common.assert_identity(relative, relative.subs(m, -m),
                               "q^T R((m-n)θ) k with k rotated backwards")

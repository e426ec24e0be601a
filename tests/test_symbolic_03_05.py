"""The SymPy proofs behind notebooks 03-05, one test per proof, and the wrong chunk splits
rejected."""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from retnet_ref import reference
from retnet_ref.proofs import ch03_parallel, ch04_recurrent, ch05_chunkwise, common


def test_parallel_equals_recurrence():
    shown = ch03_parallel.prove_parallel_equals_recurrence()
    gamma = sp.Symbol("gamma", positive=True)
    assert shown["D"] == sp.Matrix(4, 4, lambda n, m: gamma ** (n - m) if n >= m else 0)
    # the rotated score q̃_2 · k̃_0 carries the phase of the lag n - m = 2 only
    assert shown["score"].has(sp.exp(2 * sp.I * sp.Symbol("theta_0", real=True)))


def test_parallel_proof_can_fail():
    """K rotated by Θ (not conj Θ) must not equal the recurrence: the comparison is not vacuous."""
    gamma, thetas = sp.Symbol("gamma", positive=True), sp.symbols("theta_0:2", real=True)
    Q, K, V, S0 = common.retention_symbols(3, 2, 1)
    Theta, _ = common.rotation_symbolic(3, thetas)
    wrong = common.parallel_symbolic(Q.multiply_elementwise(Theta), K.multiply_elementwise(Theta),
                                     V, gamma)
    recurrent, _ = common.recurrence_symbolic(Q, K, V, [gamma * sp.exp(sp.I * t) for t in thetas],
                                              S0)
    assert not common.is_zero_matrix(wrong - recurrent)


def test_recurrent_equals_parallel():
    shown = ch04_recurrent.prove_recurrent_equals_parallel()
    gamma = sp.Symbol("gamma", positive=True)
    s00, k00, v00, k10, v10, k20, v20 = sp.symbols("s_00 k_00 v_00 k_10 v_10 k_20 v_20")
    assert sp.expand(shown["S_3"] - (gamma**3 * s00 + gamma**2 * k00 * v00 + gamma * k10 * v10
                                     + k20 * v20)) == 0


def test_state_handoff():
    shown = ch04_recurrent.prove_state_handoff()
    gamma = sp.Symbol("gamma", positive=True)
    s00, k00, v00, k10, v10 = sp.symbols("s_00 k_00 v_00 k_10 v_10")
    assert sp.expand(shown["state"] - (gamma**2 * s00 + gamma * k00 * v00 + k10 * v10)) == 0


def test_chunk_exponents():
    shown = ch05_chunkwise.prove_chunk_exponents()
    assert set(shown) == {"xi", "zeta"}


def test_chunkwise_equals_recurrence_every_small_split():
    shown = ch05_chunkwise.prove_chunkwise_equals_recurrence()
    assert shown["pairs"] == sum(T + 1 for T in range(1, 7))


@pytest.mark.parametrize("variant", ["no_zeta", "v1_printed"])
def test_wrong_chunk_splits_rejected(variant):
    assert not ch05_chunkwise.chunk_split_matches(3, 2, variant)


def test_no_zeta_harmless_only_for_one_token_chunks():
    """Without ζ every chunk of length 1 is still right (ζ = [1]); from length 2 on the state is
    wrong."""
    assert ch05_chunkwise.chunk_split_matches(4, 1, "no_zeta")
    assert not ch05_chunkwise.chunk_split_matches(2, 2, "no_zeta")


def test_chunkwise_variant_v4_matches_reference_numerically():
    rng = np.random.default_rng(0)
    q, k, v = rng.standard_normal((37, 4)), rng.standard_normal((37,
                                                                 4)), rng.standard_normal((37, 3))
    s0 = rng.standard_normal((4, 3))
    o, R = ch05_chunkwise.chunkwise_variant(q, k, v, 0.9, 8, s0)
    o_ref, R_ref = reference.chunkwise(q, k, v, 0.9, 8, state=s0)
    np.testing.assert_allclose(o, o_ref, rtol=0, atol=1e-12 * np.abs(o_ref).max())
    np.testing.assert_allclose(R, R_ref, rtol=0, atol=1e-12 * np.abs(R_ref).max())


def test_chunkwise_variant_rejects_unknown_name():
    with pytest.raises(ValueError, match="variant"):
        ch05_chunkwise.chunkwise_variant(np.zeros((2, 1)), np.zeros((2, 1)), np.zeros((2, 1)), 0.5,
                                         1,
                                   np.zeros((1, 1)), "v2")

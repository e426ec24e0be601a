"""Notebook 06's SymPy proofs (normalisation, GroupNorm, swish gate), and that the checks can
fail."""
import pytest
import sympy as sp

from retnet_ref.proofs import ch06_multiscale, ch07_model, common


def test_layer_norm_scale_invariance():
    shown = ch06_multiscale.prove_layer_norm_scale_invariance()
    alpha, eps = sp.Symbol("alpha", positive=True), sp.Symbol("epsilon", nonnegative=True)
    assert shown["lhs"].has(alpha) and shown["rhs"].has(eps / alpha ** 2)


def test_layer_norm_is_not_scale_invariant_when_epsilon_is_positive():
    # the identity the proof relies on is LN_ε(αx) = LN_{ε/α²}(x); LN_ε(αx) = LN_ε(x) must fail
    shown = ch06_multiscale.prove_layer_norm_scale_invariance()
    alpha = sp.Symbol("alpha", positive=True)
    with pytest.raises(AssertionError, match="identity fails"):
        common.assert_identity(shown["lhs"], shown["lhs"].subs(alpha, 1), "LN_ε(αx) = LN_ε(x)")


def test_layer_norm_epsilon_effect():
    shown = ch06_multiscale.prove_layer_norm_epsilon_effect()
    V, eps = sp.symbols("V epsilon", positive=True)
    assert sp.simplify(shown["first_order"] - (1 - eps / (2 * V))) == 0


def test_decay_row_sum():
    shown = ch06_multiscale.prove_decay_row_sum()
    gamma = sp.Symbol("gamma", positive=True)
    n = sp.Symbol("n", integer=True, nonnegative=True)
    assert shown["closed"].subs({gamma: sp.Rational(1, 2), n: 3}) == sp.Rational(15, 8)


@pytest.mark.parametrize("length, chunk_size", [(5, 3), (4, 2), (3, 1), (4, 4)])
def test_running_key_sum(length, chunk_size):
    shown = ch06_multiscale.prove_running_key_sum(length=length, chunk_size=chunk_size)
    assert sp.expand(shown["parallel"] - shown["recurrent"]) == 0


def test_normalisation_row_scalars():
    shown = ch06_multiscale.prove_normalisation_row_scalars()
    assert shown["sigma_n"].has(sp.Max)


def test_swish_gate():
    x = sp.Symbol("x", real=True)
    assert sp.simplify(ch06_multiscale.prove_swish_gate()["swish"] - x * (1 / (1
                                                                               + sp.exp(-x)))) == 0


def test_parameter_budget():
    shown = ch07_model.prove_parameter_budget()
    d = sp.Symbol("d", positive=True)
    w_v, f = sp.symbols("w_v f", positive=True)
    # a Transformer with RetNet's FFN width 2d would be 4d² short of the budget
    assert sp.expand(shown["transformer"].subs(f, 2 * d) - 12 * d ** 2) == -4 * d ** 2
    assert shown["retnet"].has(w_v)

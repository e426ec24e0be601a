"""Chapter 07's proof: the parameter budget, 12 d² weights per layer for RetNet and a Transformer.

Every proof asserts with sp.simplify(lhs - rhs) == 0 (or an exact comparison); a failed proof raises
AssertionError naming the identity.
"""
from __future__ import annotations

import sympy as sp

from .common import assert_identity


def prove_parameter_budget():
    """Weights per layer (paper §3.1, with Eq. 9; biases and norms aside): RetNet and a Transformer
    both spend 12 d².

        RetNet, paper:     W_Q, W_K d×d;  W_V, W_G d×w_v;  W_O w_v×d;  FFN d×f, f×d        w_v = f =
        2d RetNet, official:  the same retention;  gated FFN d×f twice and f×d               w_v = f
        = 5d/3
        Transformer:       W_Q, W_K, W_V, W_O d×d;  FFN d×f, f×d                          f = 4d

    Returns {"retnet", "official", "transformer"}: the per-layer counts in d, w_v and f.
    """
    d, w_v, f = sp.symbols("d w_v f", positive=True)
    retnet = 2 * d ** 2 + 3 * d * w_v + 2 * d * f
    official = 2 * d ** 2 + 3 * d * w_v + 3 * d * f
    transformer = 4 * d ** 2 + 2 * d * f
    assert_identity(retnet.subs({w_v: 2 * d, f: 2 * d}), 12 * d ** 2,
                    "RetNet (paper widths 2d) = 12 d²")
    assert_identity(official.subs({w_v: 5 * d / 3, f: 5 * d / 3}), 12 * d ** 2,
                    "RetNet (official, 5d/3) = 12 d²")
    assert_identity(transformer.subs(f, 4 * d), 12 * d ** 2, "Transformer (FFN 4d) = 12 d²")
    return {"retnet": retnet, "official": official, "transformer": transformer}

"""A causal function lets no input reach an earlier output: every form, with NaN and ±inf inputs.

One non-finite entry is planted in q, k or v at position t. Outputs before t must equal the outputs
for the clean inputs; from t on, the entries the planted value reaches must be non-finite (it must
not be silently dropped either): for a key, all of o_n; for v_t[c], column c of o_n; for q_t, row t
only. The final state, which sums over every position, must be non-finite exactly where the planted
value enters it. Checked for the NumPy reference, the torch forms, the normalised forms and (in
Triton's interpreter without a GPU) the Triton kernels.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from retnet_ref import reference
from retnet_ref.normalisation import normalised_retention
from retnet_ref.retention import chunkwise_retention, parallel_retention, recurrent_retention

GAMMAS = [0.9, 1.0]
B, H, D_K, D_V = 1, 2, 3, 4


def plant(x, t, feature, value):
    x = x.clone()
    x[:, :, t, feature] = value
    return x


def torch_forms(chunk_size):
    """Each form as (q, k, v) -> (o, final state or None)."""
    return {
        "parallel": lambda q, k, v: (parallel_retention(q, k, v, GAMMAS), None),
        "recurrent": lambda q, k, v: recurrent_retention(q, k, v, GAMMAS),
        "chunkwise": lambda q, k, v: chunkwise_retention(q, k, v, GAMMAS, chunk_size),
        **{f"normalised {mode}": (lambda q, k, v, mode=mode: _normalised(q, k, v, mode, chunk_size))
           for mode in ("parallel", "recurrent", "chunkwise")},
    }


def _normalised(q, k, v, mode, chunk_size):
    o, state = normalised_retention(q, k, v, GAMMAS, mode, chunk_size if mode == "chunkwise"
                                    else None)
    return o, state.S


def assert_causal(o_clean, o_bad, S_bad, which, t, feature):
    """The contract of the module docstring, for one planted entry."""
    o_clean, o_bad = (x.detach().to("cpu", torch.float64) for x in (o_clean, o_bad))
    assert torch.equal(o_bad[:, :, :t], o_clean[:, :,
                                                :t]), "a later input changed an earlier output"
    reached = torch.zeros_like(o_bad, dtype=torch.bool)
    if which == "k":
        reached[:, :, t:] = True
    elif which == "v":
        reached[:, :, t:, feature] = True
    else:
        reached[:, :, t] = True
    assert not torch.isfinite(o_bad[reached]).any(), "the non-finite input was dropped"
    assert torch.equal(o_bad[~reached], o_clean[~reached]), "the non-finite input reached too far"
    if S_bad is not None:
        S_bad = S_bad.detach().to("cpu", torch.float64)
        hit = torch.zeros_like(S_bad, dtype=torch.bool)
        if which == "k":
            hit[:, :, feature, :] = True
        elif which == "v":
            hit[:, :, :, feature] = True
        assert not torch.isfinite(S_bad[hit]).any() and torch.isfinite(S_bad[~hit]).all()


cases = st.tuples(st.integers(1, 20), st.data(), st.sampled_from("qkv"),
                  st.sampled_from([float("nan"), float("inf"), float("-inf")]), st.integers(1, 8))


@given(cases)
def test_torch_forms_are_causal_under_non_finite_inputs(case):
    T, data, which, value, chunk_size = case
    t = data.draw(st.integers(0, T - 1), label="t")
    feature = data.draw(st.integers(0, (D_V if which == "v" else D_K) - 1), label="feature")
    gen = torch.Generator().manual_seed(T)
    clean = [torch.randn(B, H, T, d, generator=gen, dtype=torch.float64) for d in (D_K, D_K, D_V)]
    bad = list(clean)
    bad["qkv".index(which)] = plant(clean["qkv".index(which)], t, feature, value)
    for name, form in torch_forms(chunk_size).items():
        o_clean, _ = form(*clean)
        o_bad, S_bad = form(*bad)
        # the state's rows are keys' features: a planted q never reaches it
        try:
            assert_causal(o_clean, o_bad, S_bad if which != "q" else None, which, t, feature)
        except AssertionError as err:
            raise AssertionError(f"{name}: {err}") from None


@given(cases)
def test_the_reference_is_causal_under_non_finite_inputs(case):
    T, data, which, value, chunk_size = case
    t = data.draw(st.integers(0, T - 1), label="t")
    feature = data.draw(st.integers(0, (D_V if which == "v" else D_K) - 1), label="feature")
    rng = np.random.default_rng(T)
    clean = [rng.normal(size=(T, d)) for d in (D_K, D_K, D_V)]
    bad = [x.copy() for x in clean]
    bad["qkv".index(which)][t, feature] = value
    forms = {"parallel": lambda q, k, v: (reference.parallel(q, k, v, 0.9), None),
             "recurrent": lambda q, k, v: reference.recurrent(q, k, v, 0.9),
             "chunkwise": lambda q, k, v: reference.chunkwise(q, k, v, 0.9, chunk_size)}
    for name, form in forms.items():
        o_clean, _ = form(*clean)
        with np.errstate(invalid="ignore", over="ignore"):       # NaN or inf in a product: expected
            o_bad, S_bad = form(*bad)
        as_4d = lambda x: torch.from_numpy(np.asarray(x))[None, None]
        try:
            assert_causal(as_4d(o_clean), as_4d(o_bad), None if S_bad is None or which == "q"
                          else as_4d(S_bad),
                          which, t, feature)
        except AssertionError as err:
            raise AssertionError(f"reference {name}: {err}") from None


INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


# the interpreter's NumPy on NaN
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize(
    "device",
    [
        pytest.param(
            "cpu",
            marks=pytest.mark.skipif(
                not INTERPRETED, reason="the interpreter is off (a GPU is present)"
            ),
        ),
        pytest.param("cuda", marks=pytest.mark.cuda),
    ],
)
@pytest.mark.parametrize("which, value",
                         [("k", float("nan")), ("v", float("inf")), ("q", float("-inf"))])
def test_triton_kernels_are_causal_under_non_finite_inputs(device, which, value):
    pytest.importorskip("triton", reason="the Triton kernels need Triton")
    from retnet_ref import kernels

    T, t, feature = 40, 21, 3                                      # t inside the second chunk of 16
    gen = torch.Generator().manual_seed(0)
    clean = [torch.randn(B, H, T, 32, generator=gen).to(device) for _ in range(3)]
    bad = list(clean)
    bad["qkv".index(which)] = plant(clean["qkv".index(which)], t, feature, value)
    o_clean, _ = kernels.chunkwise_retention(*clean, GAMMAS, 16)
    o_bad, S_bad = kernels.chunkwise_retention(*bad, GAMMAS, 16)
    assert_causal(o_clean, o_bad, S_bad if which != "q" else None, which, t, feature)

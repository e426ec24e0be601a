"""The batched torch forms (retnet_ref.retention) on the CPU.

- float64: each form against the defining double sum and against the NumPy reference, head by head,
  with heads of different γ; the forms against each other; state hand-off; hypothesis properties.
- autograd: gradcheck of every form (q, k, v and the initial state) and equal gradients across
  forms.
- float32 / bfloat16: error against float64 under checking.TOLERANCE (the project's single source
  for these numbers and their reasons); output and state dtypes.
"""
from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import run_form
from retnet_ref import reference
from retnet_ref.checking import TOLERANCE, random_inputs
from retnet_ref.decay import gamma_schedule
from retnet_ref.numerics import plain_sum_recurrent
from retnet_ref.retention import (
    chunkwise_retention,
    compensated_decay_and_add,
    log_gamma_per_head,
    parallel_retention,
    recurrent_retention,
)
from retnet_ref.verify import SLOW_HEADS, float64_truth

TOL = TOLERANCE[torch.float64]
GAMMAS = [1.0, 0.97, 0.5, 1e-9]                   # one head each: no decay, slow, fast, almost none
CHUNK_SIZES = [1, 4, 7, 21, 50]                   # for T = 21: 1, ragged, divides, T, more than T


def per_head(x, b, h):
    return x[b, h].detach().numpy()


# ---------------------------------------------------------------- float64 against independent
# truths


@pytest.mark.parametrize("form,chunk_size,with_state",
                         [("parallel", None, False)]              # the parallel form takes no state
                         + [(form, c, s) for form, c in [("recurrent", None)]
                            + [("chunkwise", c) for c in CHUNK_SIZES]
                            for s in (False, True)])
def test_forms_equal_double_sum_head_by_head(form, chunk_size, with_state, naive_retention,
                                             rel_err):
    q, k, v, S0 = random_inputs(2, 4, 21, 5, 3, seed=1)
    S0 = S0 if with_state else None
    o, _ = run_form(form, q, k, v, GAMMAS, S0, chunk_size)
    assert o.shape == (2, 4, 21, 3) and o.dtype == torch.float64
    for b in range(2):
        for h, gamma in enumerate(GAMMAS):
            truth = naive_retention(per_head(q, b, h), per_head(k, b, h), per_head(v, b, h), gamma,
                                    None if S0 is None else per_head(S0, b, h))
            assert rel_err(o[b, h], truth) <= TOL, (b, h)


@pytest.mark.parametrize("chunk_size", [3, 8, 64])
def test_forms_equal_numpy_reference_head_by_head(chunk_size, rel_err):
    q, k, v, S0 = random_inputs(2, 4, 37, 6, 4, seed=2)
    o_par = parallel_retention(q, k, v, GAMMAS)
    o_rec, S_rec = recurrent_retention(q, k, v, GAMMAS, state=S0)
    o_chunk, S_chunk = chunkwise_retention(q, k, v, GAMMAS, chunk_size, state=S0)
    for b in range(2):
        for h, gamma in enumerate(GAMMAS):
            qh, kh, vh, Sh = (per_head(x, b, h) for x in (q, k, v, S0))
            assert rel_err(o_par[b, h], reference.parallel(qh, kh, vh, gamma)) <= TOL
            ref_o, ref_S = reference.recurrent(qh, kh, vh, gamma, state=Sh)
            assert rel_err(o_rec[b, h], ref_o) <= TOL and rel_err(S_rec[b, h], ref_S) <= TOL
            ref_o, ref_S = reference.chunkwise(qh, kh, vh, gamma, chunk_size, state=Sh)
            assert rel_err(o_chunk[b, h], ref_o) <= TOL and rel_err(S_chunk[b, h], ref_S) <= TOL


def test_forms_agree_with_each_other(rel_err):
    q, k, v, S0 = random_inputs(2, 4, 45, 8, 8, seed=3)
    o_par = parallel_retention(q, k, v, GAMMAS)
    o_rec, S_rec = recurrent_retention(q, k, v, GAMMAS)
    assert rel_err(o_rec, o_par) <= TOL
    for chunk_size in (1, 6, 9, 45, 100):
        o_chunk, S_chunk = chunkwise_retention(q, k, v, GAMMAS, chunk_size)
        assert rel_err(o_chunk, o_par) <= TOL and rel_err(S_chunk, S_rec) <= TOL
    o_rec, S_rec = recurrent_retention(q, k, v, GAMMAS, state=S0)
    o_chunk, S_chunk = chunkwise_retention(q, k, v, GAMMAS, 10, state=S0)
    assert rel_err(o_chunk, o_rec) <= TOL and rel_err(S_chunk, S_rec) <= TOL


def test_heads_really_use_their_own_gamma(rel_err):
    """Swapping two heads' γ changes exactly those heads' outputs."""
    q, k, v, _ = random_inputs(1, 4, 12, 3, 3, seed=4)
    o = parallel_retention(q, k, v, GAMMAS)
    swapped = parallel_retention(q, k, v, [GAMMAS[1], GAMMAS[0]] + GAMMAS[2:])
    assert rel_err(swapped[:, 0], o[:, 0]) > 1e-3 and rel_err(swapped[:, 1], o[:, 1]) > 1e-3
    assert rel_err(swapped[:, 2:], o[:, 2:]) <= TOL


@pytest.mark.parametrize("as_type", [list, tuple, np.array,
                                     lambda g: torch.tensor(g, dtype=torch.float64)],
                         ids=["list", "tuple", "ndarray", "tensor"])
def test_gamma_may_be_any_sequence_or_tensor(as_type):
    q, k, v, _ = random_inputs(1, 4, 9, 3, 2, seed=5)
    expected = parallel_retention(q, k, v, GAMMAS)
    gamma = as_type(GAMMAS)
    assert torch.equal(parallel_retention(q, k, v, gamma), expected)
    assert torch.allclose(recurrent_retention(q, k, v, gamma)[0], expected, rtol=0, atol=1e-13)
    assert torch.allclose(chunkwise_retention(q, k, v, gamma, 4)[0], expected, rtol=0, atol=1e-13)


def test_log_gamma_of_a_sequence_is_made_once_and_can_be_saved_by_autograd():
    """The same γ list on the same device gives the same log γ tensor (no copy from the host per
    call), float64 and exact; one first made in inference mode is still usable in a graph."""
    q = torch.zeros(1, 3, 2, 4)
    with torch.inference_mode():
        first = log_gamma_per_head([0.5, 0.75, 1.0], q)
    assert log_gamma_per_head((0.5, 0.75, 1.0), q) is first
    assert first.dtype == torch.float64 and not first.is_inference()
    assert torch.equal(first, torch.tensor([0.5, 0.75, 1.0], dtype=torch.float64).log())
    assert log_gamma_per_head([0.5, 0.75, 0.875], q) is not first
    w = torch.ones(3, dtype=torch.float64, requires_grad=True)
    (w * first).sum().backward()
    assert w.grad.tolist() == first.tolist()


def test_inputs_and_state_are_not_modified():
    q, k, v, S0 = random_inputs(1, 4, 10, 3, 2, seed=6)
    copies = [x.clone() for x in (q, k, v, S0)]
    parallel_retention(q, k, v, GAMMAS)
    recurrent_retention(q, k, v, GAMMAS, state=S0)
    chunkwise_retention(q, k, v, GAMMAS, 3, state=S0)
    assert all(torch.equal(x, c) for x, c in zip((q, k, v, S0), copies))


# ---------------------------------------------------------------- state hand-off


@pytest.mark.parametrize("first,second", [("recurrent", "recurrent"), ("chunkwise", "chunkwise"),
                                          ("chunkwise", "recurrent"), ("recurrent", "chunkwise")])
@pytest.mark.parametrize("T1", [0, 5, 13])
def test_state_hand_off_equals_one_pass(first, second, T1, rel_err):
    q, k, v, S0 = random_inputs(2, 4, 30, 4, 3, seed=7)
    whole, S_whole = chunkwise_retention(q, k, v, GAMMAS, 6, state=S0)
    o1, S1 = run_form(first, *(x[:, :, :T1] for x in (q, k, v)), GAMMAS, S0, chunk_size=4)
    o2, S2 = run_form(second, *(x[:, :, T1:] for x in (q, k, v)), GAMMAS, S1, chunk_size=4)
    assert rel_err(torch.cat([o1, o2], dim=2), whole) <= TOL
    assert rel_err(S2, S_whole) <= TOL


# ---------------------------------------------------------------- empty sequences


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_empty_sequence(dtype):
    q, k, v, S0 = (x.to(dtype) for x in random_inputs(2, 3, 0, 4, 5, seed=8))
    o = parallel_retention(q, k, v, GAMMAS[:3])
    assert o.shape == (2, 3, 0, 5) and o.dtype == dtype
    S_given = S0.float() if dtype == torch.bfloat16 else S0
    for form in ("recurrent", "chunkwise"):
        o, S = run_form(form, q, k, v, GAMMAS[:3], S_given)
        assert o.shape == (2, 3, 0, 5) and o.dtype == dtype
        assert torch.equal(S, S_given)
        o, S = run_form(form, q, k, v, GAMMAS[:3])
        assert o.shape == (2, 3, 0, 5) and S.shape == (2, 3, 4, 5) and not S.any()


# ---------------------------------------------------------------- properties (hypothesis)

@settings(max_examples=40)
@given(B=st.integers(1, 3), H=st.integers(1, 3), T=st.integers(0, 40), d_k=st.integers(1, 6),
       d_v=st.integers(1, 6), data=st.data(), chunk_size=st.integers(1, 50),
       with_state=st.booleans(),
       seed=st.integers(0, 2 ** 31 - 1))
def test_property_forms_equal_reference(B, H, T, d_k, d_v, data, chunk_size, with_state, seed,
                                        gamma_strategy, rel_err):
    gamma = data.draw(st.lists(gamma_strategy, min_size=H, max_size=H), label="gamma")
    q, k, v, S0 = random_inputs(B, H, T, d_k, d_v, seed=seed)
    S0 = S0 if with_state else None
    o_rec, S_rec = recurrent_retention(q, k, v, gamma, state=S0)
    o_chunk, S_chunk = chunkwise_retention(q, k, v, gamma, chunk_size, state=S0)
    assert o_rec.shape == o_chunk.shape == (B, H, T, d_v)
    assert S_rec.shape == S_chunk.shape == (B, H, d_k, d_v)
    for b in range(B):
        for h in range(H):
            state = None if S0 is None else per_head(S0, b, h)
            ref_o, ref_S = reference.recurrent(per_head(q, b, h), per_head(k, b, h),
                                               per_head(v, b, h),
                                               gamma[h], state=state)
            assert rel_err(o_rec[b, h], ref_o) <= TOL and rel_err(S_rec[b, h], ref_S) <= TOL
            assert rel_err(o_chunk[b, h], ref_o) <= TOL and rel_err(S_chunk[b, h], ref_S) <= TOL
    if S0 is None:
        assert rel_err(parallel_retention(q, k, v, gamma), o_rec) <= TOL


# ---------------------------------------------------------------- autograd


def _grad_inputs(with_state, seed=9):
    q, k, v, S0 = random_inputs(1, 2, 5, 3, 2, seed=seed)
    return tuple(x.requires_grad_() for x in ((q, k, v, S0) if with_state else (q, k, v)))


@pytest.mark.parametrize("form,with_state",
                         [("parallel", False), ("recurrent", False), ("recurrent", True),
                                             ("chunkwise", False), ("chunkwise", True)])
def test_gradcheck(form, with_state):
    """Analytic gradients (q, k, v and the state) equal finite differences in float64."""
    inputs = _grad_inputs(with_state)

    def fn(q, k, v, state=None):
        # T = 5: a ragged last chunk
        o, S = run_form(form, q, k, v, [0.9, 0.5], state, chunk_size=2)
        return o if S is None else (o, S)

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-8, rtol=1e-6)


def _gradients(form, inputs, weights, chunk_size=3):
    """d loss / d (q, k, v[, S_0]); inputs of length 4 carry an initial state, and then S_T enters
    the loss."""
    with_state = len(inputs) == 4
    o, S = run_form(form, *inputs[:3], GAMMAS, inputs[3] if with_state else None, chunk_size)
    # a random scalar loss: Σ w_o ⊙ o (+ Σ w_S ⊙ S_T when a state is handed in and out)
    loss = (weights[0] * o).sum() + ((weights[1] * S).sum() if with_state else 0)
    return torch.autograd.grad(loss, inputs)


@pytest.mark.parametrize("with_state", [False, True])
def test_gradients_equal_across_forms(with_state, rel_err):
    q, k, v, S0 = random_inputs(2, 4, 23, 4, 3, seed=10)
    inputs = tuple(x.requires_grad_() for x in ((q, k, v, S0) if with_state else (q, k, v)))
    gen = torch.Generator().manual_seed(11)
    weights = (torch.randn(2, 4, 23, 3, generator=gen, dtype=torch.float64),
               torch.randn(2, 4, 4, 3, generator=gen, dtype=torch.float64))
    forms = ["recurrent", "chunkwise"] + ([] if with_state else ["parallel"])
    grads = {form: _gradients(form, inputs, weights) for form in forms}
    for form in forms[1:]:
        for name, g, g_rec in zip("qkvS", grads[form], grads["recurrent"]):
            assert rel_err(g, g_rec) <= 1e-10, (form, name)
    for chunk_size in (1, 23, 40):
        for g, g_rec in zip(_gradients("chunkwise", inputs, weights, chunk_size),
                            grads["recurrent"]):
            assert rel_err(g, g_rec) <= 1e-10, chunk_size


# ---------------------------------------------------------------- low precision against float64

LOW_PRECISION = [torch.float32, torch.bfloat16]
HEADS = 4


@functools.lru_cache(maxsize=None)
def _float64_case(T):
    """Seeded float64 inputs of length T and their float64 parallel output (shared by all dtypes and
    forms)."""
    gamma = gamma_schedule(HEADS).tolist()
    q, k, v, _ = random_inputs(1, HEADS, T, 32, 32, seed=T)
    return (q, k, v), gamma, parallel_retention(q, k, v, gamma)


def _low_precision_error(form, dtype, T, rel_err, chunk_size=64):
    """Relative error of `form` run in `dtype` against the float64 parallel form (same float64
    inputs)."""
    inputs, gamma, truth = _float64_case(T)
    o, _ = run_form(form, *(x.to(dtype) for x in inputs), gamma, chunk_size=chunk_size)
    assert o.dtype == dtype
    return rel_err(o, truth)


@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
@pytest.mark.parametrize("form,T", [("parallel", 64), ("parallel", 512), ("parallel", 2048),
                                    ("chunkwise", 64), ("chunkwise", 512), ("chunkwise", 2048),
                                    ("recurrent", 64), ("recurrent", 256)])
def test_low_precision_error_within_tolerance(form, T, dtype, rel_err):
    assert _low_precision_error(form, dtype, T, rel_err) <= TOLERANCE[dtype]


@pytest.mark.parametrize("dtype,state_dtype",
                         [(torch.float64, torch.float64), (torch.float32, torch.float32),
                                               (torch.bfloat16, torch.float32),
                                               (torch.float16, torch.float32)],
                         ids=str)
@pytest.mark.parametrize("form", ["recurrent", "chunkwise"])
def test_output_has_input_dtype_and_state_is_float32_or_wider(form, dtype, state_dtype):
    q, k, v, S0 = (x.to(dtype) for x in random_inputs(1, 2, 9, 4, 3, seed=12))
    o, S = run_form(form, q, k, v, [0.9, 0.99])
    assert o.dtype == dtype and S.dtype == state_dtype
    o, S = run_form(form, q, k, v, [0.9, 0.99], state=S0)         # a state given in the input dtype
    assert o.dtype == dtype and S.dtype == state_dtype
    assert parallel_retention(q, k, v, [0.9, 0.99]).dtype == dtype


def test_bfloat16_state_is_carried_in_float32_across_a_hand_off(rel_err):
    """Carrying the float32 state through a bf16 hand-off loses nothing beyond one bf16 pass."""
    gamma = gamma_schedule(HEADS).tolist()
    q, k, v, _ = random_inputs(1, HEADS, 256, 16, 16, seed=13)
    truth = parallel_retention(q, k, v, gamma)
    x = [t.to(torch.bfloat16) for t in (q, k, v)]
    o1, S1 = chunkwise_retention(*(t[:, :, :100] for t in x), gamma, 32)
    assert S1.dtype == torch.float32
    o2, _ = recurrent_retention(*(t[:, :, 100:] for t in x), gamma, state=S1)
    assert rel_err(torch.cat([o1, o2], dim=2), truth) <= TOLERANCE[torch.bfloat16]


@pytest.mark.parametrize("gamma", [0.999, 1 - 1 / 1923])
def test_float32_recurrent_decay_does_not_drift_for_gamma_float32_cannot_hold(gamma, rel_err):
    # Multiplying a float32 state by fl(γ) at every step drifts by δ / (√2 (1 - γ)), δ = |fl(γ) - γ|
    # / γ: 9e-6 for γ = 0.999 at T = 4096, over the tolerance (notebooks/10_numerics.ipynb, §4b).
    # The update subtracts the float32 gap 1 - γ instead and stays near 1e-6.
    q, k, v, _ = random_inputs(1, 1, 4096, 32, 32, seed=4096)
    truth = parallel_retention(q, k, v, [gamma])
    o, _ = recurrent_retention(*(t.float() for t in (q, k, v)), [gamma])
    assert float(np.float32(gamma)) != gamma                         # float32 cannot hold this γ
    assert rel_err(o, truth) <= TOLERANCE[torch.float32] / 2


def test_compensated_step_keeps_exactly_what_the_rounding_of_the_state_lost():
    """S_{n+1} + e_{n+1} = S_n + x_n with no rounding at all (Fast2Sum); here γ = 1, e_n = 0, x_n =
    k_n^T v_n."""
    gen = torch.Generator().manual_seed(3)
    S = torch.randn(2, 3, 8, 5, generator=gen) * 100
    k_n, v_n = torch.randn(2, 3, 8, generator=gen), torch.randn(2, 3, 5, generator=gen)
    S_next, e_next = compensated_decay_and_add(S, torch.zeros_like(S), k_n, v_n,
                                               torch.zeros(3, 1, 1))
    x = k_n[..., :, None] * v_n[..., None, :]                     # fl(k_n^T v_n), one rounding each
    assert torch.equal(S_next.double() + e_next.double(), S.double() + x.double())
    assert torch.equal(S_next, S + x) and e_next.abs().max() > 0  # something was lost, and kept


def test_float32_recurrent_error_does_not_grow_with_the_memory_of_slow_heads(rel_err):
    """T = 16,384 on the slowest default heads and γ = 1: the compensated sum stays near 4u
    (measured ≤ 2.7e-7 over 4 seeds), where the plain sum it replaced already crossed the tolerance
    (1.4-1.9e-5 for γ = 1 - 2^-20)."""
    gamma = list(SLOW_HEADS.values())
    q, k, v, _ = random_inputs(1, len(gamma), 16384, 32, 32, seed=16384)
    truth = float64_truth(q, k, v, gamma)
    x = [t.float() for t in (q, k, v)]
    compensated, plain = recurrent_retention(*x, gamma)[0], plain_sum_recurrent(*x, gamma)
    assert all(rel_err(compensated[:, h], truth[:, h]) <= TOLERANCE[torch.float32] / 10
               for h in range(len(gamma)))
    assert rel_err(plain[:, 2], truth[:, 2]) > TOLERANCE[torch.float32]


@pytest.mark.parametrize("T,gamma", [(65536, 1 - 2 ** -18), (65536, 0.999), (131072, 1 - 3e-6),
                                     (131072, 1.0)],
                         ids=["6.7B head 13", "0.999", "1-3e-6", "1"])
def test_float32_chunkwise_does_not_drift_at_long_lengths(T, gamma, rel_err):
    """The chunk states come from float64 powers γ^(C(i-j)), not from a float32 γ^C multiplied in
    T/C times.

    The carried version reached 1.6e-5 for γ = 1 - 2^-18 at T = 65,536 with chunks of 64 (three
    times the tolerance); the closed form measures ≤ 5.6e-7 in all four cases (outputs and final
    state).
    """
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 1, T, 16, generator=gen, dtype=torch.float64) for _ in range(3))
    truth, S_truth = chunkwise_retention(q, k, v, [gamma], 1024)
    o, S = chunkwise_retention(q.float(), k.float(), v.float(), [gamma], 64)
    assert (
        rel_err(o, truth) <= TOLERANCE[torch.float32] / 5
        and rel_err(S, S_truth) <= TOLERANCE[torch.float32] / 5
    )


@pytest.mark.parametrize("form", ["recurrent", "chunkwise"])
@pytest.mark.parametrize("T", [0, 5])
def test_the_returned_state_is_never_the_callers_tensor(form, T):
    """A decode step writes its state in place, so a returned state that aliased the input would
    change it."""
    q, k, v = (torch.randn(1, 2, T, 3, dtype=torch.float64) for _ in range(3))
    S0 = torch.randn(1, 2, 3, 3, dtype=torch.float64)
    _, S = recurrent_retention(q, k, v, [0.9, 0.5], state=S0) if form == "recurrent" else \
        chunkwise_retention(q, k, v, [0.9, 0.5], 4, state=S0)
    assert S.data_ptr() != S0.data_ptr() and (T > 0 or torch.equal(S, S0))

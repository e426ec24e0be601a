"""retnet_ref.numerics: unit roundoff, the error-against-length sweep and the precision
counterexamples."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from retnet_ref import numerics, reference
from retnet_ref.checking import TOLERANCE, random_inputs, relative_error
from retnet_ref.decay import gamma_schedule
from retnet_ref.retention import recurrent_retention


@pytest.mark.parametrize("dtype, bits", [(torch.float64, 53), (torch.float32, 24),
                                         (torch.bfloat16, 8),
                                         (torch.float16, 11)])
def test_unit_roundoff_is_two_to_minus_the_significant_bits(dtype, bits):
    assert numerics.unit_roundoff(dtype) == 2.0 ** -bits


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rounding_changes_a_number_by_at_most_u_and_reaches_close_to_it(dtype):
    x = torch.randn(20_000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    u = numerics.unit_roundoff(dtype)
    assert 0.9 * u < numerics.max_rounding_error(x, dtype) <= u


def test_max_rounding_error_skips_zeros_and_is_zero_for_representable_values():
    x = torch.tensor([0.0, 1.0, 0.5, -0.75], dtype=torch.float64)
    assert numerics.max_rounding_error(x, torch.bfloat16) == 0.0
    assert numerics.max_rounding_error(torch.tensor([0.0, 1 + 2.0 ** -9]),
                                       torch.bfloat16) == pytest.approx(
        2.0 ** -9 / (1 + 2.0 ** -9))


def test_rounded_through_collapses_the_slow_default_heads():
    gammas = gamma_schedule(21)
    assert numerics.rounded_through(gammas[:8], torch.bfloat16)[4:] == [1.0] * 4
    assert numerics.rounded_through(gammas[:4], torch.bfloat16) == gammas[:4].tolist()
    in_float32 = numerics.rounded_through(gammas, torch.float32)
    assert in_float32[:20] == gammas[:20].tolist() and in_float32[20] == 1.0


def test_sweep_measures_every_form_against_the_truth_and_the_parallel_form():
    rows = numerics.sweep((8, 40), (torch.float32, torch.bfloat16), heads=2, d=8,
                          chunk_sizes=(4, 16),
                          recurrent_max_length=8)
    forms_vs_truth = {"parallel", "chunkwise C=4", "chunkwise C=16", numerics.ROUNDED_INPUTS_ONLY}
    for dtype in ("float32", "bfloat16"):
        assert {m.form for m in numerics.select(rows, dtype=dtype, length=8,
                                                reference="float64 truth")} == \
            forms_vs_truth | {"recurrent"}
        assert {m.form for m in numerics.select(rows, dtype=dtype, length=40,
                                                reference="float64 truth")} == \
            forms_vs_truth
        assert {m.form for m in numerics.select(rows, dtype=dtype, length=40,
                                                reference="parallel")} == \
            {"chunkwise C=4", "chunkwise C=16"}
    assert all(m.device == "cpu" for m in rows)
    for m in rows:
        assert m.error <= TOLERANCE[getattr(torch, m.dtype)]
    assert numerics.worst_error(rows,
                                dtype="bfloat16") > 100 * numerics.worst_error(rows,
                                                                               dtype="float32") > 0


def test_sweep_in_float64_agrees_to_rounding_and_reproduces_a_direct_measurement():
    rows = numerics.sweep((33,), (torch.float64,), heads=3, d=8, chunk_sizes=(5,))
    assert numerics.worst_error(rows) <= 1e-13
    q, k, v, _ = random_inputs(1, 2, 48, 8, 8, seed=48)
    gammas = gamma_schedule(2)
    truth = np.stack([reference.parallel(q[0, h].numpy(), k[0, h].numpy(), v[0, h].numpy(), g)
                      for h, g in enumerate(gammas)])
    x = [t.to(torch.float32) for t in (q, k, v)]
    direct = relative_error(recurrent_retention(*x, gammas)[0][0], truth)
    swept = numerics.select(numerics.sweep((48,), (torch.float32,), heads=2, d=8, chunk_sizes=()),
                            form="recurrent", reference="float64 truth")
    assert len(swept) == 1 and swept[0].error == pytest.approx(direct, rel=1e-9)


def test_sweep_keeps_the_worst_over_seeds():
    one = numerics.sweep((24,), (torch.bfloat16,), heads=2, d=8, chunk_sizes=(8,), seeds=(0,))
    three = numerics.sweep((24,), (torch.bfloat16,), heads=2, d=8, chunk_sizes=(8,),
                           seeds=(0, 1, 2))
    assert len(one) == len(three)
    for a, b in zip(one, three):
        assert (a.form, a.reference) == (b.form, b.reference) and b.error >= a.error


def test_rounded_inputs_only_has_about_one_u_of_error():
    rows = numerics.select(numerics.sweep((64,), (torch.bfloat16,), heads=2, d=16, chunk_sizes=()),
                           form=numerics.ROUNDED_INPUTS_ONLY)
    u = numerics.unit_roundoff(torch.bfloat16)
    assert len(rows) == 1 and 0.3 * u < rows[0].error < 2 * u


def test_state_in_float32_is_the_package_recurrent_form_to_rounding_and_in_bfloat16_it_fails():
    gammas = gamma_schedule(6)
    q, k, v, _ = random_inputs(1, 6, 300, 16, 16, seed=3)
    x = [t.to(torch.bfloat16) for t in (q, k, v)]
    package = recurrent_retention(*x, gammas)[0]
    # the loop sums plainly, the package with compensation: on float32 inputs the same function up
    # to float32 rounding (bfloat16 outputs would differ only where that rounding tips an output's
    # bfloat16 rounding)
    x32 = [t.float() for t in (q, k, v)]
    assert (
        0
        < relative_error(
            numerics.recurrent_with_state_in(*x32, gammas, torch.float32),
            recurrent_retention(*x32, gammas)[0],
        )
        <= 25 * numerics.unit_roundoff(torch.float32)
    )
    truth = recurrent_retention(q, k, v, gammas)[0]
    errors = numerics.per_head_errors(numerics.recurrent_with_state_in(*x, gammas, torch.bfloat16),
                                      truth)
    assert all(e <= TOLERANCE[torch.bfloat16] for e in numerics.per_head_errors(package, truth))
    assert errors[4] > 0.1 and max(errors) > 10 * TOLERANCE[torch.bfloat16]


def test_plain_sum_recurrent_is_the_package_form_in_float64_and_not_in_float32():
    gammas = [1 - 2 ** -10, 1.0]
    q, k, v, _ = random_inputs(1, 2, 500, 8, 8, seed=4)
    assert torch.equal(numerics.plain_sum_recurrent(q, k, v, gammas),
                       recurrent_retention(q, k, v, gammas)[0])
    x = [t.float() for t in (q, k, v)]
    assert not torch.equal(numerics.plain_sum_recurrent(*x, gammas),
                           recurrent_retention(*x, gammas)[0])


def test_recurrent_sum_errors_per_head_and_length_worst_over_seeds():
    gammas = [1 - 2 ** -12, 1.0]
    rows = numerics.recurrent_sum_errors((64, 512), gammas, seeds=(0, 1), d=8)
    assert {(m.length, m.form, m.gamma) for m in rows} == \
        {(T, form, g) for T in (64, 512) for form in ("recurrent", numerics.PLAIN_SUM)
         for g in gammas}
    assert all(m.dtype == "float32" and m.reference == "float64 truth" and 0 < m.error <= 2e-6
               for m in rows)
    q, k, v, _ = random_inputs(1, 2, 512, 8, 8, seed=100_003 + 512)              # seed 1 at T = 512
    direct = relative_error(recurrent_retention(*(t.float() for t in (q, k, v)), gammas)[0][:, 1],
                            recurrent_retention(q, k, v, gammas)[0][:, 1])
    assert numerics.select(rows, length=512, form="recurrent",
                           gamma=1.0)[0].error >= direct * (1 - 1e-9)


def test_state_in_float64_equals_the_reference():
    gammas = [0.9, 0.5]
    q, k, v, _ = random_inputs(1, 2, 20, 4, 3, seed=0)
    o = numerics.recurrent_with_state_in(q, k, v, gammas, torch.float64)
    for h, g in enumerate(gammas):
        assert relative_error(o[0, h], reference.recurrent(q[0, h].numpy(), k[0, h].numpy(),
                                                           v[0, h].numpy(), g)[0]) \
            <= 1e-13


def test_per_head_errors():
    truth = torch.ones(1, 2, 3, 4, dtype=torch.float64)
    o = truth.clone()
    o[0, 1, 2, 3] = 1.5
    assert numerics.per_head_errors(o, truth) == [0.0, 0.5]


def test_rounded_gamma_errors_are_zero_for_exact_gammas_and_large_for_collapsed_ones():
    gammas = gamma_schedule(6)
    q, k, v, _ = random_inputs(1, 6, 512, 8, 8, seed=2)
    errors = numerics.rounded_gamma_errors(q, k, v, gammas, torch.bfloat16)
    assert errors[:4] == [0.0] * 4 and min(errors[4:]) > 0.1
    assert numerics.rounded_gamma_errors(q, k, v, gammas, torch.float32) == [0.0] * 6


def test_predicted_decay_drift_matches_the_measured_drift():
    gammas = [0.9995, 0.999, 1 - 2.0 ** -10, 1.0]
    predicted = numerics.predicted_decay_drift(gammas, torch.float32)
    assert predicted[2:] == [0.0, 0.0]
    delta = abs(torch.tensor(0.9995, dtype=torch.float32).item() - 0.9995) / 0.9995
    assert predicted[0] == pytest.approx(delta / (math.sqrt(2) * 0.0005), rel=1e-9)
    q, k, v, _ = random_inputs(1, 4, 4096, 16, 16, seed=5)
    measured = numerics.rounded_gamma_errors(q, k, v, gammas, torch.float32)
    for m, p in zip(measured[:2], predicted[:2]):
        assert 0.5 < m / p < 2


"""The notebooks' check helper: it fails when it should, says why, and knows an unanswered
exercise."""
import math

import pytest
import torch

from retnet_ref.checking import TOLERANCE, CheckFailed, check, claim, dtype_name, exercise, given


def test_check_prints_one_line_and_passes(capsys):
    check("forms agree", 1.5e-15, 1e-12)
    assert capsys.readouterr().out.split() == ["forms", "agree", "max", "rel", "err", "1.5e-15",
                                               "tol", "1e-12", "pass"]


@pytest.mark.parametrize("err", [2e-12, math.nan, math.inf])
def test_check_fails_above_the_tolerance_and_on_nan(err):
    with pytest.raises(CheckFailed, match="hint: look at ζ"):
        check("chunkwise vs parallel", err, 1e-12, hint="look at ζ")


def test_claim_fails_with_its_hint():
    claim("true", True)
    with pytest.raises(CheckFailed, match="does not hold\n  hint: count"):
        claim("false", False, hint="count")


def test_exercise_not_attempted_is_reported_not_raised(capsys):
    with exercise("Exercise 1"):
        given(..., "A_scalar")
    with exercise("Exercise 2"):
        raise NotImplementedError
    out = capsys.readouterr().out
    assert out.count("not attempted yet") == 2 and "solved" not in out


def test_exercise_wraps_any_error_with_the_title_and_hint():
    with pytest.raises(CheckFailed,
                       match=r"Exercise 2: your answer raised ValueError: operands(.|\n)*hint: L = "
                             r"2"):
        with exercise("Exercise 2", hint="L = 2"):
            raise ValueError("operands could not be broadcast together")
    with pytest.raises(CheckFailed, match=r"Exercise 3: not yet\. x: max relative error"):
        with exercise("Exercise 3"):
            check("x", 1.0, 1e-12)


def test_exercise_solved(capsys):
    with exercise("Exercise 4"):
        check("x", 0.0)
    assert capsys.readouterr().out.endswith("Exercise 4: solved\n")


def test_dtype_name_is_the_name_without_torchs_prefix_for_every_tolerance():
    assert [dtype_name(dtype) for dtype in TOLERANCE] == ["float64", "float32", "bfloat16"]
    assert dtype_name(torch.float16) == "float16"

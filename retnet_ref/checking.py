"""The checks the notebooks print: one line per claim, and a hint when a claim fails.

    check(name, err, tol)     a numeric claim: err (a max relative error) is at most tol
    claim(name, holds, hint)  a claim that is true or false (a shape, an order, a count)

Both print one line, `name  max rel err 1.6e-15  tol 1e-12  pass` or `name  pass`, and raise
CheckFailed (an AssertionError) with the numbers and a hint when the claim does not hold.
The printed error is the measured one: its digits may change between machines, which is why the
notebook tests (nbval) compare everything on the line except those digits.

Exercises use two more pieces:

    ...                       the placeholder a learner replaces (`answer = ...`), or a function
                              body `raise NotImplementedError`
    with exercise(title, hint): runs a check cell: an unanswered exercise prints "not attempted
                              yet" instead of failing; any error inside says which exercise failed
                              and adds the hint, instead of a bare AssertionError or a NumPy error.
    given(value, name)        the learner's answer, or NotAttempted while it is still `...`
"""
from __future__ import annotations

import contextlib

import torch

from .verify import TOLERANCE, relative_error

__all__ = ["CheckFailed", "NotAttempted", "TOL", "check", "claim", "exercise", "given", "relative_error"]

# float64 forms of one computation agree to ~1e-12 relative: the project's tolerance (verify.TOLERANCE)
TOL = TOLERANCE[torch.float64]

NAME_WIDTH = 52


class CheckFailed(AssertionError):
    """A printed claim did not hold; the message carries the numbers and a hint."""


class NotAttempted(NotImplementedError):
    """An exercise's answer is still the placeholder."""


def _failure(name: str, detail: str, hint: str | None) -> CheckFailed:
    return CheckFailed(f"{name}: {detail}" + (f"\n  hint: {hint}" if hint else ""))


def check(name: str, err, tol: float = TOL, hint: str | None = None) -> None:
    """Assert err <= tol (NaN fails) and print one line."""
    err = float(err)
    if not err <= tol:
        raise _failure(name, f"max relative error {err:.2e} > tolerance {tol:.0e}", hint)
    print(f"{name:<{NAME_WIDTH}} max rel err {err:.1e}  tol {tol:.0e}  pass")


def claim(name: str, holds, hint: str | None = None) -> None:
    """Assert a true-or-false claim and print one line."""
    if not bool(holds):
        raise _failure(name, "does not hold", hint)
    print(f"{name:<{NAME_WIDTH}} pass")


def given(value, name: str = "the answer"):
    """The learner's value; NotAttempted while it is still the placeholder `...`."""
    if value is Ellipsis:
        raise NotAttempted(f"{name} is still `...`")
    return value


@contextlib.contextmanager
def exercise(title: str, hint: str | None = None):
    """Run an exercise's check: "not attempted yet", pass, or a failure with the hint."""
    try:
        yield
    except NotImplementedError:
        print(f"{title}: not attempted yet (replace the `...` or the NotImplementedError above; "
              f"solutions: notebooks/solutions.ipynb)")
        return
    except CheckFailed as failure:
        raise CheckFailed(f"{title}: not yet. {failure}" + (f"\n  hint: {hint}" if hint else "")) from None
    except Exception as error:               # a shape mistake, a wrong type: say where it came from
        raise CheckFailed(f"{title}: your answer raised {type(error).__name__}: {error}"
                          + (f"\n  hint: {hint}" if hint else "")) from error
    print(f"{title}: solved")


"""The project's numeric-check kit, and the checks the notebooks print: one line per claim, a hint
when one fails.

    relative_error(a, b)      the error measure everywhere: max |a - b| / max |b|, in float64 on the
    CPU random_inputs(...)        seeded float64 q, k, v and a state of unit scale
    TOLERANCE                 the tolerance of each dtype (why each number: retnet_ref.verify)

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

__all__ = ["CheckFailed", "NotAttempted", "TOL", "TOLERANCE", "check", "claim", "dtype_name",
           "exercise", "given", "random_inputs", "relative_error"]

# the tolerance of each dtype against the float64 truth, and between forms (why each number:
# retnet_ref.verify)
TOLERANCE = {torch.float64: 1e-12, torch.float32: 5e-6, torch.bfloat16: 2e-2}
# float64 forms of one computation agree to ~1e-12 relative: the project's tolerance
TOL = TOLERANCE[torch.float64]


def dtype_name(dtype: torch.dtype) -> str:
    """"float32", "bfloat16", ...: the dtype's name without the "torch." prefix."""
    return str(dtype).removeprefix("torch.")


def relative_error(a, b) -> float:
    """max |a - b| / max |b|, computed in float64 (complex128 for complex input) on the CPU."""
    a, b = (torch.as_tensor(x).detach().cpu() for x in (a, b))
    wide = torch.complex128 if (a.is_complex() or b.is_complex()) else torch.float64
    a, b = a.to(wide), b.to(wide)
    scale = b.abs().max().item()
    return (a - b).abs().max().item() / (scale if scale > 0 else 1.0)


def random_inputs(batch, heads, length, d_k, d_v, seed=0):
    """Seeded float64 CPU q, k, v and a state, with entries of unit scale (keys scaled by
    1/√d_k)."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, length, d_k, generator=gen, dtype=torch.float64)
    k = torch.randn(batch, heads, length, d_k, generator=gen, dtype=torch.float64) / d_k ** 0.5
    v = torch.randn(batch, heads, length, d_v, generator=gen, dtype=torch.float64)
    state = torch.randn(batch, heads, d_k, d_v, generator=gen, dtype=torch.float64)
    return q, k, v, state


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
        raise CheckFailed(f"{title}: not yet. {failure}"
                          + (f"\n  hint: {hint}" if hint else "")) from None
    except Exception as error:               # a shape mistake, a wrong type: say where it came from
        raise CheckFailed(f"{title}: your answer raised {type(error).__name__}: {error}"
                          + (f"\n  hint: {hint}" if hint else "")) from error
    print(f"{title}: solved")


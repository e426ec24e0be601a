"""The conformance report: is someone else's retention the same function as ours, and if not, why
not?

`check(fn, ...)` (and `python -m retnet_ref verify --impl PKG.MODULE:FUNCTION`) calls a retention
implementation on inputs the report chooses and compares each output with our float64 truth:

    fn(q, k, v, gamma, form=..., chunk_size=..., state=...) -> o   or   (o, state)

form is one of the forms the implementation declares ("parallel", "recurrent", "chunkwise");
chunk_size is an int for "chunkwise" and None otherwise; state is None or an initial state S_0;
gamma is a float64 tensor (H,) on the inputs' device, one decay per head. Conventions are declared,
never guessed (`Conventions`): the layout of q, k, v and o, the layout of the state, the factor on
q·k, where γ comes from, whether the function rotates q and k itself, the normalisation, the forms,
a fixed chunk size, whether states go in and come out, the dtypes. An adapter (a few lines around a
peer's function) makes any signature fit; examples/conformance/ holds worked ones.

The truth (float64, CPU) is this package's retention with the declared conventions applied: q
scaled, q and k rotated by retnet_ref.rotation.rotate when the rotation is inside, and
    none        o_n = Σ_{m≤n} γ^(n-m) (q_n · k_m) v_m + γ^(n+1) q_n S_0   (Eq. 7 in one chunk: Eq. 5
                + S_0)
    paper       the paper's three normalisations, the same in every form (retnet_ref.normalisation,
                "exact")
    torchscale  the official code's row scales, which differ per form (retnet_ref.normalisation,
                "torchscale")

Rows: each form against the truth at several lengths (a single token, whole chunks, a ragged last
chunk, many chunks; a long length on request) in each dtype and device; γ close to 1 and γ = 1; an
initial state, the final state and a hand-off from one form to the next; causality (a late token
perturbed, the rows before it must not move); gradients of q, k, v in float64 where the output
carries a graph. The error is checking.relative_error, max |a - b| / max |b|; tolerances are
checking.TOLERANCE of the input dtype (reasons in retnet_ref/verify.py) and each row says why in a
few words.

A failing row carries a diagnosis where its pattern is known: the output a constant or per-row
multiple of the truth (a scale, or an ε-dependent normalisation), NaN or inf, the future leaking
into the past, only a ragged last chunk wrong, later chunks wrong by a constant relative amount (the
state carried between chunks) or by an amount that grows with the chunk count (a decay rounded per
chunk), an error that grows along the sequence, float32 rounding inside a float64 row. The chunk and
sequence patterns come from an impulse: keys and values only in the first chunk (or token), where
the truth of every later row is one decayed product and the relative error per row shows how a decay
is carried.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import inspect
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from .checking import TOLERANCE, dtype_name, random_inputs, relative_error
from .decay import gamma_schedule
from .normalisation import normalised_retention
from .retention import chunkwise_retention
from .rotation import rotate, theta_schedule
from .verify import available_devices, ragged_split

FORMS = ("parallel", "recurrent", "chunkwise")
LAYOUTS = {"BHTD": "(B, H, T, d)", "BTHD": "(B, T, H, d)"}
STATE_LAYOUTS = {"KV": "(B, H, d_k, d_v)", "VK": "(B, H, d_v, d_k)"}
GAMMAS = ("explicit", "default", "linspace")
ROTATIONS = ("none", "inside")
STATE_DTYPES = ("wide", "input")
NORMALISATIONS = ("none", "paper", "torchscale")
DTYPES = {dtype_name(dtype): dtype for dtype in TOLERANCE}
RSQRT_DK = "1/sqrt(d_k)"
SIGNATURE = "fn(q, k, v, gamma, form, chunk_size=None, state=None)"

BATCH, HEADS, D_K, D_V = 2, 4, 16, 24        # d_k ≠ d_v: a transposed state cannot pass unnoticed
DEFAULT_CHUNK = 16
LONG_LENGTH = 4096
PROBE_LENGTH = 16
NEAR_ONE = 1 - 1e-6              # 1 - γ = 1e-6 must survive: a division by it, a cancelling 1 - γ^n
WHY = {"float64": "float64 rounding, ~T·2^-53",
       "float32": "float32 vs float64, measured ≤2.2e-6",
       "bfloat16": "8 significant bits, rounded 1-2×"}
WHY_CAUSAL = "the past must not move at all"


class ConformanceError(ValueError):
    """The implementation or its declaration does not fit (a usage error: exit status 2 at the
    CLI)."""


# ---------------------------------------------------------------- what the implementation declares


@dataclass(frozen=True)
class Conventions:
    """How an implementation lays out and computes retention (module docstring)."""

    layout: str = "BHTD"                 # q, k, v, o: (B, H, T, d) or (B, T, H, d)
    state_layout: str = "KV"             # state: (B, H, d_k, d_v) or (B, H, d_v, d_k)
    scale: float | str = 1.0      # the function computes scale · (q · k); a number or "1/sqrt(d_k)"
    gamma: str = "explicit"         # uses the γ passed, or its own schedule ("default", "linspace")
    # "inside": it rotates q and k itself (rotation.rotate, θ = theta_schedule)
    rotation: str = "none"
    # none, the paper's (exact in every form) or torchscale's per-form scales
    normalisation: str = "none"
    forms: tuple = FORMS
    chunk_size: int | None = None     # the chunk size it always uses; None: any, the report chooses
    initial_state: bool = True           # accepts state=S_0
    final_state: bool = True             # returns (o, S_T)
    # the state it takes: float32 or wider ("wide", ours), or the input's dtype
    state_dtype: str = "wide"
    dtypes: tuple = tuple(DTYPES)

    def __post_init__(self):
        for name, allowed in (("layout", LAYOUTS), ("state_layout", STATE_LAYOUTS),
                              ("gamma", GAMMAS), ("rotation", ROTATIONS),
                              ("normalisation", NORMALISATIONS), ("state_dtype", STATE_DTYPES)):
            if getattr(self, name) not in allowed:
                raise ConformanceError(f"{name}: expected one of {', '.join(allowed)}, got "
                                       f"{getattr(self, name)!r}")
        for name, allowed in (("forms", FORMS), ("dtypes", DTYPES)):
            values = tuple(getattr(self, name))
            if not values or any(v not in allowed for v in values):
                raise ConformanceError(f"{name}: expected some of {', '.join(allowed)}, got "
                                       f"{values!r}")
            object.__setattr__(self, name, values)
        if self.scale != RSQRT_DK and (isinstance(self.scale, bool)
                                       or not isinstance(self.scale, (int, float))
                                       or not self.scale > 0):
            raise ConformanceError(f"scale: expected a positive number or {RSQRT_DK!r}, got "
                                   f"{self.scale!r}")
        if self.chunk_size is not None and (isinstance(self.chunk_size, bool)
                                            or not isinstance(self.chunk_size, int)
                                            or self.chunk_size < 1):
            raise ConformanceError("chunk_size: expected a positive integer or None, got "
                                   f"{self.chunk_size!r}")
        if self.rotation == "inside" and D_K % 2:
            raise ConformanceError("rotation: 'inside' needs an even d_k")

    def scale_value(self, d_k: int) -> float:
        return d_k ** -0.5 if self.scale == RSQRT_DK else float(self.scale)

    def state_of(self, dtype: torch.dtype) -> torch.dtype:
        """The dtype of the initial state the function is given for inputs of `dtype`."""
        return torch.promote_types(dtype, torch.float32) if self.state_dtype == "wide" else dtype


@dataclass(frozen=True)
class Implementation:
    """A function to check and its declared conventions."""

    fn: Callable
    conventions: Conventions = field(default_factory=Conventions)
    name: str = ""

    def __post_init__(self):
        if not callable(self.fn):
            raise ConformanceError(f"fn: expected a function {SIGNATURE}, got "
                                   f"{type(self.fn).__name__}")
        if not self.name:
            object.__setattr__(self, "name", getattr(self.fn, "__qualname__", repr(self.fn)))
        check_signature(self.fn, self.name)


def check_signature(fn, name: str):
    """fn accepts (q, k, v, gamma, form=, chunk_size=, state=), or a ConformanceError says what it
    takes."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return                                               # a builtin without a signature: try it
    try:
        signature.bind(None, None, None, None, form="parallel", chunk_size=None, state=None)
    except TypeError:
        raise ConformanceError(
            f"{name}: expected a function {SIGNATURE}, got {name}{signature}"
        ) from None


def load(spec: str, **declared) -> Implementation:
    """An Implementation from 'PKG.MODULE:NAME' or 'path/to/file.py:NAME'.

    NAME is a function (conventions from `declared`) or an Implementation (`declared` overrides its
    conventions). A ConformanceError names what is missing.
    """
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise ConformanceError("expected PKG.MODULE:FUNCTION or path/to/file.py:FUNCTION, got "
                               f"{spec!r}")
    module = _import(module_name)
    if not hasattr(module, attr):
        raise ConformanceError(f"module {module_name!r} has no attribute {attr!r}")
    target = getattr(module, attr)
    if isinstance(target, Implementation):
        conventions = dataclasses.replace(target.conventions, **declared)
        return Implementation(target.fn, conventions, spec)
    return Implementation(target, Conventions(**declared), spec)


def _import(module_name: str):
    """The module named, or a file path ending in .py; any error it raises becomes a
    ConformanceError."""
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise ConformanceError(f"no such file: {module_name}")
            spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
        if "" not in sys.path and str(Path.cwd()) not in sys.path:    # as `python -m` does
            sys.path.insert(0, str(Path.cwd()))
        return importlib.import_module(module_name)
    except ConformanceError:
        raise
    except Exception as error:  # the user's module: any error it raises
        raise ConformanceError(
            f"cannot import {module_name!r}: {type(error).__name__}: {error}"
        ) from None


# ---------------------------------------------------------------- calling it, and the truth


def _to_layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    # (B, H, T, d) → (B, T, H, d) where declared
    return x.transpose(1, 2).contiguous() if layout == "BTHD" else x


def _state_to_layout(S: torch.Tensor, layout: str) -> torch.Tensor:
    # (B, H, d_k, d_v) → (B, H, d_v, d_k) where declared
    return S.transpose(-1, -2).contiguous() if layout == "VK" else S


def _split_output(impl: Implementation, form: str, out):
    """(o, state) from what the function returned, as it declares."""
    if impl.conventions.final_state:
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise ConformanceError(f"{impl.name}: the {form} form returned {_describe(out)}; "
                                   "expected (o, state) "
                                   "(declare final_state=False if it returns o alone)")
        return out
    if not isinstance(out, torch.Tensor):
        raise ConformanceError(f"{impl.name}: the {form} form returned {_describe(out)}; expected "
                               "a tensor o (declare final_state=True if it returns (o, state))")
    return out, None


def _describe(out) -> str:
    if isinstance(out, (tuple, list)):
        return f"a {type(out).__name__} of {len(out)}"
    return type(out).__name__


def _check_shape(impl, form, what, x, expected, layout_name):
    if not isinstance(x, torch.Tensor) or tuple(x.shape) != expected:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ConformanceError(f"{impl.name}: the {form} form returned {what} of shape {got}, "
                               f"expected {expected} for {layout_name}")


def call(impl: Implementation, form, q, k, v, gamma, chunk_size=None, state=None):
    """fn on (B, H, T, d) inputs in our layout → (o (B, H, T, d_v), S_T (B, H, d_k, d_v) or
    None)."""
    conv = impl.conventions
    B, H, T, d_k = q.shape
    d_v = v.shape[-1]
    x = [_to_layout(t, conv.layout) for t in (q, k, v)]
    s = None if state is None else _state_to_layout(state, conv.state_layout)
    o, s_out = _split_output(impl, form,
                             impl.fn(*x, gamma, form=form, chunk_size=chunk_size, state=s))
    expected = (B, T, H, d_v) if conv.layout == "BTHD" else (B, H, T, d_v)
    _check_shape(impl, form, "o", o, expected, f"layout {conv.layout} {LAYOUTS[conv.layout]}")
    o = o.transpose(1, 2) if conv.layout == "BTHD" else o            # (B, H, T, d_v)
    if s_out is not None:
        expected = (B, H, d_v, d_k) if conv.state_layout == "VK" else (B, H, d_k, d_v)
        _check_shape(impl, form, "a state", s_out, expected,
                     f"state layout {conv.state_layout} {STATE_LAYOUTS[conv.state_layout]}")
        s_out = s_out.transpose(-1, -2) if conv.state_layout == "VK" else s_out   # (B, H, d_k, d_v)
    return o, s_out


def truth(conv: Conventions, form, q, k, v, gamma, chunk_size=None, state=None):
    """Our float64 output (and final state, without normalisation) under the declared
    conventions."""
    q, k, v = (t.to("cpu", torch.float64) for t in (q, k, v))
    gamma = gamma.to("cpu", torch.float64)
    q = q * conv.scale_value(q.shape[-1])
    if conv.rotation == "inside":
        theta = theta_schedule(q.shape[-1])
        q, k = rotate(q, theta), rotate(k, theta)
    if conv.normalisation == "none":
        T = q.shape[2]
        # Eq. 7 with one chunk is Eq. 5 plus the initial state's term γ^(n+1) q_n S_0 (O(T²) memory:
        # long T in chunks)
        whole = max(T, 1) if T <= 1024 else 256
        return chunkwise_retention(q, k, v, gamma, whole, state=None if state is None
                                   else state.to("cpu", torch.float64))
    mode = form if conv.normalisation == "torchscale" else "parallel"
    o, _ = normalised_retention(q, k, v, gamma, mode=mode, chunk_size=chunk_size
                                if mode == "chunkwise" else None,
                                normalisation="exact" if conv.normalisation == "paper"
                                else "torchscale")
    return o, None


# ---------------------------------------------------------------- rows and their diagnoses


@dataclass
class Row:
    device: str
    dtype: str
    length: int
    check: str
    error: float | None          # None: not measured (the function raised)
    tolerance: float
    why: str
    diagnosis: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is not None and bool(self.error <= self.tolerance)

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["error"] = self.error if self.error is not None and math.isfinite(self.error) else None
        d["passed"] = self.passed
        return d


def position_errors(o, t) -> torch.Tensor:
    """max |o - t| at each position over max |t| of the whole output: (T,)."""
    o, t = (x.detach().to("cpu", torch.float64) for x in (o, t))
    scale = t.abs().max().item() or 1.0
    return (o - t).abs().amax(dim=(0, 1, 3)) / scale                  # (T,)


def own_row_errors(o, t) -> torch.Tensor:
    """The worst head's max |o - t| at each position over its own max |t| there: (T,)."""
    o, t = (x.detach().to("cpu", torch.float64) for x in (o, t))
    scale = t.abs().amax(dim=(0, 3))                                  # (H, T)
    errors = (o - t).abs().amax(dim=(0, 3)) / torch.where(scale > 0, scale, 1.0)   # (H, T)
    return errors.amax(dim=0)                                         # (T,)


def chunk_maxima(errors: torch.Tensor, chunk_size: int) -> list[float]:
    """The largest of a per-position profile within each chunk."""
    return [errors[i:i + chunk_size].max().item() for i in range(0, errors.shape[0], chunk_size)]


def grows(profile: list[float]) -> bool:
    """The last quarter of a profile at least 3 times its first quarter (medians, so one spike does
    not count)."""
    n = len(profile)
    if n < 4:
        return False
    quarter = max(n // 4, 1)
    first, last = (torch.tensor(p).median().item() for p in (profile[:quarter], profile[-quarter:]))
    return last >= 3 * first and last > 0


def row_factor_diagnosis(o, t, tol) -> str | None:
    """Each output row a positive multiple α_n of the truth's: a scale, or a per-row
    normalisation."""
    o, t = (x.detach().to("cpu", torch.float64) for x in (o, t))
    # α_n = <o_n, t_n> / <t_n, t_n>, per batch, head and position
    tt = (t * t).sum(-1)
    alpha = (o * t).sum(-1) / torch.where(tt > 0, tt, 1.0)            # (B, H, T)
    residual = relative_error(o, alpha[..., None] * t)
    a = alpha[tt > 0]
    lo, hi = a.min().item(), a.max().item()
    # the factor explains the error (residual within the tolerance and a tenth of the error) and is
    # no rounding
    if residual > min(tol, 0.1 * relative_error(o, t)) or lo <= 0 or max(abs(math.log(lo)),
                                                                         abs(math.log(hi))) < 1e-3:
        return None
    if hi - lo <= tol * hi:
        return (f"the output is {lo:.4g} × the truth everywhere: another q·k scale or value scale "
                f"(declare scale; 1/√d_k = {D_K ** -0.5:.4g})")
    return (f"each row is the truth times its own factor ({lo:.3g} to {hi:.3g}): another score "
            "normalisation; a per-head norm with ε = 0 removes it, with ε > 0 it leaves "
            "α√((V+ε)/(α²V+ε)) for row variance V, so the forms agree only as ε → 0")


def precision_diagnosis(error, dtype_name) -> str | None:
    """An error at the rounding level of a lower precision than the row's: computed in that
    precision."""
    for lower, unit in (("float32", 2.0 ** -24), ("bfloat16", 2.0 ** -8)):
        if (
            DTYPES[lower].itemsize < DTYPES[dtype_name].itemsize
            and 0.1 * unit <= error <= 100 * unit
        ):
            return (f"an error at {lower}'s rounding level in a {dtype_name} row: computed in "
                    f"{lower} inside")
    return None


@dataclass(frozen=True)
class Probe:
    """The impulse behind the chunk and sequence diagnoses: k, v only in the first chunk (or
    token)."""

    impl: Implementation
    form: str
    device: str
    dtype: torch.dtype
    length: int
    gamma: torch.Tensor
    chunk_size: int | None

    def row_errors(self) -> torch.Tensor | None:
        """own_row_errors of the function's impulse response: (T,), or None where the function
        raised."""
        width = self.chunk_size or 1
        T = max(self.length, PROBE_LENGTH * width)         # enough chunks (or steps) to see a trend
        q, k, v, _ = random_inputs(BATCH, HEADS, T, D_K, D_V, seed=7)
        k[:, :, width:], v[:, :, width:] = 0.0, 0.0
        t, _ = truth(self.impl.conventions, self.form, q, k, v, self.gamma, self.chunk_size)
        try:
            o, _ = call(self.impl, self.form, *(x.to(self.device, self.dtype) for x in (q, k, v)),
                        self.gamma.to(self.device), self.chunk_size)
        except ConformanceError:
            raise
        except Exception:                        # the probe only explains; its own failure does not
            return None
        return own_row_errors(o, t)


def chunk_diagnosis(errors, tol, T, C, probe: Probe) -> str | None:
    """Patterns over the chunks of a chunkwise row (errors: the row's per-position profile)."""
    chunks = chunk_maxima(errors, C)
    if len(chunks) < 2 or chunks[0] > tol:
        return None
    if len(chunks) >= 3 and all(e <= tol for e in chunks[:-1]) and T % C:
        return (f"only the last chunk is wrong (it holds {T % C} of {C} tokens): a ragged last "
                "chunk mishandled; it needs its own length L in ζ, ξ and γ^L")
    impulse = probe.row_errors()
    if impulse is None:
        return None
    later = chunk_maxima(impulse, C)[1:]
    if grows(later):
        return ("the first chunk is right and the error grows with the chunk count: a decay "
                "rounded per chunk (a rounded γ^C multiplied in once more for every chunk; "
                "take γ^(C·i) from float64 log γ)")
    if later and min(later) > tol:
        return ("the first chunk is right, every later chunk wrong by about the same relative "
                "amount: the state carried between chunks is built wrong "
                "(ζ left out of R_i = K_[i]^T (V_[i] ⊙ ζ) + γ^C R_(i-1), or R_i used for R_(i-1))")
    return (
        "the first chunk is right, later chunks are not: the cross-chunk term (Q_[i] R_(i-1)) ⊙ ξ"
    )


def sequence_diagnosis(tol, probe: Probe) -> str | None:
    impulse = probe.row_errors()
    if impulse is None:
        return None
    profile = impulse[1:].tolist()
    if grows(profile) and max(profile) > tol:
        return ("the error grows along the sequence: a decay rounded and applied again at every "
                "step, or γ or the positions held in the input's low precision")
    return None


NON_FINITE = ("non-finite output (NaN or inf): e.g. γ^(-m) overflowing, or exp of a positive "
              "exponent masked by multiplication (inf · 0 = NaN)")


def diagnose(o, t, tol, dtype_name, form, C, probe: Probe, leaks: str | None) -> str | None:
    """The first known pattern that explains a failing output, or None."""
    if not torch.isfinite(o).all():
        return NON_FINITE
    if leaks:
        return leaks
    factor = row_factor_diagnosis(o, t, tol)
    if factor:
        return factor
    errors = position_errors(o, t)
    if form == "chunkwise":
        found = chunk_diagnosis(errors, tol, t.shape[2], C, probe)
        if found:
            return found
    return sequence_diagnosis(tol, probe) or precision_diagnosis(relative_error(o, t), dtype_name)


# ---------------------------------------------------------------- the report


@dataclass
class Report:
    implementation: str
    conventions: Conventions
    rows: list
    skipped: list

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rows)

    def as_dict(self) -> dict:
        return {"implementation": self.implementation,
                "conventions": dataclasses.asdict(self.conventions),
                "passed": self.passed, "rows": [r.as_dict() for r in self.rows],
                "skipped": self.skipped}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2, ensure_ascii=False)

    def format(self) -> str:
        lines = [HEADER, "-" * len(HEADER)]
        for r in self.rows:
            lines += format_row(r)
        return "\n".join(lines)


HEADER = (f"{'device':<6} {'dtype':<9} {'T':>5}  {'check':<38} {'error':>9} {'tolerance':>9}  "
          f"{'result':<6}  why the tolerance")


def format_row(r: Row) -> list[str]:
    """One line per row, and its diagnosis on the next where it failed."""
    error = "raised" if r.error is None else f"{r.error:.2e}"
    lines = [f"{r.device:<6} {r.dtype:<9} {r.length:>5}  {r.check:<38} {error:>9} "
             f"{r.tolerance:>9.0e}  {'pass' if r.passed else 'FAIL':<6}  {r.why}"]
    if r.diagnosis and not r.passed:
        lines.append(f"{'':>8}diagnosis: {r.diagnosis}")
    return lines


def default_lengths(C: int) -> tuple[int, ...]:
    """A single token, whole chunks, a ragged last chunk, many chunks with a ragged end."""
    return 1, 4 * C, 6 * C + C // 4, 18 * C + 3 * C // 4


def gammas_of(conv: Conventions, device) -> torch.Tensor:
    """The heads' γ: the declared schedule, or three schedule heads and γ = 0.999 (not exact in
    float32)."""
    values = gamma_schedule(HEADS, conv.gamma) if conv.gamma != "explicit" else \
        list(gamma_schedule(HEADS - 1)) + [0.999]
    return torch.tensor(values, dtype=torch.float64, device=device)   # (H,)


def check(fn, *, lengths=None, devices=None, long=False, recurrent_max_length=1024, name="",
          **conventions) -> Report:
    """The conformance report of fn (a function with `conventions`, or an Implementation).

    lengths: sequence lengths (default: default_lengths of the chunk size); long: add T = 4096 +
    C/2; devices: default cpu, and cuda when present. Raises ConformanceError for a usage error.
    """
    if isinstance(fn, Implementation):
        impl = Implementation(fn.fn, dataclasses.replace(fn.conventions, **conventions), fn.name)
    else:
        impl = Implementation(fn, Conventions(**conventions), name)
    skipped = []
    rows = list(iter_rows(impl, lengths, devices, long, recurrent_max_length, skipped))
    return Report(impl.name, impl.conventions, rows, skipped)


def skipped_checks(conv, longest: int, recurrent_max_length: int) -> list[str]:
    """The checks the report leaves out for these conventions, each with its reason."""
    notes = []
    if "recurrent" in conv.forms and longest > recurrent_max_length:
        notes.append(f"recurrent form at T > {recurrent_max_length} (a loop over tokens; raise "
                     "recurrent_max_length)")
    if conv.gamma != "explicit":
        notes.append(f"γ = 1 − 1e-6 and γ = 1 rows: the function takes γ from its {conv.gamma!r} "
                     "schedule")
    if conv.normalisation != "none":
        notes.append("state rows: a normalised form carries more than S (z and the position), no "
                     "state is exchanged")
    elif not conv.initial_state:
        notes.append("initial state and hand-off rows: the function takes no initial state")
    if conv.normalisation == "none" and conv.rotation == "inside":
        notes.append("hand-off rows: a rotation inside needs the position, which a state tensor "
                     "does not carry")
    return notes


def iter_rows(impl: Implementation, lengths=None, devices=None, long=False,
              recurrent_max_length=1024, skipped=None):
    """The rows of the report, each as soon as it is computed; skipped checks appended to
    `skipped`."""
    conv = impl.conventions
    C = conv.chunk_size or DEFAULT_CHUNK
    base = tuple(lengths or default_lengths(C))
    mid = sorted(base)[len(base) // 2]                        # the length of the single-length rows
    lengths = base + ((LONG_LENGTH + C // 2,) if long else ())
    devices = list(devices or available_devices())
    skipped = [] if skipped is None else skipped
    skipped += skipped_checks(conv, max(lengths), recurrent_max_length)
    # the forms of the rows at T = mid (causality, γ, states, hand-off, gradients)
    mid_forms = tuple(f for f in conv.forms
                      if not (f == "recurrent" and mid > recurrent_max_length))
    causal_device = "cpu" if "cpu" in devices else devices[0]
    leaks = {}                                # form: its causality row's diagnosis where it leaked
    yield from causality_rows(impl, mid_forms, causal_device, mid, C, leaks)
    for device in devices:
        for name in conv.dtypes:
            yield from dtype_rows(impl, device, DTYPES[name], lengths, mid, mid_forms, C,
                                  recurrent_max_length, leaks)
    if "float64" in conv.dtypes:
        yield from gradient_rows(impl, mid_forms, causal_device, mid, C, skipped)


def causality_rows(impl, forms, device, T, C, leaks: dict):
    """Each form's causality row; leaks[form] its diagnosis where it measured a leak (None where
    not), for the form's later rows."""
    for form in forms:
        row = causality_row(impl, form, device, T, C)
        measured_leak = row.error is not None and math.isfinite(row.error) and not row.passed
        leaks[form] = row.diagnosis if measured_leak else None
        yield row


def dtype_rows(impl, device, dtype, lengths, mid, mid_forms, C, recurrent_max_length, leaks):
    """Every form's rows at one device and dtype, then the hand-offs between the forms at T = mid
    where the function takes and returns states and rotates nothing itself."""
    conv = impl.conventions
    states = conv.normalisation == "none"      # a normalised form exchanges no state (z, position)
    for form in conv.forms:
        yield from form_rows(impl, form, device, dtype, lengths, mid if form in mid_forms else None,
                             C, recurrent_max_length, leaks.get(form), states)
    if states and conv.initial_state and conv.final_state and conv.rotation == "none" and mid_forms:
        yield from handoff_rows(impl, mid_forms, device, dtype, mid, C)


def gradient_rows(impl, forms, device, T, C, skipped: list):
    """Each form's gradient row; a form whose output carries no graph is noted in `skipped`
    instead."""
    for form in forms:
        row = gradient_row(impl, form, device, T, C)
        if row is None:
            skipped.append(f"gradients of the {form} form: its output carries no autograd graph")
        else:
            yield row


def measured(impl, form, device, dtype, T, gamma, C, state=False):
    """The function's (o, S_T), or the exception it raised, and the truth's (o, S_T) on seeded
    inputs."""
    q, k, v, S0 = random_inputs(BATCH, HEADS, T, D_K, D_V, seed=T)
    s0 = S0 if state else None
    t = truth(impl.conventions, form, q, k, v, gamma, C, s0)
    x = [y.to(device, dtype) for y in (q, k, v)]
    try:
        got = call(impl, form, *x, gamma.to(device), C if form == "chunkwise" else None,
                   None if s0 is None else s0.to(device, impl.conventions.state_of(dtype)))
    except ConformanceError:
        raise
    except Exception as error:                             # the function's own failure is a finding
        got = error
    return got, t


def raised(error: Exception) -> str:
    first_line = str(error).splitlines()[0] if str(error) else ""
    return f"the function raised {type(error).__name__}: {first_line}"


def form_rows(impl, form, device, dtype, lengths, mid, C, recurrent_max_length, leaks, states):
    """One form's rows at one device and dtype: every length, then (at T = mid) the edge γ and the
    states; a later row's diagnosis says when only it failed."""
    gamma = gammas_of(impl.conventions, device)
    chunk = C if form == "chunkwise" else None
    verdicts = []                                     # the plain rows' passed, filled as they go
    yield from length_rows(impl, form, device, dtype, lengths, gamma, chunk, recurrent_max_length,
                           leaks, verdicts)
    if mid is None:                                   # the recurrent loop beyond its longest length
        return
    if impl.conventions.gamma == "explicit":
        yield from edge_gamma_rows(impl, form, device, dtype, mid, chunk, leaks, all(verdicts))
    if states:
        yield from state_rows(impl, form, device, dtype, mid, gamma, chunk, leaks, all(verdicts))


def length_rows(impl, form, device, dtype, lengths, gamma, chunk, recurrent_max_length, leaks,
                verdicts: list):
    for T in lengths:
        if form == "recurrent" and T > recurrent_max_length:
            continue
        got, t = measured(impl, form, device, dtype, T, gamma, chunk)
        row = compared(got, t, impl, form, device, dtype, T, gamma, chunk, leaks,
                       f"{form} vs float64 truth")
        verdicts.append(row.passed)
        yield row


def edge_gamma_rows(impl, form, device, dtype, mid, chunk, leaks, passed_plain: bool):
    """γ = 1 − 1e-6 and γ = 1 in every head."""
    for label, value in (("γ = 1 − 1e-6", NEAR_ONE), ("γ = 1", 1.0)):
        g = torch.full((HEADS,), value, dtype=torch.float64, device=device)
        got, t = measured(impl, form, device, dtype, mid, g, chunk)
        row = compared(got, t, impl, form, device, dtype, mid, g, chunk, leaks, f"{form}, {label}")
        if not row.passed and passed_plain:
            cause = ("a division by 1 − γ, or log γ = 0, handled wrong" if value == 1.0 else
                     "1 − γ lost (γ rounded, or 1 − γ^n cancelling); take log γ as "
                     "log1p(−(1 − γ)) in float64")
            row.diagnosis = f"wrong only at {label}: {cause}" + (f"; {row.diagnosis}"
                                                                 if row.diagnosis else "")
        yield row


def state_rows(impl, form, device, dtype, mid, gamma, chunk, leaks, passed_plain: bool):
    """An initial state S_0 in, the final state S_T out (as the conventions declare them)."""
    if impl.conventions.initial_state:
        yield initial_state_row(impl, form, device, dtype, mid, gamma, chunk, leaks, passed_plain)
    if impl.conventions.final_state:
        yield final_state_row(impl, form, device, dtype, mid, gamma, chunk)


def initial_state_row(impl, form, device, dtype, mid, gamma, chunk, leaks,
                      passed_plain: bool) -> Row:
    """The output from an initial state S_0 against the truth's."""
    conv = impl.conventions
    got, t = measured(impl, form, device, dtype, mid, gamma, chunk, state=True)
    row = compared(got, t, impl, form, device, dtype, mid, gamma, chunk, leaks,
                   f"{form}, initial state S_0")
    if not row.passed and passed_plain:
        row.diagnosis = ("right without a state, wrong with S_0: the initial state's term "
                         f"γ^(n+1) q_n S_0 (state layout declared {conv.state_layout} "
                         f"{STATE_LAYOUTS[conv.state_layout]})")
    return row


def final_state_row(impl, form, device, dtype, mid, gamma, chunk) -> Row:
    """The final state S_T (from S_0 where the function takes one) against the truth's."""
    name, tol = dtype_name(dtype), TOLERANCE[dtype]
    check_name = f"{form}, final state S_T"
    got, t = measured(impl, form, device, dtype, mid, gamma, chunk,
                      state=impl.conventions.initial_state)
    if isinstance(got, Exception):
        return Row(device, name, mid, check_name, None, tol, WHY[name], raised(got))
    row = Row(device, name, mid, check_name, relative_error(got[1], t[1]), tol, WHY[name])
    if not row.passed:
        row.diagnosis = "S_T is not Σ_m γ^(T-1-m) k_m^T v_m + γ^T S_0" + (
            " (ζ decays each key to its chunk's end; a ragged last chunk needs its own length L "
            "in ζ and γ^L)" if form == "chunkwise" else "")
    return row


def compared(got, t, impl, form, device, dtype, T, gamma, chunk, leaks, check_name) -> Row:
    name, tol = dtype_name(dtype), TOLERANCE[dtype]
    if isinstance(got, Exception):
        return Row(device, name, T, check_name, None, tol, WHY[name], raised(got))
    o = got[0]
    error = relative_error(o, t[0])
    row = Row(device, name, T, check_name, error, tol, WHY[name])
    if not row.passed:
        probe = Probe(impl, form, device, dtype, T, gamma, chunk)
        row.diagnosis = diagnose(o, t[0], tol, name, form, chunk, probe, leaks)
    return row


def causality_row(impl, form, device, T, C) -> Row:
    """Perturb every token from p = T - 2 on: the rows before p must not change."""
    tol = TOLERANCE[torch.float64]
    gamma = gammas_of(impl.conventions, device)
    chunk = C if form == "chunkwise" else None
    q, k, v, _ = random_inputs(BATCH, HEADS, T, D_K, D_V, seed=T)
    p = max(T - 2, 1)
    late = perturbed_from(p, q, k, v, seed=T + 1)
    check_name = f"{form}, causality (≥ {p} perturbed)"
    try:
        before = call(impl, form, *(x.to(device) for x in (q, k, v)), gamma, chunk)[0]
        after = call(impl, form, *(x.to(device) for x in late), gamma, chunk)[0]
    except ConformanceError:
        raise
    except Exception as error:
        return Row(device, "float64", T, check_name, None, tol, WHY_CAUSAL, raised(error))
    scale = before.abs().max().item() or 1.0
    moved = ((after - before)[:, :, :p].abs().amax(dim=(0, 1, 3)) / scale).cpu()   # (p,)
    row = Row(device, "float64", T, check_name, moved.max().item() if p else 0.0, tol, WHY_CAUSAL)
    if not (torch.isfinite(before).all() and torch.isfinite(after).all()):
        row.diagnosis = NON_FINITE
    elif not row.passed:
        row.diagnosis = leak_diagnosis(moved, p, tol)
    return row


def perturbed_from(p: int, q, k, v, seed: int) -> list[torch.Tensor]:
    """Copies of q, k, v (B, H, T, d) with seeded noise added to every token from p on."""
    noise = random_inputs(BATCH, HEADS, q.shape[2], D_K, D_V, seed=seed)[:3]
    late = [x.clone() for x in (q, k, v)]
    for x, n in zip(late, noise):
        x[:, :, p:] += n[:, :, p:]
    return late


def leak_diagnosis(moved: torch.Tensor, p: int, tol: float) -> str:
    """The rows that moved (moved: (p,), each row's change) when the tokens from p on changed."""
    first = int((moved > tol).nonzero()[0])
    return (f"future affects the past: changing tokens from {p} on moved rows {first}..{p - 1}: "
            f"non-causal masking (a mask that lets {p - first} future token(s) through)")


def handoff_rows(impl, forms, device, dtype, T, C):
    """Each form's prefix (ending inside a chunk) handed to the next of `forms` for the rest."""
    conv = impl.conventions
    gamma = gammas_of(conv, device)
    q, k, v, S0 = random_inputs(BATCH, HEADS, T, D_K, D_V, seed=T)
    t, _ = truth(conv, "parallel", q, k, v, gamma, None, S0)
    x = [y.to(device, dtype) for y in (q, k, v)]
    for first, second in zip(forms, forms[1:] + forms[:1]):
        yield handoff_row(impl, first, second, device, x, gamma, S0, t, C)


def handoff_row(impl, first, second, device, x, gamma, S0, t, C) -> Row:
    """first on x (q, k, v in the row's dtype) before ragged_split from S_0, second on the rest
    from the state first returns: together the truth t."""
    dtype, T = x[0].dtype, x[0].shape[2]
    name, tol = dtype_name(dtype), TOLERANCE[dtype]
    split = ragged_split(T, C)
    check_name = f"hand-off {first} → {second}"
    try:
        o1, s1 = call(impl, first, *(y[:, :, :split] for y in x), gamma.to(device),
                      C if first == "chunkwise" else None,
                      S0.to(device, impl.conventions.state_of(dtype)))
        o2, _ = call(impl, second, *(y[:, :, split:] for y in x), gamma.to(device),
                     C if second == "chunkwise" else None, s1)
    except ConformanceError:
        raise
    except Exception as error:
        return Row(device, name, T, check_name, None, tol, WHY[name], raised(error))
    # (B, H, split, d_v) and (B, H, T - split, d_v) → (B, H, T, d_v)
    o = torch.cat([o1, o2], dim=2)
    row = Row(device, name, T, check_name, relative_error(o, t), tol, WHY[name])
    if not row.passed:
        row.diagnosis = (f"split at {split}, the two calls do not make the whole: a form wrong on "
                         f"its own (its rows), or the state {first} returns is not the one "
                         f"{second} continues from")
    return row


def gradient_row(impl, form, device, T, C) -> Row | None:
    """d(Σ o ⊙ w)/d(q, k, v) in float64 against our autograd; None where the output has no graph."""
    gamma = gammas_of(impl.conventions, device)
    chunk = C if form == "chunkwise" else None
    q, k, v, _ = random_inputs(BATCH, HEADS, T, D_K, D_V, seed=T)
    w = random_inputs(BATCH, HEADS, T, D_V, D_V, seed=T + 2)[2]                 # (B, H, T, d_v)
    tol = TOLERANCE[torch.float64]
    check_name = f"{form}, gradients of q, k, v"
    leaves = [x.to(device).requires_grad_() for x in (q, k, v)]
    try:
        o, grads = function_gradients(impl, form, leaves, w.to(device), gamma, chunk)
    except ConformanceError:
        raise
    except Exception as error:
        return Row(device, "float64", T, check_name, None, tol, WHY["float64"], raised(error))
    if grads is None:
        return None
    t, expected = truth_gradients(impl.conventions, form, (q, k, v), w, gamma, chunk)
    row = Row(device, "float64", T, check_name,
              max(relative_error(g, e) for g, e in zip(grads, expected)), tol, WHY["float64"])
    if not row.passed:
        row.diagnosis = gradient_diagnosis(relative_error(o, t), tol)
    return row


def gradient_diagnosis(forward_error: float, tol: float) -> str:
    """Wrong gradients: after a wrong forward, or from a backward of their own."""
    if forward_error > tol:
        return "the forward is wrong already (its rows above); the gradients follow it"
    return ("the forward is right, its gradients are not: a backward that is not the forward's "
            "derivative")


def function_gradients(impl, form, leaves, w, gamma, chunk):
    """The function's o on leaves (q, k, v that require grad) and d(Σ o ⊙ w)/d(q, k, v); the
    gradients None where o carries no graph."""
    o = call(impl, form, *leaves, gamma, chunk)[0]
    if not o.requires_grad:
        return o, None
    return o, torch.autograd.grad((o * w).sum(), leaves)


def truth_gradients(conv, form, inputs, w, gamma, chunk):
    """Our float64 o on inputs (q, k, v) and d(Σ o ⊙ w)/d(q, k, v), by autograd."""
    ours = [x.clone().requires_grad_() for x in inputs]
    t = truth(conv, form, *ours, gamma, chunk)[0]
    return t, torch.autograd.grad((t * w).sum(), ours)


# ---------------------------------------------------------------- the command line (verify --impl)


EXAMPLE = """\
check your own retention (exit 0: every row passed, 1: some failed, 2: a usage error):
  python -m retnet_ref verify --impl examples/conformance/ours.py:forms
  python -m retnet_ref verify --impl mypkg.attention:retention --layout BTHD --scale 1/sqrt(d_k) \\
      --forms chunkwise --chunk-size 64 --gamma default --no-initial-state --no-final-state --json
where mypkg/attention.py holds
  def retention(q, k, v, gamma, form, chunk_size=None, state=None):
      return my_chunked_retention(q, k, v, chunk_size)      # q, k, v (B, T, H, d); o the same
The NAME after ':' may also be a retnet_ref.conformance.Implementation, which declares its own
conventions (the options above override them). Rows and diagnoses: retnet_ref/conformance.py."""


def add_arguments(parser):
    """The options of `verify --impl`, in their own group of the verify parser."""
    group = parser.add_argument_group("checking your own implementation (--impl)")
    group.add_argument("--impl", metavar="PKG.MODULE:FUNCTION",
                       help=f"report on this function instead: {SIGNATURE} (or "
                            "path/to/file.py:FUNCTION)")
    group.add_argument("--layout", choices=list(LAYOUTS),
                       help="q, k, v and o: BHTD (default) or BTHD")
    group.add_argument("--state-layout", choices=list(STATE_LAYOUTS),
                       help="the state: KV (d_k, d_v; default) or VK")
    group.add_argument("--scale", type=scale_argument,
                       help="the factor the function puts on q·k: a number or "
                            f"{RSQRT_DK} (default 1)")
    group.add_argument("--gamma", choices=GAMMAS,
                       help="explicit (uses the γ passed; default) or its own schedule")
    group.add_argument("--rotation", choices=ROTATIONS,
                       help="inside: the function rotates q and k itself")
    group.add_argument("--normalisation", choices=NORMALISATIONS,
                       help="none (default), paper or torchscale")
    group.add_argument("--forms", nargs="+", choices=FORMS,
                       help="the forms it offers (default: all three)")
    group.add_argument("--dtypes", nargs="+", choices=list(DTYPES),
                       help="the dtypes it takes (default: all three)")
    group.add_argument("--no-initial-state", dest="initial_state", action="store_false",
                       default=None,
                       help="it takes no state=S_0")
    group.add_argument("--no-final-state", dest="final_state", action="store_false", default=None,
                       help="it returns o alone, not (o, state)")
    group.add_argument("--state-dtype", choices=STATE_DTYPES,
                       help="the state it takes: wide (float32 or wider; default) or input (the "
                            "inputs' dtype)")
    group.add_argument("--long", action="store_true",
                       help=f"add a long length T = {LONG_LENGTH} + C/2")
    group.add_argument("--json", action="store_true",
                       help="print the report as JSON instead of the table")


def scale_argument(text: str):
    """--scale: a positive number, or 1/sqrt(d_k)."""
    if text.replace(" ", "") == RSQRT_DK:
        return RSQRT_DK
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number or {RSQRT_DK}, got {text!r}")
    return value


DECLARED = ("layout", "state_layout", "scale", "gamma", "rotation", "normalisation", "forms",
            "dtypes",
            "initial_state", "final_state", "state_dtype")


def options_without_impl(args) -> list[str]:
    """The --impl options given without --impl (a usage error)."""
    given = [key for key in DECLARED if getattr(args, key) is not None] + [
        key for key in ("long", "json") if getattr(args, key)
    ]
    return ["--" + key.replace("_", "-") for key in given]


def run(args, parser) -> int:
    """verify --impl: the report on stdout (table or JSON); 1 on a failing row; usage errors exit
    2."""
    try:
        impl = load(args.impl, **declared_conventions(args))
        skipped = []
        rows = iter_rows(impl, args.lengths, args.device, args.long, args.recurrent_max_length,
                         skipped)
        if args.json:
            report = Report(impl.name, impl.conventions, list(rows), skipped)
            print(report.to_json())
            return 0 if report.passed else 1
        collected = print_rows(impl.name, rows)
    except ConformanceError as error:
        parser.error(f"--impl: {error}")
    for reason in skipped:
        print(f"skipped: {reason}")
    failed = sum(not r.passed for r in collected)
    print(f"\n{len(collected) - failed} of {len(collected)} checks passed"
          + (f", FAILED: {failed}" if failed else ""))
    return 1 if failed else 0


def declared_conventions(args) -> dict:
    """The conventions the --impl options declare (those given), and --chunk-size."""
    declared = {key: getattr(args, key) for key in DECLARED if getattr(args, key) is not None}
    if args.chunk_size is not None:
        declared["chunk_size"] = args.chunk_size
    return declared


def print_rows(name: str, rows) -> list[Row]:
    """Each row printed as soon as it is computed, under the table's title and header → the
    rows."""
    collected = []
    for row in rows:
        if not collected:                  # after the first call: a usage error prints no table
            print(f"conformance of {name} against the float64 reference\n\n"
                  f"{HEADER}\n{'-' * len(HEADER)}")
        print("\n".join(format_row(row)), flush=True)
        collected.append(row)
    return collected

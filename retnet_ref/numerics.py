"""Rounding error against sequence length: the measurements behind the float32 and bfloat16
tolerances.

Each torch form of retention (parallel Eq. 5, recurrent Eq. 6, chunkwise Eq. 7) runs on inputs
rounded to a low precision and is compared with the float64 parallel form on the unrounded inputs
(the truth), with the project's error measure `checking.relative_error` (max |a - b| / max |b|) and
the project's seeded inputs `checking.random_inputs` (`sweep`). Counterexamples show what the
package's precision rules prevent: a state kept in the input dtype (`recurrent_with_state_in`) and
decays γ stored in a low precision (`rounded_gamma_errors`); `predicted_decay_drift` models the
drift that a rounded γ causes in the recurrent form. `recurrent_sum_errors` measures the float32
recurrent form at long lengths with its compensated state sum and with the plain sum it replaced
(`plain_sum_recurrent`). Notebook 10 uses them to justify `checking.TOLERANCE`.

Unit roundoff u = 2^-p for a format with p significant bits (the implicit bit included): rounding to
nearest changes a number by at most u relative, away from underflow and overflow.
float64 p = 53, float32 p = 24, bfloat16 p = 8, float16 p = 11.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ._checks import check_gammas
from .checking import dtype_name, random_inputs, relative_error
from .decay import gamma_schedule
from .retention import (
    _initial_state,
    _recurrent,
    accumulation_dtype,
    chunkwise_retention,
    log_gamma_per_head,
    parallel_retention,
    recurrent_retention,
)
from .verify import float64_truth


def unit_roundoff(dtype: torch.dtype) -> float:
    """u = 2^-p = eps / 2: the largest relative change of rounding to nearest in this format."""
    return torch.finfo(dtype).eps / 2


def max_rounding_error(x: torch.Tensor, dtype: torch.dtype) -> float:
    """max |fl(x) - x| / |x| over the nonzero entries of x when it is rounded to dtype
    (entrywise)."""
    x = x.to(torch.float64)
    nonzero = x != 0
    return ((x.to(dtype).to(torch.float64) - x).abs()[nonzero] / x.abs()[nonzero]).max().item()


def rounded_through(values, dtype: torch.dtype) -> list[float]:
    """Each value stored in dtype and read back as a Python float (what a low-precision buffer
    keeps)."""
    return [torch.tensor(float(x), dtype=dtype).item() for x in values]


@dataclass(frozen=True)
class Measurement:
    """One measured error: form (e.g. "chunkwise C=64") against reference ("float64 truth" or a
    form); gamma the head's γ where the error is of one head (recurrent_sum_errors), else None."""
    device: str
    dtype: str
    length: int
    form: str
    reference: str
    error: float
    gamma: float | None = None


def form_outputs(q, k, v, gamma, chunk_sizes, recurrent: bool) -> dict[str, torch.Tensor]:
    """The torch forms on the same inputs: parallel, chunkwise per chunk size, recurrent if
    asked."""
    outputs = {"parallel": parallel_retention(q, k, v, gamma)}
    for C in chunk_sizes:
        outputs[f"chunkwise C={C}"] = chunkwise_retention(q, k, v, gamma, C)[0]
    if recurrent:
        outputs["recurrent"] = recurrent_retention(q, k, v, gamma)[0]
    return outputs


ROUNDED_INPUTS_ONLY = "rounded inputs only"


def rounded_inputs_only(q, k, v, gamma) -> torch.Tensor:
    """Retention of the rounded inputs in float64 arithmetic: the error that input rounding alone
    causes.

    Computed on the CPU by the float64 chunkwise form with chunks of 256 (equal to the parallel form
    to ~1e-13 in float64, and far cheaper than it at long lengths).
    """
    q, k, v = (t.to("cpu", torch.float64) for t in (q, k, v))
    return chunkwise_retention(q, k, v, gamma, 256)[0]                    # (B, H, T, d_v)


def sweep(lengths, dtypes, heads: int = 4, d: int = 32, gamma=None, chunk_sizes=(64, 256),
          recurrent_max_length: int = 1024, device: str = "cpu", seeds=(0,)) -> list[Measurement]:
    """Errors of every form in every dtype at every length, against the float64 truth and the
    parallel form.

    Inputs: checking.random_inputs(1, heads, T, d, d, seed) for each seed (float64 on the CPU),
    rounded to the dtype and moved to the device; gamma defaults to the default schedule of `heads`
    heads. The truth is the float64 parallel form on the CPU from the unrounded inputs, so input
    rounding counts as error. The recurrent form (a Python loop over tokens) runs only up to
    recurrent_max_length. The entry ROUNDED_INPUTS_ONLY measures the part of the error that comes
    from rounding q, k, v alone. With several seeds, each (form, dtype, length) keeps the worst
    error over the seeds.
    """
    gamma = gamma_schedule(heads).tolist() if gamma is None else list(gamma)
    worst: dict[tuple, float] = {}
    for T in lengths:
        for seed in seeds:
            q, k, v, _ = random_inputs(1, heads, T, d, d, seed=seed * 100_003 + T)
            truth = parallel_retention(q, k, v, gamma)                        # (1, H, T, d)
            for dtype in dtypes:
                x = [t.to(device, dtype) for t in (q, k, v)]
                outputs = form_outputs(*x, gamma, chunk_sizes, T <= recurrent_max_length)
                outputs[ROUNDED_INPUTS_ONLY] = rounded_inputs_only(*x, gamma)
                for form, o in outputs.items():
                    _keep_worst(worst, (dtype_name(dtype), T, form, "float64 truth"),
                                relative_error(o, truth))
                    if form not in ("parallel", ROUNDED_INPUTS_ONLY):
                        _keep_worst(worst, (dtype_name(dtype), T, form, "parallel"),
                                    relative_error(o, outputs["parallel"]))
    return [Measurement(device, *key, error) for key, error in worst.items()]


def _keep_worst(worst: dict, key: tuple, error: float) -> None:
    worst[key] = max(error, worst.get(key, 0.0))


def select(measurements, **fields) -> list[Measurement]:
    """The measurements whose fields equal the given values, e.g. select(m, dtype="float32",
    form="recurrent")."""
    return [m for m in measurements if all(getattr(m, name) == value for name,
                                           value in fields.items())]


def worst_error(measurements, **fields) -> float:
    """The largest error among select(measurements, **fields)."""
    return max(m.error for m in select(measurements, **fields))


def recurrent_with_state_in(q, k, v, gamma, state_dtype: torch.dtype) -> torch.Tensor:
    """The recurrent form (Eq. 6) with γ and the state S stored in state_dtype: a counterexample.

    The package keeps both in float32 or wider (`retention.accumulation_dtype`); this variant shows
    why. With state_dtype = bfloat16, γ rounds to 1 for every default head h ≥ 4, and each update
    S_{n+1} = γ S_n + k_n^T v_n rounds S to 8 significant bits, so small increments are lost.
    Output in q's dtype, (B, H, T, d_v).
    """
    # (H, 1, 1)
    g = torch.tensor(check_gammas(gamma, q.shape[1]),
                     dtype=torch.float64).to(state_dtype)[:, None, None]
    # (B, H, d_k, d_v)
    S = q.new_zeros(q.shape[0], q.shape[1], q.shape[3], v.shape[3], dtype=state_dtype)
    acc = accumulation_dtype(q.dtype)
    out = []
    for n in range(q.shape[2]):
        # S_{n+1} = γ S_n + k_n^T v_n, rounded to state_dtype
        S = g * S + k[:, :, n, :, None].to(state_dtype) * v[:, :, n, None, :].to(state_dtype)
        # o_n = q_n S_{n+1}
        out.append((q[:, :, n, None, :].to(acc) @ S.to(acc)).squeeze(-2))           # (B, H, d_v)
    return torch.stack(out, dim=2).to(q.dtype)                                      # (B, H, T, d_v)



def per_head_errors(o: torch.Tensor, truth: torch.Tensor) -> list[float]:
    """checking.relative_error of each head separately, for (B, H, T, d_v) outputs."""
    return [relative_error(o[:, h], truth[:, h]) for h in range(truth.shape[1])]


def rounded_gamma_errors(q, k, v, gamma, dtype: torch.dtype) -> list[float]:
    """Per head: the error of retention whose γ was stored in dtype, everything else exact.

    Both sides are computed in float64 (by the chunkwise form with chunks of 256, equal to the
    parallel form to ~1e-13 and cheap at long lengths), so the difference is the decay's rounding
    alone.
    """
    q, k, v = (t.to("cpu", torch.float64) for t in (q, k, v))
    values = check_gammas(gamma, q.shape[1])
    truth = chunkwise_retention(q, k, v, values, 256)[0]                      # (B, H, T, d_v)
    rounded = chunkwise_retention(q, k, v, rounded_through(values, dtype), 256)[0]
    return per_head_errors(rounded, truth)


def predicted_decay_drift(gamma, dtype: torch.dtype) -> list[float]:
    """The recurrent form's error from multiplying by fl(γ) at every step: δ / (√2 (1 - γ)) per
    head.

    With δ = |fl(γ) - γ| / γ, the weight of a key j steps back becomes γ^j (1 + δ)^j ≈ γ^j (1 + j
    δ). For independent terms of equal size, the output's error relative to the output is then
    δ sqrt(Σ j² γ^(2j) / Σ γ^(2j)) ≈ δ / (√2 (1 - γ)): the rounding of γ grows linearly with the
    lag, up to the head's memory 1/(1 - γ). Valid for T well beyond that memory and j δ << 1; 0 for
    γ = 1.
    """
    values = check_gammas(gamma, len(gamma))
    rounded = rounded_through(values, dtype)
    return [abs(r - g) / g / (2 ** 0.5 * (1 - g)) if g < 1 else 0.0 for g,
            r in zip(values, rounded)]


PLAIN_SUM = "recurrent, plain sum"


def plain_sum_recurrent(q, k, v, gamma) -> torch.Tensor:
    """The recurrent form (Eq. 6) with the plain state sum (retention.decay_and_add): o (B, H, T,
    d_v).

    The package's form before its float32 sum was compensated (retention.compensated_decay_and_add),
    kept to measure what the compensation removes; in float64 it is the package's form.
    """
    acc = accumulation_dtype(q.dtype)
    return _recurrent(q, k, v, log_gamma_per_head(gamma, q), _initial_state(None, q, v, acc),
                      compensated=False)[0]


def recurrent_sum_errors(lengths, gamma, seeds=(0,), d: int = 32) -> list[Measurement]:
    """Per head and length: the float32 recurrent form's error with its compensated sum
    ("recurrent") and with the plain sum (PLAIN_SUM), against the float64 truth; the worst over the
    seeds.

    Inputs: checking.random_inputs(1, H, T, d, d, seed) as in `sweep` (the same draws), rounded to
    float32 on the CPU. The truth is verify.float64_truth (the float64 chunkwise form, any length)
    on the unrounded inputs; the error is checking.relative_error of each head (per_head_errors).
    Measurement.gamma is the head's γ.
    """
    gamma = list(gamma)
    worst: dict[tuple, float] = {}
    for T in lengths:
        for seed in seeds:
            q, k, v, _ = random_inputs(1, len(gamma), T, d, d, seed=seed * 100_003 + T)
            truth = float64_truth(q, k, v, gamma)                                 # (1, H, T, d)
            x = [t.to(torch.float32) for t in (q, k, v)]
            outputs = {"recurrent": recurrent_retention(*x, gamma)[0],
                       PLAIN_SUM: plain_sum_recurrent(*x, gamma)}
            for form, o in outputs.items():
                for g, error in zip(gamma, per_head_errors(o, truth)):
                    _keep_worst(worst, (T, form, g), error)
    return [Measurement("cpu", "float32", T, form, "float64 truth", error, g) for (T, form, g),
            error in worst.items()]

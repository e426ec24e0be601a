"""The numeric equivalence report: are the three forms one function, in which precision, where?

For every device (cpu, and cuda when present), dtype and length, random inputs (seeded) go through
the torch forms; each form is compared with the float64 parallel form computed on the CPU (the
ground truth, itself checked against the NumPy reference), and the forms are compared with each
other.

Error measure: max |a - b| / max |b| over the whole output (a relative error that does not blow up
where one output entry happens to be near zero).

Tolerances (why each number):
- float64: 1e-12. Sums of T products in float64 carry ~T·2^-53 ≈ 1e-13 relative error at T = 1024.
- float32: 5e-6 against float64 (measured up to T = 4096, γ = 0.999 included: ≤ 1.1e-6 on the CPU,
  ≤ 2.2e-6 on an H200, whose long matrix products round more; the error grows slowly with T, so the
  margin of about 2 on the GPU at T = 4096 shrinks at longer lengths — notebooks/10_numerics.ipynb).
  At long T (`long_rows`, verify --long-lengths) on SLOW_HEADS, 4 seeds, CPU: the recurrent form,
  whose float32 state sum is compensated, ≤ 3.5e-7 at T = 65,536 and ≤ 2.9e-7 at T = 262,144 (one
  seed), flat in T, so 5e-6 stays; the plain sum it replaced measured 4.7e-6 to 9.4e-5 at T = 65,536
  (2.1e-4 at 262,144) and would have needed a tolerance growing with T.
The report's heads are the default schedule plus one head with γ = 0.999, which float32 cannot hold
exactly (the default γ = 1 - 2^(-5-h) are dyadic and exact), so a decay that drifts would show.
- bfloat16: 2e-2 against float64 (8 significant bits: unit roundoff u = 2^-8 ≈ 3.9e-3 per entry;
  inputs, scores and outputs are each rounded once, so about 1-2 u; measured ≤ 7e-3 up to T = 4096
  on CPU and on an H200, and ≤ 7.6e-3 on the CPU for the chunkwise form since its state products
  take bf16 operands; notebooks/10_numerics.ipynb shows error against length), and the same between
  forms.
- float32 / bfloat16 between forms: the same as against float64 (both sides carry that error).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import reference
from .checking import TOLERANCE, dtype_name, random_inputs, relative_error
from .decay import gamma_schedule
from .retention import (
    accumulation_dtype,
    chunkwise_retention,
    parallel_retention,
    recurrent_retention,
)


@dataclass
class Row:
    device: str
    dtype: str
    length: int
    pair: str
    error: float
    tolerance: float

    @property
    def passed(self) -> bool:
        return bool(self.error <= self.tolerance)


def ground_truth_check(q, k, v, gamma) -> float:
    """The torch float64 parallel form against the NumPy reference, head by head (batch 0)."""
    o = parallel_retention(q, k, v, gamma)
    ref = np.stack([reference.parallel(q[0, h].numpy(), k[0, h].numpy(), v[0, h].numpy(), float(g))
                    for h, g in enumerate(gamma)])
    return relative_error(o[0], ref)


def available_devices() -> list[str]:
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def report(lengths=(64, 256, 1024), chunk_size=48, heads=4, d_k=32, d_v=32, devices=None,
           recurrent_max_length=1024) -> list[Row]:
    """All rows of the report; recurrent runs only up to recurrent_max_length (it is a Python
    loop)."""
    return list(iter_rows(lengths, chunk_size, heads, d_k, d_v, devices, recurrent_max_length))


def iter_rows(lengths=(64, 256, 1024), chunk_size=48, heads=4, d_k=32, d_v=32, devices=None,
              recurrent_max_length=1024):
    """The rows of `report`, each as soon as it is computed."""
    gamma = gamma_schedule(heads - 1).tolist() + [0.999]
    for device in devices or available_devices():
        for dtype in TOLERANCE:
            for T in lengths:
                inputs = random_inputs(1, heads, T, d_k, d_v, seed=T)
                if device == "cpu" and dtype == torch.float64:
                    yield Row("cpu", "float64", T, "torch vs NumPy reference",
                              ground_truth_check(*inputs[:3], gamma), TOLERANCE[torch.float64])
                yield from _rows_at(device, dtype, inputs, gamma, chunk_size,
                                    T <= recurrent_max_length)


def _rows_at(device, dtype, inputs, gamma, chunk_size, with_recurrent: bool):
    """One device, dtype and length: each form against the float64 truth, the forms against each
    other, and the state hand-off against one pass."""
    q, k, v, state = inputs
    T, tol, name = q.shape[2], TOLERANCE[dtype], dtype_name(dtype)
    truth = parallel_retention(q, k, v, gamma)
    x = [t.to(device, dtype) for t in (q, k, v)]
    outs = {"parallel": parallel_retention(*x, gamma),
            "chunkwise": chunkwise_retention(*x, gamma, chunk_size)[0]}
    if with_recurrent:
        outs["recurrent"] = recurrent_retention(*x, gamma)[0]
    for form, o in outs.items():
        # the truth itself
        if not (form == "parallel" and device == "cpu" and dtype == torch.float64):
            yield Row(device, name, T, f"{form} vs float64 truth", relative_error(o, truth), tol)
    if with_recurrent:
        yield Row(device, name, T, "recurrent vs parallel",
                  relative_error(outs["recurrent"], outs["parallel"]), tol)
    yield Row(device, name, T, "chunkwise vs parallel",
              relative_error(outs["chunkwise"], outs["parallel"]), tol)
    s0 = state.to(device, accumulation_dtype(dtype))
    whole, _ = chunkwise_retention(*x, gamma, chunk_size, state=s0)
    yield Row(device, name, T, f"state hand-off ({handoff_name(with_recurrent)})",
              relative_error(handed_off(x, gamma, chunk_size, s0, with_recurrent), whole), tol)


def ragged_split(T: int, chunk_size: int) -> int:
    """Where the hand-off splits T: near the middle, but not at a multiple of the chunk size."""
    half = T // 2
    return half + 1 if half % chunk_size == 0 and half + 1 < T else half


def handoff_name(recurrent_rest: bool) -> str:
    return "chunkwise → recurrent" if recurrent_rest else "chunkwise → chunkwise"


def handed_off(x, gamma, chunk_size, s0, recurrent_rest: bool):
    """A chunkwise prefix (ending inside a chunk), then the rest from its state: recurrent, or
    chunkwise."""
    split = ragged_split(x[0].shape[2], chunk_size)
    o1, s1 = chunkwise_retention(*(t[:, :, :split] for t in x), gamma, chunk_size, state=s0)
    rest = [t[:, :, split:] for t in x]
    o2, _ = recurrent_retention(*rest, gamma, state=s1) if recurrent_rest else \
        chunkwise_retention(*rest, gamma, chunk_size, state=s1)
    return torch.cat([o1, o2], dim=2)


# ---------------------------------------------------------------- long sequences, float32 (verify
# --long-lengths)

LONG_LENGTHS = (65536,)
# heads 11, 13 and 15 of the default schedule at the 6.7B preset's 16 heads, γ_h = 1 - 2^(-5-h):
# memories of 2^16, 2^18 and 2^20 tokens, the slowest a preset has; and γ = 1, their limit (nothing
# decays, every token counts)
SLOW_HEADS = {"γ=1-2^-16": 1 - 2 ** -16, "γ=1-2^-18": 1 - 2 ** -18, "γ=1-2^-20": 1 - 2 ** -20,
              "γ=1": 1.0}
TRUTH_CHUNK_SIZE = 256


def float64_truth(q, k, v, gamma) -> torch.Tensor:
    """o in float64 at any length: the float64 chunkwise form with chunks of 256 (memory linear in
    T).

    The float64 parallel form is the truth of `report`, but its (B, H, T, T) scores do not fit at
    long T; the chunkwise form equals it to ~1e-15 (tests/test_verify.py measures it at T = 4096).
    """
    q, k, v = (t.to("cpu", torch.float64) for t in (q, k, v))
    return chunkwise_retention(q, k, v, gamma, TRUTH_CHUNK_SIZE)[0]       # (B, H, T, d_v)


def long_rows(lengths=LONG_LENGTHS, chunk_size=48, d_k=32, d_v=32, devices=None):
    """float32 at long T: the chunkwise and recurrent forms against float64_truth, one row per slow
    head.

    The heads are SLOW_HEADS, whose memory reaches T, so that every rounding along the sequence
    counts; the tolerance is the float32 one (notebooks/10_numerics.ipynb measures these errors
    against T).
    """
    gamma = list(SLOW_HEADS.values())
    for device in devices or available_devices():
        for T in lengths:
            q, k, v, _ = random_inputs(1, len(gamma), T, d_k, d_v, seed=T)
            truth = float64_truth(q, k, v, gamma)
            x = [t.to(device, torch.float32) for t in (q, k, v)]
            outs = {"chunkwise": chunkwise_retention(*x, gamma, chunk_size)[0],
                    "recurrent": recurrent_retention(*x, gamma)[0]}
            for form, o in outs.items():
                for h, label in enumerate(SLOW_HEADS):
                    yield Row(device, "float32", T, f"{form} vs float64 truth, {label}",
                              relative_error(o[:, h], truth[:, h]), TOLERANCE[torch.float32])


HEADER = (f"{'device':<6} {'dtype':<9} {'T':>7}  {'comparison':<38} {'max rel err':>11} "
          f"{'tolerance':>9}  result")


def format_row(r: Row) -> str:
    return (f"{r.device:<6} {r.dtype:<9} {r.length:>7}  {r.pair:<38} {r.error:>11.2e} "
            f"{r.tolerance:>9.0e}  {'pass' if r.passed else 'FAIL'}")


def format_rows(rows: list[Row]) -> str:
    lines = [HEADER, "-" * len(HEADER)]
    for r in rows:
        lines.append(format_row(r))
    return "\n".join(lines)

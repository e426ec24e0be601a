"""Input validation shared by the NumPy reference and the torch implementation.

Every public function checks its arguments here first, so that bad input fails with a message that
names the argument and what was expected, instead of an assert or a broadcast error deep inside.
"""
from __future__ import annotations

import math
import numbers

import numpy as np
import torch

# the floating dtypes the torch forms compute in (float8 formats have no arithmetic of their own)
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

COMPLEX_GAMMA_HINT = (" (γ is the real decay |γ e^{iθ}|: the rotation e^{iθ} is applied to q and "
                      "k, by retnet_ref.rotation.rotate)")


def check_choice(value, choices, name: str) -> str:
    """value if it is one of the strings `choices` (a tuple, or a dict's keys); else a ValueError
    that names the argument and lists the choices."""
    choices = tuple(choices)
    if not (isinstance(value, str) and value in choices):
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_gamma_value(gamma, name: str = "gamma") -> float:
    """One decay γ: a real number in (0, 1]."""
    if isinstance(gamma, bool) or not isinstance(gamma, numbers.Real):
        raise TypeError(f"{name} must be a real number in (0, 1], got {type(gamma).__name__}")
    value = float(gamma)
    if math.isnan(value) or not 0.0 < value <= 1.0:
        raise ValueError(f"{name} must lie in (0, 1], got {value!r}")
    return value


def check_gammas(gamma, num_heads: int, name: str = "gamma") -> tuple[float, ...]:
    """One γ per head: a sequence, NumPy array or tensor of H real numbers in (0, 1] → H floats.

    Plain Python for sequences (no NumPy, no tensor reads), so that torch.compile traces a call with
    a list of γ without a graph break. A tensor is read on the host; retention's own entry points
    check a device tensor without reading it (check_gamma_tensor).
    """
    if isinstance(gamma, numbers.Real) and not isinstance(gamma, bool):
        raise TypeError(f"{name} must be a sequence of {num_heads} values (one per head), got one "
                        "number")
    values, gamma = _gamma_entries(gamma, num_heads, name)
    _check_real_entries(values, gamma, num_heads, name)
    if len(values) != num_heads:
        raise ValueError(f"{name} must hold one value per head: expected length {num_heads}, got "
                         f"{len(values)}")
    values = tuple(float(g) for g in values)
    bad = [h for h, g in enumerate(values) if not 0.0 < g <= 1.0]   # also catches NaN
    if bad:
        raise ValueError(f"{name} must lie in (0, 1] for every head, got "
                         f"{[values[h] for h in bad]} at heads {bad}")
    return values


def _check_real_entries(values: tuple, gamma, num_heads: int, name: str):
    """Each entry of γ one real number: not a sequence, a bool or a complex number (gamma as
    messages show it)."""
    if any(isinstance(g, (list, tuple)) for g in values):
        raise ValueError(f"{name} must hold one value per head: expected a flat sequence of "
                         f"{num_heads}, got nested {gamma!r}")
    if any(isinstance(g, bool) for g in values):
        raise TypeError(f"{name} must hold real numbers, one per head, not booleans: got {gamma!r}")
    if any(not isinstance(g, numbers.Real) for g in values):
        raise TypeError(f"{name} must be a sequence of real numbers, one per head, got {gamma!r}"
                        + (COMPLEX_GAMMA_HINT if any(isinstance(g, numbers.Complex) for g in values)
                           else ""))


def _gamma_entries(gamma, num_heads: int, name: str) -> tuple[tuple, object]:
    """The entries of a sequence, NumPy array or tensor of γ, and gamma as messages show it (an
    array or a tensor as a list): a tensor's dtype, shape and device and an array's dtype and shape
    checked first."""
    if isinstance(gamma, torch.Tensor):
        _check_gamma_tensor_metadata(gamma, num_heads, name)
        gamma = gamma.detach().to("cpu", torch.float64).tolist()
    elif isinstance(gamma, np.ndarray):
        if gamma.dtype.kind not in "iuf":
            raise TypeError(f"{name} must hold real numbers, one per head, got an array of dtype "
                            f"{gamma.dtype}"
                            + (COMPLEX_GAMMA_HINT if gamma.dtype.kind == "c" else ""))
        if gamma.ndim != 1:
            raise ValueError(f"{name} must hold one value per head: expected length {num_heads}, "
                             f"got shape {gamma.shape}")
        gamma = gamma.tolist()
    try:
        return tuple(gamma), gamma
    except TypeError:
        raise TypeError(f"{name} must be a sequence of real numbers, one per head, "
                        f"got {type(gamma).__name__}") from None


def _check_gamma_tensor_metadata(gamma: torch.Tensor, num_heads: int, name: str):
    if not gamma.dtype.is_floating_point:
        raise TypeError(f"{name} must be a real floating tensor, one value per head, got dtype "
                        f"{gamma.dtype}"
                        + (COMPLEX_GAMMA_HINT if gamma.dtype.is_complex else ""))
    if gamma.dim() != 1 or gamma.shape[0] != num_heads:
        raise ValueError(f"{name} must hold one value per head: expected length {num_heads}, "
                         f"got shape {tuple(gamma.shape)}")
    if gamma.requires_grad:
        raise TypeError(f"{name} requires grad, but the decays are fixed (RetNet does not learn "
                        f"γ): pass {name}.detach()")
    if gamma.device.type == "meta":
        raise ValueError(f"{name} is on the meta device and holds no values; pass it on the CPU or "
                         "the inputs' device")


def check_gamma_tensor(gamma: torch.Tensor, num_heads: int, name: str = "gamma"):
    """One γ per head as a tensor (H,), every entry in (0, 1].

    Eagerly the values are read on the host (one synchronisation) and a bad one raises ValueError.
    Inside torch.compile or a CUDA-graph capture no value may be read on the host: there the check
    is an asynchronous device assertion, which still stops the program instead of returning a wrong
    answer.
    """
    _check_gamma_tensor_metadata(gamma, num_heads, name)
    if torch.compiler.is_compiling() or (gamma.is_cuda
                                         and torch.cuda.is_current_stream_capturing()):
        torch._assert_async(((gamma > 0) & (gamma <= 1)).all(),
                            f"{name} must lie in (0, 1] for every head")
    else:
        check_gammas(gamma, num_heads, name)


def check_positive_int(value, name: str) -> int:
    """A size or count: an integer ≥ 1 (Python or NumPy; bool is not an integer here) → int.

    TypeError for anything that is not an integer (2.0, True, "8"), ValueError for one below 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive integer, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def as_numpy_array(x, name: str) -> np.ndarray:
    """x as a NumPy array for the reference: a torch tensor that requires grad or a ragged nested
    list gets an error that names the argument (NumPy's own would not)."""
    if isinstance(x, torch.Tensor):
        if x.requires_grad:
            raise TypeError(f"{name} requires grad: the NumPy reference computes no gradients, "
                            f"pass {name}.detach()")
        x = x.cpu().numpy()
    try:
        return np.asarray(x)
    except ValueError:
        raise ValueError(f"{name} must be a rectangular (T, d) array of numbers, got a ragged "
                         "nested sequence") from None


def check_numpy_qkv(q, k, v):
    """Single-head reference inputs: q, k (T, d_k) real or complex, v (T, d_v)."""
    arrays = []
    for name, x in (("q", q), ("k", k), ("v", v)):
        x = as_numpy_array(x, name)
        if x.dtype.kind not in "fc":
            raise TypeError(f"{name} must hold floating or complex numbers, got dtype {x.dtype}")
        if x.ndim != 2:
            raise ValueError(f"{name} must be 2-D (T, d), got shape {x.shape}")
        arrays.append(x)
    q, k, v = arrays
    if q.shape != k.shape:
        raise ValueError(f"q and k must have the same shape (T, d_k), got q {q.shape} and k "
                         f"{k.shape}")
    if v.shape[0] != q.shape[0]:
        raise ValueError(f"v must have as many rows (T) as q: q has T={q.shape[0]}, v has "
                         f"{v.shape[0]}")
    return q, k, v


def check_numpy_state(state, d_k: int, d_v: int):
    """A single-head reference state S_0: None, or a (d_k, d_v) real or complex array (a tensor
    converted)."""
    if state is None:
        return None
    state = as_numpy_array(state, "state")
    if state.dtype.kind not in "fc":
        raise TypeError(f"state must hold floating or complex numbers, got dtype {state.dtype}")
    if state.shape != (d_k, d_v):
        raise ValueError(f"state must have shape (d_k, d_v) = {(d_k, d_v)}, got {state.shape}")
    return state


def check_torch_qkv(q, k, v):
    """Batched torch inputs: q, k (B, H, T, d_k), v (B, H, T, d_v), one real float dtype, one
    device."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{name} must have a real floating dtype "
                            f"({', '.join(map(str, FLOAT_DTYPES))}), got {x.dtype}")
        if x.dim() != 4:
            raise ValueError(f"{name} must be 4-D (B, H, T, d), got shape {tuple(x.shape)}")
    if q.shape != k.shape:
        raise ValueError(f"q and k must have the same shape (B, H, T, d_k), "
                         f"got q {tuple(q.shape)} and k {tuple(k.shape)}")
    if v.shape[:3] != q.shape[:3]:
        raise ValueError(f"v must match q in (B, H, T): q {tuple(q.shape[:3])}, v "
                         f"{tuple(v.shape[:3])}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k and v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(
            f"q, k and v must be on one device, got {q.device}, {k.device}, {v.device}"
        )


def check_torch_state(state, q: torch.Tensor, v: torch.Tensor):
    """A recurrent state (B, H, d_k, d_v) on the inputs' device, real floating."""
    if state is None:
        return None
    if not isinstance(state, torch.Tensor):
        raise TypeError(f"state must be a torch.Tensor or None, got {type(state).__name__}")
    expected = (q.shape[0], q.shape[1], q.shape[3], v.shape[3])
    if tuple(state.shape) != expected:
        raise ValueError(f"state must have shape (B, H, d_k, d_v) = {expected}, got "
                         f"{tuple(state.shape)}")
    if not state.dtype.is_floating_point:
        raise TypeError(f"state must have a real floating dtype, got {state.dtype}")
    if state.device != q.device:
        raise ValueError(f"state must be on the inputs' device {q.device}, got {state.device}")
    return state


def check_token_tensor(tokens, dims: int = 2, name: str = "tokens") -> None:
    """Token ids for a language model: a torch.long tensor (B, T) (dims=2) or (B,) (dims=1, one new
    token per sequence) with B ≥ 1 and T ≥ 1. Metadata only: nothing is read on the host."""
    layout = "(B, T)" if dims == 2 else "(B,)"
    if not isinstance(tokens, torch.Tensor):
        raise TypeError(f"{name} must be a {layout} torch.long tensor of token ids, got "
                        f"{type(tokens).__name__}")
    if tokens.dtype != torch.long:
        raise TypeError(f"{name} must have dtype torch.long (token ids), got {tokens.dtype}"
                        + (": convert with .long()" if not tokens.dtype.is_floating_point else ""))
    if tokens.dim() != dims:
        raise ValueError(f"{name} must be a {layout} tensor, got shape {tuple(tokens.shape)}")
    if tokens.shape[0] < 1:
        raise ValueError(f"{name} must hold at least one sequence (B >= 1), got shape "
                         f"{tuple(tokens.shape)}")
    if dims == 2 and tokens.shape[1] < 1:
        raise ValueError(f"{name} must hold at least one position per sequence (T >= 1), got shape "
                         f"{tuple(tokens.shape)}")


def count_outside(tokens: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """How many ids lie outside [0, vocab_size): a 0-d tensor on the tokens' device (nothing read
    yet)."""
    return ((tokens < 0) | (tokens >= vocab_size)).sum()


def check_token_range(tokens: torch.Tensor, vocab_size: int, name: str = "tokens",
                      outside=None) -> None:
    """Every id in [0, vocab_size): reads one number on the host (a synchronisation on a GPU), or
    none when the caller has already read `outside` (count_outside) together with something else."""
    outside = int(count_outside(tokens, vocab_size)) if outside is None else outside
    if outside:
        raise ValueError(f"{name} must be token ids in [0, vocab_size={vocab_size}), got {outside} "
                         f"outside (min {int(tokens.min())}, max {int(tokens.max())})")


def check_seed(seed):
    """A sampling seed: None or an integer in [0, 2^64)."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2 ** 64:
        raise ValueError(f"seed must be None or an integer in [0, 2^64), got {seed!r}")
    return int(seed)

"""Rotation: the e^{inθ} half of A's eigenvalues γ e^{iθ} (paper Eq. 3-4, the xPos-style position).

Two equivalent forms:
- complex: a vector of d/2 complex numbers z is rotated to z ⊙ e^{i n θ} (the paper's Θ);
- real pairs: consecutive features (x_{2j}, x_{2j+1}) are one complex number x_{2j} + i x_{2j+1},
  and rotating by angle φ maps it to (x_{2j} cos φ - x_{2j+1} sin φ, x_{2j} sin φ + x_{2j+1} cos φ).
With both q (at n) and k (at m) rotated forward, the real dot product of the rotated vectors is
Re[ (q e^{inθ}) · conj(k e^{imθ}) ] = Re[ Σ_j q_j conj(k_j) e^{i(n-m)θ_j} ]: it depends on n - m
only. The paper's conj Θ form uses k̃_m = conj(k) ⊙ e^{-imθ}, the same number written differently.
"""
from __future__ import annotations

import numpy as np
import torch

from ._checks import check_positive_int


def theta_schedule(head_dim: int, base: float = 10000.0) -> np.ndarray:
    """θ_j = base^(-j / (d/2 - 1)), j = 0..d/2-1, in float64 (the official code's linspace
    exponent).

    The fastest pair turns by 1 radian per token, the slowest by 1/base.
    """
    if check_positive_int(head_dim, "head_dim") % 2:
        raise ValueError("head_dim must be a positive even integer (pairs of features), got "
                         f"{head_dim!r}")
    if isinstance(base, bool) or not isinstance(base,
                                                (int, float, np.integer,
                                                 np.floating)) or not base > 1:
        raise ValueError("base must be a real number > 1 (the slowest pair turns by 1/base per "
                         f"token), got {base!r}")
    return float(base) ** -np.linspace(0.0, 1.0, head_dim // 2)


def to_complex(x: np.ndarray) -> np.ndarray:
    """(..., d) real → (..., d/2) complex, pairing x_{2j} + i x_{2j+1}."""
    x = np.asarray(x)
    if x.shape[-1] % 2:
        raise ValueError("x must have an even last dimension (pairs of features), got shape "
                         f"{x.shape}")
    return x[..., 0::2] + 1j * x[..., 1::2]


def from_complex(z: np.ndarray) -> np.ndarray:
    """(..., d/2) complex → (..., d) real, the inverse of to_complex."""
    z = np.asarray(z)
    out = np.empty(z.shape[:-1] + (2 * z.shape[-1],), dtype=z.real.dtype)   # (..., d)
    out[..., 0::2], out[..., 1::2] = z.real, z.imag
    return out


def angles(length: int, theta, offset: int = 0) -> np.ndarray:
    """(offset + n) θ_j for n = 0..length-1: shape (T, d/2), float64."""
    positions = np.arange(offset, offset + length, dtype=np.float64)
    return positions[:, None] * np.asarray(theta, dtype=np.float64)[None, :]   # (T, d/2)


def complex_rotate(z: np.ndarray, theta, offset: int = 0) -> np.ndarray:
    """z_n ⊙ e^{i (offset+n) θ} for z of shape (..., T, d/2) complex (the paper's Θ)."""
    z = np.asarray(z)
    return z * np.exp(1j * angles(z.shape[-2], theta, offset))


def rotate(x, theta, offset=0):
    """Real-pair rotation of x (..., T, d) by (offset + n) θ: NumPy array or torch tensor in, same
    out.

    Angles are formed in float64 and their cos/sin cast to x's dtype, so that long positions do not
    lose their phase in low precision. For a tensor x everything happens on x's device: θ may be a
    float64 tensor there (a layer's buffer) and offset a 0-d integer tensor (a decode step's
    position), so that a step neither copies from the host nor reads a value back.
    """
    if isinstance(x, torch.Tensor):
        if not x.dtype.is_floating_point:
            raise TypeError("x must have a real floating dtype (its pairs are rotated by cos and "
                            f"sin), got {x.dtype}")
        return rotate_by(x, *rotation_factors(x.shape[-2], theta, offset, x.dtype, x.device))
    if np.asarray(x).dtype.kind not in "f":
        raise TypeError("x must hold real floating numbers (its pairs are rotated by cos and "
                        "sin), "
                        f"got dtype {np.asarray(x).dtype}")
    theta = np.asarray(theta, dtype=np.float64)
    _check_rotation_width(x, theta.shape[-1])
    phase = angles(x.shape[-2], theta, offset)                       # (T, d/2)
    even, odd = x[..., 0::2], x[..., 1::2]                           # (..., T, d/2) each
    cos, sin = np.cos(phase), np.sin(phase)
    # (x_even + i x_odd) e^{iφ} = (x_even cos φ - x_odd sin φ) + i (x_even sin φ + x_odd cos φ)
    rotated = (even * cos - odd * sin, even * sin + odd * cos)
    return np.stack(rotated, axis=-1).reshape(x.shape)              # (..., T, d)


def rotation_factors(length: int, theta, offset, dtype: torch.dtype,
                     device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of (offset + n) θ_j, n = 0..length-1, from float64 angles on device, in dtype:
    (T, d/2) each.

    theta: NumPy values or a float64 tensor; offset: an int or a 0-d integer tensor on device.
    """
    if not isinstance(theta, torch.Tensor):
        theta = torch.as_tensor(np.asarray(theta, dtype=np.float64))
    theta = theta.to(device, torch.float64)                          # (d/2,)
    positions = torch.arange(length, dtype=torch.float64, device=device) + offset   # (T,)
    phase = positions[:, None] * theta[None, :]                      # (T, d/2)
    return phase.cos().to(dtype), phase.sin().to(dtype)


def rotate_by(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """The real-pair rotation of a tensor x (..., T, d) with given cos and sin (T, d/2)
    (rotation_factors)."""
    _check_rotation_width(x, cos.shape[-1])
    even, odd = x[..., 0::2], x[..., 1::2]                           # (..., T, d/2) each
    # (x_even + i x_odd) e^{iφ} = (x_even cos φ - x_odd sin φ) + i (x_even sin φ + x_odd cos φ)
    rot_even = torch.addcmul(even * cos, odd, sin, value=-1.0)
    rot_odd = torch.addcmul(even * sin, odd, cos)
    return torch.stack((rot_even, rot_odd), dim=-1).flatten(-2)     # (..., T, d)


def _check_rotation_width(x, half_width: int):
    if x.shape[-1] != 2 * half_width:
        raise ValueError(f"x's last dimension must be 2 * len(theta) = {2 * half_width}, got "
                         f"{x.shape[-1]}")

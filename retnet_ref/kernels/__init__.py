"""Triton kernels for retention: the chunkwise form (Eq. 7) forward and backward, and a fused decode
step.

    chunkwise_retention(q, k, v, gamma, chunk_size=64, state=None) → (o, R_last)
    (kernels.chunkwise) normalised_step_(q, k, v, state, gap, floor, normalisation)     → õ
    (kernels.step)

The same contract as the PyTorch forms in retnet_ref.retention and retnet_ref.normalisation: layout
(B, H, T, d), one γ per head, an initial state, the state after the last token in the accumulation
dtype. They run on CUDA tensors, or on CPU tensors under Triton's interpreter (environment variable
TRITON_INTERPRET=1 set before Triton is imported), which is how CI checks them without a GPU.
Triton is an optional extra: `pip install retnet_ref[triton]` (a CUDA build of PyTorch brings it).
"""
from __future__ import annotations

import os

import torch

try:
    import triton  # noqa: F401
except ImportError:  # pragma: no cover - depends on the install
    triton = None

from .._checks import check_choice, check_positive_int

BACKENDS = ("torch", "triton")
TILE_HEIGHTS = (16, 32, 64, 128)


def require_triton(*tensors: torch.Tensor) -> None:
    """Triton is installed and the tensors are where its kernels run (CUDA, or CPU under the
    interpreter)."""
    if triton is None:
        raise ImportError("backend='triton' needs Triton: pip install 'retnet_ref[triton]' "
                          "(CUDA builds of PyTorch include it)")
    interpreted = os.environ.get("TRITON_INTERPRET") == "1"
    for x in tensors:
        if x.device.type != "cuda" and not (interpreted and x.device.type == "cpu"):
            raise ValueError("backend='triton' runs on CUDA tensors (or CPU tensors with "
                             "TRITON_INTERPRET=1), "
                             f"got a tensor on {x.device}")
        if x.dtype not in (torch.float16, torch.bfloat16, torch.float32):
            raise TypeError("backend='triton' takes float16, bfloat16 or float32 inputs, got "
                            f"{x.dtype} "
                            "(float64 is the PyTorch forms' and the reference's job)")


def check_backend(backend: str) -> str:
    return check_choice(backend, BACKENDS, "backend")


def check_tile_height(chunk_size) -> int:
    """The kernels' chunk is a tile of C rows: a power of two from 16 (the matrix units' least) to
    128 (a C × C float32 score tile per program must fit in registers). Any chunk size gives the
    same function (Eq. 7 = Eq. 5), so this limits only the choice of tile."""
    C = check_positive_int(chunk_size, "chunk_size")
    if C not in TILE_HEIGHTS:
        raise ValueError(f"chunk_size must be one of {TILE_HEIGHTS} for backend='triton' (the "
                         "kernels' tile "
                         f"height; every chunk size computes the same retention), got {C}")
    return C


def chunkwise_retention(q, k, v, gamma, chunk_size: int = 64, state=None):
    """Chunkwise retention on the Triton kernels (kernels.chunkwise.chunkwise_retention)."""
    require_triton(q)
    from .chunkwise import chunkwise_retention as run
    return run(q, k, v, gamma, chunk_size, state)


def triton_normalised_step_(q, k, v, state, gap, floor, normalisation="exact"):
    """normalisation.normalised_step_ as one fused kernel (kernels.step.normalised_step_)."""
    require_triton(q)
    from .step import normalised_step_
    return normalised_step_(q, k, v, state, gap, floor, normalisation)

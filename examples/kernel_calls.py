"""The workload the kernel scripts of chapter 11, section 7 time: 65,536 tokens of 8 heads × 128 in
bfloat16, as TOKENS // T sequences of length T, on the GPU."""
from __future__ import annotations

import torch

from retnet_ref.decay import gamma_schedule
from retnet_ref.kernels.chunkwise import chunkwise_retention

TOKENS, HEADS, WIDTH = 65536, 8, 128


def workload(T: int):
    """q, k, v (B, H, T, d) requiring gradients, a gradient g of the output, and the heads' γ."""
    shape = (TOKENS // T, HEADS, T, WIDTH)                                   # (B, H, T, d)
    q, k, v = (torch.randn(shape, dtype=torch.bfloat16, device="cuda", requires_grad=True)
               for _ in range(3))
    g = torch.randn(shape, dtype=torch.bfloat16, device="cuda")
    return q, k, v, g, gamma_schedule(HEADS)


def kernel_calls(T: int, C: int = 64) -> dict:
    """{"fwd": the forward under no_grad, "fwd+bwd": the forward and the gradients of q, k, v} of
    kernels.chunkwise_retention at length T and tile height C, on one set of random inputs; each
    call takes chunkwise_retention's keyword arguments (tiles, segment_chunks)."""
    q, k, v, g, gamma = workload(T)

    def forward(**settings):
        with torch.no_grad():
            return chunkwise_retention(q, k, v, gamma, C, **settings)

    def forward_backward(**settings):
        o = chunkwise_retention(q, k, v, gamma, C, **settings)[0]
        return torch.autograd.grad(o, (q, k, v), g)

    return {"fwd": forward, "fwd+bwd": forward_backward}

"""The workload the kernel scripts of chapter 11, section 7 time: 65,536 tokens of 8 heads × 128 in
bfloat16, as TOKENS // T sequences of length T, on the GPU; and the report each writes."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import torch
import triton

from retnet_ref.decay import gamma_schedule
from retnet_ref.kernels.chunkwise import chunkwise_retention

TOKENS, HEADS, WIDTH = 65536, 8, 128
GRAPHED_TIMING = ("bench.graphed_seconds: CUDA-graph replay, median of 15 single replays after 3 "
                  "warm-up calls, each from an idle GPU with a cold L2")


def run_environment(command: str, **fields) -> dict:
    """What a report records of its run: the date, the command, torch, Triton, the GPU, then
    fields."""
    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": command,
            "torch": torch.__version__, "triton": triton.__version__,
            "gpu": torch.cuda.get_device_name(0), **fields}


def write_report(out: str, environment: dict, rows: list, **parts) -> None:
    with open(out, "w") as f:
        json.dump({"environment": environment, "rows": rows, **parts}, f, indent=1)


def rows_per_length(out: str, environment: dict, lengths, rows_for_length) -> list:
    """rows_for_length(T) for each length, the report rewritten after each (a run cut short keeps
    what it measured)."""
    rows = []
    for T in lengths:
        rows += rows_for_length(T)
        write_report(out, environment, rows)
    return rows


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

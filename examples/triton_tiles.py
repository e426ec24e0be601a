"""Which tiles should the Triton kernels launch with? (chapter 11, section 7)

    python examples/triton_tiles.py results/kernels/tiles-h200.json [KERNEL …]     # on a GPU

At 65,536 tokens (8 heads × 128, bfloat16, chunk 64) and T = 1024 … 65536, each kernel's Tile
(kernels.chunkwise.TILES: the block of d_k and d_v a program owns, warps, pipeline stages) is
varied with the other kernels' tiles left at their defaults: the recursion and the output pass
are timed by the forward, dQ·dK and dV by the forward + backward. Each setting is a median of 9
single calls after warm-up (bench.Timer: an idle GPU, a cold L2); a setting that does not fit the
GPU's shared memory or registers is recorded with its error. All in one process; the file is
written after each length. KERNEL … limits the sweep to those kernels (all when none are given).
"""
from __future__ import annotations

import itertools
import json
import sys
from datetime import datetime, timezone

import torch
import triton

from retnet_ref import bench
from retnet_ref.decay import gamma_schedule
from retnet_ref.kernels.chunkwise import TILES, Tile, chunkwise_retention

TOKENS, HEADS, WIDTH, C = 65536, 8, 128, 64
LENGTHS = (1024, 4096, 16384, 65536)
BLOCKS = ((64, 64), (64, 128), (128, 64), (128, 128))
WARPS, STAGES = (4, 8), (1, 2, 3, 4)
TIMED_BY = {"states": "fwd", "output": "fwd", "dq_dk": "fwd+bwd", "dv": "fwd+bwd"}


def calls(T):
    """The forward and the forward + backward at length T, each taking a tiles dict."""
    shape = (TOKENS // T, HEADS, T, WIDTH)
    q, k, v = (torch.randn(shape, dtype=torch.bfloat16, device="cuda", requires_grad=True)
               for _ in range(3))
    g, gamma = torch.randn(shape, dtype=torch.bfloat16, device="cuda"), gamma_schedule(HEADS)

    def forward(tiles):
        with torch.no_grad():
            return chunkwise_retention(q, k, v, gamma, C, tiles=tiles)

    def forward_backward(tiles):
        o = chunkwise_retention(q, k, v, gamma, C, tiles=tiles)[0]
        return torch.autograd.grad(o, (q, k, v), g)

    return {"fwd": forward, "fwd+bwd": forward_backward}


def measure(timer, fn, tiles):
    try:
        return timer.median_seconds(lambda: fn(tiles)), None
    except (triton.runtime.errors.OutOfResources, RuntimeError) as error:
        torch.cuda.synchronize()
        return None, f"{type(error).__name__}: {str(error)[:200]}"


def rows_for_length(timer, T, kernels):
    fns = calls(T)
    rows = []
    for name, (bk_bv, warps, stages) in itertools.product(
            kernels, itertools.product(BLOCKS, WARPS, STAGES)):
        tile = Tile(*bk_bv, warps, stages)
        seconds, error = measure(timer, fns[TIMED_BY[name]], {name: tile})
        rows.append({"length": T, "kernel": name, "tile": tile._asdict(),
                     "pass": TIMED_BY[name], "seconds": seconds, "error": error})
        print(f"T={T:6d} {name:7s} {tile} "
              + (f"{1e3 * seconds:.3f} ms" if seconds else error), flush=True)
    return rows


def main(out: str, kernels: list[str]) -> None:
    timer = bench.Timer(torch.device("cuda"), warmup=2, repeats=9)
    environment = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                   "command": " ".join(["python examples/triton_tiles.py", out, *kernels]),
                   "torch": torch.__version__, "triton": triton.__version__,
                   "gpu": torch.cuda.get_device_name(0),
                   "defaults": {name: tile._asdict() for name, tile in TILES.items()}}
    rows = []
    for T in LENGTHS:
        rows += rows_for_length(timer, T, kernels or list(TILES))
        with open(out, "w") as f:
            json.dump({"environment": environment, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])

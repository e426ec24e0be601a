"""Which tiles should the Triton kernels launch with? (chapter 11, section 7)

    python examples/triton_tiles.py results/kernels/tiles-h200.json [KERNEL …]     # on a GPU
        [--chunk-size C] [--lengths T …]

At 65,536 tokens (8 heads × 128, bfloat16, tile height C = 64 unless given) and T = 4096, 16384,
65536, 1024 (in that order, unless given), each kernel's Tile (kernels.chunkwise.Tile: the block
of d_k and d_v a program owns, warps, pipeline stages) is varied with the other kernels' tiles
left at their defaults (TILES, and states_tile's choice by shape for the recursion): the recursion
is timed by the forward and by the forward + backward (it runs in both), the output pass by the
forward, dQ·dK and dV by the forward + backward. Each setting is replayed as a CUDA graph
(bench.graphed_seconds: the GPU's time without the launches, which a tile does not change), a
median of 9 single replays after warm-up (bench.Timer: an idle GPU, a cold L2); a setting that
does not fit the GPU's shared memory or registers is recorded with its error. All in one process;
the file is written after each length. KERNEL … limits the sweep to those kernels (all when none
are given).
"""
from __future__ import annotations

import argparse
import itertools
import sys

import torch
import triton
from kernel_calls import kernel_calls, rows_per_length, run_environment

from retnet_ref import bench
from retnet_ref.kernels.chunkwise import KERNELS, TILES, Tile

LENGTHS = (4096, 16384, 65536, 1024)           # the lengths of the targets first
BLOCKS = ((64, 64), (64, 128), (128, 64), (128, 128))
WARPS, STAGES = (4, 8), (2, 3, 4)
TIMED_BY = {"states": ("fwd", "fwd+bwd"), "output": ("fwd",), "dq_dk": ("fwd+bwd",),
            "dv": ("fwd+bwd",)}


def measure(timer, fn, tiles):
    try:
        entry = bench.graphed_seconds(lambda: fn(tiles=tiles), timer)
    except triton.runtime.errors.OutOfResources as error:
        torch.cuda.synchronize()
        return None, f"{type(error).__name__}: {str(error)[:200]}"
    return entry.get("seconds"), entry.get("reason")


def rows_for_length(timer, T, C, kernels):
    fns = kernel_calls(T, C)
    rows = []
    for name, (bk_bv, warps, stages) in itertools.product(
            kernels, itertools.product(BLOCKS, WARPS, STAGES)):
        tile = Tile(*bk_bv, warps, stages)
        for pass_name in TIMED_BY[name]:
            seconds, error = measure(timer, fns[pass_name], {name: tile})
            rows.append({"length": T, "chunk_size": C, "kernel": name, "tile": tile._asdict(),
                         "pass": pass_name, "seconds": seconds, "error": error})
            print(f"T={T:6d} {name:7s} {pass_name:7s} {tile} "
                  + (f"{1e3 * seconds:.3f} ms" if seconds else error), flush=True)
    return rows


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("kernels", nargs="*", metavar="KERNEL", help=f"some of {KERNELS}")
    parser.add_argument("--chunk-size", type=int, default=64)
    parser.add_argument("--lengths", type=int, nargs="+", default=LENGTHS)
    args = parser.parse_args(argv)
    if not set(args.kernels) <= set(KERNELS):
        parser.error(f"KERNEL must be among {KERNELS}, got {args.kernels}")
    timer = bench.Timer(torch.device("cuda"), warmup=2, repeats=9)
    environment = run_environment(
        " ".join(["python examples/triton_tiles.py", *argv]), timing="CUDA graph replay",
        defaults={"states": "states_tile, by shape",
                  **{name: tile._asdict() for name, tile in TILES.items()}})
    rows_per_length(args.out, environment, args.lengths, lambda T: rows_for_length(
        timer, T, args.chunk_size, args.kernels or list(KERNELS)))


if __name__ == "__main__":
    main(sys.argv[1:])

"""Taller chunks, half the states: the kept kernels at tile height C = 128 (chapter 11, section 7)

    python examples/triton_tall_chunks.py results/kernels/tall-chunks-h200.json     # on a GPU

At 65,536 tokens (8 heads × 128, bfloat16) and T = 1024, 4096, 16384, 65536: the forward (under
no_grad) and the forward + backward of kernels.chunkwise_retention at C = 64 and C = 128 with the
default tiles, the C = 128 forward with each output tile of OUTPUT_TILES, and the C = 128 forward
+ backward with the fastest tiles of a first sweep (BEST_128). Each setting replayed as a CUDA
graph (bench.graphed_seconds: a median of 15 single replays after warm-up, each from an idle GPU
with a cold L2), in two rounds, all in one process; last the registers, spills and shared memory of
every compiled output kernel.
"""
from __future__ import annotations

import sys

import torch
from kernel_calls import (
    GRAPHED_TIMING,
    kernel_calls,
    rows_per_length,
    run_environment,
    write_report,
)

from retnet_ref import bench
from retnet_ref.kernels import chunkwise
from retnet_ref.kernels.chunkwise import Tile

ROUNDS = 2
LENGTHS = (1024, 4096, 16384, 65536)
OUTPUT_TILES = [Tile(64, 128, 8, 2), Tile(32, 128, 8, 2), Tile(64, 64, 4, 2), Tile(64, 64, 8, 2),
                Tile(64, 64, 8, 3), Tile(32, 32, 4, 3), Tile(128, 64, 8, 2)]
BEST_128 = {"output": Tile(64, 128, 8, 2), "dq_dk": Tile(128, 128, 8, 2),
            "dv": Tile(128, 128, 8, 2)}


def rows_for_length(timer, T):
    calls = {C: kernel_calls(T, C) for C in (64, 128)}
    settings = [(C, name, None) for C in (64, 128) for name in ("fwd", "fwd+bwd")]
    settings += [(128, "fwd", {"output": tile}) for tile in OUTPUT_TILES]
    settings += [(128, "fwd+bwd", BEST_128)]
    rows = []
    for round_ in range(ROUNDS):
        for C, name, tiles in settings:
            entry = bench.graphed_seconds(lambda: calls[C][name](tiles=tiles), timer)
            rows.append({"T": T, "C": C, "pass": name, "round": round_,
                         "tiles": None if tiles is None else
                         {kernel: tile._asdict() for kernel, tile in tiles.items()},
                         "ms": 1e3 * entry["seconds"]})
            print(rows[-1], flush=True)
    return rows


def compiled_outputs():
    """Registers, spills and shared memory of every compiled _output_kernel."""
    return [{"warps": kernel.metadata.num_warps, "stages": kernel.metadata.num_stages,
             "specialisation": str(key)[-160:], "registers": kernel.n_regs,
             "spills": kernel.n_spills, "shared_bytes": kernel.metadata.shared}
            for cache in chunkwise._output_kernel.device_caches.values()
            for key, kernel in cache[0].items()]


def main(out: str) -> None:
    timer = bench.Timer(torch.device("cuda"), warmup=3, repeats=15)
    environment = run_environment("python examples/triton_tall_chunks.py " + out,
                                  timing=GRAPHED_TIMING, rounds=ROUNDS)
    rows = rows_per_length(out, environment, LENGTHS, lambda T: rows_for_length(timer, T))
    write_report(out, environment, rows, compiled=compiled_outputs())


if __name__ == "__main__":
    main(sys.argv[1])

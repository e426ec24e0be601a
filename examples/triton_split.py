"""Split state recursion: which blocks, how many segments? (chapter 11, section 7)

    python examples/triton_split.py results/kernels/split-wide-backward-h200.json     # on a GPU

At 65,536 tokens (8 heads × 128, bfloat16, tile height 64) and T = 16384 and 65536, the forward
(under no_grad) and the forward + backward of kernels.chunkwise_retention: the default (the
recursion's tile and split chosen by states_tile and segment_length) against whole-head blocks
(128 × 128, 8 warps, 3 or 4 stages) in 4, 8, 16 and 17 segments and 64 × 64 blocks in 5, each set
per call (tiles={"states": …}, segment_chunks). Each setting is replayed as a CUDA graph
(bench.graphed_seconds: a median of 15 single replays after warm-up, each from an idle GPU with a
cold L2), in two rounds over all settings of a length, all in one process.
"""
from __future__ import annotations

import sys

import torch
from kernel_calls import GRAPHED_TIMING, kernel_calls, rows_per_length, run_environment

from retnet_ref import bench
from retnet_ref.kernels.chunkwise import NARROW_STATES, Tile

C, ROUNDS = 64, 2
LENGTHS = (65536, 16384)
WIDE_TILES = (Tile(128, 128, 8, 3), Tile(128, 128, 8, 4))
# (tile, segments); None: the default
SETTINGS = ([(None, None)] + [(tile, n) for tile in WIDE_TILES for n in (4, 8, 16, 17)]
            + [(NARROW_STATES, 5)])


def settings(T, tile, segments):
    """chunkwise_retention's keyword arguments for the recursion's tile in that many segments;
    none for the default (tile None)."""
    if tile is None:
        return {}
    return {"tiles": {"states": tile}, "segment_chunks": -(-(T // C) // segments)}


def rows_for_length(timer, T):
    rows = []
    passes = kernel_calls(T, C)
    for round_ in range(ROUNDS):
        for tile, segments in SETTINGS:
            for name, call in passes.items():
                entry = bench.graphed_seconds(lambda: call(**settings(T, tile, segments)), timer)
                rows.append({"T": T, "pass": name, "round": round_,
                             "tile": None if tile is None else tile._asdict(),
                             "segments": segments, "ms": 1e3 * entry["seconds"]})
                print(rows[-1], flush=True)
    return rows


def main(out: str) -> None:
    timer = bench.Timer(torch.device("cuda"), warmup=3, repeats=15)
    environment = run_environment(
        "python examples/triton_split.py " + out,
        multiprocessors=torch.cuda.get_device_properties(0).multi_processor_count,
        timing=GRAPHED_TIMING, rounds=ROUNDS)
    rows_per_length(out, environment, LENGTHS, lambda T: rows_for_length(timer, T))


if __name__ == "__main__":
    main(sys.argv[1])

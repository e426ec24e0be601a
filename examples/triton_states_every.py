"""How often should a forward without gradients store the chunk state? (chapter 11, section 7)

    python examples/triton_states_every.py results/kernels/states-every-h200.json     # on a GPU
        [--lengths T …]

At 65,536 tokens (8 heads × 128, bfloat16, tile height 64) and T = 1024, 4096, 16384, 65536 (unless
given), the forward of kernels.chunkwise_retention under no_grad with pass 1 storing the state
before every E-th chunk (states_every E = 1, 2, 4: each output program then computes E chunks from
one state), each with several tiles of the output pass (the recursion's left to states_tile).
Each setting is replayed as a CUDA graph (bench.graphed_seconds, a median of 9 single replays after
warm-up; bench.Timer: an idle GPU, a cold L2), in three rounds over all settings of a length; the
file keeps each round and their median, and is written after each length. All in one process.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from datetime import datetime, timezone

import torch
import triton

from retnet_ref import bench
from retnet_ref.decay import gamma_schedule
from retnet_ref.kernels.chunkwise import STATES_EVERY_CHOICES, TILES, Tile, chunkwise_retention

TOKENS, HEADS, WIDTH, C, ROUNDS = 65536, 8, 128, 64, 3
LENGTHS = (1024, 4096, 16384, 65536)
OUTPUT_TILES = (TILES["output"], Tile(64, 128, 4, 2), Tile(64, 128, 8, 3))


def forward(T):
    """The forward at length T without gradients, taking (states_every, output tile)."""
    shape = (TOKENS // T, HEADS, T, WIDTH)
    q, k, v = (torch.randn(shape, dtype=torch.bfloat16, device="cuda") for _ in range(3))
    gamma = gamma_schedule(HEADS)

    def run(every, tile):
        with torch.no_grad():
            return chunkwise_retention(q, k, v, gamma, C, states_every=every,
                                       tiles={"output": tile})

    return run


def measure(timer, fn):
    try:
        entry = bench.graphed_seconds(fn, timer)
    except triton.runtime.errors.OutOfResources as error:
        torch.cuda.synchronize()
        return None, f"{type(error).__name__}: {str(error)[:200]}"
    return entry.get("seconds"), entry.get("reason")


def rows_for_length(timer, T):
    run = forward(T)
    settings = [(every, tile) for every in STATES_EVERY_CHOICES for tile in OUTPUT_TILES]
    rounds = {setting: [] for setting in settings}
    errors = {}
    for _ in range(ROUNDS):
        for every, tile in settings:
            seconds, error = measure(timer, lambda: run(every, tile))
            if seconds is None:
                errors[every, tile] = error
            else:
                rounds[every, tile].append(seconds)
    rows = []
    for (every, tile), times in rounds.items():
        median = statistics.median(times) if times else None
        rows.append({"length": T, "chunk_size": C, "states_every": every,
                     "output_tile": tile._asdict(), "rounds": times, "seconds": median,
                     "error": errors.get((every, tile))})
        print(f"T={T:6d} every={every} {tile} "
              + (f"{1e3 * median:.3f} ms" if median else errors[every, tile]), flush=True)
    return rows


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--lengths", type=int, nargs="+", default=LENGTHS)
    args = parser.parse_args(argv)
    timer = bench.Timer(torch.device("cuda"), warmup=2, repeats=9)
    environment = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                   "command": " ".join(["python examples/triton_states_every.py", *argv]),
                   "torch": torch.__version__, "triton": triton.__version__,
                   "gpu": torch.cuda.get_device_name(0), "timing": "CUDA graph replay",
                   "copy_bandwidth_bytes_per_s": bench.copy_bandwidth(timer)}
    rows = []
    for T in args.lengths:
        rows += rows_for_length(timer, T)
        with open(args.out, "w") as f:
            json.dump({"environment": environment, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1:])

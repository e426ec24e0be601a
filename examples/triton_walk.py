"""One walk with the outputs on the way, against the kept two passes (chapter 11, section 7)

    python examples/triton_walk.py results/kernels/walk-h200.json     # on a GPU

At 65,536 tokens (8 heads × 128, bfloat16, tile height 64) and T = 1024, 4096, 16384, 65536, the
forward under no_grad of kernels.chunkwise_retention (the kept default: pass 1 stores every chunk's
state, the output pass reads them) and of kernels.walk.walk_forward (one walk per segment, no
state through memory) for the launch tiles and segment counts of SWEEP, and the walk's default
storing every state (what a forward for training would have to). First each one's largest
difference from the kept forward; then each setting replayed as a CUDA graph
(bench.graphed_seconds: a median of 15 single replays after warm-up, each from an idle GPU with a
cold L2), in two rounds, all in one process; last the registers, spills and shared memory of every
compiled walk.
"""
from __future__ import annotations

import json
import sys
from datetime import datetime, timezone

import torch
import triton
from kernel_calls import workload

from retnet_ref import bench
from retnet_ref.kernels import chunkwise, walk

C, ROUNDS = 64, 2
LENGTHS = (1024, 4096, 16384, 65536)
TILES = [chunkwise.Tile(*t) for t in ((128, 64, 4, 2), (128, 64, 4, 1), (128, 64, 4, 3),
                                       (128, 64, 8, 2), (128, 128, 8, 2), (128, 32, 4, 2))]
# segments of the walk per length; None: segment_length's choice
SEGMENTS = {1024: [None], 4096: [None, 2], 16384: [None, 2, 8], 65536: [None, 8, 32]}


def largest_difference(a, b) -> float:
    return ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()


def rows_for_length(timer, T):
    q, k, v, _, gamma = workload(T)
    N = T // C

    def kept():
        with torch.no_grad():
            return chunkwise.chunkwise_retention(q, k, v, gamma, C)

    def walked(tile=walk.WALK_TILE, segments=None, store_states=False):
        G = None if segments is None else -(-N // segments)
        with torch.no_grad():
            return walk.walk_forward(q, k, v, gamma, C, store_states=store_states,
                                     segment_chunks=G, tile=tile)

    (o, R), (o_w, R_w, _) = kept(), walked()
    rows = [{"T": T, "check": "walk default against kept, largest |difference| / largest |kept|",
             "o": largest_difference(o_w, o), "R_last": largest_difference(R_w, R)}]
    settings = [("kept", None, None, False), ("walk, states stored", walk.WALK_TILE, None, True)]
    settings += [("walk", tile, n, False) for tile in TILES for n in SEGMENTS[T]]
    for round_ in range(ROUNDS):
        for name, tile, segments, store in settings:
            call = kept if name == "kept" else (lambda: walked(tile, segments, store))
            entry = bench.graphed_seconds(call, timer)
            rows.append({"T": T, "forward": name, "round": round_,
                         "tile": None if tile is None else tile._asdict(), "segments": segments,
                         "ms": 1e3 * entry["seconds"]})
            print(rows[-1], flush=True)
    return rows


def compiled_walks():
    """Registers, spills and shared memory of every compiled _walk_kernel."""
    return [{"warps": kernel.metadata.num_warps, "stages": kernel.metadata.num_stages,
             "specialisation": str(key)[-160:], "registers": kernel.n_regs,
             "spills": kernel.n_spills, "shared_bytes": kernel.metadata.shared}
            for cache in walk._walk_kernel.device_caches.values()
            for key, kernel in cache[0].items()]


def main(out: str) -> None:
    timer = bench.Timer(torch.device("cuda"), warmup=3, repeats=15)
    environment = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                   "command": "python examples/triton_walk.py " + out,
                   "torch": torch.__version__, "triton": triton.__version__,
                   "gpu": torch.cuda.get_device_name(0),
                   "multiprocessors": torch.cuda.get_device_properties(0).multi_processor_count,
                   "timing": "bench.graphed_seconds: CUDA-graph replay, median of 15 single "
                             "replays after 3 warm-up calls, each from an idle GPU with a cold L2",
                   "rounds": ROUNDS}
    rows = []
    for T in LENGTHS:
        rows += rows_for_length(timer, T)
        with open(out, "w") as f:
            json.dump({"environment": environment, "rows": rows}, f, indent=1)
    with open(out, "w") as f:
        json.dump({"environment": environment, "rows": rows, "compiled": compiled_walks()}, f,
                  indent=1)


if __name__ == "__main__":
    main(sys.argv[1])

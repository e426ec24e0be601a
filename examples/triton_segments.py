"""Does splitting the Triton kernels' state recursion into segments pay? (chapter 11, section 7)

    python examples/triton_segments.py results/kernels/segments-h200.json     # on a GPU

For T = 4096, 16384 and 65536 at 65,536 tokens (8 heads × 128, bfloat16, tile height 64), the
forward and the forward + backward of kernels.chunkwise_retention with the recursion unsplit and
split so that it has at most 1, 2 and 4 programs per multiprocessor (segment_chunks), with the
recursion's 64 × 64 blocks (NARROW_STATES) throughout, in one process:
three rounds over the settings, each a median of 9 single calls after warm-up (bench.Timer: an
idle GPU, a cold L2); the file keeps every round and their median.
"""
from __future__ import annotations

import json
import statistics
import sys
from datetime import datetime, timezone

import torch
from kernel_calls import HEADS, TOKENS, WIDTH, kernel_calls

from retnet_ref import bench
from retnet_ref.kernels.chunkwise import NARROW_STATES, segment_length

C, ROUNDS = 64, 3
PER_MULTIPROCESSOR = (0, 1, 2, 4)                     # 0: one segment, the recursion unsplit
NARROW = {"states": NARROW_STATES}


def measure_length(T, timer, multiprocessors):
    batch, N = TOKENS // T, T // C
    programs = batch * HEADS * (WIDTH // 64) ** 2          # the recursion's (64, 64) state blocks
    calls = kernel_calls(T, C)
    settings = {p: segment_length(N, programs, max(1, p * multiprocessors))
                for p in PER_MULTIPROCESSOR}
    rounds = {(p, name): [] for p in settings for name in ("fwd", "fwd+bwd")}
    for _ in range(ROUNDS):
        for p, G in settings.items():
            for name, call in calls.items():
                rounds[p, name].append(timer.median_seconds(
                    lambda: call(segment_chunks=G, tiles=NARROW)))
    return [{"length": T, "batch": batch, "programs": programs, "per_multiprocessor": p,
             "segment_chunks": settings[p], "segments": -(-N // settings[p]), "pass": name,
             "seconds": statistics.median(times), "rounds": times}
            for (p, name), times in rounds.items()]


def main(out: str) -> None:
    timer = bench.Timer(torch.device("cuda"), warmup=2, repeats=9)
    multiprocessors = torch.cuda.get_device_properties(0).multi_processor_count
    rows = [row for T in (4096, 16384, 65536) for row in measure_length(T, timer, multiprocessors)]
    for r in rows:
        print(f"T={r['length']:6d} {r['pass']:8s} segments {r['segments']:3d} "
              f"({r['programs'] * r['segments']:4d} programs): {1e3 * r['seconds']:.3f} ms")
    environment = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                   "command": "python examples/triton_segments.py " + out,
                   "torch": torch.__version__, "gpu": torch.cuda.get_device_name(0),
                   "multiprocessors": multiprocessors}
    with open(out, "w") as f:
        json.dump({"environment": environment, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])

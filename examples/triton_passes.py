"""Where does the Triton forward's time go? Each kernel's GPU time (chapter 11, section 7)

    python examples/triton_passes.py results/kernels/passes-h200.json     # on a GPU
        [--lengths T …]

At 65,536 tokens (8 heads × 128, bfloat16, tile height 64, the default tiles) and T = 1024, 4096,
16384, 65536 (unless given), the forward (under no_grad) and the forward + backward of
kernels.chunkwise_retention, each called 20 times back to back after 3 warm-up calls under
torch.profiler: the GPU time per call of every kernel launched (summed over its launches in one
call) and how many times per call it ran. Back to back, the L2 is warm from the call before (about
2 % of one call's bytes fit in it). All in one process.
"""
from __future__ import annotations

import argparse
import sys

import torch
from kernel_calls import kernel_calls, run_environment, write_report
from torch.profiler import ProfilerActivity, profile

from retnet_ref import bench

WARMUP, CALLS = 3, 20
LENGTHS = (1024, 4096, 16384, 65536)


def kernel_times(fn):
    """{kernel name: (GPU seconds per call, launches per call)} over CALLS calls."""
    for _ in range(WARMUP):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(CALLS):
            fn()
        torch.cuda.synchronize()
    return {e.key: (e.self_device_time_total * 1e-6 / CALLS, e.count / CALLS)
            for e in prof.key_averages() if e.self_device_time_total > 0}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--lengths", type=int, nargs="+", default=LENGTHS)
    args = parser.parse_args(argv)
    environment = run_environment(
        " ".join(["python examples/triton_passes.py", *argv]),
        timing=f"torch.profiler, {CALLS} calls back to back after {WARMUP}",
        copy_bandwidth_bytes_per_second=bench.copy_bandwidth(
            bench.Timer(torch.device("cuda"), warmup=2, repeats=9)))
    rows = []
    for T in args.lengths:
        for pass_name, fn in kernel_calls(T).items():
            for name, (seconds, launches) in kernel_times(fn).items():
                rows.append({"length": T, "pass": pass_name, "kernel": name, "seconds": seconds,
                             "launches": launches})
                print(f"T={T:6d} {pass_name:7s} {name[:50]:50s} {1e3 * seconds:.3f} ms "
                      f"x{launches:g}", flush=True)
        write_report(args.out, environment, rows)


if __name__ == "__main__":
    main(sys.argv[1:])

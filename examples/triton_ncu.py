"""The Triton forward's two kernels under Nsight Compute (chapter 11, section 7)

    ncu --clock-control none --kernel-name regex:"_states_kernel|_output_kernel" \
        --section SpeedOfLight --section Occupancy --section LaunchStats \
        --section MemoryWorkloadAnalysis --csv --page details \
        python examples/triton_ncu.py forward > ncu.csv                      # on a GPU
    python examples/triton_ncu.py summarise ncu.csv results/kernels/ncu-forward-h200.json

`forward` calls the forward of kernels.chunkwise_retention under no_grad at 65,536 tokens (8 heads ×
128, bfloat16, tile height 64) for T = 1024, 4096, 16384, 65536: three warm-up calls and one more
per length. `summarise` keeps, of ncu's CSV, a few metrics of each length's last call (its pass-1
launches, the segments' own sums and then the walks where pass 1 is split, and its output pass); the
date, versions and code of the committed file's `environment` were added to it by hand.
"""
from __future__ import annotations

import csv
import json
import sys

TOKENS, HEADS, WIDTH, C, WARMUP = 65536, 8, 128, 64, 3
LENGTHS = (1024, 4096, 16384, 65536)
METRICS = {"Duration": "duration_ns", "DRAM Throughput": "dram_throughput_percent_of_peak",
           "Memory Throughput": "memory_throughput_bytes_per_second",
           "Registers Per Thread": "registers_per_thread", "Block Size": "threads_per_program",
           "Dynamic Shared Memory Per Block": "shared_memory_bytes_per_program",
           "Block Limit Registers": "programs_per_multiprocessor_by_registers",
           "Block Limit Shared Mem": "programs_per_multiprocessor_by_shared_memory",
           "Theoretical Occupancy": "theoretical_occupancy_percent",
           "Achieved Occupancy": "achieved_occupancy_percent", "Grid Size": "programs",
           "Waves Per SM": "waves_per_multiprocessor", "L2 Hit Rate": "l2_hit_rate_percent"}


def forward() -> None:
    import torch

    from retnet_ref.decay import gamma_schedule
    from retnet_ref.kernels.chunkwise import chunkwise_retention

    for T in LENGTHS:
        shape = (TOKENS // T, HEADS, T, WIDTH)
        q, k, v = (torch.randn(shape, dtype=torch.bfloat16, device="cuda") for _ in range(3))
        with torch.no_grad():
            for _ in range(WARMUP + 1):
                chunkwise_retention(q, k, v, gamma_schedule(HEADS), C)
            torch.cuda.synchronize()


def launches(csv_path: str) -> list[dict]:
    """Every profiled launch in order: its kernel and METRICS, as numbers."""
    lines = open(csv_path).read().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith('"ID"'))
    by_launch: dict[int, dict] = {}
    for row in csv.DictReader(lines[header:]):
        launch = by_launch.setdefault(int(row["ID"]), {"kernel": row["Kernel Name"]})
        if row["Metric Name"] in METRICS:
            launch[METRICS[row["Metric Name"]]] = float(row["Metric Value"].replace(",", ""))
    return [by_launch[i] for i in sorted(by_launch)]


def summarise(csv_path: str) -> list[dict]:
    """Each length's last call (a call's launches end with its output pass)."""
    calls, call = [], []
    for launch in launches(csv_path):
        call.append(launch)
        if launch["kernel"] == "_output_kernel":
            calls, call = calls + [call], []
    if call or len(calls) != len(LENGTHS) * (WARMUP + 1):
        raise ValueError(f"expected {WARMUP + 1} calls for each of {LENGTHS}, got {len(calls)}")
    return [{"length": T, "last_call": calls[(WARMUP + 1) * (j + 1) - 1]}
            for j, T in enumerate(LENGTHS)]


def main(argv: list[str]) -> None:
    if argv[:1] == ["forward"]:
        forward()
    elif argv[:1] == ["summarise"] and len(argv) == 3:
        with open(argv[2], "w") as f:
            json.dump({"rows": summarise(argv[1])}, f, indent=1)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])

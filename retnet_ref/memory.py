"""How much memory a new allocation can get on a device: the guard of the parallel form and of
`bench`."""
from __future__ import annotations

import os

import torch


def _cpu_available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), else the free physical pages, else None
    (unknown)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):   # not every system names these
        return None


def available_bytes(device: torch.device) -> int | None:
    """Memory a new allocation can get: free device memory plus PyTorch's cached free blocks (CUDA),
    MemAvailable (CPU); None where the system does not say."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if device.type == "cpu":
        return _cpu_available_bytes()
    return None

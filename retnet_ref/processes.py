"""This process's place among several started by torchrun (gloo on the CPU, NCCL on CUDA): shared by
`python -m retnet_ref train` and `python -m retnet_ref bench --suite training`."""
from __future__ import annotations

import gc
import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist


@dataclass
class Processes:
    """This process's place among the processes (one, or torchrun's) and the device it computes
    on."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    grouped: bool = False          # whether a process group was started (always when world > 1)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            value = value.clone()
            dist.all_reduce(value)
            value /= self.world
        return value

    def total(self, value: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            value = value.clone()
            dist.all_reduce(value)
        return value

    def maximum(self, value: float) -> float:
        """The largest of every process's value."""
        if self.world == 1:
            return value
        reduced = torch.tensor(value, dtype=torch.float64, device=self.device)
        dist.all_reduce(reduced, op=dist.ReduceOp.MAX)
        return float(reduced)

    def any(self, flag: bool) -> bool:
        """Whether the flag is set in any process (every process gets the same answer)."""
        return self.maximum(float(flag)) > 0


def world_size() -> int:
    """WORLD_SIZE as torchrun sets it (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def under_torchrun() -> bool:
    """Whether torchrun started this process (it sets WORLD_SIZE, also for a single process)."""
    return "WORLD_SIZE" in os.environ


def process_device(name: str) -> torch.device:
    """The device of this process: cpu, or the CUDA device of its local rank."""
    if name == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def start_processes(device: torch.device, group_of_one: bool = False) -> Processes:
    """Join torchrun's process group (a group of one too if group_of_one, e.g. to wrap a model in
    DDP or FSDP on one GPU); a single process without it needs no group."""
    if world_size() == 1 and not group_of_one:
        return Processes(device=device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Processes(dist.get_rank(), dist.get_world_size(), device, grouped=True)


def end_processes(processes: Processes):
    """Leave the process group, if one was started. What holds the group (a model in DDP or FSDP)
    must be gone by then: the caller has dropped it (it lived in a function that has returned), and
    the reference cycles it may sit in are collected here first. Such a model destroyed after the
    group, at the process's exit, has been seen to hang the process (or abort it) at random."""
    if processes.grouped:
        gc.collect()
        # every process reaches the end before any leaves the group: a process that tore its group
        # down while another was still saving the checkpoint has been seen to leave that one waiting
        # forever
        dist.barrier()
        dist.destroy_process_group()

"""Small helpers several test files share (imported as `from helpers import ...`: pytest puts tests/
on sys.path). The oracles and the error measure are fixtures in conftest.py."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from retnet_ref.retention import chunkwise_retention, parallel_retention, recurrent_retention


def token_ids(batch: int = 2, length: int = 37, vocab: int = 256, seed: int = 1) -> torch.Tensor:
    """Seeded random token ids (batch, length) in [0, vocab)."""
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def run_form(form, q, k, v, gamma, state=None, chunk_size=4):
    """(o, state) for every form; the parallel form takes no state and returns None for it."""
    if form == "parallel":
        assert state is None
        return parallel_retention(q, k, v, gamma), None
    if form == "recurrent":
        return recurrent_retention(q, k, v, gamma, state=state)
    return chunkwise_retention(q, k, v, gamma, chunk_size, state=state)


# ---------------------------------------------------------------- processes started by torchrun

TORCHRUN_TIMEOUT_S = 180    # a run of the tests takes 5–15 s on two cores; only a hang reaches this


def descendants(pid: int) -> list[int]:
    """Every process below pid (torchrun starts its workers in sessions of their own, so not a
    group)."""
    parents = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines()
                          if ":\t" in line)
        except OSError:                                     # the process ended while we read
            continue
        parents.setdefault(int(fields["PPid"]), []).append(int(fields["Pid"]))
    below, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        below += children
        todo += children
    return below


def torchrun(processes: int, args, cwd: Path) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node=processes args` on the CPU (one thread each), its
    exit status asserted to be 0. A run still going after TORCHRUN_TIMEOUT_S fails the test with
    every process's Python stack: each gets SIGABRT, on which faulthandler prints where it waits."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={processes}",
               *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env,
                               cwd=cwd)
    try:
        stdout, stderr = process.communicate(timeout=TORCHRUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        for pid in [*descendants(process.pid), process.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGABRT)
        stdout, stderr = process.communicate(timeout=60)
        pytest.fail(f"{' '.join(command)}\nstill running after {TORCHRUN_TIMEOUT_S} s; where each "
                    "process "
                    f"waited:\n{stderr[-12000:]}")
    assert process.returncode == 0, stderr[-3000:]
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)

"""`python -m retnet_ref bench --suite training` under torchrun on the CPU: two gloo processes, each
model in DistributedDataParallel or sharded by FSDP; the options that do not go together; the
processes agreeing on what fits. Run as a script under torchrun (see `distributed_steps`), this file
is also the worker of the test that compares one distributed step with one process given the global
batch."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from functools import partial
from pathlib import Path

import pytest
import torch

from helpers import torchrun
from retnet_ref import bench
from retnet_ref.__main__ import main
from retnet_ref.processes import Processes, end_processes, start_processes

LENGTH, BATCH, PROCESSES = 16, 2, 2
TRAINING = ["--suite", "training", "--train-preset", "tiny", "--train-lengths", str(LENGTH),
            "--train-batch",
            str(BATCH), "--steps", "2", "--warmup", "1", "--device", "cpu"]
STEP_COLUMNS = ("retnet", "transformer_sdpa")


def options(*args) -> bench.Options:
    parser = argparse.ArgumentParser()
    bench_parser = bench.add_parser(parser.add_subparsers())
    return bench.resolve_options(parser.parse_args(["bench", *TRAINING, *args]), bench_parser)


# ---------------------------------------------------------------- the command under torchrun


@pytest.mark.slow
@pytest.mark.parametrize("given, parallel", [([], "ddp"), (["--train-parallel", "fsdp"], "fsdp")])
def test_two_processes_measure_every_column_and_the_first_writes_the_report(tmp_path, given,
                                                                            parallel):
    out = tmp_path / "results" / "bench.json"
    done = torchrun(PROCESSES, ["-m", "retnet_ref", "bench", *TRAINING, *given, "--out", out],
                    tmp_path)
    assert done.stdout.count("training: one step") == 1 and done.stdout.count(f"wrote {out}") == 1
    assert list(tmp_path.rglob("*.json")) == [out]
    report = json.loads(out.read_text())
    env = report["environment"]
    assert (env["world_size"], env["parallel"], env["device"],
            env["gpu_count"]) == (PROCESSES, parallel, "cpu", 0)
    assert report["options"]["train_parallel"] == parallel
    rows = report["training"]
    # Triton: CUDA only
    assert [r["column"] for r in rows] == ["retnet", "transformer_sdpa", "transformer_math"]
    for row in rows:
        assert row["status"] == bench.OK and row["batch"] == BATCH and row["seconds"] > 0
        assert row["tokens_per_second"] == pytest.approx(
            PROCESSES * BATCH * LENGTH / row["seconds"]
        )
    assert f"tiny, float32, {parallel}" in done.stdout and "B per process" in done.stdout


def full_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every weight whole (FSDP's shards gathered: a collective, in the same order in every
    process)."""
    from torch.distributed.tensor import DTensor
    return {name: (p.full_tensor() if isinstance(p, DTensor) else p).detach().clone()
            for name, p in model.named_parameters()}


def local_elements(model: torch.nn.Module) -> int:
    """Weight elements this process holds (its shards under FSDP)."""
    from torch.distributed.tensor import DTensor
    return sum((p.to_local() if isinstance(p, DTensor) else p).numel() for p in model.parameters())


def distributed_steps(out: Path):
    """Under torchrun: one training step of each of STEP_COLUMNS with ddp and with fsdp, its weights
    after the step (whole) and the elements this process holds written to
    out/<column>-<parallel>-<rank>.pt."""
    processes = start_processes(torch.device("cpu"))
    try:
        for parallel in (bench.DDP, bench.FSDP):
            for column in STEP_COLUMNS:
                step_and_save(column, parallel, processes, out)
    finally:
        end_processes(processes)


def step_and_save(column: str, parallel: str, processes: Processes, out: Path):
    """One step of the column's model in DDP or FSDP, saved (the wrapped model, which holds the
    process group, is gone when this returns)."""
    torch.manual_seed(0)
    model, step = bench.training_setup(column, LENGTH, options("--train-parallel", parallel),
                                       processes)
    step()
    torch.save({"weights": full_weights(model), "local_elements": local_elements(model)},
               out / f"{column}-{parallel}-{processes.rank}.pt")


def one_process_step(column: str, ranks: range) -> dict[str, torch.Tensor]:
    """The weights after one step in one process, on the batches the given ranks draw,
    concatenated."""
    kind = bench.TRAINING_COLUMNS[column][0]
    opts = options()
    torch.manual_seed(0)
    model = bench.build_model(kind, dataclasses.replace(opts,
                                                        preset=opts.train_preset))["model"].train()
    tokens = torch.cat([bench.training_tokens(model.config.vocab_size, LENGTH, opts, rank)
                        for rank in ranks])
    bench.training_step(kind, model, tokens, bench.training_optimizer(model, opts.torch_device))()
    return {name: p.detach() for name, p in model.named_parameters()}


# AdamW's first step moves a weight by lr · g / (|g| + eps): a gradient of another batch moves many
# weights by up to 2 lr, while the same gradient summed in another order moves them by rounding,
# most where g is near AdamW's eps (1e-8) and a sum that cancels: measured up to 1.5e-4 lr (RetNet)
# and 4.3e-3 lr (the Transformer's first out_proj); other thread counts round otherwise. Agreement:
# within STEP_ATOL + STEP_RTOL · |weight| (the weight's own float32 rounding), which rank 0's batch
# alone misses 40 times over
STEP_ATOL, STEP_RTOL = 5e-2 * bench.TRAINING_LR, 4 * torch.finfo(torch.float32).eps


def worst_step_error(a: dict, b: dict) -> float:
    """The largest |a - b| / (STEP_ATOL + STEP_RTOL · |b|) over every weight element: below 1
    agrees."""
    return max(float(((a[name] - b[name]).abs() / (STEP_ATOL + STEP_RTOL * b[name].abs())).max())
               for name in a)


@pytest.mark.slow
def test_a_distributed_step_equals_one_process_with_the_global_batch(tmp_path):
    torchrun(PROCESSES, [Path(__file__).resolve(), tmp_path], tmp_path)
    for column in STEP_COLUMNS:
        everyone, first_only = (
            one_process_step(column, range(PROCESSES)),
            one_process_step(column, range(1)),
        )
        assert worst_step_error(first_only, everyone) > 10   # the tolerance tells the batches apart
        total = sum(w.numel() for w in everyone.values())
        for parallel in (bench.DDP, bench.FSDP):
            saved = [torch.load(tmp_path / f"{column}-{parallel}-{rank}.pt", weights_only=True)
                     for rank in range(PROCESSES)]
            for rank, result in enumerate(saved):
                assert worst_step_error(result["weights"], everyone) < 1, (column, parallel, rank)
            held = [result["local_elements"] for result in saved]
            if parallel == bench.DDP:
                assert held == [total] * PROCESSES             # every process holds the whole model
            else:
                assert sum(held) == total and max(held) < 0.6 * total, held  # each holds its shards


# ---------------------------------------------------------------- options


@pytest.mark.parametrize("world, args, message", [
    (None, ["--train-parallel", "fsdp"],
     "--train-parallel fsdp: needs processes started by torchrun"),
    (None, ["--suite", "forms", "--train-parallel", "ddp"],
     "--train-parallel: only with --suite training"),
    ("2", ["--suite", "forms", "training"],
     "--suite forms training: under torchrun with 2 processes only the"),
    ("2", ["--train-parallel", "none"], "--train-parallel none: under torchrun with 2 processes"),
])
def test_options_that_do_not_go_together_are_usage_errors(monkeypatch, capsys, world, args,
                                                          message):
    if world is None:
        monkeypatch.delenv("WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("WORLD_SIZE", world)
    with pytest.raises(SystemExit) as exit_:
        main(["bench", *TRAINING, *args])
    assert exit_.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "usage:" in err and message in err


@pytest.mark.parametrize("world, parallel",
                         [(None, bench.NO_PARALLEL), ("1", bench.DDP), ("2", bench.DDP)])
def test_ddp_is_the_default_under_torchrun_only(monkeypatch, world, parallel):
    if world is None:
        monkeypatch.delenv("WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("WORLD_SIZE", world)
    assert options().train_parallel == parallel


def test_the_help_says_the_batch_is_per_process(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--train-parallel" in text and "sequences per step and process" in text


# ---------------------------------------------------------------- agreeing on what fits


class OtherProcessAnswers(Processes):
    """One of two processes, whose any() answers as the other process's flags say (one a call)."""

    def __init__(self, others: list[bool]):
        super().__init__(rank=0, world=2)
        self.others = others

    def any(self, flag: bool) -> bool:
        return flag or self.others.pop(0)


def test_a_column_another_process_cannot_fit_is_skipped_here_too():
    calls = []
    entry = bench.measure_if_it_fits(0, torch.device("cpu"), lambda: calls.append(1)
                                     or {"status": bench.OK},
                                     OtherProcessAnswers([True]))
    assert entry == {"status": bench.DOES_NOT_FIT,
                     "reason": "does not fit on another process"} and not calls


def test_an_out_of_memory_in_another_process_is_reported_here_too():
    entry = bench.measure_if_it_fits(0, torch.device("cpu"),
                                     lambda: {"status": bench.OK, "seconds": 1.0},
                                     OtherProcessAnswers([False, True]))
    assert entry == {"status": bench.DOES_NOT_FIT, "reason": "out of memory on another process"}


def test_this_process_out_of_memory_tells_the_others(monkeypatch):
    flags = []

    class Recording(OtherProcessAnswers):
        def any(self, flag):
            flags.append(flag)
            return super().any(flag)

    def out_of_memory():
        raise torch.OutOfMemoryError("simulated")

    entry = bench.measure_if_it_fits(0, torch.device("cpu"), out_of_memory,
                                     Recording([False, False]))
    assert entry == {"status": bench.DOES_NOT_FIT,
                     "reason": "out of memory"} and flags == [False, True]


def test_fsdp_estimates_a_shard_of_the_weights_gradients_and_moments_per_process():
    ddp, fsdp = (dataclasses.replace(options(), train_parallel=parallel)
                 for parallel in (bench.DDP, bench.FSDP))
    # weights, gradients, two moments; float32
    copies = 4 * bench.parameter_count("retnet", "tiny") * 4
    estimate = partial(bench.training_memory_estimate, "retnet", LENGTH)
    assert estimate(fsdp, 2) - estimate(fsdp, 4) == pytest.approx(copies / 4, abs=1)
    # ddp: every process holds them whole
    assert estimate(ddp, 2) == estimate(ddp, 4) > estimate(fsdp, 2)


if __name__ == "__main__":
    distributed_steps(Path(sys.argv[1]))

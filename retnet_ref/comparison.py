"""RetNet against the Transformer on the corpus, with the paper's ablations: `python -m retnet_ref
compare`.

A plan is a list of named runs, each a set of `train` options (retnet_ref/train.py). The driver runs
them as separate `python -m retnet_ref train` processes, --parallel at a time (several small models
share one GPU; --gpus spreads them over several), each into <out>/<name>/, then writes
<out>/summary.json and prints a table. Every run of one size sees the same tokens (batch x context x
steps are the size's), the same data order and validation windows, and the same recipe (the train
defaults: AdamW β = (0.9, 0.98), warm-up, cosine decay, gradient clip 2.0); RetNet trains chunkwise.

The plan (PLAN; --plan small keeps size S only, --smoke shrinks everything to run on a CPU in
seconds):
  sizes       S and M: 9,581,056 and 63,218,688 parameters, the same for both models (equal d_model,
              layers, heads: both spend 12 d² + 4 d a layer), context 512, byte tokens
  sweep       size S, each model at each of LEARNING_RATES, seed 0; then size M, each model at
              those of the rates not above its best at S (a larger model takes a smaller rate: the
              Transformer at M trained badly at its best rate at S), seed 0
  main        both models at every size, seeds 0 and 1, each at its best rate at that size (the
              swept rate of lowest final validation loss at the training length, read from the
              sweep's logs), or at --lr-retnet / --lr-transformer (every size)
  ablations   size S, RetNet at its rate, seed 0 (Table 6): no swish gate, no GroupNorm, γ = 1 in
              every head, one γ for all heads (the geometric mean of the default schedule: the γ
              whose decay over any n tokens is the mean log-decay of the heads), and --variant
              official
  every run validates at the training length and at 2x and 4x it (length extrapolation)
--stage all runs sweep, main, ablations in turn; one stage at a time keeps each command short, and
--only NAME... splits a stage further (each size-M run takes minutes on one GPU). A run
that <out> already holds finished, with the same command, is not run again (the main stage's seed-0
runs are the sweep's runs at the chosen rates); a different or unfinished one is an error.

Output, in --out (default build/comparison):
  <name>/log.jsonl                  the run's log (train's output; its checkpoint.pt is deleted once
                                    the run has finished, unless --keep-checkpoints);
                                    <name>/stderr.txt its messages
  <name>/driver.json                the command, its exit status and its seconds (start-up included)
  summary.json                      {"plan", "learning_rates": per size and model the rate and where
                                    it came from, "parameters": per size and model, "runs": per run
                                    its stages (the sweep's seed-0 runs at the chosen rates are main
                                    runs too), size, model, ablation, seed, lr, command, parameters,
                                    tokens, validation_loss and validation_perplexity {"T": final
                                    value} at each validated length T, wall_seconds (the log's),
                                    process_seconds, tokens_per_second (median over steps),
                                    peak_memory_bytes}
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .argtypes import positive_float, positive_int
from .decay import log_gamma_schedule
from .paths import project_root
from .presets import count_parameters
from .train import (
    CHECKPOINT,
    LOG,
    TrainConfig,
    build_model,
    given_config,
)
from .train import (
    add_parser as add_train_parser,
)

MODELS = ("retnet", "transformer")
STAGES = ("sweep", "main", "ablations")
SUMMARY = "summary.json"
DRIVER = "driver.json"
STDERR = "stderr.txt"
POLL_SECONDS = 0.2


@dataclass(frozen=True)
class Size:
    """A model size and its training length: every run of one size sees batch × context × steps
    tokens."""

    d_model: int
    layers: int
    heads: int
    batch: int
    steps: int
    warmup: int
    eval_interval: int


@dataclass(frozen=True)
class Plan:
    """What the comparison runs; the first size is the one swept and ablated."""

    sizes: dict[str, Size]
    context: int = 512
    chunk_size: int = 128
    eval_lengths: tuple[int, ...] = (2, 4)
    eval_batches: int = 8
    # 8e-3 added after the first sweep on an H200: the Transformer's best was its edge, 4e-3
    learning_rates: tuple[float, ...] = (1e-3, 2e-3, 4e-3, 8e-3)
    seeds: tuple[int, ...] = (0, 1)

    @property
    def swept_size(self) -> str:
        return next(iter(self.sizes))


# Steps and batches: S sees 13.1M tokens a run, M 16.4M (the corpus's training split: 9.8M tokens).
# Measured on one H200 (bf16, eager PyTorch), runs sharing it: at S with six, RetNet ≈ 105k
# tokens/s a run (≈ 170 s), the Transformer ≈ 162k (≈ 86 s); at M with two, RetNet ≈ 57k (≈ 360 s),
# the Transformer ≈ 170k (≈ 100 s).
PLAN = Plan(sizes={"S": Size(d_model=256, layers=12, heads=4, batch=32, steps=800, warmup=80,
                             eval_interval=200),
                   "M": Size(d_model=512, layers=20, heads=8, batch=32, steps=1000, warmup=100,
                             eval_interval=250)})
# the same plan in miniature: every run, a few steps of tiny models (a CPU test of the whole driver)
SMOKE_PLAN = Plan(sizes={"S": Size(d_model=32, layers=1, heads=2, batch=4, steps=4, warmup=1,
                                   eval_interval=4),
                         "M": Size(d_model=32, layers=2, heads=2, batch=4, steps=4, warmup=1,
                                   eval_interval=4)},
                  context=32, chunk_size=16, eval_batches=1)


def single_gamma(heads: int) -> float:
    """One γ for all heads: the geometric mean of the default schedule, rounded to 6 places (the
    single γ whose decay γ^n over any n tokens is the mean of the heads' log-decays)."""
    # γ̄ = exp(mean_h log γ_h)
    return round(float(np.exp(log_gamma_schedule(heads).mean())), 6)


def ablation_options(plan: Plan) -> dict[str, tuple[str, ...]]:
    """Table 6's ablations as train options (and torchscale's later block)."""
    heads = plan.sizes[plan.swept_size].heads
    return {"no-swish-gate": ("--no-swish-gate",), "no-group-norm": ("--no-group-norm",),
            "no-decay": ("--gamma", "1"), "single-gamma": ("--gamma", f"{single_gamma(heads)}"),
            "official": ("--variant", "official")}


# ---------------------------------------------------------------- the runs of a plan


@dataclass(frozen=True)
class PlannedRun:
    """One run of a plan: where it belongs and its train options."""

    name: str
    stage: str
    size: str
    model: str
    lr: float
    seed: int
    ablation: str | None
    options: tuple[str, ...]


def planned_run(plan: Plan, stage: str, size: str, model: str, lr: float, seed: int,
                ablation: str | None = None) -> PlannedRun:
    """The run's name says what it is: size, model, ablation, learning rate, seed."""
    s = plan.sizes[size]
    options = ["--model", model, "--d-model", s.d_model, "--layers", s.layers, "--heads", s.heads,
               "--context", plan.context, "--batch", s.batch, "--steps", s.steps, "--warmup",
               s.warmup,
               "--lr", f"{lr:g}", "--seed", seed, "--eval-interval", s.eval_interval,
               "--eval-batches", plan.eval_batches, "--eval-lengths", *plan.eval_lengths]
    if model == "retnet":
        options += ["--chunk-size", plan.chunk_size]
    if ablation is not None:
        options += ablation_options(plan)[ablation]
    name = "-".join([size, model, *([ablation] if ablation else []), f"lr{lr:g}", f"seed{seed}"])
    return PlannedRun(name, stage, size, model, lr, seed, ablation, tuple(map(str, options)))


def sweep_runs(plan: Plan, results: dict[str, dict]) -> list[PlannedRun]:
    """Size S at every rate; each other size at the rates not above each model's best at S, once
    `results` (finished runs by name) holds the sweep at S."""
    swept = [planned_run(plan, "sweep", plan.swept_size, model, lr, 0)
             for model in MODELS for lr in plan.learning_rates]
    best = best_rates(swept, results, plan.context)
    if best is None:
        return swept
    return swept + [planned_run(plan, "sweep", size, model, lr, 0) for size in list(plan.sizes)[1:]
                    for model in MODELS for lr in plan.learning_rates if lr <= best[model]]


def main_runs(plan: Plan, rates: dict[str, dict[str, float]]) -> list[PlannedRun]:
    return [planned_run(plan, "main", size, model, rates[size][model], seed)
            for size in plan.sizes for model in MODELS for seed in plan.seeds]


def ablation_runs(plan: Plan, rates: dict[str, dict[str, float]]) -> list[PlannedRun]:
    lr = rates[plan.swept_size]["retnet"]
    return [planned_run(plan, "ablations", plan.swept_size, "retnet", lr, 0, ablation)
            for ablation in ablation_options(plan)]


def planned_parameters(run: PlannedRun, vocab_size: int = 256) -> int:
    """The run's parameter count: its options read by train's own parser, the model built on the
    meta device."""
    train_parser = add_train_parser(argparse.ArgumentParser().add_subparsers())
    config = TrainConfig(**given_config(train_parser.parse_args(list(run.options))))
    with torch.device("meta"):
        model = build_model(config, vocab_size)
    return count_parameters(model)


# ---------------------------------------------------------------- running them


def train_arguments(run: PlannedRun, out: Path, corpus: str | None,
                    device: str | None) -> list[str]:
    """Everything after `python -m retnet_ref train` for this run."""
    return [*run.options, "--out", str(out / run.name), *(["--corpus", corpus] if corpus else []),
            *(["--device", device] if device else []), "--quiet"]


def shown_path(path: str | Path | None) -> str | None:
    """A path inside the checkout relative to its root (the commands recorded are those run from
    there)."""
    if path is None:
        return None
    try:
        return Path(path).resolve().relative_to(project_root()).as_posix()
    except ValueError:
        return str(path)


def recorded_command(run: PlannedRun, out: Path, corpus: str | None, device: str | None) -> str:
    """The train command as typed at the checkout's root (no interpreter path): what driver.json and
    summary.json keep."""
    arguments = train_arguments(run, Path(shown_path(out)), shown_path(corpus), device)
    return shlex.join(["python", "-m", "retnet_ref", "train", *arguments])


def read_log(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / LOG).read_text().splitlines()]


class RunFolderError(Exception):
    """A run folder in --out that the plan cannot use."""


def run_state(folder: Path, command: str) -> str:
    """"absent" (no log: to run), "finished" (this command's run, up to its last step) or
    "other"."""
    if not (folder / LOG).exists():
        return "absent"
    driver = json.loads((folder / DRIVER).read_text()) if (folder / DRIVER).exists() else {}
    records = read_log(folder)
    steps = records[0]["run"]["config"]["steps"]
    if (
        driver.get("command") == command
        and driver.get("returncode") == 0
        and records[-1].get("step") == steps
    ):
        return "finished"
    return "other"


def child_environment(parallel: int, gpu: int | None) -> dict:
    """The processes share the CPU cores (unless OMP_NUM_THREADS is set) and, with --gpus, one GPU
    each."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // parallel)))
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    return env


def runs_to_start(runs: list[PlannedRun], out: Path, corpus: str | None,
                  device: str | None) -> list[PlannedRun]:
    """The runs without a folder in `out` (those finished there are skipped); RunFolderError where a
    folder holds another or an unfinished run."""
    states = {run.name: run_state(out / run.name, recorded_command(run, out, corpus, device))
              for run in runs}
    other = [name for name, state in states.items() if state == "other"]
    if other:
        raise RunFolderError(f"{', '.join(str(out / name) for name in other)}: another or an "
                             "unfinished run (a different command, a failure, or cut short): "
                             "remove it to run it again, or choose another --out")
    return [run for run in runs if states[run.name] == "absent"]


def execute(runs: list[PlannedRun], out: Path, corpus: str | None, device: str | None,
            parallel: int,
            gpus: int, keep_checkpoints: bool) -> list[str]:
    """Run the runs not yet in `out`, `parallel` at a time, each on the least busy of `gpus` GPUs →
    names that failed. A folder holding another or an unfinished run is an error
    (RunFolderError)."""
    pending = runs_to_start(runs, out, corpus, device)
    active, failed = [], []
    while pending or active:
        while pending and len(active) < parallel:
            run = pending.pop(0)
            busy = [gpu for *_, gpu in active]
            gpu = min(range(gpus), key=busy.count) if gpus > 1 else None
            active.append((run, *start(run, out, corpus, device, parallel, gpu), gpu))
            print(f"started  {run.name}", flush=True)
        time.sleep(POLL_SECONDS)
        for entry in [entry for entry in active if entry[1].poll() is not None]:
            active.remove(entry)
            if not finish(*entry[:4], out, corpus, device, keep_checkpoints):
                failed.append(entry[0].name)
    return failed


def finish(run: PlannedRun, process, started: float, stderr, out: Path, corpus: str | None,
           device: str | None, keep_checkpoints: bool) -> bool:
    """Record an ended train process in its driver.json (and drop its checkpoint) → whether it
    succeeded."""
    stderr.close()
    seconds = time.perf_counter() - started
    record = {"command": recorded_command(run, out, corpus, device),
              "returncode": process.returncode, "process_seconds": seconds}
    (out / run.name / DRIVER).write_text(json.dumps(record, indent=1) + "\n")
    print(f"{'finished' if process.returncode == 0 else 'FAILED  '} {run.name}  {seconds:.1f} s",
          flush=True)
    if process.returncode == 0 and not keep_checkpoints:
        (out / run.name / CHECKPOINT).unlink()
    return process.returncode == 0


def start(run: PlannedRun, out: Path, corpus: str | None, device: str | None, parallel: int,
          gpu: int | None):
    """One train process → (the process, its start time, its open stderr file)."""
    folder = out / run.name
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "retnet_ref", "train",
               *train_arguments(run, out, corpus, device)]
    stderr = (folder / STDERR).open("w")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr,
                               env=child_environment(parallel, gpu))
    return process, time.perf_counter(), stderr


# ---------------------------------------------------------------- results


def run_result(run: PlannedRun, stages: list[str], out: Path) -> dict:
    """The summary entry of a finished run (of these stages): its final validation at every length,
    its costs."""
    folder = out / run.name
    records = read_log(folder)
    header, steps = records[0]["run"], [r for r in records if "step" in r]
    final = steps[-1]
    memory = [r["peak_memory_bytes"] for r in steps if r["peak_memory_bytes"] is not None]
    driver = json.loads((folder / DRIVER).read_text())
    return {
        "stages": stages,
        **{
            k: v
            for k, v in dataclasses.asdict(run).items()
            if k not in ("name", "stage", "options")
        },
        "command": driver["command"],
        "parameters": header["parameters"],
        "tokens": final["tokens"],
        "validation_loss": final["validation_loss_at"],
        "validation_perplexity": final["validation_perplexity_at"],
        "wall_seconds": final["wall_seconds"],
        "process_seconds": driver["process_seconds"],
        "tokens_per_second": statistics.median(r["tokens_per_second"] for r in steps),
        "peak_memory_bytes": max(memory) if memory else None,
    }


def final_loss(result: dict, context: int) -> float:
    """The final validation loss at the training length (a diverged run's NaN counts as +inf)."""
    loss = result["validation_loss"][str(context)]
    return loss if math.isfinite(loss) else math.inf


def best_rates(runs: list[PlannedRun], results: dict[str, dict],
               context: int) -> dict[str, float] | None:
    """Per model, the rate of its run of lowest final validation loss among `runs`; None unless
    `results` holds every one of them."""
    if not runs or any(run.name not in results for run in runs):
        return None
    return {model: min((results[run.name] for run in runs if run.model == model),
                       key=lambda result: final_loss(result, context))["lr"] for model in MODELS}


def sweep_results(plan: Plan, results_of) -> dict[str, dict]:
    """The sweep's finished runs (`results_of` maps planned runs to them): size S's, then those of
    the other sizes that S's results call for."""
    return results_of(sweep_runs(plan, results_of(sweep_runs(plan, {}))))


def best_learning_rates(plan: Plan,
                        results: dict[str, dict]) -> dict[str, dict[str, float]] | None:
    """Per size and model, the swept rate of lowest final validation loss; None while the sweep is
    incomplete."""
    runs = sweep_runs(plan, results)
    best = {size: best_rates([run for run in runs if run.size == size], results, plan.context)
            for size in plan.sizes}
    return None if None in best.values() else best


def learning_rates(plan: Plan, results: dict[str, dict],
                   given: dict[str, float | None]) -> dict[str, dict] | None:
    """Per size and model {"lr", "from"}: the given rate (--lr-MODEL, every size), else the size's
    sweep's best; None if neither is known."""
    best = best_learning_rates(plan, results) if None in given.values() else {}
    if best is None:
        return None
    return {size: {model: {"lr": given[model], "from": f"--lr-{model}"}
                   if given[model] is not None else {"lr": best[size][model], "from": "sweep"}
                   for model in MODELS} for size in plan.sizes}


def finished_results(runs: list[PlannedRun], out: Path, corpus, device) -> dict[str, dict]:
    """The summary entries of the runs that `out` holds finished, each name once with the stages
    that have it (the sweep's seed-0 runs at the chosen rates are main runs too)."""
    stages = {}
    for run in runs:
        stages.setdefault(run.name, []).append(run.stage)
    return {run.name: run_result(run, stages[run.name], out) for run in runs
            if run.stage == stages[run.name][0]
            and run_state(out / run.name, recorded_command(run, out, corpus, device)) == "finished"}


def print_table(plan: Plan, results: dict[str, dict]):
    lengths = [str(plan.context * m) for m in (1, *plan.eval_lengths)]
    header = f"{'run':<44} {'parameters':>11} {'tokens':>11} " + " ".join(f"{'ppl@' + T:>9}"
                                                                          for T in lengths) \
        + f" {'tokens/s':>10} {'wall s':>7}"
    print(header, "-" * len(header), sep="\n")
    for name, r in results.items():
        print(f"{name:<44} {r['parameters']:>11,} {r['tokens']:>11,} "
              + " ".join(f"{r['validation_perplexity'][T]:>9.3f}" for T in lengths)
              + f" {r['tokens_per_second']:>10,.0f} {r['wall_seconds']:>7.1f}")


# ---------------------------------------------------------------- command line


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "compare", help="RetNet vs the Transformer: learning-rate sweep, main pair, ablations "
                        "(summary.json)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--stage", choices=(*STAGES, "all"), default="all",
        help="which runs (default: all, in turn)")
    add("--plan", choices=("full", "small"), default="full",
        help="full: sizes S and M; small: S only (default: full)")
    add("--smoke", action="store_true",
        help="the plan in miniature (tiny models, a few steps): a CPU test")
    add("--learning-rates", type=positive_float, nargs="+", metavar="LR", help="the sweep's rates "
        f"(default: {' '.join(f'{lr:g}' for lr in PLAN.learning_rates)})")
    add("--lr-retnet", type=positive_float, metavar="LR",
        help="RetNet's rate for main and ablations (default: the sweep's best)")
    add("--lr-transformer", type=positive_float, metavar="LR",
        help="the Transformer's rate for main (default: the sweep's best)")
    add("--only", nargs="+", metavar="NAME",
        help="of the stage's runs, only these (names as --dry-run prints them): to split a stage "
        "over several commands")
    add("--parallel", type=positive_int, default=1, metavar="N",
        help="train processes at a time (default: 1)")
    add("--gpus", type=positive_int, default=1, metavar="N",
        help="spread the processes over GPUs 0..N-1 "
        "(default: 1, the processes share the visible devices)")
    add("--out", metavar="DIR",
        help="folder of the runs and summary.json (default: build/comparison)")
    add("--corpus", metavar="DIR",
        help="the prepared corpus, passed to train (default: train's, build/corpus)")
    add("--device", choices=("cpu", "cuda"),
        help="passed to train (default: train's, cuda when available)")
    add("--keep-checkpoints", action="store_true",
        help="keep each run's checkpoint.pt (default: deleted "
        "once the run has finished; the comparison needs the logs only)")
    add("--dry-run", action="store_true",
        help="print the stage's runs, their commands and parameter counts; run nothing")
    parser.set_defaults(func=lambda args: run_command(args, parser))
    return parser


def stage_runs(stage: str, plan: Plan, rates: dict[str, dict] | None,
               results: dict[str, dict]) -> list[PlannedRun]:
    """The runs of one stage (the sweep's as far as `results` says); main and ablations at the rates
    of learning_rates."""
    if stage == "sweep":
        return sweep_runs(plan, results)
    if rates is None:
        raise RunFolderError(f"--stage {stage}: the sweep is not complete in --out, so its best "
                             "learning rates are not known: run --stage sweep first, or give "
                             "--lr-retnet and --lr-transformer")
    chosen = {size: {model: rate["lr"] for model, rate in models.items()}
              for size, models in rates.items()}
    return main_runs(plan, chosen) if stage == "main" else ablation_runs(plan, chosen)


def selected_runs(runs: list[PlannedRun], only: list[str] | None) -> list[PlannedRun]:
    """The runs named in --only (all without it); a name the stage does not have is an error."""
    if only is None:
        return runs
    unknown = sorted(set(only) - {run.name for run in runs})
    if unknown:
        raise RunFolderError(f"--only {' '.join(unknown)}: not a run of this stage, whose runs are "
                             f"{', '.join(run.name for run in runs)}")
    return [run for run in runs if run.name in only]


def every_run(plan: Plan, rates: dict[str, dict] | None,
              results: dict[str, dict]) -> list[PlannedRun]:
    """The plan's runs: the sweep, and main and ablations where the rates are known."""
    later = [] if rates is None else [run for stage in STAGES[1:]
                                      for run in stage_runs(stage, plan, rates, results)]
    return sweep_runs(plan, results) + later


def selected_plan(args) -> Plan:
    """PLAN or SMOKE_PLAN, with size S only for --plan small and the swept rates of
    --learning-rates."""
    plan = SMOKE_PLAN if args.smoke else PLAN
    if args.plan == "small":
        plan = dataclasses.replace(plan, sizes={plan.swept_size: plan.sizes[plan.swept_size]})
    if args.learning_rates:
        plan = dataclasses.replace(plan, learning_rates=tuple(sorted(set(args.learning_rates))))
    return plan


def print_edge_notes(plan: Plan, rates: dict[str, dict] | None):
    """A note for each swept best rate at the top or bottom of the rates tried."""
    for size, models in (rates or {}).items():
        for model, rate in models.items():
            if rate["from"] == "sweep" and rate["lr"] in (min(plan.learning_rates),
                                                          max(plan.learning_rates)):
                print(f"note: {model}'s best rate at {size}, {rate['lr']:g}, is at the edge of the "
                      f"sweep {', '.join(f'{lr:g}' for lr in plan.learning_rates)}: a wider sweep "
                      "may find a better one")


def print_dry_run(runs: list[PlannedRun], out: Path, corpus, device):
    for run in runs:
        print(f"{run.name:<44} {planned_parameters(run):>11,}  "
              f"{recorded_command(run, out, corpus, device)}")


def run_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    plan = selected_plan(args)
    out = Path(args.out) if args.out else project_root() / "build" / "comparison"
    given = {"retnet": args.lr_retnet, "transformer": args.lr_transformer}
    results_of = lambda runs: finished_results(runs, out, args.corpus, args.device)   # noqa: E731
    try:
        failed = [name for stage in (STAGES if args.stage == "all" else (args.stage,))
                  for name in run_stage(stage, args, plan, out, given, results_of)]
    except RunFolderError as err:
        parser.error(str(err))
    if args.dry_run:
        return 0
    write_summary(plan, out, given, results_of)
    if failed:
        print(f"{len(failed)} runs failed (see their {STDERR}): {', '.join(failed)}",
              file=sys.stderr)
        return 1
    return 0


def run_stage(stage: str, args, plan: Plan, out: Path, given: dict, results_of) -> list[str]:
    """Run (or with --dry-run list) one stage's runs → the names that failed."""
    failed = []
    # the sweep twice: size S, then the other sizes at rates that S's results bound
    for _ in range(2 if stage == "sweep" and not args.dry_run else 1):
        swept = sweep_results(plan, results_of)
        rates = learning_rates(plan, swept, given)
        if args.dry_run and stage != "sweep" and rates is None:
            print(f"{stage}: at the sweep's best learning rates, known once it has run")
            continue
        planned = stage_runs(stage, plan, rates, swept)
        runs = selected_runs(planned, args.only)
        if args.dry_run:
            print_dry_run(runs, out, args.corpus, args.device)
            if stage == "sweep" and len(plan.sizes) > 1 and all(run.size == plan.swept_size
                                                                for run in planned):
                print("sweep at the other sizes: at rates bounded by the best at "
                      f"{plan.swept_size}, known once that has run")
        else:
            failed += execute(runs, out, args.corpus, args.device, args.parallel, args.gpus,
                              args.keep_checkpoints)
    return failed


def write_summary(plan: Plan, out: Path, given: dict, results_of):
    """summary.json of every finished run of the plan, and its table on stdout."""
    swept = sweep_results(plan, results_of)
    results = results_of(every_run(plan, learning_rates(plan, swept, given), swept))
    summary = summary_of(plan, results, given)
    (out / SUMMARY).write_text(json.dumps(summary, indent=1) + "\n")
    print_table(plan, results)
    print(f"\nlearning rates: {summary['learning_rates']}\nsummary: {out / SUMMARY}")
    print_edge_notes(plan, summary["learning_rates"])


def summary_of(plan: Plan, results: dict[str, dict], given: dict[str, float | None]) -> dict:
    """summary.json: the plan, the rates used and their source, parameter counts per size, every
    run."""
    parameters = {}
    for r in results.values():
        if r["ablation"] is None:
            parameters.setdefault(r["size"], {})[r["model"]] = r["parameters"]
    return {"plan": dataclasses.asdict(plan),
            "learning_rates": learning_rates(plan, results, given),
            "parameters": parameters, "runs": results}

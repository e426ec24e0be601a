"""Train RetNet or the Transformer baseline on the prepared corpus: `python -m retnet_ref train`.

The corpus is the one `python -m retnet_ref corpus` prepares (retnet_ref/corpus.py): byte tokens,
vocabulary 256. Each step reads --batch random windows of --context + 1 tokens from the training
split (start positions drawn by a generator seeded with --seed) and minimises next-token
cross-entropy (computed in float32). Validation reads fixed windows of the validation split:
consecutive windows of --context + 1 tokens from its start (the last token of one is the first of
the next), --eval-batches × --batch of them or as many as the split holds, every --eval-interval
steps and after the last step. --eval-lengths M... adds validation at M × --context tokens (length
extrapolation): consecutive windows of M × --context + 1 tokens over the same stretch of the split
(1/M as many of them, at least one), RetNet in its training form, the Transformer with its rotary
positions, which take any length (positions beyond --context it has never trained on; it runs
without error, whatever it has learnt there).

The recipe is the paper's where it names one: AdamW with β = (0.9, 0.98), a linear warm-up over
--warmup steps to --lr, then a cosine (or linear) decay to --final-lr-fraction × --lr at the last
step, the gradient norm clipped to --clip (2.0). Weight decay applies to the matrices (embeddings
included), not to the norms' gains. No dropout: neither model has dropout layers. RetNet trains in
its chunkwise form (--chunk-size, default its config's 512) or its parallel form; on CUDA under
bfloat16 autocast.

The paper's ablations (Table 6), RetNet only: --no-swish-gate (MSR(X) = Y W_O, no W_G),
--no-group-norm (no per-head norm), --gamma 1 (no decay: γ = 1 in every head), --gamma G (one γ for
all heads, e.g. 0.98), and --variant official (torchscale's later block).

Output, in --out (a folder):
  log.jsonl       one JSON object a line: first {"run": the configuration, parameter count, corpus,
                  world size, device}, then one per step: step, loss, lr, grad_norm, tokens (seen so
                  far), tokens_per_second (of that step), wall_seconds (since the run began, resumes
                  included), peak_memory_bytes (CUDA; null on the CPU), and at a validation step
                  validation_loss (nats per byte) and validation_perplexity at --context, and
                  validation_loss_at and validation_perplexity_at: {"T": value} for T = --context
                  and each M × --context of --eval-lengths (the header's validation_windows_at: the
                  windows of each T)
  checkpoint.pt   every --checkpoint-interval steps and after the last: weights, optimizer state,
                  step, the data generator's and torch's RNG states, the configuration

--resume continues the run in --out from its checkpoint, with the checkpoint's configuration
(options given again must agree with it): on the CPU the continued run equals an unbroken one bit
for bit (the log is cut back to the checkpoint's step first). Seeded runs on the CPU are
deterministic.

Several processes: `torchrun --nproc_per_node=N -m retnet_ref train ...` trains with PyTorch's
DistributedDataParallel (gloo on the CPU, NCCL on CUDA). --batch is the global batch: every process
draws the same windows and takes its 1/N share of them, so the result equals one process with the
same --batch up to the order of floating-point sums.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .argtypes import non_negative_float, non_negative_int, positive_float, positive_int
from .corpus import CorpusError, load_manifest, load_split
from .decay import GAMMA_SCHEDULES
from .model import VARIANTS, RetNet, RetNetConfig
from .paths import project_root
from .presets import count_parameters
from .processes import Processes, end_processes, process_device, start_processes, world_size
from .transformer import Transformer, TransformerConfig

MODELS = ("retnet", "transformer")
PRESETS = ("tiny", "1.3B", "2.7B", "6.7B")
RETNET_MODES = ("chunkwise", "parallel")
DECAYS = ("cosine", "linear")
BETAS = (0.9, 0.98)
LOG = "log.jsonl"
CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the numbers of a run (stored in its checkpoint and log)."""

    model: str = "retnet"
    preset: str = "tiny"
    d_model: int | None = None
    layers: int | None = None
    heads: int | None = None
    variant: str = "paper"
    gamma: str = "default"
    mode: str = "chunkwise"
    chunk_size: int | None = None
    context: int = 128
    batch: int = 8
    steps: int = 200
    lr: float = 2e-3
    warmup: int = 20
    decay: str = "cosine"
    final_lr_fraction: float = 0.1
    weight_decay: float = 0.01
    clip: float = 2.0
    seed: int = 0
    eval_interval: int = 50
    eval_batches: int = 4
    eval_lengths: tuple[int, ...] = ()
    checkpoint_interval: int = 0
    swish_gate: bool = True
    group_norm: bool = True


RETNET_ONLY = ("variant", "gamma", "mode", "chunk_size", "swish_gate", "group_norm")
# the options of the boolean fields, which switch a default True off
SWITCH_OPTIONS = {"swish_gate": "--no-swish-gate", "group_norm": "--no-group-norm"}
DEFAULTS = TrainConfig()


# ---------------------------------------------------------------- argparse types


def option_of(name: str) -> str:
    """The command-line option of a TrainConfig field."""
    return SWITCH_OPTIONS.get(name, f"--{name.replace('_', '-')}")


def length_multiple(text: str) -> int:
    """argparse type: a multiple of --context longer than it, an integer >= 2."""
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError("expected an integer >= 2 (a multiple of --context; 1 is "
                                         f"--context itself, always validated), got {value}")
    return value


def unit_fraction(text: str) -> float:
    """argparse type: a number in [0, 1]."""
    value = non_negative_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {value}")
    return value


def gamma_option(text: str) -> str:
    """argparse type: a γ schedule name, one γ for every head, or one per head separated by
    commas."""
    if text in GAMMA_SCHEDULES:
        return text
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {' or '.join(GAMMA_SCHEDULES)}, a number in "
                                         "(0, 1] or comma-separated numbers, "
                                         f"got {text!r}") from None
    if not all(0.0 < g <= 1.0 for g in values):
        raise argparse.ArgumentTypeError(f"every γ must lie in (0, 1], got {text!r}")
    return text


def gamma_value(text: str, num_heads: int):
    """The RetNetConfig gamma of a --gamma option: a schedule name, or one float per head."""
    if text in GAMMA_SCHEDULES:
        return text
    values = tuple(float(part) for part in text.split(","))
    return values * num_heads if len(values) == 1 else values


# ---------------------------------------------------------------- models


def _size_overrides(config: TrainConfig, vocab_size: int) -> dict:
    sizes = {"vocab_size": vocab_size, "d_model": config.d_model, "num_layers": config.layers,
             "num_heads": config.heads}
    return {name: value for name, value in sizes.items() if value is not None}


def retnet_config(config: TrainConfig, vocab_size: int) -> RetNetConfig:
    chunk = {} if config.chunk_size is None else {"chunk_size": config.chunk_size}
    base = RetNetConfig.preset(config.preset, variant=config.variant, swish_gate=config.swish_gate,
                               group_norm=config.group_norm, **_size_overrides(config, vocab_size),
                               **chunk)
    return dataclasses.replace(base, gamma=gamma_value(config.gamma, base.num_heads))


def build_model(config: TrainConfig, vocab_size: int) -> nn.Module:
    """The model of the configuration, its weights drawn from torch's global generator."""
    if config.model == "retnet":
        return RetNet(retnet_config(config, vocab_size))
    return Transformer(TransformerConfig.preset(config.preset,
                                                **_size_overrides(config, vocab_size)))


def logits_of(model: nn.Module, config: TrainConfig, chunk_size: int | None,
              inputs: torch.Tensor) -> torch.Tensor:
    """(B, T) tokens → (B, T, V) logits, RetNet in the configured form."""
    if config.model == "retnet":
        return model(inputs, config.mode, chunk_size if config.mode == "chunkwise" else None)[0]
    return model(inputs)[0]


def chunk_size_of(model: nn.Module) -> int | None:
    return model.config.chunk_size if isinstance(model, RetNet) else None


# ---------------------------------------------------------------- data


class TrainWindows:
    """Random windows of context + 1 tokens from the training split; the generator is the data
    position."""

    def __init__(self, tokens: torch.Tensor, context: int, seed: int):
        self.tokens, self.context = tokens, context
        self.generator = torch.Generator().manual_seed(seed)

    def next_batch(self, batch: int) -> torch.Tensor:
        """(batch, context + 1) long: windows starting anywhere a whole window fits."""
        starts = torch.randint(0, self.tokens.numel() - self.context, (batch,),
                               generator=self.generator)
        return self.tokens[starts[:, None] + torch.arange(self.context + 1)].long()


def validation_windows(tokens: torch.Tensor, context: int, count: int) -> torch.Tensor:
    """The first `count` (or all) consecutive windows of context + 1 tokens: (N, context + 1)
    long."""
    available = (tokens.numel() - 1) // context
    n = min(count, available)
    starts = torch.arange(n) * context
    return tokens[starts[:, None] + torch.arange(context + 1)].long()


def validation_lengths(config: TrainConfig) -> list[int]:
    """The window lengths validated: --context, then each --eval-lengths multiple of it."""
    return [config.context * m for m in (1, *config.eval_lengths)]


def validation_sets(tokens: torch.Tensor, config: TrainConfig) -> dict[int, torch.Tensor]:
    """Length T → its validation windows (N_T, T + 1): N at --context, N // M (at least 1) at M ×
    --context, so that every length reads about the same stretch of the split."""
    count = config.eval_batches * config.batch
    windows = validation_windows(tokens, config.context, count)
    sets = {config.context: windows}
    for m in config.eval_lengths:
        sets[config.context * m] = validation_windows(tokens, config.context * m,
                                                      max(1, windows.shape[0] // m))
    return sets


def shard(rows: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """This process's contiguous 1/world share of the rows (rows divisible by world)."""
    per = rows.shape[0] // world
    return rows[rank * per:(rank + 1) * per]


# ---------------------------------------------------------------- the recipe


def learning_rate(config: TrainConfig, step: int) -> float:
    """The learning rate of step (0-based): linear warm-up to lr, then cosine or linear decay
    reaching final_lr_fraction · lr at the last step."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    final = config.final_lr_fraction * config.lr
    span = config.steps - 1 - config.warmup
    progress = 1.0 if span <= 0 else (step - config.warmup) / span
    if config.decay == "cosine":
        return final + (config.lr - final) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return config.lr - (config.lr - final) * progress


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW, β = (0.9, 0.98); weight decay on the matrices only (not on 1-D norm gains)."""
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    vectors = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": matrices, "weight_decay": config.weight_decay},
              {"params": vectors, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=BETAS)


def next_token_loss(model, config, chunk_size, windows: torch.Tensor,
                    reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of windows[:, 1:] given windows[:, :-1], in float32."""
    logits = logits_of(model, config, chunk_size, windows[:, :-1])
    return F.cross_entropy(logits.float().flatten(0, 1), windows[:, 1:].flatten(),
                           reduction=reduction)


# ---------------------------------------------------------------- one run


@dataclass
class Run:
    """The state of a run that a checkpoint holds and a resume restores."""

    config: TrainConfig
    model: nn.Module
    optimizer: torch.optim.Optimizer
    windows: TrainWindows
    corpus_sha256: str
    step: int = 0
    tokens_seen: int = 0
    elapsed: float = 0.0

    def checkpoint(self) -> dict:
        return {"format": CHECKPOINT_FORMAT, "config": dataclasses.asdict(self.config),
                "step": self.step,
                "tokens_seen": self.tokens_seen, "elapsed": self.elapsed,
                "corpus_sha256": self.corpus_sha256,
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "data_rng": self.windows.generator.get_state(), "torch_rng": torch.get_rng_state()}

    def restore(self, saved: dict):
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.windows.generator.set_state(saved["data_rng"])
        torch.set_rng_state(saved["torch_rng"])
        self.step, self.tokens_seen, self.elapsed = (
            saved["step"],
            saved["tokens_seen"],
            saved["elapsed"],
        )


def save_checkpoint(run: Run, out: Path):
    """Written to a temporary name and renamed: an interrupted save leaves the last checkpoint
    whole."""
    partial = out / (CHECKPOINT + ".partial")
    torch.save(run.checkpoint(), partial)
    os.replace(partial, out / CHECKPOINT)


def peak_memory(device: torch.device) -> int | None:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def autocast(device: torch.device):
    """bfloat16 autocast on CUDA; on the CPU float32 throughout."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


@torch.no_grad()
def validation_loss(model, config, chunk_size, windows: torch.Tensor, processes: Processes,
                    device) -> float:
    """Mean cross-entropy (nats per token) over every target of the windows, shared between
    processes; the windows go through the model about --batch × --context tokens at a time (fewer
    rows when longer)."""
    model.eval()
    mine = windows[processes.rank::processes.world]
    rows = max(1, config.batch * config.context // (windows.shape[1] - 1))
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    for batch in mine.split(rows):
        with autocast(device):
            loss_sum += next_token_loss(model, config, chunk_size, batch.to(device), "sum").double()
    model.train()
    targets = windows.shape[0] * (windows.shape[1] - 1)
    return float(processes.total(loss_sum)) / targets


def validation_record(model, config, chunk_size, validation: dict, processes: Processes,
                      device) -> dict:
    """The log's validation entries: at --context, and at every validated length T."""
    losses = {str(T): validation_loss(model, config, chunk_size, windows, processes, device)
              for T, windows in validation.items()}
    at_context = losses[str(config.context)]
    return {"validation_loss": at_context, "validation_perplexity": math.exp(at_context),
            "validation_loss_at": losses,
            "validation_perplexity_at": {T: math.exp(loss) for T, loss in losses.items()}}


def train_step(run: Run, trained: nn.Module, batch: torch.Tensor, chunk_size,
               device) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on this process's windows → (loss, gradient norm before clipping)."""
    lr = learning_rate(run.config, run.step)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    run.optimizer.zero_grad(set_to_none=True)
    with autocast(device):
        loss = next_token_loss(trained, run.config, chunk_size, batch)
    loss.backward()
    grad_norm = nn.utils.clip_grad_norm_(trained.parameters(), run.config.clip)
    run.optimizer.step()
    return loss.detach(), grad_norm.detach()


def step_record(run: Run, trained: nn.Module, processes: Processes, device: torch.device,
                chunk_size: int | None) -> dict:
    """One optimiser step on the next batch (this process's shard of it) → its log record, before
    validation."""
    config = run.config
    step_start = time.perf_counter()
    batch = shard(run.windows.next_batch(config.batch), processes.rank, processes.world).to(device)
    loss, grad_norm = train_step(run, trained, batch, chunk_size, device)
    loss = float(processes.mean(loss))
    seconds = time.perf_counter() - step_start
    run.step += 1
    run.tokens_seen += config.batch * config.context
    return {"step": run.step, "loss": loss, "lr": learning_rate(config, run.step - 1),
            "grad_norm": float(grad_norm), "tokens": run.tokens_seen,
            "tokens_per_second": config.batch * config.context / seconds,
            "peak_memory_bytes": peak_memory(device)}


def train(run: Run, trained: nn.Module, validation: dict[int, torch.Tensor], processes: Processes,
          device: torch.device,
          out: Path, progress, until_step: int | None = None) -> None:
    """Steps from run.step to config.steps (or to until_step, where a checkpoint is written): log,
    validate (validation: validation_sets), checkpoint."""
    last = run.config.steps if until_step is None else min(until_step, run.config.steps)
    config, chunk_size = run.config, chunk_size_of(run.model)
    log = (out / LOG).open("a") if processes.main else None
    started = time.perf_counter() - run.elapsed
    try:
        while run.step < last:
            record = step_record(run, trained, processes, device, chunk_size)
            if run.step % config.eval_interval == 0 or run.step == config.steps:
                record.update(validation_record(run.model, config, chunk_size, validation,
                                                processes, device))
            run.elapsed = time.perf_counter() - started
            record["wall_seconds"] = run.elapsed
            if log is not None:
                log.write(json.dumps(record) + "\n")
                log.flush()
                progress(record)
            every = config.checkpoint_interval
            if processes.main and (run.step == last or every and run.step % every == 0):
                save_checkpoint(run, out)
    finally:
        if log is not None:
            log.close()


# ---------------------------------------------------------------- command line


def _help(name: str, text: str, default: str | None = None) -> str:
    """text with TrainConfig's default (or `default`, where the field's None means something
    else)."""
    return f"{text} (default: {getattr(DEFAULTS, name) if default is None else default})"


def add_parser(subparsers) -> argparse.ArgumentParser:
    """The `train` subcommand; options left out take TrainConfig's defaults (or, with --resume, the
    checkpoint's), so that a resumed run can tell the options given from those implied."""
    parser = subparsers.add_parser(
        "train", help="train RetNet or the Transformer on the prepared corpus (JSON log, "
                      "checkpoint, --resume)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS)
    add = parser.add_argument
    add("--model", choices=MODELS, help=_help("model", "which model"))
    add("--preset", choices=PRESETS, help=_help("preset",
                                                "the model's sizes, as RetNetConfig.preset and "
        "TransformerConfig.preset (equal presets, equal parameter budgets); the vocabulary is the "
        "corpus's"))
    add("--d-model", type=positive_int, metavar="D",
        help=_help("d_model", "d_model", "the preset's"))
    add("--layers", type=positive_int, metavar="L", help=_help("layers", "layers", "the preset's"))
    add("--heads", type=positive_int, metavar="H", help=_help("heads", "heads", "the preset's"))
    add("--variant", choices=VARIANTS, help=_help(
        "variant", "RetNet only: the paper's block or torchscale's later one"))
    add("--gamma", type=gamma_option, metavar="G", help=_help(
        "gamma", "RetNet only: the heads' decays: " + ", ".join(GAMMA_SCHEDULES)
        + ", one number in (0, 1] for every head (1: no decay; one value: a single γ, two of the "
        "paper's ablations) or one per head, comma-separated"))
    add("--mode", choices=RETNET_MODES, help=_help("mode", "RetNet only: the form it trains in"))
    add("--chunk-size", type=positive_int, metavar="C", help=_help(
        "chunk_size", "RetNet only: chunk length of the chunkwise form", "the config's, 512"))
    add("--context", type=positive_int, metavar="T",
        help=_help("context", "tokens a window predicts"))
    add("--batch", type=positive_int, metavar="B", help=_help(
        "batch", "windows per step, over all processes (divisible by their number)"))
    add("--steps", type=positive_int, metavar="N", help=_help("steps", "optimizer steps"))
    add("--lr", type=positive_float, help=_help("lr", "peak learning rate"))
    add("--warmup", type=non_negative_int, metavar="N", help=_help(
        "warmup", "steps of linear warm-up (at most --steps)"))
    add("--decay", choices=DECAYS, help=_help("decay", "learning-rate decay after the warm-up"))
    add("--final-lr-fraction", type=unit_fraction, metavar="F", help=_help(
        "final_lr_fraction", "learning rate of the last step, as a fraction of --lr"))
    add("--weight-decay", type=non_negative_float, metavar="W",
        help=_help("weight_decay", "AdamW's weight decay"))
    add("--clip", type=positive_float, help=_help("clip", "largest gradient norm (clipped beyond)"))
    add("--seed", type=non_negative_int,
        help=_help("seed", "seed of the weights and of the training windows"))
    add("--eval-interval", type=positive_int, metavar="N", help=_help(
        "eval_interval", "steps between validations (also after the last step)"))
    add("--eval-batches", type=positive_int, metavar="N", help=_help(
        "eval_batches", "validation windows = N x --batch (fewer if the split is shorter)"))
    add(
        "--eval-lengths",
        type=length_multiple,
        nargs="+",
        metavar="M",
        help=_help(
            "eval_lengths",
            "length extrapolation: also validate at M x --context tokens for each M (e.g. 2 4; "
            "RetNet in its training form, the Transformer's rotary positions past --context "
            "untrained)",
            "none",
        ),
    )
    add(
        "--no-swish-gate",
        dest="swish_gate",
        action="store_const",
        const=False,
        help=(
            "RetNet only: the paper's \"- swish gate\" ablation (Table 6): MSR(X) = Y W_O, without "
            "W_G"
        ),
    )
    add("--no-group-norm", dest="group_norm", action="store_const", const=False, help=(
        "RetNet only: the paper's \"- GroupNorm\" ablation (Table 6): no per-head norm of the "
        "retention heads"))
    add("--checkpoint-interval", type=non_negative_int, metavar="N", help=_help(
        "checkpoint_interval", "steps between checkpoints (0: only after the last step)"))
    add("--out", metavar="DIR",
        help="folder of the run: log.jsonl and checkpoint.pt (default: build/train)")
    add("--corpus", metavar="DIR",
        help="the prepared corpus (default: build/corpus; `python -m retnet_ref corpus`)")
    add("--device", choices=("cpu", "cuda"),
        help="where to train (default: cuda when available, else cpu)")
    add("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    add("--until-step", type=positive_int, metavar="N",
        help="stop after step N with a checkpoint, the learning-rate schedule still that of "
        "--steps (continue later with --resume; default: --steps)")
    add("--quiet", action="store_true", help="no progress lines on stderr")
    parser.set_defaults(func=lambda args: run_command(args, parser))
    return parser


def given_config(args: argparse.Namespace) -> dict:
    """The TrainConfig fields given on the command line (--eval-lengths sorted, without repeats)."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
             if hasattr(args, f.name)}
    if "eval_lengths" in given:
        given["eval_lengths"] = tuple(sorted(set(given["eval_lengths"])))
    return given


def check_config(config: TrainConfig, given: dict, parser: argparse.ArgumentParser):
    """What argparse cannot check alone (usage errors, exit status 2)."""
    if config.model == "transformer":
        misplaced = [option_of(name) for name in RETNET_ONLY if name in given]
        if misplaced:
            parser.error(f"{', '.join(misplaced)}: RetNet only, not for --model transformer")
    if config.mode == "parallel" and "chunk_size" in given:
        parser.error("--chunk-size: only with --mode chunkwise")
    if config.warmup > config.steps:
        parser.error(f"--warmup ({config.warmup}) must be at most --steps ({config.steps})")
    if config.batch % world_size():
        parser.error(f"--batch ({config.batch}) must be divisible by the number of processes "
                     f"({world_size()})")


def check_model(config: TrainConfig, vocab_size: int, parser: argparse.ArgumentParser):
    """Build the configuration (on the meta device: no memory) to turn a bad size into a usage
    error."""
    try:
        with torch.device("meta"):
            build_model(config, vocab_size)
    except (ValueError, TypeError) as err:
        parser.error(f"model sizes (--preset, --d-model, --layers, --heads, --gamma): {err}")


def disagreement(name: str, given, saved) -> str:
    """An option given with --resume that differs from the checkpoint's, e.g. "--lr 0.5 (the
    checkpoint has 0.002)"."""
    if name in SWITCH_OPTIONS:
        return f"{SWITCH_OPTIONS[name]} (the checkpoint has {name}={saved})"
    return f"{option_of(name)} {given} (the checkpoint has {saved})"


def resumed_config(out: Path, given: dict,
                   parser: argparse.ArgumentParser) -> tuple[TrainConfig, dict]:
    path = out / CHECKPOINT
    if not path.is_file():
        parser.error(f"--resume: {path} does not exist (nothing to resume in --out {out})")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if saved.get("format") != CHECKPOINT_FORMAT:
        parser.error(f"--resume: {path} has checkpoint format {saved.get('format')!r}, expected "
                     f"{CHECKPOINT_FORMAT}")
    config = TrainConfig(**saved["config"])
    differ = [disagreement(name, value, getattr(config, name))
              for name, value in given.items() if getattr(config, name) != value]
    if differ:
        parser.error("--resume continues the checkpoint's configuration; these options differ: "
                     + "; ".join(differ))
    return config, saved


def read_corpus(folder: Path, config: TrainConfig, parser) -> tuple[dict, torch.Tensor,
                                                                    torch.Tensor]:
    try:
        manifest = load_manifest(folder)
        train_tokens, validation_tokens = (torch.from_numpy(load_split(folder, split, manifest))
                                           for split in ("train", "validation"))
    except CorpusError as err:
        parser.error(f"--corpus: {err}")
    for split, tokens in (("train", train_tokens), ("validation", validation_tokens)):
        if tokens.numel() < config.context + 2:
            parser.error(f"--context {config.context}: the {split} split holds only "
                         f"{tokens.numel()} tokens, too few for one window of context + 1")
    longest = max(validation_lengths(config))
    if validation_tokens.numel() < longest + 1:
        parser.error(f"--eval-lengths {max(config.eval_lengths)}: the validation split holds only "
                     f"{validation_tokens.numel()} tokens, too few for one window of {longest} + 1")
    return manifest, train_tokens, validation_tokens


def cut_log(path: Path, step: int):
    """Keep the header and the records of steps up to `step` (a resume continues from there)."""
    records = [json.loads(line) for line in path.read_text().splitlines()]
    kept = [record for record in records if record.get("step", 0) <= step]
    path.write_text("".join(json.dumps(record) + "\n" for record in kept))


def run_header(config: TrainConfig, model: nn.Module, manifest: dict,
               validation: dict[int, torch.Tensor],
               processes: Processes, device: torch.device) -> dict:
    return {"run": {"config": dataclasses.asdict(config),
                    "model_config": dataclasses.asdict(model.config),
                    "parameters": count_parameters(model),
                    "corpus": {"source": manifest["source"], "licence": manifest["licence"]["spdx"]
                               if manifest.get("licence") else None,
                               "train_tokens": manifest["splits"]["train"]["tokens"],
                               "validation_tokens": manifest["splits"]["validation"]["tokens"]},
                    "validation_windows": validation[config.context].shape[0],
                    "validation_windows_at": {str(T): windows.shape[0] for T,
                                              windows in validation.items()},
                    "world_size": processes.world,
                    "device": device.type, "torch": torch.__version__}}


PROGRESS_EVERY = 10


def print_progress(record: dict):
    """One line on stderr for the first step, every PROGRESS_EVERY steps and each validation."""
    if record["step"] % PROGRESS_EVERY and record["step"] != 1 and "validation_loss" not in record:
        return
    line = (f"step {record['step']:>6}  loss {record['loss']:.4f}  lr {record['lr']:.2e}  "
            f"{record['tokens_per_second']:,.0f} tokens/s  {record['wall_seconds']:.1f} s")
    if "validation_loss" in record:
        line += (f"  validation {record['validation_loss']:.4f} "
                 f"(perplexity {record['validation_perplexity']:.2f})")
        longer = list(record["validation_loss_at"].items())[1:]
        line += "".join(f"  at {T}: {loss:.4f}" for T, loss in longer)
    print(line, file=sys.stderr, flush=True)


def config_to_run(args, out: Path, parser) -> tuple[TrainConfig, dict | None]:
    """The options given, checked → (config, the checkpoint's saved run with --resume, else None);
    without --resume, --out must not hold a run already."""
    given = given_config(args)
    saved = None
    if getattr(args, "resume", False):
        config, saved = resumed_config(out, given, parser)
    else:
        if (out / LOG).exists() or (out / CHECKPOINT).exists():
            parser.error(f"--out {out} already holds a run: pass --resume to continue it, or "
                         "choose another folder")
        config = TrainConfig(**given)
    check_config(config, given, parser)
    return config, saved


def run_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    root = project_root()
    out = Path(getattr(args, "out", None) or root / "build" / "train")
    corpus_folder = Path(getattr(args, "corpus", None) or root / "build" / "corpus")
    device_name = getattr(args, "device", None) or ("cuda" if torch.cuda.is_available() else "cpu")
    if device_name == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    quiet = getattr(args, "quiet", False)
    config, saved = config_to_run(args, out, parser)
    manifest, train_tokens, validation_tokens = read_corpus(corpus_folder, config, parser)
    corpus_sha256 = manifest["splits"]["train"]["sha256"]
    if saved is not None and saved["corpus_sha256"] != corpus_sha256:
        parser.error(f"--resume: the corpus in {corpus_folder} is not the one this run was trained "
                     "on")
    check_model(config, manifest["vocab_size"], parser)

    processes = start_processes(process_device(device_name))
    try:
        # in a function of its own: the model wrapped in DDP, which holds the process group, is
        # gone when it returns, before the group ends
        train_in_processes(config, manifest, train_tokens, validation_tokens, saved, processes, out,
                           (lambda record: None) if quiet else print_progress,
                           getattr(args, "until_step", None))
    finally:
        end_processes(processes)
    return 0


def train_in_processes(config: TrainConfig, manifest: dict, train_tokens, validation_tokens,
                       saved: dict | None, processes: Processes, out: Path, progress,
                       until_step: int | None) -> None:
    """Build (or restore) the run, write the log's header (first process) and train."""
    device = processes.device
    torch.manual_seed(config.seed)
    model = build_model(config, manifest["vocab_size"]).to(device)
    run = Run(config, model, make_optimizer(model, config),
              TrainWindows(train_tokens, config.context, config.seed),
              manifest["splits"]["train"]["sha256"])
    validation = validation_sets(validation_tokens, config)
    if processes.main:
        out.mkdir(parents=True, exist_ok=True)
    if saved is not None:
        run.restore(saved)
        if processes.main:
            cut_log(out / LOG, run.step)
    elif processes.main:
        header = run_header(config, model, manifest, validation, processes, device)
        (out / LOG).write_text(json.dumps(header) + "\n")
    trained = model
    if processes.world > 1:
        from torch.nn.parallel import DistributedDataParallel
        trained = DistributedDataParallel(model, device_ids=[device.index]
                                          if device.type == "cuda" else None)
    train(run, trained, validation, processes, device, out, progress, until_step)

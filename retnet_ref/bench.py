"""Measure RetNet's cost claims against plain PyTorch: `python -m retnet_ref bench` (one process;
the training suite also on several GPUs under torchrun).

Five suites, each printed as a table with ratios and written to JSON (--out); every column of a
comparison is measured in the same run, on the same device, with the same inputs.

forms   Retention over a fixed number of tokens B·T, for several lengths T (B = tokens // T),
        forward and forward+backward: the chunkwise form at each chunk size (and the best of them),
        the parallel form, our Triton kernels (retnet_ref.kernels, on CUDA) at each tile height,
        PyTorch's scaled_dot_product_attention with is_causal=True (flash attention on a GPU: the
        quadratic baseline) and fla's chunk_retention when fla imports. Linear cost means
        a flat time per token as T grows; the table gives max/min of it across T. The fused
        kernels (ours, SDPA's, fla's) are also replayed as CUDA graphs, which leaves their GPU
        time without the launches, beside the bytes floor of the pass (q, k, v read and o written
        once; the backward also the cotangent of o read and dq, dk, dv written).
decode  One decode step of the heads of one layer with the state given: recurrent_retention at T = 1
        (eager, and replayed as a CUDA graph), our fused Triton step (the normalised step of a
        layer, on CUDA) and fla's fused_recurrent_retention, against one query
        of SDPA over a KV cache at several context lengths. Each row has the bytes the step must
        move (state read and written, or the cache read) and the floor those bytes set at the
        measured copy bandwidth.
model   One decode step of a whole language model with random weights: RetNet (a fixed-size state)
        (a fixed-size state; on CUDA also with backend "triton": the fused step, "retnet_triton")
        against the Transformer baseline of the same preset (a KV cache) at several contexts; ms per
        step, tokens/s, memory, and the memory floor (weights, plus the state read and written or
        the cache read and the new entry written, at the copy bandwidth). RetNet's step time should
        not depend on the context: the table says whether it is flat (max/min across contexts).
inference  The paper's inference comparison (Fig. 6) for each of --presets, both models: a prefill
        of each prompt length at --batch (RetNet chunkwise, the Transformer with causal SDPA; only
        the last position's logits), then a decode step at that context: prefill time, decode
        tokens/s, peak memory (all that is allocated, weights included) and the state or KV cache;
        then a decode step at --latency-length for each of --latency-batches, which also gives the
        largest batch each model fits. The summary gives RetNet/Transformer ratios at the longest
        length both fit.
training  The paper's training cost (Table 4): one step (forward, backward, AdamW) of
        --train-preset at each of --train-lengths: RetNet chunkwise (its preset's chunk size, 512)
        and on the Triton kernels, the Transformer with SDPA (flash attention on a GPU) and with
        SDPA's math kernel; tokens/s and peak memory, and each over RetNet's.
        Under torchrun (`torchrun --nproc_per_node=N -m retnet_ref bench --suite training ...`; gloo
        on the CPU, NCCL on CUDA, each process on its GPU cuda:<LOCAL_RANK>) every process steps on
        its own --train-batch sequences, each column's model in PyTorch's DistributedDataParallel
        (--train-parallel ddp, the default: every GPU holds the whole model) or sharded by FSDP
        (fsdp: fully_shard on each block and on the whole model; weights, gradients and AdamW's
        moments 1/N a GPU, for a model that does not fit one). tokens/s are those of the global
        batch, N x --train-batch x T, in the step time, which is the largest of the processes'
        median steps; peak memory is the largest process's. The processes agree on every column:
        each checks its own memory and all measure it or none, and an out-of-memory in one is
        reported by all (an all_reduce after the column). An out-of-memory that strikes one process
        inside a collective the others are waiting in (a gradient all-reduce) leaves them waiting
        until the process group's timeout ends the run. Only the first process prints the table and
        writes the JSON; its environment gives world_size, parallel and gpu_count.

How a time is taken (Timer): the callable runs a few times untimed (warm-up), then each timed call
runs alone and the median is reported. On CUDA, before each timed call the L2 cache is flushed (a
256 MiB write) and the device synchronised, and CUDA events bracket the call: a time is the latency
of one call from an idle GPU reading its inputs from HBM, launch overhead included (which is what a
CUDA graph removes). On the CPU, time.perf_counter brackets the call.

A configuration whose memory estimate exceeds the free memory (less a margin), or that runs out of
memory anyway, is reported as "does not fit" and the run continues. Sizes default to the GPU sizes
on CUDA and to a small smoke run on the CPU.

JSON (--out): {"environment": versions, device, driver, copy bandwidth, date, command line,
processes; "options": every setting; "forms" / "decode" / "model" / ...: one list of rows per suite
run, the table's rows with every entry as {"status", "seconds" or "reason"}; "summary": the flatness
verdicts}. Times are in seconds, sizes in bytes.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import platform
import shlex
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import kernels
from .argtypes import positive_int
from .decay import gamma_schedule
from .generation import capture_cuda_graph
from .memory import available_bytes
from .model import RetNet, RetNetConfig
from .normalisation import step_decay_factors
from .presets import count_parameters
from .processes import (
    Processes,
    end_processes,
    process_device,
    start_processes,
    under_torchrun,
    world_size,
)
from .results import seconds_of
from .retention import chunkwise_retention, parallel_retention, recurrent_retention
from .state import RetentionState
from .transformer import Transformer, TransformerConfig

SUITES = ("forms", "decode", "model", "inference", "training")
# inference and training: long on a GPU, asked for by name
DEFAULT_SUITES = ("forms", "decode", "model")
PRESETS = ("tiny", "1.3B", "2.7B", "6.7B")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MODELS = ("retnet", "transformer")
FORWARD, FORWARD_BACKWARD = "fwd", "fwd+bwd"
NO_PARALLEL, DDP, FSDP = "none", "ddp", "fsdp"
TRAIN_PARALLEL = (DDP, FSDP, NO_PARALLEL)

MiB, GiB = 2 ** 20, 2 ** 30
FLUSH_BYTES = 256 * MiB              # larger than any GPU's L2 cache
COPY_BYTES = {"cuda": GiB, "cpu": 64 * MiB}  # the copy that measures the bandwidth
MEMORY_MARGIN_BYTES = GiB            # kept free beyond every estimate (workspaces, allocator slack)
MEMORY_ESTIMATE_SLACK = 1.1          # estimates are multiplied by this before comparing
CAPTURE_WARMUP = 3                   # eager runs on a side stream before a CUDA graph capture
FLAT_MAX_OVER_MIN = 1.1              # a time whose max/min across lengths is at most this is "flat"
# float32 (B, H, T, T) score-sized buffers the parallel form holds at once (an estimate: forward,
# the float32 scores and their bfloat16 copies; backward adds the saved scores and their gradient)
PARALLEL_SCORE_BUFFERS = {FORWARD: 2, FORWARD_BACKWARD: 3}

OK, DOES_NOT_FIT, UNAVAILABLE, CAPTURE_FAILED, COMPILE_FAILED = (
    "ok",
    "does not fit",
    "unavailable",
    "capture failed",
    "compile failed",
)

# option: (default on cuda, default on cpu); the CPU defaults are a smoke run of a few seconds
DEVICE_DEFAULTS = {
    "dtype": ("bfloat16", "float32"),
    "tokens": (65536, 4096),
    "lengths": ([1024, 4096, 16384], [256, 1024]),
    "heads": (8, 2),
    "head_dim": (128, 32),
    "chunk_sizes": ([64, 128, 256, 512], [32, 64, 128]),
    "compile_chunk_sizes": ([128, 256], [32]),
    "triton_chunk_sizes": ([64, 128], [32]),
    "presets": (["1.3B", "6.7B"], ["tiny"]),
    "inference_lengths": ([1024, 2048, 4096, 8192, 16384, 32768], [32, 64, 128]),
    "latency_batches": ([1, 2, 4, 8, 16, 32, 64], [1, 2, 4]),
    "latency_length": (8192, 64),
    "prefill_repeats": (3, 2),
    "train_preset": ("1.3B", "tiny"),
    "train_lengths": ([2048, 8192], [32, 64]),
    "train_batch": (2, 2),
    "batch": (8, 2),
    "decode_heads": (16, 4),
    "decode_head_dim": (128, 32),
    "contexts": ([2048, 8192, 32768], [128, 512, 2048]),
    "preset": ("6.7B", "tiny"),
    "warmup": (3, 2),
    "repeats": (20, 5),
    "steps": (50, 10),
}


# ---------------------------------------------------------------- options


@dataclass(frozen=True)
class Options:
    """Every setting of a run, after the device-dependent defaults are filled in (recorded in the
    JSON)."""

    suites: tuple
    device: str
    dtype: str
    tokens: int
    lengths: tuple
    heads: int
    head_dim: int
    chunk_sizes: tuple
    batch: int
    decode_heads: int
    decode_head_dim: int
    contexts: tuple
    preset: str
    warmup: int
    repeats: int
    steps: int
    compile: bool
    compile_chunk_sizes: tuple
    triton_chunk_sizes: tuple
    presets: tuple
    inference_lengths: tuple
    latency_batches: tuple
    latency_length: int
    prefill_repeats: int
    train_preset: str
    train_lengths: tuple
    train_batch: int
    train_parallel: str
    out: str | None

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]


def kernel_tile(text: str) -> int:
    """argparse type: a tile height of the Triton kernels."""
    value = positive_int(text)
    if value not in kernels.TILE_HEIGHTS:
        raise argparse.ArgumentTypeError(f"must be one of {kernels.TILE_HEIGHTS}, got {value}")
    return value


def _default_help(name: str, text: str) -> str:
    gpu, cpu = DEVICE_DEFAULTS[name]
    show = lambda value: " ".join(map(str, value)) if isinstance(value, list) else str(value)
    return f"{text} (default: {show(gpu)} on cuda, {show(cpu)} on cpu)"


def add_parser(subparsers) -> argparse.ArgumentParser:
    """The `bench` subcommand with all its options; running it calls `run`."""
    parser = subparsers.add_parser(
        "bench", help="time the retention forms, decode steps and whole-model decoding against "
                      "baselines",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = lambda *names, **kw: parser.add_argument(*names, default=None, **kw)
    parser.add_argument("--suite", dest="suites", nargs="+", choices=SUITES,
                        default=list(DEFAULT_SUITES),
                        help=f"suites to run, in this order (default: {' '.join(DEFAULT_SUITES)})")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None,
                        help="device to measure on (default: cuda when available, else cpu)")
    size("--dtype", choices=tuple(DTYPES), help=_default_help(
        "dtype", "dtype of q, k, v, the KV cache and the model weights (states are float32)"))
    size("--tokens", type=positive_int, metavar="N",
         help=_default_help("tokens", "forms: tokens per call, B·T"))
    size("--lengths", type=positive_int, nargs="+", metavar="T", help=_default_help(
        "lengths", "forms: sequence lengths T (batch = tokens // T)"))
    size("--heads", type=positive_int, metavar="H", help=_default_help("heads", "forms: heads H"))
    size("--head-dim", type=positive_int, metavar="D",
         help=_default_help("head_dim", "forms: head dimension d (= d_k = d_v)"))
    size("--chunk-sizes", type=positive_int, nargs="+", metavar="C", help=_default_help(
        "chunk_sizes", "forms: chunk sizes of the chunkwise form (each is reported, and the best)"))
    size("--batch", type=positive_int, metavar="B",
         help=_default_help("batch", "decode and model: sequences per step B"))
    size("--decode-heads", type=positive_int, metavar="H",
         help=_default_help("decode_heads", "decode: heads H"))
    size("--decode-head-dim", type=positive_int, metavar="D",
         help=_default_help("decode_head_dim", "decode: head dimension d"))
    size("--contexts", type=positive_int, nargs="+", metavar="L", help=_default_help(
        "contexts", "decode and model: context lengths L already seen (KV cache length)"))
    size("--preset", choices=PRESETS, help=_default_help(
        "preset", "model: RetNetConfig / TransformerConfig preset"))
    size("--warmup", type=positive_int, metavar="N",
         help=_default_help("warmup", "untimed calls before timing"))
    size("--repeats", type=positive_int, metavar="N",
         help=_default_help("repeats", "forms and decode: timed calls (median)"))
    size("--steps", type=positive_int, metavar="N",
         help=_default_help("steps", "model: timed decode steps (median)"))
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="also measure torch.compile (inductor, fullgraph): the chunkwise form "
                             "at --compile-chunk-sizes, and both models' decode steps, each "
                             "captured in a CUDA graph like the eager ones "
                             "(default: on on cuda, off on cpu)")
    size("--compile-chunk-sizes", type=positive_int, nargs="+", metavar="C", help=_default_help(
        "compile_chunk_sizes", "forms: chunk sizes of the compiled chunkwise form"))
    size("--triton-chunk-sizes", type=kernel_tile, nargs="+", metavar="C", help=_default_help(
        "triton_chunk_sizes", "forms: chunk sizes (tile heights: 16, 32, 64, 128) of the Triton "
                              "kernels, timed on cuda when Triton imports"))
    size("--presets", choices=PRESETS, nargs="+", help=_default_help(
        "presets", "inference: the presets measured (both models of each)"))
    size("--inference-lengths", type=positive_int, nargs="+", metavar="L", help=_default_help(
        "inference_lengths", "inference: prompt lengths for memory, prefill and decode throughput "
                             "at --batch"))
    size("--latency-batches", type=positive_int, nargs="+", metavar="B", help=_default_help(
        "latency_batches", "inference: batch sizes for the decode latency at --latency-length"))
    size("--latency-length", type=positive_int, metavar="L", help=_default_help(
        "latency_length", "inference: the context of the latency rows"))
    size("--prefill-repeats", type=positive_int, metavar="N", help=_default_help(
        "prefill_repeats", "inference: timed prefills (median, after one untimed)"))
    size("--train-preset", choices=PRESETS,
         help=_default_help("train_preset", "training: the preset"))
    size("--train-lengths", type=positive_int, nargs="+", metavar="T", help=_default_help(
        "train_lengths", "training: sequence lengths of a training step"))
    size("--train-batch", type=positive_int, metavar="B", help=_default_help(
        "train_batch", "training: sequences per step and process (under torchrun with N processes "
                       "the global batch is N times this)"))
    parser.add_argument("--train-parallel", choices=TRAIN_PARALLEL, default=None, help=(
        "training, under torchrun: each process's model in PyTorch's DistributedDataParallel (ddp: "
        "every process holds the whole model) or sharded by FSDP (fsdp: fully_shard, for a model "
        "whose weights, gradients and AdamW state do not fit one device); none: one process, no "
        "group (default: ddp under torchrun, else none)"))
    parser.add_argument("--out", default=None, metavar="PATH",
                        help="write the results as JSON to PATH (folders are created; default: no "
                             "file)")
    parser.set_defaults(func=partial(run, parser=parser))
    return parser


def resolve_options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Options:
    """Fill the device-dependent defaults and check what argparse cannot (usage error, exit 2)."""
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    column = 0 if device == "cuda" else 1
    values = {name: getattr(args, name) if getattr(args, name) is not None else defaults[column]
              for name, defaults in DEVICE_DEFAULTS.items()}
    if values["tokens"] < max(values["lengths"]):
        parser.error(f"--tokens ({values['tokens']}) must be at least the longest of --lengths "
                     f"({max(values['lengths'])}): the batch is tokens // T")
    values = {name: tuple(v) if isinstance(v, list) else v for name, v in values.items()}
    values["compile"] = device == "cuda" if args.compile is None else args.compile
    suites = tuple(dict.fromkeys(args.suites))
    return Options(suites=suites, device=device, out=args.out,
                   train_parallel=resolve_train_parallel(args.train_parallel, suites, parser),
                   **values)


def resolve_train_parallel(given: str | None, suites: tuple,
                           parser: argparse.ArgumentParser) -> str:
    """--train-parallel, checked against the suites and torchrun's processes (usage errors, exit
    2)."""
    if given is not None and "training" not in suites:
        parser.error("--train-parallel: only with --suite training (the suites asked for: "
                     f"{' '.join(suites)})")
    if world_size() > 1 and suites != ("training",):
        parser.error(f"--suite {' '.join(suites)}: under torchrun with {world_size()} processes "
                     "only the training suite runs "
                     "(the others time one device: run them without torchrun)")
    parallel = given or (DDP if under_torchrun() and "training" in suites else NO_PARALLEL)
    if parallel != NO_PARALLEL and not under_torchrun():
        parser.error(f"--train-parallel {parallel}: needs processes started by torchrun "
                     "(torchrun --nproc_per_node=N -m retnet_ref bench --suite training ...)")
    if parallel == NO_PARALLEL and world_size() > 1:
        parser.error(f"--train-parallel none: under torchrun with {world_size()} processes, each "
                     "would time its own model alone; use ddp or fsdp")
    return parallel


# ---------------------------------------------------------------- timing and memory


class Timer:
    """Median seconds of one call of fn() after `warmup` untimed calls (see the module
    docstring)."""

    def __init__(self, device: torch.device, warmup: int, repeats: int):
        self.device, self.warmup, self.repeats = device, warmup, repeats
        self.flush = torch.empty(FLUSH_BYTES, dtype=torch.uint8,
                                 device=device) if device.type == "cuda" else None

    def median_seconds(self, fn: Callable, repeats: int | None = None) -> float:
        for _ in range(self.warmup):
            fn()
        return statistics.median(self._seconds_of_one_call(fn)
                                 for _ in range(repeats or self.repeats))

    def _seconds_of_one_call(self, fn: Callable) -> float:
        if self.flush is None:
            start = time.perf_counter()
            fn()
            return time.perf_counter() - start
        self.flush.zero_()                      # evict the inputs from L2
        torch.cuda.synchronize(self.device)     # start from an idle GPU: launch overhead counts
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3


def peak_bytes_beyond_inputs(fn: Callable, device: torch.device) -> int | None:
    """CUDA: max_memory_allocated during one call of fn() minus what was allocated before it. CPU:
    None."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def measured(seconds: float, **extra) -> dict:
    return {"status": OK, "seconds": seconds, **extra}


def not_measured(status: str, reason: str) -> dict:
    return {"status": status, "reason": reason}


def graphed_seconds(step: Callable, timer: Timer, repeats: int | None = None,
                    rewind: Callable[[], None] = lambda: None) -> dict:
    """Median seconds of a CUDA-graph replay of step(), or why it could not be captured.

    rewind() runs between the capture and the timing (the capture's warm-up advanced any state).
    """
    if timer.device.type != "cuda":
        return not_measured(UNAVAILABLE, "CUDA graphs need a CUDA device")
    try:
        replay = capture_cuda_graph(step, CAPTURE_WARMUP)[0].replay
    except torch.OutOfMemoryError:
        raise
    except RuntimeError as err:  # e.g. a host synchronisation inside the step
        return not_measured(CAPTURE_FAILED, str(err).strip().splitlines()[0])
    rewind()
    return measured(timer.median_seconds(replay, repeats))


def release_memory(device: torch.device):
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def too_large(required_bytes: int, device: torch.device) -> dict | None:
    """A "does not fit" entry when required_bytes (an estimate, times a slack, plus a margin) exceed
    the available memory, else None."""
    free = available_bytes(device)
    if free is not None and MEMORY_ESTIMATE_SLACK * required_bytes + MEMORY_MARGIN_BYTES > free:
        return not_measured(DOES_NOT_FIT, f"needs about {required_bytes / GiB:.2f} GiB, "
                                          f"{free / GiB:.2f} GiB available")
    return None


def measure_if_it_fits(required_bytes: int, device: torch.device, measure: Callable[[], dict],
                       processes: Processes = Processes()) -> dict:
    """measure() → a dict with a "status", or a "does not fit" entry: when required_bytes (an
    estimate, times a slack, plus a margin) exceed the available memory, or when measuring runs out
    of memory (then the memory is released before returning).

    With several processes, each checks its own memory and they agree: all measure, or none (an
    all_reduce of the verdict before, and of an out-of-memory flag after). measure() must therefore
    not reduce across processes itself. An out-of-memory inside a collective that only some
    processes reach (one process failing in a step's gradient all-reduce) leaves the others waiting
    in it until the process group's timeout ends the run.
    """
    verdict = too_large(required_bytes, device)
    if processes.any(verdict is not None):
        return verdict or not_measured(DOES_NOT_FIT, "does not fit on another process")
    result = unless_out_of_memory(measure, device)
    failed_somewhere = processes.any(result is None)
    if result is None:
        return not_measured(DOES_NOT_FIT, "out of memory")
    if failed_somewhere:
        return not_measured(DOES_NOT_FIT, "out of memory on another process")
    return result


def unless_out_of_memory(measure: Callable[[], dict], device: torch.device) -> dict | None:
    """measure(), or None where it ran out of memory (the memory is released then)."""
    result = None
    try:
        result = measure()
    except torch.OutOfMemoryError:
        pass
    if result is None:
        release_memory(device)   # after the handler: the traceback no longer holds the tensors
    return result


def copy_bandwidth(timer: Timer) -> float:
    """Bytes read plus bytes written per second by one large same-device copy (dst.copy_(src))."""
    nbytes = COPY_BYTES[timer.device.type]
    src = torch.ones(nbytes, dtype=torch.uint8, device=timer.device)
    dst = torch.empty_like(src)
    seconds = timer.median_seconds(partial(dst.copy_, src))
    del src, dst
    release_memory(timer.device)
    return 2 * nbytes / seconds


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def flatness(values: list) -> dict:
    """max/min of the measured values (None where fewer than two) and whether it is within
    FLAT_MAX_OVER_MIN."""
    values = [v for v in values if v is not None]
    max_over_min = max(values) / min(values) if len(values) >= 2 else None
    return {"max_over_min": max_over_min,
            "flat": None if max_over_min is None else max_over_min <= FLAT_MAX_OVER_MIN,
            "threshold": FLAT_MAX_OVER_MIN}


# ---------------------------------------------------------------- fla (optional)


@dataclass(frozen=True)
class FlaKernels:
    """fla-core's retention kernels (Triton, GPU only); layout (B, T, H, d), γ_h = 1 - 2^(-5-h)."""

    chunk_retention: Callable
    fused_recurrent_retention: Callable
    version: str


def load_fla() -> tuple[FlaKernels | None, str]:
    """(the kernels, "") when fla imports, else (None, the reason)."""
    try:
        import fla
        from fla.ops.retention import chunk_retention, fused_recurrent_retention
    except Exception as err:  # ImportError, or an error from Triton or the driver while importing
        return None, f"fla does not import: {type(err).__name__}: {err}"
    return FlaKernels(chunk_retention, fused_recurrent_retention, fla.__version__), ""


def fla_on(device: torch.device, fla: FlaKernels | None, reason: str) -> tuple[FlaKernels | None,
                                                                               str]:
    """fla's kernels where they can run on `device` (CUDA), else (None, why not)."""
    if fla is not None and device.type != "cuda":
        return None, "fla's kernels run on CUDA only"
    return fla, reason


# ---------------------------------------------------------------- Triton kernels (optional)


def triton_reason(device: torch.device) -> str:
    """"" when the Triton kernels (retnet_ref.kernels) are timed on `device`, else why not."""
    if kernels.triton is None:
        return "Triton does not import (pip install 'retnet_ref[triton]')"
    if device.type != "cuda":
        return ("the Triton kernels are timed on CUDA (on the CPU they run only in Triton's "
                "interpreter, for tests)")
    return ""


# ---------------------------------------------------------------- suite: forms


@dataclass(frozen=True)
class Form:
    """One column of the forms table: o = run(q, k, v); heads_first inputs are (B, H, T, d), else
    (B, T, H, d)."""

    name: str
    run: Callable
    heads_first: bool = True
    # holds (B, H, T, T) float32 scores: its memory is estimated first
    quadratic_scores: bool = False
    # also timed as a CUDA-graph replay (the fused kernels, whose eager time is mostly launches)
    graphed: bool = False


def _chunkwise(q, k, v, gamma, chunk_size):
    return chunkwise_retention(q, k, v, gamma, chunk_size)[0]


def compiled(fn: Callable) -> Callable:
    """fn compiled by inductor as one graph, specialised to each shape it meets."""
    return torch.compile(fn, fullgraph=True, dynamic=False)


def _triton_chunkwise(q, k, v, gamma, chunk_size):
    return kernels.chunkwise_retention(q, k, v, gamma, chunk_size)[0]


def _sdpa_causal(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def _fla_chunk(fla: FlaKernels, q, k, v):
    return fla.chunk_retention(q, k, v, scale=1.0)[0]   # scale 1: unscaled retention, as ours


def retention_forms(opts: Options, fla: FlaKernels | None) -> list[Form]:
    """The columns: chunkwise at each chunk size (eager, compiled, our Triton kernels), parallel,
    SDPA (causal) and fla's chunk_retention.

    Ours use the default γ schedule 1 - 2^(-5-h), the one fla's retention kernels hard-code, so that
    every retention column computes the same function.
    """
    gamma = gamma_schedule(opts.heads)
    forms = [Form(f"chunkwise_{c}", partial(_chunkwise, gamma=gamma, chunk_size=c))
             for c in opts.chunk_sizes]
    if opts.compile:
        forms += [Form(f"compiled_{c}", compiled(partial(_chunkwise, gamma=gamma.tolist(),
                                                         chunk_size=c)))
                  for c in opts.compile_chunk_sizes]
    if not triton_reason(opts.torch_device):
        forms += [Form(f"triton_{c}", partial(_triton_chunkwise, gamma=gamma, chunk_size=c),
                       graphed=True) for c in opts.triton_chunk_sizes]
    forms.append(Form("parallel", partial(parallel_retention, gamma=gamma), quadratic_scores=True))
    forms.append(Form("sdpa_causal", _sdpa_causal, graphed=True))
    if fla is not None:
        forms.append(Form("fla_chunk_retention", partial(_fla_chunk, fla), heads_first=False,
                          graphed=True))
    return forms


def form_call(form: Form, pass_name: str, q, k, v, g) -> Callable:
    """The timed call: the forward under no_grad, or the forward and the gradient of (o · g).sum()
    w.r.t. q, k and v (as autograd.grad with grad_outputs g: the same numbers without the product
    and the sum)."""
    if not form.heads_first:
        q, k, v, g = (x.detach().transpose(1, 2).contiguous().requires_grad_(x.requires_grad)
                      for x in (q, k, v, g))
    if pass_name == FORWARD:
        def forward():
            with torch.no_grad():
                return form.run(q, k, v)
        return forward
    return lambda: torch.autograd.grad(form.run(q, k, v), (q, k, v), g)


def measure_form(form: Form, pass_name: str, inputs: tuple, timer: Timer) -> dict:
    """The eager time and peak memory; for a graphed form also "graph", its replay's entry."""
    call = form_call(form, pass_name, *inputs)
    entry = measured(timer.median_seconds(call),
                     peak_bytes=peak_bytes_beyond_inputs(call, timer.device))
    if form.graphed:
        entry["graph"] = graphed_seconds(call, timer)
    return entry


def form_memory_estimate(form: Form, pass_name: str, shape: tuple) -> int:
    """Bytes beyond the inputs: for the parallel form, its float32 (B, H, T, T) score-sized buffers;
    the other forms need memory linear in T and are only guarded against running out."""
    if not form.quadratic_scores:
        return 0
    B, H, T, _ = shape
    return PARALLEL_SCORE_BUFFERS[pass_name] * B * H * T * T * 4


# kind: column prefix
CHUNKWISE_KINDS = {"best": "chunkwise_", "compiled": "compiled_", "triton": "triton_"}
# tensors of the shape of q that a pass must read or write at least once: q, k, v read and o
# written; the backward also reads the cotangent of o and writes dq, dk, dv
FLOOR_TENSORS = {FORWARD: 4, FORWARD_BACKWARD: 8}


def bytes_floor_seconds(pass_name: str, shape: tuple, itemsize: int, bandwidth: float) -> float:
    """The least time a pass can take: its FLOOR_TENSORS' bytes at the copy bandwidth (bytes read
    plus written per second). No chunkwise kernel reaches it: it also writes and reads the chunk
    states."""
    return FLOOR_TENSORS[pass_name] * math.prod(shape) * itemsize / bandwidth


def graph_seconds(entry: dict) -> float | None:
    """The seconds of an entry's CUDA-graph replay; None where it has none or it failed."""
    return seconds_of(entry.get("graph"))


def fastest_chunk(times: dict, prefix: str, seconds: Callable[[dict], float | None]) -> dict | None:
    """{"chunk_size", "seconds"} of the fastest column named prefix + chunk size, by seconds(entry);
    None where none was measured."""
    chunked = {int(name.split("_")[1]): seconds(entry) for name, entry in times.items()
               if name.startswith(prefix) and seconds(entry) is not None}
    if not chunked:
        return None
    best = min(chunked, key=chunked.get)
    return {"chunk_size": best, "seconds": chunked[best]}


def graphed_ratios(times: dict, floor: float) -> dict:
    """The CUDA-graph replays: the best Triton tile height's, and its ratios to fla's, SDPA's and
    the bytes floor (fla's to the floor too)."""
    fastest = fastest_chunk(times, "triton_", graph_seconds)
    best = None if fastest is None else fastest["seconds"]
    fla = graph_seconds(times["fla_chunk_retention"])
    return {"triton_graph": fastest,
            "triton_graph_over_fla_graph": ratio(best, fla),
            "triton_graph_over_sdpa_graph": ratio(best, graph_seconds(times["sdpa_causal"])),
            "triton_graph_over_floor": ratio(best, floor),
            "fla_graph_over_floor": ratio(fla, floor)}


def forms_row(pass_name: str, T: int, batch: int, times: dict, floor: float) -> dict:
    """One table row: every column's entry, the best chunk size, time per token and the ratios,
    the bytes floor and the ratios of the CUDA-graph replays."""
    row = {"pass": pass_name, "length": T, "batch": batch, "tokens": batch * T, "times": times,
           "floor_seconds": floor, **graphed_ratios(times, floor)}
    for kind, prefix in CHUNKWISE_KINDS.items():
        fastest = fastest_chunk(times, prefix, seconds_of)
        best = None if fastest is None else fastest["seconds"]
        row.update({f"chunkwise_{kind}": fastest,
                    f"{kind}_seconds_per_token": ratio(best, batch * T),
                    f"{kind}_over_fla": ratio(best, seconds_of(times["fla_chunk_retention"])),
                    f"{kind}_over_sdpa": ratio(best, seconds_of(times["sdpa_causal"]))})
    return row


def forms_suite(opts: Options, timer: Timer, bandwidth: float, fla: FlaKernels | None,
                fla_reason: str) -> tuple[list, dict]:
    """Rows for each (T, pass); per pass, the flatness of the best chunkwise time per token across
    T."""
    device, dtype = opts.torch_device, opts.torch_dtype
    forms = retention_forms(opts, fla)
    rows = []
    for T in opts.lengths:
        batch = opts.tokens // T
        shape = (batch, opts.heads, T, opts.head_dim)
        q, k, v = (torch.randn(shape, dtype=dtype, device=device, requires_grad=True)
                   for _ in range(3))
        g = torch.randn(shape, dtype=dtype, device=device)      # the cotangent of o
        for pass_name in (FORWARD, FORWARD_BACKWARD):
            times = form_times(forms, pass_name, (q, k, v, g), timer, opts, fla, fla_reason)
            floor = bytes_floor_seconds(pass_name, shape, q.element_size(), bandwidth)
            rows.append(forms_row(pass_name, T, batch, times, floor))
        del q, k, v, g
        release_memory(device)
    return rows, forms_summary(rows)


def form_times(forms: list[Form], pass_name: str, inputs: tuple, timer: Timer, opts: Options,
               fla: FlaKernels | None, fla_reason: str) -> dict:
    """Every column's entry for one pass over inputs (q, k, v, g): each form's where it fits, then
    fla's and the Triton kernels' columns with the reason where they are not timed here."""
    device, shape = opts.torch_device, tuple(inputs[0].shape)
    times = {form.name: measure_if_it_fits(form_memory_estimate(form, pass_name, shape), device,
                                           partial(measure_form, form, pass_name, inputs, timer))
             for form in forms}
    if fla is None:
        times["fla_chunk_retention"] = not_measured(UNAVAILABLE, fla_reason)
    if triton_reason(device):
        times.update({f"triton_{c}": not_measured(UNAVAILABLE, triton_reason(device))
                      for c in opts.triton_chunk_sizes})
    return times


def forms_summary(rows: list[dict]) -> dict:
    """Per kind of chunkwise column and per pass, the flatness of its time per token across T."""
    return {f"chunkwise_{kind}_per_token_across_lengths": {
        pass_name: flatness([r[f"{kind}_seconds_per_token"] for r in rows
                             if r["pass"] == pass_name])
        for pass_name in (FORWARD, FORWARD_BACKWARD)} for kind in CHUNKWISE_KINDS}


# ---------------------------------------------------------------- suite: decode


def eager_and_graphed(step: Callable, timer: Timer) -> dict:
    return {"status": OK, "eager": measured(timer.median_seconds(step)),
            "graph": graphed_seconds(step, timer)}


def sdpa_over_cache(q: torch.Tensor, context: int, timer: Timer) -> dict:
    """One query (B, H, 1, d) attending over keys and values (B, H, L, d) in q's dtype (no mask
    needed)."""
    B, H, _, d = q.shape
    keys, values = (torch.randn(B, H, context, d, dtype=q.dtype, device=q.device) for _ in range(2))
    return eager_and_graphed(partial(F.scaled_dot_product_attention, q, keys, values), timer)


def decode_row(method: str, context: int | None, state_bytes: int, bytes_moved: int,
               bandwidth: float,
               opts: Options, result: dict) -> dict:
    """One row: what the step holds and moves, the floor that sets, the eager and graph times (or
    why not)."""
    row = {"method": method, "context": context, "batch": opts.batch, "heads": opts.decode_heads,
           "head_dim": opts.decode_head_dim, "dtype": opts.dtype, "state_bytes": state_bytes,
           "bytes_moved": bytes_moved, "floor_seconds": bytes_moved / bandwidth, **result}
    times = [seconds_of(row[key]) for key in ("eager", "graph") if key in row]
    row["best_seconds"] = min((s for s in times if s is not None), default=None)
    row["best_over_floor"] = ratio(row["best_seconds"], row["floor_seconds"])
    return row


def triton_step(q, k, v, opts: Options) -> Callable:
    """One normalised decode step on the fused kernel (kernels.step), with a float32 S and z."""
    B, H, d = q.shape[0], q.shape[1], q.shape[-1]
    state = RetentionState(torch.randn(B, H, d, d, device=q.device),
                           torch.randn(B, H, d, device=q.device), 0)
    log_g = torch.log(torch.tensor(gamma_schedule(H), dtype=torch.float64, device=q.device))
    gap, floor = step_decay_factors(log_g, state.n, d, torch.float32)
    return partial(kernels.triton_normalised_step_, q, k, v, state, gap, floor)


def decode_suite(opts: Options, timer: Timer, bandwidth: float, fla: FlaKernels | None,
                 fla_reason: str) -> tuple[list, dict]:
    """recurrent_retention, our fused Triton step and fla's fused_recurrent_retention on one token
    with a float32 state (B, H, d, d) and γ a float32 device tensor, against one SDPA query over a
    KV cache (B, H, L, d) for each context L. The state's floor counts it read and written (the
    Triton step also updates the normaliser's key sum z and divides: the full normalised step of a
    layer); the cache's counts it read. Eagerly, recurrent_retention checks γ's values on the host
    (one synchronisation, part of its eager time); under capture that check is a device
    assertion."""
    q, k, v, S, gamma = decode_inputs(opts)
    state_row = partial(decode_row, context=None, state_bytes=S.nbytes, bytes_moved=2 * S.nbytes,
                        bandwidth=bandwidth, opts=opts)
    with torch.no_grad():
        recurrent_step = partial(recurrent_retention, q, k, v, gamma, state=S)
        rows = [state_row("recurrent_retention", result=eager_and_graphed(recurrent_step, timer)),
                state_row("triton_normalised_step",
                          result=triton_step_result(q, k, v, opts, timer)),
                state_row("fla_fused_recurrent_retention",
                          result=fla_step_result(fla, fla_reason, q, k, v, S, timer))]
        rows += kv_cache_rows(q, opts, timer, bandwidth)
    recurrent = rows[0]["best_seconds"]
    for row in rows:
        row["over_recurrent"] = ratio(row["best_seconds"], recurrent)
    return rows, {}


def decode_inputs(opts: Options) -> tuple:
    """q, k, v (B, H, 1, d) of one token in the dtype, a float32 state S (B, H, d, d) and γ (H,) of
    the default schedule (fla's too) in float32, on the device."""
    device, dtype = opts.torch_device, opts.torch_dtype
    B, H, d = opts.batch, opts.decode_heads, opts.decode_head_dim
    q, k, v = (torch.randn(B, H, 1, d, dtype=dtype, device=device) for _ in range(3))
    S = torch.randn(B, H, d, d, dtype=torch.float32, device=device)
    gamma = torch.tensor(gamma_schedule(H), dtype=torch.float32, device=device)
    return q, k, v, S, gamma


def triton_step_result(q, k, v, opts: Options, timer: Timer) -> dict:
    """Our fused Triton step's eager and graph times, or why it is not timed here."""
    reason = triton_reason(opts.torch_device)
    if reason:
        return not_measured(UNAVAILABLE, reason)
    return eager_and_graphed(triton_step(q, k, v, opts), timer)


def fla_step_result(fla: FlaKernels | None, fla_reason: str, q, k, v, S: torch.Tensor,
                    timer: Timer) -> dict:
    """fla's fused_recurrent_retention's eager and graph times, or why it is unavailable."""
    if fla is None:
        return not_measured(UNAVAILABLE, fla_reason)
    qf, kf, vf = (x.transpose(1, 2).contiguous() for x in (q, k, v))   # (B, 1, H, d)
    step = partial(fla.fused_recurrent_retention, qf, kf, vf, scale=1.0, initial_state=S,
                   output_final_state=True)
    return eager_and_graphed(step, timer)


def kv_cache_rows(q: torch.Tensor, opts: Options, timer: Timer, bandwidth: float) -> list[dict]:
    """One row for each context L: one SDPA query q (B, H, 1, d) over a KV cache (B, H, L, d),
    where it fits."""
    device, B, H, d = opts.torch_device, opts.batch, opts.decode_heads, opts.decode_head_dim
    rows = []
    for L in opts.contexts:
        cache_bytes = 2 * B * H * L * d * opts.torch_dtype.itemsize
        result = measure_if_it_fits(cache_bytes, device, partial(sdpa_over_cache, q, L, timer))
        rows.append(decode_row("sdpa_kv_cache", L, cache_bytes, cache_bytes, bandwidth, opts,
                               result))
        release_memory(device)
    return rows


# ---------------------------------------------------------------- suite: model


def model_config(kind: str, preset: str):
    return RetNetConfig.preset(preset) if kind == "retnet" else TransformerConfig.preset(preset)


def model_class(kind: str):
    return RetNet if kind == "retnet" else Transformer


def meta_model(kind: str, preset: str) -> nn.Module:
    """The model on the meta device (nothing is allocated), for counting its weights."""
    with torch.device("meta"):
        return model_class(kind)(model_config(kind, preset))


def parameter_count(kind: str, preset: str) -> int:
    """Weights of the model, counted on the meta device."""
    return count_parameters(meta_model(kind, preset))


def build_model(kind: str, opts: Options) -> dict:
    """Random weights, built on the device in float32, cast to the dtype, eval mode."""
    with torch.device(opts.torch_device):
        model = model_class(kind)(model_config(kind, opts.preset))
    return {"status": OK, "model": model.to(device=opts.torch_device,
                                            dtype=opts.torch_dtype).eval()}


def weight_bytes_read_per_step(model: nn.Module, batch: int) -> int:
    """Every weight is read once per step, except an embedding table, of which only `batch` rows."""
    tables = {id(m.weight): m.weight for m in model.modules() if isinstance(m, nn.Embedding)}
    dense = sum(p.nbytes for p in model.parameters() if id(p) not in tables)
    return dense + sum(batch * w.shape[1] * w.element_size() for w in tables.values())


def tensor_bytes(obj, seen: set | None = None) -> int:
    """Bytes of the distinct tensor storages reachable from obj through dataclasses, lists, tuples,
    dicts."""
    seen = set() if seen is None else seen
    if isinstance(obj, torch.Tensor):
        storage = obj.untyped_storage()
        if storage.data_ptr() in seen:
            return 0
        seen.add(storage.data_ptr())
        return storage.nbytes()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        children = [getattr(obj, f.name) for f in dataclasses.fields(obj)]
    elif isinstance(obj, (list, tuple)):
        children = obj
    elif isinstance(obj, dict):
        children = list(obj.values())
    else:
        return 0
    return sum(tensor_bytes(child, seen) for child in children)


def cache_capacity(context: int, opts: Options) -> int:
    """KV-cache slots: the context plus every step a measurement takes (capture warm-up, warm-up,
    timed)."""
    return context + CAPTURE_WARMUP + opts.warmup + opts.steps + 1


def decode_memory_estimate(kind: str, context: int, opts: Options) -> int:
    """Bytes a configuration adds to the resident model: RetNet's float32 S and z per layer, or the
    Transformer's keys and values at capacity; plus the logits (B, V) in float32, twice."""
    config, B = model_config(kind, opts.preset), opts.batch
    if kind == "retnet":
        d_k, d_v = config.d_model // config.num_heads, config.value_dim // config.num_heads
        held = config.num_layers * B * config.num_heads * (d_k * d_v + d_k) * 4
    else:
        held = (
            2
            * config.num_layers
            * B
            * cache_capacity(context, opts)
            * config.d_model
            * opts.torch_dtype.itemsize
        )
    return held + 2 * B * config.vocab_size * 4


@dataclass
class DecodeMemory:
    """What a decode step reads and updates in place, its size in bytes, the bytes one step moves
    through it, and how to put it back at the measured context after extra steps."""

    memory: object
    nbytes: int
    bytes_moved: int
    rewind: Callable[[], None]


def retnet_state(model: RetNet, context: int, opts: Options) -> DecodeMemory:
    """RetNet's fixed-size state at position L (its values do not change the cost), read and written
    once."""
    state = model.empty_state(opts.batch, position=context)
    nbytes = tensor_bytes(state)
    return DecodeMemory(state, nbytes, 2 * nbytes, lambda: None)


def transformer_cache(model: Transformer, context: int, opts: Options) -> DecodeMemory:
    """A preallocated KV cache holding L tokens: a step reads the L entries and writes one."""
    capacity = cache_capacity(context, opts)
    cache = model.empty_cache(opts.batch, capacity, device=opts.torch_device,
                              dtype=opts.torch_dtype)
    cache.length.fill_(context)
    nbytes = cache.nbytes()
    return DecodeMemory(cache, nbytes, nbytes * (context + 1) // capacity, cache.snapshot())


def measure_model_step(kind: str, model: nn.Module, context: int, opts: Options, timer: Timer,
                       bandwidth: float, compiled_step: Callable | None = None) -> dict:
    """Seconds per decode step (a CUDA graph replay on CUDA, eager on the CPU), tokens/s, memory,
    floor; with compiled_step (torch.compile of model.decode_step), the same for it in
    "compiled"."""
    device = opts.torch_device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    token = torch.randint(0, model.config.vocab_size, (opts.batch,), device=device)
    held = (retnet_state if kind == "retnet" else transformer_cache)(model, context, opts)
    entry = step_seconds(partial(model.decode_step, token, held.memory), held, opts, timer)
    weights_read = weight_bytes_read_per_step(model, opts.batch)
    floor = (weights_read + held.bytes_moved) / bandwidth
    compiled_entry = None if compiled_step is None else compiled_step_seconds(compiled_step, token,
                                                                              held, opts, timer)
    return {"status": OK, "step": entry, "cuda_graph": device.type == "cuda",
            "compiled": compiled_entry,
            "compiled_over_floor": ratio(seconds_of(compiled_entry), floor),
            "tokens_per_second": ratio(opts.batch, seconds_of(entry)),
            "peak_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else None,
            "state_bytes": held.nbytes, "bytes_moved": weights_read + held.bytes_moved,
            "floor_seconds": floor, "step_over_floor": ratio(seconds_of(entry), floor)}


def step_seconds(step: Callable, held: DecodeMemory, opts: Options, timer: Timer) -> dict:
    """A decode step's entry: a CUDA graph replay on CUDA (held rewound to the context after the
    capture), eager on the CPU."""
    if opts.torch_device.type == "cuda":
        return graphed_seconds(step, timer, opts.steps, rewind=held.rewind)
    return measured(timer.median_seconds(step, opts.steps))


def compiled_step_seconds(compiled_step: Callable, token: torch.Tensor, held: DecodeMemory,
                          opts: Options, timer: Timer) -> dict:
    """compiled_graph_seconds of compiled_step(token, held.memory), from the context (held rewound
    first: the eager step advanced it)."""
    held.rewind()
    return compiled_graph_seconds(partial(compiled_step, token, held.memory), timer, opts.steps,
                                  held.rewind)


def compiled_graph_seconds(step: Callable, timer: Timer, repeats: int,
                           rewind: Callable[[], None]) -> dict:
    """graphed_seconds of a compiled step; the compilation happens in the capture's warm-up."""
    try:
        return graphed_seconds(step, timer, repeats, rewind)
    except torch.OutOfMemoryError:
        raise
    except Exception as err:  # inductor or dynamo could not compile the step
        return not_measured(COMPILE_FAILED,
                            f"{type(err).__name__}: {str(err).strip().splitlines()[0][:200]}")


def retnet_backends(opts: Options) -> tuple:
    """RetNet's decode step on the PyTorch forms, and on the fused Triton step where it is timed."""
    return ("torch",) if triton_reason(opts.torch_device) else ("torch", "triton")


def model_label(kind: str, backend: str | None) -> str:
    return f"{kind}_triton" if backend == "triton" else kind


def model_rows(kind: str, opts: Options, timer: Timer, bandwidth: float) -> list[dict]:
    """Build the model once (if its float32 weights fit), then one row per context (and, for RetNet,
    per backend: the same weights, decoded on the PyTorch step and on the Triton one)."""
    device = opts.torch_device
    parameters = parameter_count(kind, opts.preset)
    backends = retnet_backends(opts) if kind == "retnet" else (None,)
    meta = lambda L, backend: model_meta(kind, backend, opts, parameters, context=L,
                                         batch=opts.batch)
    built = measure_if_it_fits(4 * parameters, device, partial(build_model, kind, opts))
    if built["status"] != OK:
        return [{**meta(L, backend), **built} for L in opts.contexts for backend in backends]
    model = built.pop("model")
    compiled_step = compiled(model.decode_step) if opts.compile and device.type == "cuda" else None
    rows = [{**meta(L, backend), **backend_step(kind, model, backend, L, opts, timer, bandwidth,
                                                compiled_step)}
            for L in opts.contexts for backend in backends]
    del model
    release_memory(device)
    return rows


def model_meta(kind: str, backend: str | None, opts: Options, parameters: int, **where) -> dict:
    """What a row says of its model: label, preset and backend, `where` it was measured (context
    and batch), dtype and weights."""
    return {"model": model_label(kind, backend), "preset": opts.preset, "backend": backend, **where,
            "dtype": opts.dtype, "parameters": parameters,
            "weights_bytes": parameters * opts.torch_dtype.itemsize}


def backend_step(kind: str, model: nn.Module, backend: str | None, context: int, opts: Options,
                 timer: Timer, bandwidth: float, compiled_step: Callable | None) -> dict:
    """measure_model_step where it fits, on RetNet's `backend` (None: the Transformer); the
    compiled step on the PyTorch one only."""
    # decoding does not use the chunk size; 64 is a tile of the kernels
    if backend is not None:
        model.set_backend(backend, chunk_size=64)
    with torch.no_grad():
        result = measure_if_it_fits(decode_memory_estimate(kind, context, opts), opts.torch_device,
                                    partial(measure_model_step, kind, model, context, opts, timer,
                                            bandwidth, compiled_step if backend in (None, "torch")
                                            else None))
    release_memory(opts.torch_device)
    return result


def model_suite(opts: Options, timer: Timer, bandwidth: float) -> tuple[list, dict]:
    """Both models at every context; every row also gives its step time over RetNet's (PyTorch
    step)."""
    rows = [row for kind in MODELS for row in model_rows(kind, opts, timer, bandwidth)]
    step = {(r["model"], r["context"]): seconds_of(r["step"]) if r["status"] == OK else None
            for r in rows}
    fast = {(r["model"], r["context"]): seconds_of(r.get("compiled")) if r["status"] == OK else None
            for r in rows}
    for row in rows:
        row["over_retnet"] = ratio(step[row["model"], row["context"]],
                                   step["retnet", row["context"]])
        row["compiled_over_retnet"] = ratio(fast[row["model"], row["context"]],
                                            fast["retnet", row["context"]])
    labels = dict.fromkeys(r["model"] for r in rows)
    summary = {f"{label}_{name}_across_contexts": flatness([times[label, L] for L in opts.contexts])
               for label in labels for name, times in (("step", step), ("compiled", fast))}
    return rows, summary


# ---------------------------------------------------------------- suite: inference (the paper's
# Fig. 6)


def prefill_call(kind: str, model: nn.Module, tokens: torch.Tensor) -> Callable:
    """The prompt read once, keeping only the last position's logits: RetNet chunkwise (its config's
    chunk size), the Transformer with causal SDPA attention, building its KV cache."""
    if kind == "retnet":
        return lambda: model(tokens, "chunkwise", model.config.chunk_size, last_only=True)
    return lambda: model(tokens, last_only=True)


def prefill_memory_estimate(kind: str, length: int, opts: Options) -> int:
    """Bytes a prefill of `length` tokens at --batch adds to the resident weights, roughly: what a
    decode step holds (decode_memory_estimate) plus the widest activations, (B, T, ffn or 2 × value
    width) four times in the dtype, and for RetNet the float32 chunk states (B, H, T/C, d_k, d_v)
    twice."""
    config, B = model_config(kind, opts.preset), opts.batch
    width = max(config.ffn_dim, 2 * config.value_dim) if kind == "retnet" else config.ffn_width
    activations = 4 * B * length * width * opts.torch_dtype.itemsize
    if kind == "retnet":
        d_k, d_v = config.d_model // config.num_heads, config.value_dim // config.num_heads
        activations += (
            2 * B * config.num_heads * -(-length // config.chunk_size) * d_k * (d_v + 1) * 4
        )
    return decode_memory_estimate(kind, length, opts) + activations


def measure_prefill(kind: str, model: nn.Module, length: int, opts: Options) -> dict:
    """Median seconds of a prefill at --batch, its tokens/s and the peak memory while it runs (all
    that is allocated, the weights included, as for a decode step)."""
    device = opts.torch_device
    tokens = torch.randint(0, model.config.vocab_size, (opts.batch, length), device=device)
    call = prefill_call(kind, model, tokens)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = Timer(device, 1, opts.prefill_repeats).median_seconds(call)
    return {"status": OK, "seconds": seconds, "tokens_per_second": opts.batch * length / seconds,
            "peak_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else None}


def inference_rows(kind: str, model: nn.Module, opts: Options, timer: Timer,
                   bandwidth: float) -> list[dict]:
    """For one built model: per prompt length (prefill, then a decode step at --batch) and per batch
    size (a decode step at --latency-length)."""
    return ([length_row(kind, model, L, opts, timer, bandwidth) for L in opts.inference_lengths]
            + [latency_row(kind, model, B, opts, timer, bandwidth) for B in opts.latency_batches])


def length_row(kind: str, model: nn.Module, L: int, opts: Options, timer: Timer,
               bandwidth: float) -> dict:
    """A prefill of L tokens at --batch, then a decode step at context L; the peak memory the
    larger of theirs."""
    with torch.no_grad():
        prefill = measure_if_it_fits(prefill_memory_estimate(kind, L, opts), opts.torch_device,
                                     partial(measure_prefill, kind, model, L, opts))
        release_memory(opts.torch_device)
        step = measure_if_it_fits(decode_memory_estimate(kind, L, opts), opts.torch_device,
                                  partial(measure_model_step, kind, model, L, opts, timer,
                                          bandwidth))
    peaks = [e.get("peak_bytes") for e in (prefill, step) if e["status"] == OK
             and e.get("peak_bytes")]
    row = {"table": "length", "context": L, "batch": opts.batch, "prefill": prefill, **step,
           "peak_bytes": max(peaks, default=None)}
    release_memory(opts.torch_device)
    return row


def latency_row(kind: str, model: nn.Module, B: int, opts: Options, timer: Timer,
                bandwidth: float) -> dict:
    """A decode step of B sequences at context --latency-length."""
    batch_opts = dataclasses.replace(opts, batch=B)
    with torch.no_grad():
        step = measure_if_it_fits(decode_memory_estimate(kind, opts.latency_length, batch_opts),
                                  opts.torch_device,
                                  partial(measure_model_step, kind, model, opts.latency_length,
                                          batch_opts, timer, bandwidth))
    row = {"table": "batch", "context": opts.latency_length, "batch": B, **step}
    release_memory(opts.torch_device)
    return row


def inference_suite(opts: Options, timer: Timer, bandwidth: float) -> tuple[list, dict]:
    """Both models of every preset: memory, prefill and decode throughput against the prompt length
    at a fixed batch; decode latency against the batch size at one length; the largest batch that
    fits. RetNet's weights are measured on each backend timed here (PyTorch, and the Triton kernels
    on CUDA: prefill on the chunkwise kernel with tile 64, decode on the fused step)."""
    rows = []
    for preset in opts.presets:
        preset_opts = dataclasses.replace(opts, preset=preset)
        for kind in MODELS:
            rows += preset_rows(kind, preset_opts, timer, bandwidth)
    return rows, inference_summary(rows, opts)


def preset_rows(kind: str, opts: Options, timer: Timer, bandwidth: float) -> list[dict]:
    """One model of opts.preset, built once if its float32 weights fit: inference_rows on each
    backend timed (RetNet's; None for the Transformer), or its length rows saying why not."""
    parameters = parameter_count(kind, opts.preset)
    backends = retnet_backends(opts) if kind == "retnet" else (None,)
    meta = lambda backend: model_meta(kind, backend, opts, parameters)
    built = measure_if_it_fits(4 * parameters, opts.torch_device, partial(build_model, kind, opts))
    if built["status"] != OK:
        return [{**meta(backend), "table": "length", "context": L, "batch": opts.batch, **built}
                for backend in backends for L in opts.inference_lengths]
    model, rows = built.pop("model"), []
    for backend in backends:
        # tile 64 for the kernels, the preset's chunk size (512) otherwise
        if backend is not None:
            model.set_backend(backend, chunk_size=64 if backend == "triton"
                              else preset_chunk_size(opts.preset))
        rows += [{**meta(backend), **row}
                 for row in inference_rows(kind, model, opts, timer, bandwidth)]
    del model
    release_memory(opts.torch_device)
    return rows


def preset_chunk_size(preset: str) -> int:
    return model_config("retnet", preset).chunk_size


def inference_summary(rows: list[dict], opts: Options) -> dict:
    """Per preset: the largest batch each model fits at --latency-length and its tokens/s there; and
    for each RetNet backend against the Transformer, at the longest prompt both fit at --batch, the
    ratios of decode tokens/s (RetNet over Transformer), peak memory and step time (Transformer over
    RetNet)."""
    return {preset: preset_summary([r for r in rows if r["preset"] == preset])
            for preset in opts.presets}


def preset_summary(rows: list[dict]) -> dict:
    """inference_summary's entry for the rows of one preset."""
    ok = lambda label, table: [r for r in rows if r["model"] == label and r["table"] == table
                               and r["status"] == OK]
    labels = list(dict.fromkeys(r["model"] for r in rows))
    largest = {label: max(ok(label, "batch"), key=lambda r: r["batch"], default=None)
               for label in labels}
    transformer = {r["context"]: r for r in ok("transformer", "length")}
    versus = {label: versus_transformer({r["context"]: r for r in ok(label, "length")},
                                        transformer)
              for label in labels if label != "transformer"}
    return {"largest_batch": {label: None if row is None else row["batch"]
                              for label, row in largest.items()},
            "tokens_per_second_at_largest_batch": {
                label: None if row is None else row["tokens_per_second"]
                for label, row in largest.items()},
            "versus_transformer": {label: entry for label, entry in versus.items() if entry}}


def versus_transformer(retnet: dict[int, dict], transformer: dict[int, dict]) -> dict | None:
    """At the longest context both measured (rows by context): RetNet's decode tokens/s over the
    Transformer's, and the Transformer's peak memory and step time over RetNet's; None if they
    share no context."""
    shared = sorted(set(retnet) & set(transformer))
    if not shared:
        return None
    L = shared[-1]
    return {"context": L,
            "throughput_retnet_over_transformer": ratio(retnet[L]["tokens_per_second"],
                                                        transformer[L]["tokens_per_second"]),
            "peak_memory_transformer_over_retnet": ratio(transformer[L]["peak_bytes"],
                                                         retnet[L]["peak_bytes"]),
            "step_time_transformer_over_retnet": ratio(seconds_of(transformer[L]["step"]),
                                                       seconds_of(retnet[L]["step"]))}


# ---------------------------------------------------------------- suite: training (the paper's
# Table 4)

# column: (model, how it computes): RetNet chunkwise at its preset's chunk size (512, as in the
# paper's Table 4) or on the Triton kernels (tile 64); the Transformer with SDPA's default kernel
# (flash attention on a GPU) or its math kernel (scores materialised: the paper's plain
# "Transformer" column)
TRAINING_COLUMNS = {"retnet": ("retnet", "torch"), "retnet_triton": ("retnet", "triton"),
                    "transformer_sdpa": ("transformer", None),
                    "transformer_math": ("transformer", "math")}


def training_columns(opts: Options) -> list[str]:
    return [name for name in TRAINING_COLUMNS if name != "retnet_triton"
            or not triton_reason(opts.torch_device)]


def training_step(kind: str, model: nn.Module, tokens: torch.Tensor, optimizer,
                  trained: nn.Module | None = None) -> Callable:
    """One step of next-token training: forward on tokens[:, :-1], cross-entropy against tokens[:,
    1:] (in float32), backward, AdamW. trained: the module the forward runs, when it is not model
    itself (its DistributedDataParallel wrapper)."""
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    trained = model if trained is None else trained
    chunk_size = model.config.chunk_size if kind == "retnet" else None

    def step():
        optimizer.zero_grad(set_to_none=True)
        logits = trained(inputs, "chunkwise",
                         chunk_size)[0] if kind == "retnet" else trained(inputs)[0]
        F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten()).backward()
        optimizer.step()
    return step


def model_blocks(model: nn.Module) -> nn.ModuleList:
    return model.blocks if isinstance(model, RetNet) else model.layers


def parallel_model(model: nn.Module, opts: Options, processes: Processes) -> nn.Module:
    """The module a training step runs: the model (one process), its DistributedDataParallel wrapper
    (ddp), or the model itself sharded in place by FSDP (fsdp: fully_shard on each block, then on
    the whole: the embedding and the head are the root's; torch >= 2.6 has it as
    torch.distributed.fsdp.fully_shard)."""
    if opts.train_parallel == DDP:
        from torch.nn.parallel import DistributedDataParallel
        device_ids = [processes.device.index] if processes.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids, gradient_as_bucket_view=True)
    if opts.train_parallel == FSDP:
        from torch.distributed.fsdp import fully_shard
        for block in model_blocks(model):
            fully_shard(block)
        return fully_shard(model)
    return model


def training_tokens(vocab_size: int, length: int, opts: Options, rank: int) -> torch.Tensor:
    """(--train-batch, length + 1) random tokens of this process, drawn by a generator seeded with
    its rank (every process its own batch; the global generator, which draws the weights, is left
    alone)."""
    generator = torch.Generator().manual_seed(rank)
    return torch.randint(0, vocab_size, (opts.train_batch, length + 1),
                         generator=generator).to(opts.torch_device)


TRAINING_LR = 1e-4


def training_optimizer(model: nn.Module, device: torch.device) -> torch.optim.AdamW:
    return torch.optim.AdamW(model.parameters(), lr=TRAINING_LR, betas=(0.9, 0.98),
                             fused=device.type == "cuda")


def training_setup(column: str, length: int, opts: Options,
                   processes: Processes) -> tuple[nn.Module, Callable]:
    """(the model, one training step of this process) of a column: the model built from torch's
    global generator (the same weights in every process), wrapped as --train-parallel says, AdamW
    over its (for fsdp: sharded) parameters, this process's tokens."""
    kind, how = TRAINING_COLUMNS[column]
    model = build_model(kind, dataclasses.replace(opts, preset=opts.train_preset))["model"].train()
    if how == "triton":
        model.set_backend("triton", chunk_size=64)
    trained = parallel_model(model, opts, processes)
    tokens = training_tokens(model.config.vocab_size, length, opts, processes.rank)
    step = training_step(kind, model, tokens, training_optimizer(model, opts.torch_device), trained)
    if how == "math":
        from torch.nn.attention import SDPBackend, sdpa_kernel
        plain_step, step = step, lambda: _with_math_attention(plain_step, sdpa_kernel, SDPBackend)
    return model, step


def measure_training(column: str, length: int, opts: Options, processes: Processes) -> dict:
    """This process's median seconds of a training step (after one untimed) and its peak memory (all
    allocated); nothing reduced across processes (over_processes does that)."""
    device = opts.torch_device
    step = training_setup(column, length, opts, processes)[1]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = Timer(device, 1, opts.steps).median_seconds(step)
    return {"status": OK, "seconds": seconds,
            "peak_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else None}


def over_processes(local: dict, length: int, opts: Options, processes: Processes) -> dict:
    """A measured column over all processes: the step time is the largest of the processes' medians,
    tokens/s those of the global batch (processes × --train-batch × T) in that time, the peak memory
    the largest process's."""
    seconds = processes.maximum(local["seconds"])
    peak = None if local["peak_bytes"] is None else int(processes.maximum(local["peak_bytes"]))
    return {"status": OK, "seconds": seconds,
            "tokens_per_second": processes.world * opts.train_batch * length / seconds,
            "peak_bytes": peak}


def _with_math_attention(step, sdpa_kernel, backend):
    with sdpa_kernel(backend.MATH):
        step()


def training_memory_estimate(column: str, length: int, opts: Options, world: int = 1) -> int:
    """Memory of one process: weights, gradients and AdamW's two moments in the dtype (4 copies;
    with fsdp a 1/world shard of each, plus the whole weights of two blocks, one computing and one
    prefetched, and of what lies outside the blocks), plus activations of about 16 (B, T, d) tensors
    a layer (no check-pointing), plus (B, H, T, T) scores a layer for the math kernel; B is
    --train-batch."""
    kind, how = TRAINING_COLUMNS[column]
    config, B, size = model_config(kind,
                                   opts.train_preset), opts.train_batch, opts.torch_dtype.itemsize
    parameters = parameter_count(kind, opts.train_preset)
    held = 4 * parameters * size
    if opts.train_parallel == FSDP:
        block = max(count_parameters(b) for b in model_blocks(meta_model(kind, opts.train_preset)))
        outside = parameters - config.num_layers * block
        held = held // world + (2 * block + outside) * size
    activations = 16 * config.num_layers * B * length * config.d_model * size
    if how == "math":
        activations += 2 * config.num_layers * B * config.num_heads * length * length * size
    return held + activations


def training_suite(opts: Options, processes: Processes = Processes()) -> tuple[list, dict]:
    """Each column at each length: tokens/s of a training step (over all processes) and peak memory
    (of the largest process); the summary gives each column's tokens/s over RetNet's and its peak
    memory over RetNet's."""
    rows = [training_row(column, length, opts, processes)
            for length in opts.train_lengths for column in training_columns(opts)]
    return rows, training_summary(rows)


def training_row(column: str, length: int, opts: Options, processes: Processes) -> dict:
    """One column's training step at one length, where it fits on every process."""
    result = measure_if_it_fits(training_memory_estimate(column, length, opts, processes.world),
                                opts.torch_device,
                                partial(measure_training, column, length, opts, processes),
                                processes)
    if result["status"] == OK:
        result = over_processes(result, length, opts, processes)
    row = {"column": column, "preset": opts.train_preset, "length": length,
           "batch": opts.train_batch, "dtype": opts.dtype, **result}
    release_memory(opts.torch_device)
    return row


def training_summary(rows: list[dict]) -> dict:
    """Per measured column and length: its tokens/s and its peak memory over RetNet's."""
    by = {(r["column"], r["length"]): r for r in rows if r["status"] == OK}
    over_retnet = lambda column, length, key: ratio(by[column, length][key],
                                                    by.get(("retnet", length), {}).get(key))
    return {f"{column}_at_{length}": {
        "tokens_per_second_over_retnet": over_retnet(column, length, "tokens_per_second"),
        "peak_memory_over_retnet": over_retnet(column, length, "peak_bytes")}
        for column, length in by}


# ---------------------------------------------------------------- environment


def _triton_version() -> str | None:
    try:
        import triton
    except ImportError:
        return None
    return triton.__version__


def _nvidia_driver_version() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().splitlines()[0] if out.strip() else None


def environment(device: torch.device, fla_version: str | None, bandwidth: float, date: str,
                command: str, processes: Processes, parallel: str) -> dict:
    """Versions, the device, the processes (world_size; parallel: --train-parallel; gpu_count: one
    GPU a process on CUDA) and the command line (no host name)."""
    env = {"date": date, "command": command, "python": platform.python_version(),
           "platform": platform.platform(), "torch": torch.__version__,
           "cuda_runtime": torch.version.cuda,
           "triton": _triton_version(), "fla": fla_version, "device": device.type,
           "cpu_threads": torch.get_num_threads(), "gpu": None, "gpu_memory_bytes": None,
           "compute_capability": None, "driver": None, "copy_bandwidth_bytes_per_second": bandwidth,
           "world_size": processes.world, "parallel": parallel,
           "gpu_count": processes.world if device.type == "cuda" else 0}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, gpu_memory_bytes=props.total_memory,
                   compute_capability=f"{props.major}.{props.minor}",
                   driver=_nvidia_driver_version())
    return env


# ---------------------------------------------------------------- the run


def benchmark(opts: Options, command: str, processes: Processes = Processes()) -> dict:
    """Every requested suite: {"environment", "options", <suite>: rows, "summary"}. With several
    processes (torchrun) only the training suite, each process measuring on its own device."""
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    device = opts.torch_device
    torch.manual_seed(0)
    timer = Timer(device, opts.warmup, opts.repeats)
    bandwidth = copy_bandwidth(timer)
    fla_loaded, fla_import_reason = load_fla()
    fla, fla_reason = fla_on(device, fla_loaded, fla_import_reason)
    suites = {
        "forms": lambda: forms_suite(opts, timer, bandwidth, fla, fla_reason),
        "decode": lambda: decode_suite(opts, timer, bandwidth, fla, fla_reason),
        "model": lambda: model_suite(opts, timer, bandwidth),
        "inference": lambda: inference_suite(opts, timer, bandwidth),
        "training": lambda: training_suite(opts, processes),
    }
    report = {"environment": environment(device, fla_loaded.version if fla_loaded else None,
                                         bandwidth, date,
                                         command, processes, opts.train_parallel),
              "options": dataclasses.asdict(opts), "summary": {}}
    for name in opts.suites:
        report[name], report["summary"][name] = suites[name]()
    return report


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """The `bench` subcommand: options, the run, the tables on stdout, the JSON file (the first
    process's under torchrun)."""
    opts = resolve_options(args, parser)
    processes = start_processes(process_device(opts.device),
                                group_of_one=opts.train_parallel != NO_PARALLEL)
    try:
        report = benchmark(opts, "python -m retnet_ref " + shlex.join(args.argv), processes)
    finally:
        end_processes(processes)
    if not processes.main:
        return 0
    print(format_report(report))
    if opts.out:
        path = Path(opts.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1) + "\n")
        print(f"\nwrote {path}")
    return 0


# ---------------------------------------------------------------- tables


def format_table(title: str, headers: list[str], rows: list[list[str]],
                 notes: list[str] = ()) -> str:
    """Fixed-width columns, the first left-aligned and the others right-aligned; notes below."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                   for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return "\n".join([title, line(headers), *map(line, rows), *notes])


def time_cell(entry: dict, unit: float) -> str:
    """A time in ms (unit 1e-3) or µs (unit 1e-6), or the entry's status ("n/a" when
    unavailable)."""
    if entry["status"] == OK:
        return f"{entry['seconds'] / unit:.{3 if unit == 1e-3 else 1}f}"
    return "n/a" if entry["status"] == UNAVAILABLE else entry["status"]


def number_cell(value: float | None, scale: float = 1.0, digits: int = 2) -> str:
    return "-" if value is None else f"{value / scale:.{digits}f}"


def unmeasured_notes(items: list[tuple[str, str, dict]]) -> list[str]:
    """One line per (column, status, reason) among the (column, where, entry) not measured, listing
    where."""
    grouped = {}
    for column, where, entry in items:
        if "reason" in entry:
            grouped.setdefault((column, entry["status"], entry["reason"]), []).append(where)
    return [
        f"  {column} ({', '.join(w for w in wheres if w)}): {status}: {reason}".replace(" ()", "")
        for (column, status, reason), wheres in grouped.items()
    ]


def flatness_line(label: str, result: dict) -> str:
    if result["max_over_min"] is None:
        return f"{label}: max/min - (fewer than two measured)"
    verdict = "flat" if result["flat"] else "not flat"
    return (f"{label}: max/min {result['max_over_min']:.2f} ({verdict}; "
            f"flat means <= {result['threshold']:.2f})")


def forms_table(rows: list[dict], summary: dict, opts: dict) -> str:
    names = list(rows[0]["times"])
    tables = []
    for pass_name in (FORWARD, FORWARD_BACKWARD):
        selected = [r for r in rows if r["pass"] == pass_name]
        cells = [forms_cells(r, names) for r in selected]
        notes = unmeasured_notes([(n, f"T={r['length']}", r["times"][n]) for r in selected
                                  for n in names])
        flat = [flatness_line(f"chunkwise {kind}, time per token across T",
                              summary[f"chunkwise_{kind}_per_token_across_lengths"][pass_name])
                for kind in CHUNKWISE_KINDS if any(r[f"chunkwise_{kind}"] for r in selected)]
        title = (f"forms, {pass_name}: ms per call, {opts['tokens']} tokens, H={opts['heads']}, "
                 f"d={opts['head_dim']}, {opts['dtype']}")
        tables.append(format_table(title, forms_headers(names), cells, [*notes, *flat]))
        tables.append(graphed_forms_table(selected, pass_name, opts))
    return "\n\n".join(tables)


def graphed_names(names: list[str]) -> list[str]:
    """The columns also timed as CUDA-graph replays (Form.graphed), in table order."""
    return [n for n in names if n.startswith("triton_") or n in ("sdpa_causal",
                                                                   "fla_chunk_retention")]


def graph_entry(entry: dict) -> dict:
    """A column's CUDA-graph entry; the eager entry where that was not measured at all."""
    return entry.get("graph", entry) if entry["status"] == OK else entry


def graphed_forms_table(rows: list[dict], pass_name: str, opts: dict) -> str:
    """The fused kernels replayed as CUDA graphs (GPU time, no launch overhead) beside the bytes
    floor of the pass."""
    names = graphed_names(list(rows[0]["times"]))
    headers = ["T", "B", *(n.replace("triton_", "triton C=") for n in names), "floor",
               "triton/fla", "triton/sdpa", "triton/floor", "fla/floor"]
    cells = [[str(r["length"]), str(r["batch"]),
              *(time_cell(graph_entry(r["times"][n]), 1e-3) for n in names),
              number_cell(r["floor_seconds"], 1e-3, 3),
              *(number_cell(r[key]) for key in ("triton_graph_over_fla_graph",
                                                "triton_graph_over_sdpa_graph",
                                                "triton_graph_over_floor",
                                                "fla_graph_over_floor"))] for r in rows]
    notes = unmeasured_notes([(n, f"T={r['length']}", graph_entry(r["times"][n])) for r in rows
                              for n in names])
    title = (f"forms, {pass_name}, replayed as CUDA graphs: ms per call; floor: "
             f"{FLOOR_TENSORS[pass_name]} tensors of q's size once at the copy bandwidth")
    return format_table(title, headers, cells, notes)


def forms_headers(names: list[str]) -> list[str]:
    """T, B, one column per form (a chunk size as C=), then the best chunk size, ratios and
    peaks."""
    return ["T", "B", *(n.replace("chunkwise_", "C=").replace("compiled_", "comp C=")
                        .replace("triton_", "triton C=") for n in names),
            "best C", "ns/token", "best/fla", "best/sdpa", "comp/fla", "comp/sdpa", "triton/fla",
            "triton/sdpa", "peak MiB best", "peak MiB sdpa"]


def forms_cells(r: dict, names: list[str]) -> list[str]:
    """One row of a forms table: ms per call of each form, the best chunk size, its ns per token,
    the ratios, the peak memory of the best chunk size and of SDPA."""
    best = r["chunkwise_best"]
    peak = lambda name: number_cell(r["times"][name].get("peak_bytes"), MiB, 1)
    return [str(r["length"]), str(r["batch"]), *(time_cell(r["times"][n], 1e-3) for n in names),
            "-" if best is None else str(best["chunk_size"]),
            number_cell(r["best_seconds_per_token"], 1e-9, 3),
            number_cell(r["best_over_fla"]), number_cell(r["best_over_sdpa"]),
            number_cell(r["compiled_over_fla"]), number_cell(r["compiled_over_sdpa"]),
            number_cell(r["triton_over_fla"]), number_cell(r["triton_over_sdpa"]),
            "-" if best is None else peak(f"chunkwise_{best['chunk_size']}"),
            peak("sdpa_causal")]


def decode_table(rows: list[dict], summary: dict, opts: dict) -> str:
    headers = ["method", "context", "state/cache MiB", "eager µs", "graph µs", "floor µs",
               "best/floor",
               "÷ recurrent"]
    cells, unmeasured = [], []
    for r in rows:
        where = "" if r["context"] is None else f"L={r['context']}"
        # a row not measured stands for both
        entries = {key: r.get(key, r) for key in ("eager", "graph")}
        cells.append([r["method"], "-" if r["context"] is None else str(r["context"]),
                      number_cell(r["state_bytes"], MiB, 3),
                      *(time_cell(e, 1e-6) for e in entries.values()),
                      number_cell(r["floor_seconds"], 1e-6, 1), number_cell(r["best_over_floor"]),
                      number_cell(r["over_recurrent"])])
        unmeasured += [(f"{r['method']} {key}" if key in r else r["method"], where, entries[key])
                       for key in ("eager", "graph") if key in r or key == "eager"]
    title = (f"decode: one step, B={opts['batch']}, H={opts['decode_heads']}, "
             f"d={opts['decode_head_dim']}, q/k/v and KV cache {opts['dtype']}, state float32")
    return format_table(title, headers, cells, unmeasured_notes(unmeasured))


def model_table(rows: list[dict], summary: dict, opts: dict) -> str:
    headers = ["model", "context", "ms/step", "tokens/s", "peak MiB", "weights MiB", "state/KV MiB",
               "floor ms", "step/floor", "÷ retnet", "compiled ms", "compiled/floor",
               "compiled ÷ retnet"]
    cells, unmeasured = [model_cells(r) for r in rows], []
    for r in rows:
        unmeasured.append((r["model"], f"L={r['context']}", r.get("step", r)))
        if r.get("compiled") is not None:
            unmeasured.append((f"{r['model']} compiled", f"L={r['context']}", r["compiled"]))
    title = (f"model: decode step, preset {opts['preset']}, B={opts['batch']}, {opts['dtype']}, "
             f"{'CUDA graph' if opts['device'] == 'cuda' else 'eager'}")
    labels = dict.fromkeys(r["model"] for r in rows)
    flat = [flatness_line(f"{label} {name} time across contexts",
                          summary[f"{label}_{name}_across_contexts"])
            for label in labels for name in ("step", "compiled")
            if any(r.get(name) for r in rows if r["model"] == label)]
    return format_table(title, headers, cells, [*unmeasured_notes(unmeasured), *flat])


def model_cells(r: dict) -> list[str]:
    """One row of the model table: the step's time, throughput, memory and floor, the compiled
    step's."""
    value = lambda key, scale=1.0, digits=2: number_cell(r.get(key), scale, digits)
    return [r["model"], str(r["context"]), time_cell(r.get("step", r), 1e-3),
            value("tokens_per_second", 1.0, 0), value("peak_bytes", MiB, 1),
            value("weights_bytes", MiB, 1), value("state_bytes", MiB, 3),
            value("floor_seconds", 1e-3, 3), value("step_over_floor"), value("over_retnet"),
            "-" if r.get("compiled") is None else time_cell(r["compiled"], 1e-3),
            value("compiled_over_floor"), value("compiled_over_retnet")]


def inference_table(rows: list[dict], summary: dict, opts: dict) -> str:
    headers = ["model", "preset", "table", "context", "batch", "prefill ms", "prefill tok/s",
               "step ms", "tokens/s",
               "peak MiB", "state/KV MiB", "step/floor"]
    cells, unmeasured = [], []
    for r in rows:
        step, prefill = r.get("step", r), r.get("prefill")
        value = lambda key, scale=1.0, digits=2: number_cell(r.get(key), scale, digits)
        cells.append([r["model"], r["preset"], r["table"], str(r["context"]), str(r["batch"]),
                      "-" if prefill is None else time_cell(prefill, 1e-3),
                      "-" if prefill is None
                      else number_cell(prefill.get("tokens_per_second"), 1.0, 0),
                      time_cell(step, 1e-3), value("tokens_per_second", 1.0, 0),
                      value("peak_bytes", MiB, 1),
                      value("state_bytes", MiB, 1), value("step_over_floor")])
        where = f"{r['preset']} L={r['context']} B={r['batch']}"
        unmeasured.append((r["model"], where, step))
        if prefill is not None:
            unmeasured.append((f"{r['model']} prefill", where, prefill))
    notes = [inference_note(preset, s, opts) for preset, s in summary.items()]
    steps = "CUDA graph" if opts["device"] == "cuda" else "eager"
    title = f"inference: prefill and decode, {opts['dtype']}, {steps} steps"
    return format_table(title, headers, cells, [*unmeasured_notes(unmeasured), *notes])


def inference_note(preset: str, s: dict, opts: dict) -> str:
    largest = ", ".join(f"{label} {batch}" for label, batch in s["largest_batch"].items())
    versus = "".join(f"; {label} at L={v['context']}, B={opts['batch']}: tokens/s over the "
                     f"Transformer's {number_cell(v['throughput_retnet_over_transformer'])}, the "
                     "Transformer's peak memory over its "
                     f"{number_cell(v['peak_memory_transformer_over_retnet'])}, step time "
                     f"{number_cell(v['step_time_transformer_over_retnet'])}"
                     for label, v in s["versus_transformer"].items())
    return f"{preset}: largest batch at L={opts['latency_length']}: {largest}{versus}"


def training_table(rows: list[dict], summary: dict, opts: dict) -> str:
    headers = ["column", "T", "B", "step ms", "tokens/s", "peak MiB", "tokens/s ÷ retnet",
               "memory ÷ retnet"]
    cells, unmeasured = [], []
    for r in rows:
        ratios = summary.get(f"{r['column']}_at_{r['length']}", {})
        cells.append([r["column"], str(r["length"]), str(r["batch"]), time_cell(r, 1e-3),
                      number_cell(r.get("tokens_per_second"), 1.0, 0),
                      number_cell(r.get("peak_bytes"), MiB, 1),
                      number_cell(ratios.get("tokens_per_second_over_retnet")),
                      number_cell(ratios.get("peak_memory_over_retnet"))])
        unmeasured.append((r["column"], f"T={r['length']}", r))
    title = (f"training: one step (forward, backward, AdamW), preset {opts['train_preset']}, "
             f"{opts['dtype']}")
    notes = unmeasured_notes(unmeasured)
    if opts.get("train_parallel", NO_PARALLEL) != NO_PARALLEL:   # reports before it have none
        title += f", {opts['train_parallel']}"
        notes.append("B per process; tokens/s over all processes (the slowest process's median "
                     "step), peak memory the largest process's")
    return format_table(title, headers, cells, notes)


def format_report(report: dict) -> str:
    env = report["environment"]
    head = (
        f"device {env['gpu'] or 'cpu'}, torch {env['torch']}, triton {env['triton']}, "
        f"fla {env['fla']}; "
        f"copy bandwidth {env['copy_bandwidth_bytes_per_second'] / 1e9:.1f} GB/s (read + write)"
    )
    tables = {"forms": forms_table, "decode": decode_table, "model": model_table,
              "inference": inference_table,
              "training": training_table}
    return "\n\n".join([head] + [tables[name](report[name], report["summary"][name],
                                              report["options"])
                                  for name in report["options"]["suites"]])

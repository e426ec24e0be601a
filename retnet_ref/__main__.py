"""Command line: python -m retnet_ref {verify, notebooks, bench, corpus, train, compare}.

    verify     the equivalence report of the three retention forms (exit status 1 on any failure)
               (--impl PKG.MODULE:FUNCTION: the conformance report of your own retention function)
    notebooks  execute every notebook in notebooks/ into build/notebooks/ as executed .ipynb and
               HTML, saving their figures in figures/ (or --figures); --inplace rewrites the
               notebooks themselves instead. The folders are those of the checkout holding the
               working directory, else of the working directory itself (never the installed package)
    bench      time the retention forms, decode steps and whole-model decoding against PyTorch
               baselines in one run; tables on stdout, JSON with --out (retnet_ref/bench.py)
    corpus     fetch Debian's python3.11-doc and prepare its text as byte tokens in build/corpus/
               (train/validation/test split by document; retnet_ref/corpus.py)
    train      train RetNet or the Transformer on that corpus: JSON log, checkpoint, --resume,
               torchrun for several processes (retnet_ref/train.py)
    compare    RetNet vs the Transformer: a learning-rate sweep, the main pair over seeds and sizes,
               the paper's ablations, as train processes in parallel; summary.json
               (retnet_ref/comparison.py)
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import textwrap
import time
from itertools import chain
from pathlib import Path

from . import __version__
from .argtypes import positive_int
from .bench import add_parser as add_bench_parser
from .comparison import add_parser as add_compare_parser
from .conformance import EXAMPLE as CONFORMANCE_EXAMPLE
from .conformance import add_arguments as add_conformance_arguments
from .conformance import options_without_impl
from .conformance import run as run_conformance
from .corpus import add_parser as add_corpus_parser
from .paths import FIGURES_ENV, figures_dir, project_root
from .train import add_parser as add_train_parser

# what `notebooks` imports (nbformat, nbclient, nbconvert, jupyter_client), starts (ipykernel) or
# copies MathJax from (jupyter_server_mathjax): the dev extra brings them
NOTEBOOK_MODULES = ("nbformat", "nbclient", "nbconvert", "jupyter_client", "ipykernel",
                    "jupyter_server_mathjax")
INSTALL_DEV = (
    "install retnet_ref[dev] (in a checkout: pip install -c constraints.txt -e \".[dev]\")"
)


VERIFY_LENGTHS = [64, 256, 1024]
VERIFY_CHUNK_SIZE = 48


def _verify(args) -> int:
    if "cuda" in (args.device or ()):
        import torch

        if not torch.cuda.is_available():
            args.parser.error("--device cuda: no CUDA device is available")
    if args.impl:
        if args.long_lengths is not None:
            args.parser.error("--long-lengths: only in the report of the package's own forms (with "
                              "--impl, put the long lengths in --lengths)")
        return run_conformance(args, args.parser)
    misplaced = options_without_impl(args)
    if misplaced:
        args.parser.error(f"{', '.join(misplaced)}: only with --impl PKG.MODULE:FUNCTION")
    rows = _print_verify_rows(args)
    failed = [r for r in rows if not r.passed]
    _print_worst_errors(rows)
    print(f"\n{len(rows) - len(failed)} of {len(rows)} comparisons passed"
          + (", FAILED: " + str(len(failed)) if failed else ""))
    return 1 if failed else 0


def _print_verify_rows(args) -> list:
    """Print the report's rows as they are measured (the recurrent form's skipped lengths first) →
    the rows."""
    from .verify import HEADER, LONG_LENGTHS, format_row, iter_rows, long_rows

    lengths, chunk_size = args.lengths or VERIFY_LENGTHS, args.chunk_size or VERIFY_CHUNK_SIZE
    skipped = [T for T in lengths if T > args.recurrent_max_length]
    if skipped:
        print(f"recurrent form skipped at T = {', '.join(map(str, skipped))} (a Python loop over "
              f"tokens; --recurrent-max-length {max(skipped)} keeps it)\n")
    print(HEADER, "-" * len(HEADER), sep="\n", flush=True)
    long = () if args.long_lengths is None else tuple(args.long_lengths or LONG_LENGTHS)
    devices = args.device or None
    rows = []
    for row in chain(iter_rows(lengths=tuple(lengths), chunk_size=chunk_size, devices=devices,
                               recurrent_max_length=args.recurrent_max_length),
                     long_rows(lengths=long, chunk_size=chunk_size, devices=devices)):
        print(format_row(row), flush=True)
        rows.append(row)
    return rows


def _print_worst_errors(rows):
    worst = {}
    for r in rows:
        worst[r.device, r.dtype] = max(worst.get((r.device, r.dtype), 0.0), r.error)
    print()
    for (device, dtype), err in worst.items():
        print(f"worst relative error  {device:<5} {dtype:<9} {err:.2e}")


def missing_modules(names) -> list[str]:
    """The modules of `names` that cannot be imported here (looked up, not imported)."""
    def absent(name):
        if name in sys.modules:
            return sys.modules[name] is None
        return importlib.util.find_spec(name) is None
    return [name for name in names if absent(name)]


def _notebook_paths(args) -> list[Path]:
    """The notebooks named (files, or folders of them), else those of notebooks/ in
    project_root()."""
    if not args.paths:
        folder = project_root() / "notebooks"
        paths = sorted(folder.glob("*.ipynb"))
        if not paths:
            what = "holds no .ipynb file" if folder.is_dir() else "does not exist"
            raise LookupError(f"no notebooks found: {folder} {what}; run this inside a checkout of "
                              "the repository, or name the notebooks (or a folder of them) to run")
        return paths
    paths = []
    for name in args.paths:
        path = Path(name)
        if path.is_dir():
            found = sorted(path.glob("*.ipynb"))
            if not found:
                raise LookupError(f"no notebooks found: the folder {path} holds no .ipynb file")
            paths += found
        elif path.is_file() and path.suffix == ".ipynb":
            paths.append(path)
        else:
            args.parser.error(f"paths: expected .ipynb files or folders of them, got {name!r} "
                              + ("(no such file or folder)" if not path.exists()
                                 else "(not a notebook)"))
    return paths


def _execute_notebooks(args) -> int:
    missing = missing_modules(NOTEBOOK_MODULES)
    if missing:
        print(f"python -m retnet_ref notebooks needs {', '.join(missing)}, which the dev extra "
              "brings: " + INSTALL_DEV, file=sys.stderr)
        return 1
    try:
        paths = _notebook_paths(args)
    except LookupError as err:
        print(err, file=sys.stderr)
        return 1
    out = None if args.inplace else Path(args.out) if args.out else (
        project_root() / "build" / "notebooks")
    # the kernels inherit this environment, and run in each notebook's folder: give them the figures
    # folder as an absolute path, chosen here (relative to this working directory)
    figures = Path(args.figures) if args.figures else figures_dir(create=False)
    saved = os.environ.get(FIGURES_ENV)
    os.environ[FIGURES_ENV] = str(figures.resolve())
    try:
        return _run_notebooks(paths, out, html=not args.inplace)
    finally:                                        # a caller in this process keeps its environment
        if saved is None:
            os.environ.pop(FIGURES_ENV, None)
        else:
            os.environ[FIGURES_ENV] = saved


def _run_notebooks(paths: list[Path], out: Path | None, html: bool) -> int:
    """Execute each notebook, a line per notebook as it ends → 0 if all ran clean, else 1."""
    from .notebook_runner import execute

    status = 0
    for path in paths:
        start = time.perf_counter()
        ok = execute(path, out, html=html)
        status |= 0 if ok else 1
        print(f"{'ok  ' if ok else 'FAIL'} {path.name:<32} {time.perf_counter() - start:6.1f} s",
              flush=True)
    return status


VERIFY_DESCRIPTION = (
    "Run parallel, recurrent and chunkwise retention on seeded random inputs for each device (cpu, "
    "cuda when present), dtype (float64, float32, bfloat16) and length; print the max relative "
    "error of each form against the float64 parallel form (itself checked against the NumPy "
    "reference), of the forms against each other and of a chunked state hand-off, with the "
    "tolerance and pass/fail. Exits 1 if any comparison fails. Tolerances and their reasons: "
    "retnet_ref/verify.py. With --impl, the conformance report of your own retention function "
    "against the float64 reference instead (example below).")


def add_verify_parser(sub) -> argparse.ArgumentParser:
    verify = sub.add_parser(
        "verify", help="equivalence report: form pairs x dtypes x devices x lengths (--impl: of "
                       "your own function)",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=CONFORMANCE_EXAMPLE,
        description=textwrap.fill(VERIFY_DESCRIPTION, 100))
    add = verify.add_argument
    add("--lengths", type=positive_int, nargs="+",
        help="sequence lengths T (default: 64 256 1024; with --impl: 1 4C 6C+C/4 18C+3C/4)")
    add("--chunk-size", type=positive_int,
        help="chunk size of the chunkwise form (default: 48, so that no default length is a whole "
             "number of chunks; with --impl: the chunk size the function always uses, else 16)")
    add("--recurrent-max-length", type=positive_int, default=1024, metavar="T",
        help="longest T at which the recurrent form (a Python loop over tokens) runs "
             "(default: 1024)")
    add("--long-lengths", type=positive_int, nargs="*", metavar="T",
        help="also check float32 chunkwise and recurrent against the float64 truth at these long "
             "lengths (default: 65536), head by head for the slowest default heads and γ = 1 "
             "(seconds per length on a CPU)")
    add("--device", action="append", choices=["cpu", "cuda"],
        help="restrict to a device (repeatable); default: cpu and cuda if present")
    add_conformance_arguments(verify)
    verify.set_defaults(func=_verify, parser=verify)
    return verify


def add_notebooks_parser(sub) -> argparse.ArgumentParser:
    nbs = sub.add_parser(
        "notebooks", help="execute the notebooks into build/notebooks/ (.ipynb and HTML)",
        description="Execute notebooks top to bottom in a kernel running this interpreter. Default "
                    "folders are those of the checkout that holds the working directory, or of the "
                    "working directory outside a checkout; nothing is written where the package is "
                    "installed. Needs the dev extra.")
    add = nbs.add_argument
    add("paths", nargs="*",
        help="notebooks to run, or folders of them (default: all of notebooks/)")
    add("--out", help="folder for the executed .ipynb and .html (default: build/notebooks)")
    add("--figures", metavar="DIR",
        help=f"folder the notebooks save their figures in (default: ${FIGURES_ENV} if set, else "
             "figures/)")
    add("--inplace", action="store_true", help="rewrite the notebooks themselves with outputs")
    nbs.set_defaults(func=_execute_notebooks, parser=nbs)
    return nbs


SUBCOMMANDS = (add_verify_parser, add_notebooks_parser, add_bench_parser, add_corpus_parser,
               add_train_parser, add_compare_parser)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m retnet_ref", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"retnet_ref {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add_subcommand in SUBCOMMANDS:
        add_subcommand(sub)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)     # the command, as recorded by bench
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

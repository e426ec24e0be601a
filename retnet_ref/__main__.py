"""Command line: python -m retnet_ref {verify, notebooks, bench}.

    verify     the equivalence report of the three retention forms (exit status 1 on any failure)
    notebooks  execute every notebook in notebooks/ (regenerating figures/) into build/notebooks/
               as executed .ipynb and HTML; --inplace rewrites the committed notebooks instead
    bench      time the retention forms, decode steps and whole-model decoding against PyTorch
               baselines in one run; tables on stdout, JSON with --out (retnet_ref/bench.py)
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from . import __version__
from .bench import add_parser as add_bench_parser, positive_int

ROOT = Path(__file__).resolve().parent.parent


def _verify(args) -> int:
    from .verify import HEADER, format_row, iter_rows

    skipped = [T for T in args.lengths if T > args.recurrent_max_length]
    if skipped:
        print(f"recurrent form skipped at T = {', '.join(map(str, skipped))} (a Python loop over tokens; "
              f"--recurrent-max-length {max(skipped)} keeps it)\n")
    print(HEADER, "-" * len(HEADER), sep="\n", flush=True)
    rows = []
    for row in iter_rows(lengths=tuple(args.lengths), chunk_size=args.chunk_size, devices=args.device or None,
                         recurrent_max_length=args.recurrent_max_length):
        print(format_row(row), flush=True)
        rows.append(row)
    failed = [r for r in rows if not r.passed]
    worst = {}
    for r in rows:
        key = (r.device, r.dtype)
        worst[key] = max(worst.get(key, 0.0), r.error)
    print()
    for (device, dtype), err in worst.items():
        print(f"worst relative error  {device:<5} {dtype:<9} {err:.2e}")
    print(f"\n{len(rows) - len(failed)} of {len(rows)} comparisons passed" + (", FAILED: " + str(len(failed)) if failed else ""))
    return 1 if failed else 0


def _execute_notebooks(args) -> int:
    from .notebook_runner import execute

    paths = [Path(p) for p in args.paths] or sorted((ROOT / "notebooks").glob("*.ipynb"))
    if not paths:
        print(f"no notebooks found in {ROOT / 'notebooks'}: run this from a checkout of the repository, "
              "or name the notebooks to execute", file=sys.stderr)
        return 1
    out = None if args.inplace else Path(args.out)
    status = 0
    for path in paths:
        start = time.perf_counter()
        ok = execute(path, out, html=not args.inplace)
        status |= 0 if ok else 1
        print(f"{'ok  ' if ok else 'FAIL'} {path.name:<32} {time.perf_counter() - start:6.1f} s", flush=True)
    return status


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m retnet_ref", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"retnet_ref {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    verify = sub.add_parser(
        "verify", help="equivalence report: form pairs x dtypes x devices x lengths",
        description="Run parallel, recurrent and chunkwise retention on seeded random inputs for each "
                    "device (cpu, cuda when present), dtype (float64, float32, bfloat16) and length; print "
                    "the max relative error of each form against the float64 parallel form (itself checked "
                    "against the NumPy reference), of the forms against each other and of a chunked state "
                    "hand-off, with the tolerance and pass/fail. Exits 1 if any comparison fails. "
                    "Tolerances and their reasons: retnet_ref/verify.py.")
    verify.add_argument("--lengths", type=positive_int, nargs="+", default=[64, 256, 1024],
                        help="sequence lengths T (default: 64 256 1024)")
    verify.add_argument("--chunk-size", type=positive_int, default=48,
                        help="chunk size of the chunkwise form (default: 48, so that no default length is a "
                             "whole number of chunks)")
    verify.add_argument("--recurrent-max-length", type=positive_int, default=1024, metavar="T",
                        help="longest T at which the recurrent form (a Python loop over tokens) runs (default: 1024)")
    verify.add_argument("--device", action="append", choices=["cpu", "cuda"],
                        help="restrict to a device (repeatable); default: cpu and cuda if present")
    verify.set_defaults(func=_verify)

    nbs = sub.add_parser("notebooks", help="execute the notebooks (regenerates figures/)",
                         description="Execute notebooks top to bottom in this interpreter's kernel.")
    nbs.add_argument("paths", nargs="*", help="notebooks to run (default: all of notebooks/)")
    nbs.add_argument("--out", default=str(ROOT / "build" / "notebooks"), help="output folder")
    nbs.add_argument("--inplace", action="store_true", help="rewrite the notebooks themselves with outputs")
    nbs.set_defaults(func=_execute_notebooks)


    add_bench_parser(sub)

    args = parser.parse_args(argv)
    if args.command == "verify" and "cuda" in (args.device or ()):
        import torch

        if not torch.cuda.is_available():
            verify.error("--device cuda: no CUDA device is available")
    args.argv = list(sys.argv[1:] if argv is None else argv)       # the command, as recorded by bench
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

"""The training corpus: real English prose, fetched from Debian and prepared as byte tokens.

`python -m retnet_ref corpus` (or `make corpus`) builds it in build/corpus/:

1. `apt-get download python3.11-doc`: Debian's package of the Python 3.11 documentation (into
   build/debian/, or pass --deb with a package you downloaded yourself);
2. `dpkg-deb -x`: unpack it and take the reStructuredText sources the HTML was built from,
   usr/share/doc/python3.11/html/_sources/**/*.rst.txt — one document per file;
3. split the documents, not the bytes, into train / validation / test: the sorted file names are
   shuffled with a fixed seed and the first ones go to validation, the next to test, the rest to
   train, so that no document (and no part of one) is in two splits;
4. tokens are bytes (vocabulary 256: UTF-8 as it is, no tokenizer to train); each document is
   followed by byte 0, which the text never contains, as an end-of-document mark; each split is the
   concatenation of its documents, written as a 1-D uint8 array (train.npy, validation.npy,
   test.npy);
5. manifest.json records the source (package, version), the licence, the seed and fractions, and per
   split the document names, the document count, the token count (bytes) and a SHA-256 of the array;
   LICENSE.txt is the package's own copyright file (the Python Software Foundation License).

`prepare(documents, out, ...)` runs steps 3-5 on any folder of text files (the tests use a few small
ones); `load_split` and `load_manifest` read a prepared corpus back and check it against its
manifest.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._checks import check_choice
from .argtypes import non_negative_int
from .paths import project_root

PACKAGE = "python3.11-doc"
SOURCES_IN_PACKAGE = Path("usr/share/doc/python3.11/html/_sources")
COPYRIGHT_IN_PACKAGE = Path("usr/share/doc/python3.11-doc/copyright")
DOCUMENT_SUFFIX = ".rst.txt"
LICENCE = {
    "name": "PSF License Agreement (Python Software Foundation License Version 2)",
    "spdx": "PSF-2.0",
    "file": "LICENSE.txt",
    "note": "the text of the Python documentation is under the PSF License; its code examples are "
            "dual-licensed under the PSF License and the Zero-Clause BSD licence (0BSD)",
}
SPLITS = ("train", "validation", "test")
VOCAB_SIZE = 256
END_OF_DOCUMENT = 0
MANIFEST = "manifest.json"
FORMAT = 1
DEFAULT_SEED = 0
DEFAULT_FRACTION = 0.05


class CorpusError(RuntimeError):
    """The corpus cannot be fetched, prepared or read; the message says why and what to do."""


@dataclass(frozen=True)
class Document:
    name: str       # path relative to the documents' folder, with "/"
    text: bytes


# ---------------------------------------------------------------- fetching


def _run(command: list[str], cwd: Path | None = None) -> str:
    """Run a command; a missing program or a failure becomes a CorpusError with its output."""
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise CorpusError(
            f"`{command[0]}` is not installed here: the corpus is Debian's {PACKAGE} package, "
            "fetched with apt-get download and unpacked with dpkg-deb; without apt-get, download "
            "the .deb by hand and pass it with --deb (dpkg-deb is still needed)"
        ) from None
    if done.returncode != 0:
        raise CorpusError(f"`{' '.join(command)}` failed (exit status {done.returncode}):\n"
                          f"{(done.stderr or done.stdout).strip()}")
    return done.stdout


def download_package(folder: Path) -> Path:
    """`apt-get download python3.11-doc` into folder (earlier downloads removed) → the .deb."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob(f"{PACKAGE}_*.deb"):
        old.unlink()
    _run(["apt-get", "download", PACKAGE], cwd=folder)
    found = sorted(folder.glob(f"{PACKAGE}_*.deb"))
    if len(found) != 1:
        raise CorpusError(f"apt-get download {PACKAGE} left {len(found)} packages in {folder}, "
                          "expected one")
    return found[0]


def package_version(deb: Path) -> str:
    return _run(["dpkg-deb", "--field", str(deb), "Version"]).strip()


def unpack_package(deb: Path, folder: Path) -> Path:
    """`dpkg-deb -x` into folder (emptied first) → the folder."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    _run(["dpkg-deb", "-x", str(deb), str(folder)])
    return folder


# ---------------------------------------------------------------- documents and splits


def read_documents(folder: Path, suffix: str = DOCUMENT_SUFFIX) -> list[Document]:
    """Every file under folder whose name ends with suffix, sorted by name."""
    paths = sorted(p for p in Path(folder).rglob(f"*{suffix}") if p.is_file())
    if not paths:
        raise CorpusError(f"no *{suffix} file under {folder}")
    documents = [Document(p.relative_to(folder).as_posix(), p.read_bytes()) for p in paths]
    marked = [d.name for d in documents if END_OF_DOCUMENT in d.text]
    if marked:
        raise CorpusError(f"byte {END_OF_DOCUMENT} marks the end of a document but occurs inside "
                          f"{marked[:5]}")
    return documents


def split_names(names: list[str], seed: int, validation_fraction: float,
                test_fraction: float) -> dict[str, list[str]]:
    """Shuffle the sorted names with random.Random(seed); validation and test each get
    round(fraction · N) documents (at least one), train the rest (at least one). Each split's names
    come back sorted."""
    names = sorted(names)
    counts = {"validation": max(1, round(validation_fraction * len(names))),
              "test": max(1, round(test_fraction * len(names)))}
    if counts["validation"] + counts["test"] >= len(names):
        raise CorpusError(f"{len(names)} documents cannot make three splits with "
                          f"{counts['validation']} for validation and {counts['test']} for test: "
                          "the training split would be empty")
    order = list(names)
    random.Random(seed).shuffle(order)
    cut = counts["validation"] + counts["test"]
    chosen = {"validation": order[:counts["validation"]], "test": order[counts["validation"]:cut],
              "train": order[cut:]}
    return {split: sorted(chosen[split]) for split in SPLITS}


def byte_tokens(documents: list[Document]) -> np.ndarray:
    """The documents' bytes, each followed by END_OF_DOCUMENT: a 1-D uint8 array."""
    marked = b"".join(d.text + bytes([END_OF_DOCUMENT]) for d in documents)
    return np.frombuffer(marked, dtype=np.uint8).copy()


def sha256(array: np.ndarray) -> str:
    return hashlib.sha256(array.tobytes()).hexdigest()


# ---------------------------------------------------------------- preparing and reading


def prepare(documents_folder: Path, out: Path, source: dict, licence_file: Path | None = None,
            licence: dict | None = None, seed: int = DEFAULT_SEED,
            validation_fraction: float = DEFAULT_FRACTION,
            test_fraction: float = DEFAULT_FRACTION, suffix: str = DOCUMENT_SUFFIX) -> dict:
    """Split the documents of documents_folder by document, write the three uint8 arrays, the
    manifest (and a copy of licence_file as LICENSE.txt) into out → the manifest."""
    documents = {d.name: d for d in read_documents(documents_folder, suffix)}
    names = split_names(list(documents), seed, validation_fraction, test_fraction)
    out.mkdir(parents=True, exist_ok=True)
    splits = {split: write_split(out, split, names[split], documents) for split in SPLITS}
    if licence_file is not None:
        shutil.copyfile(licence_file, out / LICENCE["file"])
    manifest = {"format": FORMAT, "tokenizer": "bytes", "vocab_size": VOCAB_SIZE,
                "end_of_document": END_OF_DOCUMENT, "source": source, "licence": licence,
                "seed": seed, "fractions": {"validation": validation_fraction,
                                            "test": test_fraction},
                "documents": len(documents),
                "text_bytes": sum(len(d.text) for d in documents.values()),
                "splits": splits}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def write_split(out: Path, split: str, names: list[str], documents: dict[str, Document]) -> dict:
    """The documents named (names sorted), each followed by END_OF_DOCUMENT, as out/<split>.npy →
    the split's entry in the manifest."""
    tokens = byte_tokens([documents[name] for name in names])
    np.save(out / f"{split}.npy", tokens)
    return {"file": f"{split}.npy", "documents": len(names), "tokens": int(tokens.size),
            "text_bytes": sum(len(documents[name].text) for name in names),
            "sha256": sha256(tokens), "names": names}


def load_manifest(folder: Path) -> dict:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise CorpusError(f"{folder} holds no prepared corpus ({MANIFEST} is missing): build it "
                          "with `python -m retnet_ref corpus` (or `make corpus`)")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise CorpusError(f"{path} has format {manifest.get('format')!r}, this version reads "
                          f"{FORMAT}: rebuild it")
    return manifest


def load_split(folder: Path, split: str, manifest: dict | None = None) -> np.ndarray:
    """One split's tokens (1-D uint8), checked against the manifest (size and SHA-256)."""
    check_choice(split, SPLITS, "split")
    manifest = load_manifest(folder) if manifest is None else manifest
    entry = manifest["splits"][split]
    tokens = np.load(Path(folder) / entry["file"])
    if tokens.dtype != np.uint8 or tokens.ndim != 1 or tokens.size != entry["tokens"] \
            or sha256(tokens) != entry["sha256"]:
        raise CorpusError(f"{Path(folder) / entry['file']} does not match {MANIFEST} (changed or "
                          "damaged): rebuild the corpus with `python -m retnet_ref corpus`")
    return tokens


def build(out: Path, download_folder: Path, deb: Path | None = None, seed: int = DEFAULT_SEED,
          validation_fraction: float = DEFAULT_FRACTION,
          test_fraction: float = DEFAULT_FRACTION) -> dict:
    """The whole pipeline: download (unless deb is given), unpack, prepare → the manifest."""
    deb = download_package(download_folder) if deb is None else deb
    unpacked = unpack_package(deb, download_folder / "unpacked")
    sources = unpacked / SOURCES_IN_PACKAGE
    if not sources.is_dir():
        raise CorpusError(f"{deb.name} has no {SOURCES_IN_PACKAGE}/: not the package this corpus "
                          "is built from")
    source = {"distribution": "Debian", "package": PACKAGE, "version": package_version(deb),
              "file": deb.name, "folder": SOURCES_IN_PACKAGE.as_posix(), "suffix": DOCUMENT_SUFFIX}
    return prepare(sources, out, source, unpacked / COPYRIGHT_IN_PACKAGE, LICENCE, seed,
                   validation_fraction, test_fraction)


# ---------------------------------------------------------------- command line


def fraction(text: str) -> float:
    """argparse type: a number in [0, 0.5)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 0.5), got {text!r}") from None
    if not 0.0 <= value < 0.5:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 0.5), got {value}")
    return value


def summary(manifest: dict, out: Path) -> str:
    """What was written: per split the documents and tokens."""
    lines = [f"corpus in {out}: {manifest['documents']} documents, {manifest['text_bytes']:,} "
             f"bytes of text ({manifest['source'].get('package')} "
             f"{manifest['source'].get('version')}), byte tokens"]
    for split in SPLITS:
        entry = manifest["splits"][split]
        lines.append(f"  {split:<10} {entry['documents']:>4} documents {entry['tokens']:>11,} "
                     "tokens")
    return "\n".join(lines)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """The `corpus` subcommand; running it calls `run`."""
    parser = subparsers.add_parser(
        "corpus", help="fetch and prepare the training corpus (Debian's python3.11-doc) in "
                       "build/corpus/",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", metavar="DIR",
                        help="folder of the prepared corpus (default: build/corpus)")
    parser.add_argument("--download-dir", metavar="DIR",
                        help="folder the package is downloaded and unpacked in (default: "
                             "build/debian)")
    parser.add_argument("--deb", metavar="PATH",
                        help=f"use this {PACKAGE} .deb instead of downloading one")
    parser.add_argument("--seed", type=non_negative_int, default=DEFAULT_SEED,
                        help=f"seed of the document shuffle (default: {DEFAULT_SEED})")
    parser.add_argument("--validation-fraction", type=fraction, default=DEFAULT_FRACTION,
                        metavar="F",
                        help="share of the documents held out for validation (default: "
                             f"{DEFAULT_FRACTION})")
    parser.add_argument("--test-fraction", type=fraction, default=DEFAULT_FRACTION, metavar="F",
                        help="share of the documents held out for test (default: "
                             f"{DEFAULT_FRACTION})")
    parser.set_defaults(func=lambda args: run(args, parser))
    return parser


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    root = project_root()
    out = Path(args.out) if args.out else root / "build" / "corpus"
    download_folder = Path(args.download_dir) if args.download_dir else root / "build" / "debian"
    deb = None
    if args.deb:
        deb = Path(args.deb)
        if not deb.is_file() or deb.suffix != ".deb":
            parser.error(f"--deb: expected a .deb file, got {args.deb!r}"
                         + (" (no such file)" if not deb.exists() else ""))
    try:
        manifest = build(out, download_folder, deb, args.seed, args.validation_fraction,
                         args.test_fraction)
    except CorpusError as err:
        print(f"corpus: {err}", file=sys.stderr)
        return 1
    print(summary(manifest, out))
    return 0

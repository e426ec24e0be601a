"""The GPU measurements committed in results/: load a `bench` report and pick its rows.

    report = load("bench-h200-inference")     # {"environment", "options", <suite>: rows, "summary"}
    mine = load_path("my-gpu.json")           # a report of your own run (bench --out my-gpu.json)
    rows(report, "inference", model="retnet_triton", table="batch")     # the rows whose fields
    match training_summary()                        # the training comparison's runs
    (results/training/) seconds_of(row["step"])                   # a time entry's seconds, None if
    it was not measured

A report is the JSON `python -m retnet_ref bench --out PATH` writes (retnet_ref/bench.py documents
its fields); results/README.md lists the committed ones with the commands that made them.
"""
from __future__ import annotations

import json
from pathlib import Path

from .paths import project_root


def results_dir() -> Path:
    """results/ of the checkout (the reports are data of the repository, not of the installed
    package)."""
    return project_root() / "results"


def available() -> list[str]:
    """Names of the committed reports (file names without .json)."""
    return sorted(path.stem for path in results_dir().glob("*.json"))


def load(name: str) -> dict:
    """The report results/<name>.json."""
    path = results_dir() / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no report {name!r} in {results_dir()}: the committed ones are "
                                f"{available()} (run from a checkout of the repository)")
    return load_path(path)


def load_path(path) -> dict:
    """The report in the JSON file at path (any file `bench --out` wrote)."""
    return json.loads(Path(path).read_text())


def training_summary() -> dict:
    """The training comparison's summary, results/training/summary.json (`python -m retnet_ref
    compare`)."""
    return load("training/summary")


def rows(report: dict, suite: str, **where) -> list[dict]:
    """The rows of one suite whose fields equal every keyword given, in the report's order."""
    if suite not in report:
        suites = [name for name in report if name not in ("environment", "options", "summary")]
        raise KeyError(f"the report has no suite {suite!r}; it has {suites}")
    return [row for row in report[suite]
            if all(row.get(key) == value for key, value in where.items())]


def seconds_of(entry: dict | None) -> float | None:
    """The seconds of a measured entry ({"status": "ok", "seconds": …}); None for any other
    status."""
    return entry["seconds"] if entry and entry.get("status") == "ok" else None

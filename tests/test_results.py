"""retnet_ref.results: the committed reports load, their rows select, and a missing one is named."""
from __future__ import annotations

import pytest

from retnet_ref import bench, results


def test_every_committed_report_loads_with_its_environment():
    names = results.available()
    assert "bench-h200-inference" in names and "bench-h200-training" in names
    for name in names:
        report = results.load(name)
        env = report["environment"]
        assert env["gpu"] == "NVIDIA H200" and env["command"].startswith("python -m retnet_ref "
                                                                         "bench")
        assert f"--out results/{name}.json" in env["command"]     # the command as run from the root
        assert all(suite in report for suite in report["options"]["suites"])


def test_rows_select_by_field():
    report = results.load("bench-h200-inference")
    picked = results.rows(report, "inference", model="transformer", preset="6.7B", table="batch")
    assert picked and all(r["model"] == "transformer" and r["table"] == "batch" for r in picked)
    assert [r["batch"] for r in picked] == report["options"]["latency_batches"]


def test_a_missing_report_or_suite_is_named():
    with pytest.raises(FileNotFoundError, match="no report 'bench-a100'.*bench-h200-inference"):
        results.load("bench-a100")
    with pytest.raises(KeyError, match="no suite 'forms'.*'inference'"):
        results.rows(results.load("bench-h200-inference"), "forms")


def test_seconds_of_reads_only_measured_entries():
    assert results.seconds_of({"status": bench.OK, "seconds": 0.5}) == 0.5
    assert results.seconds_of({"status": bench.DOES_NOT_FIT, "reason": "needs 200 GiB"}) is None
    assert results.seconds_of(None) is None

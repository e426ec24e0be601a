"""examples/triton_ncu.py's summary of an Nsight Compute CSV: each length's last call, its metrics
as numbers, and a CSV of the wrong shape refused."""
from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def triton_ncu():
    spec = importlib.util.spec_from_file_location("triton_ncu", ROOT / "examples" / "triton_ncu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_csv(path, kernels):
    """An ncu --csv --page details file: a warning line, then one row per (launch, metric)."""
    with open(path, "w", newline="") as f:
        f.write("==WARNING== Note: Running with unmodified GPU clocks.\n")
        writer = csv.writer(f, quoting=csv.QUOTE_ALL)
        writer.writerow(["ID", "Kernel Name", "Section Name", "Metric Name", "Metric Unit",
                         "Metric Value"])
        for launch, kernel in enumerate(kernels):
            writer.writerow([launch, kernel, "GPU Speed Of Light Throughput", "Duration", "ns",
                             f"{1000 + launch:,}"])
            writer.writerow([launch, kernel, "Launch Statistics", "Registers Per Thread",
                             "register/thread", "237"])
            writer.writerow([launch, kernel, "Launch Statistics", "Function Cache Configuration",
                             "", "CachePreferNone"])


def launches_of_calls(module, split_at=65536):
    """Four calls per length: pass 1 and the output pass, two pass-1 launches where split."""
    kernels = []
    for T in module.LENGTHS:
        passes = (["_states_kernel"] * (2 if T >= split_at else 1)) + ["_output_kernel"]
        kernels += passes * (module.WARMUP + 1)
    return kernels


def test_the_summary_keeps_each_lengths_last_call(tmp_path):
    module = triton_ncu()
    kernels = launches_of_calls(module)
    write_csv(tmp_path / "ncu.csv", kernels)
    module.main(["summarise", str(tmp_path / "ncu.csv"), str(tmp_path / "out.json")])
    rows = json.loads((tmp_path / "out.json").read_text())["rows"]
    assert [r["length"] for r in rows] == list(module.LENGTHS)
    # the last call of the first length is launches 6 and 7; of the last length, the last three
    first, last = rows[0]["last_call"], rows[-1]["last_call"]
    assert [launch["duration_ns"] for launch in first] == [1006.0, 1007.0]
    assert [launch["kernel"] for launch in last] == ["_states_kernel"] * 2 + ["_output_kernel"]
    assert last[-1]["duration_ns"] == 1000.0 + len(kernels) - 1
    assert all(launch["registers_per_thread"] == 237.0 for r in rows for launch in r["last_call"])
    assert all("Function Cache Configuration" not in launch for launch in first)


def test_a_csv_with_a_call_missing_is_refused(tmp_path):
    module = triton_ncu()
    write_csv(tmp_path / "ncu.csv", launches_of_calls(module)[:-2])
    with pytest.raises(ValueError, match="expected 4 calls for each of"):
        module.summarise(str(tmp_path / "ncu.csv"))

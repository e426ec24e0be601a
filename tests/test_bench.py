"""`python -m retnet_ref bench` on the CPU at tiny sizes: usage errors, --help, each suite's rows
and JSON, and the "does not fit" paths. Timing values are only checked to be positive and finite."""
from __future__ import annotations

import argparse
import json
import math
import platform

import pytest
import torch

from retnet_ref import bench
from retnet_ref.__main__ import main

# tiny sizes of each suite (--batch and --contexts serve both decode and model)
FORMS = ["--tokens", "64", "--lengths", "16", "32", "--heads", "2", "--head-dim", "8",
         "--chunk-sizes", "8", "16"]
DECODE = ["--batch", "1", "--decode-heads", "2", "--decode-head-dim", "8", "--contexts", "8", "32"]
MODEL = ["--preset", "tiny", "--batch", "1", "--contexts", "4", "16", "--steps", "2"]
QUICK = ["--device", "cpu", "--warmup", "1", "--repeats", "2"]
ENVIRONMENT_KEYS = {"date", "command", "python", "platform", "torch", "cuda_runtime", "triton",
                    "fla", "device",
                    "gpu", "driver", "copy_bandwidth_bytes_per_second"}


def run_bench(tmp_path, capsys, *args) -> tuple[dict, str]:
    out = tmp_path / "results" / "bench.json"
    assert main(["bench", *QUICK, *args, "--out", str(out)]) == 0
    return json.loads(out.read_text()), capsys.readouterr().out


def entries(report: dict):
    """Every timing entry of every suite in the report."""
    for row in report.get("forms", []):
        yield from row["times"].values()
    for row in report.get("decode", []):
        yield from (row[key] for key in ("eager", "graph") if key in row)
    for row in report.get("model", []):
        if "step" in row:
            yield row["step"]


def assert_measured_times_positive(report: dict):
    measured = [e for e in entries(report) if e["status"] == bench.OK]
    assert measured
    for entry in measured:
        assert math.isfinite(entry["seconds"]) and entry["seconds"] > 0


@pytest.mark.parametrize("args, message", [
    (["--tokens", "0"], "positive integer"),
    (["--lengths", "16", "-4"], "positive integer"),
    (["--heads", "two"], "positive integer"),
    (["--chunk-sizes", "0"], "positive integer"),
    (["--triton-chunk-sizes", "48"], "must be one of (16, 32, 64, 128)"),
    (["--steps", "0"], "positive integer"),
    (["--suite", "pretraining"], "invalid choice"),
    (["--preset", "13B"], "invalid choice"),
    (["--dtype", "int8"], "invalid choice"),
    (["--tokens", "32", "--lengths", "64"], "--tokens"),
])
def test_bad_options_are_usage_errors(args, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--device", "cpu", *args])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err and message in err


def test_cuda_without_a_device_is_a_usage_error(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--device", "cuda"])
    assert exit_.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())   # undo argparse's line wrapping
    options = ["--suite", "--device", "--dtype", "--tokens", "--lengths", "--heads", "--head-dim",
               "--chunk-sizes",
               "--batch", "--decode-heads", "--decode-head-dim", "--contexts", "--preset",
               "--warmup", "--repeats",
               "--steps", "--compile", "--compile-chunk-sizes", "--triton-chunk-sizes", "--out"]
    for option in options:
        assert option in text
    assert text.count("on cuda") >= len(bench.DEVICE_DEFAULTS)   # every size says both defaults


def test_cpu_defaults_are_the_small_ones():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    bench_parser = bench.add_parser(sub)
    opts = bench.resolve_options(parser.parse_args(["bench", "--device", "cpu"]), bench_parser)
    assert opts.preset == "tiny" and opts.dtype == "float32"
    assert opts.suites == bench.DEFAULT_SUITES
    assert opts.tokens == bench.DEVICE_DEFAULTS["tokens"][1]


def test_forms_suite(tmp_path, capsys):
    report, out = run_bench(tmp_path, capsys, "--suite", "forms", *FORMS)
    assert ENVIRONMENT_KEYS <= set(report["environment"])
    env = report["environment"]
    assert (
        env["device"] == "cpu" and env["torch"] == torch.__version__ and "bench" in env["command"]
    )
    assert platform.node() not in json.dumps(env) and "hostname" not in env
    assert env["copy_bandwidth_bytes_per_second"] > 0
    assert report["options"]["lengths"] == [16, 32] and report["options"]["suites"] == ["forms"]
    assert {"decode", "model"}.isdisjoint(report)
    rows = report["forms"]
    assert [(r["pass"], r["length"], r["batch"]) for r in rows] == [
        ("fwd", 16, 4), ("fwd+bwd", 16, 4), ("fwd", 32, 2), ("fwd+bwd", 32, 2)]
    for row in rows:
        assert set(row["times"]) == {"chunkwise_8", "chunkwise_16", "parallel", "sdpa_causal",
                                     "fla_chunk_retention",
                                     "triton_32"}
        # fla runs on CUDA only
        assert row["times"]["fla_chunk_retention"]["status"] == bench.UNAVAILABLE
        assert row["times"]["triton_32"]["status"] == bench.UNAVAILABLE         # timed on CUDA only
        assert row["chunkwise_triton"] is None and row["triton_over_fla"] is None
        assert row["chunkwise_best"]["chunk_size"] in (8, 16)
        assert row["best_over_sdpa"] > 0 and row["best_over_fla"] is None
        # the floor: 4 (forward) or 8 (with the backward) float32 tensors of B·H·T·d = 64·2·8
        tensors = 4 if row["pass"] == "fwd" else 8
        bandwidth = env["copy_bandwidth_bytes_per_second"]
        assert row["floor_seconds"] == pytest.approx(tensors * 64 * 2 * 8 * 4 / bandwidth)
        # CUDA-graph replays: only of the fused kernels, and not on the CPU
        assert row["times"]["sdpa_causal"]["graph"]["status"] == bench.UNAVAILABLE
        assert "graph" not in row["times"]["chunkwise_8"] and row["triton_graph"] is None
        assert row["triton_graph_over_floor"] is None
    assert_measured_times_positive(report)
    flat = report["summary"]["forms"]["chunkwise_best_per_token_across_lengths"]
    assert set(flat) == {"fwd", "fwd+bwd"} and all(f["max_over_min"] >= 1 for f in flat.values())
    assert "forms, fwd:" in out and "forms, fwd+bwd:" in out and "best/sdpa" in out
    assert "forms, fwd+bwd, replayed as CUDA graphs" in out and "CUDA graphs need a CUDA" in out


def test_graphed_ratios_take_the_best_triton_replay():
    ok = lambda eager, graph: {"status": bench.OK, "seconds": eager,
                               "graph": {"status": bench.OK, "seconds": graph}}
    times = {"triton_64": ok(9.0, 2.0), "triton_128": ok(1.0, 3.0),   # eager order is not graph's
             "triton_32": {"status": bench.DOES_NOT_FIT, "reason": "r"},
             "sdpa_causal": ok(5.0, 4.0), "fla_chunk_retention": ok(6.0, 2.5)}
    ratios = bench.graphed_ratios(times, floor=0.5)
    assert ratios["triton_graph"] == {"chunk_size": 64, "seconds": 2.0}
    assert ratios["triton_graph_over_fla_graph"] == pytest.approx(0.8)
    assert ratios["triton_graph_over_sdpa_graph"] == pytest.approx(0.5)
    assert ratios["triton_graph_over_floor"] == 4.0 and ratios["fla_graph_over_floor"] == 5.0
    times["fla_chunk_retention"]["graph"] = {"status": bench.CAPTURE_FAILED, "reason": "sync"}
    assert bench.graphed_ratios(times, floor=0.5)["triton_graph_over_fla_graph"] is None


def test_decode_suite(tmp_path, capsys):
    report, out = run_bench(tmp_path, capsys, "--suite", "decode", *DECODE)
    rows = report["decode"]
    assert [(r["method"], r["context"]) for r in rows] == [
        ("recurrent_retention", None), ("triton_normalised_step", None),
                                                           ("fla_fused_recurrent_retention", None),
        ("sdpa_kv_cache", 8), ("sdpa_kv_cache", 32)]
    recurrent, fused, fla, *attention = rows
    assert (
        recurrent["state_bytes"] == 1 * 2 * 8 * 8 * 4
        and recurrent["bytes_moved"] == 2 * recurrent["state_bytes"]
    )
    assert fla["status"] == bench.UNAVAILABLE and fused["status"] == bench.UNAVAILABLE   # CUDA only
    assert [r["state_bytes"] for r in attention] == [2 * 1 * 2 * L * 8 * 4 for L in (8, 32)]
    for row in (recurrent, *attention):
        assert row["eager"]["status"] == bench.OK
        assert row["graph"]["status"] == bench.UNAVAILABLE        # no CUDA graphs on the CPU
        assert row["floor_seconds"] > 0 and row["best_over_floor"] > 0 and row["over_recurrent"] > 0
    assert_measured_times_positive(report)
    assert "eager µs" in out and "sdpa_kv_cache" in out


def test_model_suite(tmp_path, capsys):
    report, out = run_bench(tmp_path, capsys, "--suite", "model", *MODEL)
    rows = report["model"]
    assert [(r["model"], r["context"]) for r in rows] == [
        # the Triton step: CUDA only
        ("retnet", 4), ("retnet", 16), ("transformer", 4), ("transformer", 16)]
    assert [r["backend"] for r in rows] == ["torch", "torch", None, None]
    for row in rows:
        assert row["status"] == bench.OK and not row["cuda_graph"]
        assert (
            row["tokens_per_second"] > 0 and row["floor_seconds"] > 0 and row["step_over_floor"] > 0
        )
        assert row["weights_bytes"] == row["parameters"] * 4 and row["state_bytes"] > 0
    retnet, transformer = rows[0], rows[2]
    assert rows[1]["state_bytes"] == retnet["state_bytes"]          # RetNet's state does not grow
    assert rows[3]["state_bytes"] > transformer["state_bytes"]     # the KV cache does
    assert_measured_times_positive(report)
    summary = report["summary"]["model"]
    assert summary["retnet_step_across_contexts"]["flat"] in (True, False)
    assert "retnet step time across contexts" in out


def test_nothing_fits_gives_rows_not_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench, "available_bytes", lambda device: 0)
    report, out = run_bench(tmp_path, capsys, "--suite", "forms", "decode", "model", *FORMS,
                            *DECODE, *MODEL)
    assert report["options"]["suites"] == ["forms", "decode", "model"]
    for row in report["forms"]:
        measured = {name: e for name, e in row["times"].items()
                    if name not in ("fla_chunk_retention", "triton_32")}
        assert all(e["status"] == bench.DOES_NOT_FIT for e in measured.values())
        assert row["chunkwise_best"] is None
    assert all(r["status"] == bench.DOES_NOT_FIT for r in report["decode"]
               if r["method"] == "sdpa_kv_cache")
    assert all(r["status"] == bench.DOES_NOT_FIT and "GiB available" in r["reason"]
               for r in report["model"])
    assert "does not fit" in out


def test_out_of_memory_gives_a_row_not_an_error(tmp_path, capsys, monkeypatch):
    def parallel_out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("simulated")

    monkeypatch.setattr(bench, "parallel_retention", parallel_out_of_memory)
    report, _ = run_bench(tmp_path, capsys, "--suite", "forms", *FORMS)
    for row in report["forms"]:
        assert row["times"]["parallel"] == {"status": bench.DOES_NOT_FIT, "reason": "out of memory"}
        assert row["times"]["sdpa_causal"]["status"] == bench.OK


def test_presets_match_the_models():
    for preset in bench.PRESETS:
        bench.model_config("retnet", preset)
        bench.model_config("transformer", preset)


def test_compile_is_off_on_the_cpu_unless_asked_and_adds_compiled_columns(tmp_path, capsys,
                                                                          monkeypatch):
    parser = argparse.ArgumentParser()
    bench_parser = bench.add_parser(parser.add_subparsers())
    assert not bench.resolve_options(parser.parse_args(["bench", "--device", "cpu"]),
                                     bench_parser).compile
    # the plumbing only: inductor's compile time is no business of a CPU test, so "compiling" is the
    # identity here
    monkeypatch.setattr(bench, "compiled", lambda fn: fn)
    report, out = run_bench(tmp_path, capsys, "--suite", "forms", *FORMS, "--compile",
                            "--compile-chunk-sizes", "8")
    for row in report["forms"]:
        assert (
            row["times"]["compiled_8"]["status"] == "ok"
            and row["chunkwise_compiled"]["chunk_size"] == 8
        )
        assert row["chunkwise_best"]["chunk_size"] in (8, 16)    # the best eager column stays eager
    assert "comp C=8" in out and "chunkwise compiled, time per token" in out


INFERENCE = ["--presets", "tiny", "--batch", "2", "--inference-lengths", "8", "16",
             "--latency-batches", "1", "3",
             "--latency-length", "12", "--steps", "2", "--prefill-repeats", "1"]


def test_inference_suite(tmp_path, capsys):
    report, out = run_bench(tmp_path, capsys, "--suite", "inference", *INFERENCE)
    rows = report["inference"]
    expected = [(kind, table, L, B) for kind in ("retnet", "transformer")
                for table, L, B in (("length", 8, 2), ("length", 16, 2), ("batch", 12, 1),
                                    ("batch", 12, 3))]
    assert [(r["model"], r["table"], r["context"], r["batch"]) for r in rows] == expected
    for row in rows:
        assert row["status"] == bench.OK and row["tokens_per_second"] > 0 and row["state_bytes"] > 0
        if row["table"] == "length":
            assert row["prefill"]["status"] == bench.OK and row["prefill"]["seconds"] > 0
            assert row["prefill"]["tokens_per_second"] == pytest.approx(
                2 * row["context"] / row["prefill"]["seconds"]
            )
    retnet = {(r["table"], r["batch"], r["context"]): r for r in rows if r["model"] == "retnet"}
    transformer = {(r["table"], r["batch"], r["context"]): r for r in rows
                   if r["model"] == "transformer"}
    # a fixed state
    assert retnet["length", 2, 8]["state_bytes"] == retnet["length", 2, 16]["state_bytes"]
    # a growing cache
    assert transformer["length", 2, 16]["state_bytes"] > transformer["length", 2, 8]["state_bytes"]
    # S and z grow with the batch; each layer's position counter does not
    assert 2.99 < retnet["batch", 3, 12]["state_bytes"] / retnet["batch", 1, 12]["state_bytes"] <= 3
    summary = report["summary"]["inference"]["tiny"]
    assert summary["largest_batch"] == {"retnet": 3, "transformer": 3}
    versus = summary["versus_transformer"]["retnet"]
    assert versus["context"] == 16 and versus["throughput_retnet_over_transformer"] > 0
    assert versus["step_time_transformer_over_retnet"] == pytest.approx(
        transformer["length", 2, 16]["step"]["seconds"] / retnet["length", 2,
                                                                 16]["step"]["seconds"])
    assert "inference: prefill and decode" in out and "largest batch at L=12" in out


def test_inference_rows_that_do_not_fit_are_reported(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench, "available_bytes", lambda device: 0)
    report, out = run_bench(tmp_path, capsys, "--suite", "inference", *INFERENCE)
    assert report["inference"] and all(r["status"] == bench.DOES_NOT_FIT
                                       for r in report["inference"])
    summary = report["summary"]["inference"]["tiny"]
    assert summary["largest_batch"] == {"retnet": None,
                                        "transformer": None} and not summary["versus_transformer"]
    assert "does not fit" in out


def test_training_suite(tmp_path, capsys):
    report, out = run_bench(tmp_path, capsys, "--suite", "training", "--train-preset", "tiny",
                            "--train-lengths", "16",
                            "--train-batch", "2", "--steps", "1")
    rows = report["training"]
    # Triton: CUDA only
    assert [r["column"] for r in rows] == ["retnet", "transformer_sdpa", "transformer_math"]
    for row in rows:
        assert row["status"] == bench.OK and row["tokens_per_second"] == pytest.approx(
            2 * 16 / row["seconds"]
        )
    assert report["summary"]["training"]["retnet_at_16"]["tokens_per_second_over_retnet"] == 1.0
    env = report["environment"]
    # one process
    assert (env["world_size"], env["parallel"], env["gpu_count"]) == (1, bench.NO_PARALLEL, 0)
    assert "training: one step" in out and "B per process" not in out


def test_a_training_step_learns():
    """The timed step is a real training step: a few of them lower the loss on a repeated batch."""
    parser = argparse.ArgumentParser()
    bench_parser = bench.add_parser(parser.add_subparsers())
    opts = bench.resolve_options(parser.parse_args(["bench", "--device", "cpu"]), bench_parser)
    model = bench.build_model("retnet", opts)["model"].train()
    tokens = torch.randint(0, model.config.vocab_size, (2, 17),
                           generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    loss = lambda: torch.nn.functional.cross_entropy(model(tokens[:, :-1], "chunkwise",
                                                           8)[0].flatten(0, 1),
                                                     tokens[:, 1:].flatten()).item()
    before, step = loss(), bench.training_step("retnet", model, tokens, optimizer)
    for _ in range(5):
        step()
    assert loss() < before - 0.1

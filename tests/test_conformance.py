"""The conformance report (retnet_ref.conformance, `verify --impl`): our forms pass, known mistakes
are named."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from retnet_ref import __main__ as cli
from retnet_ref import conformance
from retnet_ref.retention import parallel_retention
from retnet_ref.rotation import rotate, theta_schedule

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "conformance"


def example(name):
    """An examples/conformance module, loaded from its file (the folder is no installed package)."""
    spec = importlib.util.spec_from_file_location(f"conformance_example_{name}",
                                                  EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def peer(name, module):
    """A peer's adapter, or a skip that says which package is missing and how to install it."""
    pytest.importorskip(module,
                        reason=f"{module} is not installed (pip install --no-deps, see {name}.py)")
    return example(name)


ours = example("ours")
broken = example("broken")


def failing(report, check=None):
    return [r for r in report.rows if not r.passed and (check is None or check in r.check)]


@pytest.mark.parametrize("impl,lengths",
                         [(ours.forms, None), (ours.parallel, None), (ours.paper, (1, 64, 100))],
                         ids=["forms", "parallel", "paper"])
def test_our_forms_pass_every_row(impl, lengths):
    report = conformance.check(impl, devices=["cpu"], lengths=lengths)
    assert report.passed, conformance.Report.format(report)
    low = [r for r in report.rows if r.dtype != "float64" and "vs float64 truth" in r.check]
    assert low and all(r.error > 0 for r in low)                 # measured, not a copy of the truth
    assert {r.dtype for r in report.rows} == {"float64", "float32", "bfloat16"}
    assert all(r.tolerance == conformance.TOLERANCE[conformance.DTYPES[r.dtype]]
               for r in report.rows)


def test_the_report_covers_lengths_gammas_states_causality_and_gradients():
    rows = conformance.check(ours.forms, devices=["cpu"], dtypes=("float64",)).rows
    checks, lengths = [r.check for r in rows], {r.length for r in rows}
    assert lengths == {1, 64, 100, 300}               # one token, whole chunks, ragged, many chunks
    for expected in ("recurrent, causality", "chunkwise, γ = 1 − 1e-6", "chunkwise, γ = 1",
                     "chunkwise, initial state S_0", "chunkwise, final state S_T",
                     "hand-off recurrent → chunkwise",
                     "hand-off chunkwise → recurrent", "chunkwise, gradients of q, k, v"):
        assert any(check.startswith(expected) for check in checks), expected


def test_the_unbroken_chunk_loop_passes_so_each_flaw_is_what_fails():
    assert conformance.check(broken.unbroken, devices=["cpu"], dtypes=("float64", "float32")).passed


@pytest.mark.parametrize("impl,phrase,failing_lengths", [
    (broken.no_zeta, "the state carried between chunks is built wrong (ζ left out", {64, 100, 300}),
    (broken.float32_chunk_decay, "the error grows with the chunk count: a decay rounded per chunk",
     {64, 100, 300}),
    (broken.ragged_end, "only the last chunk is wrong", {100, 300}),
    (broken.leaky_mask, "future affects the past", {64, 100, 300}),
], ids=lambda x: getattr(x, "name", None))
def test_each_broken_copy_is_caught_with_its_diagnosis(impl, phrase, failing_lengths):
    report = conformance.check(impl, devices=["cpu"], dtypes=("float64",))
    rows = failing(report, "vs float64 truth")
    assert {r.length for r in rows} == failing_lengths        # T = 1 (and 64 for a ragged end) pass
    assert all(phrase in r.diagnosis for r in rows), [r.diagnosis for r in rows]
    causal = [r for r in report.rows if "causality" in r.check]
    assert [r.passed for r in causal] == [impl is not broken.leaky_mask]


def test_a_leaky_mask_names_the_rows_the_future_reached():
    row = next(r for r in conformance.check(broken.leaky_mask, devices=["cpu"],
                                            dtypes=("float64",)).rows
               if "causality" in r.check)
    assert (
        row.error > 0.1
        and "moved rows 97..97" in row.diagnosis
        and "1 future token" in row.diagnosis
    )


def test_torchscale_scales_declared_as_the_papers_show_the_epsilon_pattern():
    report = conformance.check(ours.torchscale, devices=["cpu"], dtypes=("float64",),
                               lengths=(64, 100),
                               normalisation="paper")
    rows = failing(report, "vs float64 truth")
    assert {r.check.split()[0] for r in rows} == {"recurrent", "chunkwise"}
    assert all("its own factor" in r.diagnosis and "ε → 0" in r.diagnosis for r in rows)
    assert not failing(report, "parallel vs")           # torchscale's parallel scale is the paper's


def test_a_wrong_scale_is_named_with_its_factor():
    report = conformance.check(ours.parallel, devices=["cpu"], dtypes=("float64",), scale=0.5)
    rows = failing(report, "vs float64 truth")
    assert rows and all("the output is 2 × the truth everywhere" in r.diagnosis for r in rows)


def test_a_form_wrong_only_without_decay_is_named():
    def divides_by_the_gap(q, k, v, gamma, form, chunk_size=None, state=None):
        # (1 - γ) / (1 - γ) is 1, except at γ = 1
        return parallel_retention(q, k, v,
                                  gamma) * ((1 - gamma) / (1 - gamma)).to(q.dtype)[:, None, None]

    report = conformance.check(divides_by_the_gap, devices=["cpu"], dtypes=("float64",),
                               forms=("parallel",),
                               initial_state=False, final_state=False)
    assert [r.check for r in failing(report)] == ["parallel, γ = 1"]
    diagnosis = failing(report)[0].diagnosis
    assert (
        diagnosis.startswith("wrong only at γ = 1: a division by 1 − γ")
        and "non-finite output" in diagnosis
    )


def in_float32(q, k, v, gamma, form, chunk_size=None, state=None):
    """Our parallel form computed in float32 whatever the input dtype."""
    return parallel_retention(*(x.float() for x in (q, k, v)), gamma).to(q.dtype)


def test_float32_inside_a_float64_row_is_named():
    report = conformance.check(in_float32, devices=["cpu"], dtypes=("float64", "float32"),
                               forms=("parallel",),
                               initial_state=False, final_state=False)
    rows = failing(report)
    assert rows and all(r.dtype == "float64" for r in rows)
    assert all("computed in float32 inside" in r.diagnosis for r in rows
               if "gradients" not in r.check)


def seq_first(q, k, v, gamma, form, chunk_size=None, state=None):
    """Our chunkwise form for (B, T, H, d) inputs and a (d_v, d_k) state."""
    o, S = ours.stateful(*(x.transpose(1, 2) for x in (q, k, v)), gamma, "chunkwise", chunk_size,
                         None if state is None else state.transpose(-1, -2))
    return o.transpose(1, 2), S.transpose(-1, -2)


def test_declared_layouts_are_honoured_and_a_wrong_declaration_fails():
    declared = dict(devices=["cpu"], dtypes=("float64",), forms=("chunkwise",))
    assert conformance.check(seq_first, layout="BTHD", state_layout="VK", **declared).passed
    with pytest.raises(conformance.ConformanceError,
                       match=r"a state of shape \(2, 4, 16, 24\), expected \(2, 4, 24, 16\)"):
        conformance.check(ours.forms, state_layout="VK", **declared)
    assert not conformance.check(ours.stateful, layout="BTHD", **declared).passed


def rotating(q, k, v, gamma, form, chunk_size=None, state=None):
    """Our chunkwise form with the real-pair rotation applied inside, positions from 0."""
    theta = theta_schedule(q.shape[-1])
    return ours.stateful(rotate(q, theta), rotate(k, theta), v, gamma, "chunkwise", chunk_size,
                         state)


def test_a_rotation_inside_is_declared_and_checked():
    declared = dict(devices=["cpu"], dtypes=("float64",), forms=("chunkwise",), lengths=(64, 100))
    report = conformance.check(rotating, rotation="inside", **declared)
    assert report.passed and not any("hand-off" in r.check for r in report.rows)
    assert any("a rotation inside needs the position" in reason for reason in report.skipped)
    # undeclared, the rotation is an error
    assert not conformance.check(rotating, **declared).passed


def test_long_adds_a_long_ragged_length_and_says_what_it_skips():
    report = conformance.check(ours.forms, devices=["cpu"], dtypes=("float64",), lengths=(64,),
                               long=True)
    assert report.passed and {r.length for r in report.rows} == {64, 4104}
    assert not any(r.length == 4104 and r.check == "recurrent vs float64 truth"
                   for r in report.rows)
    assert any(reason.startswith("recurrent form at T > 1024") for reason in report.skipped)


def test_an_exception_inside_the_function_is_a_failing_row_with_its_message():
    def no_bf16(q, k, v, gamma, form, chunk_size=None, state=None):
        if q.dtype == torch.bfloat16:
            raise TypeError("bfloat16 is not supported")
        return parallel_retention(q, k, v, gamma)

    report = conformance.check(no_bf16, devices=["cpu"], forms=("parallel",), initial_state=False,
                               final_state=False)
    rows = failing(report)
    assert rows and all(r.dtype == "bfloat16" and r.error is None for r in rows)
    assert all(r.diagnosis == "the function raised TypeError: bfloat16 is not supported"
               for r in rows)
    assert all(row["error"] is None and not row["passed"] for row in report.as_dict()["rows"]
               if row["dtype"] == "bfloat16")


@pytest.mark.parametrize("bad,message", [
    (lambda q, k, v: q,
     "expected a function fn(q, k, v, gamma, form, chunk_size=None, state=None)"),
    (lambda q, k, v, gamma, form, chunk_size=None, state=None: (q[..., :3], None),
     "returned o of shape (2, 4, 100, 3), expected (2, 4, 100, 24) for layout BHTD (B, H, T, d)"),
    (lambda q, k, v, gamma, form, chunk_size=None, state=None: v,
     "returned Tensor; expected (o, state)"),
])
def test_a_function_that_does_not_fit_is_a_usage_error(bad, message):
    with pytest.raises(conformance.ConformanceError) as error:
        conformance.check(bad, devices=["cpu"], forms=("parallel",))
    assert message in str(error.value)


@pytest.mark.parametrize("declared,message", [
    ({"layout": "TBHD"}, "layout: expected one of BHTD, BTHD, got 'TBHD'"),
    ({"forms": ("parallel", "fast")}, "forms: expected some of parallel, recurrent, chunkwise"),
    ({"scale": -1.0}, "scale: expected a positive number or '1/sqrt(d_k)', got -1.0"),
    ({"chunk_size": 0}, "chunk_size: expected a positive integer or None, got 0"),
])
def test_bad_declarations_name_the_convention(declared, message):
    with pytest.raises(conformance.ConformanceError) as error:
        conformance.Conventions(**declared)
    assert message in str(error.value)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "retnet_ref", "verify", *args],
                          capture_output=True, text=True,
                          timeout=300, cwd=EXAMPLES.parent.parent)


def test_cli_passes_our_forms_and_fails_a_broken_copy_with_its_diagnosis():
    good = run_cli("--impl", "examples/conformance/ours.py:forms", "--device", "cpu", "--dtypes",
                   "float64", "bfloat16")
    assert good.returncode == 0, good.stdout + good.stderr
    assert "FAIL" not in good.stdout and good.stderr == ""
    bad = run_cli("--impl", "examples.conformance.broken:no_zeta", "--dtypes", "float64",
                  "--device", "cpu",
                  "--lengths", "64", "100")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "diagnosis: the first chunk is right, every later chunk wrong" in bad.stdout
    assert "FAILED" in bad.stdout.splitlines()[-1]


def test_cli_json_is_the_report(capsys):
    status = cli.main(["verify", "--impl", str(EXAMPLES / "broken.py") + ":ragged_end", "--json",
                       "--dtypes", "float64", "--lengths", "64", "100", "--device", "cpu"])
    report = json.loads(capsys.readouterr().out)
    assert status == 1 and report["passed"] is False
    assert report["conventions"]["forms"] == ["chunkwise"]
    rows = {(r["check"], r["length"]): r for r in report["rows"]}
    assert rows[("chunkwise vs float64 truth", 64)]["passed"]
    bad = rows[("chunkwise vs float64 truth", 100)]
    assert (
        not bad["passed"]
        and bad["tolerance"] == 1e-12
        and bad["why"]
        and "ragged" in bad["diagnosis"]
    )


@pytest.mark.parametrize("args,message", [
    (["--impl", "no_such_module_here:fn"],
     "--impl: cannot import 'no_such_module_here': ModuleNotFoundError"),
    (["--impl", "examples/conformance/ours.py:nothing"], "has no attribute 'nothing'"),
    (["--impl", "examples/conformance/ours.py"],
     "expected PKG.MODULE:FUNCTION or path/to/file.py:FUNCTION"),
    (["--impl", "retnet_ref.retention:parallel_retention"],
     "expected a function fn(q, k, v, gamma, form"),
    (["--impl", "examples/conformance/ours.py:parallel_only"],
     "expected (o, state) (declare final_state=False"),
    (["--impl", "examples/conformance/ours.py:forms", "--scale", "big"],
     "--scale: expected a positive number"),
    (["--layout", "BTHD"], "--layout: only with --impl"),
])
def test_cli_usage_errors_are_one_line_and_exit_2(args, message, monkeypatch, capsys):
    monkeypatch.chdir(EXAMPLES.parent.parent)
    with pytest.raises(SystemExit) as stop:
        cli.main(["verify", *args])
    out, err = capsys.readouterr()
    assert stop.value.code == 2 and out == ""
    assert message in err.strip().splitlines()[-1], err


def test_a_module_that_fails_to_import_is_one_line_without_a_traceback(tmp_path):
    (tmp_path / "crashing.py").write_text("raise RuntimeError('boom at import')\n")
    result = run_cli("--impl", f"{tmp_path / 'crashing.py'}:fn")
    assert result.returncode == 2 and result.stdout == ""
    assert (
        "--impl: cannot import" in result.stderr and "RuntimeError: boom at import" in result.stderr
    )
    assert "Traceback" not in result.stderr


def test_help_shows_a_complete_example():
    text = run_cli("--help").stdout
    assert "python -m retnet_ref verify --impl examples/conformance/ours.py:forms" in text
    assert "def retention(q, k, v, gamma, form, chunk_size=None, state=None):" in text
    for option in ("--layout", "--state-layout", "--scale", "--gamma", "--rotation",
                   "--normalisation", "--forms",
                   "--json", "--long"):
        assert option in text, option


def test_peer_fla_naive_computes_in_float32_and_overflows_at_long_lengths():
    fla = peer("peer_fla", "fla.ops.retention.naive")
    report = conformance.check(fla.naive, devices=["cpu"], lengths=(64, 300))
    rows = failing(report, "vs float64 truth")
    assert {r.dtype for r in rows} == {"float64"}
    assert all("computed in float32 inside" in r.diagnosis for r in rows)
    long = conformance.check(fla.naive, devices=["cpu"], dtypes=("float32",), lengths=(2900,))
    assert all("non-finite output" in r.diagnosis for r in failing(long, "vs float64 truth"))
    assert failing(long, "vs float64 truth")


def test_peer_yet_another_retnet_agrees_in_float64_and_float32_and_drifts_in_bfloat16():
    yar = peer("peer_yet_another_retnet", "yet_another_retnet.retention")
    report = conformance.check(yar.forms, devices=["cpu"])
    assert all(r.passed for r in report.rows if r.dtype != "bfloat16")
    rows = failing(report, "vs float64 truth")
    assert {r.dtype for r in rows} == {"bfloat16"} and max(r.error for r in rows) > 0.2
    assert all("grows" in r.diagnosis for r in rows)

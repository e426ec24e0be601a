"""`python -m retnet_ref compare --smoke`: the whole comparison plan in miniature, as train
processes on the CPU.

The corpus is test_train.py's fixture (a few paragraphs written for the tests), not the real one.
"""
from __future__ import annotations

import json
import math

import pytest

from retnet_ref import comparison
from retnet_ref.__main__ import main
from test_train import fixture_corpus  # noqa: F401  (the prepared test corpus, a pytest fixture)

PLAN = comparison.SMOKE_PLAN
LENGTHS = [str(PLAN.context * m) for m in (1, *PLAN.eval_lengths)]


@pytest.fixture(scope="module")
def compared(tmp_path_factory, fixture_corpus):  # noqa: F811
    """The smoke plan run in its three stages → (out folder, summary, stdout of the last stage)."""
    out = tmp_path_factory.mktemp("comparison")
    common = ["compare", "--smoke", "--parallel", "2", "--corpus", str(fixture_corpus[0]), "--out",
              str(out),
              "--device", "cpu"]
    for stage in comparison.STAGES:
        assert main([*common, "--stage", stage]) == 0
    return out, json.loads((out / comparison.SUMMARY).read_text())


@pytest.mark.slow
def test_every_run_of_the_plan_is_logged_and_summarised(compared):
    out, summary = compared
    rates = {size: {model: rate["lr"] for model, rate in models.items()}
             for size, models in summary["learning_rates"].items()}
    planned = comparison.every_run(PLAN, summary["learning_rates"], summary["runs"])
    names = {run.name for run in planned}
    at_s = len(comparison.MODELS) * len(PLAN.learning_rates)
    at_m = sum(lr <= rates["S"][model] for model in comparison.MODELS for lr in PLAN.learning_rates)
    # sweep at S and M; main: seed 1 at S and M (seed 0 is the sweep's); ablations
    assert len(names) == at_s + at_m + 2 + 2 + 5
    assert set(summary["runs"]) == names
    for name in names:
        assert (out / name / "log.jsonl").is_file() and not (out / name / "checkpoint.pt").exists()
        run = summary["runs"][name]
        assert list(run["validation_perplexity"]) == LENGTHS
        assert all(math.isfinite(p) and p > 1 for p in run["validation_perplexity"].values()), name
        assert run["validation_perplexity"][LENGTHS[0]] == pytest.approx(
            math.exp(run["validation_loss"][LENGTHS[0]])
        )
        assert (
            run["command"].startswith("python -m retnet_ref train ")
            and f"--lr {run['lr']:g}" in run["command"]
        )
    for size, s in PLAN.sizes.items():
        tokens = {run["tokens"] for run in summary["runs"].values() if run["size"] == size}
        assert tokens == {s.batch * PLAN.context * s.steps}, size
    main_runs = [run for run in summary["runs"].values() if "main" in run["stages"]]
    assert len(main_runs) == len(PLAN.sizes) * 2 * len(PLAN.seeds)
    assert all(run["lr"] == rates[run["size"]][run["model"]] for run in main_runs)
    assert all(run["lr"] == rates["S"]["retnet"] for run in summary["runs"].values()
               if run["ablation"])


@pytest.mark.slow
def test_the_learning_rate_chosen_is_the_sweeps_lowest_validation_loss_at_each_size(compared):
    _, summary = compared
    for size in PLAN.sizes:
        for model in comparison.MODELS:
            swept = {run["lr"]: run["validation_loss"][LENGTHS[0]]
                     for run in summary["runs"].values()
                     if "sweep" in run["stages"] and run["model"] == model and run["size"] == size}
            best_at_s = summary["learning_rates"]["S"][model]["lr"]
            # S at every rate; M at the rates not above S's best
            assert sorted(swept) == [lr for lr in PLAN.learning_rates
                                     if size == "S" or lr <= best_at_s]
            assert summary["learning_rates"][size][model] == {"lr": min(swept, key=swept.get),
                                                              "from": "sweep"}


@pytest.mark.slow
def test_parameter_counts_match_within_a_size_and_the_ablations_remove_the_gate(compared):
    _, summary = compared
    for size, s in PLAN.sizes.items():
        counts = summary["parameters"][size]
        assert counts["retnet"] == counts["transformer"] == s.layers * (12 * s.d_model ** 2
                                                                        + 4 * s.d_model) \
            + 2 * 256 * s.d_model + 2 * s.d_model
    ablated = {run["ablation"]: run["parameters"] for run in summary["runs"].values()
               if run["ablation"]}
    s = PLAN.sizes[PLAN.swept_size]
    assert (
        ablated["no-swish-gate"]
        == summary["parameters"]["S"]["retnet"] - s.layers * s.d_model * 2 * s.d_model
    )
    assert ablated["no-group-norm"] == ablated["no-decay"] == ablated["single-gamma"] \
        == summary["parameters"]["S"]["retnet"]


@pytest.mark.slow
def test_a_second_call_reuses_finished_runs_and_refuses_a_cut_short_one(
        compared, fixture_corpus, capsys):  # noqa: F811
    out, summary = compared
    common = ["compare", "--smoke", "--corpus", str(fixture_corpus[0]), "--out", str(out),
              "--device", "cpu"]
    folder = out / f"S-retnet-official-lr{summary['learning_rates']['S']['retnet']['lr']:g}-seed0"
    stamp = (folder / "driver.json").stat().st_mtime_ns
    assert main(common) == 0                                # every run finished: nothing runs again
    assert (folder / "driver.json").stat().st_mtime_ns == stamp
    assert json.loads((out / comparison.SUMMARY).read_text())["runs"] == summary["runs"]
    log = (folder / "log.jsonl").read_text()
    try:
        # the last step lost
        (folder / "log.jsonl").write_text("".join(log.splitlines(keepends=True)[:-1]))
        with pytest.raises(SystemExit) as exit_:
            main([*common, "--stage", "ablations"])
        assert exit_.value.code == 2
        assert f"{folder}: another or an unfinished run" in capsys.readouterr().err
    finally:
        (folder / "log.jsonl").write_text(log)


def test_single_gamma_is_the_geometric_mean_of_the_default_schedule():
    from retnet_ref.decay import gamma_schedule
    gammas = gamma_schedule(4)
    assert comparison.single_gamma(4) == pytest.approx(float(gammas.prod() ** 0.25), abs=5e-7)
    assert gammas.min() < comparison.single_gamma(4) < gammas.max()


def test_main_without_a_sweep_or_rates_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["compare", "--smoke", "--stage", "main", "--out", str(tmp_path)])
    assert exit_.value.code == 2
    assert "the sweep is not complete in --out" in capsys.readouterr().err


def test_dry_run_lists_the_plan_with_parameter_counts(capsys):
    assert main(["compare", "--dry-run", "--plan", "small", "--lr-retnet", "2e-3",
                 "--lr-transformer", "1e-3"]) == 0
    text = capsys.readouterr().out
    assert "S-retnet-no-swish-gate-lr0.002-seed0" in text and "M-" not in text
    assert "sweep at the other sizes" not in text                   # --plan small has no others
    assert "9,581,056" in text and "8,008,192" in text            # S: both models; without the gate


def test_only_runs_the_named_runs_of_the_stage_and_refuses_a_name_it_does_not_have(capsys):
    rates = ["--lr-retnet", "2e-3", "--lr-transformer", "1e-3"]
    assert main(["compare", "--dry-run", "--stage", "main", *rates, "--only",
                 "M-retnet-lr0.002-seed1", "S-transformer-lr0.001-seed1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["S-transformer-lr0.001-seed1",
                                                   "M-retnet-lr0.002-seed1"]
    with pytest.raises(SystemExit) as exit_:
        main(["compare", "--dry-run", "--stage", "main", *rates, "--only", "M-retnet-lr9-seed1"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--only M-retnet-lr9-seed1: not a run of this stage" in err
    assert "M-retnet-lr0.002-seed1" in err


def test_dry_run_of_the_sweep_says_the_other_sizes_wait_for_the_first(tmp_path, capsys):
    assert main(["compare", "--dry-run", "--stage", "sweep", "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "M-" not in text
    assert "sweep at the other sizes: at rates bounded by the best at S" in text

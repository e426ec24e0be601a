"""`python -m retnet_ref corpus` and `python -m retnet_ref train` on the CPU, without the network.

TEST FIXTURE, NOT THE REAL CORPUS: the documents here are a few short paragraphs written for this
file, arranged into small "documents" in a temporary folder and prepared with
retnet_ref.corpus.prepare (the steps `corpus` runs after downloading). The real corpus (Debian's
python3.11-doc) is for the GPU runs.
"""
from __future__ import annotations

import json
import math
import random
import shutil
import subprocess

import numpy as np
import pytest
import torch

from helpers import torchrun
from retnet_ref import corpus
from retnet_ref.__main__ import main
from retnet_ref.train import TrainConfig, build_model

PARAGRAPHS = [
    "A retentive network keeps a state of fixed size and folds every new token into it, so that "
    "the cost "
    "of the next token does not grow with the length of the text read so far.\n",
    "The parallel form computes every position at once, like attention without the softmax, which "
    "is what "
    "makes training on long sequences fast on a graphics card.\n",
    "Each head forgets at its own rate: a decay close to one remembers thousands of tokens, a "
    "smaller one "
    "only the last few dozen.\n",
    "The chunkwise form splits a sequence into blocks, computes each block in parallel and carries "
    "the state "
    "from one block to the next.\n",
    "A transformer with a cache of keys and values reads the whole cache for every new token, so "
    "its "
    "decoding slows down as the context grows.\n",
    "Bytes are the simplest tokens: two hundred and fifty six of them, and no vocabulary to "
    "learn.\n",
]
DOCUMENTS = 12
SMALL = ["--preset", "tiny", "--d-model", "32", "--context", "32", "--batch", "8", "--eval-batches",
         "1",
         "--warmup", "2", "--quiet"]


def write_fixture_documents(folder):
    """DOCUMENTS test files of 6-10 paragraphs each, in a fixed pseudo-random order (two folder
    levels)."""
    rng = random.Random(1)
    for i in range(DOCUMENTS):
        path = folder / f"part{i % 3}" / f"doc{i:02d}{corpus.DOCUMENT_SUFFIX}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(rng.choice(PARAGRAPHS) for _ in range(rng.randint(6, 10))))


@pytest.fixture(scope="module")
def fixture_corpus(tmp_path_factory):
    """(folder of the prepared test corpus, its manifest, the documents' folder)."""
    documents = tmp_path_factory.mktemp("fixture_documents")
    write_fixture_documents(documents)
    out = tmp_path_factory.mktemp("fixture_corpus")
    manifest = corpus.prepare(documents, out, source={"test fixture": True}, seed=3,
                              validation_fraction=0.2, test_fraction=0.2)
    return out, manifest, documents


def train(tmp_path, fixture_corpus, name, *args) -> list[dict]:
    """Run `train` in-process → the records of its log (the header first)."""
    out = tmp_path / name
    assert main(["train", *SMALL, "--corpus", str(fixture_corpus[0]), "--out", str(out),
                 *args]) == 0
    return read_log(out)


def read_log(out) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def steps_of(records):
    return [r for r in records if "step" in r]


def weights(out) -> dict:
    return torch.load(out / "checkpoint.pt", weights_only=True)["model"]


# ---------------------------------------------------------------- the corpus


def test_corpus_is_split_by_document(fixture_corpus):
    out, manifest, documents = fixture_corpus
    names = {split: set(entry["names"]) for split, entry in manifest["splits"].items()}
    every = {p.relative_to(documents).as_posix()
             for p in documents.rglob(f"*{corpus.DOCUMENT_SUFFIX}")}
    assert len(every) == DOCUMENTS == manifest["documents"]
    assert names["train"] | names["validation"] | names["test"] == every
    assert not names["train"] & names["validation"] and not names["train"] & names["test"] \
        and not names["validation"] & names["test"]
    assert {split: len(n) for split, n in names.items()} == {"train": 8, "validation": 2, "test": 2}
    again = corpus.split_names(sorted(every), 3, 0.2, 0.2)
    assert {split: set(n) for split, n in again.items()} == names         # the seed fixes the split


def test_manifest_sizes_match_the_arrays_and_the_documents(fixture_corpus):
    out, manifest, documents = fixture_corpus
    for split, entry in manifest["splits"].items():
        tokens = corpus.load_split(out, split)
        text = sum((documents / name).stat().st_size for name in entry["names"])
        assert entry["text_bytes"] == text
        assert (
            tokens.dtype == np.uint8 and tokens.size == entry["tokens"] == text + entry["documents"]
        )
        # one mark per document
        assert int((tokens == corpus.END_OF_DOCUMENT).sum()) == entry["documents"]
    assert manifest["text_bytes"] == sum(e["text_bytes"] for e in manifest["splits"].values())
    assert manifest["vocab_size"] == 256


def test_a_changed_array_is_refused(fixture_corpus, tmp_path):
    out, manifest, documents = fixture_corpus
    copy = tmp_path / "copy"
    corpus.prepare(documents, copy, source={}, seed=3, validation_fraction=0.2, test_fraction=0.2)
    np.save(copy / "validation.npy", corpus.load_split(copy, "validation")[:-1])
    with pytest.raises(corpus.CorpusError, match="does not match manifest.json"):
        corpus.load_split(copy, "validation")


def test_too_few_documents_for_three_splits(tmp_path):
    for i in range(2):
        (tmp_path / f"d{i}{corpus.DOCUMENT_SUFFIX}").write_text("text")
    with pytest.raises(corpus.CorpusError, match="training split would be empty"):
        corpus.prepare(tmp_path, tmp_path / "out", source={})


def test_without_apt_get_the_corpus_command_says_what_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "no-programs-here"))
    assert main(["corpus", "--out", str(tmp_path / "c"), "--download-dir",
                 str(tmp_path / "d")]) == 1
    err = capsys.readouterr().err
    assert "`apt-get` is not installed here" in err and "--deb" in err and "Traceback" not in err


@pytest.mark.skipif(shutil.which("dpkg-deb") is None,
                    reason="dpkg-deb is not installed (not a Debian system)")
def test_corpus_from_a_deb(tmp_path, capsys):
    """A stand-in package (a test fixture with the real package's layout), built with dpkg-deb
    -b."""
    package = tmp_path / "package"
    write_fixture_documents(package / corpus.SOURCES_IN_PACKAGE)
    (package / corpus.COPYRIGHT_IN_PACKAGE).parent.mkdir(parents=True)
    (package / corpus.COPYRIGHT_IN_PACKAGE).write_text("test fixture licence text\n")
    (package / "DEBIAN").mkdir()
    (package / "DEBIAN" / "control").write_text(
        f"Package: {corpus.PACKAGE}\nVersion: 0.0-fixture\nArchitecture: all\nMaintainer: tests "
        "<tests@invalid>\n"
        "Description: test fixture\n")
    deb = tmp_path / "fixture.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(package), str(deb)], check=True,
                   capture_output=True)
    out = tmp_path / "corpus"
    assert main(["corpus", "--deb", str(deb), "--out", str(out), "--download-dir",
                 str(tmp_path / "d"),
                 "--validation-fraction", "0.2", "--test-fraction", "0.2"]) == 0
    manifest = corpus.load_manifest(out)
    assert (
        manifest["source"]["version"] == "0.0-fixture" and manifest["licence"]["spdx"] == "PSF-2.0"
    )
    assert (out / "LICENSE.txt").read_text() == "test fixture licence text\n"
    assert manifest["documents"] == DOCUMENTS
    assert "train" in capsys.readouterr().out


def test_corpus_usage_errors(capsys):
    for args, expected in ((["--seed", "-1"], "--seed: expected an integer >= 0"),
                           (["--test-fraction", "0.7"],
                            "--test-fraction: expected a number in [0, 0.5)"),
                           (["--deb", "absent.deb"], "--deb: expected a .deb file")):
        with pytest.raises(SystemExit) as exit_:
            main(["corpus", *args])
        assert exit_.value.code == 2
        assert expected in capsys.readouterr().err


# ---------------------------------------------------------------- training


def test_loss_falls(tmp_path, fixture_corpus):
    records = train(tmp_path, fixture_corpus, "run", "--steps", "25", "--eval-interval", "10",
                    "--lr", "5e-3")
    header, steps = records[0]["run"], steps_of(records)
    assert [r["step"] for r in steps] == list(range(1, 26))
    assert (
        header["config"]["steps"] == 25 and header["parameters"] > 0 and header["world_size"] == 1
    )
    assert steps[0]["loss"] > math.log(256) - 0.5        # it starts near chance: ln 256 nats a byte
    first, last = (np.mean([r["loss"] for r in part]) for part in (steps[:5], steps[-5:]))
    assert last < first - 1.5, (first, last)
    validation = [r["validation_loss"] for r in steps if "validation_loss" in r]
    assert len(validation) == 3 and validation[-1] < validation[0] < math.log(256) - 1.5
    assert all(r["tokens_per_second"] > 0 and r["peak_memory_bytes"] is None for r in steps)
    assert steps[-1]["tokens"] == 25 * 8 * 32
    assert steps[-1]["validation_perplexity"] == pytest.approx(
        math.exp(steps[-1]["validation_loss"])
    )


def test_the_transformer_trains_too(tmp_path, fixture_corpus):
    steps = steps_of(train(tmp_path, fixture_corpus, "run", "--model", "transformer", "--steps",
                           "6",
                           "--eval-interval", "3"))
    assert len(steps) == 6 and all(math.isfinite(r["loss"]) for r in steps)
    assert "validation_loss" in steps[2] and "validation_loss" in steps[5]


def test_a_seeded_run_is_deterministic_and_parallel_mode_differs_only_by_rounding(
    tmp_path, fixture_corpus
):
    common = ("--steps", "4", "--eval-interval", "4", "--chunk-size", "8")
    a, b = (steps_of(train(tmp_path, fixture_corpus, name, *common)) for name in ("a", "b"))
    assert [r["loss"] for r in a] == [r["loss"] for r in b]
    assert all(torch.equal(x, y) for x, y in zip(weights(tmp_path / "a").values(),
                                                 weights(tmp_path / "b").values()))
    parallel = steps_of(train(tmp_path, fixture_corpus, "p", "--steps", "4", "--eval-interval", "4",
                              "--mode", "parallel"))
    assert [r["loss"] for r in parallel] == pytest.approx([r["loss"] for r in a], rel=1e-5)


def test_resume_equals_an_unbroken_run(tmp_path, fixture_corpus):
    common = ("--steps", "10", "--eval-interval", "3", "--chunk-size", "16")
    unbroken = steps_of(train(tmp_path, fixture_corpus, "unbroken", *common))
    train(tmp_path, fixture_corpus, "broken", *common, "--until-step", "5")
    assert [r["step"] for r in steps_of(read_log(tmp_path / "broken"))] == [1, 2, 3, 4, 5]
    assert main(["train", "--corpus", str(fixture_corpus[0]), "--out", str(tmp_path / "broken"),
                 "--resume",
                 "--quiet"]) == 0
    resumed = steps_of(read_log(tmp_path / "broken"))
    keys = ("step", "loss", "lr", "grad_norm", "tokens", "validation_loss")
    assert [{k: r.get(k) for k in keys} for r in resumed] == [{k: r.get(k) for k in keys}
                                                              for r in unbroken]
    a, b = (torch.load(tmp_path / name / "checkpoint.pt", weights_only=True)
            for name in ("unbroken", "broken"))
    assert a["step"] == b["step"] == 10
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    moments = lambda saved: [t for state in saved["optimizer"]["state"].values()
                             for t in state.values()]
    assert all(torch.equal(x, y) for x, y in zip(moments(a), moments(b)))
    assert torch.equal(a["data_rng"], b["data_rng"])


def test_the_ablation_options_reach_the_model_and_its_parameter_count(tmp_path, fixture_corpus):
    """--no-swish-gate, --no-group-norm, --gamma 1 and one γ for all heads (Table 6)."""
    common = ("--steps", "2", "--eval-interval", "2")
    full = train(tmp_path, fixture_corpus, "full", *common)[0]["run"]
    ablated = train(tmp_path, fixture_corpus, "ablated", *common, "--no-swish-gate",
                    "--no-group-norm")[0]["run"]
    assert (ablated["config"]["swish_gate"], ablated["config"]["group_norm"]) == (False, False)
    assert (ablated["model_config"]["swish_gate"],
            ablated["model_config"]["group_norm"]) == (False, False)
    c = full["model_config"]
    assert (
        ablated["parameters"]
        == full["parameters"] - c["num_layers"] * c["d_model"] * c["value_dim"]
    )
    for gamma, expected in (("1", [1.0, 1.0]), ("0.98", [0.98, 0.98])):
        header = train(tmp_path, fixture_corpus, f"gamma{gamma}", *common, "--gamma",
                       gamma)[0]["run"]
        assert header["model_config"]["gamma"] == expected


def test_resume_names_a_switched_off_part_the_checkpoint_has(tmp_path, fixture_corpus, capsys):
    train(tmp_path, fixture_corpus, "run", "--steps", "2", "--eval-interval", "2")
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--corpus", str(fixture_corpus[0]), "--out", str(tmp_path / "run"),
              "--resume",
              "--no-swish-gate"])
    assert exit_.value.code == 2
    assert "--no-swish-gate (the checkpoint has swish_gate=True)" in capsys.readouterr().err


@pytest.mark.parametrize("model", ["retnet", "transformer"])
def test_validation_at_longer_lengths_is_the_loss_of_those_windows(tmp_path, fixture_corpus, model):
    """--eval-lengths 2 4: the log's loss at 64 and 128 tokens equals the cross-entropy of
    consecutive windows of 65 and 129 tokens of the validation split, recomputed here from the saved
    weights."""
    records = train(tmp_path, fixture_corpus, "run", "--model", model, "--steps", "4",
                    "--eval-interval", "2",
                    "--eval-lengths", "4", "2", "4")
    header, steps = records[0]["run"], steps_of(records)
    assert header["config"]["eval_lengths"] == [2, 4]
    assert header["validation_windows_at"] == {"32": 8, "64": 4, "128": 2}  # 8 windows at --context
    validated = [r for r in steps if "validation_loss" in r]
    assert [r["step"] for r in validated] == [2, 4]
    for r in validated:
        assert list(r["validation_loss_at"]) == ["32", "64", "128"]
        assert r["validation_loss_at"]["32"] == r["validation_loss"]
        assert all(r["validation_perplexity_at"][T] == pytest.approx(math.exp(loss))
                   for T, loss in r["validation_loss_at"].items())
    config = TrainConfig(**{**header["config"],
                            "eval_lengths": tuple(header["config"]["eval_lengths"])})
    trained = build_model(config, 256)
    trained.load_state_dict(weights(tmp_path / "run"))
    tokens = torch.from_numpy(corpus.load_split(fixture_corpus[0], "validation")).long()
    for T, count in header["validation_windows_at"].items():
        T = int(T)
        # (count, T + 1)
        windows = torch.stack([tokens[i * T:(i + 1) * T + 1] for i in range(count)])
        with torch.no_grad():
            logits = trained(windows[:, :-1])[0]                                     # (count, T, V)
        expected = torch.nn.functional.cross_entropy(logits.flatten(0, 1), windows[:, 1:].flatten())
        assert validated[-1]["validation_loss_at"][str(T)] == pytest.approx(float(expected),
                                                                            rel=1e-5), T


BAD_OPTIONS = [
    (["--steps", "0"], "--steps: expected a positive integer, got 0"),
    (["--lr", "-1"], "--lr: expected a finite number > 0"),
    (["--lr", "fast"], "--lr: expected a number > 0, got 'fast'"),
    (["--final-lr-fraction", "2"], "--final-lr-fraction: expected a number in [0, 1]"),
    (["--warmup", "50", "--steps", "10"], "--warmup (50) must be at most --steps (10)"),
    (["--model", "transformer", "--chunk-size", "8"],
     "--chunk-size: RetNet only, not for --model transformer"),
    (["--mode", "parallel", "--chunk-size", "8"], "--chunk-size: only with --mode chunkwise"),
    (["--gamma", "1.5"], "--gamma: every γ must lie in (0, 1]"),
    (["--gamma", "0.9,0.8,0.7"], "gamma must hold one value per head: expected length 2, got 3"),
    (["--heads", "3"], "must be multiples of num_heads (3)"),
    (["--model", "rwkv"], "--model: invalid choice: 'rwkv'"),
    (["--model", "transformer", "--no-swish-gate", "--no-group-norm"],
     "--no-swish-gate, --no-group-norm: RetNet only, not for --model transformer"),
    (["--eval-lengths", "1"], "--eval-lengths: expected an integer >= 2 (a multiple of --context"),
    (["--eval-lengths", "2", "x"], "--eval-lengths: expected a positive integer, got 'x'"),
    (["--context", "32", "--eval-lengths", "100"],
     "--eval-lengths 100: the validation split holds only"),
    (["--context", "100000"], "--context 100000: the train split holds only"),
]


@pytest.mark.parametrize("args, expected", BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_bad_options_are_usage_errors(tmp_path, fixture_corpus, capsys, args, expected):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--corpus", str(fixture_corpus[0]), "--out", str(tmp_path / "run"), *args])
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert expected in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_run_folder_errors(tmp_path, fixture_corpus, capsys):
    def usage_error(*args) -> str:
        with pytest.raises(SystemExit) as exit_:
            main(["train", "--corpus", str(fixture_corpus[0]), *args])
        assert exit_.value.code == 2
        return capsys.readouterr().err

    assert "holds no prepared corpus (manifest.json is missing)" in usage_error(
        "--corpus", str(tmp_path / "nothing"), "--out", str(tmp_path / "x"))
    assert "--resume:" in usage_error("--out", str(tmp_path / "none"), "--resume")
    train(tmp_path, fixture_corpus, "done", "--steps", "2", "--eval-interval", "2")
    assert "already holds a run: pass --resume" in usage_error("--out", str(tmp_path / "done"))
    assert "--lr 0.5 (the checkpoint has 0.002)" in usage_error("--out", str(tmp_path / "done"),
                                                                "--resume",
                                                                "--lr", "0.5")


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for option in ("--model", "--preset", "--d-model", "--layers", "--heads", "--variant",
                   "--gamma", "--mode",
                   "--chunk-size", "--context", "--batch", "--steps", "--lr", "--warmup", "--decay",
                   "--final-lr-fraction", "--weight-decay", "--clip", "--seed", "--eval-interval",
                   "--eval-batches", "--eval-lengths", "--no-swish-gate", "--no-group-norm",
                   "--checkpoint-interval",
                   "--out", "--corpus", "--device", "--resume", "--until-step", "--quiet"):
        assert f"  {option} " in text or f"  {option}\n" in text, option
    assert "β = (0.9, 0.98)" in text and "torchrun" in text
    assert "Table 6" in text and "--gamma 1 (no decay" in text


# ---------------------------------------------------------------- two processes


# float32 sums in another order (the gradient all-reduce, each process's matmuls over half the
# batch): after 6 AdamW steps we measured the losses within 1e-7 and the weights within 3e-6 of one
# process (relative); the tolerances leave room for other BLAS builds, while a wrong share of the
# batch moves the loss by far more (a single process with half the batch: 9%)
LOSS_TOLERANCE = 1e-5
WEIGHT_TOLERANCE = 1e-4


def test_two_processes_equal_one_with_the_same_global_batch(tmp_path, fixture_corpus):
    common = ["--steps", "6", "--eval-interval", "3", "--chunk-size", "16"]
    single = steps_of(train(tmp_path, fixture_corpus, "single", *common))
    torchrun(2, ["-m", "retnet_ref", "train", *SMALL, *common, "--device", "cpu",
                 "--corpus", fixture_corpus[0], "--out", tmp_path / "ddp"], tmp_path)
    records = read_log(tmp_path / "ddp")
    assert records[0]["run"]["world_size"] == 2
    ddp = steps_of(records)
    assert [r["step"] for r in ddp] == [r["step"] for r in single]
    for key in ("loss", "validation_loss"):
        ours = [r[key] for r in ddp if key in r]
        assert ours == pytest.approx([r[key] for r in single if key in r], rel=LOSS_TOLERANCE), key
    a, b = weights(tmp_path / "single"), weights(tmp_path / "ddp")
    for name in a:
        scale = a[name].abs().max().clamp_min(1e-12)
        assert float((a[name] - b[name]).abs().max() / scale) < WEIGHT_TOLERANCE, name

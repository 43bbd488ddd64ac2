"""Settings that would run but mean nothing are refused (or warned about) in one line."""

import pytest

from datasets_build.__main__ import PROG
from datasets_build.__main__ import main as build_main
from extract.store import open_store
from extract.training.config import make_config
from headprobe.cli import run_main
from headprobe.errors import UsageError
from probing.labels import sample_train_stories
from tests.test_stage_faults import one_line_error, run


def one_story_budget(store_path) -> int:
    """A --max-train-tokens that keeps exactly one train story of the store (seed 0)."""
    with open_store(store_path) as store:
        table = store.tokens(["split", "parent_id"])
    for budget in range(50, 5000, 25):
        try:
            if sample_train_stories(table["split"], table["parent_id"], budget, 0)[1] == 1:
                return budget
        except UsageError:
            continue
    raise AssertionError("no budget keeps one story")


def test_mdl_over_one_train_story_is_refused(probing_store, tmp_path, capsys):
    budget = one_story_budget(probing_store)
    assert run("probing", "fit", "--store", probing_store, "--out", tmp_path / "probes",
               "--layers", "0", "--sites", "key", "--mdl",
               "--max-train-tokens", budget) == 2
    line = one_line_error(capsys)
    assert "--mdl needs at least 2 train stories" in line and f"{budget} keeps 1" in line, line


def test_bootstrap_error_names_its_flag(probing_store, tmp_path, capsys):
    assert run("probing", "fit", "--store", probing_store, "--out", tmp_path / "probes",
               "--bootstrap", "0") == 2
    line = one_line_error(capsys)
    assert "--bootstrap" in line and "--n-boot" not in line, line


def test_windows_longer_than_the_models_context_are_refused(tmp_path, shared_model, capsys):
    argv = ["--source", "demo:3", "--tokenizer", str(shared_model), "--out",
            str(tmp_path / "out"), "--max-tokens", "5000"]
    assert run_main(build_main, argv, prog=PROG) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--max-tokens 5000 is more than the model's " \
        "context of 2048 tokens" in err, err
    assert not (tmp_path / "out").exists()


def test_tiny_windows_are_warned_about(tmp_path, gpt2_tokenizer, capsys):
    argv = ["--source", "demo:3", "--tokenizer", str(gpt2_tokenizer), "--out",
            str(tmp_path / "out"), "--max-tokens", "3"]
    assert run_main(build_main, argv, prog=PROG) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines()
                if line.startswith("warning: windows of at most 3 tokens")]
    assert len(warnings) == 1


def test_a_context_no_dataset_fits_is_refused():
    with pytest.raises(UsageError, match="ctx must be at least 2"):
        make_config(None, {"ctx": 1})
    assert make_config(None, {"ctx": 2}).ctx == 2



def test_an_unreadable_tokenizer_is_one_whole_line(tmp_path, gpt2_tokenizer, capsys):
    import shutil

    broken = tmp_path / "tok"
    shutil.copytree(gpt2_tokenizer, broken)
    (broken / "vocab.json").write_text("garbage{")
    argv = ["--source", "demo:3", "--tokenizer", str(broken), "--out", str(tmp_path / "out")]
    assert run_main(build_main, argv, prog=PROG) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"cannot load tokenizer '{broken}'" in err, err
    assert "expected value at line 1 column 1" in err, err


# (stage, arguments, words of the one-line refusal) of settings found meaningless by a
# review of every option: {model}, {dataset}, {store} and {out} are filled in per test
REFUSED = [
    ("datasets_build", "--source demo:3 --tokenizer {model} --out {out} --seed -1",
     "--seed must be at least 0"),
    ("datasets_build", "--source demo:3 --tokenizer {model} --out {out} --retries 5",
     "--retries goes with --ray"),
    ("extract", "--dataset {dataset} --model {model} --out {out}.h5 --chunk-rows 0",
     "--chunk-rows must be at least 1"),
    ("extract", "--dataset {dataset} --model {model} --out {out}.h5 --group-tokens -1",
     "--group-tokens must be at least 1"),
    ("extract", "--dataset {dataset} --model {model} --out {out}.h5 --cpus-per-shard 2 "
     "--gpus-per-shard 1", "--cpus-per-shard and --gpus-per-shard go with --ray"),
    ("extract", "train --corpus demo:5 --out {out} --warmup -2", "--warmup must be in 0..--steps"),
    ("extract", "train --corpus demo:5 --out {out} --weight-decay -1",
     "--weight-decay must be at least 0"),
    ("extract", "train --corpus demo:5 --out {out} --family llama --window 4",
     "--window sizes the local attention layers"),
    ("extract", "train --corpus demo:5 --out {out} --repeat-min 5",
     "--repeat-min goes with --repeat-frac (the share of windows with repeated segments"),
    ("extract", "train --corpus demo:5 --out {out} --stop-after 0",
     "--stop-after must be at least 1 step"),
    ("extract", "train --corpus demo:5 --out {out} --seeds 0,1 --seed 3", "leave out --seed"),
    ("extract", "train --corpus demo:5 --out {out} --threads 0", "--threads must be positive"),
    ("probing", "fit --store {store} --out {out} --seed -1", "--seed must be at least 0"),
    ("probing", "fit --store {store} --out {out} --tokenizer {model}",
     "--tokenizer decodes lowercased word types, which no control here uses"),
    ("probing", "fit --store {store} --out {out} --word-types lower",
     "--word-types sets the word types of the control task, which does not run"),
    ("probing", "fit --store {store} --out {out} --no-intervals --bootstrap 50",
     "--bootstrap sets the resamples of the intervals that --no-intervals drops"),
    ("probing", "fit --store {store} --out {out} --control-store {store}",
     "comes from the same weights as the store"),
    ("probing", "quote --store {store} --no-model --out {out} --max-stories 0",
     "--max-stories must be at least 1, got 0"),
    ("probing", "quote --store {store} --no-model --out {out} --top 0",
     "--top must be at least 1, got 0"),
    ("probing", "ablate --store {store} --model {model} --heads L0H0 --out {out} --seed -1",
     "--seed must be at least 0"),
    ("probing", "fit --store {dataset} --out {out}",
     "activation store expected, but {dataset} is a directory"),
    ("extract", "--dataset {store} --model {model} --out {out}.h5",
     "tagged dataset expected, but {store} is a file"),
    ("probing", "bench --repeat 5", "--repeat goes with --verify only"),
    ("probing", "repeated --model {model} --out {out} --min-len 30",
     "--min-len 30 is more than --seq-len 25"),
    ("probing", "repeated --model {model} --out {out} --min-score -0.5",
     "--min-score must be in [0, 1]"),
]


@pytest.mark.parametrize("stage, argv, words", REFUSED,
                         ids=[f"{s}:{a.split(' --')[-1]}" for s, a, _ in REFUSED])
def test_meaningless_settings_are_refused_in_one_line(stage, argv, words, shared_model,
                                                      untagged_dataset, probing_store,
                                                      tmp_path, capsys):
    out = tmp_path / "out"
    args = argv.format(model=shared_model, dataset=untagged_dataset, store=probing_store,
                       out=out).split()
    assert run(stage, *args) == 2
    words = words.format(dataset=untagged_dataset, store=probing_store)
    assert words in one_line_error(capsys)
    assert not any(tmp_path.iterdir())

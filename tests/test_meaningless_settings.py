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

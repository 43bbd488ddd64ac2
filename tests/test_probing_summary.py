"""The headline summary of a run directory, read from real stored results."""

import shutil

from probing.__main__ import main
from probing.results import read_results
from probing.study_io import read_study
from probing.top import top_cells


def test_summary_names_best_probe_heads_and_study_headlines(
        probing_results, induction_model_dir, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(probing_results, run / "probes")
    assert main(["repeated", "--model", str(induction_model_dir), "--seq-len", "12",
                 "--batch", "4", "--no-mlp-grid", "--run", str(run)]) == 0
    capsys.readouterr()

    assert main(["summary", "--run", str(run)]) == 0
    out = capsys.readouterr().out

    best = top_cells(read_results(run / "probes"), "``", k=1)[0]
    assert f"best {best['site']:<5} L{best['layer']}H{best['head']} " in out
    rep = read_study(run / "studies" / "repeated")
    layer, head = rep.meta["circuit"]["induction_head"]
    assert "repeated: circuit: previous-token L0H" in out
    assert f" -> induction L{layer}H{head} " in out
    assert f"second-half accuracy {rep.meta['accuracy_second']:.2f}" in out


def test_summary_of_missing_run_is_a_usage_error(tmp_path, capsys):
    from headprobe.cli import run_main

    assert run_main(main, ["summary", "--run", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.count("\n") == 1

"""Found in k of n: thresholds, and the repeated study over several trained models."""

import math
import re

import numpy as np
import pytest

from headprobe.cli import run_main
from probing import thresholds as th
from probing.__main__ import main
from probing.studies import repeated, repeated_kofn
from probing.study_io import read_study

TINY = ["--seq-len", "12", "--min-len", "4", "--max-prefix", "6", "--batch", "10"]


def test_thresholds_state_their_margin_and_robustness():
    floor, ceiling = th.Threshold("score", 0.5), th.Threshold("drop", 0.1, ceiling=True)
    ratio = th.Threshold("over uniform", 5.0, ratio=True)
    assert floor.holds(0.5) and not floor.holds(0.49) and not floor.holds(None)
    assert floor.margin(0.53) == pytest.approx(0.03) and not floor.robust(0.53)
    assert floor.robust(0.56) and floor.margin_words(0.45) == "-0.05"
    assert ceiling.holds(0.05) and not ceiling.holds(0.2)
    assert ceiling.margin(0.04) == pytest.approx(0.06) and ceiling.robust(0.04)
    assert ratio.margin(6.0) == pytest.approx(1.2) and ratio.holds(6.0)
    assert not ratio.robust(6.0) and ratio.robust(6.5) and ratio.words() == ">= 5x"
    assert math.isnan(floor.margin(float("nan"))) and not floor.robust(float("nan"))


def test_head_counts_give_each_heads_count_and_range():
    from probing.kofn import head_counts

    heads = ["L0H1", "L0H2", "L0H1", None]
    assert head_counts(heads) == "L0H1 x2, L0H2 x1"
    assert head_counts(heads, np.array([0.95, 0.5, 0.9, np.nan])) == \
        "L0H1 x2 (0.90-0.95), L0H2 x1 (0.50)"
    assert head_counts([None, None]) == "none"


def cells(out: str, name: str) -> list[str]:
    """The cells of the table row that starts with ``name`` (cells split at two spaces)."""
    rows = [re.split(r"\s{2,}", line.strip()) for line in out.splitlines()]
    return next(row for row in rows if row[0].startswith(name) and len(row) > 1)


def test_repeated_over_two_models_counts_each_criterion(induction_model_dir,
                                                        fixed_offset_model_dir, tmp_path,
                                                        capsys):
    out = tmp_path / "seeds"
    models = [str(induction_model_dir), str(fixed_offset_model_dir)]
    assert run_main(main, ["repeated", "--model", *models, *TINY, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    names = [induction_model_dir.name, fixed_offset_model_dir.name]
    each = [read_study(out / name) for name in names]
    agg = read_study(out / repeated_kofn.KOFN_DIR)
    assert agg.study == repeated_kofn.STUDY and list(agg["model_name"]) == names
    for name, r in zip(names, each, strict=True):
        assert r.study == repeated.STUDY and r.meta["model"] in models
        assert f"{name}: {repeated.circuit_line(r.meta)}" in printed
    # the organism names its circuit, the fixed-offset model has none
    assert agg["circuit_named"].tolist() == [True, False]
    for i, (threshold, get, key) in enumerate(repeated_kofn.CRITERIA):
        values = [get(r.meta) for r in each]
        np.testing.assert_allclose(agg["value"][:, i], values, atol=1e-6)
        assert agg["holds"][:, i].tolist() == [threshold.holds(v) for v in values]
        row = cells(printed, threshold.name)
        k, robust = sum(map(threshold.holds, values)), sum(map(threshold.robust, values))
        assert row[1:7] == [threshold.words(), f"{k}/2", f"{robust}/2", f"{min(values):.2f}",
                            f"{np.median(values):.2f}", f"{max(values):.2f}"]
        if key:
            heads = {f"L{h[0]}H{h[1]}" for h in (r.meta["circuit"][key] for r in each)}
            assert all(h in row[-1] for h in heads)
    holds = agg["holds"].all(axis=1) & agg["circuit_named"]
    assert agg["circuit_holds"].tolist() == holds.tolist()
    assert cells(printed, "induction circuit")[1] == f"{int(holds.sum())}/2"
    assert cells(printed, "circuit named")[1] == "1/2"
    for key in ("prev_token_head", "induction_head"):
        assert agg[key].tolist() == [r.meta["circuit"][key] for r in each]
    for grid in repeated_kofn.GRIDS:
        np.testing.assert_allclose(agg[f"model_{grid}"], np.stack([r[grid] for r in each]))
    # aggregating the written results again gives the same numbers
    again = tmp_path / "again"
    assert run_main(main, ["repeated-k-of-n", "--studies", *(str(out / n) for n in names),
                           "--out", str(again)]) == 0
    np.testing.assert_array_equal(read_study(again)["value"], agg["value"])


def test_several_models_need_out_and_k_of_n_needs_repeated_results(induction_model_dir,
                                                                   tmp_path, capsys):
    models = [str(induction_model_dir)] * 2
    assert run_main(main, ["repeated", "--model", *models, "--run", str(tmp_path)]) == 2
    assert "several models write under --out DIR" in capsys.readouterr().err
    assert repeated_kofn.model_names(["a/model", "b/model"]) == ["0-model", "1-model"]
    assert repeated_kofn.model_names(["r/model-seed0/", "r/model-seed1"]) == [
        "model-seed0", "model-seed1"]
    out = tmp_path / "one"
    assert run_main(main, ["repeated", "--model", str(induction_model_dir), *TINY,
                           "--out", str(out)]) == 0
    assert run_main(main, ["repeated-k-of-n", "--studies", str(out), "--out",
                           str(tmp_path / "agg")]) == 0
    capsys.readouterr()
    assert run_main(main, ["repeated-k-of-n", "--studies", str(tmp_path / "agg"), "--out",
                           str(tmp_path / "agg2")]) == 2
    err = capsys.readouterr().err
    assert "holds repeated-k-of-n results, not repeated" in err and err.count("\n") == 1


def test_demo_seeds_script_runs_one_demo_per_seed_and_thread_count(tmp_path):
    import subprocess

    from tests.conftest import REPO

    out = tmp_path / "seeds"
    done = subprocess.run(["bash", str(REPO / "scripts" / "demo_seeds.sh"), "--dry-run",
                           str(out)], capture_output=True, text=True, check=True,
                          env={"PATH": "/usr/bin:/bin", "SEEDS": "0 3", "THREADS": "1 2",
                               "PYTHON": "py"})
    lines = done.stdout.splitlines()
    pairs = [(s, t) for t in (1, 2) for s in (0, 3)]
    runs = [f"{out}/seed{s}-threads{t}" for s, t in pairs]
    assert lines[:-1] == [f"SEED={s} THREADS={t} bash scripts/demo.sh {r} > {r}.log"
                          for (s, t), r in zip(pairs, runs, strict=True)]
    assert lines[-1] == f"py -m probing summary --run {' '.join(runs)}"
    assert not out.exists()


def test_three_trained_seeds_are_counted_by_the_study_and_the_summary(tmp_path, capsys):
    """``extract train --seeds 0-2`` (tiny, a few steps), ``probing repeated`` over the three
    models, and ``probing summary`` over three runs holding one model's study each."""
    import shutil

    from extract.__main__ import main as extract_main
    from probing.findings import induction_finding

    assert extract_main(["train", "--corpus", "chatgen:80", "--run", str(tmp_path / "run"),
                         "--family", "llama", "--attn-only", "--layers", "2", "--d-model",
                         "16", "--heads", "2", "--ctx", "32", "--steps", "5", "--batch", "2",
                         "--seeds", "0-2", "--threads", "1", "--quiet"]) == 0
    models = [tmp_path / "run" / f"model-seed{s}" for s in range(3)]
    out = tmp_path / "rep"
    assert run_main(main, ["repeated", "--model", *map(str, models), "--seq-len", "10",
                           "--min-len", "4", "--batch", "4", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    each = [read_study(out / m.name) for m in models]
    agg = read_study(out / repeated_kofn.KOFN_DIR)
    assert list(agg["model_name"]) == [m.name for m in models]
    assert agg["value"].shape == (3, len(repeated_kofn.CRITERIA))
    for i, (threshold, get, _) in enumerate(repeated_kofn.CRITERIA):
        values = [get(r.meta) for r in each]
        np.testing.assert_allclose(agg["value"][:, i], values, atol=1e-6)
        assert cells(printed, threshold.name)[2] == f"{sum(map(threshold.holds, values))}/3"
    runs = [tmp_path / f"r{s}" for s in range(3)]
    for run, m in zip(runs, models, strict=True):
        shutil.copytree(out / m.name, run / "studies" / repeated.STUDY)
    assert run_main(main, ["summary", "--run", *map(str, runs)]) == 0
    summary = capsys.readouterr().out
    found = [induction_finding(r) for r in each]
    assert cells(summary, "induction head")[1] == f"{sum(f.found for f in found)}/3"
    assert cells(summary, "quotation head")[1] == "0/3"      # no quote study in any run
    scores = [v for f in found for _, v in f.measures[:1]]
    assert cells(summary, "induction score")[4:7] == [
        f"{min(scores):.2f}", f"{np.median(scores):.2f}", f"{max(scores):.2f}"]


def test_k_of_n_of_a_missing_directory_names_the_repeated_study(tmp_path, capsys):
    missing = tmp_path / "seed7"
    assert run_main(main, ["repeated-k-of-n", "--studies", str(missing), "--out",
                           str(tmp_path / "agg")]) == 2
    err = capsys.readouterr().err
    assert f"repeated study results {missing} not found" in err
    assert "python -m probing repeated " in err and err.count("\n") == 1

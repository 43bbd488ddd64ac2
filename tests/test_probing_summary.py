"""The headline summary of a run directory, read from real stored results."""

import re
import shutil
from dataclasses import replace

import numpy as np
import pytest

from probing import findings
from probing import thresholds as th
from probing.__main__ import main
from probing.results import read_results
from probing.studies import repeated_kofn
from probing.study_io import read_study
from probing.summary import read_run
from probing.top import top_cells


def summary(run, capsys) -> str:
    capsys.readouterr()
    assert main(["summary", "--run", str(run)]) == 0
    return capsys.readouterr().out


def finding_line(out: str, name: str) -> str:
    return next(line for line in out.splitlines() if line.startswith(f"  {name}: "))


@pytest.fixture(scope="module")
def control_results(tmp_path_factory, shared_dataset, shared_model, shared_store):
    """The probe grid of the shared store (layers 0 and 2) with the random-weights control."""
    from extract.extractor import extract_store

    tmp = tmp_path_factory.mktemp("summary_control")
    random = extract_store(shared_dataset, str(shared_model), tmp / "random.h5", split="all",
                           sites=("key", "query"), dtype="float32", reinit_seed=0)
    out = tmp / "probes"
    assert main(["fit", "--store", str(shared_store), "--out", str(out), "--layers", "0,2",
                 "--control-store", str(random), "--bootstrap", "50"]) == 0
    return out


def test_summary_states_each_finding_with_its_control(
        control_results, induction_model_dir, quote_study, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(control_results, run / "probes")
    shutil.copytree(quote_study, run / "studies" / "quote")
    assert main(["repeated", "--model", str(induction_model_dir), "--seq-len", "20",
                 "--batch", "4", "--no-mlp-grid", "--run", str(run)]) == 0
    out = summary(run, capsys)

    rep = read_study(run / "studies" / "repeated")
    grid = rep["induction_score"]
    layer, head = np.unravel_index(grid.argmax(), grid.shape)
    first, second = rep["accuracy"]
    assert grid.max() >= th.INDUCTION_SCORE.bound and second - first >= 0.2
    line = finding_line(out, "induction head")
    low, high = rep.meta["min_len"], rep.meta["seq_len"]
    assert line.startswith(f"  induction head: found: L{layer}H{head} induction score "
                           f"{grid.max():.2f} on 4 sequences of {low}-{high} random tokens "
                           "repeated")
    assert f"first half {first:.2f} -> second half {second:.2f}" in line

    best = [c for c in top_cells(read_results(run / "probes"), "``", k=1000,
                                 by="selectivity", control="random") if c["layer"] > 0][0]
    assert best["value"] >= th.PROBE_MARGIN.bound
    assert finding_line(out, "tag probe (``)") == (
        f"  tag probe (``): found: {best['site']} of {best['cell']} F1 {best['f1']:.2f} vs "
        f"random weights {best['f1_random']:.2f} ({best['value']:+.2f}; threshold "
        f"{th.PROBE_MARGIN.bound:+.2f}; best head outside layer 0; "
        f"{best['support']} test tokens); {best['verdict']}")
    assert "beyond word identity" in best["verdict"]

    # the quote study ran without the model: no attention, so nothing to claim
    assert finding_line(out, "quotation head").startswith(
        "  quotation head: not found: the quote study ran without the model")
    assert "\nquote: " not in out
    # the induction circuit's verdict follows as the repeated study's line
    circuit = rep.meta["circuit"]
    (pl, ph), (il, ih) = circuit["prev_token_head"], circuit["induction_head"]
    assert (f"repeated: circuit: previous-token L{pl}H{ph} ({circuit['prev_token_score']:.2f})"
            f" -> induction L{il}H{ih} ") in out
    # ... and its previous-token head is a finding of its own, beside its ablation control
    score, drop, random = (circuit[k] for k in ("prev_token_score", "ablation_drop",
                                                "random_drop"))
    holds = score >= 0.5 and drop >= 0.5 and random <= 0.1
    assert finding_line(out, "previous-token head").startswith(
        f"  previous-token head: {'found' if holds else 'not found'}: L{pl}H{ph} previous-token "
        f"score {score:.2f}, before induction head L{il}H{ih}; ablating it drops the "
        f"second-half accuracy by {drop:.2f} (random head ")

    # the same results against stricter thresholds: each effect is now "not found"
    monkeypatch.setattr(th, "INDUCTION_SCORE", replace(th.INDUCTION_SCORE,
                                                       bound=float(grid.max()) + 0.01))
    monkeypatch.setattr(th, "PROBE_MARGIN", replace(th.PROBE_MARGIN, bound=best["value"] + 0.01))
    out = summary(run, capsys)
    assert finding_line(out, "induction head").startswith(
        f"  induction head: not found: L{layer}H{head} induction score {grid.max():.2f}")
    assert finding_line(out, "tag probe (``)").startswith(
        f"  tag probe (``): not found: {best['site']} of {best['cell']}")


def test_summary_of_an_empty_run_finds_nothing(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    out = summary(tmp_path / "run", capsys)
    assert "quotation head: not found: no quote study (run python -m probing quote)" in out
    assert "induction head: not found: no repeated study" in out
    assert "previous-token head: not found: no repeated study" in out
    assert "tag probe (``): not found: no probe grid (run python -m probing fit)" in out


def test_summary_of_missing_run_is_a_usage_error(tmp_path, capsys):
    from headprobe.cli import run_main

    assert run_main(main, ["summary", "--run", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    (tmp_path / "a").mkdir()
    assert run_main(main, ["summary", "--run", str(tmp_path / "a"), str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err
    assert run_main(main, ["summary", "--run", str(tmp_path / "a"), str(tmp_path / "a"),
                           "--by", "selectivity"]) == 2
    err = capsys.readouterr().err
    assert "several runs print the k-of-n table only" in err and err.count("\n") == 1


def table_row(out: str, name: str) -> list[str]:
    """The cells of the k-of-n table row named ``name`` (cells split at two spaces)."""
    rows = [re.split(r"\s{2,}", line.strip()) for line in out.splitlines()]
    return next(row for row in rows if row[0] == name)


def test_summary_of_several_runs_counts_each_finding(
        control_results, induction_model_dir, fixed_offset_model_dir, quote_study,
        shared_store, shared_model, tmp_path, capsys):
    """Two runs: the same probe grid; the quotation study with and without the model; the
    repeated study of the induction organism and of the fixed-offset model."""
    runs = [tmp_path / "a", tmp_path / "b"]
    for run, model in zip(runs, (induction_model_dir, fixed_offset_model_dir), strict=True):
        shutil.copytree(control_results, run / "probes")
        assert main(["repeated", "--model", str(model), "--seq-len", "12", "--min-len", "4",
                     "--max-prefix", "6", "--batch", "6", "--no-mlp-grid", "--run",
                     str(run)]) == 0
    assert main(["quote", "--store", str(shared_store), "--model", str(shared_model),
                 "--max-stories", "8", "--run", str(runs[0])]) == 0
    shutil.copytree(quote_study, runs[1] / "studies" / "quote")
    capsys.readouterr()
    assert main(["summary", "--run", *map(str, runs)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Found in k of n: 2 runs")

    per_run = [findings.findings(*read_run(run)[1:]) for run in runs]
    for same in zip(*per_run, strict=True):
        row = table_row(out, same[0].name)
        assert row[1] == f"{sum(f.found for f in same)}/2"
        assert all(f.head in row[-1] for f in same if f.head is not None)
        for threshold in dict.fromkeys(t for f in same for t, _ in f.measures):
            values = [v for f in same for t, v in f.measures if t == threshold]
            row = table_row(out, threshold.name)
            assert row[2] == f"{sum(map(threshold.holds, values))}/2"
            assert row[4:8] == [f"{min(values):.2f}", f"{np.median(values):.2f}",
                                f"{max(values):.2f}",
                                threshold.margin_words(min(values, key=threshold.margin))]
    # the quotation head was measured in one run only: found in at most one
    assert table_row(out, "quotation head")[1] in ("0/2", "1/2")
    assert table_row(out, "tag probe (``)")[1] == "2/2"
    # the circuit: named in the organism's run, not in the fixed-offset model's
    assert table_row(out, "circuit named (both heads >= 0.50)")[1] == "1/2"
    for threshold, get, _ in repeated_kofn.CRITERIA:
        values = [get(read_study(run / "studies" / "repeated").meta) for run in runs]
        assert table_row(out, threshold.name)[2] == f"{sum(map(threshold.holds, values))}/2"
    for run, found in zip(runs, per_run, strict=True):
        verdicts = "; ".join(f"{f.name} {'found' if f.found else 'not found'}" for f in found)
        assert f"  {run}: {verdicts}" in out

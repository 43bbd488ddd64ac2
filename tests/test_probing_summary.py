"""The headline summary of a run directory, read from real stored results."""

import shutil

import numpy as np
import pytest

from probing import findings
from probing.__main__ import main
from probing.results import read_results
from probing.study_io import read_study
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
    assert grid.max() >= findings.INDUCTION_MIN_SCORE and second - first >= 0.2
    line = finding_line(out, "induction head")
    low, high = rep.meta["min_len"], rep.meta["seq_len"]
    assert line.startswith(f"  induction head: found: L{layer}H{head} induction score "
                           f"{grid.max():.2f} on 4 sequences of {low}-{high} random tokens "
                           "repeated")
    assert f"first half {first:.2f} -> second half {second:.2f}" in line

    best = [c for c in top_cells(read_results(run / "probes"), "``", k=1000,
                                 by="selectivity", control="random") if c["layer"] > 0][0]
    assert best["value"] >= findings.PROBE_MIN_MARGIN
    assert finding_line(out, "tag probe (``)") == (
        f"  tag probe (``): found: {best['site']} of {best['cell']} F1 {best['f1']:.2f} vs "
        f"random weights {best['f1_random']:.2f} ({best['value']:+.2f}; threshold "
        f"{findings.PROBE_MIN_MARGIN:+.2f}; best head outside layer 0; "
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

    # the same results against stricter thresholds: each effect is now "not found"
    monkeypatch.setattr(findings, "INDUCTION_MIN_SCORE", float(grid.max()) + 0.01)
    monkeypatch.setattr(findings, "PROBE_MIN_MARGIN", best["value"] + 0.01)
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
    assert "tag probe (``): not found: no probe grid (run python -m probing fit)" in out


def test_summary_of_missing_run_is_a_usage_error(tmp_path, capsys):
    from headprobe.cli import run_main

    assert run_main(main, ["summary", "--run", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.count("\n") == 1

"""Activation statistics of one prompt."""

import numpy as np
import pytest

from headprobe.cli import run_main
from probing.__main__ import main
from probing.studies import stats
from probing.study_io import read_study


def test_summary_and_histograms():
    values = np.arange(1, 101, dtype=float).reshape(2, 50)
    s = stats.summary(values)
    np.testing.assert_allclose(s, [50.5, np.std(values), 1, 25.75, 50.5, 75.25, 100])
    counts, edges = stats.histograms(values, bins=10)
    assert counts.shape == (2, 10) and edges.shape == (11,)
    assert counts.sum() == 100 and counts[0, :5].sum() == 50


def test_stats_study_on_the_shared_model(study_model):
    arrays, meta, report = stats.stats_study(study_model, threshold=0.05, top_k=3)
    n_tok, n_layers = meta["n_tokens"], 8
    assert arrays["attn_out"].shape == (n_layers, n_tok, 64)
    assert arrays["tokens"].shape == (n_tok,)
    np.testing.assert_allclose(arrays["attn_out_summary"][3], stats.summary(arrays["attn_out"][3]))
    # ln2 output is the LayerNorm-normalised residual: each token ~ mean 0, std 1
    ln2 = arrays["ln2_out"]
    np.testing.assert_allclose(ln2.mean(-1), 0.0, atol=1e-4)
    np.testing.assert_allclose(ln2.std(-1), 1.0, atol=1e-2)
    assert np.all(arrays["mlp_below"] >= arrays["mlp_near_zero"])
    assert np.all((arrays["mlp_near_zero"] >= 0) & (arrays["mlp_near_zero"] <= 1))
    top = arrays["mlp_top_values"]
    assert arrays["mlp_top_neurons"].shape == (n_layers, n_tok, 3)
    assert np.all(np.diff(top, axis=-1) <= 0)
    assert top[:, :, 0].max(axis=1) == pytest.approx(arrays["mlp_summary"][:, 6])
    assert arrays["attn_out_hist"].sum(axis=1).tolist() == [n_tok * 64] * n_layers
    assert "ln2 output" in report


def test_stats_cli(shared_model, tmp_path):
    out = tmp_path / "run"
    assert run_main(main, ["stats", "--model", str(shared_model), "--prompt", "Tom was happy.",
                           "--run", str(out)]) == 0
    res = read_study(out / "studies" / "stats")
    assert res.meta["prompt"] == "Tom was happy." and res.arrays["tokens"][0] == "<|endoftext|>"
    assert res.axes["mlp_top_neurons"] == ("layer", "position", "rank")
    assert run_main(main, ["stats", "--model", str(shared_model), "--out",
                           str(tmp_path / "x"), "--threshold", "-1"]) == 2

"""The repeated-random-tokens study: scores, halves, MLP patching, K-composition, CLI."""

import numpy as np
import pytest
import torch
from transformer_lens import FactoredMatrix, head_detector

from headprobe.cli import run_main
from headprobe.hooks import hook_name, layer_hooks
from probing.__main__ import main
from probing.studies import repeated
from probing.studies.common import (
    capture,
)
from probing.study_io import read_study

TEXT = "Tom and Sue went to the park. Tom saw a big dog and Sue saw a cat."


def test_repeated_tokens_repeat_distinct_tokens_after_bos():
    tokens = repeated.repeated_tokens(50, seq_len=12, batch=5, seed=3, bos=0)
    assert tokens.shape == (5, 25)
    assert (tokens[:, 0] == 0).all() and (tokens[:, 1:] != 0).all()
    assert torch.equal(tokens[:, 1:13], tokens[:, 13:])
    assert all(len(set(row[1:13].tolist())) == 12 for row in tokens)
    assert torch.equal(tokens, repeated.repeated_tokens(50, 12, 5, seed=3, bos=0))
    assert not torch.equal(tokens, repeated.repeated_tokens(50, 12, 5, seed=4, bos=0))


def test_scores_agree_with_transformer_lens_head_detector(study_model):
    model = study_model
    # previous-token score on a real sentence against head_detector (it divides by all rows)
    ids = model.to_tokens(TEXT)
    n = ids.shape[-1]
    _, acts = capture(model, ids, layer_hooks("pattern", model.cfg.n_layers))
    mine = torch.stack([repeated.diagonal_score(acts[hook_name("pattern", layer)], -1, 1)
                        for layer in range(model.cfg.n_layers)])
    reference = head_detector.detect_head(model, TEXT, "previous_token_head")
    np.testing.assert_allclose(mine.numpy() * (n - 1) / n, reference.numpy(), atol=1e-5)
    # induction score on repeated tokens against the detector's induction pattern
    seq_len = 10
    tokens = repeated.repeated_tokens(model.cfg.d_vocab, seq_len, 1, seed=0)
    _, scores = repeated.head_scores(model, tokens, seq_len)
    detection = head_detector.get_induction_head_detection_pattern(tokens)
    _, acts = capture(model, tokens, [hook_name("pattern", 2)])
    for head in (0, 7):
        ref = head_detector.compute_head_attention_similarity_score(
            acts[hook_name("pattern", 2)][0, head], detection, exclude_bos=False,
            exclude_current_token=False, error_measure="mul")
        assert scores["induction_score"][2, head] * seq_len / (2 * seq_len + 1) == \
            pytest.approx(ref, abs=1e-5)


def test_mlp_patching_grid_matches_single_patched_runs(study_model, monkeypatch):
    model, seq_len = study_model, 6
    n_layers = model.cfg.n_layers
    tokens = repeated.repeated_tokens(model.cfg.d_vocab, seq_len, 2, seed=1)
    grid = repeated.mlp_patching_grid(model, tokens, seq_len, max_rows=4)   # 2 positions a pass
    assert grid.shape == (n_layers, seq_len)
    # the last token's MLP output feeds no second-half prediction
    np.testing.assert_allclose(grid[:, -1], 0.0, atol=1e-5)
    names = [f"blocks.{layer}.hook_mlp_out" for layer in range(n_layers)]
    logits, clean = capture(model, tokens, names)
    base = repeated.second_half_loss(logits, tokens, seq_len).mean().item()
    for layer, i in ((0, 0), (1, 2), (n_layers - 1, 3)):
        name = names[layer]

        def patch(act, hook, name=name, i=i):
            act[:, seq_len + 1 + i] = clean[name][:, 1 + i]
            return act

        with torch.inference_mode():
            patched = model.run_with_hooks(tokens, fwd_hooks=[(name, patch)])
        expected = repeated.second_half_loss(patched, tokens, seq_len).mean().item() - base
        assert abs(expected) > 1e-4
        assert grid[layer, i] == pytest.approx(expected, abs=1e-4)
    # models whose blocks cannot run on a residual stream alone take full patched passes
    assert repeated.can_resume(model)
    monkeypatch.setattr(repeated, "can_resume", lambda model: False)
    full = repeated.mlp_patching_grid(model, tokens, seq_len, max_rows=6)
    np.testing.assert_allclose(full, grid, atol=1e-4)


def test_top1_accuracy_in_blocks_matches_dense():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(37, 37, generator=gen), torch.eye(37)
    a[:20, :20] += 20 * torch.eye(20)          # rows 0..19 prefer their own column
    matrix = FactoredMatrix(a, b)
    dense = (matrix.AB.argmax(-1) == torch.arange(37)).float().mean().item()
    assert dense >= 20 / 37
    for block in (1, 7, 64):
        assert repeated.top1_accuracy(matrix, block=block) == pytest.approx(dense)
    # a sample of rows: rows 0..19 all hit; the sample of a vocabulary too large is seeded
    assert repeated.top1_accuracy(matrix, block=3, rows=np.arange(0, 20, 2)) == 1.0
    rows = repeated.circuit_rows(37, 10, seed=1)
    assert len(set(rows)) == 10 and np.array_equal(rows, repeated.circuit_rows(37, 10, seed=1))
    assert repeated.circuit_rows(37, 37, seed=1) is None
    assert repeated.circuit_rows(37, 0, seed=1) is None


def test_model_trained_on_repeats_has_an_induction_head(induction_model):
    arrays, meta, report = repeated.repeated_study(induction_model, seq_len=20, batch=20, seed=5)
    assert arrays["induction_score"].max() >= 0.9
    assert meta["accuracy_second"] >= 0.9 and meta["accuracy_first"] <= 0.2
    assert meta["logprob_second"] > meta["logprob_first"] + 2
    loss = arrays["position_loss"]
    assert loss.shape == (2, 20) and loss[1].mean() < 0.5 < loss[0].mean()
    best = tuple(meta["best_induction_head"])
    pattern = arrays["example_pattern"]
    assert pattern.shape == (41, 41)
    assert np.diagonal(pattern, offset=-19)[2:].mean() == pytest.approx(
        arrays["induction_score"][best], abs=0.1)
    k = meta["k_composition"]
    assert k["prev_token_head"][0] < k["induction_head"][0]
    assert 0.0 <= k["top1_accuracy"] <= 1.0
    # attention-only: the MLP outputs are zero, so patching them changes nothing
    np.testing.assert_allclose(arrays["mlp_patch_delta"], 0.0, atol=1e-6)
    assert "induction" in report


def test_repeated_cli_writes_results(induction_model_dir, tmp_path):
    out = tmp_path / "rep"
    argv = ["repeated", "--model", str(induction_model_dir), "--seq-len", "10", "--batch", "4",
            "--out", str(out)]
    assert run_main(main, argv) == 0
    res = read_study(out)
    assert res.study == "repeated"
    assert res.arrays["tokens"].shape == (4, 21)
    assert res.arrays["induction_score"].shape == (2, 4)
    assert res.arrays["example_tokens"].shape == (21,)
    assert res.arrays["mlp_patch_delta"].shape == (2, 10)
    assert res.axes["induction_score"] == ("layer", "head")
    assert "second half" in res.report
    assert run_main(main, argv) == 2                       # exists, no --overwrite
    assert run_main(main, ["repeated", "--model", str(induction_model_dir), "--seq-len",
                           "40", "--out", str(tmp_path / "long")]) == 2

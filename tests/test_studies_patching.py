"""Activation patching: batched grids against transformer_lens.patching, errors, CLI."""

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from transformer_lens import patching as tl_patching

from headprobe.cli import error_line, run_main
from headprobe.errors import UsageError
from probing.__main__ import main
from probing.studies import patching
from probing.study_io import read_study
from tests.conftest import REPO

CLEAN, CORRUPT = "Tom saw Sue. Tom gave it to", "Sue saw Tom. Sue gave it to"


@pytest.fixture(scope="module")
def pair(study_model):
    clean, corrupt = patching.tokenize_pair(study_model, CLEAN, CORRUPT)
    target = patching.single_token(study_model, " Sue", "target")
    foil = patching.single_token(study_model, " Tom", "foil")
    return clean, corrupt, patching.logit_diff_metric(target, foil)


def test_full_grid_matches_transformer_lens(induction_model):
    model = induction_model
    gen = torch.Generator().manual_seed(0)
    clean = torch.cat([torch.zeros(1, 1, dtype=torch.long),
                       torch.randperm(40, generator=gen)[None, :9] + 1], dim=1)
    clean = torch.cat([clean, clean[:, 1:5]], dim=1)         # ... A B C D ... A B C D
    corrupt = clean.clone()
    corrupt[0, 2] = 45                                       # the token after A differs
    metric = patching.logit_diff_metric(int(clean[0, 2]), 45)
    for site in ("resid_pre", "head"):
        mine = patching.patch_grid(model, clean, corrupt, site, metric, max_rows=7)
        reference = patching.reference_grid(model, clean, corrupt, site, metric)
        assert np.abs(mine).max() > 0.1
        np.testing.assert_allclose(mine, reference, atol=1e-4)


@pytest.mark.parametrize("site", ["resid_pre", "attn_out", "mlp_out", "head"])
def test_shared_model_grids_match_transformer_lens_on_sampled_cells(study_model, pair, site):
    clean, corrupt, metric = pair
    mine = patching.patch_grid(study_model, clean, corrupt, site, metric)
    width = study_model.cfg.n_heads if site == "head" else clean.shape[-1]
    assert mine.shape == (study_model.cfg.n_layers, width)
    column = "head" if site == "head" else "pos"
    cells = pd.DataFrame({"layer": [0, 2, 5, 7], column: [1, 3, width - 1, width - 2]})
    functions = {"resid_pre": tl_patching.get_act_patch_resid_pre,
                 "attn_out": tl_patching.get_act_patch_attn_out,
                 "mlp_out": tl_patching.get_act_patch_mlp_out,
                 "head": tl_patching.get_act_patch_attn_head_out_all_pos}
    _, cache = study_model.run_with_cache(clean)
    with torch.inference_mode():
        reference = functions[site](study_model, corrupt, cache, lambda lg: metric(lg)[0],
                                    index_axis_names=None, index_df=cells)
    np.testing.assert_allclose(mine[cells.layer.to_numpy(), cells[column].to_numpy()],
                               reference.numpy(), atol=1e-4)


def test_normalized_resid_post_ends_at_clean_and_starts_at_corrupted(study_model):
    arrays, meta, report = patching.patch_study(study_model, CLEAN, CORRUPT, " Sue", " Tom",
                                                site="resid_post", normalize=True)
    grid = arrays["grid"]
    # the last layer's output at the last position is the whole clean prediction
    assert grid[-1, -1] == pytest.approx(1.0, abs=1e-4)
    # BOS and the unchanged tokens before the first difference carry no difference
    np.testing.assert_allclose(grid[:, 0], 0.0, atol=1e-4)
    raw = arrays["grid_raw"]
    assert raw[-1, -1] == pytest.approx(meta["clean_logit_diff"], abs=1e-3)
    assert abs(meta["corrupt_logit_diff"] - meta["clean_logit_diff"]) > 0.1
    assert list(arrays["clean_top_rank"]) == list(range(1, 21))
    assert np.all(np.diff(arrays["clean_top_prob"]) <= 0)
    assert arrays["corrupt_tokens"].shape == (grid.shape[1],)
    assert "' Sue'" in report


def test_answers_must_be_single_tokens(study_model):
    with pytest.raises(UsageError, match=r"^target ' Jones' must be a single token.*\[' J'"
                       ) as info:
        patching.patch_study(study_model, CLEAN, CORRUPT, " Jones", " Tom")
    assert error_line(info.value).startswith("--target ' Jones' must be a single token")
    with pytest.raises(UsageError, match="both target and foil"):
        patching.patch_study(study_model, CLEAN, CORRUPT, " Sue", None)


def test_unequal_lengths_exit_2_with_one_line(shared_model, tmp_path):
    out = tmp_path / "p"
    proc = subprocess.run(
        [sys.executable, "-m", "probing", "patch", "--model", str(shared_model),
         "--clean", "Tom went home.", "--corrupt", "Michelle went home.", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "same number of tokens" in lines[0] and "'Tom'" in lines[0] and "'M'" in lines[0]
    assert not out.exists()


def test_patch_cli_head_site(shared_model, tmp_path):
    out = tmp_path / "patch"
    assert run_main(main, ["patch", "--model", str(shared_model), "--clean", CLEAN,
                           "--corrupt", CORRUPT, "--site", "head", "--out", str(out)]) == 0
    res = read_study(out)
    assert res.arrays["grid"].shape == (8, 16)
    assert list(res.arrays["head_labels"][:2]) == ["H0", "H1"]
    assert res.meta["site"] == "head" and res.meta["answers_given"] is False
    assert res.axes["grid"] == ("layer", "position or head")
    assert "Top 20 next tokens" in res.report


def test_default_answers_are_likely_tokens_the_corruption_moves_most():
    """Of the top-k, the token losing the most probability wins over an unlikely token
    losing a larger factor; the foil is the corrupted prompt's token gaining most."""
    clean = torch.log(torch.tensor([0.50, 0.30, 0.15, 0.04, 0.01]))
    corrupt = torch.log(torch.tensor([0.60, 0.05, 0.30, 0.04, 0.01 / 50]))
    target, foil = patching.default_answers(clean, corrupt, k=4)
    assert target == 1                         # 0.30 -> 0.05 (not token 4: 0.01 -> 0.0002)
    assert foil == 2                           # 0.15 -> 0.30 (token 0 only 0.5 -> 0.6)


def test_report_and_figure_of_default_answers(study_model):
    from figures.patching import patching_effect
    from probing.study_io import StudyResults

    arrays, meta, report = patching.patch_study(study_model, CLEAN, CORRUPT)
    assert not meta["answers_given"] and "rank " in report and "lowers most" in report
    clean_ids = list(arrays["clean_top_id"])
    assert meta["target_id"] in clean_ids
    st = StudyResults(path=REPO, study="patch", arrays=arrays, meta=meta, report=report)
    effect, label = patching_effect(st)
    assert label.startswith("patching effect (0 = corrupted, 1 = clean)")
    np.testing.assert_allclose(effect, patching.normalise(
        arrays["grid_raw"], meta["corrupt_logit_diff"], meta["clean_logit_diff"]))
    differ = arrays["clean_ids"] != arrays["corrupt_ids"]
    # layer 0's input at every differing position together is the clean run; one position
    # alone moves the effect; where the prompts agree, patching changes nothing
    np.testing.assert_allclose(effect[0, ~differ], 0.0, atol=1e-4)
    assert np.abs(effect[0, differ]).max() > 0.05

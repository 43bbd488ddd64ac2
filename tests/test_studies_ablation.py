"""Head ablation: the hook removes exactly the head's output; random controls; per-tag losses."""

import numpy as np
import pytest
import torch

from extract.store import open_store
from headprobe.cli import error_line, run_main
from headprobe.errors import UsageError
from headprobe.stories import read_stories
from probing.__main__ import main
from probing.studies import ablation
from probing.studies.common import (
    capture,
)
from probing.study_io import read_study


def test_zero_ablation_removes_exactly_the_heads_output(study_model):
    tokens = study_model.to_tokens("Once upon a time there was a little cat.")
    names = ["blocks.2.attn.hook_z", "blocks.2.hook_attn_out"]
    _, base = capture(study_model, tokens, names)
    _, ablated = capture(study_model, tokens, names[1:],
                         extra_hooks=ablation.ablation_hooks([(2, 5)], "zero"))
    w_o = study_model.W_O[2, 5].detach()
    contribution = base[names[0]][0, :, 5] @ w_o
    diff = base[names[1]][0] - ablated[names[1]][0]
    assert contribution.abs().max() > 1e-3
    torch.testing.assert_close(diff, contribution, atol=1e-5, rtol=1e-4)


def test_random_head_sets_match_the_layers_and_avoid_the_chosen_heads():
    heads = [(1, 0), (1, 3), (4, 2)]
    sets = ablation.random_head_sets(heads, n_heads=16, draws=6, seed=1)
    assert len(sets) == 6 and len({tuple(s) for s in sets}) > 1
    for s in sets:
        assert sorted(layer for layer, _ in s) == [1, 1, 4]
        assert not set(s) & set(heads) and len(set(s)) == 3


def test_bad_settings_name_the_parameter_and_the_flag():
    with pytest.raises(UsageError, match="^draws must be at least 1$") as info:
        ablation.ablation_study(None, None, [(0, 0)], draws=0)
    assert error_line(info.value) == "--random-draws must be at least 1"
    with pytest.raises(UsageError, match="^unknown mode 'half'") as info:
        ablation.ablation_study(None, None, [(0, 0)], mode="half")
    assert error_line(info.value).startswith("unknown --mode 'half'; choose from zero, mean")


def test_per_tag_means():
    delta = np.array([np.nan, 1.0, 2.0, 3.0, np.nan, 5.0])
    tags = np.array([0, 1, 1, 2, 2, 0])
    np.testing.assert_allclose(ablation.per_tag(delta, tags, 4), [5.0, 1.5, 3.0, np.nan])


def test_mean_z_is_the_mean_over_non_bos_tokens(studies_store, study_model):
    with open_store(studies_store) as store:
        stories = read_stories(store, "test")[:2]
    means = ablation.mean_z(study_model, stories)
    zs = []
    for s in stories:
        _, acts = capture(study_model, torch.as_tensor(s.input_ids)[None],
                          ["blocks.4.attn.hook_z"])
        zs.append(acts["blocks.4.attn.hook_z"][0, 1:])
    torch.testing.assert_close(means[4], torch.cat(zs).mean(0), atol=1e-5, rtol=1e-4)


def test_ablation_study_and_cli(studies_store, study_model, shared_model, tmp_path):
    with open_store(studies_store) as store:
        arrays, meta, report = ablation.ablation_study(store, study_model, [(1, 2), (1, 7)],
                                                       "mean", draws=2, max_stories=1)
    assert arrays["random_delta"].shape == (2, len(arrays["tags"]))
    assert arrays["count"].sum() == meta["n_predictions"]
    weighted = np.nansum(arrays["ablated_delta"] * arrays["count"]) / arrays["count"].sum()
    assert weighted == pytest.approx(meta["ablated_delta_all"], abs=1e-6)
    assert np.any(np.abs(arrays["ablated_delta"]) > 1e-4)
    assert "Mean-ablation of L1H2, L1H7" in report
    out = tmp_path / "ablate"
    argv = ["ablate", "--store", str(studies_store), "--model", str(shared_model),
            "--heads", "0.1", "--random-draws", "1", "--max-stories", "1", "--out", str(out)]
    assert run_main(main, argv) == 0
    res = read_study(out)
    assert res.meta["heads"] == "0.1" and res.arrays["random_delta"].shape[0] == 1
    bad = ["ablate", "--store", str(studies_store), "--heads", "9.0", "--out",
           str(tmp_path / "bad")]
    assert run_main(main, bad) == 2


def test_forward_passes_hold_the_logits_to_the_byte_budget():
    from types import SimpleNamespace

    from headprobe.stories import Story
    from probing.studies.common import model_batches

    stories = [Story(i, 100 * i, np.arange(100)) for i in range(50)]
    budget = 2**22                       # 4 MiB: 2,048 float32 logits rows of 512 ids
    for d_vocab, stories_per_pass in ((512, 20), (50257, 1)):
        model = SimpleNamespace(cfg=SimpleNamespace(n_heads=4, d_vocab=d_vocab))
        groups = list(model_batches(model, stories, max_bytes=budget))
        assert [s for g in groups for s in g] == stories
        assert max(len(g) for g in groups) == stories_per_pass


class _Terminal(__import__("io").StringIO):
    def isatty(self) -> bool:
        return True


def test_forward_passes_show_progress_on_a_terminal_only(monkeypatch):
    import sys
    from types import SimpleNamespace

    from headprobe.stories import Story
    from probing.studies.common import model_batches

    stories = [Story(i, 100 * i, np.arange(100)) for i in range(30)]
    model = SimpleNamespace(cfg=SimpleNamespace(n_heads=4, d_vocab=512))
    for stderr, shown in ((_Terminal(), True), (__import__("io").StringIO(), False)):
        monkeypatch.setattr(sys, "stderr", stderr)
        assert sum(len(g) for g in model_batches(model, stories, max_bytes=2**22)) == 30
        text = stderr.getvalue()
        assert ("forward passes" in text and "/30 " in text) == shown, text

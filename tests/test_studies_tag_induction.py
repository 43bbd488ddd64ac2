"""Part-of-speech induction heads: positions, attention sums, the study on the shared store."""

import numpy as np
import pytest
import torch

from extract.store import open_store
from headprobe.errors import UsageError
from probing.studies import tag_induction


def test_before_positions_need_an_earlier_tag_token():
    is_tag = np.array([0, 1, 0, 0, 1, 0, 1], bool)
    before, other = tag_induction.positions_of(is_tag)
    assert before.tolist() == [3, 5]            # next token tagged, a tag token at or before
    assert other.tolist() == [1, 2, 4]          # tag token seen, next token not tagged
    before, other = tag_induction.positions_of(np.array([0, 1, 1], bool))
    assert before.tolist() == [1] and other.tolist() == []


def test_tag_attention_sums_attention_to_earlier_tag_tokens():
    gen = torch.Generator().manual_seed(0)
    pattern = torch.softmax(torch.randn(2, 3, 6, 6, generator=gen), -1).tril()
    is_tag = np.array([0, 1, 0, 1, 0, 0], bool)
    got = tag_induction.tag_attention(pattern, is_tag, np.array([3, 4]))
    expected = pattern[:, :, 3, [1, 3]].sum(-1) + pattern[:, :, 4, [1, 3]].sum(-1)
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-6)
    assert tag_induction.tag_attention(pattern, is_tag, np.array([], int)).shape == (2, 3)


def test_resolve_tags():
    tags = {"fine": ["NN", "NNS", "VBD"], "coarse": ["NOUN", "VERB"]}
    assert tag_induction.resolve_tags(tags, "NN,NNS") == ("fine", [0, 1], ["NN", "NNS"])
    assert tag_induction.resolve_tags(tags, "VERB") == ("coarse", [1], ["VERB"])
    with pytest.raises(UsageError, match="unknown tag"):
        tag_induction.resolve_tags(tags, "XYZ")


def test_study_on_the_shared_store(studies_store, study_model):
    with open_store(studies_store) as store:
        arrays, meta, report = tag_induction.tag_induction_study(store, study_model, "VBD",
                                                                 max_stories=4)
    assert meta["n_before"] > 0 and meta["n_other"] > 0
    for name in ("score_before", "score_random", "activity_before", "activity_ratio"):
        assert arrays[name].shape == (8, 16)
    assert np.all((arrays["score_before"] >= 0) & (arrays["score_before"] <= 1 + 1e-5))
    best = tuple(meta["best_head"])
    assert arrays["score_diff"][best] == pytest.approx(np.max(arrays["score_diff"]))
    assert arrays["score_diff"][best] > 0
    n = len(arrays["example_tokens"])
    assert arrays["example_pattern"].shape == (n, n)
    assert arrays["example_is_tag"].sum() == sum(t == "VBD" for t in arrays["example_tags"])
    # before positions are exactly the tokens followed by a VBD token with an earlier VBD
    is_tag = arrays["example_is_tag"]
    seen = np.cumsum(is_tag) > 0
    expected = np.r_[seen[:-1] & is_tag[1:], False]
    assert arrays["example_before"].tolist() == expected.tolist()
    assert "VBD" in report

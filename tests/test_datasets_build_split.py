"""Story-level train/test split."""

import numpy as np
import pytest

from datasets_build.dataset import load_tagged_dataset
from datasets_build.split import n_test_stories, split_stories
from headprobe.errors import UsageError


def test_split_is_deterministic_and_exact():
    a, b = split_stories(100, 0.2, seed=3), split_stories(100, 0.2, seed=3)
    assert np.array_equal(a, b) and a.sum() == 20 and set(np.unique(a)) == {0, 1}
    assert not np.array_equal(a, split_stories(100, 0.2, seed=4))


@pytest.mark.parametrize("n, fraction, expected", [
    (10, 0.0, 0), (10, 0.01, 1), (10, 0.99, 9), (1, 0.5, 0), (40, 0.25, 10)])
def test_test_story_count(n, fraction, expected):
    assert n_test_stories(n, fraction) == expected
    assert split_stories(n, fraction, 0).sum() == expected


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 2.0])
def test_bad_fraction(fraction):
    with pytest.raises(UsageError):
        split_stories(10, fraction, 0)


def test_no_story_on_both_sides(shared_dataset):
    ds = load_tagged_dataset(shared_dataset)
    tokens, stories = ds.token_table(), ds.story_table()
    assert stories["split"].sum() == 10 and len(stories["split"]) == 40
    for sid, split in zip(stories["story_id"], stories["split"], strict=True):
        assert set(tokens["split"][tokens["story_id"] == sid]) == {split}
    train, test = ds.story_table("train"), ds.story_table("test")
    assert not set(train["story_id"]) & set(test["story_id"])
    assert not set(train["text"]) & set(test["text"])
    assert ds.manifest["counts"]["test_tokens"] == len(ds.token_table("test")["split"])

"""Quotation heads: spans, per-story statistics on a synthetic store, attention on the real one."""

import numpy as np
import pytest
import torch

from extract.store import open_store, write_store
from headprobe.cli import run_main
from headprobe.stories import Story, read_stories
from probing.__main__ import main
from probing.studies import quote
from probing.studies.common import is_quote_mark
from probing.study_io import read_study


def test_quote_spans_find_the_opening_and_closing_marks():
    strings = ["<bos>", "Tom", " said", ' "', "I", " am", '."', " Then", ' "', "Go", '!"']
    quoted = np.array([0, 0, 0, 0, 1, 1, 0, 0, 0, 1, 0], bool)
    assert quote.quote_spans(quoted, strings) == [(3, 4, 6, 6), (8, 9, 10, 10)]
    # as the dataset marks them: '."' is quoted (its "." is), and closes the quotation
    quoted = np.array([0, 0, 0, 0, 1, 1, 1, 0, 0, 1, 1], bool)
    assert quote.quote_spans(quoted, strings) == [(3, 4, 7, 6), (8, 9, 11, 10)]
    # a mark fused with the first quoted word opens its own quotation, never closes it
    strings = ["<bos>", " said", ' "I', " am", " here"]
    assert quote.quote_spans(np.array([0, 0, 1, 1, 1], bool), strings) == [(2, 2, 5, -1)]
    assert quote.quote_spans(np.array([0, 1, 1, 0, 0], bool), ["a", "b", "c", "d", "e"]) == \
        [(-1, 1, 3, -1)]


@pytest.fixture(scope="module")
def synthetic_store(tmp_path_factory):
    """12 stories of 20 tokens, quoted at positions 5..11; head L1H2 is 3x as active inside."""
    rng = np.random.default_rng(0)
    n_stories, n_tok = 12, 20
    position = np.tile(np.arange(n_tok), n_stories)
    quoted = (position >= 5) & (position < 12)
    activity = rng.uniform(0.5, 1.5, size=(n_stories * n_tok, 2, 3)).astype(np.float32)
    activity[quoted, 1, 2] *= 3.0
    table = {"input_id": rng.integers(1, 50, n_stories * n_tok), "position": position,
             "story_id": np.repeat(np.arange(n_stories), n_tok), "quoted": quoted}
    path = tmp_path_factory.mktemp("quote") / "synthetic.h5"
    return write_store(path, table, {"activity": activity}, dtype="float32")


def test_activity_statistics_find_the_quotation_head(synthetic_store):
    with open_store(synthetic_store) as store:
        arrays, meta, report = quote.quote_study(store)
        act = store.read("activity", 0, 1)
        table = store.tokens(["story_id", "position", "quoted"])
    assert tuple(meta["best_head"]) == (1, 2)
    assert arrays["ratio"][1, 2] == pytest.approx(3.0, rel=0.15)
    assert np.delete(arrays["ratio"].ravel(), 5).max() < 1.3
    assert arrays["t_pvalue"][1, 2] < 1e-4 and arrays["wilcoxon_pvalue"][1, 2] < 0.01
    assert arrays["story_mean_in"].shape == (12, 2, 3) and meta["n_stories"] == 12
    story = table["story_id"] == 4
    inside = act[story & table["quoted"]].mean()
    outside = act[story & ~table["quoted"] & (table["position"] > 0)].mean()
    assert arrays["story_mean_in"][4, 0, 1] == pytest.approx(inside, rel=1e-5)
    assert arrays["story_mean_out"][4, 0, 1] == pytest.approx(outside, rel=1e-5)
    assert arrays["example_activity"].shape == arrays["example_quoted"].shape
    assert "L1H2" in report and "attn" not in report.splitlines()[1]
    assert meta["n_source_stories"] == 12 and "(12 stories with quotations," in report


def test_windows_of_longer_stories_are_counted_as_windows(synthetic_store, tmp_path):
    """Windows cut from one story share its parent_id: the study counts both."""
    with open_store(synthetic_store) as store:
        table = store.tokens(["input_id", "position", "story_id", "quoted"])
        activity = store.read_layer("activity", 0), store.read_layer("activity", 1)
    table["parent_id"] = table["story_id"] // 3              # 12 windows of 4 stories
    path = write_store(tmp_path / "windows.h5", table,
                       {"activity": np.stack(activity, axis=1)}, dtype="float32")
    with open_store(path) as store:
        _, meta, report = quote.quote_study(store)
    assert (meta["n_stories"], meta["n_source_stories"]) == (12, 4)
    assert "(12 windows of 4 stories with quotations," in report


def test_attention_to_the_opening_mark_matches_the_pattern_hooks(studies_store, study_model):
    with open_store(studies_store) as store:
        arrays, meta, report = quote.quote_study(store, study_model, max_stories=3)
        stories = read_stories(store)
        quoted_col = store.tokens(["quoted"])["quoted"].astype(bool)
    assert meta["n_stories"] > 0 and meta["n_quoted_queries"] > 0
    assert arrays["attn_to_open"].shape == (8, 16)
    assert np.all((arrays["attn_to_open"] >= 0) & (arrays["attn_to_open"] <= 1))
    # recompute from run_with_cache on the first story with a quotation
    tok = study_model.tokenizer
    for story in stories:
        q = quoted_col[story.rows]
        strings = [tok.decode([int(i)]) for i in story.input_ids]
        spans = [s for s in quote.quote_spans(q, strings) if s[0] >= 0]
        if spans:
            break
    one = quote.quote_attention(study_model, [story], [q], [strings])
    _, cache = study_model.run_with_cache(torch.as_tensor(story.input_ids)[None])
    values = [cache["blocks.3.attn.hook_pattern"][0, 5, p, mark].item()
              for mark, start, end, _ in spans for p in range(max(start, mark + 1), end)]
    assert one["attn_to_open"][3, 5] == pytest.approx(np.mean(values), abs=1e-5)
    # a window that opens inside a quotation (no opening mark) adds nothing
    first = spans[0]
    cut = Story(story.story_id, story.start + first.open + 1,
                story.input_ids[first.open + 1:first.end])
    tail = quote.quote_attention(study_model, [story, cut], [q, q[first.open + 1:first.end]],
                                 [strings, strings[first.open + 1:first.end]])
    assert tail["n_queries"] == one["n_queries"]
    np.testing.assert_allclose(tail["attn_to_open"], one["attn_to_open"], atol=1e-6)
    # once the closing mark appears: attention to it from it and the tokens after it
    pattern = cache["blocks.3.attn.hook_pattern"][0, 5]
    n = len(story.input_ids)
    closed = [(k, q) for k, q in enumerate(spans) if q.close >= 0]
    stops = [spans[k + 1].open if k + 1 < len(spans) else n for k, _ in closed]
    values = [pattern[p, q.close].item() for (_, q), stop in zip(closed, stops, strict=True)
              for p in range(q.close, stop)]
    assert one["attn_to_close"][3, 5] == pytest.approx(np.mean(values), abs=1e-5)
    assert one["n_closing"] == len(closed) > 0
    # around the closing mark: offset 0 is the mark itself, which attends to itself
    offsets = one["shift_offset"].tolist()
    zero = offsets.index(0)
    at_mark = [pattern[q.close, q.close].item() for _, q in closed]
    assert one["shift_to_close"][zero, 3, 5] == pytest.approx(np.mean(at_mark), abs=1e-5)
    assert np.isnan(one["shift_to_close"][:zero]).all()
    to_open = [pattern[q.close, q.open].item() for _, q in closed]
    assert one["shift_to_open"][zero, 3, 5] == pytest.approx(np.mean(to_open), abs=1e-5)
    best = tuple(meta["best_head"])
    n = len(arrays["example_tokens"])
    assert arrays["example_pattern"].shape == (n, n)
    np.testing.assert_allclose(arrays["example_pattern"].sum(-1), 1.0, atol=1e-4)
    assert arrays["ratio"][best] == np.nanmax(arrays["ratio"])
    assert "attends most to" in report
    assert arrays["attn_to_close"].shape == (8, 16) and meta["n_closing"] > 0
    assert tuple(meta["close_head"]) == np.unravel_index(arrays["attn_to_close"].argmax(),
                                                         (8, 16))
    assert "Around the closing mark" in report and "close->close" in report
    closing = np.flatnonzero(arrays["example_closing"])
    assert len(closing) and all(is_quote_mark(arrays["example_tokens"][i]) for i in closing)


def test_quote_cli_without_model(studies_store, tmp_path):
    out = tmp_path / "quote"
    assert run_main(main, ["quote", "--store", str(studies_store), "--no-model",
                           "--out", str(out)]) == 0
    res = read_study(out)
    assert res.study == "quote" and "attn_to_open" not in res.arrays
    assert isinstance(res.arrays["example_tokens"][0], str)
    assert res.axes["ratio"] == ("layer", "head") and "axes" not in res.meta
    assert run_main(main, ["quote", "--store", str(tmp_path / "missing.h5"),
                           "--out", str(tmp_path / "q2")]) == 2

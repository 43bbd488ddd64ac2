"""Building datasets end to end through the Python API."""

import json

import numpy as np
import pytest

from datasets_build.build import build_dataset
from datasets_build.dataset import TOKEN_COLUMNS, load_tagged_dataset
from datasets_build.demo_corpus import demo_stories
from datasets_build.sources import open_source, read_separated
from datasets_build.tagging import load_pipeline, tag_stories
from datasets_build.tagsets import has_tag
from headprobe.tokenization import load_tokenizer, vocab_hash


def test_shared_dataset_contents(shared_dataset, shared_model, valid_text):
    ds = load_tagged_dataset(shared_dataset)
    tok = load_tokenizer(str(shared_model))
    m = ds.manifest
    assert m["tokenizer"]["vocab_hash"] == vocab_hash(tok) == ds.vocab_hash
    assert m["tokenizer"]["bos_id"] == 0 and m["tokenizer"]["prepend_bos"]
    assert m["spacy"]["components"] == ["tok2vec", "tagger"] and m["spacy"]["ruler_as_table"]
    assert m["counts"]["stories"] == 40 and m["seed"] == 0 and m["test_fraction"] == 0.25
    assert m["alignment"]["aligned_fraction"] >= 0.99
    for name in ("BOS", "SPACE", "UNK", "``", "''", "NNP", "VBD", "PRP$"):
        assert name in ds.tags["fine"]
    assert {"BOS", "SPACE", "PROPN", "VERB"} <= set(ds.tags["coarse"])

    first = [s.strip() for s in read_separated(valid_text)][:40]
    stories = ds.story_table()
    assert stories["text"] == first
    t = ds.token_table()
    for sid, ids, rows in ds.iter_stories():
        text = first[sid]
        assert ids[0] == 0 and t["position"][rows].tolist() == list(range(len(ids)))
        assert t["fine_tag"][rows][0] == ds.tags["fine"].index("BOS")
        assert ids[1:].tolist() == tok(text, add_special_tokens=False)["input_ids"]
        spans = zip(t["char_start"][rows][1:], t["char_end"][rows][1:], strict=True)
        assert "".join(text[s:e] for s, e in spans) == text  # ASCII text: spans tile it
    quoted_words = {first[s][a:b].strip() for s, a, b, q in zip(
        t["story_id"], t["char_start"], t["char_end"], t["quoted"], strict=True) if q}
    assert '"' not in quoted_words and quoted_words
    said = ds.tags["fine"].index("VBD")
    assert np.sum(t["fine_tag"] == said) > 40
    # the default rule: a token covering a closing quote takes it; its set keeps the rest
    assert m["format_version"] == 3 and m["alignment"]["rule"] == "priority"
    assert has_tag(t["fine_tags"], t["fine_tag"]).all()
    close, period = ds.tags["fine"].index("''"), ds.tags["fine"].index(".")
    fused = has_tag(t["fine_tags"], close) & has_tag(t["fine_tags"], period)
    assert fused.sum() > 10 and (t["fine_tag"][fused] == close).all() and t["straddle"][fused].all()


def test_rules_change_only_fine_and_coarse_tags(tmp_path, shared_dataset, valid_text,
                                               shared_model):
    """Built with rule ``first``, the same stories differ from the default build exactly in
    the tokens its manifest counts, and only in fine_tag and coarse_tag."""
    first = load_tagged_dataset(build_dataset(str(valid_text), str(shared_model),
                                              tmp_path / "first", limit=40, test_fraction=0.25,
                                              align="first"))
    best = load_tagged_dataset(shared_dataset)
    a, b = first.token_table(), best.token_table()
    for col in set(TOKEN_COLUMNS) - {"fine_tag", "coarse_tag"}:
        assert np.array_equal(a[col], b[col]), col
    for manifest in (first.manifest, best.manifest):
        counts = manifest["alignment"]["rules"]["priority"]
        assert counts["changed_fine"] == np.sum(a["fine_tag"] != b["fine_tag"]) > 0
        assert counts["changed_coarse"] == np.sum(a["coarse_tag"] != b["coarse_tag"])
    changes = best.manifest["alignment"]["rules"]["priority"]["changes"]
    assert list(changes)[0] == ". -> ''"
    assert first.manifest["alignment"]["rule"] == "first"
    assert first.manifest["alignment"]["rules"]["first"]["changed_fine"] == 0
    assert "first non-space character" in first.manifest["conventions"]["alignment"]


def test_build_is_deterministic(tmp_path, shared_dataset, valid_text, shared_model):
    out = build_dataset(str(valid_text), str(shared_model), tmp_path / "again", limit=40,
                        test_fraction=0.25, seed=0)
    a, b = load_tagged_dataset(shared_dataset), load_tagged_dataset(out)
    for col in TOKEN_COLUMNS:
        assert np.array_equal(a.token_table()[col], b.token_table()[col]), col
    assert a.tags == b.tags
    other = build_dataset(str(valid_text), str(shared_model), tmp_path / "seed1", limit=40,
                          test_fraction=0.25, seed=1, prepend_bos=False)
    c = load_tagged_dataset(other)
    assert not np.array_equal(a.story_table()["split"], c.story_table()["split"])
    assert c.manifest["tokenizer"]["prepend_bos"] is False
    assert c.n_tokens == a.n_tokens - 40 and "BOS" not in {
        c.tags["fine"][i] for i in np.unique(c.token_table()["fine_tag"])}


def test_demo_dataset(demo_dataset):
    ds = load_tagged_dataset(demo_dataset)
    assert ds.story_table()["text"] == demo_stories(30)
    assert ds.manifest["source"]["kind"] == "demo"
    t = ds.token_table()
    assert t["quoted"].any() and ds.manifest["alignment"]["aligned_fraction"] >= 0.99
    fine = [ds.tags["fine"][i] for i in t["fine_tag"]]
    assert {"PRP$", "VBD", "NNP", "``"} <= set(fine)


def test_demo_corpus_regularities():
    stories = demo_stories(50)
    assert stories == demo_stories(50) and stories[:10] == demo_stories(10)
    assert stories != demo_stories(50, seed=1) and len(set(stories)) == 50
    text = "\n".join(stories)
    for phrase in ('" said', '" asked', " his ", " her ", " their "):
        assert phrase in text, phrase
    assert all(s.count('"') % 2 == 0 for s in stories)


def test_demo_trains_cached_bpe(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADPROBE_CACHE", str(tmp_path / "cache"))
    out = build_dataset("demo:12", None, tmp_path / "ds", test_fraction=0.25)
    m = load_tagged_dataset(out).manifest["tokenizer"]
    path = tmp_path / "cache" / "bpe"
    assert m["path"].startswith(str(path)) and (path / m["path"].split("/")[-1]).is_dir()
    tok = load_tokenizer(m["path"])
    assert m["bos_id"] == 0 == tok.bos_token_id and m["vocab_hash"] == vocab_hash(tok)
    again = build_dataset("demo:12", None, tmp_path / "ds2", test_fraction=0.25)
    assert load_tagged_dataset(again).manifest["tokenizer"]["path"] == m["path"]
    assert len(list(path.iterdir())) == 1


def test_file_sources_and_empty_stories(tmp_path, shared_model):
    stories = ["Tom ran home.", "  ", "Mia said, \"Hi!\"", "", "The dog slept."]
    (tmp_path / "s.txt").write_text("<|endoftext|>".join(stories) + "<|endoftext|>")
    (tmp_path / "s.jsonl").write_text("".join(json.dumps({"text": s}) + "\n" for s in stories))
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": stories}), tmp_path / "s.parquet")
    for suffix in ("txt", "jsonl", "parquet"):
        assert [s.strip() for s in open_source(str(tmp_path / f"s.{suffix}")).stories()
                if s.strip()] == [s for s in stories if s.strip()]
    out = build_dataset(str(tmp_path / "s.txt"), str(shared_model), tmp_path / "ds",
                        test_fraction=0.34, seed=0)
    ds = load_tagged_dataset(out)
    assert ds.n_stories == 3 and ds.manifest["counts"]["dropped_empty"] == 3
    assert ds.story_table("test")["text"] and ds.story_table("train")["text"]
    limited = build_dataset(str(tmp_path / "s.jsonl"), str(shared_model), tmp_path / "ds2",
                            limit=2, test_fraction=0.5)
    assert load_tagged_dataset(limited).story_table()["text"] == ["Tom ran home.",
                                                                 'Mia said, "Hi!"']


def test_reduced_pipeline_tags_like_full(valid_text):
    """Fine tags are identical; coarse tags differ only where a rule needs the parser."""
    texts = [s.strip() for s in read_separated(valid_text)][:6]
    full, fast = load_pipeline(full=True), load_pipeline()
    assert "parser" in full.pipe_names and "parser" not in fast.pipe_names
    same = total = 0
    for a, b in zip(tag_stories(full, texts, batch_size=1), tag_stories(fast, texts),
                    strict=True):
        assert np.array_equal(a.start, b.start) and np.array_equal(a.fine, b.fine)
        same, total = same + int(np.sum(a.coarse == b.coarse)), total + len(a)
    assert total > 500 and same / total > 0.95


@pytest.mark.parametrize("spec", ["demo:0", "demo:x", "demo:3:1:2"])
def test_bad_demo_spec(spec):
    from headprobe.errors import UsageError

    with pytest.raises(UsageError):
        open_source(spec)


def test_python_errors_name_parameters(tmp_path, gpt2_tokenizer):
    from headprobe.errors import UsageError

    for kwargs, needle in (({"limit": 0}, "limit must be at least 1, got 0"),
                           ({"batch_size": 0}, "batch_size must be at least 1"),
                           ({"test_fraction": 1.0}, "test_fraction must be in [0, 1)"),
                           ({"tagset": "ner"}, "unknown tagset 'ner'")):
        with pytest.raises(UsageError) as err:
            build_dataset("demo:3", str(gpt2_tokenizer), tmp_path / "ds", **kwargs)
        assert needle in str(err.value) and "--" not in str(err.value), str(err.value)
    (tmp_path / "x.txt").write_text("Tom ran home.")
    with pytest.raises(UsageError, match="give tokenizer"):
        build_dataset(str(tmp_path / "x.txt"), None, tmp_path / "ds")


def test_untagged_dataset(tmp_path, gpt2_tokenizer):
    from datasets_build.untagged import write_untagged_dataset

    tok = load_tokenizer(str(gpt2_tokenizer))
    texts = [f"Story number {i} is short." for i in range(5)]
    ds = load_tagged_dataset(write_untagged_dataset(tmp_path / "u", texts, tok, test_every=2,
                                                    max_tokens=4))
    assert ds.tags == {"fine": ["X"], "coarse": ["X"]} and ds.vocab_hash == vocab_hash(tok)
    stories = ds.story_table()
    assert stories["text"] == texts and stories["split"].tolist() == [0, 1, 0, 1, 0]
    table = ds.token_table()
    assert stories["n_tokens"].tolist() == [4] * 5 and not table["fine_tag"].any()
    assert table["input_id"][0] == tok.eos_token_id and table["char_start"][0] == -1

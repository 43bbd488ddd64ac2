"""Stories longer than a model's context: windows of whole sentences, from build to store."""

import json
import shutil

import h5py
import numpy as np
import pytest

from datasets_build.__main__ import PROG
from datasets_build.__main__ import main as build_main
from datasets_build.build import build_dataset
from datasets_build.dataset import has_tag_sets, load_tagged_dataset
from datasets_build.sources import read_separated
from datasets_build.split import split_stories
from datasets_build.tagsets import tag_bits
from datasets_build.windows import cut_points, known_context, plan_windows
from extract.__main__ import main as extract_main
from extract.extractor import extract_store
from extract.store import open_store
from headprobe.cli import run_main
from headprobe.errors import UsageError
from headprobe.tokenization import load_tokenizer

CONTEXT = 512
N_LONG = 30
TAG_COLUMNS = ("input_id", "fine_tag", "coarse_tag", "quoted", "straddle", "fine_tags",
               "coarse_tags")


@pytest.fixture(scope="module")
def gpt2(gpt2_tokenizer):
    return load_tokenizer(str(gpt2_tokenizer))


@pytest.fixture(scope="module")
def long_stories(tmp_path_factory, valid_text, gpt2):
    """The first 30 stories of valid-3117.txt that need more than 512 tokens with BOS."""
    texts = [t.strip() for t in read_separated(valid_text)]
    long = [t for t in texts if t and len(gpt2(t)["input_ids"]) + 1 > CONTEXT][:N_LONG]
    path = tmp_path_factory.mktemp("long") / "long.txt"
    path.write_text("<|endoftext|>".join(long))
    return path


@pytest.fixture(scope="module")
def whole(tmp_path_factory, long_stories, gpt2_tokenizer):
    """The long stories as they are: the GPT-2 tokenizer names no context."""
    out = tmp_path_factory.mktemp("whole") / "dataset"
    return load_tagged_dataset(build_dataset(str(long_stories), str(gpt2_tokenizer), out))


@pytest.fixture(scope="module")
def windowed(tmp_path_factory, long_stories, gpt2_tokenizer):
    """The long stories cut for a 512-token context, through the command line."""
    out = tmp_path_factory.mktemp("windowed") / "dataset"
    code = run_main(build_main, ["--source", str(long_stories), "--tokenizer",
                                 str(gpt2_tokenizer), "--max-tokens", str(CONTEXT),
                                 "--out", str(out)], prog=PROG)
    assert code == 0
    return load_tagged_dataset(out)


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory, gpt2_tokenizer):
    """A random 2-layer GPT-2 with a 512-token context, saved with the GPT-2 tokenizer."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = load_tokenizer(str(gpt2_tokenizer))
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tok), n_positions=CONTEXT, n_embd=32, n_layer=2,
                        n_head=4, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    path = tmp_path_factory.mktemp("tiny_gpt2") / "model"
    GPT2LMHeadModel(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def compare_windows(windowed, whole, max_tokens):
    """Check that the windows fit, tile their parents in order and keep the parents' split;
    return (window tokens, of them those with a token of the same span in the whole story,
    of them those with the same id and tags)."""
    ws, hs = windowed.story_table(), whole.story_table()
    assert ws["n_tokens"].max() <= max_tokens
    assert np.all(np.diff(ws["parent_id"]) >= 0)
    for parent, text in enumerate(hs["text"]):
        mine = np.flatnonzero(ws["parent_id"] == parent)
        pieces = [ws["text"][i] for i in mine]
        assert "".join(pieces) == text
        starts = np.concatenate([[0], np.cumsum([len(p) for p in pieces])[:-1]])
        assert ws["parent_char_start"][mine].tolist() == starts.tolist()
        assert set(ws["split"][mine].tolist()) == {hs["split"][parent]}
    wt, ht = windowed.token_table(), whole.token_table()
    offset = ws["parent_char_start"][wt["story_id"]]
    spans = {(p, s, e): i for i, (p, s, e) in enumerate(zip(
        ht["story_id"], ht["char_start"], ht["char_end"], strict=True)) if s >= 0}
    text_rows = np.flatnonzero(wt["char_start"] >= 0)
    matched = same = 0
    for i in text_rows:
        j = spans.get((wt["parent_id"][i], wt["char_start"][i] + offset[i],
                       wt["char_end"][i] + offset[i]))
        if j is not None:
            matched += 1
            same += all(wt[c][i] == ht[c][j] for c in TAG_COLUMNS)
    assert np.array_equal(wt["split"], ws["split"][wt["story_id"]])
    return len(text_rows), matched, same


def test_windows_fit_tile_and_keep_the_tags_of_the_whole_story(windowed, whole):
    n, matched, same = compare_windows(windowed, whole, CONTEXT)
    assert n == matched == same == whole.n_tokens - N_LONG  # every token but BOS
    counts = windowed.manifest["counts"]
    assert counts["parents"] == counts["cut_parents"] == N_LONG
    assert counts["stories"] == windowed.n_stories > N_LONG and counts["long_sentences"] == 0
    assert windowed.manifest["windows"] == {"max_tokens": CONTEXT, "max_tokens_from": "max_tokens",
                                            "sentences": "spaCy senter, line breaks"}
    ws = windowed.story_table()
    last = {parent: i for i, parent in enumerate(ws["parent_id"])}
    for i, text in enumerate(ws["text"]):  # windows end where sentences end
        assert last[ws["parent_id"][i]] == i or text.rstrip()[-1] in ".!?\"'", text[-40:]
    bos = windowed.tags["fine"].index("BOS")
    assert np.all(windowed.token_table()["fine_tag"][ws["token_start"]] == bos)


def test_without_a_limit_stories_stay_whole(whole, long_stories):
    assert whole.manifest["windows"] == {"max_tokens": None, "max_tokens_from": None,
                                         "sentences": None}
    hs = whole.story_table()
    assert hs["text"] == [t.strip() for t in read_separated(long_stories)]
    assert hs["parent_id"].tolist() == hs["story_id"].tolist() == list(range(N_LONG))
    assert not hs["parent_char_start"].any() and whole.manifest["counts"]["cut_parents"] == 0
    assert hs["n_tokens"].min() > CONTEXT


def test_split_is_drawn_over_parent_stories(windowed):
    ws = windowed.story_table()
    parent_split = split_stories(N_LONG, 0.2, 0)
    assert np.array_equal(ws["split"], parent_split[ws["parent_id"]])
    counts = windowed.manifest["counts"]
    assert (counts["train_parents"], counts["test_parents"]) == (24, 6)
    assert counts["test_stories"] == int(np.sum(ws["split"] == 1)) > 6
    train, test = windowed.story_table("train"), windowed.story_table("test")
    assert not set(train["parent_id"].tolist()) & set(test["parent_id"].tolist())


def test_a_sentence_longer_than_the_window_is_cut_and_counted(tmp_path, gpt2_tokenizer, capsys):
    animals = " and a ".join(["cat", "dog", "bird", "fish", "frog", "duck", "cow", "pig"] * 3)
    stories = ['Mia went out. She said, "I see a ' + animals + ',  and a hen!" Then she went home.',
               "Tom ran. He was happy."]
    source = tmp_path / "stories.jsonl"
    source.write_text("".join(json.dumps({"text": s}) + "\n" for s in stories))
    whole = load_tagged_dataset(build_dataset(str(source), str(gpt2_tokenizer), tmp_path / "a"))
    cut = load_tagged_dataset(build_dataset(str(source), str(gpt2_tokenizer), tmp_path / "b",
                                            max_tokens=40, test_fraction=0.5))
    err = capsys.readouterr().err
    assert "warning: 1 sentence(s) need more than 40 tokens" in err and "source stories 0;" in err
    counts = cut.manifest["counts"]
    assert counts["long_sentences"] == 1 and counts["cut_parents"] == 1
    assert counts["stories"] == cut.n_stories >= 4
    n, matched, same = compare_windows(cut, whole, 40)
    assert matched == same and n - matched <= 2 * (counts["stories"] - 2)
    quoted = cut.token_table()["quoted"]
    assert quoted[cut.story_table()["token_start"][2] + 1]  # a window opening inside the quote


def test_chat_logs_are_cut_at_line_breaks(tmp_path, gpt2_tokenizer):
    args = ("chatgen:80", str(gpt2_tokenizer))
    whole = load_tagged_dataset(build_dataset(*args, tmp_path / "a", tagset="structure"))
    cut = load_tagged_dataset(build_dataset(*args, tmp_path / "b", tagset="structure",
                                            max_tokens=32))
    assert cut.manifest["windows"]["sentences"] == "line breaks"
    assert cut.manifest["counts"]["cut_parents"] > 0 == cut.manifest["counts"]["long_sentences"]
    n, matched, same = compare_windows(cut, whole, 32)
    assert n == matched == same
    ws = cut.story_table()
    assert all(text.startswith("\n") for text, start in zip(
        ws["text"], ws["parent_char_start"], strict=True) if start > 0)


def test_cut_points_and_plan():
    text = "Hi.  Bob ran.\n\nThe end."
    assert cut_points(text, [0, 5, 15]).tolist() == [0, 3, 13, len(text)]
    assert cut_points("One\ntwo", []).tolist() == [0, 3, 7]


def test_plan_windows_packs_whole_sentences(gpt2):
    text = "A b. C d. E f."  # three tokens per sentence
    points = cut_points(text, [0, 5, 10])
    starts = np.array([a for a, _ in gpt2(text, return_offsets_mapping=True)["offset_mapping"]])
    plan = plan_windows(gpt2, text, points, starts, budget=6)
    assert plan.spans == [(0, 9), (9, 14)] and plan.long_sentences == 0
    plan = plan_windows(gpt2, text, points, starts, budget=2)
    assert [text[a:b] for a, b in plan.spans] == ["A b", ".", " C d", ".", " E f", "."]
    assert plan.long_sentences == 3


def test_default_max_tokens_comes_from_the_model(tmp_path, tiny_gpt2, gpt2, long_stories):
    assert known_context(gpt2) == (None, "")
    tok = load_tokenizer(str(tiny_gpt2))
    assert known_context(tok) == (CONTEXT, "config.json n_positions")
    tok.model_max_length = 300
    assert known_context(tok) == (300, "tokenizer model_max_length")
    ds = load_tagged_dataset(build_dataset(str(long_stories), str(tiny_gpt2), tmp_path / "d",
                                           limit=3))
    assert ds.manifest["windows"]["max_tokens"] == CONTEXT
    assert ds.manifest["windows"]["max_tokens_from"] == "config.json n_positions"
    assert ds.manifest["counts"]["cut_parents"] == 3
    assert ds.story_table()["n_tokens"].max() <= CONTEXT


def test_a_512_context_model_extracts_the_windows(windowed, whole, tiny_gpt2, tmp_path,
                                                  capsys):
    code = run_main(extract_main, ["--dataset", str(whole.path), "--model", str(tiny_gpt2),
                                   "--out", str(tmp_path / "no.h5"), "--quiet"], prog="x")
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert f"rebuild the dataset with --max-tokens {CONTEXT}" in err
    assert not (tmp_path / "no.h5").exists()

    out = extract_store(windowed.path, str(tiny_gpt2), tmp_path / "windows.h5")
    table = windowed.token_table()
    with open_store(out) as store:
        assert store.n_tokens == windowed.n_tokens
        for column in ("story_id", "parent_id", "position", "fine_tag", "fine_tags"):
            np.testing.assert_array_equal(store.tokens([column])[column], table[column])
        assert np.isfinite(store.read_layer("activity", 1)).all()
    # a store written before windows has no parent column: its stories are their own parents
    old = shutil.copy(out, tmp_path / "old.h5")
    with h5py.File(old, "a") as f:
        del f["tokens/parent_id"]
    with open_store(old) as store:
        np.testing.assert_array_equal(store.tokens()["parent_id"], table["story_id"])


def test_reads_version_1_datasets(whole, tmp_path):
    from datasets import load_from_disk

    old = tmp_path / "v1"
    old.mkdir()
    for part, drop in (("tokens", ["parent_id", "fine_tags", "coarse_tags"]),
                       ("stories", ["parent_id", "parent_char_start"])):
        load_from_disk(str(whole.path / part)).remove_columns(drop).save_to_disk(str(old / part))
    shutil.copy(whole.path / "tags.json", old / "tags.json")
    manifest = {**whole.manifest, "format_version": 1}
    (old / "manifest.json").write_text(json.dumps(manifest))
    ds = load_tagged_dataset(old)
    tokens, stories = ds.token_table(), ds.story_table("test")
    np.testing.assert_array_equal(tokens["parent_id"], tokens["story_id"])
    assert stories["parent_id"].tolist() == stories["story_id"].tolist()
    assert not stories["parent_char_start"].any() and len(stories["text"]) == 6
    # no tag sets before version 3: each token's set is its one tag
    assert not has_tag_sets(ds.manifest) and has_tag_sets(whole.manifest)
    np.testing.assert_array_equal(tokens["fine_tags"], tag_bits(tokens["fine_tag"]))
    np.testing.assert_array_equal(tokens["coarse_tags"], tag_bits(tokens["coarse_tag"]))
    (old / "manifest.json").write_text(json.dumps({**manifest, "format_version": 4}))
    with pytest.raises(UsageError, match="versions 1, 2, 3"):
        load_tagged_dataset(old)


def test_bad_max_tokens(tmp_path, gpt2_tokenizer, capsys):
    argv = ["--source", "demo:3", "--tokenizer", str(gpt2_tokenizer), "--out",
            str(tmp_path / "out"), "--max-tokens", "1"]
    assert run_main(build_main, argv, prog=PROG) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--max-tokens must be at least 2" in err
    with pytest.raises(UsageError, match="max_tokens must be at least 1"):
        build_dataset("demo:3", str(gpt2_tokenizer), tmp_path / "out", max_tokens=0,
                      prepend_bos=False)
    assert not (tmp_path / "out").exists()

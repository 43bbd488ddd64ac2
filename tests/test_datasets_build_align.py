"""Alignment of model tokens to spaCy tags on hard cases, and the quotation rule."""

import numpy as np
import pytest

from datasets_build.align import (
    KIND_ALIGNED,
    KIND_BOS,
    KIND_SPACE,
    KIND_UNALIGNED,
    RULES,
    align_story,
    alignment_stats,
    rule_stats,
)
from datasets_build.tagging import (
    StoryTags,
    load_pipeline,
    quoted_chars,
    tag_stories,
    tag_vocabularies,
)
from datasets_build.tagsets import check_vocabularies, has_tag, tag_bits, tag_matrix, tag_names
from headprobe.errors import UsageError
from headprobe.tokenization import load_tokenizer

HARD = 'He said, "Don\'t go." Mr. Jones  \n\n  smiled 😀 at “the café” ok.'


@pytest.fixture(scope="module")
def nlp():
    return load_pipeline()


@pytest.fixture(scope="module")
def gpt2(gpt2_tokenizer):
    return load_tokenizer(str(gpt2_tokenizer))


def aligned_rows(nlp, tok, text, bos=True, rule="priority"):
    """[(token text or None for BOS, fine, coarse, quoted, straddle, kind)] for ``text``."""
    vocab = tag_vocabularies(nlp)
    enc = tok(text, return_offsets_mapping=True, add_special_tokens=False)
    tags = next(tag_stories(nlp, [text]))
    t = align_story(text, enc["offset_mapping"], tags, vocab, bos=bos, rule=rule)
    return [(None if s < 0 else text[s:e], vocab["fine"][f], vocab["coarse"][c], bool(q),
             bool(st), int(k))
            for s, e, f, c, q, st, k in zip(t.char_start, t.char_end, t.fine, t.coarse,
                                             t.quoted, t.straddle, t.kind, strict=True)], t


def by_text(rows, text):
    return [r for r in rows if r[0] == text]


def test_hard_cases_gpt2(nlp, gpt2):
    rows, t = aligned_rows(nlp, gpt2, HARD)
    assert rows[0] == (None, "BOS", "BOS", False, False, KIND_BOS)
    # contraction: GPT-2 "Don" + "'t", spaCy "Do" + "n't": "Don" straddles, takes "Do"
    (don,) = by_text(rows, "Don")
    assert don[1] in ("VB", "VBP") and don[2] == "AUX" and don[4] and don[3]
    (nt,) = by_text(rows, "'t")
    assert nt[1] == "RB" and nt[2] == "PART" and not nt[4] and nt[3]
    # leading space: " Jones" takes the tags of "Jones"
    (jones,) = by_text(rows, " Jones")
    assert jones[1:3] == ("NNP", "PROPN") and not jones[4]
    # opening quote mark: `` and not quoted; ".\"" straddles and, under the default rule,
    # takes the closing quote; it is quoted (its "." is) whatever the rule
    (open_q,) = by_text(rows, ' "')
    assert open_q[1:4] == ("``", "PUNCT", False)
    (cluster,) = by_text(rows, '."')
    assert cluster[1:3] == ("''", "PUNCT") and cluster[3] and cluster[4]
    (first_rule,) = by_text(aligned_rows(nlp, gpt2, HARD, rule="first")[0], '."')
    assert first_rule[1:5] == (".", "PUNCT", True, True)
    # whitespace-only tokens get SPACE, never a spaCy tag
    spaces = [r for r in rows if r[0] is not None and r[0].isspace()]
    assert spaces and all(r[1:3] == ("SPACE", "SPACE") and r[5] == KIND_SPACE for r in spaces)
    # curly quotes: content quoted, marks not
    (cafe,) = [r for r in rows if r[0] and "caf" in r[0]]
    assert cafe[3]
    assert not any(r[3] for r in rows if r[0] and r[0].strip() in ("“", "”", "\u201d"))
    # the emoji is split into byte pieces that share its span and its tags
    emoji = [r for r in rows if r[0] and "😀" in r[0]]
    assert len(emoji) >= 2 and len({r[1:3] for r in emoji}) == 1
    stats = alignment_stats([t])
    assert stats["aligned_fraction"] == 1.0 and stats["shared_char_tokens"] >= 1
    assert stats["straddle_tokens"] == sum(r[4] for r in rows)


def test_char_spans_cover_text(nlp, shared_model):
    """Shared model tokenizer splits é into byte tokens; spans stay valid, all aligned."""
    tok = load_tokenizer(str(shared_model))
    text = "Zoë   smiled.\nNaïve Tom said, “I can't!”"
    rows, t = aligned_rows(nlp, tok, text, bos=False)
    assert t.kind[0] != KIND_BOS and len(rows) == len(tok(text)["input_ids"])
    assert np.all(t.char_start >= 0) and np.all(t.char_end <= len(text))
    assert np.all(t.char_start[1:] >= t.char_start[:-1])  # spans are in order
    assert np.all(t.kind != KIND_UNALIGNED)
    assert set(np.flatnonzero(t.kind == KIND_SPACE)) == {
        i for i, r in enumerate(rows) if r[0].isspace()}
    # every non-space character of the text is covered by some token span
    covered = np.zeros(len(text), bool)
    for s, e in zip(t.char_start, t.char_end, strict=True):
        covered[s:e] = True
    assert covered.all()


def test_empty_and_whitespace_stories(nlp, gpt2):
    vocab = tag_vocabularies(nlp)
    for text in ("", "   \n "):
        tags = next(tag_stories(nlp, [text]))
        enc = gpt2(text, return_offsets_mapping=True, add_special_tokens=False)
        t = align_story(text, enc["offset_mapping"], tags, vocab, bos=True)
        assert t.kind[0] == KIND_BOS and np.all(t.kind[1:] == KIND_SPACE)


def _toy_vocab():
    return {"fine": ["NN", "VBD", ".", "BOS", "SPACE", "UNK"],
            "coarse": ["NOUN", "VERB", "PUNCT", "SPACE", "BOS", "UNK"]}


def test_rule_on_handmade_tags():
    """Without spaCy: first non-space character decides; uncovered characters are UNK."""
    text = "dogs ran."
    # spaCy-like tokens "dogs" (0-4) and "ran" (5-8); "." left uncovered on purpose
    tags = StoryTags(np.array([0, 5], np.int32), np.array([4, 8], np.int32),
                     np.array([0, 1], np.int16), np.array([0, 1], np.int16),
                     np.array([False, True]))
    offsets = np.array([[0, 2], [2, 6], [6, 8], [8, 9], [9, 9]])  # "do" "gs r" "an" "." ""
    t = align_story(text, offsets, tags, _toy_vocab(), bos=False)
    assert t.fine.tolist() == [0, 0, 1, 5, 5]
    assert t.straddle.tolist() == [False, True, False, False, False]
    assert t.quoted.tolist() == [False, False, True, False, False]
    assert t.kind.tolist() == [KIND_ALIGNED] * 3 + [KIND_UNALIGNED] * 2
    stats = alignment_stats([t])
    assert stats["unaligned_tokens"] == 2 and stats["aligned_fraction"] == pytest.approx(0.6)


@pytest.mark.parametrize("text, inside", [
    ('a "b c" d', "b c"),
    ('"x" y "z"', "xz"),
    ("“curly” out", "curly"),
    ('open "no close\nnext', "no close"),
    ('"one" and "two', "onetwo"),
])
def test_quoted_chars(text, inside):
    q = quoted_chars(text)
    assert "".join(c for c, f in zip(text, q, strict=True) if f) == inside
    assert not any(q[i] for i, c in enumerate(text) if c in '"“”\n')


# model token -> the spaCy token each rule takes its tags from, on hand-made strings
RULE_CASES = {
    "quote after punctuation": ('"Hi!" she said.', '!"',
                                {"first": "!", "last": '"', "mid": '"', "priority": '"'}),
    "contraction": ("Don't", "Don", {"first": "Do", "last": "n't", "mid": "Do", "priority": "Do"}),
    "closing quote ends the story": ('Tom said, "Bye."', '."',
                                     {"first": ".", "last": '"', "mid": '"', "priority": '"'}),
}


@pytest.fixture(scope="module")
def shared_tok(shared_model):
    return load_tokenizer(str(shared_model))


def spacy_and_tokens(nlp, tok, text, rule):
    vocab = tag_vocabularies(nlp)
    tags = next(tag_stories(nlp, [text]))
    enc = tok(text, return_offsets_mapping=True, add_special_tokens=False)
    return vocab, tags, align_story(text, enc["offset_mapping"], tags, vocab, bos=True,
                                    rule=rule)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("case", RULE_CASES)
def test_each_rule_on_handmade_strings(nlp, shared_tok, case, rule):
    text, token, expected = RULE_CASES[case]
    vocab, tags, t = spacy_and_tokens(nlp, shared_tok, text, rule)
    (i,) = [k for k in range(1, len(t.kind)) if text[t.char_start[k]:t.char_end[k]] == token]
    s, e = t.char_start[i], t.char_end[i]
    covered = [j for j in range(len(tags)) if tags.start[j] < e and tags.end[j] > s]
    assert [text[tags.start[j]:tags.end[j]] for j in covered] == [
        expected["first"], expected["last"]]
    (src,) = [j for j in covered if text[tags.start[j]:tags.end[j]] == expected[rule]]
    assert (t.fine[i], t.coarse[i]) == (tags.fine[src], tags.coarse[src])
    assert t.straddle[i] and t.rule == rule
    assert tag_names(t.fine_tags[i], vocab["fine"]) == sorted(
        {vocab["fine"][tags.fine[j]] for j in covered}, key=vocab["fine"].index)
    assert tag_names(t.coarse_tags[i], vocab["coarse"]) == sorted(
        {vocab["coarse"][tags.coarse[j]] for j in covered}, key=vocab["coarse"].index)
    if expected[rule] == '"':
        assert vocab["fine"][t.fine[i]] == "''"
    if case == "closing quote ends the story":
        assert i == len(t.kind) - 1 and t.quoted[i]  # its "." is inside the quotation


@pytest.mark.parametrize("rule", RULES)
def test_emoji_pieces_agree_under_every_rule(nlp, shared_tok, rule):
    text = "I love cake 😀 yes"
    vocab, tags, t = spacy_and_tokens(nlp, shared_tok, text, rule)
    pieces = [k for k in range(1, len(t.kind)) if "😀" in text[t.char_start[k]:t.char_end[k]]]
    (emoji,) = [j for j in range(len(tags)) if text[tags.start[j]:tags.end[j]] == "😀"]
    assert len(pieces) >= 2 and not t.straddle[pieces].any()
    assert set(t.fine[pieces].tolist()) == {tags.fine[emoji]}
    assert {tag_names(t.fine_tags[k], vocab["fine"])[0] for k in pieces} == {
        vocab["fine"][tags.fine[emoji]]}


def _punct_vocab():
    return {"fine": ["NN", ".", "''", ",", "HYPH", "BOS", "SPACE", "UNK"],
            "coarse": ["NOUN", "PUNCT", "SPACE", "BOS", "UNK"]}


def test_rules_without_spacy():
    """Hand-made spaCy tokens: mid takes the later of two middle characters; priority puts
    quotation marks before words, words before dashes and ',' before '.'; ties go first."""
    text = 'no.",x-y.,'
    bounds = [(0, 2), (2, 3), (3, 4), (4, 5), (5, 6), (6, 7), (7, 8), (8, 9), (9, 10)]
    fine = [0, 1, 2, 3, 0, 4, 0, 1, 3]  # no . '' , x - y . ,
    tags = StoryTags(np.array([b[0] for b in bounds], np.int32),
                     np.array([b[1] for b in bounds], np.int32), np.array(fine, np.int16),
                     np.array([0 if f == 0 else 1 for f in fine], np.int16),
                     np.zeros(len(bounds), bool))
    offsets = np.array([[0, 5], [5, 8], [8, 10]])
    vocab = _punct_vocab()
    expected = {"first": ["NN", "NN", "."], "last": [",", "NN", ","],
                "mid": [".", "HYPH", ","], "priority": ["''", "NN", ","]}
    for rule in RULES:
        t = align_story(text, offsets, tags, vocab, bos=False, rule=rule)
        assert [vocab["fine"][f] for f in t.fine] == expected[rule], rule
    assert [tag_names(x, vocab["fine"]) for x in t.fine_tags] == [
        ["NN", ".", "''", ","], ["NN", "HYPH"], [".", ","]]
    assert t.straddle.tolist() == [True, True, True]
    stats = rule_stats([t], vocab["fine"])
    assert [stats[r]["changed_fine"] for r in RULES] == [0, 2, 3, 2]
    assert stats["priority"]["changes"] == {"NN -> ''": 1, ". -> ,": 1}
    assert stats["first"]["hidden"] == 6 and stats["priority"]["hidden"] == 6
    assert stats["first"]["least_visible"]["''"] == 0.0
    assert stats["priority"]["least_visible"]["HYPH"] == 0.0
    with pytest.raises(UsageError, match="first, last, mid, priority"):
        align_story(text, offsets, tags, vocab, bos=False, rule="middle")


def test_tag_sets_hold_up_to_64_tags():
    ids = np.array([0, 5, 63])
    sets = tag_bits(ids)
    sets[1] |= tag_bits(np.array([7]))[0]
    assert sets.dtype == np.uint64 and sets[2] == np.uint64(1) << np.uint64(63)
    matrix = tag_matrix(sets, 64)
    assert [np.flatnonzero(row).tolist() for row in matrix] == [[0], [5, 7], [63]]
    assert has_tag(sets, 7).tolist() == [False, True, False]
    assert has_tag(sets, ids).all()
    check_vocabularies({"fine": [f"T{i}" for i in range(64)]})
    with pytest.raises(UsageError, match="65 tags; tag sets hold at most 64"):
        check_vocabularies({"fine": [f"T{i}" for i in range(65)]})

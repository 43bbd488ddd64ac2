"""The attribute_ruler applied as a lookup table gives the tags of the ruler itself."""

import numpy as np
import pytest
import spacy
from spacy.tokens import Doc

from datasets_build.sources import read_separated
from datasets_build.tagging import (
    UNK,
    DocConverter,
    RulerTable,
    load_pipeline,
    pipeline_info,
    ruler_name,
    tag_stories,
    tag_vocabularies,
)

TRICKY = [
    "Don't! I'm sure it's Tom's dog, isn't it? We'll see. They can't, won't and shan't go.",
    "He ain't here, y'all. I'd've gone. You're late 'cause you're slow.",
    '"Hi," she said. \u201cHello!\u201d he replied. \'No,\' said Sue. The dogs\' bones.',
    "  Two  spaces,\ta tab,\n\nnew lines\n \n and trailing   ",
    "   \n\t ",
    "She has 3 cats, 4.5 apples, 1,000 coins and 2nd place at 10:30 on 12/05/2020.",
    "IS THE DOG BIG? YES IT IS. 's 'S n't N'T",
    "There is a cat. There's a dog. That is that, and this is it. Be good. Do it. Have fun.",
]


@pytest.fixture(scope="module")
def pipelines():
    """(reduced pipeline with the ruler as a table, same pipeline running the ruler)."""
    fast = load_pipeline()
    ruled = load_pipeline()
    ruled.enable_pipe(ruler_name(ruled))
    return fast, ruled


def test_reduced_pipeline_runs_tok2vec_and_tagger_only(pipelines):
    fast, ruled = pipelines
    assert fast.pipe_names == ["tok2vec", "tagger"]
    assert ruler_name(fast) == "attribute_ruler" and "attribute_ruler" in fast.disabled
    assert pipeline_info(fast)["ruler_as_table"] and not pipeline_info(ruled)["ruler_as_table"]
    assert DocConverter(fast).table is not None and DocConverter(ruled).table is None


def test_table_tags_like_ruler(pipelines, valid_text):
    """Fine and coarse tags, token by token, on 100 stories from across the file and on
    contractions, quotes, whitespace, possessives and numbers."""
    fast, ruled = pipelines
    stories = [s.strip() for s in read_separated(valid_text)][::31][:100]
    texts = stories + TRICKY
    n_tokens = 0
    for text, want, got in zip(texts, tag_stories(ruled, texts), tag_stories(fast, texts),
                               strict=True):
        assert np.array_equal(want.start, got.start) and np.array_equal(want.end, got.end)
        assert np.array_equal(want.fine, got.fine), text
        assert np.array_equal(want.coarse, got.coarse), text
        n_tokens += len(want)
    assert len(stories) == 100 and n_tokens > 15000

    # the odd cases are really there, and the table changed what the tagger alone gives
    docs = list(ruled.pipe(TRICKY))
    seen = {(t.lower_, t.tag_, t.pos_) for doc in docs for t in doc}
    assert {("'s", "VBZ", "AUX"), ("'s", "POS", "PART"), ("n't", "RB", "PART"),
            ("3", "CD", "NUM")} <= seen
    assert any(t.is_space and t.pos_ == "SPACE" for doc in docs for t in doc)
    bare = DocConverter(fast)
    bare.table = None  # the tagger's output alone: nothing sets pos_
    unk = tag_vocabularies(fast)["coarse"].index(UNK)
    assert all(np.all(bare(doc).coarse == unk) for doc in fast.pipe(TRICKY))


def _rules():
    """Overlapping rules, in the order they are added (later ones win in spaCy)."""
    return [
        {"patterns": [[{"TAG": "NN"}]], "attrs": {"POS": "NOUN"}},
        {"patterns": [[{"LOWER": "run", "TAG": "NN"}]], "attrs": {"POS": "VERB"}},
        {"patterns": [[{"TAG": "VB", "LOWER": "be"}]], "attrs": {"POS": "AUX"}},
        {"patterns": [[{"TAG": {"IN": ["NN", "VB"]}, "LOWER": {"IN": ["walk", "jog"]}}]],
         "attrs": {"POS": "ADV", "LEMMA": "walk"}},
        {"patterns": [[{"TAG": "VB"}]], "attrs": {"POS": "VERB"}},  # overrides the AUX rule
        {"patterns": [[{"ORTH": "Run", "TAG": "NN"}]], "attrs": {"POS": "PROPN"}},
        {"patterns": [[{"LOWER": "dog", "DEP": "nsubj"}]], "attrs": {"POS": "PRON"}},
        {"patterns": [[{"TAG": "DT", "DEP": {"NOT_IN": ["det"]}}]], "attrs": {"POS": "PRON"}},
        {"patterns": [[{"TAG": "DT", "DEP": {"NOT_IN": ["det", ""]}}]], "attrs": {"POS": "X"}},
        {"patterns": [[{"TAG": {"NOT_IN": ["DT"]}, "LOWER": "the"}]], "attrs": {"POS": "SYM"}},
        {"patterns": [[{"LOWER": "a"}, {"LOWER": "dog"}]], "attrs": {"LEMMA": "x"}},
        {"patterns": [[{"TAG": "_SP", "IS_SPACE": False}]], "attrs": {"POS": "X"}},
        {"patterns": [[{"IS_SPACE": True}]], "attrs": {"TAG": "_SP", "POS": "SPACE"}},
    ]


def test_rule_precedence_as_in_spacy():
    """A hand-made ruler on hand-tagged words: the table reproduces spaCy's own result,
    including a later general rule overriding an earlier specific one."""
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("attribute_ruler")
    ruler.add_patterns(_rules())
    words = ["Run", "run", "dog", "walk", "jog", "be", "go", "the", "the", "a", "dog", "  ",
             "\n", "odd", "x"]
    tags = ["NN", "NN", "NN", "VB", "NN", "VB", "VB", "DT", "JJ", "DT", "NN", "_SP", "NN",
            "_SP", "XX"]
    ruled = ruler(Doc(nlp.vocab, words=words, tags=tags))
    table = RulerTable.from_ruler(ruler)
    assert table is not None
    got = [table(nlp.vocab.strings[w], nlp.vocab.strings[t], 0)
           for w, t in zip(words, tags, strict=True)]
    assert [nlp.vocab.strings[t] for t, _ in got] == [t.tag_ for t in ruled]
    assert [p for _, p in got] == [t.pos for t in ruled]
    assert [t.pos_ for t in ruled][:9] == ["PROPN", "VERB", "NOUN", "VERB", "ADV", "VERB",
                                           "VERB", "PRON", "SYM"]
    assert [t.pos_ for t in ruled][11:] == ["SPACE", "SPACE", "X", ""]


@pytest.mark.parametrize("rule", [
    {"patterns": [[{"LOWER": {"REGEX": "^r"}}]], "attrs": {"POS": "X"}},
    {"patterns": [[{"LOWER": "a"}, {"LOWER": "dog"}]], "attrs": {"POS": "X"}, "index": 1},
    {"patterns": [[{"LOWER": "a", "OP": "?"}]], "attrs": {"POS": "X"}},
    {"patterns": [[{"SHAPE": "Xxx"}]], "attrs": {"POS": "X"}},
    {"patterns": [[{"LOWER": "a"}]], "attrs": {"SHAPE": "x"}},
])
def test_rules_beyond_the_table(rule):
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("attribute_ruler")
    ruler.add_patterns(_rules())
    assert RulerTable.from_ruler(ruler) is not None
    ruler.add_patterns([rule])
    assert RulerTable.from_ruler(ruler) is None


def test_pipeline_keeps_a_ruler_beyond_the_table(tmp_path, valid_text):
    """A ruler with a rule the table cannot express keeps running, and tags as before."""
    nlp = load_pipeline(full=True)
    nlp.get_pipe("attribute_ruler").add_patterns(
        [{"patterns": [[{"LOWER": {"REGEX": "^bal+$"}}]], "attrs": {"POS": "X"}}])
    nlp.to_disk(tmp_path / "pipeline")
    kept = load_pipeline(str(tmp_path / "pipeline"))
    assert kept.pipe_names == ["tok2vec", "tagger", "attribute_ruler"]
    assert not pipeline_info(kept)["ruler_as_table"] and DocConverter(kept).table is None
    text = [s.strip() for s in read_separated(valid_text)][0]
    tags = next(tag_stories(kept, [text]))
    balls = [i for i, t in enumerate(kept(text)) if t.lower_ == "ball"]
    assert balls  # the new rule fires
    assert np.all(tags.coarse[balls] == tag_vocabularies(kept)["coarse"].index("X"))

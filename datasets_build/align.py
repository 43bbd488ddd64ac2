"""Aligning model tokens to spaCy tokens through character offsets.

Per model token with character span ``[s, e)`` (from the tokenizer's offset mapping,
``return_offsets_mapping=True``):

* the BOS token gets the tag ``BOS`` (fine and coarse) and the span ``(-1, -1)``;
* a token whose span holds only whitespace (``str.isspace``), such as ``" "`` or ``"\\n\\n"``,
  gets the tag ``SPACE``;
* any other token *covers* the spaCy tokens that hold its non-space characters, and takes
  the fine tag and coarse tag of one of them, chosen by the alignment rule (``RULES``):

  - ``first``: the one under its first non-space character (``" Jones"`` takes ``Jones``);
  - ``last``: the one under its last non-space character;
  - ``mid``: the one under its middle non-space character (of an even number, the later of
    the two middle ones), so ``."`` takes ``''`` and GPT-2's ``Don`` takes ``Do``;
  - ``priority``: the one whose fine tag comes first in ``PRIORITY``: quotation marks, then
    words (every tag not named there), then brackets and dashes, ``:``, ``,`` and ``.``;
    ties go to the earlier spaCy token. ``."`` takes ``''``; ``Don`` takes ``Do``.

* ``quoted`` comes from the first covered spaCy token whatever the rule, so quotation spans
  do not depend on it;
* ``straddle`` is set when the token covers more than one spaCy token;
* ``fine_tags`` and ``coarse_tags`` hold the tags of every covered spaCy token
  (:mod:`datasets_build.tagsets`);
* a token with an empty span, or whose non-space characters no spaCy token covers, gets
  ``UNK`` and counts as unaligned.

Byte-level BPE can cut one multi-byte character (an emoji, ``é``) into several tokens; the
tokenizer then gives each piece the span of the whole character, so every piece takes the
tags of the spaCy token holding that character. Such tokens are counted as
``shared_char_tokens`` in the statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from datasets_build.tagging import BOS, SPACE, UNK, StoryTags, quoted_chars
from datasets_build.tagsets import tag_bits
from headprobe.errors import UsageError, opt

RULES = ("first", "last", "mid", "priority")
DEFAULT_RULE = "priority"
# Fine tags that lose to every tag not listed, in the order they lose: a token covering a
# word and punctuation takes the word; one covering a quotation mark takes the mark.
PRIORITY = (("``", "''"), None, ("-LRB-", "-RRB-", "HYPH", "NFP"), (":",), (",",), (".",))
_NONE = np.iinfo(np.int64).max  # a key larger than any real one
RULE_WORDS = {
    "first": "the spaCy token under its first non-space character",
    "last": "the spaCy token under its last non-space character",
    "mid": "the spaCy token under its middle non-space character (the later of two)",
    "priority": "the covered spaCy token whose fine tag comes first in: quotation marks "
                "(`` ''), words (any other tag), brackets and dashes (-LRB- -RRB- HYPH NFP), "
                ":, ',', '.'; ties go to the earlier token",
}


@dataclass
class TokenTags:
    """Tags of the model tokens of one story under every rule.

    Per token [n_model_tokens]: char_start, char_end (int32, -1 for BOS), quoted, straddle
    (bool), kind (int8, KIND_* below), fine_tags, coarse_tags (uint64 tag sets);
    rule_fine, rule_coarse: int16 [n_model_tokens, len(RULES)], the tags each rule gives;
    rule: the rule of ``fine`` and ``coarse``. For the statistics: covered [n_fine], the
    spaCy tokens of each fine tag that some model token covers, and visible
    [len(RULES), n_fine], those whose tag some model token takes under each rule.
    """

    char_start: np.ndarray
    char_end: np.ndarray
    quoted: np.ndarray
    straddle: np.ndarray
    kind: np.ndarray
    fine_tags: np.ndarray
    coarse_tags: np.ndarray
    rule_fine: np.ndarray
    rule_coarse: np.ndarray
    rule: str
    covered: np.ndarray
    visible: np.ndarray

    @property
    def fine(self) -> np.ndarray:
        """int16 [n_model_tokens]: the fine tag id under ``rule``."""
        return self.rule_fine[:, RULES.index(self.rule)]

    @property
    def coarse(self) -> np.ndarray:
        """int16 [n_model_tokens]: the coarse tag id under ``rule``."""
        return self.rule_coarse[:, RULES.index(self.rule)]


KIND_ALIGNED, KIND_BOS, KIND_SPACE, KIND_UNALIGNED = 0, 1, 2, 3


def check_rule(rule: str) -> str:
    if rule not in RULES:
        raise UsageError(f"unknown alignment rule {opt('align')} {rule!r}; choose from "
                         f"{', '.join(RULES)}")
    return rule


def priority_ranks(fine_vocab: list[str]) -> np.ndarray:
    """int64 [n_fine]: rank of each fine tag under ``priority`` (lower wins)."""
    words = PRIORITY.index(None)
    rank = {tag: level for level, tags in enumerate(PRIORITY) if tags for tag in tags}
    return np.array([rank.get(tag, words) for tag in fine_vocab], dtype=np.int64)


def space_mask(text: str) -> np.ndarray:
    """Bool [len(text)]: the character is whitespace."""
    return np.fromiter((c.isspace() for c in text), dtype=bool, count=len(text))


def char_owner(tags: StoryTags, n_chars: int) -> np.ndarray:
    """Int [n_chars]: index of the spaCy token covering each character, -1 for none."""
    owner = np.full(n_chars, -1, dtype=np.int64)
    lengths = (tags.end - tags.start).astype(np.int64)
    token = np.repeat(np.arange(len(tags)), lengths)
    within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    owner[np.repeat(tags.start.astype(np.int64), lengths) + within] = token
    return owner


@dataclass
class _Runs:
    """The story's non-space characters as runs of one owner (spaCy token or -1).

    owner: [n_runs]; per model token with text, its runs are ``[a, b)``; ``pairs`` is
    (a0, b0, a1, b1, ...), the indices ``np.ufunc.reduceat`` needs to reduce over each
    token's runs (every even-numbered result), over arrays padded by one run.
    """

    owner: np.ndarray
    a: np.ndarray
    b: np.ndarray

    @property
    def pairs(self) -> np.ndarray:
        return np.stack([self.a, self.b], axis=1).ravel()

    def reduce(self, ufunc: np.ufunc, values: np.ndarray, pad: int) -> np.ndarray:
        """``ufunc`` over each token's runs of ``values`` [n_runs] -> [n_tokens with text]."""
        if len(self.a) == 0:
            return np.zeros(0, dtype=values.dtype)
        padded = np.append(values, np.array(pad, dtype=values.dtype))
        return ufunc.reduceat(padded, self.pairs)[::2]


def _runs(owner_ns: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> _Runs:
    """Runs of ``owner_ns`` (owner of each non-space character) and each token's runs;
    lo, hi: [n] the token's non-space characters, all with hi > lo."""
    change = np.r_[True, owner_ns[1:] != owner_ns[:-1]] if len(owner_ns) else np.zeros(0, bool)
    run_of = np.cumsum(change) - 1
    return _Runs(owner_ns[change], run_of[lo], run_of[hi - 1] + 1)


def _choices(runs: _Runs, owner_ns: np.ndarray, lo: np.ndarray, hi: np.ndarray,
             rank: np.ndarray) -> np.ndarray:
    """int64 [n, len(RULES)]: the spaCy token each rule picks, -1 for none; rank: [n_runs]."""
    real = runs.owner >= 0
    index = np.arange(len(runs.owner), dtype=np.int64)
    first = runs.reduce(np.minimum, np.where(real, index, _NONE), _NONE)
    last = runs.reduce(np.maximum, np.where(real, index, -1), -1)
    key = np.where(real, rank * (len(index) + 1) + index, _NONE)
    best = runs.reduce(np.minimum, key, _NONE) % (len(index) + 1)
    owner = np.append(runs.owner, -1)
    first_owner = owner[np.where(first == _NONE, -1, first)]
    mid = owner_ns[lo + (hi - lo) // 2]
    mid = np.where(mid >= 0, mid, first_owner)
    best_owner = np.where(first_owner >= 0, owner[best], -1)
    return np.stack([first_owner, owner[np.where(last < 0, -1, last)], mid, best_owner], 1)


@dataclass
class _Cover:
    """Which spaCy tokens the model tokens of one story cover.

    chosen: int64 [n, len(RULES)], the spaCy token each rule picks (-1: none);
    n_covered: [n] spaCy tokens covered; spaces: bool [n], whitespace-only tokens;
    rows: the tokens with non-space characters and runs their runs; spacy: the indices
    of the spaCy tokens some model token covers.
    """

    chosen: np.ndarray
    n_covered: np.ndarray
    spaces: np.ndarray
    rows: np.ndarray
    runs: _Runs
    spacy: np.ndarray


def cover(text: str, s: np.ndarray, e: np.ndarray, tags: StoryTags,
          fine_vocab: list[str]) -> _Cover:
    """The spaCy tokens under each span ``[s, e)`` (each [n]) of ``text``."""
    nonspace = np.flatnonzero(~space_mask(text))  # positions of non-space characters
    owner_ns = char_owner(tags, len(text))[nonspace]
    lo, hi = np.searchsorted(nonspace, s), np.searchsorted(nonspace, e)
    rows = np.flatnonzero(hi > lo)
    runs = _runs(owner_ns, lo[rows], hi[rows])
    ranks = (priority_ranks(fine_vocab)[tags.fine[np.maximum(runs.owner, 0)]] if len(tags)
             else np.zeros(len(runs.owner), np.int64))
    chosen = np.full((len(s), len(RULES)), -1, dtype=np.int64)
    chosen[rows] = _choices(runs, owner_ns, lo[rows], hi[rows], ranks)
    n_covered = np.zeros(len(s), dtype=np.int64)
    n_covered[rows] = runs.reduce(np.add, (runs.owner >= 0).astype(np.int64), 0)
    return _Cover(chosen, n_covered, (hi <= lo) & (e > s), rows, runs,
                  np.unique(owner_ns[owner_ns >= 0]))


def align_story(text: str, offsets: np.ndarray, tags: StoryTags,
                vocab: dict[str, list[str]], bos: bool,
                quoted_text: np.ndarray | None = None, rule: str = DEFAULT_RULE) -> TokenTags:
    """Tag the model tokens of one story.

    offsets: int [n_tokens, 2] character spans of the story's tokens (without BOS);
    bos: prepend a BOS row; quoted_text: bool [len(text)], which characters are quoted, when
    ``text`` is a window of a longer story (default: ``quoted_chars(text)``); rule: which
    covered spaCy token gives ``fine`` and ``coarse`` (one of RULES; all are computed).
    Returns TokenTags of n_tokens (+1 with BOS) rows.
    """
    offsets = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    s, e = offsets[:, 0], offsets[:, 1]
    c = cover(text, s, e, tags, vocab["fine"])
    aligned = c.chosen[:, 0] >= 0
    kind = np.full(len(s), KIND_UNALIGNED, dtype=np.int8)
    kind[aligned], kind[c.spaces] = KIND_ALIGNED, KIND_SPACE
    columns = {}
    for name, spacy_tags in (("fine", tags.fine), ("coarse", tags.coarse)):
        index = {t: i for i, t in enumerate(vocab[name])}
        own = np.where(c.spaces, index[SPACE], index[UNK])  # tokens that cover no spaCy token
        columns[name] = (_pick(spacy_tags, c.chosen, own),
                         _tag_sets(spacy_tags, c, aligned, own))
    quoted = np.zeros(len(s), dtype=bool)
    quoted[aligned] = tags.quoted[c.chosen[aligned, 0]]
    # a whitespace token inside a quotation is quoted too (character-level rule)
    if c.spaces.any():
        chars = quoted_chars(text) if quoted_text is None else quoted_text
        quoted[c.spaces] = chars[s[c.spaces]]
    covered, visible = _visibility(tags.fine, c, len(vocab["fine"]))
    out = TokenTags(s.astype(np.int32), e.astype(np.int32), quoted, aligned & (c.n_covered > 1),
                    kind, columns["fine"][1], columns["coarse"][1], columns["fine"][0],
                    columns["coarse"][0], check_rule(rule), covered, visible)
    if not bos:
        return out
    return _with_bos(out, vocab["fine"].index(BOS), vocab["coarse"].index(BOS))


def _pick(spacy_tags: np.ndarray, chosen: np.ndarray, own: np.ndarray) -> np.ndarray:
    """int16 [n, len(RULES)]: the tag of each rule's spaCy token, ``own`` [n] where none."""
    if len(spacy_tags) == 0:
        return np.repeat(own[:, None], len(RULES), 1).astype(np.int16)
    return np.where(chosen >= 0, spacy_tags[np.maximum(chosen, 0)], own[:, None]).astype(
        np.int16)


def _tag_sets(spacy_tags: np.ndarray, c: _Cover, aligned: np.ndarray,
              own: np.ndarray) -> np.ndarray:
    """uint64 [n]: the tags of every covered spaCy token, ``own`` [n] for the others."""
    sets = tag_bits(own)
    if len(spacy_tags) and len(c.rows):
        real = c.runs.owner >= 0
        bits = np.where(real, tag_bits(spacy_tags[np.maximum(c.runs.owner, 0)]), 0)
        got = c.runs.reduce(np.bitwise_or, bits.astype(np.uint64), 0)
        keep = aligned[c.rows]
        sets[c.rows[keep]] = got[keep]
    return sets


def _visibility(spacy_fine: np.ndarray, c: _Cover, n_fine: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """(covered [n_fine], visible [len(RULES), n_fine]): per fine tag, the spaCy tokens
    some model token covers, and those whose tag some model token takes under each rule."""
    def count(spacy: np.ndarray) -> np.ndarray:
        return np.bincount(spacy_fine[spacy], minlength=n_fine) if len(spacy) else np.zeros(
            n_fine, np.int64)

    visible = [count(np.unique(c.chosen[c.chosen[:, r] >= 0, r])) for r in range(len(RULES))]
    return count(c.spacy), np.stack(visible)


def _with_bos(t: TokenTags, fine_bos: int, coarse_bos: int) -> TokenTags:
    def pre(a: np.ndarray, v) -> np.ndarray:
        row = np.full((1, *a.shape[1:]), v, dtype=a.dtype)
        return np.concatenate([row, a])

    return TokenTags(pre(t.char_start, -1), pre(t.char_end, -1), pre(t.quoted, False),
                     pre(t.straddle, False), pre(t.kind, KIND_BOS),
                     pre(t.fine_tags, tag_bits(fine_bos)), pre(t.coarse_tags, tag_bits(coarse_bos)),
                     pre(t.rule_fine, fine_bos), pre(t.rule_coarse, coarse_bos), t.rule,
                     t.covered, t.visible)


def shared_char_count(t: TokenTags) -> int:
    """Tokens whose span overlaps the previous token's (pieces of one multi-byte char)."""
    real = t.kind != KIND_BOS
    s, e = t.char_start[real], t.char_end[real]
    return int(np.sum(s[1:] < e[:-1]))


def alignment_stats(parts: list[TokenTags]) -> dict[str, float | int]:
    """Counts over all stories; ``aligned_fraction`` is over non-space, non-BOS tokens."""
    kind = np.concatenate([p.kind for p in parts]) if parts else np.zeros(0, np.int8)
    straddle = sum(int(p.straddle.sum()) for p in parts)
    n_text = int(np.sum((kind == KIND_ALIGNED) | (kind == KIND_UNALIGNED)))
    n_aligned = int(np.sum(kind == KIND_ALIGNED))
    return {
        "tokens": int(len(kind)),
        "bos_tokens": int(np.sum(kind == KIND_BOS)),
        "space_tokens": int(np.sum(kind == KIND_SPACE)),
        "text_tokens": n_text,
        "aligned_tokens": n_aligned,
        "unaligned_tokens": n_text - n_aligned,
        "aligned_fraction": round(n_aligned / n_text, 6) if n_text else 1.0,
        "straddle_tokens": straddle,
        "straddle_fraction": round(straddle / n_text, 6) if n_text else 0.0,
        "shared_char_tokens": sum(shared_char_count(p) for p in parts),
    }


def rule_stats(parts: list[TokenTags], fine_vocab: list[str], top: int = 5
               ) -> dict[str, dict]:
    """What each rule changes against ``first``, over all stories, by rule name.

    changed_fine, changed_coarse: tokens whose tag differs from the one ``first`` gives;
    changes: the ``top`` most frequent fine changes, ``"from -> to": count``;
    hidden: spaCy tokens covered by a model token but whose tag no model token takes;
    visible_share: mean over fine tags of the share of their covered spaCy tokens whose
    tag some model token takes; least_visible: the three tags with the lowest share.
    """
    fine = np.concatenate([p.rule_fine for p in parts]) if parts else np.zeros((0, len(RULES)))
    coarse = np.concatenate([p.rule_coarse for p in parts]) if parts else fine
    covered = sum((p.covered for p in parts), np.zeros(len(fine_vocab), np.int64))
    visible = sum((p.visible for p in parts), np.zeros((len(RULES), len(fine_vocab)), np.int64))
    seen = np.flatnonzero(covered > 0)
    out = {}
    for r, rule in enumerate(RULES):
        moved = fine[:, r] != fine[:, 0]
        pairs, counts = np.unique(np.stack([fine[moved, 0], fine[moved, r]], 1), axis=0,
                                  return_counts=True)
        order = np.argsort(-counts, kind="stable")[:top]
        share = visible[r, seen] / covered[seen]
        low = np.argsort(share, kind="stable")[:3]
        out[rule] = {
            "changed_fine": int(moved.sum()),
            "changed_coarse": int(np.sum(coarse[:, r] != coarse[:, 0])),
            "changes": {f"{fine_vocab[a]} -> {fine_vocab[b]}": int(n)
                        for (a, b), n in zip(pairs[order], counts[order], strict=True)},
            "hidden": int(covered.sum() - visible[r].sum()),
            "visible_share": round(float(share.mean()), 6) if len(seen) else 1.0,
            "least_visible": {fine_vocab[seen[k]]: round(float(share[k]), 4) for k in low},
        }
    return out

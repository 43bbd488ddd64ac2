"""Aligning model tokens to spaCy tokens through character offsets.

The rule, per model token with character span ``[s, e)`` (from the tokenizer's offset
mapping, ``return_offsets_mapping=True``):

* the BOS token gets the tag ``BOS`` (fine and coarse) and the span ``(-1, -1)``;
* a token whose span holds only whitespace (``str.isspace``), such as ``" "`` or ``"\\n\\n"``,
  gets the tag ``SPACE``;
* any other token takes the fine tag, coarse tag and quote flag of the spaCy token that
  covers its first non-space character: ``" Jones"`` takes the tags of ``Jones``;
* ``straddle`` is set when the token's non-space characters belong to more than one spaCy
  token (GPT-2 splits ``Don't`` into ``Don`` + ``'t`` while spaCy has ``Do`` + ``n't``:
  ``Don`` straddles and takes the tags of ``Do``);
* a token with non-space characters that no spaCy token covers, or with an empty span,
  gets ``UNK`` and counts as unaligned.

Byte-level BPE can cut one multi-byte character (an emoji, ``é``) into several tokens; the
tokenizer then gives each piece the span of the whole character, so every piece takes the
tags of the spaCy token holding that character. Such tokens are counted as
``shared_char_tokens`` in the statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from datasets_build.tagging import BOS, SPACE, UNK, StoryTags, quoted_chars


@dataclass
class TokenTags:
    """Tags of the model tokens of one story: arrays [n_model_tokens]."""

    char_start: np.ndarray  # int32, -1 for BOS
    char_end: np.ndarray  # int32, -1 for BOS
    fine: np.ndarray  # int16
    coarse: np.ndarray  # int16
    quoted: np.ndarray  # bool
    straddle: np.ndarray  # bool
    kind: np.ndarray  # int8: KIND_* below


KIND_ALIGNED, KIND_BOS, KIND_SPACE, KIND_UNALIGNED = 0, 1, 2, 3


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


def align_story(text: str, offsets: np.ndarray, tags: StoryTags,
                vocab: dict[str, list[str]], bos: bool,
                quoted_text: np.ndarray | None = None) -> TokenTags:
    """Tag the model tokens of one story.

    offsets: int [n_tokens, 2] character spans of the story's tokens (without BOS);
    bos: prepend a BOS row; quoted_text: bool [len(text)], which characters are quoted, when
    ``text`` is a window of a longer story (default: ``quoted_chars(text)``). Returns
    TokenTags of n_tokens (+1 with BOS) rows.
    """
    offsets = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    s, e = offsets[:, 0], offsets[:, 1]
    nonspace = np.flatnonzero(~space_mask(text))  # positions of non-space characters
    # owner of each non-space character (non-decreasing where >= 0), plus a -1 pad so
    # that lo and hi - 1 below are always valid indices
    owner = np.append(char_owner(tags, len(text))[nonspace], -1)
    lo, hi = np.searchsorted(nonspace, s), np.searchsorted(nonspace, e)
    has_text = hi > lo
    first = np.where(has_text, owner[lo], -1)
    last = np.where(has_text, owner[hi - 1], -1)

    fine_id = {t: i for i, t in enumerate(vocab["fine"])}
    coarse_id = {t: i for i, t in enumerate(vocab["coarse"])}
    aligned = has_text & (first >= 0)
    spaces = (~has_text) & (e > s)
    kind = np.full(len(s), KIND_UNALIGNED, dtype=np.int8)
    kind[aligned], kind[spaces] = KIND_ALIGNED, KIND_SPACE

    src = np.maximum(first, 0)
    fine = np.full(len(s), fine_id[UNK], dtype=np.int16)
    coarse = np.full(len(s), coarse_id[UNK], dtype=np.int16)
    quoted = np.zeros(len(s), dtype=bool)
    if len(tags):
        fine[aligned], coarse[aligned] = tags.fine[src[aligned]], tags.coarse[src[aligned]]
        quoted[aligned] = tags.quoted[src[aligned]]
    fine[spaces], coarse[spaces] = fine_id[SPACE], coarse_id[SPACE]
    # a whitespace token inside a quotation is quoted too (character-level rule)
    if spaces.any():
        chars = quoted_chars(text) if quoted_text is None else quoted_text
        quoted[spaces] = chars[s[spaces]]
    straddle = aligned & (last != first)
    out = TokenTags(s.astype(np.int32), e.astype(np.int32), fine, coarse, quoted, straddle, kind)
    return _with_bos(out, fine_id[BOS], coarse_id[BOS]) if bos else out


def _with_bos(t: TokenTags, fine_bos: int, coarse_bos: int) -> TokenTags:
    def pre(a: np.ndarray, v) -> np.ndarray:
        return np.concatenate([np.array([v], dtype=a.dtype), a])

    return TokenTags(pre(t.char_start, -1), pre(t.char_end, -1), pre(t.fine, fine_bos),
                     pre(t.coarse, coarse_bos), pre(t.quoted, False), pre(t.straddle, False),
                     pre(t.kind, KIND_BOS))


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

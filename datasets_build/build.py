"""Building a tagged dataset: read stories, tag them, tokenize, align, split, write.

``build_dataset`` is the Python entry point (the CLI and other stages' tests call it).
Stories are stripped of leading and trailing whitespace; stories that are then empty are
dropped and counted (``manifest["counts"]["dropped_empty"]``), never kept as BOS-only rows.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from datasets_build import chatlog
from datasets_build.align import TokenTags, align_story, alignment_stats
from datasets_build.dataset import SPLITS, TOKEN_COLUMNS, write_dataset
from datasets_build.sources import Source, open_source
from datasets_build.split import check_test_fraction, split_stories
from datasets_build.tagging import (
    load_pipeline,
    pipeline_info,
    tag_stories,
    tag_vocabularies,
)
from headprobe.atomic import atomic_dir, check_target
from headprobe.errors import UsageError
from headprobe.manifest import base_manifest
from headprobe.tokenization import bos_id, load_tokenizer, vocab_hash
from headprobe.tokenization.bpe import cached_bpe

DEFAULT_BATCH_SIZE = 32
TAGSETS = ("pos", "structure")  # spaCy part of speech, or chat-log fields (chatlog.py)
TOKENIZE_BATCH = 256


def collect_stories(source: Source, limit: int | None = None) -> tuple[list[str], int]:
    """Stripped non-empty stories (the first ``limit`` of them) and the number dropped."""
    texts, dropped = [], 0
    for raw in source.stories():
        if limit is not None and len(texts) >= limit:
            break
        text = raw.strip()
        if text:
            texts.append(text)
        else:
            dropped += 1
    if not texts:
        raise UsageError(f"source {source.spec!r} holds no non-empty story")
    return texts, dropped


def check_offsets(tok: Any, name: str) -> None:
    """Refuse a tokenizer that cannot map tokens back to character spans."""
    try:
        enc = tok("a b", return_offsets_mapping=True, add_special_tokens=False)
    except (NotImplementedError, ValueError, TypeError) as exc:
        raise UsageError(f"tokenizer {name!r} has no offsets support "
                         "(return_offsets_mapping); use a fast tokenizer") from exc
    if "offset_mapping" not in enc:
        raise UsageError(f"tokenizer {name!r} has no offsets support (return_offsets_mapping)")


def open_tokenizer(name: str | None, source: Source, texts: Sequence[str]) -> tuple[Any, str, str]:
    """(tokenizer, name, local path or ''); trains a cached BPE for demo corpora without one."""
    if name is None:
        if source.kind != "demo":
            raise UsageError("give --tokenizer (only demo:N sources can train their own)")
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


def assemble(parts: list[TokenTags], ids: list[list[int]], codes: np.ndarray,
             texts: Sequence[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Token columns (see dataset.TOKEN_COLUMNS) and story columns from per-story pieces."""
    lengths = np.array([len(p.fine) for p in parts], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    tokens = {
        "input_id": np.concatenate([np.asarray(i, dtype=np.int64) for i in ids]),
        "story_id": np.repeat(np.arange(len(parts)), lengths),
        "position": np.concatenate([np.arange(n) for n in lengths]),
        "char_start": np.concatenate([p.char_start for p in parts]),
        "char_end": np.concatenate([p.char_end for p in parts]),
        "fine_tag": np.concatenate([p.fine for p in parts]),
        "coarse_tag": np.concatenate([p.coarse for p in parts]),
        "quoted": np.concatenate([p.quoted for p in parts]),
        "straddle": np.concatenate([p.straddle for p in parts]),
        "split": np.repeat(codes, lengths),
    }
    tokens = {k: np.asarray(v, dtype=TOKEN_COLUMNS[k]) for k, v in tokens.items()}
    stories = {"story_id": list(range(len(parts))), "text": list(texts),
               "split": codes.tolist(), "token_start": starts.tolist(),
               "n_tokens": lengths.tolist()}
    return tokens, stories


def _counts(tokens: dict[str, np.ndarray], codes: np.ndarray, dropped: int) -> dict[str, int]:
    counts = {"stories": int(len(codes)), "tokens": int(len(tokens["split"])),
              "dropped_empty": dropped}
    for code, name in enumerate(SPLITS):
        counts[f"{name}_stories"] = int(np.sum(codes == code))
        counts[f"{name}_tokens"] = int(np.sum(tokens["split"] == code))
    counts["quoted_tokens"] = int(tokens["quoted"].sum())
    return counts


def _check_numbers(limit: int | None, batch_size: int, n_process: int) -> None:
    if limit is not None and limit < 1:
        raise UsageError(f"--limit must be at least 1, got {limit}")
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {batch_size}")
    if n_process < 1:
        raise UsageError(f"--n-process must be at least 1, got {n_process}")


def build_dataset(source: str, tokenizer: str | None, out: str | Path, limit: int | None = None,
                  test_fraction: float = 0.2, seed: int = 0, spacy_model: str | None = None,
                  batch_size: int = DEFAULT_BATCH_SIZE, n_process: int = 1,
                  overwrite: bool = False, prepend_bos: bool = True, split: str = "validation",
                  verbose: bool = False, tagset: str = "pos") -> Path:
    """Build the tagged dataset of ``source`` into directory ``out``; return ``out``.

    source: demo:N, a .txt/.jsonl/.parquet file or a Hugging Face dataset name;
    tokenizer: AutoTokenizer name or directory (None only for demo sources, which then
    train a cached BPE); limit: first N non-empty stories; split: the hub dataset split.
    ``verbose`` shows progress bars and prints the alignment statistics to stderr.
    """
    check_test_fraction(test_fraction)
    _check_numbers(limit, batch_size, n_process)
    out = check_target(out, overwrite)
    src = open_source(source, split=split, limit=limit)
    texts, dropped = collect_stories(src, limit)
    tok, tok_name, tok_path = open_tokenizer(tokenizer, src, texts)
    check_offsets(tok, tok_name)
    bos = bos_id(tok) if prepend_bos else None
    if prepend_bos and bos is None:
        raise UsageError(f"tokenizer {tok_name!r} has no BOS or EOS token; pass --no-bos")
    if tagset not in TAGSETS:
        raise UsageError(f"unknown --tagset {tagset!r}; choose from {', '.join(TAGSETS)}")
    nlp = load_pipeline(spacy_model) if tagset == "pos" else None
    vocab = tag_vocabularies(nlp) if nlp is not None else chatlog.structure_vocabularies()

    bar = {"disable": not verbose, "file": sys.stderr, "total": len(texts), "unit": "story"}
    if nlp is not None:
        tagged = tag_stories(nlp, texts, batch_size=batch_size, n_process=n_process)
    else:  # chat structure tags (datasets_build.chatlog), aligned like spaCy's
        tagged = (chatlog.structure_story_tags(text, vocab) for text in texts)
    parts, ids = [], []
    for text, tags, (story_ids, offsets) in zip(
            texts, tqdm(tagged, desc="tagging", **bar), encode(tok, texts), strict=True):
        parts.append(align_story(text, offsets, tags, vocab, bos=prepend_bos))
        ids.append(([bos] if prepend_bos else []) + story_ids)
    codes = split_stories(len(texts), test_fraction, seed)
    tokens, stories = assemble(parts, ids, codes, texts)

    stats = alignment_stats(parts)
    manifest = base_manifest("datasets_build")
    manifest.update({
        "source": {"spec": source, "kind": src.kind, **src.info, "limit": limit,
                   "stripped": True},
        "tokenizer": {"name": tok_name, "vocab_hash": vocab_hash(tok), "bos_id": bos,
                      "prepend_bos": prepend_bos, "path": tok_path,
                      "class": type(tok).__name__, "vocab_size": len(tok)},
        "tagset": tagset,
        "spacy": None if nlp is None else {
            "requested": spacy_model, **pipeline_info(nlp), "batch_size": batch_size,
            "n_process": n_process},
        "seed": seed,
        "test_fraction": test_fraction,
        "counts": _counts(tokens, codes, dropped),
        "alignment": stats,
        "conventions": {
            "alignment": "a model token takes the tags of the spaCy token covering its first "
                         "non-space character; whitespace-only tokens are SPACE, BOS is BOS",
            "quoted": "strictly between an opening and its closing double quote mark; the "
                      "marks are not quoted; straight quotes alternate; a line break closes",
            "empty_stories": "dropped",
        },
    })
    with atomic_dir(out, overwrite) as tmp:
        write_dataset(tmp, tokens, stories, vocab, manifest)
    if verbose:
        print(format_stats(manifest), file=sys.stderr)
    return out


def format_stats(manifest: dict[str, Any]) -> str:
    """A few lines summarising a build's counts and alignment."""
    c, a = manifest["counts"], manifest["alignment"]
    return (f"stories: {c['stories']} ({c['train_stories']} train, {c['test_stories']} test, "
            f"{c['dropped_empty']} empty dropped)\n"
            f"tokens: {c['tokens']} ({c['train_tokens']} train, {c['test_tokens']} test; "
            f"{a['bos_tokens']} BOS, {a['space_tokens']} whitespace-only)\n"
            f"aligned: {a['aligned_tokens']}/{a['text_tokens']} non-space tokens "
            f"({100 * a['aligned_fraction']:.2f}%), {a['straddle_tokens']} straddle, "
            f"{a['shared_char_tokens']} share a multi-byte character")

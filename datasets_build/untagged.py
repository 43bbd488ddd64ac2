"""Datasets without tags: stories tokenized for a model, every token tagged 'X'.

For benchmarks and tests of stages that ignore tags: no spaCy run, no alignment, the same
on-disk format as a tagged dataset (:mod:`datasets_build.dataset`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from datasets_build.dataset import write_dataset
from datasets_build.tagsets import tag_bits
from headprobe.tokenization import bos_id, vocab_hash

UNTAGGED = {"fine": ["X"], "coarse": ["X"]}


def _encode(tokenizer: Any, text: str, bos: int | None,
            max_tokens: int | None) -> tuple[list[int], list[tuple[int, int]]]:
    """(input ids [n], character spans [n]) of one story, BOS first when there is one."""
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    ids = list(enc["input_ids"])
    spans = [tuple(s) for s in enc["offset_mapping"]]
    if bos is not None:
        ids, spans = [bos, *ids], [(-1, -1), *spans]
    if max_tokens is not None:
        ids, spans = ids[:max_tokens], spans[:max_tokens]
    return ids, spans


def write_untagged_dataset(out_dir: str | Path, texts: Sequence[str], tokenizer: Any,
                           test_every: int = 5, max_tokens: int | None = None) -> Path:
    """Write a dataset of ``texts`` tokenized by ``tokenizer`` (BOS prepended) with no tags.

    Every token gets fine/coarse tag 0 ('X'); every ``test_every``-th story is in the test
    split; ``max_tokens`` cuts each story. Returns ``out_dir``.
    """
    bos = bos_id(tokenizer)
    cols: dict[str, list[np.ndarray]] = {k: [] for k in (
        "input_id", "story_id", "position", "char_start", "char_end")}
    stories: dict[str, list[Any]] = {"story_id": [], "text": [], "split": [],
                                     "token_start": [], "n_tokens": []}
    row = 0
    for sid, text in enumerate(texts):
        ids, spans = _encode(tokenizer, text, bos, max_tokens)
        n = len(ids)
        cols["input_id"].append(np.asarray(ids))
        cols["story_id"].append(np.full(n, sid))
        cols["position"].append(np.arange(n))
        cols["char_start"].append(np.asarray([s[0] for s in spans]))
        cols["char_end"].append(np.asarray([s[1] for s in spans]))
        split = int(sid % test_every == test_every - 1)
        for key, value in (("story_id", sid), ("text", text), ("split", split),
                           ("token_start", row), ("n_tokens", n)):
            stories[key].append(value)
        row += n
    tokens = {k: np.concatenate(v) for k, v in cols.items()}
    n_rows = len(tokens["input_id"])
    splits = np.repeat(np.asarray(stories["split"]), np.asarray(stories["n_tokens"]))
    stories["parent_id"] = list(stories["story_id"])  # never cut into windows
    stories["parent_char_start"] = [0] * len(texts)
    tokens.update({"parent_id": tokens["story_id"],
                   "fine_tag": np.zeros(n_rows), "coarse_tag": np.zeros(n_rows),
                   "quoted": np.zeros(n_rows, bool), "straddle": np.zeros(n_rows, bool),
                   "fine_tags": tag_bits(np.zeros(n_rows, int)),
                   "coarse_tags": tag_bits(np.zeros(n_rows, int)), "split": splits})
    manifest = {"stage": "untagged", "tokenizer": {"vocab_hash": vocab_hash(tokenizer),
                                                   "bos_id": bos},
                "n_stories": len(texts), "n_tokens": n_rows}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_dataset(out_dir, tokens, stories, UNTAGGED, manifest)
    return out_dir

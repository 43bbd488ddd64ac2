"""The plan of an extraction: which stories go where, in which groups and batches.

The plan depends only on the dataset and the options: consecutive stories form groups of
about ``group_tokens`` tokens; inside a group stories are sorted by length and cut into
right-padded batches of at most ``batch_tokens`` padded tokens. Because it is fixed, a
resumed run recomputes exactly the rows an uninterrupted run would have written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datasets_build.dataset import TaggedDataset, load_tagged_dataset
from extract.forward import FastForward, HookForward, check_fast, unsupported_reason
from extract.forward.check import TOLERANCE
from extract.models import bridge_from_hf, load_hf_model, model_fingerprint
from extract.options import ExtractOptions
from extract.store.schema import StoreShape, row_bytes
from extract.store.writer import chunk_rows_for
from headprobe.errors import UsageError, opt
from headprobe.manifest import base_manifest
from headprobe.stories import Story
from headprobe.tokenization import load_tokenizer, vocab_hash

GROUP_BYTES = 128 * 2**20
MAX_GROUP_BATCHES = 16


def select_stories(dataset: TaggedDataset, split: str, shard: tuple[int, int] | None,
                   input_ids: np.ndarray) -> tuple[list[Story], np.ndarray]:
    """The stories of ``split`` ('train', 'test' or 'all'); with ``shard`` (i, n) the i-th of n
    contiguous runs of stories holding about equal numbers of tokens.

    input_ids: the dataset's input_id column [dataset tokens]. Returns the stories placed in
    the store (``start`` is a store row) and the dataset row of every store row [rows].
    """
    table = dataset.story_table(None if split == "all" else split)
    starts = np.asarray(table["token_start"], dtype=np.int64)
    sizes = np.asarray(table["n_tokens"], dtype=np.int64)
    ids = np.asarray(table["story_id"], dtype=np.int64)
    if shard is not None:
        i, n = shard
        before = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        owner = (before * n) // max(int(sizes.sum()), 1)
        keep = owner == i
        starts, sizes, ids = starts[keep], sizes[keep], ids[keep]
    stories, row = [], 0
    for sid, start, size in zip(ids, starts, sizes, strict=True):
        stories.append(Story(int(sid), row, input_ids[start:start + size]))
        row += int(size)
    rows = (np.concatenate([np.arange(a, a + n) for a, n in zip(starts, sizes, strict=True)])
            if len(starts) else np.zeros(0, dtype=np.int64))
    return stories, rows


def plan_groups(stories: Sequence[Story], group_tokens: int) -> list[list[Story]]:
    """Consecutive stories cut into groups of at most ``group_tokens`` (one story at least)."""
    groups: list[list[Story]] = []
    current: list[Story] = []
    size = 0
    for story in stories:
        if current and size + story.n_tokens > group_tokens:
            groups.append(current)
            current, size = [], 0
        current.append(story)
        size += story.n_tokens
    if current:
        groups.append(current)
    return groups


def plan_batches(group: Sequence[Story], batch_tokens: int) -> list[list[Story]]:
    """A group's stories sorted by length, cut so that batch * longest <= batch_tokens."""
    ordered = sorted(group, key=lambda s: (s.n_tokens, s.start))
    batches: list[list[Story]] = []
    current: list[Story] = []
    for story in ordered:
        if current and (len(current) + 1) * story.n_tokens > batch_tokens:
            batches.append(current)
            current = []
        current.append(story)
    if current:
        batches.append(current)
    return batches


@dataclass
class ExtractPlan:
    """Everything an extraction needs before it computes a row.

    dataset_table: the dataset's token columns [dataset tokens]; stories: in store order
    (``story.start`` is a store row); dataset_rows: the dataset row of every store row
    [n_rows]; forward: the forward path (:mod:`extract.forward`); attrs: the store's root
    attributes.
    """

    options: ExtractOptions
    dataset_table: dict[str, np.ndarray]
    stories: list[Story]
    dataset_rows: np.ndarray
    forward: Any
    arch: dict[str, Any]
    chunk_rows: int
    group_tokens: int
    attrs: dict[str, Any]
    tags: dict[str, list[str]]

    @property
    def n_rows(self) -> int:
        return sum(s.n_tokens for s in self.stories)

    def groups(self) -> list[list[Story]]:
        return plan_groups(self.stories, self.group_tokens)

    def token_table(self) -> dict[str, np.ndarray]:
        """The store's token table: the dataset's columns at ``dataset_rows``, each [n_rows]."""
        return {k: v[self.dataset_rows] for k, v in self.dataset_table.items()}


def choose_forward(hf: Any, name: str, sites: Sequence[str], device: str, path: str
                   ) -> tuple[Any, dict[str, Any]]:
    """The forward path and what was checked: the fused one when the model's family is
    implemented and it agrees with the model's own projections (``auto``), else hooks.

    ``path``: 'auto', 'fast' (the fused path, refused when unsupported or disagreeing) or
    'general' (TransformerLens hooks, every family the bridge supports).
    """
    model_type = str(getattr(hf.config, "model_type", "?"))
    reason = unsupported_reason(hf) if path != "general" else "not asked for"
    check: dict[str, Any] = {"fast_path": reason or "supported"}
    if reason is None:
        forward = FastForward(hf, sites)
        error = check_fast(forward, hf)
        check["fast_path_check_error"] = error
        if error <= TOLERANCE:
            return forward, check
        check["fast_path"] = f"disagrees with the model's projections ({error:.2g})"
        if path == "fast":
            raise UsageError(f"the fast forward path disagrees with model type {model_type!r} "
                             f"(relative error {error:.2g}); use {opt('path', 'general')}")
    elif path == "fast":
        raise UsageError(f"the fast forward path cannot run this model ({reason}); use "
                         f"{opt('path', 'general')}")
    return HookForward(bridge_from_hf(hf, name, device), sites, model_type), check


def load_forward(model: Any, sites: Sequence[str], device: str, reinit_seed: int | None,
                 path: str) -> tuple[Any, Any, dict[str, Any]]:
    """(forward path, tokenizer, model attributes) for a model name/dir or a loaded HF model."""
    if isinstance(model, (str, Path)):
        name = str(model)
        hf = load_hf_model(name, device=device, reinit_seed=reinit_seed)
        info = model_fingerprint(name)
    else:
        hf, name = model, str(getattr(model.config, "_name_or_path", "") or "in-memory model")
        info = {"model": name}
    tokenizer = load_tokenizer(name)
    forward, check = choose_forward(hf, name, sites, device, path)
    cfg = hf.config
    info.update({
        "model_type": str(cfg.model_type), "model_config": cfg.to_dict(),
        "architecture": {"n_layers": forward.n_layers, "n_heads": forward.n_heads,
                         "n_kv_heads": forward.n_kv_heads, "d_head": forward.d_head,
                         "d_model": int(cfg.hidden_size), "d_vocab": int(cfg.vocab_size),
                         "n_ctx": forward.n_ctx, "model_type": str(cfg.model_type),
                         **forward.traits},
        "forward_path": forward.name, "forward_check": check,
        "weights": "pretrained" if reinit_seed is None else
        f"re-initialised at random with seed {reinit_seed} (same architecture)",
    })
    return forward, tokenizer, info


def _check_model_fits(options: ExtractOptions, dataset: TaggedDataset, tokenizer: Any,
                      info: dict[str, Any], stories: Sequence[Story], n_ctx: int) -> None:
    """The model must share the dataset's tokenizer and take its longest story."""
    if vocab_hash(tokenizer) != dataset.vocab_hash:
        raise UsageError(f"the tokenizer of model {info['model']!r} differs from the one dataset "
                         f"{options.dataset_dir} was built with; rebuild the dataset with this "
                         "model's tokenizer")
    longest = max(stories, key=lambda s: s.n_tokens, default=None)
    if longest is not None and longest.n_tokens > n_ctx:
        raise UsageError(f"story {longest.story_id} has {longest.n_tokens} tokens but the model's "
                         f"context is {n_ctx}; rebuild the dataset with "
                         f"{opt('max_tokens', n_ctx)} (python -m datasets_build) to cut stories "
                         "into windows of whole sentences")


def _block_sizes(options: ExtractOptions, arch: dict[str, Any], n_rows: int) -> tuple[int, int]:
    """(chunk_rows, group_tokens): given ones, else sized to the memory budgets."""
    shape = StoreShape.of(arch)
    chunk_rows = int(options.chunk_rows or chunk_rows_for(shape, options.sites))
    chunk_rows = max(1, min(chunk_rows, n_rows))
    group_tokens = options.group_tokens
    if not group_tokens:   # bigger groups sort lengths better; keep one under GROUP_BYTES
        budget = GROUP_BYTES // row_bytes(shape, options.sites)
        group_tokens = max(options.batch_tokens,
                           min(MAX_GROUP_BATCHES * options.batch_tokens, budget))
    return chunk_rows, int(group_tokens)


def _store_attrs(options: ExtractOptions, dataset: TaggedDataset, info: dict[str, Any],
                 stories: Sequence[Story], chunk_rows: int, group_tokens: int
                 ) -> dict[str, Any]:
    manifest, shard = dataset.manifest, options.shard
    settings = {"sites": list(options.sites), "dtype": options.dtype, "chunk_rows": chunk_rows,
                "batch_tokens": int(options.batch_tokens), "group_tokens": group_tokens,
                "device": options.device,
                "reinit_seed": -1 if options.reinit_seed is None else int(options.reinit_seed)}
    return {
        **base_manifest("extract"), **info, **settings,
        "dataset_path": str(dataset.path.resolve()), "dataset_manifest": manifest,
        "dataset_vocab_hash": dataset.vocab_hash, "dataset_n_tokens": dataset.n_tokens,
        "tokenizer_vocab_hash": dataset.vocab_hash,
        "spacy": manifest.get("spacy", manifest.get("tagger", "unknown")),
        "split": options.split, "shard": f"{shard[0]}/{shard[1]}" if shard else "",
        "n_stories": len(stories),
        "story_ids_range": [stories[0].story_id, stories[-1].story_id] if stories else [],
        "activity_definition": "||z_h @ W_O[h]||_2 with the model's raw (unprocessed) W_O",
    }


def plan_extraction(options: ExtractOptions) -> ExtractPlan:
    """Open the dataset and the model and fix the plan; UsageError when they do not fit."""
    dataset = load_tagged_dataset(options.dataset_dir)
    table = dataset.token_table()
    stories, dataset_rows = select_stories(dataset, options.split, options.shard,
                                           table["input_id"])
    if not stories:
        shard = options.shard
        raise UsageError(f"no stories in split {options.split!r}"
                         + (f" shard {shard[0]}/{shard[1]}" if shard else ""))
    forward, tokenizer, info = load_forward(options.model, options.sites, options.device,
                                            options.reinit_seed, options.path)
    _check_model_fits(options, dataset, tokenizer, info, stories, forward.n_ctx)
    arch = info["architecture"]
    chunk_rows, group_tokens = _block_sizes(options, arch, sum(s.n_tokens for s in stories))
    attrs = _store_attrs(options, dataset, info, stories, chunk_rows, group_tokens)
    return ExtractPlan(options, table, stories, dataset_rows, forward, arch, chunk_rows,
                       group_tokens, attrs, dataset.tags)

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
from extract.forward.check import tolerance
from extract.models import bridge_from_hf, load_hf_model, model_fingerprint
from extract.options import ExtractOptions
from extract.store.schema import StoreShape, row_bytes
from extract.store.writer import chunk_rows_for
from headprobe.errors import UsageError, opt
from headprobe.hub import resolve_pretrained
from headprobe.manifest import base_manifest
from headprobe.stories import Story
from headprobe.tokenization import load_tokenizer, vocab_hash

GROUP_BYTES = 128 * 2**20
MAX_GROUP_BATCHES = 16


def group_ids(sizes: np.ndarray, group_tokens: int) -> np.ndarray:
    """The group of each story [n_stories]: consecutive stories of ``sizes`` tokens
    [n_stories] form groups of at most ``group_tokens`` tokens (one story at least)."""
    ids = np.empty(len(sizes), dtype=np.int64)
    group, size = 0, 0
    for i, n in enumerate(np.asarray(sizes, dtype=np.int64).tolist()):
        if size and size + n > group_tokens:
            group, size = group + 1, 0
        ids[i] = group
        size += n
    return ids


def shard_owners(sizes: np.ndarray, n: int, group_tokens: int) -> np.ndarray:
    """The shard of each story [n_stories] when the groups of stories (:func:`group_ids`)
    are cut into ``n`` contiguous runs of about equal token counts.

    Shards hold whole groups, so a shard's batches are those of an unsharded run and its
    values are bit-identical to it.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    if not len(sizes):
        return np.zeros(0, dtype=np.int64)
    groups = group_ids(sizes, group_tokens)
    group_sizes = np.bincount(groups, weights=sizes).astype(np.int64)
    before = np.concatenate([[0], np.cumsum(group_sizes)[:-1]])
    return ((before * n) // max(int(sizes.sum()), 1))[groups]


def select_stories(dataset: TaggedDataset, split: str, shard: tuple[int, int] | None,
                   input_ids: np.ndarray, group_tokens: int = 1
                   ) -> tuple[list[Story], np.ndarray]:
    """The stories of ``split`` ('train', 'test' or 'all'); with ``shard`` (i, n) the i-th of n
    contiguous runs of whole groups of ``group_tokens`` (:func:`shard_owners`).

    input_ids: the dataset's input_id column [dataset tokens]. Returns the stories placed in
    the store (``start`` is a store row) and the dataset row of every store row [rows].
    """
    table = dataset.story_table(None if split == "all" else split)
    starts = np.asarray(table["token_start"], dtype=np.int64)
    sizes = np.asarray(table["n_tokens"], dtype=np.int64)
    ids = np.asarray(table["story_id"], dtype=np.int64)
    if shard is not None:
        keep = shard_owners(sizes, shard[1], group_tokens) == shard[0]
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
    ids = group_ids(np.array([s.n_tokens for s in stories], dtype=np.int64), group_tokens)
    groups: list[list[Story]] = [[] for _ in range(int(ids[-1]) + 1 if len(ids) else 0)]
    for story, group in zip(stories, ids.tolist(), strict=True):
        groups[group].append(story)
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


def choose_forward(hf: Any, name: str, sites: Sequence[str], path: str
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
        if error <= tolerance(hf):
            return forward, check
        check["fast_path"] = f"disagrees with the model's projections ({error:.2g})"
        if path == "fast":
            raise UsageError(f"the fast forward path disagrees with model type {model_type!r} "
                             f"(relative error {error:.2g}); use {opt('path', 'general')}")
    elif path == "fast":
        raise UsageError(f"the fast forward path cannot run this model ({reason}); use "
                         f"{opt('path', 'general')}")
    return HookForward(bridge_from_hf(hf, name), sites, model_type), check


def load_forward(options: ExtractOptions) -> tuple[Any, Any, dict[str, Any]]:
    """(forward path, tokenizer, model attributes) for the options' model: a name or
    directory, loaded on ``options.device`` in ``options.model_dtype``, or a loaded HF model
    (used where and as it is)."""
    model, reinit_seed = options.model, options.reinit_seed
    if isinstance(model, (str, Path)):
        name = str(model)
        hf = load_hf_model(name, device=options.device, dtype=options.model_dtype,
                           reinit_seed=reinit_seed)
        info = model_fingerprint(name)
    else:
        hf, name = model, str(getattr(model.config, "_name_or_path", "") or "in-memory model")
        info = {"model": name}
    tokenizer = load_tokenizer(name)
    forward, check = choose_forward(hf, name, options.sites, options.path)
    cfg = hf.config
    info.update({
        "model_type": str(cfg.model_type), "model_config": cfg.to_dict(),
        "architecture": {"n_layers": forward.n_layers, "n_heads": forward.n_heads,
                         "n_kv_heads": forward.n_kv_heads, "d_head": forward.d_head,
                         "d_model": int(cfg.hidden_size), "d_vocab": int(cfg.vocab_size),
                         "n_ctx": forward.n_ctx, "model_type": str(cfg.model_type),
                         **forward.traits},
        "forward_path": forward.name, "forward_check": check, "device": str(forward.device),
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


def config_shape(config: Any) -> StoreShape | None:
    """The store shape a Hugging Face config describes (None when it names no heads)."""
    try:
        n_heads = int(config.num_attention_heads)
        d_head = int(getattr(config, "head_dim", None) or config.hidden_size // n_heads)
        return StoreShape(int(config.num_hidden_layers), n_heads, d_head,
                          int(getattr(config, "num_key_value_heads", None) or n_heads))
    except (AttributeError, TypeError, ValueError, ZeroDivisionError):
        return None


def _read_config(name: str) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(resolve_pretrained(name, "model"))
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(f"cannot load model {name!r}: {str(exc).splitlines()[0]}") from exc


def group_tokens_for(options: ExtractOptions) -> int:
    """Tokens per group: the options' own, else sized so that one group of rows stays under
    GROUP_BYTES (bigger groups sort lengths better). It is read from the model's config
    alone, so that a cluster's driver and its shard tasks agree without loading weights."""
    if options.group_tokens:
        return int(options.group_tokens)
    model = options.model
    config = model.config if hasattr(model, "config") else _read_config(str(model))
    shape = config_shape(config)
    most = MAX_GROUP_BATCHES * options.batch_tokens
    budget = most if shape is None else GROUP_BYTES // row_bytes(shape, options.sites)
    return int(max(options.batch_tokens, min(most, budget)))


def shard_tokens(dataset: TaggedDataset, split: str, n: int, group_tokens: int) -> np.ndarray:
    """Tokens of each of ``n`` shards of ``split`` [n]; UsageError when one would be empty."""
    table = dataset.story_table(None if split == "all" else split)
    sizes = np.asarray(table["n_tokens"], dtype=np.int64)
    tokens = np.bincount(shard_owners(sizes, n, group_tokens), weights=sizes,
                         minlength=n).astype(np.int64)
    if (tokens == 0).any():
        n_groups = int(group_ids(sizes, group_tokens)[-1]) + 1 if len(sizes) else 0
        raise UsageError(f"split {split!r} holds {n_groups} group(s) of stories of at most "
                         f"{group_tokens} tokens, and shards are made of whole groups: use at "
                         f"most {n_groups} shards or a smaller {opt('group_tokens')}")
    return tokens


def _chunk_rows(options: ExtractOptions, arch: dict[str, Any], n_rows: int) -> int:
    """Rows per chunk: the given number, else sized to the writer's memory budget."""
    chunk_rows = int(options.chunk_rows or chunk_rows_for(StoreShape.of(arch), options.sites))
    return max(1, min(chunk_rows, n_rows))


def _store_attrs(options: ExtractOptions, dataset: TaggedDataset, info: dict[str, Any],
                 stories: Sequence[Story], chunk_rows: int, group_tokens: int
                 ) -> dict[str, Any]:
    manifest, shard = dataset.manifest, options.shard
    settings = {"sites": list(options.sites), "dtype": options.dtype, "chunk_rows": chunk_rows,
                "batch_tokens": int(options.batch_tokens), "group_tokens": group_tokens,
                "device": info["device"], "model_dtype": options.model_dtype,
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
    group_tokens = group_tokens_for(options)
    if options.shard is not None:
        shard_tokens(dataset, options.split, options.shard[1], group_tokens)
    stories, dataset_rows = select_stories(dataset, options.split, options.shard,
                                           table["input_id"], group_tokens)
    if not stories:
        raise UsageError(f"no stories in split {options.split!r}")
    forward, tokenizer, info = load_forward(options)
    _check_model_fits(options, dataset, tokenizer, info, stories, forward.n_ctx)
    arch = info["architecture"]
    chunk_rows = _chunk_rows(options, arch, sum(s.n_tokens for s in stories))
    attrs = _store_attrs(options, dataset, info, stories, chunk_rows, group_tokens)
    return ExtractPlan(options, table, stories, dataset_rows, forward, arch, chunk_rows,
                       group_tokens, attrs, dataset.tags)

"""The plan of an extraction: which stories go where, in which groups and batches.

The plan depends only on the dataset and the options: consecutive stories form groups of
about ``group_tokens`` tokens; inside a group stories are sorted by length and cut into
right-padded batches of at most ``batch_tokens`` padded tokens. Because it is fixed, a
resumed run recomputes exactly the rows an uninterrupted run would have written.

Groups and batches do not depend on shards: a shard is a run of stories of about equal
token counts (:func:`shard_bounds`), and the groups it cuts are batched whole on both
sides (:func:`read_shard`), so each row is computed in the batch it has without shards. A
shard reads only a few integers per story of the split and its own rows of the token table.
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
from headprobe.tokenization import has_vocabulary

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


SPLIT_INDEX = ("story_id", "token_start", "n_tokens")


def split_index(dataset: TaggedDataset, split: str) -> dict[str, np.ndarray]:
    """story_id, token_start and n_tokens of the stories of ``split`` ('train', 'test' or
    'all'), each [n_stories]: a few integers per story, no text and no token."""
    table = dataset.story_table(None if split == "all" else split, SPLIT_INDEX)
    return {k: np.asarray(v, dtype=np.int64) for k, v in table.items()}


def shard_bounds(sizes: np.ndarray, n: int) -> np.ndarray:
    """Where the stories of tokens ``sizes`` [n_stories] are cut into ``n`` contiguous
    shards of about equal token counts: story indices [n + 1], from 0 to n_stories.

    Each cut is the story boundary nearest to its equal share, moved as little as needed
    for every shard to hold a story; UsageError when there are fewer stories than shards.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    if len(sizes) < n:
        raise UsageError(f"{len(sizes)} stories cannot make {n} shards; use at most "
                         f"{len(sizes)} for {opt('shards')}")
    ends = np.cumsum(sizes)
    targets = np.arange(1, n) * int(ends[-1] if len(ends) else 0) / n
    after = np.searchsorted(ends, targets)          # first story ending at or past it
    before = np.maximum(after - 1, 0)
    nearer = np.abs(ends[before] - targets) < np.abs(ends[after] - targets)
    cuts = np.where(nearer & (after > 0), before, after) + 1
    bounds = np.concatenate([[0], cuts, [len(sizes)]]).astype(np.int64)
    for k in range(1, n):                            # at least one story each
        bounds[k] = max(bounds[k], bounds[k - 1] + 1)
    for k in range(n - 1, 0, -1):
        bounds[k] = min(bounds[k], bounds[k + 1] - 1)
    return bounds


def shard_tokens(dataset: TaggedDataset, split: str, n: int) -> np.ndarray:
    """Tokens of each of ``n`` shards of ``split`` [n]; UsageError when a shard would be
    empty (fewer stories than shards)."""
    sizes = split_index(dataset, split)["n_tokens"]
    bounds = shard_bounds(sizes, n)
    return np.add.reduceat(sizes, bounds[:-1]) if len(sizes) else np.zeros(n, np.int64)


@dataclass
class ShardStories:
    """The stories a store (a shard, or the whole split) is made of, read from the dataset.

    stories: the store's stories, ``start`` a store row; context: the stories of every group
    (:func:`group_ids`) that holds one of them, ``start`` a row of the whole split, so that
    batches are cut as in a run without shards; offset: the split row of store row 0;
    token_table: the dataset's token columns at the store's rows, each [n_rows].
    """

    stories: list[Story]
    context: list[Story]
    offset: int
    token_table: dict[str, np.ndarray]


def read_shard(dataset: TaggedDataset, split: str, shard: tuple[int, int] | None,
               group_tokens: int) -> ShardStories:
    """The stories of ``split``, or with ``shard`` (i, n) of its i-th of n contiguous runs of
    about equal token counts (:func:`shard_bounds`). Only the shard's rows of the token
    table, and the token ids of the stories sharing its first and last group, are read."""
    index = split_index(dataset, split)
    sizes, starts = index["n_tokens"], index["token_start"]
    a, b = (0, len(sizes)) if shard is None else map(int, shard_bounds(sizes, shard[1])[
        shard[0]:shard[0] + 2])
    split_rows = np.concatenate([[0], np.cumsum(sizes)])
    lo, hi = _group_span(group_ids(sizes, group_tokens), a, b)
    span = slice(int(starts[lo]), int(starts[hi - 1] + sizes[hi - 1])) if hi > lo else None
    ids = _token_ids(dataset, span) if span else np.zeros(0, np.int64)
    at = starts - (span.start if span else 0)
    context = [Story(int(index["story_id"][i]), int(split_rows[i]),
                     ids[at[i]:at[i] + sizes[i]]) for i in range(lo, hi)]
    offset = int(split_rows[a])
    stories = [Story(s.story_id, s.start - offset, s.input_ids) for s in context[a - lo:b - lo]]
    return ShardStories(stories, context, offset, _shard_tokens(dataset, starts[a:b], sizes[a:b]))


def _group_span(groups: np.ndarray, a: int, b: int) -> tuple[int, int]:
    """The stories [lo, hi) of the groups ``groups`` [n_stories] (non-decreasing) that
    hold one of the stories [a, b)."""
    if b <= a:
        return a, b
    lo = int(np.searchsorted(groups, groups[a], side="left"))
    return lo, int(np.searchsorted(groups, groups[b - 1], side="right"))


def _token_ids(dataset: TaggedDataset, rows: slice) -> np.ndarray:
    return dataset.token_rows(rows, ("input_id",))["input_id"].astype(np.int64)


def _shard_tokens(dataset: TaggedDataset, starts: np.ndarray, sizes: np.ndarray
                  ) -> dict[str, np.ndarray]:
    """The token columns of the stories at dataset rows ``starts`` of ``sizes`` tokens
    [n_stories], joined in order [sum of sizes]; one read of the rows they span."""
    if not len(starts):
        return dataset.token_rows(slice(0, 0))
    span = slice(int(starts[0]), int(starts[-1] + sizes[-1]))
    table = dataset.token_rows(span)
    if span.stop - span.start == int(sizes.sum()):      # contiguous (split 'all')
        return table
    rows = np.concatenate([np.arange(s, s + n) for s, n in zip(starts, sizes, strict=True)])
    return {k: v[rows - span.start] for k, v in table.items()}


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

    part: the store's stories and token table and the stories batched with them
    (:class:`ShardStories`); forward: the forward path (:mod:`extract.forward`); attrs:
    the store's root attributes.
    """

    options: ExtractOptions
    part: ShardStories
    forward: Any
    arch: dict[str, Any]
    chunk_rows: int
    group_tokens: int
    attrs: dict[str, Any]
    tags: dict[str, list[str]]

    @property
    def stories(self) -> list[Story]:
        """The store's stories in store order (``story.start`` is a store row)."""
        return self.part.stories

    @property
    def n_rows(self) -> int:
        return sum(s.n_tokens for s in self.stories)

    @property
    def offset(self) -> int:
        """The row of the whole split that store row 0 is (0 without shards)."""
        return self.part.offset

    def groups(self) -> list[list[Story]]:
        """The groups holding the store's stories, whole (``start``: a row of the split)."""
        return plan_groups(self.part.context, self.group_tokens)

    def token_table(self) -> dict[str, np.ndarray]:
        """The store's token table: the dataset's columns at its rows, each [n_rows]."""
        return self.part.token_table


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


def load_forward(options: ExtractOptions) -> tuple[Any, dict[str, Any]]:
    """(forward path, model attributes) for the options' model: a name or directory, loaded
    on ``options.device`` in ``options.model_dtype``, or a loaded HF model (used where and
    as it is); the attributes' ``model`` names where its tokenizer is."""
    model, reinit_seed = options.model, options.reinit_seed
    if isinstance(model, (str, Path)):
        name = str(model)
        hf = load_hf_model(name, device=options.device, dtype=options.model_dtype,
                           reinit_seed=reinit_seed)
        info = model_fingerprint(name)
    else:
        hf, name = model, str(getattr(model.config, "_name_or_path", "") or "in-memory model")
        info = {"model": name}
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
    return forward, info


def _check_model_fits(options: ExtractOptions, dataset: TaggedDataset, info: dict[str, Any],
                      stories: Sequence[Story], n_ctx: int) -> None:
    """The model must share the dataset's tokenizer and take its longest story."""
    if not has_vocabulary(info["model"], dataset.vocab_hash):
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


def config_of(model: Any) -> Any:
    """The Hugging Face config of a loaded model, or of a name or directory (read alone)."""
    return model.config if hasattr(model, "config") else _read_config(str(model))


def group_tokens_for(options: ExtractOptions) -> int:
    """Tokens per group: the options' own, else sized so that one group of rows stays under
    GROUP_BYTES (bigger groups sort lengths better). It is read from the model's config
    alone, so that a cluster's driver and its shard tasks agree without loading weights."""
    if options.group_tokens:
        return int(options.group_tokens)
    shape = config_shape(config_of(options.model))
    most = MAX_GROUP_BATCHES * options.batch_tokens
    budget = most if shape is None else GROUP_BYTES // row_bytes(shape, options.sites)
    return int(max(options.batch_tokens, min(most, budget)))


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
    """Open the dataset and the model and fix the plan; UsageError when they do not fit.

    Only the stories of the store (and those sharing a group with them) are read."""
    dataset = load_tagged_dataset(options.dataset_dir)
    group_tokens = group_tokens_for(options)
    part = read_shard(dataset, options.split, options.shard, group_tokens)
    stories = part.stories
    if not stories:
        raise UsageError(f"no stories in split {options.split!r}")
    forward, info = load_forward(options)
    _check_model_fits(options, dataset, info, stories, forward.n_ctx)
    if options.batch_tokens_auto and forward.device.type != "cuda":
        from extract.batch_trial import choose_batch_tokens

        info["batch_tokens_trial"] = choose_batch_tokens(options, forward, stories)
        if group_tokens != group_tokens_for(options):   # the groups follow the batch size
            group_tokens = group_tokens_for(options)
            part = read_shard(dataset, options.split, options.shard, group_tokens)
            stories = part.stories
    arch = info["architecture"]
    chunk_rows = _chunk_rows(options, arch, sum(s.n_tokens for s in stories))
    attrs = _store_attrs(options, dataset, info, stories, chunk_rows, group_tokens)
    return ExtractPlan(options, part, forward, arch, chunk_rows, group_tokens, attrs,
                       dataset.tags)

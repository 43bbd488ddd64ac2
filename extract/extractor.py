"""Stream per-head activations of a tagged dataset into an activation store.

The stories (one split, optionally one shard) are processed in a fixed plan that depends
only on the dataset and the options: consecutive stories form groups of about
``group_tokens`` tokens; inside a group stories are sorted by length and cut into
right-padded batches of at most ``batch_tokens`` padded tokens. Results go into a
buffer of rows that is written to the store one full chunk (``chunk_rows`` tokens) at a
time, after which the progress attribute ``rows_written`` is flushed. Memory therefore
stays bounded by one chunk plus one group, whatever the corpus size.

``resume`` reopens ``OUT.partial``, recomputes from the group holding the first missing
row and discards rows already on disk; because the plan is fixed, the result is
bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datasets_build.dataset import SPLITS, TaggedDataset, load_tagged_dataset
from extract.forward import FastForward, HookForward, fast_supported
from extract.models import DEFAULT_MODEL, bridge_from_hf, load_hf_model, model_fingerprint
from extract.store import (
    DEFAULT_COMPRESSION,
    DEFAULT_SITES,
    SITES,
    chunk_rows_for,
    create_store,
    decode_attrs,
    parse_compression,
    reopen_store,
    row_bytes,
)
from headprobe.errors import UsageError
from headprobe.manifest import base_manifest
from headprobe.stories import Story
from headprobe.tokenization import load_tokenizer, vocab_hash

DEFAULT_BATCH_TOKENS = 1024   # fastest on CPU for ~200-token stories (cache-sized)
GROUP_BYTES = 128 * 2**20
# Fault injection for testing --resume: SIGKILL the process after this many chunks.
KILL_AFTER_ENV = "HEADPROBE_EXTRACT_KILL_AFTER_CHUNKS"
# Options that must match for --resume to continue a partial store.
RESUME_KEYS = ("model", "model_weights_sha256", "reinit_seed", "dataset_vocab_hash",
               "dataset_n_tokens", "split", "shard", "sites", "dtype", "chunk_rows",
               "batch_tokens", "group_tokens", "forward_path")


def partial_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".partial")


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'i/n' -> (i, n) with 0 <= i < n."""
    if not text:
        return None
    try:
        i, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard {text!r}: expected i/n, e.g. 0/4") from None
    if n < 1 or not 0 <= i < n:
        raise UsageError(f"--shard {text!r}: need 0 <= i < n")
    return i, n


def select_stories(dataset: TaggedDataset, split: str, shard: tuple[int, int] | None,
                   input_ids: np.ndarray) -> tuple[list[Story], np.ndarray]:
    """The stories of ``split`` ('train', 'test' or 'all'); with ``shard`` (i, n) the i-th of n
    contiguous runs of stories holding about equal numbers of tokens.

    input_ids: the dataset's input_id column [dataset tokens]. Returns the stories placed in
    the store (``start`` is a store row) and the dataset row of every store row [rows].
    """
    if split not in (*SPLITS, "all"):
        raise UsageError(f"unknown split {split!r}; choose from train, test, all")
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


class Extractor:
    """Runs a forward path over stories and returns their rows as numpy arrays.

    forward: a forward path; batch_tokens: padded tokens per forward pass; dtype: 'float32'
    or 'float16', the dtype float sites are returned in (each batch is converted once, on
    the torch side). Stories are placed in the store: ``story.start`` is a store row.
    """

    def __init__(self, forward: Any, batch_tokens: int, dtype: str = "float32"):
        self.forward = forward
        self.batch_tokens = batch_tokens
        self.dtype = dtype
        self.n_ctx = forward.n_ctx

    def run_group(self, group: Sequence[Story]) -> dict[str, np.ndarray]:
        """site -> [sum of story lengths, n_layers, n_heads(, d_head)], stories in store order."""
        start = group[0].start
        total = sum(s.n_tokens for s in group)
        result: dict[str, np.ndarray] = {}
        float_dtype = getattr(torch, self.dtype)
        for batch in plan_batches(group, self.batch_tokens):
            seq = max(s.n_tokens for s in batch)
            ids = np.zeros((len(batch), seq), dtype=np.int64)
            for row, story in enumerate(batch):
                ids[row, :story.n_tokens] = story.input_ids
            out = self.forward(torch.from_numpy(ids).to(self.forward.device))
            for site, tensor in out.items():
                if tensor.is_floating_point():
                    tensor = tensor.to(float_dtype)
                values = tensor.cpu().numpy()
                if site not in result:
                    dtype = np.int32 if site == "argmax" else values.dtype
                    result[site] = np.empty((total, *values.shape[2:]), dtype=dtype)
                for row, story in enumerate(batch):
                    at = story.start - start
                    result[site][at:at + story.n_tokens] = values[row, :story.n_tokens]
        return result


def _check_lengths(stories: Sequence[Story], n_ctx: int) -> None:
    longest = max(stories, key=lambda s: s.n_tokens, default=None)
    if longest is not None and longest.n_tokens > n_ctx:
        raise UsageError(f"story {longest.story_id} has {longest.n_tokens} tokens but the model's "
                         f"context is {n_ctx}; rebuild the dataset with shorter stories")


def _load_forward(model: Any, sites: Sequence[str], device: str, reinit_seed: int | None,
                  path: str) -> tuple[Any, Any, dict[str, Any]]:
    """(forward path, tokenizer, model attributes) for a model name/dir or a loaded HF model."""
    if isinstance(model, (str, Path)):
        name = str(model)
        hf = load_hf_model(name, device=device, reinit_seed=reinit_seed)
        info = model_fingerprint(name)
        tokenizer = load_tokenizer(name)
    else:
        hf, name = model, str(getattr(model.config, "_name_or_path", "") or "in-memory model")
        info = {"model": name}
        tokenizer = load_tokenizer(name)
    if path not in ("auto", "fast", "general"):
        raise UsageError(f"unknown forward path {path!r}; choose auto, fast or general")
    if path == "fast" or (path == "auto" and fast_supported(hf)):
        forward = FastForward(hf, sites)
    else:
        forward = HookForward(bridge_from_hf(hf, name, device), sites)
    cfg = hf.config
    info.update({
        "model_type": str(cfg.model_type), "model_config": cfg.to_dict(),
        "architecture": {"n_layers": forward.n_layers, "n_heads": forward.n_heads,
                         "d_head": forward.d_head, "d_model": int(cfg.hidden_size),
                         "d_vocab": int(cfg.vocab_size), "n_ctx": forward.n_ctx,
                         "model_type": str(cfg.model_type)},
        "forward_path": forward.name,
        "weights": "pretrained" if reinit_seed is None else
        f"re-initialised at random with seed {reinit_seed} (same architecture)",
    })
    return forward, tokenizer, info


def _store_attrs(dataset: TaggedDataset, info: dict[str, Any], split: str,
                 shard: tuple[int, int] | None, stories: Sequence[Story],
                 options: dict[str, Any]) -> dict[str, Any]:
    manifest = dataset.manifest
    attrs = {**base_manifest("extract"), **info, **options}
    attrs.update({
        "dataset_path": str(dataset.path.resolve()), "dataset_manifest": manifest,
        "dataset_vocab_hash": dataset.vocab_hash, "dataset_n_tokens": dataset.n_tokens,
        "tokenizer_vocab_hash": dataset.vocab_hash,
        "spacy": manifest.get("spacy", manifest.get("tagger", "unknown")),
        "split": split, "shard": f"{shard[0]}/{shard[1]}" if shard else "",
        "n_stories": len(stories),
        "story_ids_range": [stories[0].story_id, stories[-1].story_id] if stories else [],
        "activity_definition": "||z_h @ W_O[h]||_2 with the model's raw (unprocessed) W_O",
    })
    return attrs


def _iter_chunks(extractor: Extractor, groups: Sequence[Sequence[Story]], first_row: int,
                 chunk_rows: int, n_rows: int) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Yield (start_row, block) for full chunks from ``first_row`` (chunk-aligned) on."""
    pending: list[dict[str, np.ndarray]] = []
    pending_start, pending_rows = first_row, 0
    for group in groups:
        end = group[-1].stop
        if end <= first_row:
            continue
        block = extractor.run_group(group)
        skip = max(0, first_row - group[0].start)
        pending.append({k: v[skip:] for k, v in block.items()})
        pending_rows += end - group[0].start - skip
        while pending_rows >= chunk_rows or (pending_rows and pending_start + pending_rows
                                             == n_rows):
            take = min(chunk_rows, pending_rows)
            joined = {k: np.concatenate([p[k] for p in pending]) for k in pending[0]}
            yield pending_start, {k: v[:take] for k, v in joined.items()}
            pending = [{k: v[take:] for k, v in joined.items()}]
            pending_start += take
            pending_rows -= take


def extract_store(dataset_dir: str | Path, model: Any = DEFAULT_MODEL, out: str | Path = "",
                  split: str = "all", sites: Sequence[str] = DEFAULT_SITES,
                  dtype: str = "float16", batch_tokens: int = DEFAULT_BATCH_TOKENS,
                  device: str = "cpu", reinit_seed: int | None = None, resume: bool = False,
                  overwrite: bool = False, shard: str | tuple[int, int] | None = None,
                  path: str = "auto", chunk_rows: int | None = None,
                  group_tokens: int | None = None,
                  compression: str | int = DEFAULT_COMPRESSION,
                  progress: bool = False) -> Path:
    """Extract per-head activations of ``dataset_dir`` with ``model`` into the store ``out``.

    model: hub name, local HF directory, or a loaded Hugging Face causal LM. Returns ``out``.
    The file is written as ``out.partial`` and renamed when complete.
    """
    out = Path(out)
    if not str(out) or out.suffix == "":
        raise UsageError(f"output {str(out)!r} should be a file name such as activations.h5")
    partial = partial_path(out)
    if out.exists() and not (overwrite or resume):
        raise UsageError(f"{out} already exists; pass --overwrite to replace it")
    if partial.exists() and not (resume or overwrite):
        raise UsageError(f"{partial} holds an interrupted run; pass --resume to continue it "
                         "or --overwrite to start again")
    if resume and not partial.exists():
        if out.exists():
            raise UsageError(f"{out} is already complete; nothing to resume")
        raise UsageError(f"nothing to resume: {partial} does not exist")
    if batch_tokens < 1:
        raise UsageError("--batch-tokens must be positive")
    parse_compression(compression)
    sites = list(dict.fromkeys(sites))
    unknown = [s for s in sites if s not in SITES]
    if unknown or not sites:
        raise UsageError(f"unknown site(s) {', '.join(unknown) or '(none)'}; "
                         f"choose from {', '.join(SITES)}")
    shard = parse_shard(shard) if isinstance(shard, str) or shard is None else shard
    if not Path(dataset_dir).is_dir():
        raise UsageError(f"dataset directory {dataset_dir} does not exist")
    dataset = load_tagged_dataset(dataset_dir)
    table = dataset.token_table()
    stories, dataset_rows = select_stories(dataset, split, shard, table["input_id"])
    if not stories:
        raise UsageError(f"no stories in split {split!r}"
                         + (f" shard {shard[0]}/{shard[1]}" if shard else ""))

    forward, tokenizer, info = _load_forward(model, sites, device, reinit_seed, path)
    if vocab_hash(tokenizer) != dataset.vocab_hash:
        raise UsageError(f"the tokenizer of model {info['model']!r} differs from the one dataset "
                         f"{dataset_dir} was built with; rebuild the dataset with this model's "
                         "tokenizer")
    _check_lengths(stories, forward.n_ctx)
    arch = info["architecture"]
    rows_total = sum(s.n_tokens for s in stories)
    chunk_rows = int(chunk_rows or chunk_rows_for(arch["n_layers"], arch["n_heads"],
                                                  arch["d_head"], sites))
    chunk_rows = max(1, min(chunk_rows, rows_total))
    if not group_tokens:   # bigger groups sort lengths better; keep one under ~128 MiB
        budget = GROUP_BYTES // row_bytes(arch["n_layers"], arch["n_heads"], arch["d_head"], sites)
        group_tokens = max(batch_tokens, min(16 * batch_tokens, budget))
    group_tokens = int(group_tokens)
    options = {"sites": sites, "dtype": dtype, "chunk_rows": chunk_rows,
               "batch_tokens": int(batch_tokens), "group_tokens": group_tokens,
               "device": device, "reinit_seed": -1 if reinit_seed is None else int(reinit_seed)}
    attrs = _store_attrs(dataset, info, split, shard, stories, options)

    if resume:
        writer = reopen_store(partial)
        stored = decode_attrs(writer.file.attrs)
        wanted = json.loads(json.dumps(attrs, default=str))
        differ = [k for k in RESUME_KEYS if stored.get(k) != wanted.get(k)]
        if differ:
            writer.close()
            raise UsageError(f"cannot resume {partial}: it was started with different "
                             f"{', '.join(differ)}")
    else:
        partial.parent.mkdir(parents=True, exist_ok=True)
        writer = create_store(partial, rows_total, arch, sites, dtype, attrs, dataset.tags,
                              chunk_rows, compression)
        writer.write_tokens({k: v[dataset_rows] for k, v in table.items()})
        writer.set_progress(0)

    first_row = writer.rows_written
    extractor = Extractor(forward, batch_tokens, dtype)
    kill_after = int(os.environ.get(KILL_AFTER_ENV, "0") or 0)
    bar = _progress_bar(rows_total, first_row, progress)
    t0 = time.perf_counter()
    # Compressing and writing a block runs in a second thread while the next block is
    # computed (zlib and torch both release the GIL, so this uses a second core); at most
    # one block waits.
    pool = ThreadPoolExecutor(max_workers=1)
    pending: Future | None = None
    try:
        for start, block in _iter_chunks(extractor, plan_groups(stories, group_tokens),
                                         first_row, chunk_rows, rows_total):
            if pending is not None:
                bar.update(pending.result() - bar.n)
            pending = pool.submit(_write_block, writer, start, block, dtype, kill_after)
        if pending is not None:
            bar.update(pending.result() - bar.n)
        writer.update_attrs({"extract_seconds": round(time.perf_counter() - t0, 3)})
        writer.finish()
    finally:
        pool.shutdown(wait=True)
        writer.close()
        bar.close()
    os.replace(partial, out)
    return out


def _write_block(writer: Any, start: int, block: dict[str, np.ndarray], dtype: str,
                 kill_after: int) -> int:
    """Write one block, flush the progress attribute; return rows now complete."""
    block = {k: v if v.dtype.kind == "i" else v.astype(dtype, copy=False)
             for k, v in block.items()}
    writer.write_block(start, block)
    rows = start + len(next(iter(block.values())))
    writer.set_progress(rows)
    if kill_after and writer.blocks_written >= kill_after:
        os.kill(os.getpid(), signal.SIGKILL)
    return rows


def _progress_bar(total: int, initial: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="tok", unit_scale=True, disable=not enabled,
                file=sys.stderr, desc="extract")

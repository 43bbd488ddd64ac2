"""Stream per-head activations of a tagged dataset into an activation store.

:func:`extract_store` checks its options (:class:`extract.options.ExtractOptions`), fixes
the plan (:func:`extract.plan.plan_extraction`) and runs it here: the groups of stories go
through the model, their rows collect in a buffer that is written to the store one full
chunk (``chunk_rows`` tokens) at a time, after which the progress attribute
``rows_written`` is flushed. Memory therefore stays bounded by one chunk plus one group,
whatever the corpus size.

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
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from extract.blocks import BlockAssembler
from extract.feed import DeviceFeed
from extract.models import DEFAULT_MODEL
from extract.options import DEFAULT_BATCH_TOKENS, ExtractOptions
from extract.phases import PhaseClock
from extract.plan import ExtractPlan, plan_batches, plan_extraction
from extract.store.codec import DEFAULT_COMPRESSION
from extract.store.integrity import (
    TOKENS_HASH,
    check_written_rows,
    create_checksums,
    record_block,
    resumable_rows,
    token_table_hash,
)
from extract.store.json_attrs import decode_attrs
from extract.store.reader import H5_DAMAGE
from extract.store.schema import DEFAULT_SITES, SCHEMA, SCHEMA_VERSION, store_version
from extract.store.writer import StoreWriter, create_store, reopen_store
from headprobe.devices import DEFAULT_MODEL_DTYPE, usable_cores
from headprobe.errors import UsageError, opt
from headprobe.failures import reading
from headprobe.locks import output_lock
from headprobe.space import require_free_space
from headprobe.stories import Story

__all__ = ["DEFAULT_BATCH_TOKENS", "KILL_AFTER_ENV", "KILL_SHARD_ENV", "Extractor",
           "extract_store", "run_extraction"]

# Fault injection for testing resume: SIGKILL the process after this many chunks, and only
# in the writer of this shard ('i/n') when the second variable is set.
KILL_AFTER_ENV = "HEADPROBE_EXTRACT_KILL_AFTER_CHUNKS"
KILL_SHARD_ENV = "HEADPROBE_EXTRACT_KILL_SHARD"
# ... or at a point of creating the store: 'create' (file laid out, no checksums yet) or
# 'tokens' (token table written, progress not yet flushed)
KILL_AT_ENV = "HEADPROBE_EXTRACT_KILL_AT"
# Settings that must match for resume to continue a partial store.
RESUME_KEYS = ("model", "model_weights_sha256", "reinit_seed", "dataset_vocab_hash",
               "dataset_n_tokens", "split", "shard", "sites", "dtype", "chunk_rows",
               "batch_tokens", "group_tokens", "forward_path", "model_dtype")
# Blocks that may wait for the writer thread while the next ones are computed (when the
# writer does not share the forward pass's cores: see write_queue).
WRITE_QUEUE = 2
# What a setting added since a store was started reads as when the store lacks it.
RESUME_DEFAULTS = {"model_dtype": "float32"}


class Extractor:
    """Runs a forward path over stories and returns their rows as numpy arrays.

    forward: a forward path; batch_tokens: padded tokens per forward pass; dtype: 'float32'
    or 'float16', the dtype float sites are returned in (each batch is converted once, on
    the torch side). Stories are placed in the store: ``story.start`` is a store row.
    """

    def __init__(self, forward: Any, batch_tokens: int, dtype: str = "float32",
                 clock: PhaseClock | None = None):
        self.forward = forward
        self.batch_tokens = batch_tokens
        self.dtype = dtype
        self.n_ctx = forward.n_ctx
        self.feed = DeviceFeed(forward.device)
        self.clock = clock or PhaseClock()

    def run_group(self, group: Sequence[Story], keep: range | None = None
                  ) -> dict[str, np.ndarray]:
        """site -> [kept rows, n_layers, n_heads(, d_head)]: the rows of the stories of
        ``group`` whose ``start`` lies in ``keep`` (all by default), in row order."""
        kept = [s for s in group if keep is None or s.start in keep]
        if not kept:
            return {}
        total = sum(s.n_tokens for s in kept)       # kept stories are consecutive rows
        blocks = BlockAssembler(0, total, total, self.dtype)
        first = kept[0].start
        self.place_group(group, keep, lambda story, rows: blocks.put(story.start - first, rows))
        return next(blocks.complete(blocks.n_rows))[1]

    def place_group(self, group: Sequence[Story], keep: range | None,
                    place: Callable[[Story, dict[str, np.ndarray]], Any]) -> None:
        """Run the stories of ``group`` and call ``place(story, site -> [n_tokens, ...])``
        for each story whose ``start`` lies in ``keep`` (all when None).

        The whole group is batched, as without ``keep``, so every kept story is computed
        in the same batch as in a run of all stories; a batch that holds no kept story
        is skipped.
        """
        for batch in plan_batches(group, self.batch_tokens):
            rows = [(row, s) for row, s in enumerate(batch) if keep is None or s.start in keep]
            if not rows:
                continue
            values_of = self._forward(batch)
            with self.clock.phase("copies"):
                for row, story in rows:
                    place(story, {site: values[row, :story.n_tokens]
                                  for site, values in values_of.items()})

    def _forward(self, batch: Sequence[Story]) -> dict[str, np.ndarray]:
        """site -> [len(batch), longest story, ...] on the host, floats in ``dtype``."""
        ids = batch_ids(batch)
        projected = getattr(self.forward, "projection_seconds", 0.0)
        began = time.perf_counter()
        float_dtype = getattr(torch, self.dtype)
        # the forward fills its outputs in the storage dtype: no second pass to cast them
        out = self.forward(self.feed.to_device(ids), dtype=float_dtype)
        projection = getattr(self.forward, "projection_seconds", 0.0) - projected
        self.clock.add("projection", projection)
        self.clock.add("forward", time.perf_counter() - began - projection)
        with self.clock.phase("copies"):
            return self.feed.to_host({site: t.to(float_dtype) if t.is_floating_point() else t
                                      for site, t in out.items()})


def batch_ids(batch: Sequence[Story]) -> np.ndarray:
    """Right-padded token ids [len(batch), longest story] (int64, pads 0) of a batch."""
    ids = np.zeros((len(batch), max(s.n_tokens for s in batch)), dtype=np.int64)
    for row, story in enumerate(batch):
        ids[row, :story.n_tokens] = story.input_ids
    return ids


def iter_blocks(extractor: Extractor, groups: Sequence[Sequence[Story]], first_row: int,
                chunk_rows: int, n_rows: int, computed: Callable[[int], Any] | None = None,
                offset: int = 0) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Yield (start_row, block) for full chunks from ``first_row`` (chunk-aligned) on;
    ``computed(n)`` is told the rows of each group as soon as the model has run it (a chunk
    spans many groups).

    groups: whole groups of stories whose ``start`` is a store row plus ``offset`` (a row
    of the split a shard is cut from); stories outside the store's ``n_rows`` rows are
    batched with the others but not kept.
    """
    keep = range(offset, offset + n_rows)
    blocks = BlockAssembler(first_row, chunk_rows, n_rows, extractor.dtype)
    for group in groups:
        inside = [s for s in group if s.start in keep]
        if not inside:
            continue
        begin, end = inside[0].start - offset, inside[-1].stop - offset
        if end <= first_row:
            continue
        extractor.place_group(group, keep,
                              lambda story, rows: blocks.put(story.start - offset, rows))
        if computed is not None:
            computed(end - max(begin, first_row))
        yield from blocks.complete(end)


def _resume_problem(plan: ExtractPlan, tokens_hash: str) -> str:
    """Why the unfinished store of ``plan`` cannot be continued ('' if it can); the file is
    opened read-only, so that a refused resume leaves it as it was."""
    with h5py.File(plan.options.partial, "r") as file:
        if store_version(file.attrs) != (SCHEMA, SCHEMA_VERSION):
            return f"it is not a headprobe store of schema version {SCHEMA_VERSION}"
        stored = {**RESUME_DEFAULTS, **decode_attrs(file.attrs)}
        wanted = json.loads(json.dumps(plan.attrs, default=str))
        differ = [k for k in RESUME_KEYS if stored.get(k) != wanted.get(k)]
        if differ:
            return f"it was started with different {', '.join(differ)}"
        return check_written_rows(file, json.loads(file.attrs["sites"]),
                                  int(file.attrs["rows_written"]),
                                  int(file.attrs["chunk_rows"]), tokens_hash)


def _kill_at(point: str) -> None:
    """Fault injection: SIGKILL this process at ``point`` of creating the store when
    KILL_AT_ENV names it."""
    if os.environ.get(KILL_AT_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)


def open_writer(plan: ExtractPlan) -> StoreWriter:
    """The writer of ``OUT.partial``: a new store, or the unfinished one when resuming.

    A resumed store must come from the same settings, model weights and dataset content,
    and the rows it holds must match their checksums (:mod:`extract.store.integrity`). An
    unfinished store without rows to keep (killed while it was created) is started again.
    """
    options, table = plan.options, plan.token_table()
    tokens_hash = token_table_hash(table)
    if options.resume and resumable_rows(options.partial):
        again = f"start again with {opt('overwrite', True)}"
        with reading(options.partial, "unfinished store", again, also=H5_DAMAGE):
            problem = _resume_problem(plan, tokens_hash)
        if problem:
            raise UsageError(f"cannot resume {options.partial}: {problem}; {again}")
        return reopen_store(options.partial)
    options.partial.parent.mkdir(parents=True, exist_ok=True)
    require_free_space(options.partial, sum(v.nbytes for v in table.values()), shown=options.out)
    writer = create_store(options.partial, plan.n_rows, plan.arch, options.sites, options.dtype,
                          {**plan.attrs, TOKENS_HASH: tokens_hash}, plan.tags, plan.chunk_rows,
                          options.compression)
    _kill_at("create")
    create_checksums(writer.file, plan.n_rows, writer.chunk_rows, len(writer.sites))
    writer.write_tokens(table)
    _kill_at("tokens")
    writer.set_progress(0)
    return writer


def _write_block(writer: StoreWriter, start: int, block: dict[str, np.ndarray], dtype: str,
                 kill_after: int, clock: PhaseClock) -> int:
    """Write one block and its checksums, flush the progress attribute; return rows now
    complete. A block that may not fit on the disk is refused before HDF5 writes a byte."""
    block = {k: v if v.dtype.kind == "i" else v.astype(dtype, copy=False)
             for k, v in block.items()}
    require_free_space(writer.path, sum(v.nbytes for v in block.values()),
                       f" (the rows written so far stay in {writer.path}: continue them "
                       f"with {opt('resume', True)})")
    with clock.phase("write"):
        writer.write_block(start, block)
    with clock.phase("checksums"):
        record_block(writer.file, start, block, writer.sites, writer.chunk_rows)
    rows = start + len(next(iter(block.values())))
    writer.set_progress(rows)
    if kill_after and writer.blocks_written >= kill_after:
        os.kill(os.getpid(), signal.SIGKILL)
    return rows


def _kill_after(options: ExtractOptions) -> int:
    """Chunks after which fault injection kills this writer (0: never)."""
    shard = os.environ.get(KILL_SHARD_ENV, "")
    if shard and (options.shard is None or f"{options.shard[0]}/{options.shard[1]}" != shard):
        return 0
    return int(os.environ.get(KILL_AFTER_ENV, "0") or 0)


def _progress_bar(total: int, initial: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="tok", unit_scale=True, disable=not enabled,
                file=sys.stderr, desc="extract")


def write_queue(device: Any) -> int:
    """Blocks that may wait for the writer while the model computes the next ones.

    WRITE_QUEUE, unless the model runs on the CPU with as many torch threads as the process
    has cores: then none, because the writer's threads would take cores from the forward
    pass's threads, which wait for each other, and that stalls the forward by more than
    the writer takes when it has the cores to itself.
    """
    if torch.device(device).type != "cpu" or usable_cores() > torch.get_num_threads():
        return WRITE_QUEUE
    return 0


def write_rows(plan: ExtractPlan, writer: StoreWriter, queue: int | None = None) -> None:
    """Compute every row from the writer's first missing one and write it; finish the store.

    Compressing and writing a block runs in a writer thread (zlib, ISA-L, HDF5 and torch
    release the GIL); at most ``queue`` blocks wait for it while the next blocks are
    computed (a bounded queue: memory stays bounded; by default :func:`write_queue`), and
    ``queue=0`` writes each block before computing the next. Blocks are written in order
    either way, so the file is the same.
    """
    queue = write_queue(plan.forward.device) if queue is None else queue
    options, first_row = plan.options, writer.rows_written
    extractor = Extractor(plan.forward, options.batch_tokens, options.dtype)
    clock = extractor.clock
    kill_after = _kill_after(options)
    bar = _progress_bar(plan.n_rows, first_row, options.progress)
    t0 = time.perf_counter()
    pool = ThreadPoolExecutor(max_workers=1)
    pending: deque[Future] = deque()
    try:
        # the bar counts rows computed: it moves with every forward pass, not every chunk
        for start, block in iter_blocks(extractor, plan.groups(), first_row, plan.chunk_rows,
                                        plan.n_rows, computed=bar.update, offset=plan.offset):
            pending.append(pool.submit(_write_block, writer, start, block, options.dtype,
                                       kill_after, clock))
            with clock.phase("wait"):
                while len(pending) > queue:
                    pending.popleft().result()
        with clock.phase("wait"):
            while pending:
                pending.popleft().result()
        writer.update_attrs({"extract_seconds": round(time.perf_counter() - t0, 3),
                             "extract_phases": clock.rounded(),
                             "rows_extracted": plan.n_rows - first_row})
        writer.finish()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()


def run_extraction(plan: ExtractPlan) -> Path:
    """Carry out ``plan``: write ``OUT.partial``, then rename it to ``OUT``; return ``OUT``."""
    writer = open_writer(plan)
    try:
        write_rows(plan, writer)
    finally:
        writer.close()
    os.replace(plan.options.partial, plan.options.out)
    return plan.options.out


def extract_store(dataset_dir: str | Path, model: Any = DEFAULT_MODEL, out: str | Path = "",
                  split: str = "all", sites: Sequence[str] = DEFAULT_SITES,
                  dtype: str = "float16", batch_tokens: int | str = DEFAULT_BATCH_TOKENS,
                  device: str | None = "cpu", model_dtype: str = DEFAULT_MODEL_DTYPE,
                  reinit_seed: int | None = None, resume: bool = False,
                  overwrite: bool = False, shard: str | tuple[int, int] | None = None,
                  path: str = "auto", chunk_rows: int | None = None,
                  group_tokens: int | None = None,
                  compression: str | int = DEFAULT_COMPRESSION,
                  progress: bool = False) -> Path:
    """Extract per-head activations of ``dataset_dir`` with ``model`` into the store ``out``.

    model: hub name, local HF directory, or a loaded Hugging Face causal LM; device: where it
    runs (None or 'auto': cuda when available, else cpu); model_dtype: the dtype it computes in
    ('float32', 'bfloat16', 'float16'), apart from ``dtype``, the dtype float sites are
    stored in. Returns ``out``.
    The file is written as ``out.partial`` and renamed when complete, by one writer at a
    time (:func:`headprobe.locks.output_lock`). The settings are those of
    :class:`extract.options.ExtractOptions`.
    """
    options = ExtractOptions(
        dataset_dir, model, out, split=split, sites=sites, dtype=dtype,
        batch_tokens=batch_tokens, device=device, model_dtype=model_dtype,
        reinit_seed=reinit_seed, resume=resume,
        overwrite=overwrite, shard=shard, path=path, chunk_rows=chunk_rows,
        group_tokens=group_tokens, compression=compression, progress=progress)
    with output_lock(options.out):
        options.check_output()   # again, now that no other writer can change the answer
        return run_extraction(plan_extraction(options))

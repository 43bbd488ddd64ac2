"""A dataset built in shards: one shard at a time (job arrays) or as Ray tasks, then merged.

Shard i of n tags the i-th of n contiguous runs of source stories, equal in story count
(:func:`datasets_build.build.part_range`), and holds only those: it streams the source to
count its stories, then to read its own run (:func:`datasets_build.build.read_part`). The
train/test split is drawn over all source
stories, as in a single build, so a story's split does not depend on n. The shards of
dataset ``OUT`` live in ``OUT.shards/shard-00003-of-00016/``, each a dataset directory of
its stories (story ids from 0, parent ids of the whole source), written under a temporary
name and renamed when complete, with ``alignment.npz`` (the per-token arrays the alignment
statistics are computed from). Running a shard is idempotent: a complete shard built with
the same settings is kept, any other is tagged (again). :func:`merge_dataset` joins the n
complete shards into ``OUT``, equal to a single build: story ids and token starts are
shifted, every other column is carried over as it is; the manifest's counts, alignment and
quotation statistics are those of the whole dataset.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from datasets_build.build import BuildOptions, make_dataset, report
from datasets_build.dataset import write_dataset
from datasets_build.merge import check_merge_target, merge_dataset
from headprobe.atomic import atomic_dir
from headprobe.cluster import import_ray
from headprobe.errors import UsageError, opt
from headprobe.locks import output_lock
from headprobe.shards import (
    ShardRun,
    check_resources,
    shard_dir,
    shard_name,
    shard_pattern,
    submit_shards,
)

ALIGNMENT_FILE = "alignment.npz"
SHARD_NAME = shard_pattern()
# Options that do not change what a shard holds.
UNKEPT = ("out", "overwrite", "verbose", "sharded")


def shard_path(out: str | Path, index: int, n: int) -> Path:
    """The directory of shard ``index`` of ``n`` of dataset ``out``."""
    return shard_dir(out) / shard_name(index, n)


def build_key(opts: BuildOptions, n: int) -> str:
    """A fingerprint of the settings and shard count a shard was built with."""
    settings = {k: v for k, v in asdict(opts).items() if k not in UNKEPT}
    text = json.dumps({**settings, "shards": n}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _shard_manifest(path: Path) -> dict[str, Any] | None:
    manifest = path / "manifest.json"
    return json.loads(manifest.read_text()) if manifest.is_file() else None


def build_shard(opts: BuildOptions, index: int, n: int) -> ShardRun:
    """Make sure shard ``index`` of ``n`` of dataset ``opts.out`` is complete (see the module
    docstring); ``opts.overwrite`` tags it again even when complete."""
    if not 0 <= index < n:
        raise UsageError(f"{opt('shard')} {index}/{n}: need 0 <= i < n")
    path, key = shard_path(opts.out, index, n), build_key(opts, n)
    manifest = _shard_manifest(path)
    if manifest is not None and not opts.overwrite and manifest["shard"]["build"] == key:
        return ShardRun(index, n, manifest["counts"]["tokens"], 0.0, kept=True)
    start = time.perf_counter()
    built = make_dataset(opts, (index, n))
    built.manifest["shard"] = {"index": index, "n": n, "build": key}
    with output_lock(path), atomic_dir(path, overwrite=True) as tmp:
        write_dataset(tmp, built.tokens, built.columns, built.vocab, built.manifest)
        _save_alignment(tmp / ALIGNMENT_FILE, built)
    report(built, opts.verbose)
    return ShardRun(index, n, built.manifest["counts"]["tokens"], time.perf_counter() - start,
                    kept=False)


def _save_alignment(path: Path, built: Any) -> None:
    """The per-token arrays of a shard's alignment statistics (datasets_build.align)."""
    from datasets_build.align import shared_char_count

    parts = built.stories.parts
    np.savez(path, kind=np.concatenate([p.kind for p in parts]),
             straddle=np.concatenate([p.straddle for p in parts]),
             rule_fine=np.concatenate([p.rule_fine for p in parts]),
             rule_coarse=np.concatenate([p.rule_coarse for p in parts]),
             covered=np.sum([p.covered for p in parts], axis=0),
             visible=np.sum([p.visible for p in parts], axis=0),
             shared_char=np.int64(sum(shared_char_count(p) for p in parts)))


def _shard_task(index: int, n: int, settings: dict[str, Any]) -> ShardRun:
    """One Ray task: shard ``index`` of ``n`` of the build ``settings`` describe."""
    return build_shard(BuildOptions(**settings), index, n)


def build_on_ray(opts: BuildOptions, shards: int, cluster: str = "local", *,
                 cpus_per_shard: float = 1.0, retries: int = 3, progress: bool = False
                 ) -> tuple[int, int, float]:
    """Build dataset ``opts.out`` as ``shards`` Ray tasks, one per shard not complete yet,
    then merge; (shards kept from before, tokens tagged now, seconds)."""
    check_resources(shards, cpus_per_shard, 0.0, retries)
    import_ray()
    out = opts.out = Path(opts.out).resolve()
    for name in ("source", "tokenizer"):          # workers may run in another directory
        value = getattr(opts, name)
        if value is not None and Path(value).exists():
            setattr(opts, name, str(Path(value).resolve()))
    key = build_key(opts, shards)
    check_merge_target(out, key, opts.overwrite)      # before any work
    todo = [i for i in range(shards) if opts.overwrite
            or (_shard_manifest(shard_path(out, i, shards)) or {}).get("shard", {}).get(
                "build") != key]
    settings = {**asdict(opts), "out": str(out), "verbose": False}
    start = time.perf_counter()
    tokens = submit_shards(cluster, _shard_task, todo, shards, (settings,), cpus=cpus_per_shard,
                           retries=retries, progress=progress,
                           desc="tag shards") if todo else 0
    seconds = time.perf_counter() - start
    merge_dataset(out, overwrite=opts.overwrite)
    return shards - len(todo), tokens, seconds

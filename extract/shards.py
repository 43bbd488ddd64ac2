"""A store built from shards: the output's shard directory, one shard at a time, the merge.

Shard i of n holds the i-th of n contiguous runs of stories with about equal token counts
(:func:`extract.plan.shard_bounds`); the stories of a group cut by a shard boundary are
batched whole on both sides, so every row is computed as in a run without shards
(:func:`extract.plan.read_shard`). The shards of output ``OUT`` live in its shard
directory, ``OUT.shards/shard-00003-of-00016.h5``; each is written under a temporary name
(``....h5.partial``) and renamed when complete, like any store. Running a shard is
idempotent, so a job array or a cluster can run it again after a failure: a complete shard
extracted with the same settings, model weights and dataset content is kept, an unfinished
one is continued (``resume``), a missing one is extracted. When all n are complete,
:func:`merge_shard_dir` joins them into ``OUT`` through HDF5 virtual datasets
(:mod:`extract.merge`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from datasets_build.dataset import load_tagged_dataset
from extract.merge import merge_stores
from extract.models import model_fingerprint
from extract.options import ExtractOptions, partial_path
from extract.plan import group_tokens_for, read_shard
from extract.store.integrity import TOKENS_HASH, token_table_hash
from extract.store.reader import open_store
from headprobe.errors import UsageError, opt
from headprobe.shards import ShardRun, shard_dir, shard_name, shard_pattern

SHARD_NAME = shard_pattern(".h5")
# Settings a kept shard must have been extracted with, besides the weights and the dataset.
KEPT_SETTINGS = ("split", "sites", "dtype", "model_dtype", "batch_tokens", "reinit_seed")


def shard_file(out: str | Path, index: int, n: int) -> Path:
    """Where shard ``index`` of ``n`` of output ``out`` is written."""
    return shard_dir(out) / shard_name(index, n, ".h5")


def shard_state(out: str | Path, index: int, n: int) -> str:
    """'complete', 'partial' (an unfinished file to continue) or 'missing'."""
    path = shard_file(out, index, n)
    if path.is_file():
        return "complete"
    return "partial" if partial_path(path).is_file() else "missing"


def shard_token_hashes(dataset_dir: str | Path, split: str, n: int, indices: Sequence[int],
                       group_tokens: int) -> dict[int, str]:
    """The token-table fingerprint each of shards ``indices`` of ``n`` has when extracted
    from ``dataset_dir`` in groups of ``group_tokens`` (the store's ``token_table_sha256``)."""
    dataset = load_tagged_dataset(dataset_dir)
    return {index: token_table_hash(read_shard(dataset, split, (index, n),
                                               group_tokens).token_table)
            for index in indices}


def weights_hash(model: Any) -> str | None:
    """sha256 of a model directory's weight files (None for a loaded model or a hub name
    whose files are not on this machine)."""
    if not isinstance(model, (str, Path)):
        return None
    return model_fingerprint(str(model)).get("model_weights_sha256")


def kept_shard_problem(path: Path, options: ExtractOptions, tokens_hash: str,
                       weights: str | None) -> str:
    """Why the complete shard ``path`` is not what ``options`` would extract ('' if it is).

    tokens_hash: the shard's expected token-table fingerprint (:func:`shard_token_hashes`);
    weights: the model's weight fingerprint (:func:`weights_hash`), None to skip it.
    """
    with open_store(path) as store:
        attrs = {"model_dtype": "float32", **store.attrs}
    index, n = options.shard
    want = {"split": options.split, "sites": list(options.sites), "dtype": options.dtype,
            "model_dtype": options.model_dtype, "batch_tokens": int(options.batch_tokens),
            "reinit_seed": -1 if options.reinit_seed is None else int(options.reinit_seed)}
    differ = [key for key in KEPT_SETTINGS if attrs.get(key) != want[key]
              and not (key == "batch_tokens" and options.batch_tokens_auto)]
    if attrs.get("shard") != f"{index}/{n}":
        differ.append("shard")
    if weights is not None and attrs.get("model_weights_sha256") != weights:
        differ.append("model weights")
    if attrs.get(TOKENS_HASH) != tokens_hash:
        differ.append("dataset content")
    return f"with different {', '.join(differ)}" if differ else ""


def shard_options(dataset_dir: str | Path, model: Any, out: str | Path, index: int, n: int,
                  state: str, overwrite: bool = False, **settings: Any) -> ExtractOptions:
    """The options that extract shard ``index`` of ``n`` of ``out`` from its ``state``
    (:func:`shard_state`): continued when partial, from the start when missing or when
    ``overwrite``; a complete shard's options are for checking it (nothing is written)."""
    resume = state == "partial" and not overwrite
    return ExtractOptions(dataset_dir, model, shard_file(out, index, n), shard=(index, n),
                          resume=resume, overwrite=overwrite or state == "complete",
                          **settings)


def extract_shard(dataset_dir: str | Path, model: Any, out: str | Path, index: int, n: int,
                  overwrite: bool = False, **settings: Any) -> ShardRun:
    """Make sure shard ``index`` of ``n`` of output ``out`` is complete (see the module
    docstring); UsageError naming the shard file when a complete one was extracted with
    other settings (``overwrite`` extracts it again).

    settings: those of :func:`extract.extractor.extract_store` (split, sites, dtype, ...).
    """
    if not 0 <= index < n:
        raise UsageError(f"{opt('shard')} {index}/{n}: need 0 <= i < n")
    with _new_shard_dir(out):
        return _extract_shard(dataset_dir, model, out, index, n, overwrite, **settings)


@contextmanager
def _new_shard_dir(out: str | Path) -> Iterator[None]:
    """Remove the shard directory of ``out`` again when a run that created it fails and
    leaves it empty."""
    directory = shard_dir(out)
    existed = directory.exists()
    try:
        yield
    except BaseException:
        if not existed and directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()
        raise


def _extract_shard(dataset_dir: str | Path, model: Any, out: str | Path, index: int, n: int,
                   overwrite: bool, **settings: Any) -> ShardRun:
    from extract.extractor import extract_store

    state = "missing" if overwrite else shard_state(out, index, n)
    options = shard_options(dataset_dir, model, out, index, n, state, overwrite, **settings)
    if state == "complete":
        hashes = shard_token_hashes(dataset_dir, options.split, n, [index],
                                    group_tokens_for(options))
        problem = kept_shard_problem(options.out, options, hashes[index], weights_hash(model))
        if problem:
            raise UsageError(f"{options.out} was extracted {problem}; pass "
                             f"{opt('overwrite', True)} to extract it again")
        return ShardRun(index, n, stored_rows(options.out)[0], 0.0, kept=True)
    start = time.perf_counter()
    extract_store(dataset_dir, model, options.out, shard=(index, n), resume=options.resume,
                  overwrite=overwrite, **settings)
    rows, extracted = stored_rows(options.out)
    return ShardRun(index, n, rows, time.perf_counter() - start, False, extracted)


def stored_rows(path: Path) -> tuple[int, int]:
    """(rows of the store ``path``, rows its last run extracted: all of them for a store
    written before this was recorded)."""
    with open_store(path) as store:
        return store.n_tokens, int(store.attrs.get("rows_extracted", store.n_tokens))


def shards_in_dir(out: str | Path) -> dict[int, list[int]]:
    """n -> sorted indices of the complete shard files in ``out``'s shard directory."""
    found: dict[int, list[int]] = {}
    directory = shard_dir(out)
    for path in sorted(directory.glob("shard-*-of-*.h5")) if directory.is_dir() else []:
        match = SHARD_NAME.fullmatch(path.name)
        if match:
            found.setdefault(int(match.group(2)), []).append(int(match.group(1)))
    return found


def merge_shard_dir(out: str | Path, n: int | None = None, overwrite: bool = False) -> Path:
    """Merge the n complete shards of ``out``'s shard directory into ``out``.

    n: how many shards (None: the one splitting the directory holds). UsageError naming the
    shards that are missing or unfinished.
    """
    out = Path(out)
    found = shards_in_dir(out)
    if n is None:
        counts = sorted({*found, *_partial_counts(out)})
        if len(counts) != 1:
            where = shard_dir(out)
            raise UsageError(f"{where} holds no shards" if not counts else
                             f"{where} holds shards of {len(counts)} splittings "
                             f"({', '.join(map(str, counts))} shards); merge the shard files "
                             "of one of them")
        n = counts[0]
    missing = sorted(set(range(n)) - set(found.get(n, [])))
    if missing:
        names = ", ".join(f"{i}/{n} ({shard_state(out, i, n)})" for i in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise UsageError(f"cannot merge {out}: shards {names}{more} are not complete; run them "
                         "first")
    return merge_stores(out, [shard_file(out, i, n) for i in range(n)], overwrite=overwrite)


def _partial_counts(out: Path) -> set[int]:
    directory = shard_dir(out)
    names = directory.glob("shard-*-of-*.h5.partial") if directory.is_dir() else []
    return {int(m.group(2)) for p in names
            if (m := SHARD_NAME.fullmatch(p.name.removesuffix(".partial")))}

"""Join shard stores (extracted with ``shard="i/n"``) into one store through HDF5 virtual datasets.

The merged file holds no activations itself: each dataset is a virtual dataset that maps
consecutive row ranges onto the shard files (referenced by paths relative to the merged
file, so keep them side by side). Shards are concatenated in shard order, which restores
the row order of an unsharded run. The root attributes ``merged_from``, ``merged_rows``,
``merged_token_sha256`` and ``merged_shards_created`` record each shard's path, row count,
token-table fingerprint and creation time, which :func:`extract.store.virtual.check_sources`
checks whenever the store is opened; the other attributes describe the whole store
(:func:`whole_store_attrs`). The merged file carries the block checksums of the joined
rows (``/integrity/block_crc32``, :func:`merged_checksums`), so its readers verify what
they read as they do for any store. Merging again over the same, unchanged shards leaves
the merged file as it is, so a merge job can be submitted twice.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from extract.phases import PHASES
from extract.store.integrity import (
    CHECKSUMS,
    TOKENS_HASH,
    create_checksums,
    token_table_hash,
    verified_blocks,
)
from extract.store.json_attrs import decode_attrs, encode_attrs
from extract.store.reader import open_store
from extract.store.schema import (
    LEGACY_FORMAT_ATTRS,
    SITES,
    TOKEN_GROUP,
    TOKEN_TABLE,
    StoreShape,
    token_path,
)
from extract.store.writer import create_coordinates, format_attrs, label_axes
from headprobe.atomic import atomic_file, check_target
from headprobe.checksums import crc32_of
from headprobe.errors import UsageError, opt
from headprobe.hdf5 import hdf5_image
from headprobe.locks import output_lock
from headprobe.manifest import command_line, now_iso

# Attributes on which every shard must agree.
AGREE = ("format_version", "schema_version", "model", "model_weights_sha256", "reinit_seed",
         "forward_path", "tokenizer_vocab_hash", "dataset_vocab_hash", "dataset_n_tokens",
         "split", "sites", "dtype", "model_dtype", "n_layers", "n_heads", "n_kv_heads",
         "d_head", "tags")


def _shard_index(attrs: dict, path: Path) -> tuple[int, int]:
    shard = attrs.get("shard") or ""
    if not shard:
        raise UsageError(f"{path} is not a shard (it was extracted without {opt('shard')})")
    i, n = (int(x) for x in shard.split("/"))
    return i, n


def merge_stores(out: str | Path, shards: Sequence[str | Path], overwrite: bool = False) -> Path:
    """Write ``out`` as a virtual concatenation of the complete shard stores ``shards``."""
    out = Path(out)
    if not shards:
        raise UsageError("give the shard stores to merge")
    with output_lock(out):
        ordered = _shards_in_order(shards)
        earlier = _earlier_merge(out, ordered)
        if not overwrite and earlier == "current":
            return out
        # a merge of the same shards written before merges carried checksums is redone
        overwrite = overwrite or earlier == "without checksums"
        check_target(out, overwrite, "file")
        with atomic_file(out, overwrite=overwrite) as tmp:
            _write_virtual(tmp, out, ordered)
    return out


def _shards_in_order(shards: Sequence[str | Path]) -> list[tuple[Path, dict]]:
    """(path, attributes) of every shard, in shard order; UsageError unless they agree and
    are all the shards of one splitting."""
    infos = []
    for path in map(Path, shards):
        with open_store(path) as store:
            infos.append((path, store.attrs))
    first_path, first = infos[0]
    for path, attrs in infos[1:]:
        differ = [k for k in AGREE if attrs.get(k) != first.get(k)]
        if differ:
            raise UsageError(f"{path} and {first_path} disagree on {', '.join(differ)}")
    indexed = sorted(((_shard_index(a, p), p, a) for p, a in infos), key=lambda t: t[0])
    counts = {n for (_, n), _, _ in indexed}
    if len(counts) != 1:
        raise UsageError(f"shards come from different splittings: {sorted(counts)}")
    n = counts.pop()
    got = [i for (i, _), _, _ in indexed]
    if got != list(range(n)):
        missing = sorted(set(range(n)) - set(got))
        if missing:
            raise UsageError(f"shards {', '.join(f'{i}/{n}' for i in missing)} are missing")
        raise UsageError("a shard is given more than once")
    return [(p, a) for _, p, a in indexed]


def _sources(out: Path, shards: Sequence[tuple[Path, dict]]) -> dict[str, list]:
    """What a merge of ``shards`` into ``out`` records about them: their paths relative to
    ``out``, rows, token fingerprints and creation times."""
    return {"merged_from": [os.path.relpath(p.resolve(), out.resolve().parent)
                            for p, _ in shards],
            "merged_rows": [int(a["n_tokens"]) for _, a in shards],
            "merged_token_sha256": [a.get(TOKENS_HASH, "") for _, a in shards],
            "merged_shards_created": [str(a.get("created", "")) for _, a in shards]}


def _earlier_merge(out: Path, shards: Sequence[tuple[Path, dict]]) -> str:
    """'current' when ``out`` is a merge of exactly these shards, unchanged since (merging
    again is then nothing to do, so a merge job can be submitted twice); 'without
    checksums' for such a merge written before merges carried block checksums; else ''."""
    if not out.is_file():
        return ""
    try:
        with h5py.File(out, "r") as f:
            attrs, checked = decode_attrs(f.attrs), CHECKSUMS in f
    except OSError:
        return ""
    if not all(attrs.get(k) == v for k, v in _sources(out, shards).items()):
        return ""
    return "current" if checked else "without checksums"


def whole_store_attrs(shards: Sequence[tuple[Path, dict]]) -> dict:
    """The root attributes that describe the merged store rather than one shard: stories,
    their id range, the seconds spent, and the command (that of the merge)."""
    ranges = [a.get("story_ids_range") or [] for _, a in shards]
    ranges = [r for r in ranges if len(r) == 2]
    return {
        "shard": "", "n_stories": sum(int(a.get("n_stories", 0)) for _, a in shards),
        "story_ids_range": [ranges[0][0], ranges[-1][1]] if ranges else [],
        "extract_seconds": round(sum(float(a.get("extract_seconds", 0)) for _, a in shards),
                                 3),
        "extract_phases": {name: round(sum(float((a.get("extract_phases") or {}).get(name, 0))
                                           for _, a in shards), 3) for name in PHASES},
        "rows_extracted": sum(int(a.get("rows_extracted", a["n_tokens"])) for _, a in shards),
        "created": now_iso(), "command": command_line(),
        "shard_commands": sorted({str(a.get("command", "")) for _, a in shards}),
    }


def _joined_token_hash(paths: Sequence[Path]) -> str:
    """The token-table fingerprint of the shards' token tables joined in order."""
    tables = []
    for path in paths:
        with open_store(path) as store:
            tables.append(store.tokens())
    return token_table_hash({k: np.concatenate([t[k] for t in tables]) for k in TOKEN_TABLE})


def merged_checksums(shards: Sequence[tuple[Path, dict]], chunk_rows: int) -> np.ndarray:
    """[n_blocks, n_sites] uint32: the checksum of every block of ``chunk_rows`` rows of the
    shards' rows joined in order, as :mod:`extract.store.integrity` records them. Copied from
    the shards when their blocks line up with the joined ones (every shard but the last a
    whole number of blocks of the same size, each with its checksums); else computed from
    the shards' rows, each shard block checked against the shard's own checksum on the way."""
    sizes = [int(a["n_tokens"]) for _, a in shards]
    sites = list(shards[0][1]["sites"])
    lined_up = all(int(a["chunk_rows"]) == chunk_rows for _, a in shards) and all(
        size % chunk_rows == 0 for size in sizes[:-1])
    tables = []
    for path, _ in shards:
        with h5py.File(path, "r") as f:
            tables.append(f[CHECKSUMS][()] if lined_up and CHECKSUMS in f else None)
    if all(t is not None for t in tables):
        return np.concatenate(tables).astype(np.uint32)
    n_blocks = -(-sum(sizes) // chunk_rows)
    table = np.zeros((n_blocks, len(sites)), dtype=np.uint32)
    for column, site in enumerate(sites):
        table[:, column] = _joined_column([p for p, _ in shards], site, chunk_rows, n_blocks)
    return table


def _joined_column(paths: Sequence[Path], site: str, chunk_rows: int,
                   n_blocks: int) -> np.ndarray:
    """[n_blocks] checksums of ``site``'s rows of the stores ``paths`` joined in order, in
    blocks of ``chunk_rows`` rows (CRC-32 carried on from one shard's rows to the next)."""
    out = np.zeros(n_blocks, dtype=np.uint32)
    block = filled = crc = 0
    for path in paths:
        for rows in verified_blocks(path, site):
            at = 0
            while at < len(rows):
                take = min(chunk_rows - filled, len(rows) - at)
                piece = np.ascontiguousarray(rows[at:at + take])
                crc = crc32_of(piece, crc)
                filled, at = filled + take, at + take
                if filled == chunk_rows:
                    out[block], block, filled, crc = crc, block + 1, 0, 0
    if filled:
        out[block] = crc
    return out


def _write_virtual(tmp: Path, final: Path, shards: list[tuple[Path, dict]]) -> None:
    sizes = [int(a["n_tokens"]) for _, a in shards]
    total = sum(sizes)
    with h5py.File(shards[0][0], "r") as src, hdf5_image(tmp, final) as dst:
        attrs = decode_attrs(src.attrs)
        scales = create_coordinates(dst, StoreShape.of(attrs), attrs["sites"], total)
        names = {SITES[s].dataset: SITES[s].dims for s in attrs["sites"]}
        names.update({token_path(c): TOKEN_TABLE[c].dims for c in src[TOKEN_GROUP]})
        for name, dims in names.items():
            ds = src[name]
            layout = h5py.VirtualLayout(shape=(total, *ds.shape[1:]), dtype=ds.dtype)
            start = 0
            for (path, _), size in zip(shards, sizes, strict=True):
                rel = os.path.relpath(path.resolve(), final.resolve().parent)
                layout[start:start + size] = h5py.VirtualSource(rel, name, (size, *ds.shape[1:]))
                start += size
            vds = dst.create_virtual_dataset(name, layout)
            for key, value in ds.attrs.items():
                if key not in ("dims", "description", "DIMENSION_LIST"):
                    vds.attrs[key] = value
            label_axes(vds, dims, str(ds.attrs["description"]), scales)
        dst[TOKEN_GROUP].attrs.update(src[TOKEN_GROUP].attrs)
        chunk_rows = int(attrs["chunk_rows"])
        create_checksums(dst, total, chunk_rows, len(attrs["sites"]))
        dst[CHECKSUMS][...] = merged_checksums(shards, chunk_rows)
        for key in LEGACY_FORMAT_ATTRS:   # shards of version 2 merge into the current one
            attrs.pop(key, None)
        attrs.update(format_attrs())
        attrs.update({
            "n_tokens": total, "rows_written": total, "complete": 1,
            **whole_store_attrs(shards), **_sources(final, shards),
            "merged_at": now_iso(), "merge_command": command_line(),
            TOKENS_HASH: _joined_token_hash([p for p, _ in shards]),
            "description": attrs["description"] + " This file is a merge of shard files "
            "(listed in 'merged_from', paths relative to this file) through HDF5 virtual "
            "datasets; keep them beside it.",
        })
        encode_attrs(dst.attrs, attrs)

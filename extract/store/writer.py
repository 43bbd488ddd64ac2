"""Writing a store: create the file from the schema, then stream blocks of rows into it.

:func:`create_store` lays out an empty file; :class:`StoreWriter` fills in the token table
and blocks of rows (checked against the schema) and records progress, so that
:func:`reopen_store` can continue an unfinished file. :func:`write_store` does it all in
one call for small stores.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from datasets_build.tagsets import tag_bits
from extract.store.codec import (
    DEFAULT_COMPRESSION,
    TOKEN_TABLE_FILTER,
    compression_attrs,
    dataset_filters,
    parse_compression,
    stored_level,
    write_whole_chunks,
)
from extract.store.json_attrs import encode_attrs
from extract.store.schema import (
    COORDINATES,
    DEFAULT_SITES,
    DESCRIPTION,
    KV_HEAD,
    KV_HEAD_DESCRIPTION,
    LEGACY_FORMAT_ATTRS,
    OLD_KV_HEAD,
    SCHEMA,
    SCHEMA_VERSION,
    SITES,
    TAG_SETS,
    TOKEN_GROUP,
    TOKEN_GROUP_DESCRIPTION,
    TOKEN_TABLE,
    StoreShape,
    check_block,
    check_dtype,
    check_sites,
    check_token_column,
    row_bytes,
    site_stage,
    store_version,
    token_path,
)
from headprobe.errors import UsageError
from headprobe.heads import kv_heads
from headprobe.layout import FORMAT, FORMAT_VERSION, Dimensions, describe

MAX_CHUNK_ROWS = 16384
MIN_CHUNK_ROWS = 256
TOKEN_CHUNK_ROWS = 65536
BUFFER_BYTES = 64 * 2**20


def chunk_rows_for(shape: StoreShape, sites: Sequence[str], budget: int = BUFFER_BYTES) -> int:
    """Rows per chunk: a power of two so that one block of rows for all sites fits ``budget``.

    The extractor holds one block of float32 rows in memory before writing it.
    """
    rows = max(1, budget // row_bytes(shape, sites))
    rows = 1 << (rows.bit_length() - 1)
    return int(min(MAX_CHUNK_ROWS, max(MIN_CHUNK_ROWS, rows)))


class StoreWriter:
    """Writes an open store: the token table, blocks of rows, and progress.

    Use :func:`create_store` for a new file and :func:`reopen_store` to continue one.
    """

    def __init__(self, file: h5py.File):
        self.file = file
        self.path = Path(file.filename)
        self.sites: list[str] = json.loads(file.attrs["sites"])
        self.n_tokens = int(file.attrs["n_tokens"])
        self.shape = StoreShape.of(file.attrs)
        self.chunk_rows = int(file.attrs["chunk_rows"])
        self.level = stored_level(file.attrs)
        self.blocks_written = 0   # by this writer, since it was opened

    @property
    def rows_written(self) -> int:
        """Rows [0, rows_written) are complete on disk."""
        return int(self.file.attrs["rows_written"])

    def write_tokens(self, table: dict[str, np.ndarray], start: int = 0) -> None:
        """Write token-table columns (each [rows]) at rows [start, start + rows)."""
        for name, column in TOKEN_TABLE.items():
            if name not in table:
                raise ValueError(f"token table lacks column {name!r}")
            values = np.asarray(table[name], dtype=column.dtype)
            check_token_column(name, values)
            self._check_rows(start, len(values))
            self.file[token_path(name)][start:start + len(values)] = values

    def write_block(self, start: int, arrays: dict[str, np.ndarray]) -> None:
        """Write rows [start, start + rows) of every site.

        arrays: site -> [rows, n_layers, heads, d_head] (vector sites) or
        [rows, n_layers, n_heads] (activity, entropy, argmax), heads being n_kv_heads for
        keys and values and n_heads otherwise. Every stored site must be given.
        Blocks that cover whole chunks (chunk-aligned start, a multiple of chunk_rows rows
        or up to the end of the file) are compressed here and written as raw chunks.
        """
        missing = set(self.sites) - set(arrays)
        if missing:
            raise ValueError(f"block lacks sites {sorted(missing)}")
        for site in self.sites:
            ds = self.file[SITES[site].dataset]
            data = np.asarray(arrays[site], dtype=ds.dtype)
            check_block(site, data, self.shape)
            rows = len(data)
            self._check_rows(start, rows)
            whole = (start % self.chunk_rows == 0
                     and (rows % self.chunk_rows == 0 or start + rows == self.n_tokens))
            if whole and ds.chunks is not None:
                for at in range(0, rows, self.chunk_rows):
                    write_whole_chunks(ds, start + at, data[at:at + self.chunk_rows],
                                       self.level, self.chunk_rows)
            else:
                ds[start:start + rows] = data
        self.blocks_written += 1

    def _check_rows(self, start: int, rows: int) -> None:
        if start < 0 or start + rows > self.n_tokens:
            raise ValueError(f"rows [{start}, {start + rows}) are outside the store's "
                             f"{self.n_tokens} rows")

    def set_progress(self, rows_written: int) -> None:
        """Record that rows [0, rows_written) are complete and flush the file."""
        self.file.attrs["rows_written"] = int(rows_written)
        self.file.flush()

    def update_attrs(self, attrs: dict[str, Any]) -> None:
        encode_attrs(self.file.attrs, attrs)

    def finish(self) -> None:
        """Mark the store complete and close it."""
        self.file.attrs["rows_written"] = self.n_tokens
        self.file.attrs["complete"] = 1
        self.close()

    def close(self) -> None:
        if self.file.id.valid:
            self.file.close()

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open_h5(path: Path, mode: str) -> h5py.File:
    # A large chunk cache lets one block of rows be written without re-reading chunks.
    return h5py.File(path, mode, rdcc_nbytes=BUFFER_BYTES, rdcc_nslots=100003)


# The previous layout (version 2: no coordinates), kept to measure what the coordinates
# cost (``python -m extract bench-layout``) and to test that such files still open.
PREVIOUS_VERSION = 2


def format_attrs(version: int = SCHEMA_VERSION) -> dict[str, Any]:
    """The root attributes naming a store's format, as ``version`` names them."""
    names = (FORMAT, FORMAT_VERSION) if version >= 3 else LEGACY_FORMAT_ATTRS
    return dict(zip(names, (SCHEMA, version), strict=True))


def _root_attrs(n_tokens: int, arch: dict[str, Any], sites: list[str], dtype: str,
                chunk_rows: int, tags: dict[str, list[str]] | None, level: int,
                version: int) -> dict[str, Any]:
    return {
        **format_attrs(version), "description": DESCRIPTION,
        "n_tokens": int(n_tokens), "n_layers": int(arch["n_layers"]),
        "n_heads": int(arch["n_heads"]), "d_head": int(arch["d_head"]),
        "n_kv_heads": StoreShape.of(arch).n_kv_heads, "architecture": dict(arch),
        "sites": sites, "dtype": dtype, "chunk_rows": chunk_rows,
        "tags": tags or {"fine": [], "coarse": []}, "rows_written": 0, "complete": 0,
        **compression_attrs(level),
    }


def label_axes(ds: h5py.Dataset, dims: tuple[str, ...], description: str,
               scales: Dimensions | None) -> None:
    """Name the axes of ``ds`` and say what it holds; attach the coordinates ``scales``
    (None: the previous layout, the axis names as one string)."""
    if scales is None:
        ds.attrs["dims"] = ", ".join(dims)
        ds.attrs["description"] = description
    else:
        describe(ds, dims, description)
        scales.attach(ds, dims)


def create_coordinates(file: h5py.File, shape: StoreShape, sites: list[str],
                       n_tokens: int) -> Dimensions:
    """The coordinates of a store's axes (see schema.COORDINATES) and ``/kv_head_of``."""
    scales = Dimensions(file)
    for name, length in (("token", n_tokens), ("layer", shape.n_layers),
                         ("head", shape.n_heads), ("kv_head", shape.n_kv_heads),
                         ("d_head", shape.d_head)):
        scales.index(name, length, COORDINATES[name])
    scales.coordinate("site", sites, COORDINATES["site"])
    kv = file.create_dataset(KV_HEAD, data=kv_heads(shape.n_heads, shape.n_kv_heads)
                             .astype(np.int32))
    label_axes(kv, ("head",), KV_HEAD_DESCRIPTION, scales)
    return scales


def _create_sites(file: h5py.File, sites: list[str], n_tokens: int, arch: dict[str, Any],
                  dtype: str, chunk_rows: int, level: int, scales: Dimensions | None) -> None:
    """One dataset per site, [n_tokens, *row_shape], chunked one head (or layer) at a time."""
    shape = StoreShape.of(arch)
    # "fast" streams are ordinary deflate streams under the gzip filter (see codec)
    filters = dataset_filters(level) if n_tokens else {}
    for name in sites:
        site = SITES[name]
        ds = file.create_dataset(
            site.dataset, shape=(n_tokens, *shape.row_shape(name)),
            chunks=shape.chunk_shape(name, chunk_rows) if n_tokens else None,
            dtype=site.dtype(dtype), **filters)
        ds.attrs["site"] = site.name
        label_axes(ds, site.dims, site.description, scales)
        stage = site_stage(name, bool(arch.get("rotary")), bool(arch.get("qk_norm")))
        if stage:
            ds.attrs["stage"] = stage
    if scales is None:
        kv = file.create_dataset(OLD_KV_HEAD, data=kv_heads(shape.n_heads, shape.n_kv_heads)
                                 .astype(np.int32))
        label_axes(kv, ("head",), KV_HEAD_DESCRIPTION, None)


def _create_token_table(file: h5py.File, n_tokens: int, scales: Dimensions | None) -> None:
    group = file.create_group(TOKEN_GROUP)
    group.attrs["description"] = TOKEN_GROUP_DESCRIPTION
    for column in TOKEN_TABLE.values():
        ds = group.create_dataset(column.name, shape=(n_tokens,), dtype=column.dtype,
                                  chunks=(min(TOKEN_CHUNK_ROWS, n_tokens),) if n_tokens else None,
                                  compression=TOKEN_TABLE_FILTER if n_tokens else None)
        label_axes(ds, column.dims, column.description, scales)


def create_store(path: str | Path, n_tokens: int, arch: dict[str, Any],
                 sites: Sequence[str] = DEFAULT_SITES, dtype: str = "float16",
                 attrs: dict[str, Any] | None = None,
                 tags: dict[str, list[str]] | None = None,
                 chunk_rows: int | None = None,
                 compression: str | int = DEFAULT_COMPRESSION,
                 version: int = SCHEMA_VERSION) -> StoreWriter:
    """Create an empty store at ``path`` (replacing any file there) and return its writer.

    arch: needs n_layers, n_heads, d_head; n_kv_heads (default n_heads), rotary and qk_norm
    (default false) say how keys and queries are read (other entries are kept as attributes).
    sites: names from SITES; dtype: storage dtype of float sites ('float16' or 'float32');
    compression: of the per-head datasets: "fast" (ISA-L deflate), "none" or a gzip
    level 1-9 (:func:`parse_compression`); the token table is always gzip-compressed;
    version: SCHEMA_VERSION, or PREVIOUS_VERSION for the layout without coordinates.
    """
    level = parse_compression(compression)
    sites = check_sites(sites)
    check_dtype(dtype)
    if chunk_rows is None:
        chunk_rows = chunk_rows_for(StoreShape.of(arch), sites)
    rows = max(1, min(int(chunk_rows), max(n_tokens, 1)))
    if version not in (SCHEMA_VERSION, PREVIOUS_VERSION):
        raise ValueError(f"stores are written in version {SCHEMA_VERSION} or "
                         f"{PREVIOUS_VERSION}, not {version}")
    file = _open_h5(Path(path), "w")
    encode_attrs(file.attrs, {**_root_attrs(n_tokens, arch, sites, dtype, rows, tags, level,
                                            version), **(attrs or {})})
    scales = (create_coordinates(file, StoreShape.of(arch), sites, n_tokens)
              if version == SCHEMA_VERSION else None)
    _create_sites(file, sites, n_tokens, arch, dtype, rows, level, scales)
    _create_token_table(file, n_tokens, scales)
    file.flush()
    return StoreWriter(file)


def reopen_store(path: str | Path) -> StoreWriter:
    """Open an unfinished store for appending (the extractor's ``resume``)."""
    path = Path(path)
    try:
        file = _open_h5(path, "r+")
    except OSError as exc:
        raise UsageError(f"cannot resume from {path}: not a readable HDF5 file") from exc
    if store_version(file.attrs) != (SCHEMA, SCHEMA_VERSION):
        file.close()
        raise UsageError(f"cannot resume from {path}: not a headprobe store of schema "
                         f"version {SCHEMA_VERSION}")
    return StoreWriter(file)


def _arch_of(arrays: dict[str, np.ndarray], given: dict[str, Any]) -> dict[str, Any]:
    """The architecture numbers the arrays show, then the ``given`` ones for the rest."""
    some = next(iter(arrays.values()))
    heads = {SITES[s].head_axis: a.shape[2] for s, a in arrays.items()}
    vec = next((a for s, a in arrays.items() if SITES[s].kind == "vector"), None)
    arch = {"n_layers": some.shape[1], "d_head": vec.shape[3] if vec is not None else 1}
    arch["n_heads"] = heads.get("head", given.get("n_heads", heads.get("kv_head")))
    arch["n_kv_heads"] = heads.get("kv_head", given.get("n_kv_heads", arch["n_heads"]))
    arch.update({k: v for k, v in given.items() if k not in arch})
    return arch


def write_store(path: str | Path, token_table: dict[str, np.ndarray],
                arrays: dict[str, np.ndarray], attrs: dict[str, Any] | None = None,
                tags: dict[str, list[str]] | None = None, dtype: str = "float16",
                chunk_rows: int | None = None, version: int = SCHEMA_VERSION) -> Path:
    """Write a whole store in one call (small stores, tests).

    token_table: column -> [n_tokens] (missing columns are filled: parent_id with story_id,
    -1 for char spans, the token's one tag for tag sets, 0 else); arrays: site -> [n_tokens,
    n_layers, heads(, d_head)] (heads: n_kv_heads for keys and
    values, n_heads otherwise; attrs["architecture"] fills in what the arrays do not show).
    """
    n = len(next(iter(token_table.values())))
    filled = {"parent_id": token_table.get("story_id", np.zeros(n))}
    table = {k: np.asarray(token_table[k]) if k in token_table
             else filled.get(k, np.full(n, -1 if k.startswith("char_") else 0))
             for k in TOKEN_TABLE}
    for sets, tag in TAG_SETS.items():
        if sets not in token_table:
            table[sets] = tag_bits(table[tag])
    arch = _arch_of(arrays, (attrs or {}).get("architecture", {}))
    writer = create_store(path, n, arch, list(arrays), dtype, attrs, tags, chunk_rows,
                          version=version)
    writer.write_tokens(table)
    writer.write_block(0, arrays)
    writer.finish()
    return Path(path)

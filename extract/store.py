"""The activation store: one HDF5 file of per-token, per-head activations.

Layout (schema version 1, see docs/hdf5-schema.md)::

    /keys          [n_tokens, n_layers, n_heads, d_head]  blocks.L.attn.hook_k
    /queries       [n_tokens, n_layers, n_heads, d_head]  blocks.L.attn.hook_q
    /values        [n_tokens, n_layers, n_heads, d_head]  blocks.L.attn.hook_v   (optional)
    /z             [n_tokens, n_layers, n_heads, d_head]  blocks.L.attn.hook_z   (optional)
    /activity      [n_tokens, n_layers, n_heads]          ||z_h W_O[h]||_2
    /attn_entropy  [n_tokens, n_layers, n_heads]          entropy of the query's pattern (optional)
    /attn_argmax   [n_tokens, n_layers, n_heads]          position attended most (optional)
    /tokens/<col>  [n_tokens]                              the token table (input_id, story_id, ...)

Datasets are token-major, chunked along tokens and deflate-compressed (the standard HDF5
gzip filter after byte shuffle; by default the writer's deflate streams Huffman-code the
high-order byte planes and store the near-random low-order ones as they are, which costs
a fraction of gzip level 1 and compresses float16 activations about as well). Vector sites use
chunks of ``(chunk_rows, 1, 1, d_head)`` so reading one (layer, head) decompresses only
that head; scalar sites use ``(chunk_rows, 1, n_heads)`` so one chunk row holds a layer.

The writer streams blocks of rows; the reader (:func:`open_store`) returns float32
arrays whatever the stored dtype.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from datasets_build.dataset import SPLITS, TOKEN_COLUMNS
from headprobe.errors import UsageError

SCHEMA = "headprobe-activations"
SCHEMA_VERSION = 1

# site name -> (HDF5 dataset name, kind, what it holds)
SITES: dict[str, tuple[str, str, str]] = {
    "key": ("keys", "vector", "key vectors, hook blocks.L.attn.hook_k"),
    "query": ("queries", "vector", "query vectors, hook blocks.L.attn.hook_q"),
    "value": ("values", "vector", "value vectors, hook blocks.L.attn.hook_v"),
    "z": ("z", "vector", "attention-weighted values per head, hook blocks.L.attn.hook_z"),
    "activity": ("activity", "scalar",
                 "head activity: L2 norm of the head's contribution z_h @ W_O[h] to the "
                 "residual stream (output bias excluded)"),
    "entropy": ("attn_entropy", "scalar",
                "entropy (nats) of the head's attention pattern for this query token"),
    "argmax": ("attn_argmax", "index",
               "position (within the story) of the key token this query attends to most"),
}
DEFAULT_SITES = ("key", "query", "activity")
DTYPES = ("float16", "float32")
TOKEN_DESCRIPTIONS = {
    "input_id": "model input id of the token",
    "story_id": "id of the story the token belongs to",
    "position": "position of the token in its story (0 = BOS when the tokenizer has one)",
    "char_start": "start of the token's span in the story text (-1 for BOS)",
    "char_end": "end of the token's span in the story text (-1 for BOS)",
    "fine_tag": "fine part-of-speech tag id (names in root attribute tags['fine'])",
    "coarse_tag": "coarse part-of-speech tag id (names in root attribute tags['coarse'])",
    "quoted": "1 if the token lies inside a quotation",
    "straddle": "1 if the token covers more than one spaCy token",
    "split": "0 = train, 1 = test",
}
DESCRIPTION = (
    "headprobe activation store. One row per model token of a tagged dataset; rows are "
    "sorted by (story_id, position). Per-head datasets are [token, layer, head(, d_head)] "
    "(see each dataset's 'dims' and 'description'); the token table is in /tokens/<column>. "
    "Root attributes whose names are listed in 'json_attributes' hold JSON text. "
    "'complete' is 1 once every row has been written.")
# --compression: "fast" (default) = deflate with Huffman coding only, "none", or gzip "1".."9".
COMPRESSIONS = ("fast", "none", *(str(level) for level in range(10)))
DEFAULT_COMPRESSION = "fast"
MAX_CHUNK_ROWS = 16384
MIN_CHUNK_ROWS = 256
BUFFER_BYTES = 64 * 2**20


def row_bytes(n_layers: int, n_heads: int, d_head: int, sites: Sequence[str]) -> int:
    """Bytes of one token's float32 values for all ``sites``."""
    return max(1, sum(n_layers * n_heads * (d_head if SITES[s][1] == "vector" else 1) * 4
                      for s in sites))


def chunk_rows_for(n_layers: int, n_heads: int, d_head: int, sites: Sequence[str],
                   budget: int = BUFFER_BYTES) -> int:
    """Rows per chunk: a power of two so that one block of rows for all sites fits ``budget``.

    The extractor holds one block of float32 rows in memory before writing it.
    """
    rows = max(1, budget // row_bytes(n_layers, n_heads, d_head, sites))
    rows = 1 << (rows.bit_length() - 1)
    return int(min(MAX_CHUNK_ROWS, max(MIN_CHUNK_ROWS, rows)))


def parse_compression(spec: str | int) -> int:
    """Compression spec -> deflate level: 0 none, 1-9 gzip level, -1 Huffman-only ("fast").

    Accepts "fast", "none", or a gzip level 0-9 (as int or text).
    """
    text = str(spec).strip().lower()
    if text == "fast":
        return -1
    if text in ("none", "0"):
        return 0
    if text in COMPRESSIONS:
        return int(text)
    raise UsageError(f"unknown compression {spec!r}; choose fast, none or a gzip level 1-9")


def describe_compression(level: int) -> str:
    """The root attribute ``compression`` for a level from :func:`parse_compression`."""
    if level < 0:
        return "gzip filter (deflate: Huffman coding only, low byte planes stored), shuffle"
    return f"gzip level {level}, shuffle" if level > 0 else "none"


def _level_of(description: str) -> int:
    if "huffman" in description.lower():
        return -1
    words = description.split()
    return int(words[2].rstrip(",")) if description.startswith("gzip level") else 0


def deflate(data: Any, level: int, raw_prefix: int = 0) -> bytes:
    """zlib-format deflate stream of ``data`` (what HDF5's gzip filter decodes).

    level -1: Huffman coding only (no match search), with the first ``raw_prefix`` bytes
    kept in stored (uncompressed) deflate blocks; used for the low-order byte planes of
    shuffled floats, which are close to random. zlib releases the GIL while it runs.
    """
    if level >= 0:
        return zlib.compress(data, level)
    view = memoryview(data).cast("B")
    parts = [b"\x78\x01"]                       # zlib header: deflate, 32 KiB window
    for at in range(0, raw_prefix, 65535):       # stored blocks: 0x00, LEN, ~LEN, bytes
        size = min(65535, raw_prefix - at)
        parts += [b"\x00" + size.to_bytes(2, "little") + (size ^ 0xFFFF).to_bytes(2, "little"),
                  view[at:at + size]]
    packer = zlib.compressobj(1, zlib.DEFLATED, -15, 9, zlib.Z_HUFFMAN_ONLY)   # raw deflate
    parts += [packer.compress(view[raw_prefix:]), packer.flush(),
              zlib.adler32(view).to_bytes(4, "big")]
    return b"".join(parts)


def shuffled_chunks(block: np.ndarray) -> np.ndarray:
    """Byte-shuffled chunks of a block, one per (layer, head) or per layer, in one copy.

    block: [rows, n_layers, n_heads, d_head] -> uint8 [n_layers, n_heads, chunk bytes] for
    chunks (rows, 1, 1, d_head); [rows, n_layers, n_heads] -> [n_layers, chunk bytes] for
    chunks (rows, 1, n_heads). Each row is what HDF5's shuffle filter makes of the chunk:
    byte k of every element (in row-major element order), for k = 0 .. itemsize - 1.
    """
    raw = np.ascontiguousarray(block)
    size = raw.dtype.itemsize
    u8 = raw.view(np.uint8).reshape(*raw.shape, size)
    if raw.ndim == 4:      # [rows, L, H, D, byte] -> [L, H, byte, rows, D]
        out = np.ascontiguousarray(u8.transpose(1, 2, 4, 0, 3))
        return out.reshape(raw.shape[1], raw.shape[2], -1)
    out = np.ascontiguousarray(u8.transpose(1, 3, 0, 2))  # [rows, L, H, byte] -> [L, byte, rows, H]
    return out.reshape(raw.shape[1], -1)


def encode_attrs(target: h5py.AttributeManager, attrs: dict[str, Any]) -> None:
    """Write scalars as they are, dicts/lists/None as JSON text (named in json_attributes)."""
    json_names = set(json.loads(target.get("json_attributes", "[]")))
    for key, value in attrs.items():
        if isinstance(value, (bool, np.bool_)):
            target[key] = int(value)
        elif isinstance(value, (str, int, float, np.integer, np.floating)):
            target[key] = value
            json_names.discard(key)
        else:
            target[key] = json.dumps(value, default=str)
            json_names.add(key)
    target["json_attributes"] = json.dumps(sorted(json_names))


def decode_attrs(source: h5py.AttributeManager) -> dict[str, Any]:
    json_names = set(json.loads(source.get("json_attributes", "[]")))
    out: dict[str, Any] = {}
    for key, value in source.items():
        if key == "json_attributes":
            continue
        if isinstance(value, bytes):
            value = value.decode()
        if isinstance(value, np.generic):
            value = value.item()
        out[key] = json.loads(value) if key in json_names else value
    return out


class StoreWriter:
    """Writes an open store: the token table, blocks of rows, and progress.

    Use :func:`create_store` for a new file and :func:`reopen_store` to continue one.
    """

    def __init__(self, file: h5py.File):
        self.file = file
        self.path = Path(file.filename)
        self.sites: list[str] = json.loads(file.attrs["sites"])
        self.n_tokens = int(file.attrs["n_tokens"])
        self.chunk_rows = int(file.attrs["chunk_rows"])
        self.level = _level_of(str(file.attrs.get("compression", "none")))
        self.blocks_written = 0   # by this writer, since it was opened

    @property
    def rows_written(self) -> int:
        """Rows [0, rows_written) are complete on disk."""
        return int(self.file.attrs["rows_written"])

    def write_tokens(self, table: dict[str, np.ndarray], start: int = 0) -> None:
        """Write token-table columns (each [rows]) at rows [start, start + rows)."""
        for name, dtype in TOKEN_COLUMNS.items():
            if name not in table:
                raise ValueError(f"token table lacks column {name!r}")
            col = np.asarray(table[name], dtype=dtype)
            self.file["tokens"][name][start:start + len(col)] = col

    def write_block(self, start: int, arrays: dict[str, np.ndarray]) -> None:
        """Write rows [start, start + rows) of every site.

        arrays: site -> [rows, n_layers, n_heads, d_head] (vector sites) or
        [rows, n_layers, n_heads] (activity, entropy, argmax). Every stored site must be given.
        Blocks that cover whole chunks (chunk-aligned start, a multiple of chunk_rows rows
        or up to the end of the file) are compressed here and written as raw chunks.
        """
        missing = set(self.sites) - set(arrays)
        if missing:
            raise ValueError(f"block lacks sites {sorted(missing)}")
        for site in self.sites:
            ds = self.file[SITES[site][0]]
            data = np.asarray(arrays[site], dtype=ds.dtype)
            rows = len(data)
            whole = (start % self.chunk_rows == 0
                     and (rows % self.chunk_rows == 0 or start + rows == self.n_tokens))
            if whole and ds.chunks is not None:
                for at in range(0, rows, self.chunk_rows):
                    self._write_chunks(ds, start + at, data[at:at + self.chunk_rows])
            else:
                ds[start:start + rows] = data
        self.blocks_written += 1

    def _write_chunks(self, ds: h5py.Dataset, start: int, data: np.ndarray) -> None:
        """Write whole chunks: ``data`` holds at most chunk_rows rows from ``start``."""
        level = self.level if ds.compression == "gzip" else 0
        rows = len(data)
        if rows < self.chunk_rows:               # edge chunks are stored at full size
            pad = np.zeros((self.chunk_rows - len(data), *data.shape[1:]), dtype=data.dtype)
            data = np.concatenate([data, pad])
        if level == 0:
            chunks = np.ascontiguousarray(np.moveaxis(data, 0, 2 if ds.ndim == 4 else 1))
        else:
            chunks = shuffled_chunks(data)
        # the low half of the byte planes of floats holds mantissa bits: stored as they are,
        # except the zero padding of an edge chunk, which is left to Huffman coding
        per_row = chunks.shape[-1] // 2 // self.chunk_rows
        raw = rows * per_row if data.dtype.kind == "f" else 0
        for layer in range(data.shape[1]):
            if ds.ndim == 4:
                for head in range(data.shape[2]):
                    payload = chunks[layer, head]
                    ds.id.write_direct_chunk((start, layer, head, 0), payload if level == 0
                                             else deflate(payload, level, raw))
            else:
                payload = chunks[layer]
                ds.id.write_direct_chunk((start, layer, 0), payload if level == 0
                                         else deflate(payload, level, raw))

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


def create_store(path: str | Path, n_tokens: int, arch: dict[str, Any],
                 sites: Sequence[str] = DEFAULT_SITES, dtype: str = "float16",
                 attrs: dict[str, Any] | None = None,
                 tags: dict[str, list[str]] | None = None,
                 chunk_rows: int | None = None,
                 compression: str | int = DEFAULT_COMPRESSION) -> StoreWriter:
    """Create an empty store at ``path`` (replacing any file there) and return its writer.

    arch: needs n_layers, n_heads, d_head (other entries are kept as attributes).
    sites: names from SITES; dtype: storage dtype of float sites ('float16' or 'float32');
    compression: of the per-head datasets: "fast" (Huffman-only deflate), "none" or a gzip
    level 1-9 (:func:`parse_compression`); the token table is always gzip-compressed.
    """
    level = parse_compression(compression)
    sites = list(dict.fromkeys(sites))
    unknown = [s for s in sites if s not in SITES]
    if unknown:
        raise UsageError(f"unknown site(s) {', '.join(unknown)}; choose from {', '.join(SITES)}")
    if dtype not in DTYPES:
        raise UsageError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    n_layers, n_heads, d_head = (int(arch[k]) for k in ("n_layers", "n_heads", "d_head"))
    if chunk_rows is None:
        chunk_rows = chunk_rows_for(n_layers, n_heads, d_head, sites)
    rows = max(1, min(int(chunk_rows), max(n_tokens, 1)))
    file = _open_h5(Path(path), "w")
    root = {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "description": DESCRIPTION,
        "n_tokens": int(n_tokens), "n_layers": n_layers, "n_heads": n_heads, "d_head": d_head,
        "architecture": dict(arch), "sites": sites, "dtype": dtype, "chunk_rows": rows,
        "tags": tags or {"fine": [], "coarse": []}, "rows_written": 0, "complete": 0,
        "compression": describe_compression(level),
    }
    encode_attrs(file.attrs, {**root, **(attrs or {})})
    # gzip (+ byte shuffle) is readable by every HDF5 tool without plugins; the "fast"
    # Huffman-only streams are ordinary deflate streams, and rows HDF5 itself compresses
    # (blocks not aligned to chunks) use gzip level 1.
    filters = ({"compression": "gzip", "compression_opts": max(level, 1), "shuffle": True}
               if n_tokens and level != 0 else {})
    shapes = {"vector": (n_layers, n_heads, d_head), "scalar": (n_layers, n_heads),
              "index": (n_layers, n_heads)}
    for site in sites:
        name, kind, what = SITES[site]
        inner = shapes[kind]
        chunks = (rows, 1, 1, d_head) if kind == "vector" else (rows, 1, n_heads)
        ds = file.create_dataset(
            name, shape=(n_tokens, *inner), chunks=chunks if n_tokens else None,
            dtype="int32" if kind == "index" else dtype, **filters)
        ds.attrs["site"] = site
        ds.attrs["dims"] = ("token, layer, head, d_head" if kind == "vector"
                            else "token, layer, head")
        ds.attrs["description"] = what
    group = file.create_group("tokens")
    group.attrs["description"] = "token table: one row per stored token, same row order"
    for col, col_dtype in TOKEN_COLUMNS.items():
        ds = group.create_dataset(col, shape=(n_tokens,), dtype=col_dtype,
                                  chunks=(min(65536, n_tokens),) if n_tokens else None,
                                  compression="gzip" if n_tokens else None)
        ds.attrs["dims"] = "token"
        ds.attrs["description"] = TOKEN_DESCRIPTIONS[col]
    file.flush()
    return StoreWriter(file)


def reopen_store(path: str | Path) -> StoreWriter:
    """Open an unfinished store for appending (``--resume``)."""
    path = Path(path)
    try:
        file = _open_h5(path, "r+")
    except OSError as exc:
        raise UsageError(f"cannot resume from {path}: not a readable HDF5 file") from exc
    if file.attrs.get("schema") != SCHEMA or file.attrs.get("schema_version") != SCHEMA_VERSION:
        file.close()
        raise UsageError(f"cannot resume from {path}: not a headprobe store of schema "
                         f"version {SCHEMA_VERSION}")
    return StoreWriter(file)


def write_store(path: str | Path, token_table: dict[str, np.ndarray],
                arrays: dict[str, np.ndarray], attrs: dict[str, Any] | None = None,
                tags: dict[str, list[str]] | None = None, dtype: str = "float16",
                chunk_rows: int | None = None) -> Path:
    """Write a whole store in one call (small stores, tests).

    token_table: column -> [n_tokens] (missing columns are filled: -1 for char spans, 0 else);
    arrays: site -> [n_tokens, n_layers, n_heads(, d_head)].
    """
    n = len(next(iter(token_table.values())))
    table = {k: np.asarray(token_table[k]) if k in token_table
             else np.full(n, -1 if k.startswith("char_") else 0) for k in TOKEN_COLUMNS}
    some = next(iter(arrays.values()))
    vec = next((a for s, a in arrays.items() if SITES[s][1] == "vector"), None)
    arch = {"n_layers": some.shape[1], "n_heads": some.shape[2],
            "d_head": vec.shape[3] if vec is not None else 1}
    arch.update({k: v for k, v in (attrs or {}).get("architecture", {}).items()
                 if k not in arch})
    writer = create_store(path, n, arch, list(arrays), dtype, attrs, tags, chunk_rows)
    writer.write_tokens(table)
    writer.write_block(0, arrays)
    writer.finish()
    return Path(path)


def _as_index(index: Any, n: int) -> np.ndarray | None:
    if index is None:
        return None
    idx = np.asarray(index)
    if idx.dtype == bool:
        if idx.shape != (n,):
            raise ValueError(f"boolean index must have shape ({n},), got {idx.shape}")
        return np.flatnonzero(idx)
    idx = idx.astype(np.int64).ravel()
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise IndexError(f"row index out of range [0, {n})")
    return idx


class Store:
    """A store opened for reading. Use as a context manager; arrays come back as numpy.

    Attributes: n_tokens, n_layers, n_heads, d_head, sites (stored sites), attrs (root
    attributes, JSON decoded), tags ({"fine": [...], "coarse": [...]}), path.
    """

    def __init__(self, file: h5py.File):
        self.file = file
        self.path = Path(file.filename)
        self.attrs = decode_attrs(file.attrs)
        self.n_tokens = int(self.attrs["n_tokens"])
        self.n_layers = int(self.attrs["n_layers"])
        self.n_heads = int(self.attrs["n_heads"])
        self.d_head = int(self.attrs["d_head"])
        self.sites: list[str] = list(self.attrs["sites"])
        self.tags: dict[str, list[str]] = self.attrs["tags"]
        self._columns: dict[str, np.ndarray] = {}

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.file.id.valid:
            self.file.close()

    def __repr__(self) -> str:
        return (f"Store({str(self.path)!r}, n_tokens={self.n_tokens}, n_layers={self.n_layers}, "
                f"n_heads={self.n_heads}, d_head={self.d_head}, sites={self.sites})")

    def _column(self, name: str) -> np.ndarray:
        if name not in TOKEN_COLUMNS:
            raise KeyError(f"unknown token column {name!r}; have {', '.join(TOKEN_COLUMNS)}")
        if name not in self._columns:
            self._columns[name] = self.file["tokens"][name][()]
        return self._columns[name]

    def tokens(self, columns: Sequence[str] | None = None,
               index: Any = None) -> dict[str, np.ndarray]:
        """Token-table columns, each [n_sel] (all rows, or rows ``index``)."""
        idx = _as_index(index, self.n_tokens)
        out = {}
        for name in columns or TOKEN_COLUMNS:
            col = self._column(name)
            out[name] = col if idx is None else col[idx]
        return out

    def _dataset(self, site: str) -> h5py.Dataset:
        if site not in self.sites:
            raise KeyError(f"site {site!r} is not in this store (has {', '.join(self.sites)})")
        return self.file[SITES[site][0]]

    def _check(self, layer: int, head: int | None = None) -> None:
        if not 0 <= layer < self.n_layers:
            raise IndexError(f"layer {layer} out of range [0, {self.n_layers})")
        if head is not None and not 0 <= head < self.n_heads:
            raise IndexError(f"head {head} out of range [0, {self.n_heads})")

    def _read_rows(self, ds: h5py.Dataset, key: tuple, idx: np.ndarray | None) -> np.ndarray:
        """Read ds[rows, *key]; for an index read only the span it covers."""
        if idx is None:
            data = ds[(slice(None), *key)]
        elif idx.size == 0:
            data = ds[(slice(0, 0), *key)]
        else:
            lo, hi = int(idx.min()), int(idx.max()) + 1
            data = ds[(slice(lo, hi), *key)][idx - lo]
        return data if SITES[ds.attrs["site"]][1] == "index" else data.astype(np.float32)

    def read(self, site: str, layer: int, head: int, index: Any = None) -> np.ndarray:
        """One head's values: [n_sel, d_head] float32 (vector sites) or [n_sel] (scalar sites)."""
        self._check(layer, head)
        return self._read_rows(self._dataset(site), (layer, head),
                               _as_index(index, self.n_tokens))

    def read_layer(self, site: str, layer: int, index: Any = None) -> np.ndarray:
        """All heads of a layer: [n_sel, n_heads, d_head] or [n_sel, n_heads]."""
        self._check(layer)
        return self._read_rows(self._dataset(site), (layer,), _as_index(index, self.n_tokens))

    def select(self, split: str | int | None = None, fine: Any = None, coarse: Any = None,
               quoted: bool | None = None) -> np.ndarray:
        """Sorted row indices [n_sel] matching every given filter.

        split: 'train'/'test'/'all' or 0/1; fine/coarse: tag name(s) or id(s); quoted: bool.
        """
        keep = np.ones(self.n_tokens, dtype=bool)
        if split is not None and split != "all":
            if isinstance(split, str):
                if split not in SPLITS:
                    raise ValueError(f"unknown split {split!r}; choose from {SPLITS}")
                split = SPLITS.index(split)
            keep &= self._column("split") == int(split)
        for kind, wanted in (("fine", fine), ("coarse", coarse)):
            if wanted is not None:
                keep &= np.isin(self._column(f"{kind}_tag"), self._tag_ids(kind, wanted))
        if quoted is not None:
            keep &= self._column("quoted") == bool(quoted)
        return np.flatnonzero(keep)

    def _tag_ids(self, kind: str, wanted: Any) -> list[int]:
        names = self.tags[kind]
        ids = []
        for tag in [wanted] if isinstance(wanted, (str, int, np.integer)) else wanted:
            if isinstance(tag, str):
                if tag not in names:
                    raise ValueError(f"unknown {kind} tag {tag!r}")
                ids.append(names.index(tag))
            else:
                ids.append(int(tag))
        return ids


def open_store(path: str | Path, allow_partial: bool = False) -> Store:
    """Open a store for reading; UsageError if it is not a complete store of this schema."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"activation store {path} does not exist")
    try:
        file = h5py.File(path, "r")
    except OSError as exc:
        raise UsageError(f"{path} is not an HDF5 file") from exc
    schema, version = file.attrs.get("schema"), file.attrs.get("schema_version")
    if schema != SCHEMA:
        file.close()
        raise UsageError(f"{path} is not a headprobe activation store")
    if version != SCHEMA_VERSION:
        file.close()
        raise UsageError(f"{path} has store schema version {version}; this headprobe reads "
                         f"version {SCHEMA_VERSION}")
    if not allow_partial and not int(file.attrs.get("complete", 0)):
        file.close()
        raise UsageError(f"{path} is an unfinished store (resume it with --resume)")
    return Store(file)

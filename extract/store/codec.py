"""How per-head datasets are compressed: the settings, and chunks the writer encodes itself.

Every per-head dataset carries HDF5's byte-shuffle and gzip (deflate) filters, which every
HDF5 reader decodes without plugins. Blocks of rows that cover whole chunks are not handed
to HDF5's filters: they are shuffled and deflated here and written with
``write_direct_chunk``. At the default level ("fast") the deflate streams store the
near-random low-order byte planes as they are and code the high-order ones with ISA-L's
fastest deflate (``isal``, level 1), which is faster than zlib's Huffman-only coding and
compresses those planes as well (both are plain deflate, which any zlib decodes; ``python
-m extract bench`` prints the rates and sizes).

Levels: -1 "fast", 0 none (no filters), 1-9 gzip. The level is kept in the root attribute
``compression_level``; ``compression`` says the same in words.
"""

from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import h5py
import numpy as np
from isal import isal_zlib

from headprobe.devices import usable_cores
from headprobe.errors import UsageError, opt

FAST = -1
FAST_ISAL_LEVEL = 1     # ISA-L's levels run 0-3; 0 codes with a fixed table, which inflates
COMPRESSIONS = ("fast", "none", *(str(level) for level in range(10)))
DEFAULT_COMPRESSION = "fast"
LEVEL_ATTR = "compression_level"
DESCRIPTION_ATTR = "compression"
# Rows HDF5 compresses itself (blocks not aligned to chunks) use this gzip level at "fast".
FILTER_LEVEL_FAST = 1
TOKEN_TABLE_FILTER = "gzip"
SHUFFLE_TILE_BYTES = 64 * 2**10   # rows moved to chunk order at a time: fits a core's L2


def parse_compression(spec: str | int) -> int:
    """Compression setting -> level: "fast" -> -1, "none" -> 0, a gzip level "0".."9" -> itself."""
    text = str(spec).strip().lower()
    if text == "fast":
        return FAST
    if text in ("none", "0"):
        return 0
    if text in COMPRESSIONS:
        return int(text)
    raise UsageError(f"unknown {opt('compression')} {spec!r}; choose fast, none or a gzip "
                     "level 1-9")


def describe_compression(level: int) -> str:
    """The root attribute ``compression``: the level in words."""
    if level < 0:
        return ("gzip filter (deflate: high byte planes ISA-L level 1, low byte planes "
                "stored), shuffle")
    return f"gzip level {level}, shuffle" if level > 0 else "none"


def compression_attrs(level: int) -> dict[str, Any]:
    """Root attributes recording ``level``: as a number and in words."""
    return {DESCRIPTION_ATTR: describe_compression(level), LEVEL_ATTR: int(level)}


def stored_level(attrs: Mapping[str, Any]) -> int:
    """The level of a store from its root attributes.

    Stores written before ``compression_level`` existed only have the words of
    :func:`describe_compression`; the level is read back from them.
    """
    if LEVEL_ATTR in attrs:
        return int(attrs[LEVEL_ATTR])
    words = str(attrs.get(DESCRIPTION_ATTR, "none"))
    if "huffman" in words.lower() or "isa-l" in words.lower():
        return FAST
    if words.startswith("gzip level"):
        return int(words.split()[2].rstrip(","))
    return 0


def dataset_filters(level: int) -> dict[str, Any]:
    """``create_dataset`` keyword arguments of a per-head dataset at ``level``."""
    if level == 0:
        return {}
    return {"compression": "gzip", "compression_opts": max(level, FILTER_LEVEL_FAST),
            "shuffle": True}


def deflate(data: Any, level: int, raw_prefix: int = 0) -> bytes:
    """zlib-format deflate stream of ``data`` (what HDF5's gzip filter decodes).

    level -1 ("fast"): the first ``raw_prefix`` bytes in stored (uncompressed) deflate
    blocks, used for the low-order byte planes of shuffled floats, which are close to
    random; the rest deflated by ISA-L at :data:`FAST_ISAL_LEVEL`. Both zlib and ISA-L
    release the GIL while they run.
    """
    if level >= 0:
        return zlib.compress(data, level)
    view = memoryview(data).cast("B")
    parts = [b"\x78\x01"]                       # zlib header: deflate, 32 KiB window
    for at in range(0, raw_prefix, 65535):       # stored blocks: 0x00, LEN, ~LEN, bytes
        size = min(65535, raw_prefix - at)
        parts += [b"\x00" + size.to_bytes(2, "little") + (size ^ 0xFFFF).to_bytes(2, "little"),
                  view[at:at + size]]
    parts += [isal_zlib.compress(view[raw_prefix:], FAST_ISAL_LEVEL, wbits=-15),  # raw deflate
              isal_zlib.adler32(view).to_bytes(4, "big")]
    return b"".join(parts)


def shuffled_chunks(block: np.ndarray) -> np.ndarray:
    """Byte-shuffled chunks of a block, one per (layer, head) or per layer, in one copy.

    block: [rows, n_layers, n_heads, d_head] -> uint8 [n_layers, n_heads, chunk bytes] for
    chunks (rows, 1, 1, d_head); [rows, n_layers, n_heads] -> [n_layers, chunk bytes] for
    chunks (rows, 1, n_heads). Each row is what HDF5's shuffle filter makes of the chunk:
    byte k of every element (in row-major element order), for k = 0 .. itemsize - 1.
    """
    if block.dtype.itemsize == 2 and block.strides[-1] == 2:
        return _shuffled_pairs(block)
    raw = np.ascontiguousarray(block)
    size = raw.dtype.itemsize
    u8 = raw.view(np.uint8).reshape(*raw.shape, size)
    if raw.ndim == 4:      # [rows, L, H, D, byte] -> [L, H, byte, rows, D]
        out = np.ascontiguousarray(u8.transpose(1, 2, 4, 0, 3))
        return out.reshape(raw.shape[1], raw.shape[2], -1)
    out = np.ascontiguousarray(u8.transpose(1, 3, 0, 2))  # [rows, L, H, byte] -> [L, byte, rows, H]
    return out.reshape(raw.shape[1], -1)


def _shuffled_pairs(block: np.ndarray, tile_bytes: int = SHUFFLE_TILE_BYTES) -> np.ndarray:
    """:func:`shuffled_chunks` of a block of 2-byte values whose last axis is contiguous.

    A chunk's run of ``unit`` values (d_head, or n_heads for [rows, L, H] blocks) moves as
    whole machine words, a tile of rows at a time, so that the transpose to chunk order
    stays in cache; the low bytes (``x & 0xff``) and high bytes (``x >> 8``) are then split
    from contiguous words. Several times faster than moving single bytes.
    """
    rows, unit = block.shape[0], block.shape[-1]
    chunks = int(np.prod(block.shape[1:-1]))               # L * H, or L
    word = np.dtype(f"<u{math.gcd(2 * unit, 8)}")
    per_row = 2 * unit // word.itemsize                    # words in one run of values
    words = block.view(word).reshape(rows, chunks, per_row)
    out = np.empty((chunks, 2, rows * unit), dtype=np.uint8)
    tile = max(1, tile_bytes // max(1, chunks * 2 * unit))
    buffer = np.empty((chunks, tile, per_row), dtype=word)
    for first in range(0, rows, tile):
        last = min(rows, first + tile)
        part = buffer[:, :last - first]
        np.copyto(part, words[first:last].transpose(1, 0, 2))
        pairs = part.view("<u2").reshape(chunks, -1)
        np.bitwise_and(pairs, 0xFF, out=out[:, 0, first * unit:last * unit], casting="unsafe")
        np.right_shift(pairs, 8, out=out[:, 1, first * unit:last * unit], casting="unsafe")
    return out.reshape(*block.shape[1:-1], -1)


def _chunk_payloads(data: np.ndarray, level: int) -> np.ndarray:
    """Chunk contents of ``data`` [chunk_rows, n_layers, ...]: [n_layers(, n_heads), bytes]."""
    if level == 0:
        return np.ascontiguousarray(np.moveaxis(data, 0, 2 if data.ndim == 4 else 1))
    return shuffled_chunks(data)


def write_whole_chunks(ds: h5py.Dataset, start: int, data: np.ndarray, level: int,
                       chunk_rows: int) -> None:
    """Write rows [start, start + rows) of ``ds`` as whole chunks, encoded here.

    data: at most ``chunk_rows`` rows from the chunk-aligned ``start``, [rows, n_layers,
    n_heads(, d_head)], in the dataset's dtype. A short (edge) chunk is padded with zeros:
    HDF5 stores edge chunks at full size.
    """
    level = level if ds.compression == "gzip" else 0
    per_head = data.ndim == 4
    rows = len(data)
    if rows < chunk_rows:
        pad = np.zeros((chunk_rows - rows, *data.shape[1:]), dtype=data.dtype)
        data = np.concatenate([data, pad])
    # the low half of the byte planes of floats holds mantissa bits: stored as they are,
    # except the zero padding of an edge chunk, which is left to the deflate coder
    chunk_row = data[0, 0, 0] if per_head else data[0, 0]      # one row of one chunk
    raw = rows * chunk_row.nbytes // 2 if data.dtype.kind == "f" else 0

    def encode(layer: int) -> list[Any]:
        chunks = _chunk_payloads(data[:, layer:layer + 1], level)[0]   # [heads, bytes] / [bytes]
        chunks = list(chunks) if per_head else [chunks]
        return chunks if level == 0 else [deflate(c, level, raw) for c in chunks]

    for layer, payloads in enumerate(_encoders().map(encode, range(data.shape[1]))):
        for head, payload in enumerate(payloads):
            ds.id.write_direct_chunk((start, layer, head, 0) if per_head
                                     else (start, layer, 0), payload)


@functools.cache
def _encoders() -> ThreadPoolExecutor:
    """Threads that shuffle and deflate the layers of a block side by side (numpy, zlib and
    ISA-L release the GIL), one per usable core, so that a block the model waits for takes
    a fraction of the time; HDF5 then writes the chunks one after the other."""
    return ThreadPoolExecutor(max_workers=usable_cores(), thread_name_prefix="headprobe-deflate")

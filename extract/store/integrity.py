"""Proof that a store holds what it claims: a fingerprint of its token table and a checksum
of every block of rows, so that resuming an unfinished store continues the same work on
intact rows.

* ``token_table_sha256`` (root attribute): sha256 of the token table (:func:`token_table_hash`);
  the table is the dataset's content (every token id, tag and split), so another dataset
  of the same size gives another fingerprint.
* ``/integrity/block_crc32`` [n_blocks, n_sites] uint32: CRC-32 of each block of
  ``chunk_rows`` rows of each site, as stored, recorded when the block is written.

:func:`check_written_rows` re-reads the rows an unfinished store says are complete and
compares them with both.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Mapping

import h5py
import numpy as np

from extract.store.schema import SITES, TOKEN_TABLE, token_path
from extract.store.writer import label_axes
from headprobe.layout import Dimensions

TOKENS_HASH = "token_table_sha256"
CHECKSUMS = "integrity/block_crc32"
CHECKSUMS_DESCRIPTION = ("CRC-32 of the stored bytes of each block of chunk_rows rows "
                         "[block, site] (sites in the order of root attribute 'sites'), "
                         "recorded as the block is written")


def token_table_hash(table: Mapping[str, np.ndarray]) -> str:
    """sha256 over the token-table columns (each [rows], in TOKEN_TABLE order and dtypes)."""
    digest = hashlib.sha256()
    for name, column in TOKEN_TABLE.items():
        values = np.ascontiguousarray(np.asarray(table[name], dtype=column.dtype))
        digest.update(f"{name}:{values.dtype.str}:{len(values)}:".encode())
        digest.update(memoryview(values).cast("B"))
    return digest.hexdigest()


def stored_token_hash(file: h5py.File) -> str:
    """:func:`token_table_hash` of the token table stored in ``file``."""
    return token_table_hash({name: file[token_path(name)][()] for name in TOKEN_TABLE})


def create_checksums(file: h5py.File, n_tokens: int, chunk_rows: int, n_sites: int) -> None:
    """Lay out ``/integrity/block_crc32`` for a store of ``n_tokens`` rows."""
    n_blocks = -(-n_tokens // chunk_rows)
    ds = file.create_dataset(CHECKSUMS, shape=(n_blocks, n_sites), dtype=np.uint32)
    # a store with coordinates gets a 'block' coordinate too (stores of the previous
    # layout, written for comparison, have none)
    label_axes(ds, ("block", "site"), CHECKSUMS_DESCRIPTION,
               Dimensions(file) if "site" in file else None)


def _crc(values: np.ndarray) -> int:
    return zlib.crc32(memoryview(np.ascontiguousarray(values)).cast("B"))


def record_block(file: h5py.File, start: int, block: Mapping[str, np.ndarray],
                 sites: list[str], chunk_rows: int) -> None:
    """Record the checksums of rows [start, start + rows) of every site, written as
    ``block`` (site -> [rows, ...] in the stored dtype); ``start`` is chunk-aligned and the
    block covers whole chunks (or runs to the end of the store)."""
    if CHECKSUMS not in file:
        return
    rows = len(next(iter(block.values())))
    table = file[CHECKSUMS]
    for at in range(0, rows, chunk_rows):
        table[(start + at) // chunk_rows] = [_crc(block[s][at:at + chunk_rows]) for s in sites]


def _damage(file: h5py.File, sites: list[str], rows_written: int, chunk_rows: int) -> str:
    """Where rows [0, rows_written) differ from their checksums ('' when they do not)."""
    table = file[CHECKSUMS][()]
    for index, start in enumerate(range(0, rows_written, chunk_rows)):
        stop = min(start + chunk_rows, rows_written)
        for column, site in enumerate(sites):
            try:
                values = file[SITES[site].dataset][start:stop]
            except (OSError, RuntimeError) as exc:
                return f"rows {start}-{stop - 1} of site {site} cannot be read ({exc})"
            if _crc(values) != int(table[index, column]):
                return f"rows {start}-{stop - 1} of site {site} do not match their checksum"
    return ""


def check_written_rows(file: h5py.File, sites: list[str], rows_written: int,
                       chunk_rows: int, expected_tokens_hash: str) -> str:
    """Why the complete rows of an unfinished store cannot be continued ('' when they can).

    Checks that the stored token table is intact and is the one ``expected_tokens_hash``
    names, and that every block of rows [0, rows_written) matches its checksum.
    """
    recorded = file.attrs.get(TOKENS_HASH)
    if recorded is None or CHECKSUMS not in file:
        return "it records no checksums (it was started by an older headprobe)"
    if recorded != expected_tokens_hash:
        return "it was started on other dataset content (the token tables differ)"
    try:
        if stored_token_hash(file) != recorded:
            return "its token table does not match its fingerprint"
    except (OSError, RuntimeError, KeyError) as exc:
        return f"its token table cannot be read ({exc})"
    return _damage(file, sites, rows_written, chunk_rows)

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
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import h5py
import numpy as np

from extract.store.json_attrs import decode_attrs
from extract.store.schema import SITES, TOKEN_GROUP, TOKEN_TABLE, token_path
from extract.store.writer import label_axes
from headprobe.checksums import crc32_of
from headprobe.failures import DamagedFile, first_line
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
        table[(start + at) // chunk_rows] = [crc32_of(block[s][at:at + chunk_rows]) for s in sites]


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
            if crc32_of(values) != int(table[index, column]):
                return f"rows {start}-{stop - 1} of site {site} do not match their checksum"
    return ""


def resumable_rows(path: str | Path) -> int:
    """Rows an unfinished store at ``path`` holds that a resume could keep: its progress
    when it records checksums and a token fingerprint, else 0 (also when it cannot be
    opened: a store killed while it was being created)."""
    try:
        with h5py.File(path, "r") as file:
            if file.attrs.get(TOKENS_HASH) is None or CHECKSUMS not in file:
                return 0
            return int(file.attrs.get("rows_written", 0))
    except (OSError, RuntimeError, KeyError, ValueError):
        return 0


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


def read_block(file: h5py.File, name: str, start: int, stop: int,
               recorded: int | None, held_by: str = "") -> np.ndarray:
    """Rows [start, stop) of array ``name`` as stored, checked against their checksum
    ``recorded`` (None: nothing recorded) and for values no site can hold (NaN or
    infinite floats); DamagedFile naming the file, the array and the rows (and
    ``held_by``: the shard files that hold them, for a merged store)."""
    ds = file[name]
    where = f"{file.filename}: rows {start}-{stop - 1} of array {ds.name.lstrip('/')}"
    where += f" (held by {held_by})" if held_by else ""
    try:
        values = ds[start:stop]
    except (OSError, RuntimeError, ValueError) as exc:
        raise DamagedFile(f"{where} cannot be decoded ({first_line(exc)}); the file is "
                          "damaged, extract it again") from exc
    if recorded is not None and crc32_of(values) != recorded:
        raise DamagedFile(f"{where} do not match their checksum; the file is damaged, "
                          "extract it again")
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise DamagedFile(f"{where} hold NaN or infinite values; the file is damaged, "
                          "extract it again")
    return values


def verified_blocks(path: str | Path, site: str) -> Iterator[np.ndarray]:
    """The rows of ``site`` of the complete store at ``path``, block after block of its
    ``chunk_rows`` rows, each checked as :func:`read_block` does."""
    with h5py.File(path, "r") as file:
        attrs = decode_attrs(file.attrs)
        n_tokens, chunk_rows = int(attrs["n_tokens"]), int(attrs["chunk_rows"])
        table = file[CHECKSUMS][()] if CHECKSUMS in file else None
        column = list(attrs["sites"]).index(site)
        for index, start in enumerate(range(0, n_tokens, chunk_rows)):
            recorded = None if table is None else int(table[index, column])
            yield read_block(file, SITES[site].dataset, start,
                             min(start + chunk_rows, n_tokens), recorded)


# (path, device, inode, mtime, size) of a store -> site (and "tokens") -> [n_blocks] bool:
# the blocks this process has verified
_VERDICTS: dict[tuple, dict[str, np.ndarray]] = {}


def _identity(path: str) -> tuple:
    """The store at ``path`` as it is on disk now: a rewritten file is another one."""
    st = os.stat(path)
    return (os.path.realpath(path), st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


class BlockCheck:
    """Verifies what a reader reads: each block of ``chunk_rows`` rows of each site once,
    when first read, against its checksum (stores that record them) and for values that no
    site can hold (NaN or infinite floats); the token table once against its fingerprint.

    A block that fails raises DamagedFile naming the file, the array and the rows.
    """

    def __init__(self, file: h5py.File, sites: list[str], n_tokens: int, chunk_rows: int):
        self.file, self.sites, self.chunk_rows = file, sites, max(int(chunk_rows), 1)
        self.table = file[CHECKSUMS][()] if CHECKSUMS in file else None
        n_blocks = -(-n_tokens // self.chunk_rows)
        # a merged store: (shard path, rows) of each shard, in order
        merged = decode_attrs(file.attrs) if "merged_from" in file.attrs else {}
        folder = Path(file.filename).parent
        self.shards = [(str(folder / p), int(n)) for p, n in
                       zip(merged.get("merged_from", []), merged.get("merged_rows", []),
                           strict=False)]
        # verdicts are kept for the life of the process, per file as it is on disk (and
        # the shards a merged store reads): a command that opens the store once per
        # (site, layer) verifies each block once
        identity = tuple(_identity(p) for p in [file.filename, *(p for p, _ in self.shards)])
        self.done = _VERDICTS.setdefault(identity, {
            **{site: np.zeros(n_blocks, dtype=bool) for site in sites},
            TOKEN_GROUP: np.zeros(1, dtype=bool)})
        self.n_tokens = n_tokens
        # an unfinished store (read with allow_partial) has checksums of its complete rows
        self.written = int(file.attrs.get("rows_written", n_tokens))

    def rows(self, site: str, lo: int, hi: int) -> None:
        """Verify every block of ``site`` that rows [lo, hi) touch and that is not yet
        verified."""
        done = self.done[site]
        for block in range(lo // self.chunk_rows, -(-hi // self.chunk_rows)):
            if not done[block]:
                self._block(site, block)
                done[block] = True

    def _block(self, site: str, block: int) -> None:
        start = block * self.chunk_rows
        stop = min(start + self.chunk_rows, self.n_tokens)
        recorded = (int(self.table[block, self.sites.index(site)])
                    if self.table is not None and stop <= self.written else None)
        read_block(self.file, SITES[site].dataset, start, stop, recorded,
                   self._held_by(start, stop))

    def _held_by(self, start: int, stop: int) -> str:
        """The shard files of a merged store that hold rows [start, stop) ('' for a store
        that is no merge)."""
        if not self.shards:
            return ""
        ends = np.cumsum([rows for _, rows in self.shards])
        first, last = np.searchsorted(ends, [start, stop - 1], side="right")
        return ", ".join(path for path, _ in self.shards[first:last + 1])

    def tokens(self) -> None:
        """Compare the token table with the fingerprint recorded at creation (stores that
        record one; merges written before merges carried block checksums record their
        shards' only)."""
        if self.done[TOKEN_GROUP][0]:
            return
        recorded = self.file.attrs.get(TOKENS_HASH)
        old_merge = "merged_token_sha256" in self.file.attrs and self.table is None
        if (recorded is not None and not old_merge
                and all(token_path(name) in self.file for name in TOKEN_TABLE)
                and stored_token_hash(self.file) != recorded):
            raise DamagedFile(f"{self.file.filename}: the token table (group tokens) does not "
                              "match its fingerprint; the file is damaged, extract it again")
        self.done[TOKEN_GROUP][0] = True

"""Rows of a store gathered into the blocks the writer takes, copied once.

The forward passes return the rows of a group's stories batch by batch, in length order;
the writer takes blocks of ``chunk_rows`` consecutive store rows. :class:`BlockAssembler`
copies each story's rows straight into the block (or blocks) they belong to, in the
storage dtype, and hands a block on once every row before a given row is in place.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

from extract.store.schema import SITES


class BlockAssembler:
    """Blocks of rows [first_row, n_rows) of a store, filled in any order within a group.

    first_row: a multiple of ``chunk_rows`` (where writing starts); dtype: the storage
    dtype of float sites. Rows outside [first_row, n_rows) are dropped.
    """

    def __init__(self, first_row: int, chunk_rows: int, n_rows: int, dtype: str):
        if first_row % chunk_rows:
            raise ValueError(f"first row {first_row} is not a multiple of {chunk_rows}")
        self.chunk_rows, self.n_rows, self.dtype = chunk_rows, n_rows, dtype
        self.next_start = first_row
        self._open: dict[int, dict[str, np.ndarray]] = {}

    def put(self, row: int, values: Mapping[str, np.ndarray]) -> None:
        """Place ``values`` (site -> [n, ...], the rows ``row .. row + n - 1``)."""
        n = len(next(iter(values.values())))
        at, stop = max(row, self.next_start), min(row + n, self.n_rows)
        while at < stop:
            start = at - at % self.chunk_rows
            end = min(stop, start + self.chunk_rows)
            block = self._open.setdefault(start, {})
            for site, rows in values.items():
                if site not in block:
                    size = min(self.chunk_rows, self.n_rows - start)
                    block[site] = np.empty((size, *rows.shape[1:]),
                                           dtype=SITES[site].dtype(self.dtype))
                block[site][at - start:end - start] = rows[at - row:end - row]
            at = end

    def complete(self, row: int) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """(start, site -> [rows, ...]) of each block that ends at or before ``row``, in
        order, once: call it when every row before ``row`` has been placed."""
        while self.next_start < min(row, self.n_rows):
            end = min(self.next_start + self.chunk_rows, self.n_rows)
            if end > row:
                return
            yield self.next_start, self._open.pop(self.next_start)
            self.next_start = end

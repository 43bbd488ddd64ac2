"""Vectors of a (site, layer) block read in row chunks, so that probing needs memory bounded
by the chunk size, not by the store's size.

A block's probed rows (train and test tokens) are read from the store once, a window of
store rows at a time, and spooled as raw float32 into a scratch file, one cell (head)
after another; every pass of a solver then reads them back a chunk at a time, only for
the cells it needs (plain file reads: the store's decompression is paid once).
:class:`Vectors` names some of those rows and hands them out as chunks
``[cells, rows, d_head]``; it also wraps an array held in memory, so the solvers have one
code path for both. Chunks of sorted positions never span more than ``chunk_rows``
consecutive rows of what backs them, so a chunk's read is bounded too.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from extract.store import Store

DEFAULT_CHUNK_ROWS = 8192


class _ArrayRows:
    """Rows of an array in memory: X [cells, n, d]."""

    def __init__(self, X: np.ndarray):
        self.X = np.asarray(X, dtype=np.float32)
        self.cells, self.n, self.d = self.X.shape

    def read(self, positions: np.ndarray, cells: np.ndarray) -> np.ndarray:
        """[len(cells), len(positions), d] of rows ``positions`` of ``cells``."""
        return self.X[cells][:, positions]


class _SpoolRows:
    """Rows spooled to a raw float32 file, cell after cell: [cells, n, d]."""

    def __init__(self, path: Path, n: int, cells: int, d: int):
        self.path, self.n, self.cells, self.d = path, n, cells, d

    def read(self, positions: np.ndarray, cells: np.ndarray) -> np.ndarray:
        """[len(cells), len(positions), d] of sorted rows ``positions`` of ``cells`` (one
        span read per cell)."""
        out = np.empty((len(cells), len(positions), self.d), np.float32)
        if len(positions) == 0:
            return out
        lo, hi = int(positions[0]), int(positions[-1]) + 1
        with open(self.path, "rb") as f:
            for i, cell in enumerate(cells):
                f.seek((int(cell) * self.n + lo) * self.d * 4)
                span = np.fromfile(f, np.float32, count=(hi - lo) * self.d)
                out[i] = span.reshape(hi - lo, self.d)[positions - lo]
        return out


class Vectors:
    """Some rows of a block's vectors, handed out in chunks.

    cells: probes fitted side by side (heads); n: rows; d: vector size. ``positions``
    [n] index the rows of what backs them (an array in memory or a spool file), ``picked``
    its cells; a spool's positions are sorted.
    """

    def __init__(self, rows: Any, positions: np.ndarray | None = None,
                 chunk_rows: int = DEFAULT_CHUNK_ROWS, picked: np.ndarray | None = None):
        self._rows = rows
        self.positions = (np.arange(rows.n) if positions is None
                          else np.asarray(positions, dtype=np.int64))
        self.picked = np.arange(rows.cells) if picked is None else np.asarray(picked)
        self.chunk_rows = max(1, int(chunk_rows))
        self.cells, self.d, self.n = len(self.picked), rows.d, len(self.positions)
        self.shape = (self.cells, self.n, self.d)

    def subset(self, index: np.ndarray) -> Vectors:
        """The rows ``index`` [m] (positions into these rows, kept in their order)."""
        return Vectors(self._rows, self.positions[np.asarray(index, dtype=np.int64)],
                       self.chunk_rows, self.picked)

    def cell(self, k: int) -> Vectors:
        """The rows of cell ``k`` alone (one cell)."""
        return Vectors(self._rows, self.positions, self.chunk_rows, self.picked[[k]])

    def chunks(self, cells: np.ndarray | None = None) -> Iterator[tuple[slice, np.ndarray]]:
        """(rows of this object [r], vectors [c, r, d] float32) per chunk, in order; c: the
        ``cells`` asked for (default all).

        A chunk holds at most ``chunk_rows`` rows lying within one window of
        ``chunk_rows`` rows of what backs them (a new chunk starts where the window does).
        """
        picked = self.picked if cells is None else self.picked[np.asarray(cells)]
        window = self.positions // self.chunk_rows
        cuts = np.flatnonzero(np.diff(window) != 0) + 1
        edges = np.r_[0, cuts, self.n]
        for lo, hi in zip(edges[:-1], edges[1:], strict=True):
            for start in range(int(lo), int(hi), self.chunk_rows):
                part = slice(start, min(start + self.chunk_rows, int(hi)))
                yield part, self._rows.read(self.positions[part], picked)

    def array(self) -> np.ndarray:
        """All rows in memory: [cells, n, d] float32 (for solvers that need them whole)."""
        out = np.empty(self.shape, np.float32)
        for part, X in self.chunks():
            out[:, part] = X
        return out

    def moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation per cell and dimension, [cells, d] each (float64),
        merged over chunks (Chan et al.)."""
        count, mean = 0, np.zeros((self.cells, self.d))
        m2 = np.zeros((self.cells, self.d))
        for _, X in self.chunks():
            X = X.astype(np.float64)
            k, mu = X.shape[1], X.mean(axis=1)
            delta = mu - mean
            m2 += ((X - mu[:, None]) ** 2).sum(axis=1) + delta ** 2 * count * k / (count + k)
            mean += delta * k / (count + k)
            count += k
        return mean, np.sqrt(m2 / max(count, 1))


def as_vectors(X: np.ndarray | Vectors, chunk_rows: int | None = None) -> Vectors:
    """``X`` as Vectors: an array [cells, n, d] is wrapped (one chunk unless
    ``chunk_rows``)."""
    if isinstance(X, Vectors):
        return X
    rows = _ArrayRows(X)
    return Vectors(rows, chunk_rows=chunk_rows or max(rows.n, 1))


def predict(model: Any, X: np.ndarray | Vectors) -> np.ndarray:
    """``model.predict`` over the chunks of X: [cells, n] (or [cells, n, K] for one-vs-rest
    probes)."""
    if not isinstance(X, Vectors):
        return model.predict(X)
    parts = [model.predict(chunk) for _, chunk in X.chunks()]
    return np.concatenate(parts, axis=1)


def spool_block(store: Store, site: str, layer: int, rows: np.ndarray, directory: str | Path,
                chunk_rows: int = DEFAULT_CHUNK_ROWS, head: int | None = None) -> Vectors:
    """Read store rows ``rows`` (sorted) of one (site, layer) into a scratch file under
    ``directory``, a window of ``chunk_rows`` store rows at a time.

    Returns Vectors of every row (cells: the site's heads, or 1 with ``head``).
    """
    cells = store.heads(site) if head is None else 1
    path = Path(tempfile.mkstemp(prefix=f"{site}-{layer}-", suffix=".f32", dir=directory)[1])
    n, d = len(rows), store.d_head
    window = rows // chunk_rows
    edges = np.r_[0, np.flatnonzero(np.diff(window) != 0) + 1, n]
    with open(path, "r+b") as out:
        out.truncate(cells * n * d * 4)
        for lo, hi in zip(edges[:-1], edges[1:], strict=True):
            index = rows[lo:hi]
            got = (store.read_layer(site, layer, index=index) if head is None
                   else store.read(site, layer, head, index=index)[:, None])
            for cell in range(cells):           # [cells, n, d]: each cell's rows together
                out.seek((cell * n + int(lo)) * d * 4)
                out.write(np.ascontiguousarray(got[:, cell], dtype=np.float32).tobytes())
    return Vectors(_SpoolRows(path, n, cells, d), chunk_rows=chunk_rows)

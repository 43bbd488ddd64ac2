"""Reading a store: :func:`open_store` checks the file, :class:`Store` hands out numpy arrays."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from datasets_build.dataset import SPLITS
from datasets_build.tagsets import tag_bits
from extract.store.json_attrs import decode_attrs
from extract.store.schema import (
    SCHEMA,
    SCHEMA_VERSION,
    SITES,
    TAG_SETS,
    TOKEN_TABLE,
    token_path,
)
from headprobe.errors import UsageError, opt


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
        if name not in TOKEN_TABLE:
            raise KeyError(f"unknown token column {name!r}; have {', '.join(TOKEN_TABLE)}")
        if name not in self._columns:
            path = token_path(name)
            if path in self.file:
                self._columns[name] = self.file[path][()]
            elif name == "parent_id":  # written before windows
                self._columns[name] = self._column("story_id")
            elif name in TAG_SETS:  # written before tag sets: a token's set is its one tag
                self._columns[name] = tag_bits(self._column(TAG_SETS[name]))
            else:
                raise KeyError(f"{self.path} has no token column {name!r}")
        return self._columns[name]

    def tokens(self, columns: Sequence[str] | None = None,
               index: Any = None) -> dict[str, np.ndarray]:
        """Token-table columns, each [n_sel] (all rows, or rows ``index``)."""
        idx = _as_index(index, self.n_tokens)
        out = {}
        for name in columns or TOKEN_TABLE:
            col = self._column(name)
            out[name] = col if idx is None else col[idx]
        return out

    def _dataset(self, site: str) -> h5py.Dataset:
        if site not in self.sites:
            raise KeyError(f"site {site!r} is not in this store (has {', '.join(self.sites)})")
        return self.file[SITES[site].dataset]

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
        return data if SITES[ds.attrs["site"]].kind == "index" else data.astype(np.float32)

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
        raise UsageError(f"{path} is an unfinished store (resume it with {opt('resume', True)})")
    return Store(file)

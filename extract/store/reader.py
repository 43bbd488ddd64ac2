"""Reading a store: :func:`open_store` checks the file, :class:`Store` hands out numpy arrays."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from datasets_build.dataset import SPLITS
from datasets_build.tagsets import tag_bits
from extract.store.integrity import BlockCheck
from extract.store.json_attrs import decode_attrs
from extract.store.schema import (
    KV_HEAD,
    OLD_KV_HEAD,
    READABLE_VERSIONS,
    SCHEMA,
    SITES,
    TAG_SETS,
    TOKEN_TABLE,
    StoreShape,
    store_version,
    token_path,
)
from extract.store.virtual import check_sources
from headprobe.checksums import verification_on
from headprobe.errors import UsageError, opt
from headprobe.failures import reading
from headprobe.heads import kv_heads
from headprobe.rundir import missing_input, model_of_store, run_of

DAMAGED = "the file is damaged; extract it again"
# root attribute: vocab_hash of the tokenizer the store's token ids come from
VOCAB_HASH = "tokenizer_vocab_hash"
# what h5py raises, besides OSError, on a damaged file
H5_DAMAGE = (KeyError, RuntimeError, ValueError)


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

    Attributes: n_tokens, n_layers, n_heads (query heads), n_kv_heads (key/value heads),
    d_head, kv_head ([n_heads]: the key/value head each query head reads), sites (stored
    sites), attrs (root attributes, JSON decoded), tags ({"fine": [...], "coarse": [...]}),
    path, version (the store's format version). Version-1 stores read as stores without
    grouped-query attention. With ``verify`` each block of rows is checked once, when first
    read, against its checksum (:class:`~extract.store.integrity.BlockCheck`).
    """

    def __init__(self, file: h5py.File, verify: bool = True):
        self.file = file
        self.path = Path(file.filename)
        self.attrs = decode_attrs(file.attrs)
        self.shape = StoreShape.of(self.attrs)
        self.n_tokens = int(self.attrs["n_tokens"])
        self.n_layers, self.n_heads = self.shape.n_layers, self.shape.n_heads
        self.n_kv_heads, self.d_head = self.shape.n_kv_heads, self.shape.d_head
        self.version = store_version(file.attrs)[1]
        mapping = KV_HEAD if self.version >= 3 else OLD_KV_HEAD
        self.kv_head = (file[mapping][()].astype(np.int64) if mapping in file
                        else kv_heads(self.n_heads, self.n_kv_heads))
        self.sites: list[str] = list(self.attrs["sites"])
        self.tags: dict[str, list[str]] = self.attrs["tags"]
        self._columns: dict[str, np.ndarray] = {}
        self._verify = (BlockCheck(file, self.sites, self.n_tokens,
                                   int(self.attrs.get("chunk_rows", self.n_tokens)))
                        if verify else None)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.file.id.valid:
            self.file.close()

    def __repr__(self) -> str:
        return (f"Store({str(self.path)!r}, n_tokens={self.n_tokens}, n_layers={self.n_layers}, "
                f"n_heads={self.n_heads}, n_kv_heads={self.n_kv_heads}, d_head={self.d_head}, "
                f"sites={self.sites})")

    def check_vocabulary(self, tokenizer: Any, name: str) -> None:
        """UsageError unless ``tokenizer`` (a tokenizer, or a model's) has the vocabulary the
        store was extracted with, before any of the store's token ids is decoded by it
        (root attribute ``tokenizer_vocab_hash``; stores without one are not checked)."""
        from headprobe.tokenization import vocab_hash

        recorded = self.attrs.get(VOCAB_HASH)
        if recorded and vocab_hash(tokenizer) != recorded:
            theirs = model_of_store(self.attrs)
            raise UsageError(f"{name} has another vocabulary than the one {self.path} was "
                             "extracted with (their tokenizer fingerprints differ); give the "
                             f"store's model{f' ({theirs})' if theirs else ''} or its "
                             "tokenizer")

    def heads(self, site: str) -> int:
        """Length of ``site``'s head axis: n_kv_heads for keys and values, else n_heads."""
        return self.shape.heads(site)

    def _column(self, name: str) -> np.ndarray:
        if name not in TOKEN_TABLE:
            raise KeyError(f"unknown token column {name!r}; have {', '.join(TOKEN_TABLE)}")
        if name not in self._columns:
            path = token_path(name)
            if name == "parent_id" and path not in self.file:  # written before windows
                path = token_path("story_id")
            if name in TAG_SETS and path not in self.file:  # written before tag sets
                self._columns[name] = tag_bits(self._column(TAG_SETS[name]))  # one tag each
            else:
                with reading(self.path, "activation store", DAMAGED, also=H5_DAMAGE):
                    if self._verify is not None and not self._columns:
                        self._verify.tokens()
                    self._columns[name] = self.file[path][()]
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

    def _check(self, site: str, layer: int, head: int | None = None) -> None:
        if not 0 <= layer < self.n_layers:
            raise IndexError(f"layer {layer} out of range [0, {self.n_layers})")
        if head is not None and site in SITES and not 0 <= head < self.heads(site):
            raise IndexError(f"head {head} out of range [0, {self.heads(site)}) of site {site!r}")

    def _read_rows(self, ds: h5py.Dataset, key: tuple, idx: np.ndarray | None) -> np.ndarray:
        """Read ds[rows, *key]; for an index read only the span it covers (verified first)."""
        if self._verify is not None and (idx is None or idx.size):
            lo, hi = (0, self.n_tokens) if idx is None else (int(idx.min()), int(idx.max()) + 1)
            self._verify.rows(str(ds.attrs["site"]), lo, hi)
        with reading(self.path, "activation store", DAMAGED, also=H5_DAMAGE):
            if idx is None:
                data = ds[(slice(None), *key)]
            elif idx.size == 0:
                data = ds[(slice(0, 0), *key)]
            else:
                lo, hi = int(idx.min()), int(idx.max()) + 1
                data = ds[(slice(lo, hi), *key)][idx - lo]
        return data if SITES[ds.attrs["site"]].kind == "index" else data.astype(np.float32)

    def read(self, site: str, layer: int, head: int, index: Any = None) -> np.ndarray:
        """One head's values: [n_sel, d_head] float32 (vector sites) or [n_sel] (scalar sites).

        ``head`` counts the site's heads: key/value heads for keys and values (the key/value
        head of query head h is ``kv_head[h]``), query heads otherwise.
        """
        self._check(site, layer, head)
        return self._read_rows(self._dataset(site), (layer, head),
                               _as_index(index, self.n_tokens))

    def read_layer(self, site: str, layer: int, index: Any = None) -> np.ndarray:
        """All heads of a layer: [n_sel, heads, d_head] or [n_sel, heads] (heads: see heads())."""
        self._check(site, layer)
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


def _check_file(file: h5py.File, path: Path, allow_partial: bool) -> None:
    """UsageError unless ``file`` is a (complete) store of this schema whose shards, for a
    merged store, are all in place."""
    schema, version = store_version(file.attrs)
    if schema != SCHEMA:
        raise UsageError(f"{path} is not a headprobe activation store")
    if version not in READABLE_VERSIONS:
        raise UsageError(f"{path} has store schema version {version}; this headprobe reads "
                         f"versions {', '.join(map(str, READABLE_VERSIONS))}")
    if not allow_partial and not int(file.attrs.get("complete", 0)):
        raise UsageError(f"{path} is an unfinished store (resume it with {opt('resume', True)})")
    check_sources(path, decode_attrs(file.attrs))


def open_store(path: str | Path, allow_partial: bool = False, what: str = "store",
               verify: bool | None = None) -> Store:
    """Open a store for reading; UsageError if it is not a complete store of this schema, or
    cannot be read. what: 'store' or 'control_store', how a missing file is named (with the
    command that makes it); verify: check each block against its checksum when first read
    (default: on unless HEADPROBE_VERIFY=0); a damaged block raises DamagedFile."""
    path = Path(path)
    if not path.is_file():
        raise missing_input(what, path, run_of(path, what))
    try:
        file = h5py.File(path, "r")
    except OSError as exc:
        raise UsageError(f"{path} is not an HDF5 file") from exc
    try:
        with reading(path, "activation store", DAMAGED, also=H5_DAMAGE):
            _check_file(file, path, allow_partial)
            return Store(file, verification_on(verify))
    except BaseException:
        file.close()
        raise

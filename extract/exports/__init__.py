"""Exports of an activation store to the layouts other tools read.

- ``hf`` (:mod:`extract.exports.hf`): a Hugging Face ``datasets`` directory, one row per token;
- ``hl`` (:mod:`extract.exports.hl`): per-sentence HDF5 in the layout of Hewitt and Liang's
  control-tasks / structural-probes code, with a CoNLL-U label file.

Both read the store in blocks of rows (:func:`row_blocks`), so memory does not grow with
the store, and write under a temporary name renamed into place when complete.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datasets_build.dataset import split_code
from extract.store import Store
from extract.store.schema import SITES, check_sites
from headprobe.errors import UsageError, opt
from headprobe.space import require_free_space

FORMATS = ("hf", "hl")
DEFAULT_SITES = ("key", "query")
# bytes of float32 values read from the store at a time
BLOCK_BYTES = 64 << 20


@dataclass(frozen=True)
class Selection:
    """What an export holds: ``sites`` (stored sites), ``layers`` (model layers, sorted) and
    the stories of ``split`` ('train', 'test' or 'all')."""

    sites: tuple[str, ...]
    layers: tuple[int, ...]
    split: str = "all"

    def rows(self, store: Store) -> np.ndarray:
        """The store rows of the chosen split, in store order: [n_rows]."""
        return store.select(split=self.split)

    def row_bytes(self, store: Store) -> int:
        """Bytes of one token's float32 values over the chosen sites and layers."""
        per_layer = sum(int(np.prod(store.shape.row_shape(s)[1:])) for s in self.sites)
        return max(1, 4 * per_layer * len(self.layers))


def select(store: Store, sites: Sequence[str] | None = None,
           layers: Sequence[int] | None = None, split: str = "all") -> Selection:
    """Check the chosen sites (default key and query), layers (default all) and split
    against the store; UsageError for an unknown or unstored site, a layer out of range or
    an unknown split."""
    sites = check_sites(sites or DEFAULT_SITES)
    missing = [s for s in sites if s not in store.sites]
    if missing:
        raise UsageError(f"site(s) {', '.join(missing)} not in {store.path} (it stores "
                         f"{', '.join(store.sites)}); choose {opt('sites')} among those")
    chosen = sorted(set(int(x) for x in layers)) if layers else list(range(store.n_layers))
    bad = [x for x in chosen if not 0 <= x < store.n_layers]
    if bad:
        raise UsageError(f"{opt('layers')} {', '.join(map(str, bad))} out of range: the store "
                         f"has layers 0-{store.n_layers - 1}")
    split_code(split)
    return Selection(tuple(sites), tuple(chosen), split)


def require_room(store: Store, selection: Selection, tmp: Path, out: str | Path) -> None:
    """Refuse, before writing, an export whose vectors do not fit on the disk of ``tmp``
    (the temporary name of the output ``out``)."""
    itemsize = np.dtype(store.attrs.get("dtype", "float32")).itemsize
    n_bytes = len(selection.rows(store)) * selection.row_bytes(store) * itemsize // 4
    require_free_space(tmp, n_bytes, shown=out)


def row_blocks(n_rows: int, block_rows: int) -> Iterator[tuple[int, int]]:
    """Consecutive (start, stop) row ranges of at most ``block_rows`` rows covering n_rows."""
    for start in range(0, n_rows, max(1, block_rows)):
        yield start, min(n_rows, start + max(1, block_rows))


def read_site(store: Store, site: str, layer: int, rows: np.ndarray) -> np.ndarray:
    """Store rows ``rows`` [n] (sorted) of one layer of ``site`` in its stored dtype:
    [n, heads, d_head] (vector sites) or [n, heads] (scalar and index sites)."""
    data = store.read_layer(site, layer, index=rows)
    return data.astype(SITES[site].dtype(store.attrs.get("dtype", "float32")), copy=False)

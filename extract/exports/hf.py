"""A store as a Hugging Face ``datasets`` directory (the ``save_to_disk`` layout).

One row per stored token (of one split with ``split``), in the store's row order (sorted by
story, then position).
Columns: the token table (``input_id``, ``story_id``, ``parent_id``, ``position``,
``char_start``, ``char_end``, ``quoted``, ``straddle``), the tags as class labels
(``fine_tag``, ``coarse_tag``: ``ClassLabel`` with the store's tag names; ``fine_tags``,
``coarse_tags``: the list of every tag the token covers; ``split``: train/test), then one
column per chosen site and layer, named ``<site>_L<layer>``:
``Array2D([heads, d_head])`` for vector sites (keys: key/value heads), a list of ``heads``
numbers for scalar sites (activity, entropy, argmax), in the store's dtype.

Written as Arrow IPC stream shards (``data-00000-of-0000N.arrow``, at most
:data:`SHARD_BYTES` of vectors each) with ``dataset_info.json`` and ``state.json``, block by
block: memory does not grow with the store. ``datasets.load_from_disk(DIR)`` opens it, and
``load_dataset("arrow", data_files=f"{DIR}/data-*.arrow", streaming=True)`` streams it.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from datasets_build.dataset import SPLITS
from datasets_build.tagsets import tag_matrix
from extract.exports import BLOCK_BYTES, Selection, read_site, require_room, row_blocks
from extract.store import Store
from extract.store.schema import SITES, TAG_SETS, TOKEN_TABLE
from headprobe.atomic import atomic_dir

SHARD_BYTES = 500 << 20
# token columns stored as class labels: column -> which tag names (or the split names)
LABELS = {"fine_tag": "fine", "coarse_tag": "coarse", "split": None}


def column_name(site: str, layer: int) -> str:
    """The column of one site and layer: ``key_L2``."""
    return f"{site}_L{layer}"


def features(store: Store, selection: Selection) -> Any:
    """The ``datasets.Features`` of the export (see the module docstring)."""
    from datasets import Array2D, ClassLabel, Features, Sequence, Value

    def labels(kind: str | None) -> Any:
        return ClassLabel(names=list(SPLITS) if kind is None else store.tags[kind])

    spec: dict[str, Any] = {}
    for name, column in TOKEN_TABLE.items():
        if name in LABELS:
            spec[name] = labels(LABELS[name])
        elif name in TAG_SETS:
            spec[name] = Sequence(labels(LABELS[TAG_SETS[name]]))
        else:
            spec[name] = Value(column.dtype.name)
    float_dtype = store.attrs.get("dtype", "float32")
    for site in selection.sites:
        dtype, shape = SITES[site].dtype(float_dtype), store.shape.row_shape(site)[1:]
        for layer in selection.layers:
            spec[column_name(site, layer)] = (
                Array2D(shape, dtype) if len(shape) == 2
                else Sequence(Value(dtype), length=shape[0]))
    return Features(spec)


def _list_array(offsets: np.ndarray, values: Any, dtype: Any = None) -> Any:
    import pyarrow as pa

    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)),
                                    values if dtype is None else pa.array(values, dtype))


def _vectors(data: np.ndarray, arrow_type: Any) -> Any:
    """An Arrow array of rows [rows, heads(, d_head)] of the column's type."""
    import pyarrow as pa

    rows, heads = data.shape[:2]
    flat = pa.array(data.ravel())
    if data.ndim == 2:  # a fixed-length list of numbers per row
        return pa.FixedSizeListArray.from_arrays(flat, heads)
    d = data.shape[2]
    inner = _list_array(np.arange(0, rows * heads * d + 1, d), flat)
    outer = _list_array(np.arange(0, rows * heads + 1, heads), inner)
    return pa.ExtensionArray.from_storage(arrow_type, outer)


def _tag_sets(sets: np.ndarray, n_tags: int) -> Any:
    """Each token's tag set as a list of tag ids."""
    hot = tag_matrix(sets, n_tags)
    offsets = np.concatenate([[0], np.cumsum(hot.sum(1))])
    return _list_array(offsets, np.nonzero(hot)[1].astype(np.int64), None)


def record_batch(store: Store, selection: Selection, schema: Any, rows: np.ndarray) -> Any:
    """Store rows ``rows`` [n] (sorted) as one Arrow record batch of ``schema``."""
    import pyarrow as pa

    table = store.tokens(index=rows)
    arrays = []
    for name in TOKEN_TABLE:
        if name in TAG_SETS:
            kind = LABELS[TAG_SETS[name]]
            arrays.append(_tag_sets(table[name], len(store.tags[kind])))
        else:
            arrays.append(pa.array(table[name], schema.field(name).type))
    for site in selection.sites:
        for layer in selection.layers:
            field = schema.field(column_name(site, layer))
            arrays.append(_vectors(read_site(store, site, layer, rows), field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _shard_rows(store: Store, selection: Selection, n_rows: int) -> int:
    """Rows per shard: at most SHARD_BYTES of vectors, the rows split evenly."""
    total = n_rows * selection.row_bytes(store)
    n_shards = max(1, math.ceil(total / SHARD_BYTES))
    return max(1, math.ceil(n_rows / n_shards))


def _write_shard(path: Path, store: Store, selection: Selection, schema: Any,
                 rows: np.ndarray) -> None:
    import pyarrow as pa

    block = max(1, BLOCK_BYTES // selection.row_bytes(store))
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for lo, hi in row_blocks(len(rows), block):
            writer.write_batch(record_batch(store, selection, schema, rows[lo:hi]))


def _fingerprint(store: Store, selection: Selection) -> str:
    what = [store.attrs.get("token_table_sha256"), str(store.path), selection.sites,
            selection.layers, selection.split, store.attrs.get("created")]
    return hashlib.sha256(json.dumps(what, default=str).encode()).hexdigest()[:16]


def _write_layout(out: Path, info: Any, n_shards: int, fingerprint: str) -> None:
    """``state.json`` and ``dataset_info.json`` as ``Dataset.save_to_disk`` writes them."""
    state = {"_data_files": [{"filename": shard_name(i, n_shards)} for i in range(n_shards)],
             "_fingerprint": fingerprint, "_format_columns": None, "_format_kwargs": {},
             "_format_type": None, "_output_all_columns": False, "_split": None}
    (out / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True))
    info.write_to_directory(str(out), pretty_print=True)


def shard_name(index: int, n_shards: int) -> str:
    """``data-00000-of-00001.arrow``, the shard names of ``save_to_disk``."""
    return f"data-{index:05d}-of-{n_shards:05d}.arrow"


def export_hf(store: Store, selection: Selection, out: str | Path,
              overwrite: bool = False) -> Path:
    """Write the export of ``selection`` (see the module docstring) to the directory ``out``."""
    from datasets import DatasetInfo

    feats = features(store, selection)
    schema = feats.arrow_schema
    rows = selection.rows(store)
    shards = list(row_blocks(len(rows), _shard_rows(store, selection, len(rows))))
    info = DatasetInfo(description=f"per-token vectors of {store.path.name} "
                       f"(headprobe activation store): sites {', '.join(selection.sites)}; "
                       f"layers {', '.join(map(str, selection.layers))}; split "
                       f"{selection.split}", features=feats)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        require_room(store, selection, tmp, out)
        for i, (start, stop) in enumerate(shards or [(0, 0)]):
            _write_shard(tmp / shard_name(i, max(1, len(shards))), store, selection, schema,
                         rows[start:stop])
        _write_layout(tmp, info, max(1, len(shards)), _fingerprint(store, selection))
    return Path(out)

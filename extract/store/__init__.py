"""The activation store: one HDF5 file of per-token, per-head activations.

Layout (format version 3, see docs/hdf5-schema.md)::

    /keys          [n_tokens, n_layers, n_kv_heads, d_head]  blocks.L.attn.hook_k
    /queries       [n_tokens, n_layers, n_heads, d_head]     blocks.L.attn.hook_q
    /values        [n_tokens, n_layers, n_kv_heads, d_head]  blocks.L.attn.hook_v     (optional)
    /z             [n_tokens, n_layers, n_heads, d_head]     blocks.L.attn.hook_z     (optional)
    /keys_rot      [n_tokens, n_layers, n_kv_heads, d_head]  blocks.L.attn.hook_rot_k (rotary)
    /queries_rot   [n_tokens, n_layers, n_heads, d_head]     blocks.L.attn.hook_rot_q (rotary)
    /activity      [n_tokens, n_layers, n_heads]             ||z_h W_O[h]||_2
    /attn_entropy  [n_tokens, n_layers, n_heads]             entropy of the pattern (optional)
    /attn_argmax   [n_tokens, n_layers, n_heads]             position attended most (optional)
    /kv_head_of    [n_heads]                                 key/value head of each query head
    /token, /layer, /head, /kv_head, /d_head, /site, /block  coordinates (netCDF-4)
    /tokens/<col>  [n_tokens]                                the token table (input_id, ...)

Datasets are token-major and chunked along tokens: vector sites in chunks of
``(chunk_rows, 1, 1, d_head)`` so reading one (layer, head) decompresses only that head,
scalar sites in ``(chunk_rows, 1, n_heads)`` so one chunk row holds a layer.
Every axis is a coordinate attached as an HDF5 dimension scale (:mod:`headprobe.layout`),
so xarray and netCDF4 read the file with named dimensions.

* :mod:`extract.store.schema` - the sites, datasets, axes, dtypes and token table;
* :mod:`extract.store.codec` - compression settings and the chunks the writer encodes;
* :mod:`extract.store.json_attrs` - attributes holding JSON text;
* :mod:`extract.store.writer` - :func:`create_store`, :class:`StoreWriter`, :func:`write_store`;
* :mod:`extract.store.reader` - :func:`open_store` and :class:`Store` (float32 arrays
  whatever the stored dtype).
"""

from extract.store.codec import (
    COMPRESSIONS,
    DEFAULT_COMPRESSION,
    deflate,
    describe_compression,
    parse_compression,
    shuffled_chunks,
    stored_level,
)
from extract.store.json_attrs import decode_attrs, encode_attrs
from extract.store.reader import Store, open_store
from extract.store.schema import (
    DEFAULT_SITES,
    DESCRIPTION,
    DTYPES,
    READABLE_VERSIONS,
    ROTARY_SITES,
    SCHEMA,
    SCHEMA_VERSION,
    SITES,
    TOKEN_TABLE,
    Site,
    StoreShape,
    row_bytes,
)
from extract.store.writer import (
    BUFFER_BYTES,
    MAX_CHUNK_ROWS,
    MIN_CHUNK_ROWS,
    StoreWriter,
    chunk_rows_for,
    create_store,
    reopen_store,
    write_store,
)

__all__ = [
    "BUFFER_BYTES", "COMPRESSIONS", "DEFAULT_COMPRESSION", "DEFAULT_SITES", "DESCRIPTION",
    "DTYPES", "MAX_CHUNK_ROWS", "MIN_CHUNK_ROWS", "READABLE_VERSIONS", "ROTARY_SITES", "SCHEMA",
    "SCHEMA_VERSION", "SITES", "TOKEN_TABLE", "Site", "Store", "StoreShape", "StoreWriter",
    "chunk_rows_for", "create_store",
    "decode_attrs", "deflate", "describe_compression", "encode_attrs", "open_store",
    "parse_compression", "reopen_store", "row_bytes", "shuffled_chunks", "stored_level",
    "write_store",
]

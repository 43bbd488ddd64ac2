"""What an activation store holds: its sites, datasets, axes, dtypes and token table.

Everything the writer creates and the reader looks up is named here, once. The writer
checks every block of rows against these declarations before it writes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from datasets_build.dataset import TOKEN_COLUMNS
from headprobe.errors import UsageError, opt
from headprobe.hooks import hook_pattern
from headprobe.layout import format_of

SCHEMA = "headprobe-activations"
SCHEMA_VERSION = 3
# version 1: every site per query head, no /kv_head; versions 1 and 2: root attributes
# 'schema' and 'schema_version', axis names as one string, no coordinates, /kv_head [head]
# the key/value head of each query head (now /kv_head_of)
READABLE_VERSIONS = (1, 2, 3)
# how versions 1 and 2 named the format and its version
LEGACY_FORMAT_ATTRS = ("schema", "schema_version")
DESCRIPTION = (
    "headprobe activation store. One row per model token of a tagged dataset; rows are "
    "sorted by (story_id, position). Per-head datasets are [token, layer, head(, d_head)] "
    "or, for keys and values, [token, layer, kv_head, d_head] (see each dataset's 'dims', "
    "'description' and 'stage'); each axis is a netCDF-4 coordinate of the same name; "
    "/kv_head_of[h] is the key/value head query head h reads. "
    "The token table is in /tokens/<column>. Root attributes whose names are listed in "
    "'json_attributes' hold JSON text. 'complete' is 1 once every row has been written.")

# What one token holds for one layer: a vector per head, a number per head, or a position.
KINDS = ("vector", "scalar", "index")
# Which heads a site's head axis counts: query heads, or key/value heads (grouped-query
# attention stores keys and values once per key/value head).
HEAD_AXES = {"head": "n_heads", "kv_head": "n_kv_heads"}
DTYPES = ("float16", "float32")
INDEX_DTYPE = "int32"
KV_HEAD = "kv_head_of"
OLD_KV_HEAD = "kv_head"   # its name in versions 1 and 2
KV_HEAD_DESCRIPTION = ("the key/value head each query head reads: query head h attends with "
                       "the keys and values of kv_head[h] (grouped-query attention shares one "
                       "key/value head among consecutive query heads)")


# the coordinates of a store's axes (positions 0..n-1, sites by name) and what they count
COORDINATES = {
    "token": "row of the store (the token table's row)",
    "layer": "model layer",
    "head": "query head",
    "kv_head": "key/value head (the query heads that read it are those h with "
               "kv_head_of[h] equal to it)",
    "d_head": "component of a head's vector",
    "site": "sites stored, in the order of root attribute 'sites'",
}


def store_version(attrs: Mapping[str, Any]) -> tuple[str | None, int | None]:
    """(format, version) of a store from its root attributes, whichever names they use."""
    return format_of(attrs, legacy=LEGACY_FORMAT_ATTRS)


@dataclass(frozen=True)
class StoreShape:
    """The sizes of a store's per-head axes."""

    n_layers: int
    n_heads: int        # query heads
    d_head: int
    n_kv_heads: int     # key/value heads (n_heads without grouped-query attention)

    @classmethod
    def of(cls, attrs: Mapping[str, Any]) -> StoreShape:
        """From an architecture dict or root attributes (``n_kv_heads`` defaults to n_heads)."""
        n_heads = int(attrs["n_heads"])
        return cls(int(attrs["n_layers"]), n_heads, int(attrs["d_head"]),
                   int(attrs.get("n_kv_heads") or n_heads))

    def heads(self, site: str) -> int:
        """Length of ``site``'s head axis."""
        return int(getattr(self, HEAD_AXES[SITES[site].head_axis]))

    def row_shape(self, site: str) -> tuple[int, ...]:
        """Shape of one token's values: (n_layers, heads[, d_head])."""
        heads = (self.n_layers, self.heads(site))
        return (*heads, self.d_head) if SITES[site].kind == "vector" else heads

    def chunk_shape(self, site: str, rows: int) -> tuple[int, ...]:
        """One chunk: a single (layer, head) for vectors, a whole layer otherwise."""
        if SITES[site].kind == "vector":
            return (rows, 1, 1, self.d_head)
        return (rows, 1, self.heads(site))


@dataclass(frozen=True)
class Site:
    """One per-head quantity: the HDF5 dataset ``/<dataset>`` of shape
    ``[n_tokens, *StoreShape.row_shape(name)]``."""

    name: str           # what users ask for: "key"
    dataset: str        # the HDF5 dataset: "keys"
    kind: str           # one of KINDS
    head_axis: str      # one of HEAD_AXES
    hook: str | None    # the hook point (headprobe.hooks) it is read from, None if computed
    description: str

    @property
    def dims(self) -> tuple[str, ...]:
        """The names of the axes (the ``dims`` attribute and the coordinates)."""
        heads = ("token", "layer", self.head_axis)
        return (*heads, "d_head") if self.kind == "vector" else heads

    def dtype(self, float_dtype: str) -> str:
        """Storage dtype: positions are int32, everything else ``float_dtype``."""
        return INDEX_DTYPE if self.kind == "index" else float_dtype


def _vector(name: str, dataset: str, head_axis: str, point: str, what: str) -> Site:
    return Site(name, dataset, "vector", head_axis, point,
                f"{what}, hook {hook_pattern(point)}")


SITES: dict[str, Site] = {s.name: s for s in (
    _vector("key", "keys", "kv_head", "k", "key vectors, one per key/value head: the output "
            "of the key projection"),
    _vector("query", "queries", "head", "q", "query vectors: the output of the query "
            "projection"),
    _vector("value", "values", "kv_head", "v", "value vectors, one per key/value head"),
    _vector("z", "z", "head", "z", "attention-weighted values per head"),
    _vector("key_rot", "keys_rot", "kv_head", "rot_k", "key vectors after the rotary "
            "embedding, as they meet the queries"),
    _vector("query_rot", "queries_rot", "head", "rot_q", "query vectors after the rotary "
            "embedding, as they meet the keys"),
    Site("activity", "activity", "scalar", "head", None,
         "head activity: L2 norm of the head's contribution z_h @ W_O[h] to the residual "
         "stream (output bias excluded)"),
    Site("entropy", "attn_entropy", "scalar", "head", None,
         "entropy (nats) of the head's attention pattern for this query token"),
    Site("argmax", "attn_argmax", "index", "head", None,
         "position (within the story) of the key token this query attends to most"),
)}
# Sites that exist only for models with rotary embeddings.
ROTARY_SITES = ("key_rot", "query_rot")


def site_stage(site: str, rotary: bool, qk_norm: bool) -> str:
    """Where a key or query site is read in this model, in words (the dataset attribute
    ``stage``): before or after the rotary embedding and the key/query norm."""
    if site not in ("key", "query", *ROTARY_SITES):
        return ""
    which = "key" if site.startswith("key") else "query"
    if site in ROTARY_SITES:
        return (f"after the {which} norm and the rotary embedding" if qk_norm
                else "after the rotary embedding")
    stage = "before the rotary embedding" if rotary else "no rotary embedding in this model"
    return stage + (f"; before the {which} norm" if qk_norm else "")
DEFAULT_SITES = ("key", "query", "activity")


@dataclass(frozen=True)
class TokenColumn:
    """One column of the token table, the HDF5 dataset ``/tokens/<name>`` [n_tokens]."""

    name: str
    dtype: np.dtype
    description: str
    dims: tuple[str, ...] = ("token",)


TOKEN_GROUP = "tokens"
TOKEN_GROUP_DESCRIPTION = "token table: one row per stored token, same row order"
_TOKEN_DESCRIPTIONS = {
    "input_id": "model input id of the token",
    "story_id": "id of the story the token belongs to",
    "parent_id": "id of the source story the token's story was cut from (a window of it); "
                 "story_id when the story was not cut",
    "position": "position of the token in its story (0 = BOS when the tokenizer has one)",
    "char_start": "start of the token's span in the story text (-1 for BOS)",
    "char_end": "end of the token's span in the story text (-1 for BOS)",
    "fine_tag": "fine part-of-speech tag id (names in root attribute tags['fine'])",
    "coarse_tag": "coarse part-of-speech tag id (names in root attribute tags['coarse'])",
    "quoted": "1 if the token lies inside a quotation",
    "straddle": "1 if the token covers more than one spaCy token",
    "fine_tags": "every fine tag the token covers: bit i set when it covers a spaCy token "
                 "tagged tags['fine'][i] (fine_tag is the one the alignment rule chose)",
    "coarse_tags": "every coarse tag the token covers: bit i set when it covers a spaCy token "
                   "tagged tags['coarse'][i]",
    "split": "0 = train, 1 = test",
}
# Tag-set columns and the tag each is built from where a table lacks it (stores written
# before tag sets read it as a set of one tag).
TAG_SETS = {"fine_tags": "fine_tag", "coarse_tags": "coarse_tag"}
# The dataset's token columns, in its order, each with what it means in a store.
TOKEN_TABLE: dict[str, TokenColumn] = {
    name: TokenColumn(name, np.dtype(dtype), _TOKEN_DESCRIPTIONS[name])
    for name, dtype in TOKEN_COLUMNS.items()}


def token_path(column: str) -> str:
    """HDF5 path of a token-table column: ``tokens/<column>``."""
    return f"{TOKEN_GROUP}/{column}"


def check_sites(sites: Iterable[str]) -> list[str]:
    """``sites`` without repeats, in order; UsageError for unknown names or none at all."""
    sites = list(dict.fromkeys(sites))
    unknown = [s for s in sites if s not in SITES]
    if unknown or not sites:
        raise UsageError(f"unknown site(s) {', '.join(unknown) or '(none)'}; "
                         f"choose from {', '.join(SITES)}")
    return sites


def check_dtype(dtype: str) -> str:
    if dtype not in DTYPES:
        raise UsageError(f"unknown {opt('dtype')} {dtype!r}; choose from {', '.join(DTYPES)}")
    return dtype


def check_block(site: str, data: np.ndarray, shape: StoreShape) -> None:
    """Refuse a block of rows whose shape is not [rows, *row_shape] for ``site``."""
    want = shape.row_shape(site)
    if data.ndim != len(want) + 1 or tuple(data.shape[1:]) != want:
        raise ValueError(f"site {site!r} takes blocks of shape [rows, {', '.join(map(str, want))}]"
                         f", got {list(data.shape)}")


def check_token_column(name: str, values: np.ndarray, rows: int | None = None) -> None:
    """Refuse an unknown column, or one of the wrong length when ``rows`` is given."""
    if name not in TOKEN_TABLE:
        raise ValueError(f"unknown token column {name!r}; have {', '.join(TOKEN_TABLE)}")
    if values.ndim != 1 or (rows is not None and len(values) != rows):
        raise ValueError(f"token column {name!r} must be one value per row "
                         f"[{rows if rows is not None else 'rows'}], got {list(values.shape)}")


def row_bytes(shape: StoreShape, sites: Iterable[str]) -> int:
    """Bytes of one token's float32 values for all ``sites``."""
    return max(1, sum(int(np.prod(shape.row_shape(s))) * 4 for s in sites))

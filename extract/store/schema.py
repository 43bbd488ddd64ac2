"""What an activation store holds: its sites, datasets, axes, dtypes and token table.

Everything the writer creates and the reader looks up is named here, once. The writer
checks every block of rows against these declarations before it writes it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from datasets_build.dataset import TOKEN_COLUMNS
from headprobe.errors import UsageError, opt
from headprobe.hooks import hook_pattern

SCHEMA = "headprobe-activations"
SCHEMA_VERSION = 1
DESCRIPTION = (
    "headprobe activation store. One row per model token of a tagged dataset; rows are "
    "sorted by (story_id, position). Per-head datasets are [token, layer, head(, d_head)] "
    "(see each dataset's 'dims' and 'description'); the token table is in /tokens/<column>. "
    "Root attributes whose names are listed in 'json_attributes' hold JSON text. "
    "'complete' is 1 once every row has been written.")

# What one token holds for one layer: a vector per head, a number per head, or a position.
KINDS = ("vector", "scalar", "index")
DTYPES = ("float16", "float32")
INDEX_DTYPE = "int32"


@dataclass(frozen=True)
class Site:
    """One per-head quantity: the HDF5 dataset ``/<dataset>`` of shape :meth:`shape`."""

    name: str           # what users ask for: "key"
    dataset: str        # the HDF5 dataset: "keys"
    kind: str           # one of KINDS
    description: str

    @property
    def dims(self) -> str:
        """The ``dims`` attribute: names of the axes."""
        return "token, layer, head, d_head" if self.kind == "vector" else "token, layer, head"

    def row_shape(self, n_layers: int, n_heads: int, d_head: int) -> tuple[int, ...]:
        """Shape of one token's values: (n_layers, n_heads[, d_head])."""
        return (n_layers, n_heads, d_head) if self.kind == "vector" else (n_layers, n_heads)

    def chunk_shape(self, rows: int, n_heads: int, d_head: int) -> tuple[int, ...]:
        """One chunk: a single (layer, head) for vectors, a whole layer otherwise."""
        return (rows, 1, 1, d_head) if self.kind == "vector" else (rows, 1, n_heads)

    def dtype(self, float_dtype: str) -> str:
        """Storage dtype: positions are int32, everything else ``float_dtype``."""
        return INDEX_DTYPE if self.kind == "index" else float_dtype


SITES: dict[str, Site] = {s.name: s for s in (
    Site("key", "keys", "vector", f"key vectors, hook {hook_pattern('k')}"),
    Site("query", "queries", "vector", f"query vectors, hook {hook_pattern('q')}"),
    Site("value", "values", "vector", f"value vectors, hook {hook_pattern('v')}"),
    Site("z", "z", "vector", f"attention-weighted values per head, hook {hook_pattern('z')}"),
    Site("activity", "activity", "scalar",
          "head activity: L2 norm of the head's contribution z_h @ W_O[h] to the residual "
          "stream (output bias excluded)"),
    Site("entropy", "attn_entropy", "scalar",
          "entropy (nats) of the head's attention pattern for this query token"),
    Site("argmax", "attn_argmax", "index",
          "position (within the story) of the key token this query attends to most"),
)}
DEFAULT_SITES = ("key", "query", "activity")


@dataclass(frozen=True)
class TokenColumn:
    """One column of the token table, the HDF5 dataset ``/tokens/<name>`` [n_tokens]."""

    name: str
    dtype: np.dtype
    description: str
    dims: str = "token"


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


def check_block(site: str, data: np.ndarray, n_layers: int, n_heads: int, d_head: int) -> None:
    """Refuse a block of rows whose shape is not [rows, *row_shape] for ``site``."""
    want = SITES[site].row_shape(n_layers, n_heads, d_head)
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


def row_bytes(n_layers: int, n_heads: int, d_head: int, sites: Iterable[str]) -> int:
    """Bytes of one token's float32 values for all ``sites``."""
    return max(1, sum(int(np.prod(SITES[s].row_shape(n_layers, n_heads, d_head))) * 4
                      for s in sites))

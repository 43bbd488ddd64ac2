"""Tag sets: every tag a model token covers, as one integer per token.

A model token can cover several spaCy tokens (``."`` covers ``.`` and ``''``; GPT-2's
``Don`` covers ``Do`` and the ``n`` of ``n't``). Its tag set holds the tags of all of
them, fine and coarse apart: bit ``i`` of a token's value is set when the token covers a
spaCy token whose tag has id ``i`` in ``tags.json``. Whitespace-only tokens hold
``SPACE``, BOS holds ``BOS`` and unaligned tokens ``UNK``, so a token's own tag is always
in its set. One unsigned 64-bit integer per token keeps the token table one value per
row, so vocabularies hold at most 64 tags (spaCy's English taggers have 50, plus ours).
"""

from __future__ import annotations

import numpy as np

from headprobe.errors import UsageError

DTYPE = np.uint64
MAX_TAGS = 64


def check_vocabularies(vocab: dict[str, list[str]]) -> None:
    """Refuse tag vocabularies too large for a tag set."""
    for name, tags in vocab.items():
        if len(tags) > MAX_TAGS:
            raise UsageError(f"the {name} tag vocabulary has {len(tags)} tags; tag sets hold "
                             f"at most {MAX_TAGS}")


def tag_bits(tag_ids: np.ndarray) -> np.ndarray:
    """The one-tag set of each tag id: [n] ids -> [n] uint64 (bit ``id`` set)."""
    return np.left_shift(DTYPE(1), np.asarray(tag_ids).astype(DTYPE))


def has_tag(sets: np.ndarray, tag_id: int | np.ndarray) -> np.ndarray:
    """Bool [n]: the set of each token holds tag ``tag_id`` (one id, or one per token [n]);
    sets: [n] uint64."""
    shift = np.asarray(tag_id).astype(DTYPE)
    return (np.asarray(sets, dtype=DTYPE) >> shift) & DTYPE(1) == 1


def tag_matrix(sets: np.ndarray, n_tags: int) -> np.ndarray:
    """Multi-hot view: sets [n] uint64 -> bool [n, n_tags], column ``i`` = holds tag ``i``."""
    shifts = np.arange(n_tags, dtype=DTYPE)
    return (np.asarray(sets, dtype=DTYPE)[:, None] >> shifts) & DTYPE(1) == 1


def tag_names(sets: int | np.integer, names: list[str]) -> list[str]:
    """The tags of one set, in vocabulary order: ``tag_names(s, tags["fine"])``."""
    return [name for i, name in enumerate(names) if (int(sets) >> i) & 1]

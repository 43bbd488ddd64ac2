"""Control probes reported beside every cell of the grid.

- ``majority``: always predict the most frequent training class;
- ``shuffled``: the same probe fitted on training labels permuted among the training tokens
  (what a probe reaches by memorising the label distribution, not the vectors);
- ``random``: the same probe on the vectors of a randomly re-initialised copy of the model
  (a store written by ``python -m extract ... --reinit-seed S``; ``fit --control-store``);
- ``bootstrap``: 95% percentile intervals of per-tag F1 over test stories resampled with
  replacement.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from headprobe.errors import UsageError, opt

if TYPE_CHECKING:
    from extract.store import Store

CONTROLS = ("majority", "shuffled", "random", "bootstrap")
DEFAULT_CONTROLS = ("majority", "shuffled", "bootstrap")


def parse_controls(names: list[str], have_control_store: bool) -> tuple[str, ...]:
    """Check control names; 'random' is on exactly when a control store is given.

    Raises UsageError for an unknown name, or 'random' without a control store.
    """
    unknown = [n for n in names if n not in CONTROLS]
    if unknown:
        raise UsageError(f"unknown control(s) {', '.join(unknown)}; choose from "
                         f"{', '.join(CONTROLS)}")
    chosen = [n for n in names if n != "random"]
    if "random" in names and not have_control_store:
        raise UsageError(f"the random-weights control needs {opt('control_store', 'FILE.h5')} "
                         f"(a store extracted with {opt('reinit_seed')})")
    if have_control_store:
        chosen.append("random")
    return tuple(dict.fromkeys(chosen))


def majority_predictions(train_y: np.ndarray, n_test: int) -> np.ndarray:
    """The most frequent training class for every test token: [n_test]."""
    return np.full(n_test, np.bincount(train_y).argmax(), dtype=np.int64)


def shuffled_labels(train_y: np.ndarray, seed: int) -> np.ndarray:
    """Training labels permuted among the training tokens: [n_train]."""
    return np.random.default_rng(seed).permutation(train_y)


def check_control_store(store: Store, control: Store) -> None:
    """Refuse a control store that does not hold the store's tokens (ids, stories, splits)."""
    if control.n_tokens != store.n_tokens:
        raise UsageError(f"control store {control.path} has {control.n_tokens} tokens, the "
                         f"store has {store.n_tokens}; extract both from the same dataset")
    if (control.n_layers, control.n_heads, control.n_kv_heads, control.d_head) != (
            store.n_layers, store.n_heads, store.n_kv_heads, store.d_head):
        raise UsageError(f"control store {control.path} has a different architecture")
    cols = ["input_id", "story_id", "split"]
    mine, theirs = store.tokens(cols), control.tokens(cols)
    if any(not np.array_equal(mine[c], theirs[c]) for c in cols):
        raise UsageError(f"control store {control.path} holds other tokens than the store; "
                         "extract both from the same dataset")

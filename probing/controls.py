"""Control probes reported beside every cell of the grid.

- ``majority``: always predict the most frequent training class;
- ``shuffled``: the same probe fitted on training labels permuted among the training tokens
  (what a probe reaches by memorising the label distribution, not the vectors);
- ``control-task``: Hewitt & Liang's control task (EMNLP 2019): every word type gets a label
  drawn once, seeded, from the empirical class distribution of the training tokens, and the
  same probe is fitted on those labels (what a probe reaches by memorising word identity);
- ``random``: the same probe on the vectors of a randomly re-initialised copy of the model
  (a store written by ``python -m extract ... --reinit-seed S``; ``fit --control-store``);
- ``bootstrap``: 95% percentile intervals of per-tag F1 over test stories resampled with
  replacement.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from headprobe.errors import UsageError, opt
from headprobe.rundir import make_command

if TYPE_CHECKING:
    from extract.store import Store

CONTROLS = ("majority", "shuffled", "control-task", "random", "bootstrap")
DEFAULT_CONTROLS = ("majority", "shuffled", "bootstrap")
# controls that give a per-tag F1 to compare with, in the order selectivity prefers them
SELECTIVITY_CONTROLS = ("control-task", "shuffled", "random", "majority")
# the same controls from the strongest (hardest to beat) to the weakest: a randomly
# initialised model's vectors already hold word identity and position; the control task
# only word identity; shuffled labels nothing but the label distribution
STRONGEST_FIRST = ("random", "control-task", "shuffled", "majority")
# what a word type of the control task is: the model token id, or its lowercased text
WORD_TYPES = ("token", "lower")


def array_suffix(control: str) -> str:
    """How a control names its arrays: ``f1_<suffix>`` (``control-task`` -> ``control_task``)."""
    return control.replace("-", "_")


def strongest_control(available: list[str] | tuple[str, ...]) -> str | None:
    """The strongest control of ``available`` (see STRONGEST_FIRST), None when there is none."""
    return next((c for c in STRONGEST_FIRST if c in available), None)


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
        raise UsageError(f"the random-weights control needs {opt('control_store', 'FILE.h5')}; "
                         f"make it with: {make_command('control_store', 'FILE.h5')}")
    if have_control_store:
        chosen.append("random")
    return tuple(dict.fromkeys(chosen))


def selectivity(arrays: dict[str, np.ndarray], control: str, metric: str = "f1") -> np.ndarray:
    """``metric`` minus the same metric of ``control`` (arrays named as probing.results):
    per-tag F1 by default; ``metric='accuracy'`` is Hewitt & Liang's selectivity."""
    name = f"{metric}_{array_suffix(control)}"
    if name not in arrays:
        raise UsageError(f"the {control} control was not run (no {name!r})")
    return arrays[metric] - arrays[name]


def majority_predictions(train_y: np.ndarray, n_test: int) -> np.ndarray:
    """The most frequent training class for every test token: [n_test]."""
    return np.full(n_test, np.bincount(train_y).argmax(), dtype=np.int64)


def shuffled_labels(train_y: np.ndarray, seed: int) -> np.ndarray:
    """Training labels permuted among the training tokens: [n_train]."""
    return np.random.default_rng(seed).permutation(train_y)


def word_types(input_ids: np.ndarray, kind: str = "token",
               tokenizer: Any = None) -> np.ndarray:
    """The word type of each token [n] as an integer id: its token id (``kind='token'``), or
    for ``kind='lower'`` the index of its lowercased, stripped text among the sorted texts
    of ``input_ids`` (decoded by ``tokenizer``, so ' The' and 'the' share one type)."""
    input_ids = np.asarray(input_ids, dtype=np.int64)
    if kind == "token":
        return input_ids
    if kind != "lower":
        raise UsageError(f"unknown word type {kind!r}; choose from {', '.join(WORD_TYPES)}")
    if tokenizer is None:
        raise UsageError(f"lowercased word types need a tokenizer ({opt('tokenizer')})")
    ids, inverse = np.unique(input_ids, return_inverse=True)
    texts = [tokenizer.decode([int(i)]).strip().lower() for i in ids]
    _, text_index = np.unique(np.array(texts, dtype=object), return_inverse=True)
    return text_index[inverse].astype(np.int64)


def control_task_labels(train_types: np.ndarray, test_types: np.ndarray, train_y: np.ndarray,
                        n_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Control-task labels of the train [n_train] and test [n_test] tokens.

    Every word type (non-negative integer ids, see :func:`word_types`) gets one label,
    drawn with the seeded generator from the class distribution of ``train_y``; the draw
    of type t is the t-th of one stream, so a type keeps its label whichever tokens are
    probed. Test types never seen in training get their own drawn label, as in the paper.
    """
    prior = np.bincount(train_y, minlength=n_classes) / len(train_y)
    n_types = int(max(train_types.max(initial=0), test_types.max(initial=0))) + 1
    uniform = np.random.default_rng(seed).random(n_types)
    label = np.minimum(np.searchsorted(np.cumsum(prior), uniform, side="right"),
                       n_classes - 1)
    return label[train_types], label[test_types]


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

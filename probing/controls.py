"""Control probes reported beside every cell of the grid, declared as data.

Every control is a :class:`Control` in :data:`REGISTRY`: its name, how it is fitted or
computed, whether its F1 enters selectivity, whether ``probing fit`` runs it by default
and the arrays it stores. Names are parsed once (:func:`parse_controls`) where settings
enter the library (``GridConfig``, the command line); the grid then runs whatever the
parsed controls declare, for single-label and one-vs-rest targets alike (both offer the
:class:`Target` protocol).

- ``majority``: always predict the most frequent training class;
- ``shuffled``: the same probe fitted on training labels permuted among the training tokens
  (what a probe reaches by memorising the label distribution, not the vectors);
- ``control-task``: Hewitt & Liang's control task (EMNLP 2019): every word type gets a label
  drawn once, seeded, from the empirical class distribution of the training tokens, and the
  same probe is fitted on those labels (what a probe reaches by memorising word identity);
- ``lexical``: the lexical baseline: every test token gets the most frequent training tag
  of its token id (types unseen in training: the most frequent tag overall); no probe,
  no vectors: what word identity alone predicts;
- ``lexical-lower``: the same per lowercased, stripped word (' The' and 'the' are one);
- ``random``: the same probe on the vectors of a randomly re-initialised copy of the model
  (a store written by ``python -m extract ... --reinit-seed S``; ``fit --control-store``);
- ``bootstrap``: 95% percentile intervals over test stories resampled with replacement:
  of per-tag F1, and of the probe's F1 minus the lexical baseline's on ambiguous tokens.

Ambiguous tokens (:func:`ambiguous_tokens`) are the test tokens whose token id carries
two or more tags in training, each on at least ``min_count`` training tokens: there word
identity cannot decide the tag. Every score is also computed on them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from headprobe.errors import UsageError, opt
from headprobe.rundir import make_command

if TYPE_CHECKING:
    from extract.store import Store

# what a word type of the control task is: the model token id, or its lowercased text
WORD_TYPES = ("token", "lower")
# scores each control adds beside the probe's own, as "<score>_<control>"
CONTROL_METRICS = ("f1", "macro_f1", "accuracy")
# how a control is fitted: the probe on other train labels; the probe on the control
# store's vectors; no probe (predictions from the labels alone); no scores (intervals)
FITTED = ("labels", "vectors", "none", "interval")
DEFAULT_AMBIGUOUS_MIN_COUNT = 2


class Target(Protocol):
    """What a probe predicts, single-label (probing.labels.Labels) or one-vs-rest
    (probing.multilabel.TagSets): y is [n] class ids or bool [n, K] tag sets."""

    names: list[str]
    train_rows: np.ndarray
    train_y: np.ndarray
    test_rows: np.ndarray
    test_y: np.ndarray

    @property
    def n_classes(self) -> int: ...

    def codes(self, y: np.ndarray) -> np.ndarray:
        """One integer per token [n] naming its target (equal targets, equal codes)."""

    def majority(self, n: int) -> np.ndarray:
        """The majority prediction for n test tokens: [n] or [n, K]."""

    def control_task(self, train_types: np.ndarray, test_types: np.ndarray,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Control-task targets of the train and test tokens of these word types."""

    def scorer(self, stories: np.ndarray, n_boot: int, seed: int) -> Any:
        """A scorer of test predictions per story (probing.metrics.StoryScorer)."""

    def fit(self, X: Any, y: np.ndarray, solver: str, C: float, seed: int,
            seen_only: bool = False, init: Any = None) -> Any:
        """Probes of X [c, n, d] on targets y (``predict(fit, X)`` gives predictions)."""

    def decide(self, logits: np.ndarray) -> np.ndarray:
        """Predictions from logits [..., K]."""


@dataclass
class Inputs:
    """What a control is computed from, once per grid: the target, the word types of
    its train and test tokens by kind ('token', 'lower'; filled as controls need them),
    the control task's word type and the seed."""

    target: Target
    types: dict[str, tuple[np.ndarray, np.ndarray]]
    word_types: str
    seed: int


@dataclass
class Prepared:
    """A control ready to score: train_y [n_train(, K)] to refit the probe on (None:
    the tags), test_y to score against (None: the tags), test_pred [n_test(, K)]: fixed
    predictions of a control without a probe."""

    train_y: np.ndarray | None = None
    test_y: np.ndarray | None = None
    test_pred: np.ndarray | None = None


@dataclass(frozen=True)
class Control:
    """One control: ``name`` (as given to ``--controls``), ``words`` (what its arrays hold),
    ``fitted`` (one of FITTED), ``selectivity`` (its F1 enters selectivity), ``default``
    (``probing fit`` runs it unless told otherwise), ``word_type`` (the word types it
    needs: 'token', 'lower', 'config' for GridConfig.word_types, or None), ``gain``
    (the probe's F1 minus its F1 on the ambiguous tokens is stored, ``lexical_gain``) and
    ``prepare`` (Inputs -> Prepared; None for the intervals)."""

    name: str
    words: str
    fitted: str
    selectivity: bool
    default: bool
    word_type: str | None = None
    gain: bool = False
    prepare: Callable[[Inputs], Prepared] | None = None

    @property
    def suffix(self) -> str:
        """How its arrays are named: ``f1_<suffix>``."""
        return array_suffix(self.name)

    @property
    def arrays(self) -> tuple[str, ...]:
        """The per-cell arrays it stores (names as in probing.results)."""
        if self.fitted == "interval":
            return ("f1_lo", "f1_hi", "lexical_gain_lo", "lexical_gain_hi")
        scores = tuple(f"{m}_{self.suffix}{amb}" for amb in ("", "_ambiguous")
                       for m in CONTROL_METRICS)
        return (*scores, "lexical_gain") if self.gain else scores

    def kind(self, config_word_type: str) -> str | None:
        """The kind of word type it needs under the grid's ``word_types`` setting."""
        return config_word_type if self.word_type == "config" else self.word_type


def array_suffix(control: str) -> str:
    """How a control names its arrays: ``f1_<suffix>`` (``control-task`` -> ``control_task``)."""
    return control.replace("-", "_")


def strongest_control(available: list[str] | tuple[str, ...]) -> str | None:
    """The strongest control of ``available`` (see STRONGEST_FIRST), None when there is none."""
    return next((c for c in STRONGEST_FIRST if c in available), None)


def parse_controls(names: list[str] | tuple[str | Control, ...], have_control_store: bool,
                   intervals: bool = True, add_defaults: bool = False
                   ) -> tuple[Control, ...]:
    """The controls named (or already parsed), checked; 'random' is on exactly when a
    control store is given. ``add_defaults``: the names add to DEFAULT_CONTROLS (the
    command line); ``intervals=False`` drops the bootstrap even when named.

    Raises UsageError for an unknown name, or 'random' without a control store.
    """
    names = [n.name if isinstance(n, Control) else n for n in names]
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise UsageError(f"unknown control(s) {', '.join(unknown)}; choose from "
                         f"{', '.join(CONTROLS)}")
    if "random" in names and not have_control_store:
        raise UsageError(f"the random-weights control needs {opt('control_store', 'FILE.h5')}; "
                         f"make it with: {make_command('control_store', 'FILE.h5')}")
    chosen = [*(DEFAULT_CONTROLS if add_defaults else ()), *names]
    chosen += ["random"] if have_control_store else []
    drop = {"random"} - ({"random"} if have_control_store else set())
    drop |= set() if intervals else {"bootstrap"}
    return tuple(REGISTRY[n] for n in dict.fromkeys(chosen) if n not in drop)


def intervals_on(controls: tuple[Control, ...]) -> bool:
    """Whether the parsed ``controls`` ask for bootstrap intervals."""
    return any(c.fitted == "interval" for c in controls)


def selectivity(arrays: dict[str, np.ndarray], control: str, metric: str = "f1") -> np.ndarray:
    """``metric`` minus the same metric of ``control`` (arrays named as probing.results):
    per-tag F1 by default; ``metric='accuracy'`` against the control task is Hewitt &
    Liang's selectivity."""
    name = f"{metric}_{array_suffix(control)}"
    if name not in arrays:
        raise UsageError(f"the {control} control was not run (no {name!r})")
    return arrays[metric] - arrays[name]


def strongest_f1(arrays: dict[str, np.ndarray]) -> np.ndarray | None:
    """Per cell and tag, the highest F1 of any control that enters selectivity (lexical
    baseline included): [S, L, H, K]; None when no such control was run."""
    got = [arrays[f"f1_{c.suffix}"] for c in REGISTRY.values()
           if c.selectivity and f"f1_{c.suffix}" in arrays]
    return np.max(np.stack(got), axis=0) if got else None


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
    """Refuse a control store that does not hold the store's tokens (ids, stories, splits),
    or whose vectors come from the same weights as the store's (the store itself)."""
    same = ("model_weights_sha256", "reinit_seed")
    if control.path.resolve() == store.path.resolve() or (
            store.attrs.get(same[0]) and all(control.attrs.get(k) == store.attrs.get(k)
                                            for k in same)):
        raise UsageError(f"control store {control.path} comes from the same weights as the "
                         f"store; give the store of the re-initialised model (extract "
                         f"{opt('reinit_seed')} 0)")
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


def word_majority(train_types: np.ndarray, train_codes: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Per word type seen in training, its most frequent training target.

    train_types, train_codes: [n_train] integer word types and target codes. Returns
    (types [T] sorted, index [T] of a training token carrying that type's most frequent
    code); ties go to the smallest code.
    """
    pairs, first, counts = np.unique(np.stack([train_types, train_codes]), axis=1,
                                     return_index=True, return_counts=True)
    order = np.lexsort((pairs[1], -counts, pairs[0]))  # by type, then most frequent first
    types = pairs[0][order]
    keep = np.r_[True, types[1:] != types[:-1]] if len(types) else np.zeros(0, bool)
    return types[keep], first[order][keep]


def lexical_predictions(train_types: np.ndarray, test_types: np.ndarray,
                        train_y: np.ndarray, train_codes: np.ndarray,
                        fallback: np.ndarray) -> np.ndarray:
    """The lexical baseline: each test token [n_test] gets the most frequent training
    target of its word type (train_y: [n_train] or [n_train, K]; train_codes: [n_train]
    their codes); a type unseen in training gets ``fallback`` ([n_test(, K)], the
    majority prediction). Returns predictions shaped like ``fallback``."""
    types, index = word_majority(train_types, train_codes)
    at = np.minimum(np.searchsorted(types, test_types), max(len(types) - 1, 0))
    seen = (types[at] == test_types) if len(types) else np.zeros(len(test_types), bool)
    seen = seen.reshape(-1, *([1] * (train_y.ndim - 1)))
    return np.where(seen, train_y[index[at]] if len(types) else fallback, fallback)


def ambiguous_tokens(train_types: np.ndarray, train_codes: np.ndarray,
                     test_types: np.ndarray, min_count: int) -> np.ndarray:
    """Bool [n_test]: the test token's word type carries two or more targets in training,
    each on at least ``min_count`` training tokens (word identity cannot decide)."""
    if min_count < 1:
        raise UsageError(f"{opt('ambiguous_min_count')} must be at least 1")
    pairs, counts = np.unique(np.stack([train_types, train_codes]), axis=1,
                              return_counts=True)
    types, n_targets = np.unique(pairs[0][counts >= min_count], return_counts=True)
    return np.isin(test_types, types[n_targets >= 2])


def _shuffled(inputs: Inputs) -> Prepared:
    return Prepared(train_y=shuffled_labels(inputs.target.train_y, inputs.seed))


def _control_task(inputs: Inputs) -> Prepared:
    train_types, test_types = inputs.types[inputs.word_types]
    train_y, test_y = inputs.target.control_task(train_types, test_types, inputs.seed)
    return Prepared(train_y=train_y, test_y=test_y)


def _majority(inputs: Inputs) -> Prepared:
    return Prepared(test_pred=inputs.target.majority(len(inputs.target.test_y)))


def _lexical(kind: str, inputs: Inputs) -> Prepared:
    t = inputs.target
    train_types, test_types = inputs.types[kind]
    return Prepared(test_pred=lexical_predictions(
        train_types, test_types, t.train_y, t.codes(t.train_y), t.majority(len(t.test_y))))


def _lexical_token(inputs: Inputs) -> Prepared:
    return _lexical("token", inputs)


def _lexical_lower(inputs: Inputs) -> Prepared:
    return _lexical("lower", inputs)


def _random(inputs: Inputs) -> Prepared:
    return Prepared()


# every control, in the order its arrays are computed
REGISTRY = {c.name: c for c in (
    Control("majority", "always predicting the most frequent training tag", "none",
            selectivity=True, default=True, prepare=_majority),
    Control("shuffled", "the same probe fitted on shuffled training labels", "labels",
            selectivity=True, default=True, prepare=_shuffled),
    Control("control-task", "the control task (one drawn label per word type, Hewitt & "
            "Liang)", "labels", selectivity=True, default=False, word_type="config",
            prepare=_control_task),
    Control("lexical", "the lexical baseline (the most frequent training tag of the "
            "token id)", "none", selectivity=True, default=True, word_type="token",
            gain=True, prepare=_lexical_token),
    Control("lexical-lower", "the lexical baseline per lowercased word (the most frequent "
            "training tag of the token's lowercased text)", "none", selectivity=True,
            default=False, word_type="lower", prepare=_lexical_lower),
    Control("random", "the same probe on the randomly initialised model's vectors",
            "vectors", selectivity=True, default=False, prepare=_random),
    Control("bootstrap", "95% intervals over resampled test stories", "interval",
            selectivity=False, default=True),
)}
CONTROLS = tuple(REGISTRY)
DEFAULT_CONTROLS = tuple(n for n, c in REGISTRY.items() if c.default)
# controls that give a per-tag F1 to compare with, in the order a default selectivity
# control is picked (selectivity_control: Hewitt & Liang's control task first)
SELECTIVITY_CONTROLS = ("control-task", "shuffled", "random", "majority", "lexical",
                        "lexical-lower")
# the controls fitted per cell from the strongest (hardest to beat) to the weakest: a
# randomly initialised model's vectors already hold word identity and position; the
# control task only word identity; shuffled labels nothing but the label distribution.
# The lexical baselines are left out: they are the same in every cell, and the rankings
# selectivity-f1 and beyond-lexical (probing.top) measure against them
STRONGEST_FIRST = ("random", "control-task", "shuffled", "majority")

"""The classes a probe predicts: tag ids of the store folded into probe labels.

Folding happens in this order:

1. tokens whose tag is in ``exclude`` (default: ``BOS``) are left out of probing;
2. ``merge_verbs`` folds VB, VBD, VBG, VBN, VBP, VBZ into VB;
3. ``keep`` (a list of tag names) folds every other tag into ``OTHER``;
4. ``min_support`` folds tags with fewer training tokens into ``OTHER``; a tag with no
   training token at all is always folded (a probe cannot learn it).

The result maps every remaining token to a class id; class names are the kept tags in
the store's order, then ``OTHER`` if anything was folded into it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from headprobe.errors import UsageError, opt
from probing.controls import control_task_labels, majority_predictions
from probing.metrics import Scorer
from probing.solvers import ProbeFit, fit_probes, fit_seen_classes

VERB_TAGS = ("VB", "VBD", "VBG", "VBN", "VBP", "VBZ")
OTHER = "OTHER"
DEFAULT_EXCLUDE = ("BOS",)


@dataclass
class Labels:
    """Probe classes of the selected tokens.

    names: [K] class names; train_y / test_y: class ids [n_train] / [n_test];
    train_rows / test_rows: store rows [n_train] / [n_test]; folded: tag -> class it went to;
    excluded: tags whose tokens were left out.
    """

    names: list[str]
    train_rows: np.ndarray
    train_y: np.ndarray
    test_rows: np.ndarray
    test_y: np.ndarray
    folded: dict[str, str] = field(default_factory=dict)
    excluded: list[str] = field(default_factory=list)

    @property
    def n_classes(self) -> int:
        """K, the number of classes."""
        return len(self.names)

    # the target protocol of probing.controls.Target

    def codes(self, y: np.ndarray) -> np.ndarray:
        """The class ids themselves: [n]."""
        return np.asarray(y, dtype=np.int64)

    def majority(self, n: int) -> np.ndarray:
        """The most frequent training class, n times: [n]."""
        return majority_predictions(self.train_y, n)

    def control_task(self, train_types: np.ndarray, test_types: np.ndarray,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Control-task classes [n_train], [n_test] (probing.controls)."""
        return control_task_labels(train_types, test_types, self.train_y, self.n_classes,
                                   seed)

    def scorer(self, stories: np.ndarray, n_boot: int, seed: int) -> Scorer:
        """Scores predictions [c, n_test] of the test tokens of ``stories`` [n_test]."""
        return Scorer.of_stories(self.test_y, stories, n_boot, seed, self.n_classes)

    def fit(self, X: Any, y: np.ndarray, solver: str, C: float, seed: int,
            seen_only: bool = False, init: ProbeFit | None = None) -> ProbeFit:
        """Multinomial probes of X [c, n, d] on classes y [n] (probing.solvers);
        ``seen_only``: y may lack some classes."""
        fit = fit_seen_classes if seen_only else fit_probes
        return fit(X, y, self.n_classes, solver=solver, C=C, seed=seed, init=init)

    def decide(self, logits: np.ndarray) -> np.ndarray:
        """The class of the largest logit: [...]."""
        return logits.argmax(-1)


def fold_tags(tag_ids: np.ndarray, split: np.ndarray, tag_names: list[str],
              merge_verbs: bool = False, keep: list[str] | None = None, min_support: int = 1,
              exclude: tuple[str, ...] | list[str] = DEFAULT_EXCLUDE) -> Labels:
    """Fold the store's tags into probe classes (see the module docstring).

    tag_ids: [n_tokens] store tag ids; split: [n_tokens] 0 train / 1 test;
    tag_names: id -> name. Raises UsageError for unknown tags, an empty split or a single
    class in the training data.
    """
    tag_ids = np.asarray(tag_ids)
    split = np.asarray(split)
    present = set(np.unique(tag_ids).tolist())
    for tag in keep or []:
        if tag not in tag_names or tag_names.index(tag) not in present:
            raise UsageError(f"tag {tag!r} is not present in the store")
    target = list(tag_names)  # tag id -> name of the class it goes to
    if merge_verbs:
        target = ["VB" if t in VERB_TAGS else t for t in target]
    if keep:
        wanted = set(keep) | ({"VB"} if merge_verbs and set(keep) & set(VERB_TAGS) else set())
        target = [t if t in wanted else OTHER for t in target]
    use = ~np.isin(tag_ids, [i for i, t in enumerate(tag_names) if t in set(exclude)])
    for code, name in ((0, "train"), (1, "test")):
        if not np.any(use & (split == code)):
            raise UsageError(f"the {name} split has no tokens to probe")
    counts: dict[str, int] = {}
    train_ids, train_counts = np.unique(tag_ids[use & (split == 0)], return_counts=True)
    for tid, count in zip(train_ids, train_counts, strict=True):
        counts[target[tid]] = counts.get(target[tid], 0) + int(count)
    rare = {t for t in set(target) if t != OTHER and counts.get(t, 0) < max(min_support, 1)}
    target = [OTHER if t in rare else t for t in target]
    used_targets = {target[t] for t in present if tag_names[t] not in set(exclude)}
    names = [t for t in dict.fromkeys(target) if t != OTHER and t in used_targets]
    if OTHER in used_targets:
        names.append(OTHER)
    index = {name: k for k, name in enumerate(names)}
    lookup = np.array([index.get(t, -1) for t in target], dtype=np.int64)
    y = lookup[tag_ids]
    if OTHER in names and not np.any(use & (split == 0) & (y == index[OTHER])):
        # only test tokens fell into OTHER: no probe can predict it, leave them out
        lookup[lookup == index[OTHER]] = -1
        y = lookup[tag_ids]
        use &= y >= 0
        names.pop()
    train = np.flatnonzero(use & (split == 0))
    test = np.flatnonzero(use & (split == 1))
    if len(test) == 0:
        raise UsageError("the test split has no tokens of a tag seen in training")
    if len(np.unique(y[train])) < 2:
        raise UsageError("the training data holds a single class; nothing to probe")
    folded = {tag_names[t]: target[t] for t in sorted(present)
              if target[t] != tag_names[t] and tag_names[t] not in set(exclude)
              and lookup[t] >= 0}
    excluded = [tag_names[t] for t in sorted(present)
                if tag_names[t] in set(exclude) or lookup[t] < 0]
    return Labels(names, train, y[train], test, y[test], folded, excluded)


def sample_train_stories(split: np.ndarray, stories: np.ndarray, max_tokens: int,
                         seed: int) -> tuple[np.ndarray, int]:
    """Keep whole train stories, drawn in a seeded order, while they fit in ``max_tokens``.

    split: [n_tokens] 0 train / 1 test; stories: [n_tokens] story of each token (windows of
    one story share it). The stories are put in a random order (``seed``) and the longest
    run of them from the start whose tokens add up to at most ``max_tokens`` is kept.
    Returns (split [n_tokens] with the train tokens of every other story set to -1, so no
    split takes them; the number of stories kept). UsageError when not even the first
    drawn story fits.
    """
    return _keep_stories(split, stories, 0, max_tokens, "max_train_tokens",
                         lambda ids: np.random.default_rng(seed).permutation(len(ids)))


def sample_test_stories(split: np.ndarray, stories: np.ndarray, max_tokens: int,
                        seed: int) -> tuple[np.ndarray, int]:
    """Keep whole test stories, ranked by a seeded hash of their id, while they fit in
    ``max_tokens``.

    split, stories: as for :func:`sample_train_stories`. A story's rank depends only on its
    id and ``seed`` (:func:`story_hash`), so the sample is the same whatever the order of
    the stories and however the store was sharded. Returns (split [n_tokens] with the test
    tokens of every other story set to -1; the number of stories kept).
    """
    return _keep_stories(split, stories, 1, max_tokens, "max_test_tokens",
                         lambda ids: np.argsort(np.lexsort((ids, story_hash(ids, seed)))))


def story_hash(ids: np.ndarray, seed: int) -> np.ndarray:
    """A seeded 64-bit hash of each story id [n] -> uint64 [n] (SplitMix64's finaliser
    over the id mixed with the seed's own hash)."""
    def mix(x: np.ndarray) -> np.ndarray:
        x = x ^ (x >> np.uint64(30))
        x = x * np.uint64(0xBF58476D1CE4E5B9)
        x = x ^ (x >> np.uint64(27))
        x = x * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))

    with np.errstate(over="ignore"):
        salt = mix(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))
        return mix(np.asarray(ids).astype(np.int64).view(np.uint64) ^ salt)


def _keep_stories(split: np.ndarray, stories: np.ndarray, code: int, max_tokens: int,
                  name: str, ranking: Any) -> tuple[np.ndarray, int]:
    """The longest run of the stories of split ``code``, in the order ``ranking(ids)``
    gives ([n_stories] rank of each sorted unique id), whose tokens fit in ``max_tokens``;
    the tokens of split ``code`` of every other story get split -1."""
    if max_tokens < 1:
        raise UsageError(f"{opt(name)} must be a positive number of tokens")
    split = np.asarray(split)
    member = split == code
    ids, inverse = np.unique(np.asarray(stories)[member], return_inverse=True)
    rank = np.asarray(ranking(ids))
    sizes = np.bincount(inverse, minlength=len(ids))[np.argsort(rank)]  # in ranked order
    kept = int(np.searchsorted(np.cumsum(sizes), max_tokens, side="right"))
    if kept == 0:
        what = "train" if code == 0 else "test"
        raise UsageError(f"{opt(name)} {max_tokens} is smaller than the first drawn {what} "
                         f"story ({int(sizes[0]) if len(sizes) else 0} tokens)")
    out = split.astype(np.int8)
    out[np.flatnonzero(member)[rank[inverse] >= kept]] = -1
    return out, kept

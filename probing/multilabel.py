"""One-vs-rest probes on tag sets: "does this token cover a closing quote?".

A model token can cover several spaCy tokens (``."`` covers ``.`` and ``''``), and the
dataset records all their tags (:mod:`datasets_build.tagsets`). With ``multilabel`` the
grid fits, per cell and per tag T, a binary logistic-regression probe of "the token covers
a spaCy token tagged T" against everything else, with the same solver, controls and
scores as the multiclass probes; each tag is scored on its own (precision, recall, F1 and
support of the tokens that hold it), so a token holding ``.`` and ``''`` counts for both.

The tags to probe come from the tag sets as the multiclass classes come from the tags
(:mod:`probing.labels`): tokens whose own tag is in ``exclude`` are left out,
``merge_verbs`` unites VB, VBD, ... into VB, ``keep`` chooses the tags, and tags with fewer
than ``min_support`` training tokens (or no training token without them) get no probe.
There is no OTHER: a token that holds none of the probed tags is a negative for all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from datasets_build.dataset import has_tag_sets
from datasets_build.tagsets import tag_matrix
from headprobe.errors import UsageError
from probing.labels import DEFAULT_EXCLUDE, VERB_TAGS
from probing.metrics import Scores, StoryScorer
from probing.one_vs_rest import OneVsRest, fit_one_vs_rest

# What the per-cell and control arrays mean for one-vs-rest probes, where it differs
# from probing.results.DESCRIPTIONS.
DESCRIPTIONS = {
    "precision": "per-tag precision on the test split of the tag's one-vs-rest probe",
    "recall": "per-tag recall on the test split of the tag's one-vs-rest probe",
    "f1": "per-tag F1 on the test split of the tag's one-vs-rest probe (does the token "
          "cover the tag)",
    "support": "test tokens that cover the tag",
    "f1_majority": "per-tag F1 of always giving each tag its more frequent training value",
    "macro_f1": "mean F1 over the probed tags that occur in the test split",
    "accuracy": "fraction of test tokens whose whole set of probed tags is predicted exactly",
    "accuracy_shuffled": "exact-set accuracy of the shuffled-label control",
    "accuracy_random": "exact-set accuracy of the random-weights control",
    "accuracy_majority": "exact-set accuracy of the majority baseline",
    "accuracy_control_task": "exact-set accuracy of the control task (a drawn tag set per "
                             "word type)",
    "f1_control_task": "per-tag F1 of the control task (each word type given the tag set of "
                       "a drawn training token)",
    "f1_lexical": "per-tag F1 of the lexical baseline (each token id given its most frequent "
                  "training tag set)",
    "f1_ambiguous": "per-tag F1 of the tag's one-vs-rest probe on the ambiguous test tokens "
                    "(their token id carries two or more tag sets in training, each on at "
                    "least parameter 'ambiguous_min_count' tokens)",
    "selectivity_accuracy": "exact-set accuracy minus that of the control named in parameter "
                            "'selectivity_control'",
    "coef": "one-vs-rest probe weights on the raw stored vectors [site, layer, head, tag, "
            "d_head]: the logit of 'covers the tag' is x @ coef + intercept",
    "intercept": "one-vs-rest probe biases [site, layer, head, tag]",
}


@dataclass
class TagSets:
    """One-vs-rest targets of the selected tokens (the multilabel counterpart of Labels).

    names: [K] probed tags; train_y / test_y: bool [n_train, K] / [n_test, K], the token
    covers the tag; train_rows / test_rows: store rows; folded: tag -> tag it was merged
    into; excluded: tags whose tokens were left out; not_probed: tags present but given no
    probe (not kept, or too rare).
    """

    names: list[str]
    train_rows: np.ndarray
    train_y: np.ndarray
    test_rows: np.ndarray
    test_y: np.ndarray
    folded: dict[str, str] = field(default_factory=dict)
    excluded: list[str] = field(default_factory=list)
    not_probed: list[str] = field(default_factory=list)

    @property
    def n_classes(self) -> int:
        """K, the number of probed tags."""
        return len(self.names)

    # the target protocol of probing.controls.Target

    def codes(self, y: np.ndarray) -> np.ndarray:
        """One id per distinct tag set: [n]."""
        return np.unique(y, axis=0, return_inverse=True)[1].reshape(-1).astype(np.int64)

    def majority(self, n: int) -> np.ndarray:
        """Each tag's more frequent training value, n times: bool [n, K]."""
        return majority_sets(self.train_y, n)

    def control_task(self, train_types: np.ndarray, test_types: np.ndarray,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Control-task tag sets [n_train, K], [n_test, K] (:func:`control_task_sets`)."""
        return control_task_sets(train_types, test_types, self.train_y, seed)

    def scorer(self, stories: np.ndarray, n_boot: int, seed: int) -> SetScorer:
        """Scores predictions bool [c, n_test, K] of the test tokens of ``stories``."""
        return SetScorer.of_stories(self.test_y, stories, n_boot, seed)

    def fit(self, X: Any, y: np.ndarray, solver: str, C: float, seed: int,
            seen_only: bool = False, init: Any = None) -> OneVsRest:
        """One-vs-rest probes of X [c, n, d] on tag sets y bool [n, K]
        (probing.one_vs_rest); ``seen_only``: a tag may be constant in y."""
        return fit_one_vs_rest(X, y, solver=solver, C=C, seed=seed, seen_only=seen_only)

    def decide(self, logits: np.ndarray) -> np.ndarray:
        """The token covers each tag whose logit is positive: bool [..., K]."""
        return logits > 0


def check_store(store: Any) -> None:
    """Refuse a store whose dataset did not record tag sets (built before them)."""
    manifest = store.attrs.get("dataset_manifest")
    if manifest and not has_tag_sets(manifest):
        raise UsageError(f"{store.path} comes from a dataset that did not record every tag its "
                         "tokens cover (dataset format version "
                         f"{manifest.get('format_version')}); rebuild it with python -m "
                         "datasets_build and extract again")


def _targets(tag_names: list[str], merge_verbs: bool, keep: list[str] | None,
             exclude: set[str]) -> list[str | None]:
    """Per tag id, the probed tag it counts for (None: no probe)."""
    target: list[str | None] = [
        "VB" if merge_verbs and t in VERB_TAGS else t for t in tag_names]
    if keep:
        wanted = set(keep) | ({"VB"} if merge_verbs and set(keep) & set(VERB_TAGS) else set())
        target = [t if t in wanted else None for t in target]
    return [None if name in exclude else t for name, t in zip(tag_names, target, strict=True)]


def tag_sets(sets: np.ndarray, tag_ids: np.ndarray, split: np.ndarray, tag_names: list[str],
             merge_verbs: bool = False, keep: list[str] | None = None, min_support: int = 1,
             exclude: tuple[str, ...] | list[str] = DEFAULT_EXCLUDE) -> TagSets:
    """The one-vs-rest targets of a store's tokens (see the module docstring).

    sets: [n_tokens] uint64 tag sets; tag_ids: [n_tokens] each token's own tag (decides
    ``exclude``); split: [n_tokens] 0 train / 1 test; tag_names: id -> name. Raises
    UsageError for unknown tags, an empty split or no tag to probe.
    """
    held = tag_matrix(sets, len(tag_names))                       # [n_tokens, n_tags]
    present = held.any(0)
    for tag in keep or []:
        if tag not in tag_names or not present[tag_names.index(tag)]:
            raise UsageError(f"tag {tag!r} is not present in the store")
    use = ~np.isin(tag_ids, [i for i, t in enumerate(tag_names) if t in set(exclude)])
    split = np.asarray(split)
    for code, name in ((0, "train"), (1, "test")):
        if not np.any(use & (split == code)):
            raise UsageError(f"the {name} split has no tokens to probe")
    train, test = np.flatnonzero(use & (split == 0)), np.flatnonzero(use & (split == 1))
    target = _targets(tag_names, merge_verbs, keep, set(exclude))
    members: dict[str, list[int]] = {}  # probed tag -> ids of the tags it counts
    for i, t in enumerate(target):
        if t is not None and present[i]:
            members.setdefault(t, []).append(i)
    names = list(members)
    Y = np.stack([held[:, ids].any(1) for ids in members.values()], 1) if names else (
        np.zeros((len(held), 0), bool))
    positives = Y[train].sum(0)
    probed = (positives >= max(min_support, 1)) & (positives < len(train))
    if not probed.any():
        raise UsageError("no tag has enough training tokens to probe")
    kept = [t for t, p in zip(names, probed, strict=True) if p]
    folded = {t: target[i] for i, t in enumerate(tag_names)
              if present[i] and target[i] not in (None, t)}
    excluded = [t for i, t in enumerate(tag_names) if present[i] and t in set(exclude)]
    not_probed = [t for i, t in enumerate(tag_names) if present[i] and t not in excluded
                  and target[i] not in kept]
    return TagSets(kept, train, Y[train][:, probed], test, Y[test][:, probed], folded,
                   excluded, not_probed)


def control_task_sets(train_types: np.ndarray, test_types: np.ndarray, train_y: np.ndarray,
                      seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Control-task tag sets of the train [n_train, K] and test [n_test, K] tokens.

    As :func:`probing.controls.control_task_labels` for tag sets: every word type gets the
    tag set of a training token drawn with the seeded generator (so sets come with their
    frequencies in ``train_y`` bool [n_train, K]); the draw of type t is the t-th of one
    stream, and test types never seen in training get their own draw.
    """
    n_types = int(max(train_types.max(initial=0), test_types.max(initial=0))) + 1
    uniform = np.random.default_rng(seed).random(n_types)
    drawn = train_y[np.minimum((uniform * len(train_y)).astype(np.int64), len(train_y) - 1)]
    return drawn[train_types], drawn[test_types]


def majority_sets(train_y: np.ndarray, n_test: int) -> np.ndarray:
    """Each tag's more frequent training value for every test token: bool [n_test, K]."""
    return np.broadcast_to(train_y.mean(0) > 0.5, (n_test, train_y.shape[1]))


class SetScorer(StoryScorer):
    """Scores one-vs-rest predictions of some cells on the test tokens, per story; accuracy
    is exact-set accuracy."""

    def counts(self, pred: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
        """(tp, fp, fn), each [c, n_stories, K], of predictions pred bool [c, n_test, K]
        against y bool [n_test, K]."""
        order = np.argsort(self.groups, kind="stable")
        sorted_groups = self.groups[order]
        starts = np.flatnonzero(np.r_[True, np.diff(sorted_groups) != 0]) if len(order) \
            else np.zeros(0, np.int64)
        out = []
        for hit_pred, hit_true in ((True, True), (True, False), (False, True)):
            full = np.zeros((len(pred), self.n_groups, y.shape[-1]), np.int64)
            if len(order):
                full[:, sorted_groups[starts]] = [
                    np.add.reduceat(((p == hit_pred) & (y == hit_true))[order]
                                    .astype(np.int32), starts, axis=0) for p in pred]
            out.append(full)
        return tuple(out)

    def accuracy(self, pred: np.ndarray, y: np.ndarray, s: Scores) -> np.ndarray:
        """Exact-set accuracy [c]: the whole set of probed tags predicted."""
        return np.stack([np.all(p == y, axis=-1).mean() if len(y) else 0.0 for p in pred])

"""Scores of probe predictions: per-class precision/recall/F1/support, macro-F1, accuracy,
and bootstrap intervals over stories.

Undefined ratios (no predicted or no true token of a class) count as 0, as scikit-learn's
``zero_division=0``. Macro-F1 averages over the classes that occur in the test tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Scores:
    """precision, recall, f1, support: [..., K]; macro_f1, accuracy: [...]."""

    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray
    macro_f1: np.ndarray
    accuracy: np.ndarray


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros(np.broadcast_shapes(num.shape, den.shape)),
                     where=den > 0)


def scores_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> Scores:
    """Scores from true/false positive and false negative counts, each [..., K]."""
    tp, fp, fn = (np.asarray(a, dtype=np.float64) for a in (tp, fp, fn))
    support = tp + fn
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, support)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    occurs = support > 0
    macro = _ratio((f1 * occurs).sum(-1), occurs.sum(-1).astype(np.float64))
    accuracy = _ratio(tp.sum(-1), support.sum(-1))
    return Scores(precision, recall, f1, support.astype(np.int64), macro, accuracy)


def group_counts(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray,
                 n_classes: int, n_groups: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-group counts (tp, fp, fn), each [..., n_groups, K].

    y_true: [n]; y_pred: [..., n]; groups: [n] group index 0..n_groups-1 (e.g. story);
    n_groups: default one past the largest index.
    """
    y_pred = np.asarray(y_pred)
    if n_groups is None:
        n_groups = int(groups.max()) + 1 if len(groups) else 0
    lead = y_pred.shape[:-1]
    flat = y_pred.reshape(int(np.prod(lead)), y_pred.shape[-1])
    tp = np.zeros((len(flat), n_groups, n_classes), dtype=np.int64)
    fp = np.zeros_like(tp)
    fn = np.zeros_like(tp)
    true_cell = groups * n_classes + y_true
    size = n_groups * n_classes
    true_counts = np.bincount(true_cell, minlength=size)
    for c, pred in enumerate(flat):
        hit = pred == y_true
        tp[c] = np.bincount(true_cell[hit], minlength=size).reshape(n_groups, n_classes)
        pred_counts = np.bincount(groups * n_classes + pred, minlength=size)
        fp[c] = (pred_counts.reshape(n_groups, n_classes) - tp[c])
        fn[c] = true_counts.reshape(n_groups, n_classes) - tp[c]
    shape = (*lead, n_groups, n_classes)
    return tp.reshape(shape), fp.reshape(shape), fn.reshape(shape)


def score(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> Scores:
    """Scores of predictions y_pred [..., n] against y_true [n]."""
    tp, fp, fn = group_counts(y_true, y_pred, np.zeros(len(y_true), dtype=np.int64), n_classes)
    return scores_from_counts(tp[..., 0, :], fp[..., 0, :], fn[..., 0, :])


def bootstrap_weights(n_groups: int, n_boot: int, seed: int) -> np.ndarray:
    """How often each group is drawn in each resample: [n_boot, n_groups] integer counts."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_groups, size=(n_boot, n_groups))
    return np.stack([np.bincount(d, minlength=n_groups) for d in draws])


def bootstrap_f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, weights: np.ndarray,
                 level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of per-class F1 over resampled groups.

    tp, fp, fn: [..., n_groups, K] per-group counts; weights: [n_boot, n_groups].
    Returns (low, high), each [..., K].
    """
    return _percentiles(_resampled_f1(tp, fp, fn, weights), level)


def _resampled_f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray,
                  weights: np.ndarray) -> np.ndarray:
    """Per-class F1 of every resample: [n_boot, ..., K] from counts [..., n_groups, K]."""
    def resample(counts: np.ndarray) -> np.ndarray:  # -> [n_boot, ..., K]
        return np.einsum("bg,...gk->b...k", weights, counts.astype(np.float64))

    btp, bfp, bfn = resample(tp), resample(fp), resample(fn)
    return _ratio(2 * btp, 2 * btp + bfp + bfn)


def _percentiles(values: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    alpha = (1 - level) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha], axis=0)
    return low, high


def bootstrap_f1_difference(counts: tuple[np.ndarray, ...], baseline: tuple[np.ndarray, ...],
                            weights: np.ndarray, level: float = 0.95
                            ) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of F1 minus a baseline's F1, both scored on the same resampled
    groups. counts, baseline: (tp, fp, fn), each [..., n_groups, K]; weights:
    [n_boot, n_groups]. Returns (low, high), each [..., K]."""
    return _percentiles(_resampled_f1(*counts, weights) - _resampled_f1(*baseline, weights),
                        level)


class StoryScorer:
    """Scores predictions of some cells on test tokens grouped by story, with bootstrap
    intervals over stories. Subclasses count (tp, fp, fn) per story and say what accuracy
    is; :meth:`subset` scores a subset of the tokens under the same resamples.

    y: [n] true targets; groups: [n] story index; n_groups: stories; weights:
    [n_boot, n_groups] resample counts.
    """

    def __init__(self, y: np.ndarray, groups: np.ndarray, n_groups: int,
                 weights: np.ndarray):
        self.y, self.groups, self.n_groups, self.weights = y, groups, n_groups, weights

    @classmethod
    def of_stories(cls, y: np.ndarray, stories: np.ndarray, n_boot: int,
                   seed: int) -> StoryScorer:
        """A scorer of the tokens of ``stories`` [n] (any ids; one group each)."""
        _, groups = np.unique(stories, return_inverse=True)
        n_groups = int(groups.max()) + 1 if len(groups) else 0
        return cls(y, groups, n_groups, bootstrap_weights(n_groups, n_boot, seed))

    def subset(self, mask: np.ndarray) -> StoryScorer:
        """The scorer of the tokens ``mask`` [n] selects (same stories and resamples)."""
        return type(self)(self.y[mask], self.groups[mask], self.n_groups, self.weights)

    def counts(self, pred: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
        """(tp, fp, fn), each [c, n_groups, K], of predictions pred [c, n, ...] against y."""
        raise NotImplementedError

    def accuracy(self, pred: np.ndarray, y: np.ndarray, s: Scores) -> np.ndarray:
        """Accuracy [c] of predictions pred [c, n, ...] (s: their scores)."""
        return s.accuracy

    def __call__(self, pred: np.ndarray, interval: bool = False,
                 y: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """pred: [c, n(, K)] -> metric name -> [c, K] or [c]; y: true targets (default:
        the tags; the control task scores against its own)."""
        y = self.y if y is None else y
        tp, fp, fn = self.counts(pred, y)
        s = scores_from_counts(tp.sum(-2), fp.sum(-2), fn.sum(-2))
        out = {"precision": s.precision, "recall": s.recall, "f1": s.f1,
               "support": s.support, "macro_f1": s.macro_f1,
               "accuracy": self.accuracy(pred, y, s)}
        if interval:
            out["f1_lo"], out["f1_hi"] = bootstrap_f1(tp, fp, fn, self.weights)
        return out

    def gain(self, pred: np.ndarray, baseline: np.ndarray, interval: bool = False
             ) -> dict[str, np.ndarray]:
        """Per-tag F1 of pred [c, n(, K)] minus that of baseline [n(, K)] on these tokens:
        ``lexical_gain`` [c, K], and with ``interval`` its bootstrap bounds
        ``lexical_gain_lo`` / ``_hi`` (both scored on the same resampled stories)."""
        counts = self.counts(pred, self.y)
        base = self.counts(baseline[None], self.y)
        f1, f1_base = (scores_from_counts(*(a.sum(-2) for a in c)).f1 for c in (counts, base))
        out = {"lexical_gain": f1 - f1_base}
        if interval:
            out["lexical_gain_lo"], out["lexical_gain_hi"] = bootstrap_f1_difference(
                counts, base, self.weights)
        return out


class Scorer(StoryScorer):
    """Scores single-label predictions (class ids; ``k`` classes)."""

    def __init__(self, y: np.ndarray, groups: np.ndarray, n_groups: int,
                 weights: np.ndarray, k: int):
        super().__init__(y, groups, n_groups, weights)
        self.k = k

    @classmethod
    def of_stories(cls, y: np.ndarray, stories: np.ndarray, n_boot: int, seed: int,
                   k: int = 0) -> Scorer:
        base = StoryScorer.of_stories(y, stories, n_boot, seed)
        return cls(y, base.groups, base.n_groups, base.weights, k)

    def subset(self, mask: np.ndarray) -> Scorer:
        return Scorer(self.y[mask], self.groups[mask], self.n_groups, self.weights, self.k)

    def counts(self, pred: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
        return group_counts(y, pred, self.groups, self.k, self.n_groups)

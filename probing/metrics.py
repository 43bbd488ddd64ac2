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
                 n_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-group counts (tp, fp, fn), each [..., n_groups, K].

    y_true: [n]; y_pred: [..., n]; groups: [n] group index 0..n_groups-1 (e.g. story).
    """
    y_pred = np.asarray(y_pred)
    n_groups = int(groups.max()) + 1 if len(groups) else 0
    lead = y_pred.shape[:-1]
    flat = y_pred.reshape(-1, y_pred.shape[-1])
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
    def resample(counts: np.ndarray) -> np.ndarray:  # -> [n_boot, ..., K]
        return np.einsum("bg,...gk->b...k", weights, counts.astype(np.float64))

    btp, bfp, bfn = resample(tp), resample(fp), resample(fn)
    f1 = _ratio(2 * btp, 2 * btp + bfp + bfn)
    alpha = (1 - level) / 2
    low, high = np.quantile(f1, [alpha, 1 - alpha], axis=0)
    return low, high

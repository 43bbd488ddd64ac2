"""Scores against scikit-learn, and bootstrap intervals over stories."""

import numpy as np
from sklearn.metrics import classification_report

from probing.metrics import bootstrap_f1, bootstrap_weights, group_counts, score


def test_scores_match_classification_report():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 400)
    pred = np.where(rng.random(400) < 0.6, y, rng.integers(0, 6, 400) % 5)
    pred[pred == 4] = 3  # class 4 is never predicted: precision 0 by convention
    s = score(y, pred[None], 5)
    rep = classification_report(y, pred, output_dict=True, zero_division=0)
    for k in range(5):
        assert np.isclose(s.f1[0, k], rep[str(k)]["f1-score"])
        assert np.isclose(s.precision[0, k], rep[str(k)]["precision"])
        assert s.support[0, k] == rep[str(k)]["support"]
    assert np.isclose(s.macro_f1[0], rep["macro avg"]["f1-score"])
    assert np.isclose(s.accuracy[0], rep["accuracy"])


def test_bootstrap_resamples_stories():
    y = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    stories = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    perfect = y.copy()
    tp, fp, fn = group_counts(y, perfect[None], stories, 2)
    lo, hi = bootstrap_f1(tp, fp, fn, bootstrap_weights(4, 200, 0))
    np.testing.assert_allclose(lo, 1.0)
    np.testing.assert_allclose(hi, 1.0)
    # one story all wrong: intervals widen and contain the point estimate
    noisy = y.copy()
    noisy[:2] = 1 - noisy[:2]
    tp, fp, fn = group_counts(y, noisy[None], stories, 2)
    lo, hi = bootstrap_f1(tp, fp, fn, bootstrap_weights(4, 500, 0))
    point = score(y, noisy[None], 2).f1
    assert np.all(lo <= point) and np.all(point <= hi) and np.all(hi - lo > 0.1)
    weights = bootstrap_weights(4, 10, 1)
    assert weights.shape == (10, 4) and np.all(weights.sum(1) == 4)

"""The fast batched solver against the scikit-learn reference, and the label folding."""

import numpy as np
import pytest

from extract.store import open_store
from headprobe.errors import UsageError
from probing.labels import fold_tags
from probing.metrics import score
from probing.solvers import fit_fast, fit_sklearn


def _synthetic(n_cells, n, k, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.choice(k, size=n, p=np.linspace(1, 0.05, k) / np.linspace(1, 0.05, k).sum())
    y[:k] = np.arange(k)
    centres = rng.normal(size=(n_cells, k, 4)) * 1.5
    X = centres[:, y] + rng.normal(size=(n_cells, n, 4))
    return (X * 5 + 3).astype(np.float32), y


def test_fast_matches_sklearn_on_the_shared_store(shared_store):
    with open_store(shared_store) as store:
        table = store.tokens(["fine_tag", "split"])
        labels = fold_tags(table["fine_tag"], table["split"], store.tags["fine"])
        for site, layer in (("key", 1), ("query", 5)):
            X = store.read_layer(site, layer).transpose(1, 0, 2)
            train, test = X[:, labels.train_rows], X[:, labels.test_rows]
            k = labels.n_classes
            ref = score(labels.test_y, fit_sklearn(train, labels.train_y, k).predict(test), k)
            fast = score(labels.test_y, fit_fast(train, labels.train_y, k).predict(test), k)
            assert np.abs(ref.macro_f1 - fast.macro_f1).max() <= 0.01
            assert ref.macro_f1.max() > 0.2  # the probes learn something


def test_fast_subsample_path_reaches_the_same_optimum():
    X, y = _synthetic(3, 9000, 12)  # large enough for the warm-start subsample
    fast = fit_fast(X, y, 12, n_sub=1024)
    ref = fit_sklearn(X, y, 12)
    agree = (fast.predict(X) == ref.predict(X)).mean(axis=1)
    assert agree.min() > 0.995
    np.testing.assert_allclose(fast.coef, ref.coef, atol=0.02 * np.abs(ref.coef).max())


def test_binary_probe_matches_sklearn_and_raw_weights_predict():
    X, y = _synthetic(2, 1500, 2, seed=1)
    fast, ref = fit_fast(X, y, 2), fit_sklearn(X, y, 2)
    np.testing.assert_allclose(fast.coef, ref.coef, rtol=0.02, atol=1e-3)
    logits = X[0] @ fast.coef[0].T + fast.intercept[0]
    np.testing.assert_allclose(logits, fast.decision(X)[0], rtol=1e-6, atol=1e-6)
    # the two products may round apart in the last bits: only exact ties can flip
    differ = logits.argmax(1) != fast.predict(X)[0]
    assert np.all(np.abs(logits[:, 1] - logits[:, 0])[differ] <= 1e-6)


def test_fold_tags_merges_verbs_and_rare_tags():
    names = ["BOS", "NN", "VB", "VBD", "VBZ", "DT", "UH"]
    tags = np.array([0, 1, 2, 3, 4, 5, 1, 3, 6, 0, 1, 3, 5, 6, 4])
    split = np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    lab = fold_tags(tags, split, names, merge_verbs=True, min_support=2)
    assert lab.names == ["NN", "VB", "OTHER"]
    assert lab.folded == {"VBD": "VB", "VBZ": "VB", "DT": "OTHER", "UH": "OTHER"}
    assert lab.excluded == ["BOS"]
    assert 0 not in lab.train_rows and 9 not in lab.test_rows  # BOS left out
    assert [lab.names[i] for i in lab.test_y] == ["NN", "VB", "OTHER", "OTHER", "VB"]
    kept = fold_tags(tags, split, names, keep=["VBD"])
    assert kept.names == ["VBD", "OTHER"]


def test_fold_tags_rejects_bad_input():
    names = ["BOS", "NN", "VB"]
    split = np.array([0, 0, 1, 1])
    with pytest.raises(UsageError, match="not present"):
        fold_tags(np.array([1, 2, 1, 2]), split, names, keep=["JJ"])
    with pytest.raises(UsageError, match="single class"):
        fold_tags(np.array([1, 1, 1, 2]), split, names)
    with pytest.raises(UsageError, match="test split has no tokens"):
        fold_tags(np.array([1, 2, 0, 0]), split, names)

"""One-vs-rest probes on tag sets: folding, a planted signal, the CLI and the shared store."""

import h5py
import numpy as np
import pytest
from sklearn.metrics import f1_score

from datasets_build.tagsets import has_tag, tag_bits
from extract.store import open_store, write_store
from headprobe.cli import run_main
from headprobe.errors import UsageError
from probing.__main__ import main
from probing.grid import GridConfig, fit_probe, run_grid
from probing.multilabel import DESCRIPTIONS, control_task_sets, tag_sets
from probing.one_vs_rest import fit_one_vs_rest
from probing.results import read_results
from probing.top import top_cells

FINE = ["BOS", "NN", "VBD", "VBZ", ".", "''"]
TAGS = {"fine": FINE, "coarse": FINE}


def sets_of(*names):
    return np.bitwise_or.reduce(tag_bits(np.array([FINE.index(n) for n in names])))


def test_tag_sets_fold_like_the_multiclass_labels():
    rows = [("BOS",), ("NN",), ("VBD",), ("VBZ", "NN"), (".", "''"), ("''",), (".",), ("NN",)]
    sets = np.array([sets_of(*r) for r in rows * 2], dtype=np.uint64)
    own = np.array([FINE.index(r[0]) for r in rows * 2])
    split = np.repeat([0, 1], len(rows))
    got = tag_sets(sets, own, split, FINE)
    assert got.names == ["NN", "VBD", "VBZ", ".", "''"] and got.excluded == ["BOS"]
    assert got.train_rows.tolist() == list(range(1, 8))
    assert got.train_y[:, got.names.index("''")].tolist() == [0, 0, 0, 1, 1, 0, 0]
    assert got.train_y[:, got.names.index("NN")].tolist() == [1, 0, 1, 0, 0, 0, 1]
    merged = tag_sets(sets, own, split, FINE, merge_verbs=True, min_support=2)
    assert merged.names == ["NN", "VB", ".", "''"] and merged.folded == {"VBD": "VB",
                                                                          "VBZ": "VB"}
    assert merged.train_y[:, 1].tolist() == [0, 1, 1, 0, 0, 0, 0]
    kept = tag_sets(sets, own, split, FINE, keep=["''"])
    assert kept.names == ["''"] and set(kept.not_probed) == {"NN", "VBD", "VBZ", "."}
    assert tag_sets(sets, own, split, FINE, min_support=3).names == ["NN"]
    with pytest.raises(UsageError, match="not present"):
        tag_sets(sets, own, split, FINE, keep=["DT"])
    with pytest.raises(UsageError, match="enough training tokens"):
        tag_sets(sets, own, split, FINE, min_support=5)
    with pytest.raises(UsageError, match="test split has no tokens"):
        tag_sets(sets, own, np.zeros_like(split), FINE)


def _store(path, n_stories=24, seed=0, manifest=None):
    """Tokens tagged NN, VBD, '.' or "''"; a third of the '.' tokens also cover "''" (".\\"").
    Head (1, 2) of the keys encodes "covers ''", head (0, 1) "covers '.'"."""
    rng = np.random.default_rng(seed)
    per = 20
    n = n_stories * per
    story = np.repeat(np.arange(n_stories), per)
    position = np.tile(np.arange(per), n_stories)
    own = rng.choice([1, 2, 4, 5], n, p=[0.4, 0.3, 0.2, 0.1])
    own[position == 0] = 0
    sets = tag_bits(own)
    fused = (own == 4) & (rng.uniform(size=n) < 0.35)
    sets[fused] |= tag_bits(np.array([5]))[0]
    keys = rng.normal(size=(n, 2, 3, 4)).astype(np.float32)
    keys[:, 1, 2, 0] += 4 * has_tag(sets, 5)
    keys[:, 0, 1, 1] += 4 * has_tag(sets, 4)
    table = {"input_id": own + 10, "story_id": story, "position": position, "fine_tag": own,
             "coarse_tag": own, "fine_tags": sets, "coarse_tags": sets,
             "split": story >= n_stories * 3 // 4}
    attrs = {"dataset_manifest": manifest} if manifest else None
    return write_store(path, table, {"key": keys, "query": keys[:, ::-1].copy()},
                       attrs=attrs, tags=TAGS, dtype="float32")


def test_one_vs_rest_grid_finds_the_planted_heads(tmp_path):
    store = _store(tmp_path / "a.h5")
    res = run_grid(store, GridConfig(sites=("key",), multilabel=True, n_boot=100),
                   log=lambda msg: None)
    a, close, period = res.arrays, res.tags.index("''"), res.tags.index(".")
    assert res.tags == ["NN", "VBD", ".", "''"] and a["coef"].shape == (1, 2, 3, 4, 4)
    assert a["f1"][0, 1, 2, close] > 0.9 and a["f1"][0, 0, 1, period] > 0.9
    others = np.delete(a["f1"][0, :, :, close].ravel(), 5)
    assert others.max() < 0.5 and a["f1_shuffled"][0, 1, 2, close] < 0.5
    assert (a["f1_majority"][0, :, :, close] == 0).all()
    assert (a["f1_lo"] <= a["f1"] + 1e-9).all() and (a["f1"] <= a["f1_hi"] + 1e-9).all()
    # the scores are those of the stored probes' predictions on the test tokens
    with open_store(store) as opened:
        rows = res.labels.test_rows
        X = opened.read("key", 1, 2, index=rows)
    pred = X @ a["coef"][0, 1, 2].T + a["intercept"][0, 1, 2] > 0
    truth = res.labels.test_y
    assert a["support"][0, 1, 2].tolist() == truth.sum(0).tolist()
    np.testing.assert_allclose(a["f1"][0, 1, 2], f1_score(truth, pred, average=None))
    assert a["accuracy"][0, 1, 2] == pytest.approx((pred == truth).all(1).mean())
    one = fit_probe(store, "key", 1, 2, multilabel=True, n_boot=100)
    assert one.predict(X).shape == truth.shape and (one.predict(X) == pred).mean() > 0.99
    np.testing.assert_allclose(one.metrics["f1"], a["f1"][0, 1, 2], atol=1e-6)


def test_multilabel_from_the_command_line(tmp_path, capsys):
    store = _store(tmp_path / "a.h5")
    out = tmp_path / "probes"
    assert main(["fit", "--store", str(store), "--out", str(out), "--multilabel", "--tags",
                 "'',.", "--bootstrap", "50", "--sites", "key"]) == 0
    res = read_results(out)
    assert res.tags == [".", "''"] and res.attrs["multilabel"] is True
    assert res.attrs["not_probed_tags"] == ["NN", "VBD"]
    best = top_cells(res, "''", k=1)[0]
    assert (best["layer"], best["head"]) == (1, 2) and best["f1"] > 0.9
    with h5py.File(out / "probes.h5") as f:
        assert f["accuracy"].attrs["description"] == DESCRIPTIONS["accuracy"]
    capsys.readouterr()
    old = _store(tmp_path / "old.h5", manifest={"format": "headprobe-dataset",
                                                 "format_version": 2})
    code = run_main(main, ["fit", "--store", str(old), "--out", str(tmp_path / "no"),
                           "--multilabel"], prog="python -m probing")
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "rebuild it" in err
    assert not (tmp_path / "no").exists()


def test_shared_store_gives_both_quotation_marks_a_probe(shared_store):
    res = run_grid(shared_store, GridConfig(tags=["``", "''"], layers=[2], multilabel=True,
                                            n_boot=50), log=lambda msg: None)
    with open_store(shared_store) as store:
        t = store.tokens(["fine_tags", "split"])
    for k, tag in enumerate(res.tags):
        held = has_tag(t["fine_tags"], store.tags["fine"].index(tag)) & (t["split"] == 1)
        assert (res.arrays["support"][..., k] == held.sum()).all() and held.sum() > 0
        best = np.unravel_index(res.arrays["f1"][0, 0, :, k].argmax(), (16,))
        assert res.arrays["f1"][0, 0, best, k] > res.arrays["f1_shuffled"][0, 0, best, k]


@pytest.mark.parametrize("n_sub", [4096, 64])  # all rows, or a warm start on a subsample
def test_fast_one_vs_rest_reaches_the_sklearn_optimum(tmp_path, n_sub):
    store = _store(tmp_path / "a.h5")
    with open_store(store) as opened:
        t = opened.tokens(["fine_tag", "fine_tags", "split"])
        labels = tag_sets(t["fine_tags"], t["fine_tag"], t["split"], FINE)
        X = opened.read_layer("key", 1, index=labels.train_rows).transpose(1, 0, 2)
    Y = labels.train_y
    fast = fit_one_vs_rest(X, Y, n_sub=n_sub)
    ref = fit_one_vs_rest(X, Y, solver="sklearn")
    assert fast.coef.shape == ref.coef.shape == (3, Y.shape[1], 4)

    def objective(fit):  # scikit-learn's: mean log-loss + ||w||^2 / (2 C n), standardised w
        z = fit.decision(X)
        w = fit.coef * X.std(1)[:, None, :]
        return (np.logaddexp(0, z) - Y * z).mean(1) + (w ** 2).sum(-1) / (2 * len(Y))

    np.testing.assert_allclose(objective(fast), objective(ref), atol=1e-5)
    assert (fast.predict(X) == ref.predict(X)).mean() > 0.995


def test_control_task_gives_each_word_type_one_drawn_tag_set():
    train_y = np.array([[1, 0], [1, 0], [1, 0], [0, 1]], bool)
    types = np.arange(4000) % 1000
    train, test = control_task_sets(types, np.array([3, 1500]), train_y, seed=0)
    assert train.shape == (4000, 2) and test.shape == (2, 2)
    for t in (0, 7, 999):  # every token of a type has its type's set
        assert (train[types == t] == train[types == t][0]).all()
    assert (test[0] == train[3]).all()  # a test type seen in training keeps its set
    assert {tuple(r) for r in train} <= {(True, False), (False, True)}
    assert train[:1000, 0].mean() == pytest.approx(0.75, abs=0.05)  # drawn as often as held


def test_multilabel_with_the_control_task_and_without_mdl(tmp_path, capsys):
    store = _store(tmp_path / "a.h5")
    out = tmp_path / "probes"
    assert main(["fit", "--store", str(store), "--out", str(out), "--multilabel", "--sites",
                 "key", "--bootstrap", "20", "--controls",
                 "majority,shuffled,control-task"]) == 0
    res = read_results(out)
    a, close = res.arrays, res.tag_index("''")
    assert res.attrs["selectivity_control"] == "control-task"
    np.testing.assert_allclose(a["selectivity"], a["f1"] - a["f1_control_task"])
    assert a["f1"][0, 1, 2, close] > a["f1_control_task"][0, 1, 2, close]
    capsys.readouterr()
    code = run_main(main, ["fit", "--store", str(store), "--out", str(tmp_path / "no"),
                           "--multilabel", "--mdl"], prog="python -m probing")
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--mdl" in err and "--multilabel" in err

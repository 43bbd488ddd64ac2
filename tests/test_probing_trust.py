"""Control tasks, MDL probing and selectivity: their parts on small real inputs, and the
planted-head recovery test that shows why a reviewer should trust them over F1."""

import json

import h5py
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from extract.store import write_store
from headprobe.cli import run_main
from headprobe.errors import UsageError
from headprobe.tokenization import load_tokenizer
from probing.__main__ import main
from probing.controls import control_task_labels, word_types
from probing.grid import GridConfig, fit_probe, run_grid
from probing.mdl import PORTIONS, online_codelength, plan_portions
from probing.results import read_results, write_results
from probing.solvers import fit_seen_classes

TAGS = ["BOS", "``", "DT", "PRP$", "VBD", "NN", "JJ"]
WORDS_PER_TAG = [1, 2, 5, 10, 20, 22]   # word types of tags 1..6; `` is a single word
PLANTED = (1, 2)                        # layer, head


def planted_store(path, planted=PLANTED, seed=0, n_stories=120, per=40):
    """A store of 2 layers x 4 heads (d_head 4) over a Zipfian vocabulary of 60 word types,
    each with one tag. Every head's key is a fixed embedding of the word (word identity
    only), except the planted head's, a fixed linear function of the tag plus noise.
    Queries are the keys reversed along d_head. ``planted=None``: no planted head."""
    rng = np.random.default_rng(seed)
    word_tag = np.repeat(np.arange(1, len(TAGS)), WORDS_PER_TAG)
    freq = rng.permutation(1.0 / np.arange(1, len(word_tag) + 1) ** 0.8)
    freq[0] = freq.max()                # the `` word is frequent
    n = n_stories * per
    words = rng.choice(len(word_tag), size=n, p=freq / freq.sum())
    position = np.tile(np.arange(per), n_stories)
    fine = np.where(position == 0, 0, word_tag[words])
    keys = np.empty((n, 2, 4, 4), np.float32)
    for layer in range(2):
        for head in range(4):
            emb = rng.normal(size=(len(word_tag), 4))
            emb *= 3 / np.linalg.norm(emb, axis=1, keepdims=True)
            keys[:, layer, head] = emb[words] + 0.1 * rng.normal(size=(n, 4))
    tag_emb = 3 * rng.normal(size=(len(TAGS), 4))
    if planted is not None:
        keys[:, planted[0], planted[1]] = tag_emb[fine] + 0.3 * rng.normal(size=(n, 4))
    story = np.repeat(np.arange(n_stories), per)
    table = {"input_id": words + 10, "story_id": story, "position": position,
             "fine_tag": fine, "coarse_tag": fine, "split": story >= n_stories * 3 // 4}
    return write_store(path, table, {"key": keys, "query": keys[..., ::-1].copy()},
                       tags={"fine": TAGS, "coarse": TAGS}, dtype="float32")


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("planted")
    return planted_store(tmp / "a.h5"), planted_store(tmp / "r.h5", planted=None)


def quiet(message: str) -> None:
    pass


# ----------------------------------------------------------------- control task


def test_control_task_gives_each_word_type_one_label_drawn_from_the_tag_distribution():
    rng = np.random.default_rng(1)
    train_y = rng.choice(3, size=5000, p=[0.6, 0.3, 0.1])
    train_types = rng.integers(0, 20000, size=5000)
    test_types = np.concatenate([train_types[:50], [30000, 30001, 30000]])  # unseen types
    tr, te = control_task_labels(train_types, test_types, train_y, 3, seed=0)
    labels = dict(zip(train_types.tolist(), tr.tolist(), strict=True))
    assert all(labels[t] == c for t, c in zip(train_types[:50], te[:50], strict=True))
    assert te[-3] == te[-1]                     # an unseen type keeps its own label
    # one draw per type, not per token, from the class distribution of the training tags
    per_type = np.bincount(np.array(list(labels.values())), minlength=3) / len(labels)
    np.testing.assert_allclose(per_type, [0.6, 0.3, 0.1], atol=0.02)
    again = control_task_labels(train_types[::2], test_types, train_y, 3, seed=0)
    np.testing.assert_array_equal(again[0], tr[::2])   # a type's label is its own
    other = control_task_labels(train_types, test_types, train_y, 3, seed=1)[0]
    assert (other != tr).mean() > 0.3


def test_lowercased_word_types_join_case_and_leading_space(shared_model):
    tok = load_tokenizer(str(shared_model))
    ids = [tok.encode(w)[0] for w in (" The", "The", " the", " Lily", "Tom")]
    assert len(set(ids)) == 5
    lower = word_types(np.array(ids), "lower", tok)
    assert lower[0] == lower[1] == lower[2] and len(set(lower.tolist())) == 3
    np.testing.assert_array_equal(word_types(np.array(ids)), ids)
    with pytest.raises(UsageError, match="need a tokenizer"):
        word_types(np.array(ids), "lower")


def test_fit_seen_classes_never_predicts_a_class_it_did_not_see():
    rng = np.random.default_rng(0)
    y = rng.choice([0, 2, 3], size=300)
    X = (np.eye(5)[y][:, :4] * 3 + rng.normal(size=(300, 4)))[None].astype(np.float32)
    fit = fit_seen_classes(X, y, 5, solver="sklearn")
    assert fit.coef.shape == (1, 5, 4) and np.isneginf(fit.intercept[0, [1, 4]]).all()
    assert set(np.unique(fit.predict(X))) <= {0, 2, 3} and (fit.predict(X)[0] == y).mean() > 0.9
    single = fit_seen_classes(X, np.full(300, 3), 5)
    assert (single.predict(X) == 3).all()


# ----------------------------------------------------------------- MDL


def test_portions_cut_whole_stories_at_the_paper_shares():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 60, size=400)
    stories = np.repeat(rng.permutation(400) + 1000, lengths)
    p = plan_portions(stories, seed=3)
    n = len(stories)
    assert len(p.ends) == len(PORTIONS) == 11 and p.ends[-1] == n and p.stories[-1] == 400
    assert np.all(np.diff(p.ends) >= 0) and sorted(p.order.tolist()) == list(range(n))
    ordered = stories[p.order]
    for end, k, share in zip(p.ends, p.stories, PORTIONS, strict=True):
        first = ordered[:end]
        assert len(np.unique(first)) == k
        assert np.all(np.isin(stories, np.unique(first)) == np.isin(stories, first))
        assert end >= share / 100 * n > end - np.sum(stories == ordered[end - 1])


def test_online_code_length_is_the_paper_sum_with_a_reference_probe():
    rng = np.random.default_rng(0)
    n, k = 3000, 4
    y = rng.choice(k, size=n, p=[0.5, 0.3, 0.15, 0.05])
    X = (rng.normal(size=(k, 3))[y] + rng.normal(size=(n, 3)))[None].astype(np.float32)
    stories = np.arange(n) // 10
    p = plan_portions(stories, seed=0)
    bits = online_codelength(X, y, k, p, lambda X, y, m, init: fit_seen_classes(
        X, y, m, solver="sklearn"))
    Xo, yo = X[0, p.order], y[p.order]
    expected = [p.ends[0] * np.log2(k)]
    for seen, end in zip(p.ends[:-1], p.ends[1:], strict=True):
        if end == seen:                             # two cuts in one story: nothing to send
            expected.append(0.0)
            continue
        model = make_pipeline(StandardScaler(), LogisticRegression(solver="newton-cg"))
        model.fit(Xo[:seen], yo[:seen])
        prob = np.zeros((end - seen, k))
        prob[:, model.classes_] = model.predict_proba(Xo[seen:end])
        prob = (seen * prob + 1) / (seen + k)       # one count per class (probing.mdl)
        expected.append(-np.log2(prob[np.arange(end - seen), yo[seen:end]]).sum())
    np.testing.assert_allclose(bits[0], expected, rtol=2e-3)
    assert bits.sum() < n * np.log2(k)              # the vectors carry the labels


# ----------------------------------------------------------------- planted head


def test_planted_head_f1_finds_the_tag_everywhere_selectivity_and_mdl_single_it_out(
        planted, tmp_path, capsys):
    store, random_store = planted
    out = tmp_path / "probes"
    assert main(["fit", "--store", str(store), "--out", str(out), "--control-store",
                 str(random_store), "--controls", "majority,shuffled,control-task",
                 "--mdl", "--sites", "key"]) == 0
    res = read_results(out)
    a, t = res.arrays, res.tag_index("``")
    planted_cell = PLANTED
    # F1 finds the single-word tag in nearly every head: word identity is enough
    f1 = a["f1"][0, :, :, t]
    assert (f1 > 0.8).sum() >= 6
    # and so does selectivity against shuffled labels: other heads come within 0.05
    shuffled = res.selectivity("shuffled")[0, :, :, t]
    assert np.sort(shuffled.ravel())[-2] > shuffled[planted_cell] - 0.05
    # against the control task only the planted head is selective (Hewitt & Liang)
    selective = a["selectivity_accuracy"][0]
    assert res.attrs["selectivity_control"] == "control-task"
    assert np.unravel_index(selective.argmax(), selective.shape) == planted_cell
    assert selective[planted_cell] - np.sort(selective.ravel())[-2] > 0.25
    # MDL: the planted head's probe compresses the tags many times better than any other
    compression = a["compression"][0]
    assert np.unravel_index(compression.argmax(), compression.shape) == planted_cell
    assert compression[planted_cell] > 5 * np.sort(compression.ravel())[-2]
    assert a["compression_random"][0][planted_cell] < 3
    assert a["compression_control_task"][0][planted_cell] < 2
    np.testing.assert_allclose(a["codelength_blocks"].sum(-1), a["codelength"])
    np.testing.assert_allclose(a["compression"], a["uniform_codelength"] / a["codelength"])
    capsys.readouterr()
    for by in ("selectivity", "selectivity-accuracy", "compression"):
        assert main(["top", "--results", str(out), "--tag", "``", "--by", by, "-k", "2"]) == 0
        table, verdicts, legend = capsys.readouterr().out.split("\n\n")
        header, row = table.splitlines()[1:3]
        assert row.split()[:2] == ["key", "L1H2"]
        assert header.split()[2:] == [
            "F1", "lo", "hi", "shuffled", "ctl-task", "random", "majority", "lexical",
            "select.", "sel.f1", "sel.acc", "amb.n", "amb.F1", "amb.lex", "gain", "gain.lo",
            "gain.hi", "compr.", "cmp.rand", "cmp.ctl", "beyond"]
        # selectivity is against the strongest control fitted per cell: random weights
        assert "F1 minus the random-weights F1" in legend and "uniform code length" in legend
        assert "accuracy minus the control-task accuracy" in legend
        # every word type carries one tag: nothing can be beyond word identity
        assert verdicts.startswith("word identity:\n  key L1H2: not beyond word identity: "
                                   "no ambiguous test token")
    assert main(["top", "--results", str(out), "--tag", "``", "--by", "selectivity",
                 "--control", "control-task", "-k", "1"]) == 0
    text = capsys.readouterr().out
    assert "F1 minus the control-task F1" in text
    assert "best cells by F1 selectivity against the control-task control" in text
    # the summary ranks the same way; the seed-format export is unchanged by the new arrays
    run = tmp_path / "run"
    run.mkdir()
    out.rename(run / "probes")
    assert main(["summary", "--run", str(run), "--by", "compression"]) == 0
    text = capsys.readouterr().out
    assert "best heads by compression" in text and "key   most compressing L1H2 " in text
    assert "``    best key   L1H2   F1 1.00 (shuffled labels 0.00, control task " in text
    assert main(["export", "--run", str(run), "--out", str(tmp_path / "exp")]) == 0
    head = json.loads((tmp_path / "exp" / "key_probes.json").read_text())[1][2]
    assert list(head) == res.tags + ["accuracy", "macro avg", "weighted avg"]
    assert head["``"]["f1-score"] == pytest.approx(float(f1[PLANTED]))


def test_results_declare_and_explain_every_new_array(planted, tmp_path):
    out = tmp_path / "probes"
    assert main(["fit", "--store", str(planted[0]), "--out", str(out), "--sites", "key",
                 "--controls", "control-task", "--mdl", "--bootstrap", "20"]) == 0
    with h5py.File(out / "probes.h5") as f:
        for name, ds in f.items():
            assert ds.attrs["description"] and "dims" in ds.attrs, name
        assert list(f["codelength_blocks"].attrs["dims"]) == ["site", "layer", "head", "portion"]
        assert f["codelength_blocks"].shape == (1, 2, 4, 11)
        assert f["mdl_tokens"][-1] == json.loads(f.attrs["params"])["n_train"]
        np.testing.assert_allclose(f["mdl_percent"][()], PORTIONS)
        assert list(f["f1_control_task"].attrs["dims"]) == ["site", "layer", "head", "tag"]
    res = read_results(out)
    with pytest.raises(ValueError, match="declare no array 'bogus'"):
        write_results(tmp_path / "x", res.sites, res.layers, res.tags,
                      {**res.arrays, "bogus": res.arrays["f1"]}, {}, {})
    with pytest.raises(ValueError, match="has 3 along tag"):
        write_results(tmp_path / "x", res.sites, res.layers, res.tags,
                      {"f1": res.arrays["f1"][..., :3]}, {}, {})
    assert not (tmp_path / "x").exists()


def test_fast_and_sklearn_agree_on_control_task_and_code_length(planted):
    config = dict(sites=("key",), controls=("control-task",), mdl=True, n_boot=10)
    got = {solver: run_grid(planted[0], GridConfig(solver=solver, **config), log=quiet).arrays
           for solver in ("fast", "sklearn")}
    fast, ref = got["fast"], got["sklearn"]
    for name in ("accuracy", "accuracy_control_task"):
        assert np.abs(fast[name] - ref[name]).max() <= 0.01, name
    for name in ("codelength", "codelength_control_task"):
        assert np.abs(fast[name] / ref[name] - 1).max() <= 0.01, name


def test_one_probe_reports_control_task_and_mdl_as_its_grid_cell(planted):
    store = planted[0]
    grid = run_grid(store, GridConfig(sites=("key",), controls=("control-task",), mdl=True,
                                      n_boot=10), log=quiet).arrays
    probe = fit_probe(store, "key", *PLANTED, controls=("control-task",), mdl=True, n_boot=10)
    m = probe.metrics
    assert m["codelength_blocks"].shape == (11,) and isinstance(m["uniform_codelength"], float)
    for name in ("accuracy_control_task", "selectivity_accuracy", "codelength", "compression"):
        np.testing.assert_allclose(m[name], grid[name][(0, *PLANTED)], rtol=1e-6, err_msg=name)
    np.testing.assert_allclose(m["f1_control_task"], grid["f1_control_task"][(0, *PLANTED)])


def test_lowercased_word_types_through_the_grid(planted, shared_model):
    config = GridConfig(sites=("key",), layers=[1], controls=("control-task",), n_boot=10,
                        word_types="lower", tokenizer=str(shared_model))
    lower = run_grid(planted[0], config, log=quiet).arrays
    token = run_grid(planted[0], GridConfig(sites=("key",), layers=[1], n_boot=10,
                                            controls=("control-task",)), log=quiet).arrays
    assert not np.array_equal(lower["accuracy_control_task"], token["accuracy_control_task"])
    assert lower["selectivity_accuracy"][0, 0, 2] > 0.25


def _fails(capsys, argv, words):
    assert run_main(main, argv, prog="python -m probing") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err, err


def test_bad_input_to_controls_mdl_and_rankings(planted, tmp_path, capsys):
    store = str(planted[0])
    _fails(capsys, ["fit", "--store", store, "--out", str(tmp_path / "x"), "--controls",
                    "control-task", "--word-types", "lower"], "give --tokenizer")
    _fails(capsys, ["fit", "--store", store, "--out", str(tmp_path / "x"), "--controls",
                    "control_task"], "unknown control(s) control_task")
    assert not (tmp_path / "x").exists()
    out = tmp_path / "probes"
    assert main(["fit", "--store", store, "--out", str(out), "--sites", "key", "--layers", "1",
                 "--controls", "shuffled"]) == 0
    capsys.readouterr()
    _fails(capsys, ["top", "--results", str(out), "--tag", "``", "--by", "compression"],
           "holds no MDL results; fit with --mdl")
    _fails(capsys, ["top", "--results", str(out), "--tag", "``", "--control", "control-task"],
           "holds no control-task F1")
    with pytest.raises(SystemExit) as exc:
        main(["top", "--results", str(out), "--tag", "``", "--by", "bogus"])
    assert exc.value.code == 2 and "invalid choice: 'bogus'" in capsys.readouterr().err
    with pytest.raises(UsageError, match="no 'random' control"):
        read_results(out).selectivity("random")

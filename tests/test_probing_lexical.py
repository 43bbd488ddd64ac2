"""The lexical baseline, ambiguous tokens and the controls registry: their parts against
direct computations, and a planted store where one head reads the tag from context and
another only the token id."""

import numpy as np
import pytest
from sklearn.metrics import f1_score

from extract.store import open_store, write_store
from headprobe.errors import UsageError
from probing.__main__ import main
from probing.controls import (
    DEFAULT_CONTROLS,
    REGISTRY,
    ambiguous_tokens,
    lexical_predictions,
    parse_controls,
)
from probing.grid import GridConfig, run_grid
from probing.results import read_results

TAGS = ["BOS", "NN", "VBD", "DT", "JJ"]
# word types as (tag, second tag): the last three are VBD or, less often, NN
WORDS = [(1, 1)] * 4 + [(2, 2)] * 3 + [(3, 3)] * 2 + [(4, 4)] * 2 + [(2, 1)] * 3
CONTEXT, TOKEN = 0, 1      # heads of layer 0: the tag from context; the token id only


def lexical_store(path, seed=0, n_stories=120, per=40, noise=1.5, second=0.35):
    """A store of 1 layer x 3 heads (d_head 16) over 14 word types. Head CONTEXT holds the
    token's tag (as if read from context) under noise, so it also knows the tag of the
    three ambiguous words; head TOKEN holds the token id exactly (one-hot), so it can do
    no better than word identity; head 2 holds noise."""
    rng = np.random.default_rng(seed)
    n, d = n_stories * per, 16
    words = rng.integers(0, len(WORDS), size=n)
    main_tag, other = (np.array(t) for t in zip(*WORDS, strict=True))
    fine = np.where(rng.random(n) < second, other[words], main_tag[words])
    position = np.tile(np.arange(per), n_stories)
    fine[position == 0] = 0
    keys = rng.normal(scale=0.3, size=(n, 1, 3, d)).astype(np.float32)
    keys[:, 0, CONTEXT, :len(TAGS)] += 3 * np.eye(len(TAGS))[fine]
    keys[:, 0, CONTEXT] += noise * rng.normal(size=(n, d))
    keys[:, 0, TOKEN] = 3 * np.eye(d)[words] + 0.02 * rng.normal(size=(n, d))
    story = np.repeat(np.arange(n_stories), per)
    table = {"input_id": words + 10, "story_id": story, "position": position,
             "fine_tag": fine, "coarse_tag": fine, "split": story >= n_stories * 3 // 4}
    return write_store(path, table, {"key": keys, "query": keys.copy()},
                       tags={"fine": TAGS, "coarse": TAGS}, dtype="float32")


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory):
    """``probing fit`` with the default controls on the lexical store, in a run directory."""
    run = tmp_path_factory.mktemp("lexical") / "run"
    run.mkdir()
    store = lexical_store(run / "activations.h5")
    assert main(["fit", "--run", str(run), "--sites", "key", "--bootstrap", "200"]) == 0
    return run, store


# ----------------------------------------------------------------- parts


def test_lexical_baseline_is_the_majority_training_tag_of_each_type():
    rng = np.random.default_rng(0)
    train_types, test_types = rng.integers(0, 30, 2000), rng.integers(0, 35, 500)
    train_y = rng.integers(0, 4, 2000)
    fallback = np.full(500, 3)
    got = lexical_predictions(train_types, test_types, train_y, train_y, fallback)
    for i, t in enumerate(test_types):
        seen = train_y[train_types == t]
        if len(seen) == 0:
            assert got[i] == 3                                   # unseen: the fallback
        else:
            counts = np.bincount(seen, minlength=4)
            assert got[i] == np.flatnonzero(counts == counts.max())[0]  # ties: lowest
    # tag sets: the most frequent whole set of the type
    sets = np.eye(3, dtype=bool)[rng.integers(0, 3, 2000)]
    codes = sets.argmax(1)
    got = lexical_predictions(train_types, test_types, sets, codes, np.zeros((500, 3), bool))
    assert got.shape == (500, 3) and (got.sum(1) <= 1).all()
    for i in np.flatnonzero(test_types < 30)[:50]:
        counts = np.bincount(codes[train_types == test_types[i]], minlength=3)
        assert got[i].argmax() == np.flatnonzero(counts == counts.max())[0]


def test_ambiguous_tokens_need_two_tags_each_of_the_minimum_count():
    train_types = np.array([1, 1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 4])
    train_codes = np.array([0, 0, 1, 1, 0, 0, 1, 0, 1, 2, 2, 0])
    test_types = np.array([1, 2, 3, 4, 5, 1])
    np.testing.assert_array_equal(ambiguous_tokens(train_types, train_codes, test_types, 1),
                                  [True, True, True, False, False, True])
    np.testing.assert_array_equal(ambiguous_tokens(train_types, train_codes, test_types, 2),
                                  [True, False, False, False, False, True])
    with pytest.raises(UsageError, match="ambiguous_min_count"):
        ambiguous_tokens(train_types, train_codes, test_types, 0)


def test_registry_parsing_adds_to_the_defaults_and_checks_names():
    assert DEFAULT_CONTROLS == ("majority", "shuffled", "lexical", "bootstrap")
    names = lambda controls: [c.name for c in controls]  # noqa: E731
    assert names(parse_controls(["control-task"], False, add_defaults=True)) == [
        *DEFAULT_CONTROLS, "control-task"]
    assert names(parse_controls(["control-task"], False)) == ["control-task"]
    assert "bootstrap" not in names(parse_controls(["bootstrap"], False, intervals=False,
                                                   add_defaults=True))
    assert names(parse_controls([], True, add_defaults=True))[-1] == "random"
    parsed = parse_controls(["lexical"], False)
    assert parse_controls(parsed, False) == parsed               # parsing is idempotent
    with pytest.raises(UsageError, match="unknown control.*lexcal"):
        parse_controls(["lexcal"], False)
    with pytest.raises(UsageError, match="random-weights control needs control_store"):
        parse_controls(["random"], False)
    lexical = REGISTRY["lexical"]
    assert lexical.fitted == "none" and lexical.selectivity and lexical.default
    assert {"f1_lexical_ambiguous", "lexical_gain"} <= set(lexical.arrays)
    assert not REGISTRY["bootstrap"].selectivity


# ----------------------------------------------------------------- the grid


def test_grid_lexical_baseline_matches_a_direct_computation(planted_run):
    run, store = planted_run
    res = read_results(run / "probes")
    with open_store(store) as s:
        t = s.tokens(["input_id", "fine_tag", "split"])
    use = t["fine_tag"] > 0
    train, test = use & (t["split"] == 0), use & (t["split"] == 1)
    majority = {w: np.bincount(t["fine_tag"][train][t["input_id"][train] == w]).argmax()
                for w in np.unique(t["input_id"][train])}
    pred = np.array([majority[w] for w in t["input_id"][test]])
    truth = t["fine_tag"][test]
    names = [TAGS[i] for i in range(1, 5)]
    expected = f1_score(truth, pred, labels=[1, 2, 3, 4], average=None)
    lexical = res.arrays["f1_lexical"]
    np.testing.assert_allclose(lexical[0, 0, 0], expected, atol=1e-9)
    assert res.tags == names and (lexical == lexical[0, 0, 0]).all()  # in every cell
    # the ambiguous tokens: the three VBD/NN words
    amb = np.isin(t["input_id"][test], [10 + i for i, (a, b) in enumerate(WORDS) if a != b])
    assert res.attrs["n_ambiguous_test"] == amb.sum()
    amb_expected = f1_score(truth[amb], pred[amb], labels=[1, 2, 3, 4], average=None,
                            zero_division=0)
    np.testing.assert_allclose(res.arrays["f1_lexical_ambiguous"][0, 0, 0], amb_expected,
                               atol=1e-9)
    np.testing.assert_array_equal(res.arrays["support_ambiguous"][0, 0, 0],
                                  [np.sum(truth[amb] == k) for k in range(1, 5)])


def test_planted_context_head_is_beyond_word_identity_and_the_token_head_is_not(
        planted_run, capsys):
    run, _ = planted_run
    res = read_results(run / "probes")
    a, vbd = res.arrays, res.tag_index("VBD")
    gain_lo, gain_hi = a["lexical_gain_lo"][0, 0, :, vbd], a["lexical_gain_hi"][0, 0, :, vbd]
    assert gain_lo[CONTEXT] > 0.05                      # the interval excludes 0
    assert gain_lo[TOKEN] <= 0 <= gain_hi[TOKEN]        # word identity, no more
    # the token head wins on F1 (word identity is enough for most tokens)
    assert a["f1"][0, 0, TOKEN, vbd] > a["f1"][0, 0, CONTEXT, vbd]
    capsys.readouterr()
    assert main(["summary", "--run", str(run)]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("  VBD   best "))
    assert line.startswith("  VBD   best key   L0H1 ") and (
        "; not beyond word identity: on " in line)
    after = out.splitlines()[out.splitlines().index(line) + 1]
    assert after.split()[:5] == ["most", "beyond", "lexical", "key", "L0H0"]
    assert "; beyond word identity: on " in after and "95% interval +" in after
    assert "lexical baseline " in line and "ambiguous" in out
    # top ranks by the lower end of the interval and says so in its header
    assert main(["top", "--run", str(run), "--tag", "VBD", "--by", "beyond-lexical"]) == 0
    table = capsys.readouterr().out
    lines = table.splitlines()
    assert "best cells by F1 beyond the lexical baseline on ambiguous tokens" in lines[0]
    assert lines[2].split()[:2] == ["key", "L0H0"] and lines[2].split()[-1] == "yes"
    assert lines[3].split()[:2] == ["key", "L0H1"] and lines[3].split()[-1] == "no"
    assert "  key L0H0: beyond word identity: on " in table
    # the seed-format export's notes say the same for the best cell by F1
    assert main(["export", "--run", str(run), "--out", str(run / "seed004")]) == 0
    notes = (run / "seed004" / "notes.txt").read_text()
    note = next(x for x in notes.splitlines() if x.startswith("  VBD "))
    assert note.startswith("  VBD    best L0H1 F1 ") and "; not beyond word identity: " in note
    assert f"lexical baseline {a['f1_lexical'][0, 0, 0, vbd]:.3f}; " in note


def test_controls_add_to_the_defaults_and_intervals_stay_on(tmp_path, planted_run):
    _, store = planted_run
    out = tmp_path / "probes"
    assert main(["fit", "--store", str(store), "--out", str(out), "--sites", "key",
                 "--controls", "control-task", "--bootstrap", "20"]) == 0
    res = read_results(out)
    for name in ("f1_lo", "f1_hi", "lexical_gain_lo", "f1_control_task", "f1_lexical",
                 "f1_shuffled", "f1_majority", "selectivity_f1"):
        assert name in res.arrays, name
    assert res.attrs["controls"] == [*DEFAULT_CONTROLS, "control-task"]
    # Hewitt & Liang's selectivity is against the control task
    np.testing.assert_allclose(res.arrays["selectivity_accuracy"],
                               res.arrays["accuracy"] - res.arrays["accuracy_control_task"])
    strongest = np.max([res.arrays[f"f1_{c}"] for c in (
        "majority", "shuffled", "lexical", "control_task")], axis=0)
    np.testing.assert_allclose(res.arrays["selectivity_f1"], res.arrays["f1"] - strongest)
    assert main(["fit", "--store", str(store), "--out", str(tmp_path / "bare"), "--sites",
                 "key", "--no-intervals", "--ambiguous-min-count", "200"]) == 0
    bare = read_results(tmp_path / "bare")
    assert "f1_lo" not in bare.arrays and "lexical_gain_lo" not in bare.arrays
    assert "lexical_gain" in bare.arrays and bare.attrs["ambiguous_min_count"] == 200
    # ~250 training tokens per word, about 35% of an ambiguous word's NN: none has 200
    assert bare.attrs["n_ambiguous_test"] == 0 < res.attrs["n_ambiguous_test"]


def test_one_vs_rest_targets_run_the_same_controls(tmp_path):
    from tests.test_probing_multilabel import _store

    store = _store(tmp_path / "m.h5")
    got = run_grid(store, GridConfig(sites=("key",), multilabel=True, n_boot=100,
                                     controls=DEFAULT_CONTROLS), log=lambda m: None)
    a, close = got.arrays, got.tags.index("''")
    with open_store(store) as s:
        t = s.tokens(["fine_tag", "split"])
    # '.' tokens (one token id) cover '' a third of the time: the only ambiguous type
    assert got.info["n_ambiguous_test"] == np.sum((t["fine_tag"] == 4) & (t["split"] == 1))
    # on '.' word identity says {.}, never '' (which only a third of its tokens cover)
    assert (a["f1_lexical_ambiguous"][..., close] == 0).all() and (
        a["f1_lexical"][..., close] > 0).all()
    assert a["lexical_gain_lo"][0, 1, 2, close] > 0.5     # the head that encodes ''
    assert a["lexical_gain_hi"][0, 0, 0, close] <= 0.05   # a head of noise

"""The probe grid end to end: fit, results reader, seed-format export, top, bad input."""

import json

import h5py
import numpy as np
import pytest

from extract.store import open_store, write_store
from headprobe.errors import UsageError
from probing.__main__ import main
from probing.grid import GridConfig, fit_probe, run_grid
from probing.results import read_results
from probing.top import top_cells

TAGS = {"fine": ["BOS", "NN", "VBD", "``", "DT"], "coarse": ["BOS", "NOUN", "VERB", "PUNCT",
                                                              "DET"]}


def _store(path, n_stories=30, signal_head=(1, 2), seed=0, single_class=False):
    """A tiny store where only head signal_head=(layer, head) of the keys encodes the tag."""
    rng = np.random.default_rng(seed)
    per = 20
    n = n_stories * per
    story = np.repeat(np.arange(n_stories), per)
    position = np.tile(np.arange(per), n_stories)
    fine = rng.integers(1, 5, n)
    if single_class:
        fine[:] = 1
    fine[position == 0] = 0
    keys = rng.normal(size=(n, 2, 3, 4)).astype(np.float32)
    queries = rng.normal(size=(n, 2, 3, 4)).astype(np.float32)
    layer, head = signal_head
    keys[:, layer, head] += 4 * np.eye(5)[fine][:, 1:]
    table = {"input_id": fine + 10, "story_id": story, "position": position,
             "fine_tag": fine, "coarse_tag": fine, "split": (story >= n_stories * 3 // 4)}
    return write_store(path, table, {"key": keys, "query": queries}, tags=TAGS,
                       dtype="float32")


def test_fit_writes_readable_results_with_controls(tmp_path, capsys):
    store = _store(tmp_path / "a.h5")
    control = _store(tmp_path / "r.h5", signal_head=(0, 0), seed=0)
    out = tmp_path / "probes"
    assert main(["fit", "--store", str(store), "--out", str(out), "--control-store",
                 str(control), "--bootstrap", "100", "--solver", "sklearn"]) == 0
    res = read_results(out)
    assert res.sites == ["key", "query"] and res.layers == [0, 1]
    assert res.tags == ["NN", "VBD", "``", "DT"]  # BOS left out
    assert res.arrays["f1"].shape == (2, 2, 3, 4)
    assert res.arrays["coef"].shape == (2, 2, 3, 4, 4)
    for name in ("f1_shuffled", "f1_random", "f1_lo", "f1_hi", "f1_majority", "selectivity"):
        assert res.arrays[name].shape == (2, 2, 3, 4)
    macro = res.grid("macro_f1", "key")
    assert macro.argmax() == np.ravel_multi_index((1, 2), macro.shape)  # the planted head
    assert macro[1, 2] > 0.9 and np.delete(macro.ravel(), 5).max() < 0.5
    assert res.grid("f1_random", "key", "VBD")[1, 2] < 0.5  # random model lacks the signal
    lo, f1, hi = (res.grid(m, "key", "``")[1, 2] for m in ("f1_lo", "f1", "f1_hi"))
    assert lo <= f1 <= hi
    assert json.loads((out / "manifest.json").read_text())["stage"] == "probing fit"

    # seed-format export, read back the way plotting code reads it
    exp = tmp_path / "export"
    assert main(["export", "--results", str(out), "--format", "seed004",
                 "--out", str(exp)]) == 0
    data = json.loads((exp / "key_probes.json").read_text())
    grid = np.array([[head["VBD"]["f1-score"] for head in layer] for layer in data])
    np.testing.assert_allclose(grid, res.grid("f1", "key", "VBD"))
    assert {"accuracy", "macro avg", "weighted avg"} <= set(data[0][0])
    assert (exp / "query_probes.json").is_file()

    capsys.readouterr()
    assert main(["top", "--results", str(out), "--tag", "``", "--site", "key", "-k", "2"]) == 0
    lines = capsys.readouterr().out.split("\n\n")[0].splitlines()  # the table, not the legend
    assert lines[2].split()[:2] == ["key", "L1H2"] and len(lines) == 4


def test_fast_and_sklearn_grids_agree_and_merge_verbs(tmp_path):
    store = _store(tmp_path / "a.h5")
    for solver in ("fast", "sklearn"):
        assert main(["fit", "--store", str(store), "--out", str(tmp_path / solver),
                     "--solver", solver, "--sites", "key", "--controls", "shuffled",
                     "--no-intervals", "--tags", "VBD,NN"]) == 0
    fast, ref = read_results(tmp_path / "fast"), read_results(tmp_path / "sklearn")
    assert fast.tags == ["NN", "VBD", "OTHER"] and fast.sites == ["key"]
    assert np.abs(fast.arrays["macro_f1"] - ref.arrays["macro_f1"]).max() <= 0.01
    assert "f1_lo" not in fast.arrays and "f1_shuffled" in fast.arrays


def _fails(capsys, argv, words):
    with pytest.raises(SystemExit) as exc:
        import sys

        from headprobe.cli import run_main
        sys.exit(run_main(main, argv, prog="python -m probing"))
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1 and words in err, err


def test_bad_input_gets_one_line_and_exit_2(tmp_path, capsys):
    store = _store(tmp_path / "a.h5")
    out = tmp_path / "probes"
    out.mkdir()
    base = ["fit", "--store", str(store)]
    _fails(capsys, base + ["--out", str(out)], "already exists")
    _fails(capsys, base + ["--out", str(tmp_path / "x"), "--tags", "JJ"], "not present")
    single = _store(tmp_path / "one.h5", single_class=True)
    _fails(capsys, ["fit", "--store", str(single), "--out", str(tmp_path / "x")],
           "single class")
    with h5py.File(_store(tmp_path / "old.h5"), "r+") as f:
        f.attrs["format_version"] = 99
    _fails(capsys, ["fit", "--store", str(tmp_path / "old.h5"), "--out", str(tmp_path / "x")],
           "schema version")
    empty = _store(tmp_path / "e.h5", n_stories=1)  # one story, in the test split
    _fails(capsys, ["fit", "--store", str(empty), "--out", str(tmp_path / "x")],
           "train split has no tokens")
    other = _store(tmp_path / "o.h5", n_stories=20)
    _fails(capsys, base + ["--out", str(tmp_path / "x"), "--control-store", str(other)],
           "tokens")
    assert not (tmp_path / "x").exists()


def test_library_errors_name_parameters_the_command_line_names_flags(tmp_path, capsys):
    store = _store(tmp_path / "a.h5")
    with pytest.raises(UsageError, match="^jobs must be positive$"):
        run_grid(store, GridConfig(jobs=0))
    with pytest.raises(UsageError, match="needs control_store='FILE.h5'"):
        run_grid(store, GridConfig(controls=("random",)))
    with pytest.raises(UsageError, match="^min_support must be >= 0"):
        fit_probe(store, "key", 1, 2, min_support=-1)
    with pytest.raises(UsageError, match="outside the store's 3 heads"):
        fit_probe(store, "key", 1, 3)
    out = tmp_path / "x"
    _fails(capsys, ["fit", "--store", str(store), "--out", str(out), "--jobs", "0"],
           "error: --jobs must be positive")
    _fails(capsys, ["fit", "--out", str(out)], "error: give --store or --run")
    _fails(capsys, ["fit", "--store", str(store), "--out", str(out), "--controls", "random"],
           "needs --control-store FILE.h5; make it with: python -m extract --dataset DATASET "
           "--model MODEL --reinit-seed 0 --out FILE.h5")
    _fails(capsys, ["fit", "--store", str(store), "--out", str(out), "--min-support", "-1"],
           "error: --min-support must be >= 0")
    assert main(["fit", "--store", str(store), "--out", str(out), "--sites", "key",
                 "--controls", "shuffled"]) == 0
    capsys.readouterr()
    with pytest.raises(UsageError, match="^k must be at least 1$"):
        top_cells(read_results(out), "NN", k=0)
    _fails(capsys, ["top", "--results", str(out), "--tag", "NN", "-k", "0"],
           "error: -k must be at least 1")
    _fails(capsys, ["top", "--tag", "NN"], "error: give --results or --run")


def test_one_probe_with_a_control_store_finds_the_planted_head(tmp_path):
    store = _store(tmp_path / "a.h5")
    control = _store(tmp_path / "r.h5", signal_head=(0, 0))
    planted = fit_probe(store, "key", 1, 2, control_store=control, solver="sklearn")
    assert planted.tags == ["NN", "VBD", "``", "DT"] and planted.coef.shape == (4, 4)
    m = planted.metrics
    assert m["macro_f1"] > 0.9 and m["macro_f1_random"] < 0.5 and m["macro_f1_shuffled"] < 0.5
    assert m["f1_random"].shape == (4,) and np.all(m["f1_lo"] <= m["f1"])
    np.testing.assert_allclose(m["selectivity"], m["f1"] - m["f1_shuffled"])
    other = fit_probe(str(store), "query", 1, 2, controls=("majority",))
    assert other.metrics["macro_f1"] < 0.5 and "f1_shuffled" not in other.metrics
    assert set(other.metrics) >= {"f1_majority", "selectivity", "n_iter"}


def test_one_probe_scores_as_its_cell_of_the_grid(probing_results, shared_store):
    res = read_results(probing_results)
    s = res.site_index("key")
    with open_store(shared_store) as store:
        probe = fit_probe(store, "key", 2, 7, n_boot=200)  # an open store or a path
        X = store.read("key", 2, 7, index=probe.labels.test_rows)
        assert probe.coef.shape == (len(res.tags), store.d_head)
    assert probe.tags == res.tags and (probe.site, probe.layer, probe.head) == ("key", 2, 7)
    for name, value in probe.metrics.items():
        np.testing.assert_allclose(value, res.arrays[name][s, 1, 7], atol=0.01, err_msg=name)
    np.testing.assert_allclose(probe.coef, res.arrays["coef"][s, 1, 7], atol=1e-3)
    assert isinstance(probe.metrics["macro_f1"], float)
    pred = probe.predict(X)
    assert pred.shape == (len(X),)
    assert np.isclose((pred == probe.labels.test_y).mean(), probe.metrics["accuracy"])


def test_help_lists_subcommands(capsys):
    from probing.__main__ import build_parser

    text = build_parser().format_help()
    for name in ("fit", "export", "top", "bench"):
        assert name in text


def test_shared_store_probes_beat_their_controls(probing_results, capsys):
    res = read_results(probing_results)
    a = res.arrays
    # every head's probe is far above always predicting the most frequent tag
    # (macro-F1 0.14 to 0.31 against 0.006 on the shared store)
    assert (a["macro_f1"] > a["macro_f1_majority"] + 0.1).all()
    assert (a["accuracy"] > a["accuracy_majority"] + 0.1).all()
    # the opening quotation mark: the best key head finds it (F1 0.87 on 12 test tokens),
    # the same probe on shuffled labels does not, and the bootstrap interval excludes it
    s, t = res.site_index("key"), res.tag_index("``")
    f1, shuffled, lo = (a[name][s, :, :, t] for name in ("f1", "f1_shuffled", "f1_lo"))
    best = np.unravel_index(f1.argmax(), f1.shape)
    assert f1[best] > 0.7 and f1[best] - shuffled[best] > 0.5 and lo[best] > shuffled[best]
    capsys.readouterr()
    assert main(["top", "--results", str(probing_results), "--tag", "``", "--site", "key"]) == 0
    rows = capsys.readouterr().out.split("\n\n")[0].splitlines()[2:]
    assert len(rows) == 5
    top = rows[0].split()
    assert top[1] == f"L{res.layers[best[0]]}H{best[1]}"
    assert float(top[2]) - float(top[5]) > 0.5  # F1 well above the shuffled-label control

"""Probing in bounded memory: blocks read in row chunks, a train sample of whole stories,
and blocks spread over local processes or a Ray cluster."""

import sys

import numpy as np
import pytest

from extract.store import open_store
from headprobe.cli import run_main
from headprobe.errors import UsageError
from probing.__main__ import main
from probing.grid import GridConfig, run_grid
from probing.one_vs_rest import fit_one_vs_rest
from probing.results import read_results
from probing.solvers import fit_fast
from probing.stream import Vectors, as_vectors


def _grid(store, **options):
    base = dict(sites=("key",), layers=[0, 1], n_boot=50)
    return run_grid(store, GridConfig(**{**base, **options}), log=lambda msg: None)


def _same(a, b):
    assert a.arrays.keys() == b.arrays.keys()
    for name in a.arrays:
        np.testing.assert_array_equal(a.arrays[name], b.arrays[name], err_msg=name)


def test_chunks_cover_every_row_once_within_a_window():
    X = np.random.default_rng(0).normal(size=(3, 50, 4)).astype(np.float32)
    picked = np.array([0, 1, 2, 9, 10, 11, 12, 30, 49])
    vectors = as_vectors(X, chunk_rows=4).subset(picked)
    seen = []
    for part, chunk in vectors.chunks():
        rows = picked[part]
        assert len(rows) <= 4 and rows.max() // 4 == rows.min() // 4
        np.testing.assert_array_equal(chunk, X[:, rows])
        seen.extend(rows)
    assert seen == picked.tolist()
    mean, std = vectors.moments()
    np.testing.assert_allclose(mean, X[:, picked].mean(1), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(std, X[:, picked].std(1), rtol=1e-6)


def test_fast_solver_on_tiny_chunks_reaches_the_same_probes():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 7000)
    X = rng.normal(size=(2, 7000, 5)).astype(np.float32)
    X[0, :, :4] += 2 * np.eye(4)[y]
    whole = fit_fast(X, y, 4, n_sub=512)
    chunked = fit_fast(as_vectors(X, chunk_rows=97), y, 4, n_sub=512)
    assert isinstance(as_vectors(X, chunk_rows=97), Vectors)
    np.testing.assert_allclose(chunked.coef, whole.coef, atol=2e-3)
    # multinomial logits are shift-invariant: intercepts agree up to one shift per cell
    centred = [f.intercept - f.intercept.mean(1, keepdims=True) for f in (chunked, whole)]
    np.testing.assert_allclose(*centred, atol=2e-3)
    _same_up_to_ties(chunked, whole, X, atol=2e-3)


def _same_up_to_ties(a, b, X, atol):
    """Predictions of two fits whose coefficients and (centred) intercepts agree within
    ``atol`` differ only where ``b``'s best two logits are closer than such a difference
    can move them (2 * atol * (|x|_1 + 1)); the summation order of the chunks decides
    those ties. They are few: at most 0.5% of the rows (2 in 14000 seen on one CPU)."""
    differ = a.predict(X) != b.predict(X)
    top2 = np.sort(b.decision(X), axis=-1)[..., -2:]
    near_tie = top2[..., 1] - top2[..., 0] <= 2 * atol * (np.abs(X).sum(-1) + 1)
    assert not (differ & ~near_tie).any(), "predictions differ away from a tie"
    assert differ.mean() <= 0.005, differ.sum()


def test_one_vs_rest_on_tiny_chunks_reaches_the_same_probes():
    rng = np.random.default_rng(2)
    Y = rng.random((6000, 3)) < [0.5, 0.2, 0.05]
    X = rng.normal(size=(2, 6000, 4)).astype(np.float32)
    X[1, :, :3] += 1.5 * Y
    whole = fit_one_vs_rest(X, Y, n_sub=512)
    chunked = fit_one_vs_rest(as_vectors(X, chunk_rows=101), Y, n_sub=512)
    np.testing.assert_allclose(chunked.coef, whole.coef, atol=2e-3)
    np.testing.assert_allclose(chunked.intercept, whole.intercept, atol=2e-3)
    assert (chunked.predict(X) == whole.predict(X)).mean() > 0.999


def test_chunked_grid_equals_the_unchunked_grid(shared_store):
    controls = ("majority", "shuffled", "control-task", "bootstrap")
    whole = _grid(shared_store, controls=controls, mdl=True, layers=[0],
                  chunk_rows=1 << 30)
    tiny = _grid(shared_store, controls=controls, mdl=True, layers=[0], chunk_rows=333)
    for name in ("accuracy", "accuracy_shuffled", "accuracy_control_task", "macro_f1"):
        assert np.abs(whole.arrays[name] - tiny.arrays[name]).max() <= 0.005, name
    for name in ("codelength", "codelength_control_task"):
        np.testing.assert_allclose(tiny.arrays[name], whole.arrays[name], rtol=1e-3)
    np.testing.assert_allclose(tiny.arrays["coef"], whole.arrays["coef"], atol=0.05)
    np.testing.assert_array_equal(tiny.arrays["support"], whole.arrays["support"])


def test_max_train_tokens_takes_whole_stories_up_to_n(shared_store, tmp_path):
    with open_store(shared_store) as store:
        table = store.tokens(["parent_id", "split", "fine_tag"])
        bos = store.tags["fine"].index("BOS")
    train = table["split"] == 0
    lengths = np.bincount(table["parent_id"][train])
    n = int(lengths.sum() // 3)
    out = tmp_path / "probes"
    assert main(["fit", "--store", str(shared_store), "--out", str(out), "--sites", "key",
                 "--layers", "0", "--bootstrap", "20", "--max-train-tokens", str(n)]) == 0
    params = read_results(out).attrs
    assert params["max_train_tokens"] == n
    result = _grid(shared_store, layers=[0], max_train_tokens=n)
    rows = result.labels.train_rows
    stories = np.unique(table["parent_id"][rows])
    whole = np.flatnonzero(train & np.isin(table["parent_id"], stories)
                           & (table["fine_tag"] != bos))
    np.testing.assert_array_equal(rows, whole)              # every probed token of them
    taken = int(lengths[stories].sum())
    assert taken <= n and n - taken < lengths.max()         # the next story did not fit
    assert params["n_train"] == len(rows) and params["train_stories"] == len(stories)
    other = _grid(shared_store, layers=[0], max_train_tokens=n, seed=1).labels.train_rows
    assert not np.array_equal(other, rows)                  # the seed draws the stories


def test_two_processes_give_the_same_grid(shared_store):
    controls = ("majority", "shuffled", "bootstrap")
    _same(_grid(shared_store, controls=controls),
          _grid(shared_store, controls=controls, jobs=2))


def test_ray_tasks_give_the_same_grid(ray_cluster, shared_store):
    _same(_grid(shared_store), _grid(shared_store, ray="local:2"))


def _fails(capsys, argv, words):
    with pytest.raises(SystemExit) as exc:
        sys.exit(run_main(main, argv, prog="python -m probing"))
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1 and words in err, err


def test_bad_scale_settings_get_one_line(shared_store, tmp_path, capsys, monkeypatch):
    base = ["fit", "--store", str(shared_store), "--out", str(tmp_path / "x")]
    _fails(capsys, base + ["--chunk-rows", "0"], "error: --chunk-rows must be positive")
    _fails(capsys, base + ["--max-train-tokens", "0"], "--max-train-tokens must be a positive")
    _fails(capsys, base + ["--max-train-tokens", "3"], "smaller than the first drawn train story")
    _fails(capsys, base + ["--ray", "local:x"], "local:N needs a positive number")
    _fails(capsys, base + ["--ray", "local:2", "--jobs", "2"], "--jobs (local processes) or")
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "ray", None)                     # Ray not installed
        _fails(capsys, base + ["--ray", "local:2"], "pip install -e '.[ray]'")
    with pytest.raises(UsageError, match="^chunk_rows must be positive$"):
        run_grid(shared_store, GridConfig(chunk_rows=0))
    assert not (tmp_path / "x").exists()

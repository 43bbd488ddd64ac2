"""The probe grid beyond one process: ``probing fit --ray`` against a single process, what
a failed or killed block task gives, and the story-level test sample of
``--max-test-tokens``."""

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from extract.store import open_store
from headprobe.cli import run_main
from headprobe.cluster import cancel_unfinished
from headprobe.errors import UsageError
from probing.__main__ import main
from probing.grid import GridConfig, run_grid
from probing.labels import sample_test_stories
from probing.parallel import map_blocks
from probing.results import read_results

FIT = ["--sites", "key,query", "--layers", "0,2", "--bootstrap", "30"]


def _fit(store, out, *extra):
    assert main(["fit", "--store", str(store), "--out", str(out), *FIT, *extra]) == 0
    return read_results(out)


def test_fit_on_ray_writes_the_single_process_grid(ray_cluster, shared_store, tmp_path):
    # every block is fitted on one thread with the same chunks wherever it runs: exact
    one = _fit(shared_store, tmp_path / "one", "--max-test-tokens", "2000")
    ray = _fit(shared_store, tmp_path / "ray", "--max-test-tokens", "2000", "--ray", "local:2")
    assert one.arrays.keys() == ray.arrays.keys() and len(one.arrays) > 20
    for name, value in one.arrays.items():
        np.testing.assert_array_equal(ray.arrays[name], value, err_msg=name)
    assert (ray.sites, ray.layers, ray.tags) == (one.sites, one.layers, one.tags)
    assert ray.attrs["n_test"] == one.attrs["n_test"] > 0


def _block(site, layer, marker):
    """A block task that fails as a test needs: layer 1 refuses its input; a marker file
    makes the first attempt's worker die and the retry succeed."""
    if layer == 1:
        raise UsageError("the store changed while it was read")
    if marker is not None and not Path(marker).exists():
        Path(marker).touch()
        os._exit(1)
    return f"{site}{layer}"


def test_a_block_task_retried_after_its_worker_died_and_failures_named(ray_cluster,
                                                                         tmp_path):
    marker = str(tmp_path / "died-once")
    got = list(map_blocks(_block, [("key", 0), ("key", 2)], (marker,), ray="local:2"))
    assert got == ["key0", "key2"] and Path(marker).exists()
    with pytest.raises(UsageError) as exc:
        list(map_blocks(_block, [("key", 0), ("query", 1)], (None,), ray="local:2"))
    assert str(exc.value) == "block query layer 1: the store changed while it was read"


def _sleep_then(seconds, value):
    import time

    time.sleep(seconds)
    return value


def test_only_unfinished_tasks_are_cancelled(ray_cluster):
    """A finished task keeps its result; a running one is cancelled."""
    task = ray_cluster.remote(_sleep_then)
    done, running = task.remote(0, "done"), task.remote(60, "late")
    assert ray_cluster.get(done) == "done"
    cancel_unfinished(ray_cluster, [done, running])
    assert ray_cluster.get(done) == "done"
    with pytest.raises(ray_cluster.exceptions.TaskCancelledError):
        ray_cluster.get(running, timeout=30)


def _stories(n, seed):
    """split [tokens] and story ids [tokens] of n stories of 1..9 tokens, half of them test
    stories, in a random order."""
    rng = np.random.default_rng(seed)
    ids = rng.choice(10_000, n, replace=False)
    sizes = rng.integers(1, 10, n)
    return np.repeat(ids % 2, sizes).astype(np.int8), np.repeat(ids, sizes)


def _kept(split, stories):
    return set(np.unique(stories[split == 1]).tolist())


def test_test_sample_does_not_depend_on_order_or_shards():
    split, stories = _stories(300, 0)
    out, kept = sample_test_stories(split, stories, 200, seed=5)
    chosen = _kept(out, stories)
    assert len(chosen) == kept and 0 < kept < len(_kept(split, stories))
    assert (out == 1).sum() <= 200 and np.all(out[split == 0] == 0)   # train untouched
    for story in chosen:                                              # whole stories
        assert np.all(out[stories == story] == 1)
    order = np.random.default_rng(1).permutation(np.unique(stories))  # stories reordered,
    rows = np.concatenate([np.flatnonzero(stories == s) for s in order])  # as shards would
    again, _ = sample_test_stories(split[rows], stories[rows], 200, seed=5)
    assert _kept(again, stories[rows]) == chosen
    other, _ = sample_test_stories(split, stories, 200, seed=6)
    assert _kept(other, stories) != chosen                            # the seed draws them
    more, _ = sample_test_stories(split, stories, 400, seed=5)
    assert chosen < _kept(more, stories)                              # a prefix of one ranking


def test_max_test_tokens_scores_the_sampled_stories(shared_store):
    with open_store(shared_store) as store:
        table = store.tokens(["parent_id", "split", "fine_tag"])
        bos = store.tags["fine"].index("BOS")
    n = int((table["split"] == 1).sum() // 2)
    config = GridConfig(sites=("key",), layers=[1], n_boot=20, max_test_tokens=n, seed=3)
    result = run_grid(shared_store, config, log=lambda msg: None)
    sampled, kept = sample_test_stories(table["split"], table["parent_id"], n, seed=3)
    rows = np.flatnonzero((sampled == 1) & (table["fine_tag"] != bos))
    np.testing.assert_array_equal(result.labels.test_rows, rows)
    support = result.arrays["support"][0, 0]                           # [heads, tags]
    assert np.all(support.sum(-1) == len(rows))
    counts = np.bincount(result.labels.test_y, minlength=support.shape[-1])
    np.testing.assert_array_equal(support, np.broadcast_to(counts, support.shape))
    assert result.info["test_stories"] == kept == result.info["n_test_stories"]
    assert result.info["max_test_tokens"] == n and result.info["n_test"] == len(rows)


def _fails(capsys, argv, words):
    with pytest.raises(SystemExit) as exc:
        sys.exit(run_main(main, argv, prog="python -m probing"))
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1 and words in err, err


def test_bad_test_sample_gets_one_line(shared_store, tmp_path, capsys):
    base = ["fit", "--store", str(shared_store), "--out", str(tmp_path / "x")]
    _fails(capsys, base + ["--max-test-tokens", "0"], "--max-test-tokens must be a positive")
    _fails(capsys, base + ["--max-test-tokens", "2"], "smaller than the first drawn test story")
    _fails(capsys, base + ["--max-test-tokens", "many"], "--max-test-tokens: invalid int")
    _fails(capsys, ["bench", "--rss", "--max-test-tokens", "0"],
           "--max-test-tokens must be a positive")
    assert not (tmp_path / "x").exists()

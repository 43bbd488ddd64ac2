"""Extraction spread out: shards on a Ray cluster, killed workers (the Slurm recipe:
test_extract_shard_plan.py)."""

import shutil
import sys
from pathlib import Path

import h5py
import pytest

from extract.extractor import KILL_AFTER_ENV, KILL_SHARD_ENV, extract_store
from extract.shards import shard_dir, shard_file
from extract.store import open_store
from headprobe.errors import UsageError
from tests.test_extract_cli import assert_same_store, cli

REPO = Path(__file__).resolve().parents[1]
GROUP = ["--group-tokens", "2048"]   # 40 stories: 5 groups of stories, enough for 4 shards


@pytest.fixture(scope="module")
def single_store(shared_dataset, shared_model, tmp_path_factory):
    """The 40 shared stories extracted by one process, with the groups the shards use."""
    out = tmp_path_factory.mktemp("single") / "activations.h5"
    return extract_store(shared_dataset, str(shared_model), out, group_tokens=2048)


def ray_args(dataset, model, out, *extra):
    return ["--dataset", dataset, "--model", model, "--out", out, "--ray", "local:2",
            "--shards", "4", "--chunk-rows", "512", *GROUP, *extra]


def assert_every_row_once(store_path, dataset_tokens):
    with open_store(store_path) as store:
        table = store.tokens(["story_id", "position"])
    pairs = set(zip(table["story_id"].tolist(), table["position"].tolist(), strict=True))
    assert len(pairs) == len(table["story_id"]) == dataset_tokens


def test_ray_shards_merge_into_the_single_process_store(ray_cluster, single_store,
                                                         shared_dataset, shared_model, tmp_path,
                                                         capsys):
    out = tmp_path / "act.h5"
    assert cli(*ray_args(shared_dataset, shared_model, out)) == 0
    io = capsys.readouterr()
    assert "4/4" in io.err and "tokens/s" in io.err              # progress: shards, rate
    assert "virtual join of 4 shards" in io.out
    assert sorted(p.name for p in shard_dir(out).iterdir()) == [
        f"shard-0000{i}-of-00004.h5" for i in range(4)]
    with h5py.File(out, "r") as f:
        assert f["keys"].is_virtual and f.attrs["group_tokens"] == 2048
    assert_same_store(single_store, out)                        # identical arrays
    with open_store(single_store) as store:
        assert_every_row_once(out, store.n_tokens)
    mtimes = [shard_file(out, i, 4).stat().st_mtime_ns for i in range(4)]
    out.unlink()                                               # a rerun keeps complete shards
    assert cli(*ray_args(shared_dataset, shared_model, out, "--quiet")) == 0
    assert "every shard was already complete" in capsys.readouterr().out
    assert [shard_file(out, i, 4).stat().st_mtime_ns for i in range(4)] == mtimes
    shard_file(out, 2, 4).rename(tmp_path / "moved.h5")          # a shard gone missing
    with pytest.raises(UsageError, match="reads shard .*shard-00002-of-00004.h5, which is "
                       "missing"):
        open_store(out)
    out.unlink()
    shutil.move(tmp_path / "moved.h5", shard_file(out, 2, 4))
    assert cli(*ray_args(shared_dataset, shared_model, out, "--dtype", "float32")) == 2
    assert "was extracted with different dtype" in capsys.readouterr().err


def test_a_killed_shard_worker_resumes_on_rerun_and_on_retry(ray_cluster, single_store,
                                                             shared_dataset, shared_model,
                                                             tmp_path, capsys, monkeypatch):
    out = tmp_path / "act.h5"
    monkeypatch.setenv(KILL_AFTER_ENV, "2")        # the writer of shard 1/4 dies after 2 blocks
    monkeypatch.setenv(KILL_SHARD_ENV, "1/4")
    assert cli(*ray_args(shared_dataset, shared_model, out, "--retries", "0", "--quiet")) == 2
    err = capsys.readouterr().err.strip()
    assert "shard 1/4 failed: its worker process or node died" in err and "\n" not in err
    killed = shard_file(out, 1, 4)
    assert not killed.exists() and not out.exists()
    with h5py.File(f"{killed}.partial", "r") as f:
        assert f.attrs["rows_written"] == 1024 and f.attrs["complete"] == 0
    others = {i: shard_file(out, i, 4).stat().st_mtime_ns for i in (0, 2, 3)}
    monkeypatch.delenv(KILL_AFTER_ENV)
    assert cli(*ray_args(shared_dataset, shared_model, out, "--quiet")) == 0
    printed = capsys.readouterr().out
    assert "3 complete shard(s) kept" in printed
    with open_store(killed) as shard:        # only the rows this run extracted are counted
        assert f" {shard.n_tokens - 1024} tokens extracted in" in printed
    assert {i: shard_file(out, i, 4).stat().st_mtime_ns for i in (0, 2, 3)} == others
    assert_same_store(single_store, out)
    with open_store(single_store) as store:
        assert_every_row_once(out, store.n_tokens)
    # with retries, Ray runs the task again and the retry continues the file
    monkeypatch.setenv(KILL_AFTER_ENV, "3")
    again = tmp_path / "again.h5"
    assert cli(*ray_args(shared_dataset, shared_model, again, "--retries", "1",
                         "--quiet")) == 0
    assert_same_store(single_store, again)


def test_ray_missing_or_misused_is_one_line(ray_cluster, shared_dataset, shared_model,
                                            tmp_path, capsys, monkeypatch):
    base = ["--dataset", shared_dataset, "--model", shared_model, "--out", tmp_path / "a.h5"]
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "ray", None)                     # Ray not installed
        assert cli(*base, "--ray", "local:2", "--shards", "2") == 2
    assert "install it with pip install 'headprobe[ray]'" in capsys.readouterr().err
    for extra, message in ((["--ray", "local:2"], "--ray needs --shards N"),
                           (["--shards", "2"], "--shards needs --ray"),
                           (["--ray", "local:2", "--shards", "41"], "use at most 40"),
                           (["--ray", "local:2", "--shards", "2", "--device", "cuda"],
                            "--device cuda"),
                           (["--ray", "local:2", "--shards", "2", "--resume"],
                            "--resume is implied"),
                           (["--ray", "local:2", "--shards", "2", "--device", "cuda",
                             "--gpus-per-shard", "1"], "than the Ray cluster has (0)")):
        assert cli(*base, *extra) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert not any(tmp_path.iterdir())

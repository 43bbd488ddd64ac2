"""Shards of any count cut by tokens, read from their own rows, equal to a default run;
the overlapped writer, the device feed on the CPU, merges that describe the whole store."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from datasets_build.dataset import TaggedDataset, load_tagged_dataset
from extract.extractor import extract_store, open_writer, write_rows
from extract.feed import DeviceFeed, auto_batch_tokens
from extract.options import DEFAULT_BATCH_TOKENS, ExtractOptions
from extract.plan import group_tokens_for, plan_extraction, read_shard, shard_bounds
from extract.shards import extract_shard, merge_shard_dir, shard_dir
from extract.store import open_store
from headprobe.errors import UsageError
from tests.test_extract_cli import assert_same_store, cli

SITES = ("key", "activity")
REPO = Path(__file__).resolve().parents[1]
SLURM = REPO / "scripts" / "slurm"


@pytest.fixture(scope="module")
def default_store(shared_dataset, shared_model, tmp_path_factory):
    """The 40 shared stories extracted by one process with the default settings."""
    out = tmp_path_factory.mktemp("default") / "activations.h5"
    return extract_store(shared_dataset, str(shared_model), out, sites=SITES)


def test_shard_bounds_cut_at_stories_into_equal_token_runs():
    rng = np.random.default_rng(0)
    sizes = rng.integers(20, 400, size=200)
    for n in (1, 3, 16, 200):
        bounds = shard_bounds(sizes, n)
        assert bounds[0] == 0 and bounds[-1] == len(sizes) and np.all(np.diff(bounds) >= 1)
        tokens = np.add.reduceat(sizes, bounds[:-1])
        assert tokens.sum() == sizes.sum()
        if n < 20:                 # each shard within one story of its equal share
            assert np.all(np.abs(tokens - sizes.sum() / n) <= sizes.max())
    lopsided = shard_bounds(np.array([1000, 1, 1, 1]), 4)   # every shard gets a story
    assert lopsided.tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(UsageError, match="4 stories cannot make 5 shards"):
        shard_bounds(np.array([5, 5, 5, 5]), 5)


@pytest.mark.parametrize("n", [3, 7])
def test_any_shard_count_gives_the_default_single_store(default_store, shared_dataset,
                                                         shared_model, tmp_path, n):
    """40 stories make one group by default: shards cut it and still batch it whole."""
    out = tmp_path / "act.h5"
    for index in range(n):
        extract_shard(shared_dataset, str(shared_model), out, index, n, sites=SITES)
    merge_shard_dir(out)
    assert_same_store(default_store, out)                       # bit for bit
    with open_store(out) as merged, open_store(default_store) as single:
        assert merged.attrs["story_ids_range"] == single.attrs["story_ids_range"]
        assert merged.attrs["n_stories"] == single.attrs["n_stories"] == 40
        assert merged.attrs["command"] == merged.attrs["merge_command"]
        assert merged.attrs["shard"] == "" and len(merged.attrs["shard_commands"]) == 1
        assert merged.attrs["rows_extracted"] == single.n_tokens
    shards = sorted(shard_dir(out).glob("*.h5"))
    rows = [open_store(p).n_tokens for p in shards]
    assert max(rows) - min(rows) < 2 * 250                     # equal by tokens, give a story


def test_a_test_split_shard_and_its_reads(shared_dataset, shared_model, tmp_path,
                                          monkeypatch):
    """A shard reads its own rows: never the whole token table, never a story's text."""
    dataset = load_tagged_dataset(shared_dataset)
    whole = dataset.token_table("test")

    def refuse(*args, **kwargs):
        raise AssertionError("read the whole token table")

    monkeypatch.setattr(TaggedDataset, "token_table", refuse)
    story_table = TaggedDataset.story_table
    monkeypatch.setattr(TaggedDataset, "story_table", lambda self, split=None, columns=(
        "text",): story_table(self, split, columns) if "text" not in columns else refuse())
    parts = [read_shard(dataset, "test", (i, 3), 512) for i in range(3)]
    for column, values in whole.items():
        joined = np.concatenate([p.token_table[column] for p in parts])
        np.testing.assert_array_equal(joined, values, err_msg=column)
    for part in parts:                 # its stories, among those of the groups it cuts
        rows = range(part.offset, part.offset + len(part.token_table["input_id"]))
        inside = [(s.story_id, s.start - part.offset) for s in part.context if s.start in rows]
        assert inside == [(s.story_id, s.start) for s in part.stories]
    options = ExtractOptions(shared_dataset, str(shared_model), tmp_path / "a.h5",
                             split="test", shard=(1, 3), sites=SITES)
    plan = plan_extraction(options)
    assert plan.n_rows == len(parts[1].token_table["input_id"])


def test_the_overlapped_writer_equals_the_synchronous_one(shared_dataset, shared_model,
                                                          tmp_path):
    stores = []
    for queue in (0, 3):
        options = ExtractOptions(shared_dataset, str(shared_model), tmp_path / f"{queue}.h5",
                                 sites=SITES, chunk_rows=300, group_tokens=2048)
        plan = plan_extraction(options)
        writer = open_writer(plan)
        try:
            write_rows(plan, writer, queue=queue)
        finally:
            writer.close()
        options.partial.rename(options.out)
        stores.append(options.out)
    assert_same_store(*stores)


def test_the_writer_overlaps_the_model_only_where_it_has_cores_of_its_own(monkeypatch):
    """On the CPU with a torch thread on every core, blocks are written before the next
    are computed; with a spare core, or a model on a GPU, they wait in a queue."""
    import torch

    from extract import extractor

    threads = torch.get_num_threads()
    monkeypatch.setattr(extractor, "usable_cores", lambda: threads)
    assert extractor.write_queue("cpu") == 0
    assert extractor.write_queue("cuda:0") == extractor.WRITE_QUEUE
    monkeypatch.setattr(extractor, "usable_cores", lambda: threads + 1)
    assert extractor.write_queue(torch.device("cpu")) == extractor.WRITE_QUEUE


def test_the_device_feed_and_auto_batches_on_the_cpu(shared_dataset, shared_model,
                                                     tmp_path):
    import torch

    feed = DeviceFeed("cpu")
    assert not feed.pinned
    ids = np.arange(12, dtype=np.int64).reshape(3, 4)
    assert torch.equal(feed.to_device(ids), torch.from_numpy(ids))
    back = feed.to_host({"a": torch.ones(2, 3), "b": torch.zeros(1, dtype=torch.int64)})
    assert back["a"].shape == (2, 3) and back["b"].dtype == np.int64
    assert auto_batch_tokens("cpu", str(shared_model), SITES, 777) == 777
    options = ExtractOptions(shared_dataset, str(shared_model), tmp_path / "a.h5",
                             batch_tokens="auto")
    assert options.batch_tokens == DEFAULT_BATCH_TOKENS and options.batch_tokens_auto
    assert group_tokens_for(options) > 0
    for bad in ("0", "many"):
        assert cli("--dataset", shared_dataset, "--model", shared_model, "--out",
                   tmp_path / "b.h5", "--batch-tokens", bad) == 2
    assert not (tmp_path / "b.h5").exists()


def test_a_merge_again_is_kept_and_resume_with_shards_is_refused(shared_dataset, shared_model,
                                                                 tmp_path, capsys):
    out = tmp_path / "act.h5"
    for index in range(2):
        assert cli("--dataset", shared_dataset, "--model", shared_model, "--out", out,
                   "--shard", f"{index}/2", "--sites", "activity", "--quiet") == 0
    assert "tokens extracted in" in capsys.readouterr().out
    assert cli("merge", out) == 0
    stamp = out.stat().st_mtime_ns
    assert cli("merge", out) == 0                   # again: nothing to do, no --overwrite
    assert "kept" in capsys.readouterr().out and out.stat().st_mtime_ns == stamp
    with h5py.File(out, "r") as f:
        assert f["activity"].is_virtual
    assert cli("--dataset", shared_dataset, "--model", shared_model, "--out", out,
               "--shard", "0/2", "--resume") == 2
    err = capsys.readouterr().err
    assert "--resume is implied" in err and err.count("\n") == 1
    assert cli("--dataset", shared_dataset, "--model", shared_model, "--out",
               tmp_path / "c.h5", "--shard", "0/41") == 2
    assert "40 stories cannot make 41 shards" in capsys.readouterr().err


def _slurm_task(script, args, env, task, first):
    """One array task of ``script``: Slurm sets these variables (a task resubmitted alone
    has its own id as the array's minimum and a count of 1)."""
    slurm = {"SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_MIN": str(first),
             "SLURM_ARRAY_TASK_COUNT": "1" if task == first else "3",
             "SLURM_CPUS_PER_TASK": "1"}
    return subprocess.run(["bash", str(SLURM / script), *map(str, args)],
                          env={**env, **slurm}, cwd=REPO, capture_output=True, text=True)


def test_a_slurm_array_from_1_with_a_task_resubmitted_and_two_merges(
        default_store, shared_dataset, shared_model, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copytree(shared_dataset, run / "dataset")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO),
           "PYTHON": sys.executable}
    args = [run, shared_model, 3, "--array-first", "1", "--sites", ",".join(SITES)]
    for task in (3, 1):                          # sbatch --array=1-3; task 2 failed
        done = _slurm_task("extract-shard.sbatch", args, env, task, 1)
        assert done.returncode == 0, done.stderr
    merge = ["bash", str(SLURM / "merge.sbatch"), str(run)]
    failed = subprocess.run(merge, env=env, cwd=REPO, capture_output=True, text=True)
    assert failed.returncode == 2 and "shards 1/3 (missing)" in failed.stderr
    assert failed.stderr.count("\n") == 1 and not (run / "activations.h5").exists()
    done = _slurm_task("extract-shard.sbatch", args, env, 2, 2)   # sbatch --array=2 alone
    assert done.returncode == 0 and "(shard 1/3)" in done.stdout, done.stderr
    for again in (False, True):                  # the merge job submitted twice
        merged = subprocess.run(merge, env=env, cwd=REPO, capture_output=True, text=True)
        assert merged.returncode == 0, merged.stderr
        assert merged.stdout.startswith("kept" if again else "wrote")
    assert_same_store(default_store, run / "activations.h5")


def test_array_tasks_with_a_step_and_out_of_range():
    def index(task, *args):
        code = f'source "{SLURM / "array-task.sh"}" {" ".join(args)}; echo "$index/$shards"'
        return subprocess.run(["bash", "-c", code], capture_output=True, text=True,
                              env={**os.environ, "SLURM_ARRAY_TASK_ID": str(task)})

    assert index(8, "4", "--array-first", "2", "--array-step", "2").stdout == "3/4\n"
    assert index(0, "4", "--sites", "key").stdout == "0/4\n"
    for task, args in ((4, ("4",)), (3, ("4", "--array-step", "2"))):
        bad = index(task, *args)
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr


def test_the_slurm_scripts_are_in_the_docs_and_parse():
    doc = (REPO / "docs" / "scale-out.md").read_text()
    script = (SLURM / "extract-shard.sbatch").read_text()
    assert script[script.index("\n#SBATCH") + 1:].strip() in doc   # the recipe shows it
    for path in sorted(SLURM.iterdir()):
        assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
        assert f"scripts/slurm/{path.name}" in doc
        text = path.read_text()
        assert "SLURM_ARRAY_TASK_COUNT" not in text and "--gpus-per-task" not in text

"""Stores are never corrupt: one writer per store, resume checks identity and written rows,
merged stores check their shards, a full disk or a damaged input is one line."""

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

from datasets_build.dataset import load_tagged_dataset
from datasets_build.sources import read_separated
from datasets_build.untagged import write_untagged_dataset
from extract.__main__ import main
from extract.extractor import KILL_AT_ENV, extract_store
from extract.store import open_store
from headprobe.cli import run_main
from headprobe.errors import UsageError
from headprobe.tokenization import load_tokenizer
from tests.fixtures_faults import hold_lock
from tests.test_extract_cli import assert_same_store

OPTS = dict(chunk_rows=512, batch_tokens=1024)
REPO = Path(__file__).resolve().parents[1]


def cli(*args):
    return run_main(main, [str(a) for a in args], prog="python -m extract")


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_partial(store: Path, out: Path, rows: int) -> Path:
    """``out``'s unfinished store holding the first ``rows`` rows of complete ``store``."""
    partial = out.with_name(out.name + ".partial")
    shutil.copy(store, partial)
    with h5py.File(partial, "r+") as f:
        f.attrs["complete"] = 0
        f.attrs["rows_written"] = rows
    return partial


@pytest.fixture(scope="module")
def full_store(tmp_path_factory, untagged_dataset, shared_model) -> Path:
    """The 12 untagged stories through the shared model in chunks of 512 rows."""
    out = tmp_path_factory.mktemp("integrity") / "full.h5"
    return extract_store(untagged_dataset, str(shared_model), out, **OPTS)


def extract_args(dataset, model, out, *extra):
    return ["--dataset", dataset, "--model", model, "--out", out, "--chunk-rows", "512",
            "--batch-tokens", "1024", "--quiet", *extra]


def test_a_second_writer_of_a_store_fails_at_once(untagged_dataset, shared_model, tmp_path,
                                                  capsys):
    out = tmp_path / "act.h5"
    holder = hold_lock(out)
    try:
        assert cli(*extract_args(untagged_dataset, shared_model, out)) == 2
        assert f"is being written by another process (pid {holder.pid})" in one_line_error(capsys)
        assert cli("merge", out, tmp_path / "s0.h5", tmp_path / "s1.h5") == 2
        assert f"pid {holder.pid}" in one_line_error(capsys)
    finally:
        holder.stdin.close()
        holder.wait()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_resume_refuses_another_dataset_of_the_same_size(full_store, untagged_dataset,
                                                         shared_model, valid_text, tmp_path,
                                                         capsys):
    texts = [t.strip() for t, _ in zip(read_separated(valid_text), range(12), strict=False)]
    texts[5], texts[11] = texts[5].replace("Tom", "Ben"), texts[11].replace("Tom", "Ben")
    other = write_untagged_dataset(tmp_path / "other", texts, load_tokenizer(str(shared_model)),
                                   test_every=4)
    a = load_tagged_dataset(untagged_dataset).token_table()["input_id"]
    b = load_tagged_dataset(other).token_table()["input_id"]
    assert len(a) == len(b) and (a[:1024] == b[:1024]).all() and not (a == b).all()
    out = tmp_path / "act.h5"
    partial = make_partial(full_store, out, 1024)     # rows 0-1023 are the same in both
    before = digest(partial)
    assert cli(*extract_args(other, shared_model, out, "--resume")) == 2
    assert "started on other dataset content" in one_line_error(capsys)
    assert digest(partial) == before and not out.exists()
    assert cli(*extract_args(untagged_dataset, shared_model, out, "--resume")) == 0
    assert not partial.exists()
    assert_same_store(full_store, out)


def test_resume_refuses_changed_weights(untagged_dataset, shared_model, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    model = tmp_path / "model"
    shutil.copytree(shared_model, model)
    out = tmp_path / "act.h5"
    store = extract_store(untagged_dataset, str(model), tmp_path / "done.h5", split="test",
                          chunk_rows=128)
    make_partial(store, out, 128)
    weights = load_file(model / "model.safetensors")
    name = sorted(weights)[0]
    weights[name] = weights[name] + 0.01
    save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    assert cli("--dataset", untagged_dataset, "--model", model, "--out", out, "--split", "test",
               "--chunk-rows", "128", "--resume", "--quiet") == 2
    assert "started with different model_weights_sha256" in one_line_error(capsys)


def test_resume_refuses_damaged_rows(full_store, untagged_dataset, shared_model, tmp_path,
                                     capsys):
    out = tmp_path / "act.h5"
    partial = make_partial(full_store, out, 1024)
    with h5py.File(partial, "r") as f:
        info = f["keys"].id.get_chunk_info(5)          # a chunk of rows 0-511
    with open(partial, "r+b") as f:
        f.seek(info.byte_offset + info.size // 2)
        f.write(bytes(range(64)))
    before = digest(partial)
    assert cli(*extract_args(untagged_dataset, shared_model, out, "--resume")) == 2
    err = one_line_error(capsys)
    assert "rows 0-511 of site key" in err and "--overwrite" in err
    assert digest(partial) == before and not out.exists()


def test_a_merged_store_checks_its_shards(untagged_dataset, shared_model, tmp_path, capsys):
    from probing.__main__ import main as probing_main

    shards = [extract_store(untagged_dataset, str(shared_model), tmp_path / f"s{i}.h5",
                            shard=f"{i}/2", split="test", group_tokens=1) for i in range(2)]
    merged = tmp_path / "merged.h5"
    assert cli("merge", merged, *shards) == 0
    with open_store(merged) as store:
        assert store.read("key", 0, 0).shape[0] == store.n_tokens
    shards[1].rename(tmp_path / "moved.h5")
    with pytest.raises(UsageError, match=f"reads shard {shards[1]}, which is missing"):
        open_store(merged)
    assert run_main(probing_main, ["fit", "--store", str(merged), "--out",
                                   str(tmp_path / "probes")], prog="python -m probing") == 2
    assert "s1.h5, which is missing" in one_line_error(capsys)
    shutil.copy(shards[0], shards[1])                 # another shard under the same name
    with pytest.raises(UsageError, match="s1.h5, which has changed since the merge"):
        open_store(merged)
    assert not (tmp_path / "probes").exists()


def test_a_full_disk_stops_extract_cleanly_and_resume_continues(full_store, untagged_dataset,
                                                                shared_model, tiny_disk,
                                                                tmp_path, capsys):
    out = tiny_disk / "act.h5"
    assert cli(*extract_args(untagged_dataset, shared_model, out)) == 2
    err = one_line_error(capsys)
    assert "not enough free space to write" in err and "--resume" in err
    partial = tiny_disk / "act.h5.partial"
    assert not out.exists() and partial.exists()
    moved = tmp_path / "act.h5"
    shutil.move(partial, tmp_path / "act.h5.partial")
    assert cli(*extract_args(untagged_dataset, shared_model, moved, "--resume")) == 0
    assert_same_store(full_store, moved)


@pytest.mark.parametrize("damage", ["no tokens/", "bad manifest.json", "truncated arrow"])
def test_a_damaged_dataset_is_one_line(damage, untagged_dataset, shared_model, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(untagged_dataset, data)
    if damage == "no tokens/":
        shutil.rmtree(data / "tokens")
    elif damage == "bad manifest.json":
        (data / "manifest.json").write_text('{"format": ')
    else:
        arrow = next((data / "tokens").glob("*.arrow"))
        arrow.write_bytes(arrow.read_bytes()[:3000])
    assert cli(*extract_args(data, shared_model, tmp_path / "a.h5")) == 2
    assert f"cannot read tagged dataset {data}" in one_line_error(capsys)
    assert not list(tmp_path.glob("a.h5*"))


def test_damaged_weights_and_outputs_of_the_wrong_kind_are_one_line(untagged_dataset,
                                                                    shared_model, tmp_path,
                                                                    capsys):
    model = tmp_path / "model"
    shutil.copytree(shared_model, model)
    with open(model / "model.safetensors", "r+b") as f:
        f.truncate(100_000)
    assert cli(*extract_args(untagged_dataset, model, tmp_path / "a.h5")) == 2
    assert "cannot load model" in one_line_error(capsys)
    (tmp_path / "b.h5").mkdir()
    assert cli(*extract_args(untagged_dataset, shared_model, tmp_path / "b.h5",
                             "--overwrite")) == 2
    assert "is a directory" in one_line_error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.h5", "model"]
    assert not any((tmp_path / "b.h5").iterdir())


@pytest.mark.parametrize("point, rerun", [("create", []), ("tokens", []),
                                         ("create", ["--resume"])])
def test_a_kill_while_the_store_is_created_is_recovered_by_a_rerun(
        point, rerun, full_store, untagged_dataset, shared_model, tmp_path, capsys):
    out = tmp_path / "act.h5"
    env = {**os.environ, KILL_AT_ENV: point, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "extract",
           *map(str, extract_args(untagged_dataset, shared_model, out))]
    killed = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    partial = out.with_name(out.name + ".partial")
    assert partial.exists() and not out.exists()
    assert cli(*extract_args(untagged_dataset, shared_model, out, *rerun)) == 0
    assert not partial.exists()
    assert_same_store(full_store, out)


def test_a_refused_resume_leaves_the_file_as_it_was(full_store, untagged_dataset,
                                                    shared_model, tmp_path, capsys):
    out = tmp_path / "act.h5"
    partial = make_partial(full_store, out, 512)
    before = digest(partial)
    assert cli(*extract_args(untagged_dataset, shared_model, out, "--resume",
                             "--dtype", "float32")) == 2
    assert "different" in one_line_error(capsys) and digest(partial) == before


def test_a_refused_shard_run_leaves_no_empty_shard_directory(untagged_dataset, shared_model,
                                                             tmp_path, monkeypatch):
    import extract.extractor
    from extract.shards import extract_shard, shard_dir

    out = tmp_path / "act.h5"

    def refused(dataset, model, path, **settings):
        Path(path).parent.mkdir(parents=True, exist_ok=True)    # as the output lock does
        raise UsageError("refused after the shard directory was made")

    monkeypatch.setattr(extract.extractor, "extract_store", refused)
    with pytest.raises(UsageError, match="refused after"):
        extract_shard(untagged_dataset, str(shared_model), out, 0, 2)
    assert not shard_dir(out).exists() and list(tmp_path.iterdir()) == []
    shard_dir(out).mkdir()                          # one that was there before stays
    with pytest.raises(UsageError):
        extract_shard(untagged_dataset, str(shared_model), out, 0, 2)
    assert shard_dir(out).is_dir()

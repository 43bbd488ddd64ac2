"""Readers check what they read against the checksums written with it: a damaged block of a
store, or a damaged array of probe or study results, is one line naming the file and the
array (exit code 2), and HEADPROBE_VERIFY=0 / verify=False skips the checks."""

import os
import shutil
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest

from extract.extractor import extract_store
from extract.merge import merge_stores
from extract.store import open_store
from extract.store.integrity import CHECKSUMS
from headprobe.checksums import CRC_ATTR, VERIFY_ENV
from headprobe.failures import DamagedFile
from probing.results import read_results
from probing.study_io import read_study
from tests.test_stage_faults import one_line_error, run


@pytest.fixture(scope="module")
def plain_store(tmp_path_factory, shared_dataset, shared_model) -> Path:
    """The shared dataset's store written without compression (keys and activity)."""
    out = tmp_path_factory.mktemp("plain_store") / "activations.h5"
    return extract_store(shared_dataset, str(shared_model), out, split="all",
                         sites=("key", "activity"), dtype="float32", compression="none")


def damage_chunk(path: Path, array: str, chunk: int = 0) -> None:
    """Random bytes over one stored chunk (layer 0, head 0, the first rows) of ``array``."""
    with h5py.File(path, "r") as f:
        ds = f[array]
        offset, size = ((ds.id.get_chunk_info(chunk).byte_offset, ds.id.get_chunk_info(chunk).size)
                        if ds.chunks else (ds.id.get_offset(), ds.id.get_storage_size()))
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes())


@pytest.fixture(params=["compressed", "uncompressed"])
def damaged_store(request, shared_store, plain_store, tmp_path) -> Path:
    store = tmp_path / "act.h5"
    shutil.copy(shared_store if request.param == "compressed" else plain_store, store)
    damage_chunk(store, "keys")
    return store


def test_probing_fit_refuses_a_damaged_block_in_one_line(damaged_store, tmp_path, capsys):
    assert run("probing", "fit", "--store", damaged_store, "--out", tmp_path / "probes",
               "--layers", "0", "--sites", "key", "--bootstrap", "10") == 2
    line = one_line_error(capsys)
    assert str(damaged_store) in line and "array keys" in line and "rows 0-" in line, line
    assert not (tmp_path / "probes").exists()


def test_reading_without_verification_returns_the_damaged_rows(plain_store, tmp_path,
                                                               monkeypatch):
    store = tmp_path / "act.h5"
    shutil.copy(plain_store, store)
    damage_chunk(store, "keys")
    with open_store(store, verify=False) as opened:
        damaged = opened.read("key", 0, 0, index=np.arange(4))
    with open_store(plain_store) as opened:
        assert not np.array_equal(damaged, opened.read("key", 0, 0, index=np.arange(4)))
    monkeypatch.setenv(VERIFY_ENV, "0")
    with open_store(store) as opened:
        opened.read("key", 1, 0, index=np.arange(4))
    monkeypatch.delenv(VERIFY_ENV)
    with open_store(store) as opened:
        # the checksum covers the whole block of rows: an intact head of it is refused too
        with pytest.raises(DamagedFile, match="array keys"):
            opened.read("key", 1, 0, index=np.arange(4))


@pytest.mark.parametrize("kind", ["compressed", "uncompressed"])
def test_a_study_refuses_a_damaged_block_in_one_line(kind, shared_store, plain_store, tmp_path,
                                                     capsys):
    store = tmp_path / "act.h5"
    shutil.copy(shared_store if kind == "compressed" else plain_store, store)
    damage_chunk(store, "activity")
    assert run("probing", "quote", "--store", store, "--no-model",
               "--out", tmp_path / "quote") == 2
    line = one_line_error(capsys)
    assert str(store) in line and "array activity" in line, line


def test_nan_activations_are_refused(shared_store, tmp_path):
    store = tmp_path / "act.h5"
    shutil.copy(shared_store, store)
    with h5py.File(store, "r+") as f:
        # a NaN written through HDF5 with its checksum rewritten: only the value is wrong
        f["keys"][3, 0, 0, 0] = np.nan
        rows = int(f.attrs["chunk_rows"])
        block = f["keys"][:rows]
        f["integrity/block_crc32"][0, 0] = __import__("zlib").crc32(block.tobytes())
    with open_store(store) as opened, pytest.raises(DamagedFile, match="NaN or infinite"):
        opened.read("key", 0, 0)


def test_probe_results_carry_checksums_and_refuse_damage(probing_results, tmp_path, capsys):
    results = tmp_path / "probes"
    shutil.copytree(probing_results, results)
    with h5py.File(results / "probes.h5", "r") as f:
        assert CRC_ATTR in f["f1"].attrs and CRC_ATTR in f["coef"].attrs
    read_results(results)
    with h5py.File(results / "probes.h5", "r+") as f:       # a changed value, same bytes count
        f["accuracy"][0, 0, 0] = f["accuracy"][0, 0, 0] + 0.25
    with pytest.raises(DamagedFile, match="array accuracy does not match its checksum"):
        read_results(results)
    assert read_results(results, verify=False).arrays["accuracy"].shape
    assert run("figures", "--results", results, "--out", tmp_path / "figs") == 2
    line = one_line_error(capsys)
    assert "array accuracy" in line and str(results) in line, line


def test_damaged_study_is_one_line_for_figures(quote_study, tmp_path, capsys):
    study = tmp_path / "quote"
    shutil.copytree(quote_study, study)
    with h5py.File(study / "results.h5", "r") as f:
        name = next(n for n, ds in f.items() if not ds.is_scale and ds.size > 8
                    and ds.dtype.kind == "f")
    damage_chunk(study / "results.h5", name)
    assert run("figures", "--results", study, "--out", tmp_path / "figs") == 2
    line = one_line_error(capsys)
    assert f"array {name}" in line and str(study) in line, line
    with pytest.raises(DamagedFile):
        read_study(study)


def test_results_written_before_checksums_still_open(probing_results, tmp_path):
    results = tmp_path / "probes"
    shutil.copytree(probing_results, results)
    with h5py.File(results / "probes.h5", "r+") as f:
        for ds in f.values():
            ds.attrs.pop(CRC_ATTR, None)
        f["accuracy"][0, 0, 0] = 0.5
    assert read_results(results).arrays["accuracy"][0, 0, 0] == pytest.approx(0.5)


def test_verification_is_on_unless_switched_off(monkeypatch):
    from headprobe.checksums import verification_on

    monkeypatch.delenv(VERIFY_ENV, raising=False)
    assert verification_on() and not verification_on(False)
    for off in ("0", "off", "false"):
        monkeypatch.setenv(VERIFY_ENV, off)
        assert not verification_on() and verification_on(True)


def test_a_broken_manifest_is_one_line_for_figures_and_top(probing_results, tmp_path, capsys):
    results = tmp_path / "probes"
    shutil.copytree(probing_results, results)
    (results / "manifest.json").write_text('{"stage": "probing fit", ')
    assert run("probing", "top", "--results", results, "--tag", "NN") == 2
    line = one_line_error(capsys)
    assert f"{results / 'manifest.json'} is not valid JSON" in line, line
    assert run("figures", "--results", results, "--out", tmp_path / "figs") == 2
    assert "manifest.json is not valid JSON" in one_line_error(capsys)


def test_a_changed_token_table_is_refused(shared_store, tmp_path):
    store = tmp_path / "act.h5"
    shutil.copy(shared_store, store)
    with h5py.File(store, "r+") as f:
        f["tokens/input_id"][5] = f["tokens/input_id"][5] + 1
    with open_store(store) as opened, pytest.raises(DamagedFile, match="token table"):
        opened.tokens(["split"])
    with open_store(store, verify=False) as opened:
        assert len(opened.tokens(["split"])["split"]) == opened.n_tokens


def test_probing_fit_no_verify_reads_without_checks(shared_store, tmp_path, capsys):
    store = tmp_path / "act.h5"
    shutil.copy(shared_store, store)
    with h5py.File(store, "r+") as f:
        f["tokens/input_id"][5] = f["tokens/input_id"][5] + 1
    fit = ["fit", "--store", store, "--layers", "0", "--sites", "key", "--bootstrap", "10"]
    assert run("probing", *fit, "--out", tmp_path / "checked") == 2
    assert "token table (group tokens) does not match" in one_line_error(capsys)
    assert run("probing", *fit, "--out", tmp_path / "unchecked", "--no-verify") == 0
    assert VERIFY_ENV not in os.environ
    assert read_results(tmp_path / "unchecked").arrays["f1"].shape[:2] == (1, 1)


def lined_up_chunk_rows(dataset: Path) -> int:
    """Block rows that make both shards of ``dataset`` ("all" split) whole blocks but the
    last: the largest divisor of the first shard's tokens up to 1024."""
    from datasets_build.dataset import load_tagged_dataset
    from extract.plan import shard_tokens

    first, second = shard_tokens(load_tagged_dataset(dataset), "all", 2)
    return max(d for d in range(1, min(first, second, 1024) + 1) if first % d == 0)


@pytest.mark.parametrize("lined_up", [False, True], ids=["computed", "copied"])
def test_a_merged_store_carries_checksums_and_refuses_a_damaged_block(
        lined_up, shared_dataset, shared_model, tmp_path, capsys):
    # not lined up: blocks run across the first shard's end, so the merge computes them;
    # lined up: the shards' blocks are the merged ones and their checksums are copied
    chunk_rows = lined_up_chunk_rows(shared_dataset) if lined_up else None
    shards = [extract_store(shared_dataset, str(shared_model), tmp_path / f"s{i}.h5",
                            shard=f"{i}/2", split="all", group_tokens=1, sites=("key",),
                            chunk_rows=chunk_rows) for i in range(2)]
    merged = merge_stores(tmp_path / "merged.h5", shards)
    with h5py.File(merged, "r+") as f:      # as merged before merges carried checksums
        del f[CHECKSUMS]
    assert merge_stores(merged, shards) == merged    # redone without --overwrite
    with h5py.File(merged, "r") as f:
        rows, keys, table = int(f.attrs["chunk_rows"]), f["keys"][()], f[CHECKSUMS][()]
        assert f["keys"].is_virtual and len(table) == -(-len(keys) // rows)
    assert table[:, 0].tolist() == [zlib.crc32(keys[at:at + rows].tobytes())
                                    for at in range(0, len(keys), rows)]
    shard_tables = []
    for shard in shards:
        with h5py.File(shard, "r") as f:
            shard_tables.append(f[CHECKSUMS][()])
    assert (len(np.concatenate(shard_tables)) == len(table)) == lined_up
    with open_store(merged) as store:
        assert store.read("key", 0, 0).shape == (len(keys), store.d_head)
    damage_chunk(shards[1], "keys")
    with open_store(merged) as store, pytest.raises(DamagedFile) as err:
        store.read("key", 0, 0)
    assert f"{merged}: rows " in str(err.value) and "of array keys" in str(err.value)
    assert f"held by {shards[1]}" in str(err.value), err.value
    assert run("probing", "fit", "--store", merged, "--out", tmp_path / "probes",
               "--layers", "0", "--sites", "key", "--bootstrap", "10") == 2
    assert "of array keys" in one_line_error(capsys)


@pytest.mark.parametrize("kind", ["compressed", "uncompressed"])
def test_figures_refuse_a_damaged_store_in_one_line(kind, shared_store, plain_store,
                                                    probing_results, tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "probes").symlink_to(probing_results)
    store = run_dir / "activations.h5"
    shutil.copy(shared_store if kind == "compressed" else plain_store, store)
    damage_chunk(store, "activity")
    page = tmp_path / "atlas.html"
    assert run("figures", "atlas", "--results", probing_results, "--store", store,
               "--out", page) == 2
    line = one_line_error(capsys)
    assert str(store) in line and "of array activity" in line, line
    # the run's own store too: damage is refused, not drawn around
    assert run("figures", "atlas", "--run", run_dir) == 2
    assert "of array activity" in one_line_error(capsys)
    assert not page.exists() and not (run_dir / "figures" / "atlas.html").exists()

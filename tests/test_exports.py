"""Exports for other tools: the store as a Hugging Face datasets directory (hf) and as
Hewitt & Liang's per-sentence HDF5 (hl); the probe grid as a tidy table (parquet, csv)."""

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from datasets_build.tagsets import tag_matrix
from extract.__main__ import main as extract_main
from extract.store import open_store
from headprobe.cli import run_main
from headprobe.errors import UsageError
from headprobe.tokenization import load_tokenizer
from headprobe.tokens import display_text, token_strings
from probing.__main__ import main as probing_main
from probing.results import read_results

REPO = Path(__file__).resolve().parents[1]


def exit_code(main, prog, args):
    """The exit code of ``prog export ARGS`` (argparse's errors exit through SystemExit)."""
    try:
        return run_main(main, ["export", *map(str, args)], prog=prog)
    except SystemExit as exc:
        return exc.code


def extract_cli(*args):
    return exit_code(extract_main, "python -m extract", args)


def probing_cli(*args):
    return exit_code(probing_main, "python -m probing", args)


@pytest.fixture(scope="module")
def hf_export(tmp_path_factory, shared_store) -> Path:
    out = tmp_path_factory.mktemp("hf") / "hf"
    assert extract_cli("--store", shared_store, "--format", "hf", "--out", out,
                       "--sites", "key,query,activity", "--layers", "3,0") == 0
    return out


def assert_rows_equal_store(ds, store, sites, layers, rows=None):
    """Every vector column and the token table of ``ds`` equal the store's (rows ``rows``,
    default all), row for row."""
    table = ds.with_format("numpy")[:]
    for site in sites:
        for layer in layers:
            np.testing.assert_array_equal(table[f"{site}_L{layer}"],
                                          store.read_layer(site, layer, index=rows),
                                          err_msg=site)
    tokens = store.tokens(index=rows)
    for name in ("input_id", "story_id", "parent_id", "position", "fine_tag", "coarse_tag",
                 "quoted", "split"):
        np.testing.assert_array_equal(table[name], tokens[name], err_msg=name)


def test_hf_export_loads_with_load_from_disk(hf_export, shared_store):
    from datasets import load_from_disk

    ds = load_from_disk(str(hf_export))
    with open_store(shared_store) as store:
        assert len(ds) == store.n_tokens > 1000
        assert ds.features["fine_tag"].names == store.tags["fine"]
        assert ds.features["split"].names == ["train", "test"]
        assert ds.features["key_L0"].shape == (store.n_kv_heads, store.d_head)
        assert [c for c in ds.column_names if "_L" in c] == [
            "key_L0", "key_L3", "query_L0", "query_L3", "activity_L0", "activity_L3"]
        assert_rows_equal_store(ds, store, ("key", "query", "activity"), (0, 3))
        sets = store.tokens(["fine_tags"])["fine_tags"]
        hot = tag_matrix(sets, len(store.tags["fine"]))
        straddling = np.flatnonzero(hot.sum(1) > 1)
        assert len(straddling) > 0
        for row in straddling[:20]:
            assert ds[int(row)]["fine_tags"] == list(np.flatnonzero(hot[row]))


def test_hf_export_streams(hf_export, shared_store):
    from datasets import load_dataset, load_from_disk

    streamed = load_dataset("arrow", data_files=str(hf_export / "data-*.arrow"),
                            streaming=True, split="train")
    with open_store(shared_store) as store:
        keys = store.read_layer("key", 3)
        n = 0
        for n, row in enumerate(streamed, 1):
            if n <= 50:
                np.testing.assert_array_equal(np.asarray(row["key_L3"], np.float32),
                                              keys[n - 1])
        assert n == store.n_tokens
        first = next(iter(load_from_disk(str(hf_export)).to_iterable_dataset()))
        np.testing.assert_array_equal(np.asarray(first["query_L0"], np.float32),
                                      store.read_layer("query", 0, index=[0])[0])


def test_hf_export_in_blocks_and_shards(shared_store, tmp_path, monkeypatch):
    """Small blocks and shards: rows cross block and shard boundaries unchanged; --split
    keeps one split's rows."""
    from datasets import load_dataset, load_from_disk

    import extract.exports.hf as hf

    row = 2 * 16 * 4 * 4   # bytes of one row: key of two layers, 16 heads of 4 floats
    monkeypatch.setattr(hf, "BLOCK_BYTES", 300 * row)
    monkeypatch.setattr(hf, "SHARD_BYTES", 3000 * row)
    out = tmp_path / "hf"
    assert extract_cli("--store", shared_store, "--format", "hf", "--out", out,
                       "--sites", "key", "--layers", "1,2", "--split", "train") == 0
    shards = sorted(p.name for p in out.glob("*.arrow"))
    with open_store(shared_store) as store:
        train = store.select(split="train")
        assert 6000 < len(train) <= 9000 and len(train) < store.n_tokens
        assert shards == [f"data-0000{i}-of-00003.arrow" for i in range(3)]
        assert_rows_equal_store(load_from_disk(str(out)), store, ("key",), (1, 2), train)
        streamed = load_dataset("arrow", data_files=str(out / "data-*.arrow"),
                                streaming=True, split="train")
        positions = [row["position"] for row in streamed]
        np.testing.assert_array_equal(positions, store.tokens(["position"])["position"][train])


def read_conllu(path: Path) -> list[list[list[str]]]:
    """Sentences of a CoNLL-U file: lists of the ten fields of each token line."""
    sentences, current = [], []
    for line in path.read_text(encoding="utf-8").split("\n"):
        if line.startswith("#"):
            continue
        if line == "":
            if current:
                sentences.append(current)
            current = []
        else:
            current.append(line.split("\t"))
    return sentences


def test_hl_export_shapes_vectors_and_labels(shared_store, shared_model, tmp_path):
    out = tmp_path / "hl"
    assert extract_cli("--store", shared_store, "--format", "hl", "--out", out,
                       "--layers", "0,2,5") == 0
    assert sorted(p.name for p in out.iterdir()) == ["key.hdf5", "query.hdf5", "tokens.conllu"]
    sentences = read_conllu(out / "tokens.conllu")
    tokenizer = load_tokenizer(str(shared_model))
    with open_store(shared_store) as store, h5py.File(out / "key.hdf5", "r") as keys, \
            h5py.File(out / "query.hdf5", "r") as queries:
        table = store.tokens()
        ids = np.unique(table["story_id"])
        assert len(sentences) == len(keys) == len(queries) == len(ids) == 40
        assert list(keys.attrs["layers"]) == [0, 2, 5]
        assert list(keys.attrs["story_ids"]) == list(ids)
        for i, sid in enumerate(ids):
            rows = np.flatnonzero(table["story_id"] == sid)
            for f, site in ((keys, "key"), (queries, "query")):
                data = f[str(i)]
                heads = store.heads(site)
                assert data.shape == (3, len(rows), heads * store.d_head)
                for j, layer in enumerate((0, 2, 5)):
                    want = store.read_layer(site, layer, index=rows).reshape(len(rows), -1)
                    np.testing.assert_array_equal(data[j], want)
                np.testing.assert_array_equal(  # head 1 fills columns [d_head, 2 d_head)
                    data[1][:, store.d_head:2 * store.d_head], store.read(site, 2, 1, rows))
            lines = sentences[i]
            assert [int(x[0]) for x in lines] == list(range(1, len(rows) + 1))
            assert all(len(x) == 10 for x in lines)
            assert [x[4] for x in lines] == [store.tags["fine"][t]
                                             for t in table["fine_tag"][rows]]
            assert [x[3] for x in lines] == [store.tags["coarse"][t]
                                             for t in table["coarse_tag"][rows]]
            forms = token_strings(tokenizer, table["input_id"][rows])
            assert [x[1] for x in lines] == [display_text(t) for t in forms]
            assert lines[1][9].startswith(f"Story={sid}|Position=1|")


def test_hl_export_of_one_split(shared_store, tmp_path):
    out = tmp_path / "hl"
    assert extract_cli("--store", shared_store, "--format", "hl", "--out", out, "--sites",
                       "activity", "--layers", "1", "--split", "test") == 0
    sentences = read_conllu(out / "tokens.conllu")
    with open_store(shared_store) as store, h5py.File(out / "activity.hdf5", "r") as f:
        test = store.select(split="test")
        ids = np.unique(store.tokens(["story_id"], index=test)["story_id"])
        assert list(f.attrs["story_ids"]) == list(ids) and len(f) == len(sentences) == 10
        assert all(line[9].endswith("Split=test") for s in sentences for line in s)
        rows = test[store.tokens(["story_id"], index=test)["story_id"] == ids[-1]]
        np.testing.assert_array_equal(f[str(len(ids) - 1)][0], store.read_layer(
            "activity", 1, index=rows))


def test_tidy_export_reads_with_pandas(probing_results, tmp_path):
    import pandas as pd

    results = read_results(probing_results)
    assert probing_cli("--results", probing_results, "--format", "parquet",
                       "--out", tmp_path / "grid.parquet") == 0
    assert probing_cli("--results", probing_results, "--format", "csv",
                       "--out", tmp_path / "grid.csv") == 0
    frames = [pd.read_parquet(tmp_path / "grid.parquet"),
              pd.read_csv(tmp_path / "grid.csv", keep_default_na=False,
                          na_values={"low": [""], "high": [""], "head": [""],
                                     "kv_head": [""]})]
    for frame in frames:
        assert list(frame.columns) == ["site", "layer", "head", "kv_head", "tag", "metric",
                                       "value", "low", "high", "control"]
        for control, name in (("", "f1"), ("shuffled", "f1_shuffled")):
            own = frame[(frame.metric == "f1") & (frame.control.fillna("") == control)]
            for s, site in enumerate(results.sites):
                rows = own[own.site == site]
                cube = rows.pivot_table(index=["layer", "head"], columns="tag",
                                        values="value", aggfunc="first")
                cube = cube[results.tags].to_numpy().reshape(len(results.layers), -1,
                                                              len(results.tags))
                np.testing.assert_allclose(cube, results.arrays[name][s], rtol=1e-12)
        f1 = frame[(frame.metric == "f1") & (frame.control.fillna("") == "")]
        row = f1.iloc[7]
        s, k = results.sites.index(row.site), results.tags.index(row.tag)
        li = results.layers.index(row.layer)
        for column, name in (("low", "f1_lo"), ("high", "f1_hi")):
            assert row[column] == pytest.approx(
                results.arrays[name][s, li, int(row["head"]), k])
        assert not frame[frame.metric.isin(["f1_lo", "f1_hi", "coef", "intercept"])].size
        accuracy = frame[(frame.metric == "accuracy") & (frame.control.fillna("") == "")]
        assert (accuracy.tag.fillna("") == "").all()
        assert len(accuracy) == len(results.sites) * len(results.layers) * results.n_heads


def test_tidy_export_follows_the_declaration(probing_results, monkeypatch):
    """An array the results format declares later appears without a change to the export."""
    import probing.results as fmt
    from probing.tidy import tidy_frame

    results = read_results(probing_results)
    new = {"f1_planted": 0.25, "f1_planted_lo": 0.125, "f1_planted_hi": 0.5,
           "f1_planted_shuffled": 0.75}
    for name, value in new.items():
        monkeypatch.setitem(fmt.ARRAYS, name, fmt.ArraySpec(fmt.TAG, "new"))
        results.arrays[name] = np.full_like(results.arrays["f1"], value)
    monkeypatch.setattr(fmt, "TAG_METRICS", (*fmt.TAG_METRICS, *new))
    frame = tidy_frame(results)
    rows = frame[frame.metric == "f1_planted"]
    own, shuffled = rows[rows.control.isna()], rows[rows.control == "shuffled"]
    assert len(own) == len(shuffled) == results.arrays["f1"].size
    assert (own.value == 0.25).all() and (own.low == 0.125).all() and (own.high == 0.5).all()
    assert (shuffled.value == 0.75).all() and shuffled.low.isna().all()
    assert not frame.metric.str.startswith("f1_planted_").any()


def test_bad_input_exits_2_with_one_line_and_writes_nothing(shared_store, probing_results,
                                                            tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    cases = [
        (extract_cli, ("--store", shared_store, "--format", "parquet", "--out", out), "choose"),
        (extract_cli, ("--store", shared_store, "--format", "hf", "--out", out, "--sites",
                       "key,bogus"), "bogus"),
        (extract_cli, ("--store", shared_store, "--format", "hl", "--out", out, "--sites",
                       "value"), "value"),
        (extract_cli, ("--store", shared_store, "--format", "hf", "--out", out, "--layers",
                       "0,8"), "out of range"),
        (probing_cli, ("--results", probing_results, "--format", "xlsx", "--out", out),
         "choose"),
    ]
    for cli, args, words in cases:
        assert cli(*args) == 2
        err = capsys.readouterr().err
        assert words in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists()
    out.mkdir()
    assert extract_cli("--store", shared_store, "--format", "hl", "--out", out) == 2
    assert probing_cli("--results", probing_results, "--format", "csv", "--out", out) == 2
    assert capsys.readouterr().err.count("already exists") == 2
    assert list(out.iterdir()) == []

    import extract.exports.hf as hf
    import headprobe.space

    with monkeypatch.context() as patch:
        patch.setattr(headprobe.space, "free_bytes", lambda path: 1 << 20)
        assert extract_cli("--store", shared_store, "--format", "hl", "--out",
                           tmp_path / "full") == 2
    err = capsys.readouterr().err
    assert "not enough free space to write" in err and str(tmp_path / "full") in err

    def broken(*args, **kwargs):
        raise UsageError("the disk is gone")

    monkeypatch.setattr(hf, "_write_layout", broken)
    assert extract_cli("--store", shared_store, "--format", "hf", "--out", tmp_path / "x",
                       "--layers", "0") == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_missing_interop_package_is_one_line(probing_results, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pandas", None)
    assert probing_cli("--results", probing_results, "--format", "csv",
                       "--out", tmp_path / "grid.csv") == 2
    err = capsys.readouterr().err
    assert "pip install 'headprobe[interop]'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "grid.csv").exists()


def test_headprobe_imports_without_the_interop_extra():
    blocked = ("xarray", "h5netcdf", "netCDF4", "pandas")
    code = ("import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in blocked) +
            "import headprobe, extract.__main__, probing.__main__, probing.tidy\n"
            "import extract.exports.hf, extract.exports.hl\n"
            "from extract.__main__ import parsers\nparsers()\nprint('ok')")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.stdout.strip() == "ok", done.stderr

"""The HDF5 activation store: writer, reader, schema checks."""

import zlib

import h5py
import numpy as np
import pytest

from datasets_build.dataset import TOKEN_COLUMNS
from extract.store import (
    SCHEMA_VERSION,
    SITES,
    TOKEN_TABLE,
    create_store,
    deflate,
    describe_compression,
    open_store,
    reopen_store,
    shuffled_chunks,
    write_store,
)
from extract.store.writer import PREVIOUS_VERSION
from headprobe.errors import UsageError

TAGS = {"fine": ["NN", "VBD", "DT"], "coarse": ["NOUN", "VERB"]}


def _synthetic(n=700, layers=2, heads=3, d_head=4, seed=0):
    rng = np.random.default_rng(seed)
    table = {"input_id": rng.integers(0, 100, n), "story_id": np.repeat(np.arange(7), n // 7),
             "position": np.tile(np.arange(n // 7), 7), "fine_tag": rng.integers(0, 3, n),
             "coarse_tag": rng.integers(0, 2, n), "quoted": rng.random(n) < 0.3,
             "split": np.repeat([0, 1], [n - 200, 200])}
    arrays = {"key": rng.standard_normal((n, layers, heads, d_head)).astype(np.float32),
              "query": rng.standard_normal((n, layers, heads, d_head)).astype(np.float32),
              "activity": rng.random((n, layers, heads)).astype(np.float32)}
    return table, arrays


def test_write_store_round_trip_reads_slices_and_selections(tmp_path):
    table, arrays = _synthetic()
    path = write_store(tmp_path / "s.h5", table, arrays, attrs={"model": "m", "extra": {"a": [1]}},
                       tags=TAGS, dtype="float32", chunk_rows=128)
    with open_store(path) as store:
        assert (store.n_tokens, store.n_layers, store.n_heads, store.d_head) == (700, 2, 3, 4)
        assert store.sites == ["key", "query", "activity"]
        assert store.tags == TAGS and store.attrs["extra"] == {"a": [1]}
        np.testing.assert_array_equal(store.read("key", 1, 2), arrays["key"][:, 1, 2])
        np.testing.assert_array_equal(store.read_layer("activity", 0), arrays["activity"][:, 0])
        idx = store.select(split="test", fine=["NN", "DT"], quoted=False)
        want = np.flatnonzero((table["split"] == 1) & np.isin(table["fine_tag"], [0, 2])
                              & ~table["quoted"])
        np.testing.assert_array_equal(idx, want)
        np.testing.assert_array_equal(store.read("query", 0, 1, idx), arrays["query"][idx, 0, 1])
        assert store.read_layer("key", 1, idx).shape == (len(idx), 3, 4)
        np.testing.assert_array_equal(store.tokens(["story_id"], idx)["story_id"],
                                      table["story_id"][idx])
        assert store.tokens()["char_start"].min() == -1      # filled when not given
        assert store.select(coarse="VERB").size == int((table["coarse_tag"] == 1).sum())
        with pytest.raises(KeyError):
            store.read("value", 0, 0)
        with pytest.raises(IndexError):
            store.read("key", 2, 0)


def test_float16_store_returns_float32_and_chunks_one_head(tmp_path):
    table, arrays = _synthetic()
    path = write_store(tmp_path / "s.h5", table, arrays, tags=TAGS, chunk_rows=256)
    with open_store(path) as store:
        got = store.read("key", 0, 0)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, arrays["key"][:, 0, 0], atol=2e-3)
        assert store.file["keys"].chunks == (256, 1, 1, 4)
        assert store.file["activity"].chunks == (256, 1, 3)
        assert store.file["keys"].compression == "gzip"


def test_direct_chunk_writes_equal_plain_hdf5_writes(tmp_path):
    """Chunk-aligned blocks are compressed by the writer; other blocks go through HDF5."""
    table, arrays = _synthetic(n=700)
    stores = []
    for name, step in (("aligned", 256), ("ragged", 100)):
        writer = create_store(tmp_path / f"{name}.h5", 700, {"n_layers": 2, "n_heads": 3,
                              "d_head": 4}, list(arrays), "float16", tags=TAGS, chunk_rows=256)
        writer.write_tokens({k: table.get(k, np.zeros(700)) for k in TOKEN_COLUMNS})
        for start in range(0, 700, step):
            writer.write_block(start, {k: v[start:start + step] for k, v in arrays.items()})
        writer.finish()
        stores.append(open_store(tmp_path / f"{name}.h5"))
    for site in arrays:
        for layer in range(2):
            np.testing.assert_array_equal(stores[0].read_layer(site, layer),
                                          stores[1].read_layer(site, layer))
    for store in stores:
        store.close()


def test_plain_h5py_sees_self_describing_attributes(tmp_path):
    table, arrays = _synthetic()
    path = write_store(tmp_path / "s.h5", table, arrays, tags=TAGS)
    with h5py.File(path, "r") as f:
        assert "token" in f.attrs["description"]
        assert f.attrs["format_version"] == SCHEMA_VERSION
        assert list(f["keys"].attrs["dims"]) == ["token", "layer", "kv_head", "d_head"]
        assert list(f["queries"].attrs["dims"]) == ["token", "layer", "head", "d_head"]
        assert [f["keys"].dims[i][0].name for i in range(4)] == [
            "/token", "/layer", "/kv_head", "/d_head"]
        assert "hook_k" in f["keys"].attrs["description"]
        assert "no rotary embedding" in f["keys"].attrs["stage"]
        assert f["kv_head_of"][()].tolist() == [0, 1, 2]
        assert list(f["kv_head_of"].attrs["dims"]) == ["head"]
        assert f["token"][()].tolist() == list(range(700))
        assert list(f["site"].asstr()[()]) == list(arrays)
        assert f["tokens/fine_tag"].shape == (700,)


def _grouped(n=300, layers=2, heads=4, kv=2, d_head=4, seed=1):
    """Synthetic arrays of a grouped-query model: keys per key/value head."""
    rng = np.random.default_rng(seed)
    table = {"story_id": np.repeat(np.arange(3), n // 3), "position": np.tile(np.arange(n // 3), 3),
             "split": np.repeat([0, 1], [n - 100, 100])}
    arrays = {"key": rng.standard_normal((n, layers, kv, d_head)).astype(np.float32),
              "query": rng.standard_normal((n, layers, heads, d_head)).astype(np.float32),
              "key_rot": rng.standard_normal((n, layers, kv, d_head)).astype(np.float32),
              "activity": rng.random((n, layers, heads)).astype(np.float32)}
    return table, arrays


def test_grouped_query_store_keeps_keys_per_key_value_head(tmp_path):
    table, arrays = _grouped()
    path = write_store(tmp_path / "g.h5", table, arrays, tags=TAGS, dtype="float32",
                       attrs={"architecture": {"rotary": True, "qk_norm": True}})
    with open_store(path) as store:
        assert (store.n_heads, store.n_kv_heads) == (4, 2)
        assert store.kv_head.tolist() == [0, 0, 1, 1]
        assert [store.heads(s) for s in ("key", "key_rot", "query", "activity")] == [2, 2, 4, 4]
        np.testing.assert_array_equal(store.read("key", 1, 1), arrays["key"][:, 1, 1])
        assert store.read_layer("key", 0).shape == (300, 2, 4)
        assert store.read_layer("query", 0).shape == (300, 4, 4)
        with pytest.raises(IndexError, match="site 'key'"):
            store.read("key", 0, 2)
        np.testing.assert_array_equal(store.read("query", 0, 3), arrays["query"][:, 0, 3])
    with h5py.File(path, "r") as f:
        assert f.attrs["n_kv_heads"] == 2 and f["keys"].shape == (300, 2, 2, 4)
        assert f["keys"].attrs["stage"] == "before the rotary embedding; before the key norm"
        assert f["keys_rot"].attrs["stage"] == "after the key norm and the rotary embedding"
        assert "hook_rot_k" in f["keys_rot"].attrs["description"]
        assert list(f["keys_rot"].attrs["dims"]) == ["token", "layer", "kv_head", "d_head"]


def test_version_1_stores_are_still_read(tmp_path):
    """A store as version 1 wrote it: no n_kv_heads, no /kv_head, every site per head."""
    table, arrays = _synthetic(n=350)
    path = write_store(tmp_path / "v1.h5", table, arrays, tags=TAGS, dtype="float32",
                       version=PREVIOUS_VERSION)
    with h5py.File(path, "a") as f:
        f.attrs["schema_version"] = 1
        del f.attrs["n_kv_heads"], f["kv_head"]
        for name in ("keys", "queries"):
            f[name].attrs["dims"] = "token, layer, head, d_head"
    with open_store(path) as store:
        assert (store.n_heads, store.n_kv_heads, store.kv_head.tolist()) == (3, 3, [0, 1, 2])
        np.testing.assert_array_equal(store.read("key", 1, 2), arrays["key"][:, 1, 2])
    with pytest.raises(UsageError, match="schema version"):
        reopen_store(path)


def test_open_store_refuses_non_stores_wrong_versions_and_partial_files(tmp_path):
    with pytest.raises(UsageError, match="not found; make it with: python -m extract"):
        open_store(tmp_path / "missing.h5")
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(UsageError, match="not an HDF5"):
        open_store(tmp_path / "text.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.attrs["x"] = 1
    with pytest.raises(UsageError, match="not a headprobe"):
        open_store(tmp_path / "other.h5")
    table, arrays = _synthetic()
    path = write_store(tmp_path / "s.h5", table, arrays, tags=TAGS)
    with h5py.File(path, "a") as f:
        f.attrs["format_version"] = SCHEMA_VERSION + 1
    with pytest.raises(UsageError, match="version"):
        open_store(path)
    writer = create_store(tmp_path / "p.h5", 10, {"n_layers": 1, "n_heads": 1, "d_head": 2})
    writer.close()
    with pytest.raises(UsageError, match="unfinished"):
        open_store(tmp_path / "p.h5")


@pytest.mark.parametrize("compression", ["fast", "none", "1", 6])
def test_every_compression_round_trips_through_plain_h5py(tmp_path, compression):
    """Chunks the writer deflates itself decode with HDF5's own gzip + shuffle filters."""
    table, arrays = _synthetic(n=700)
    writer = create_store(tmp_path / "s.h5", 700, {"n_layers": 2, "n_heads": 3, "d_head": 4},
                          list(arrays), "float16", tags=TAGS, chunk_rows=256,
                          compression=compression)
    writer.write_tokens({k: table.get(k, np.zeros(700)) for k in TOKEN_COLUMNS})
    writer.write_block(0, arrays)
    writer.finish()
    with h5py.File(tmp_path / "s.h5", "r") as f:
        for site, name in (("key", "keys"), ("query", "queries"), ("activity", "activity")):
            np.testing.assert_array_equal(f[name][()], arrays[site].astype(np.float16))
            assert f[name].compression == (None if compression == "none" else "gzip")
            assert f[name].shuffle == (compression != "none")
        sizes = [f[name].id.get_storage_size() for name in ("keys", "activity")]
    raw = [arrays["key"].size * 2, arrays["activity"].size * 2]
    if compression == "none":
        assert sizes == [768 * 2 * 3 * 4 * 2, 768 * 2 * 3 * 2]   # 3 whole chunks of rows
    else:   # byte shuffle leaves the float16 high bytes (sign, exponent) easy to compress
        assert sizes[0] < raw[0] and sizes[1] < raw[1]


def test_unknown_compression_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="compression"):
        create_store(tmp_path / "s.h5", 10, {"n_layers": 1, "n_heads": 1, "d_head": 2},
                     compression="lzma")


@pytest.mark.parametrize(("size", "raw_prefix"), [(200_000, 100_000), (5000, 0), (4, 2), (0, 0)])
def test_fast_deflate_streams_are_plain_zlib(size, raw_prefix):
    """Stored blocks (several past 64 KiB) followed by ISA-L's deflate decode with zlib."""
    data = np.random.default_rng(size).integers(0, 8, size).astype(np.uint8)
    data[:raw_prefix] = np.random.default_rng(1).integers(0, 256, raw_prefix)
    packed = deflate(data, -1, raw_prefix)
    assert zlib.decompress(packed) == data.tobytes()
    if size > 1000:
        assert len(packed) < size


@pytest.mark.parametrize("shape", [(700, 3, 5, 4), (700, 2, 16), (300, 2, 3, 3), (9, 2, 2, 64)])
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_shuffled_chunks_are_the_byte_planes_of_each_chunk(shape, dtype):
    """Each chunk (one layer, one head, or one layer's heads) becomes byte 0 of every value,
    then byte 1, ..., for whole blocks and for one layer's strided slice of a block."""
    block = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    for part in (block, block[:, 1:2]):
        got = shuffled_chunks(part)
        for layer in range(part.shape[1]):
            chunks = [part[:, layer]] if part.ndim == 3 else list(part[:, layer].swapaxes(0, 1))
            for index, chunk in enumerate(chunks):
                planes = np.ascontiguousarray(chunk).view(np.uint8).reshape(-1, part.itemsize)
                row = got[layer] if part.ndim == 3 else got[layer, index]
                np.testing.assert_array_equal(row, planes.T.ravel())


@pytest.mark.parametrize(("compression", "level"), [("fast", -1), ("none", 0), ("1", 1), (6, 6)])
def test_compression_level_is_stored_as_a_number(tmp_path, compression, level):
    """The writer keeps the level in 'compression_level'; a store written before that
    attribute existed is read back from the words in 'compression'."""
    arch = {"n_layers": 1, "n_heads": 2, "d_head": 2}
    writer = create_store(tmp_path / "s.h5", 10, arch, compression=compression)
    writer.close()
    with h5py.File(tmp_path / "s.h5", "a") as f:
        assert f.attrs["compression_level"] == level
        assert f.attrs["compression"] == describe_compression(level)
        del f.attrs["compression_level"]
    with reopen_store(tmp_path / "s.h5") as writer:
        assert writer.level == level


def test_blocks_and_token_columns_are_checked_against_the_schema(tmp_path):
    writer = create_store(tmp_path / "s.h5", 10, {"n_layers": 2, "n_heads": 3, "d_head": 4},
                          ["key", "activity"])
    good = {"key": np.zeros((5, 2, 3, 4)), "activity": np.zeros((5, 2, 3))}
    with pytest.raises(ValueError, match="site 'key' takes blocks of shape"):
        writer.write_block(0, {**good, "key": np.zeros((5, 2, 3, 5))})
    with pytest.raises(ValueError, match="activity"):
        writer.write_block(0, {**good, "activity": np.zeros((5, 2, 3, 1))})
    with pytest.raises(ValueError, match="outside"):
        writer.write_block(8, good)
    with pytest.raises(ValueError, match="lacks column"):
        writer.write_tokens({"input_id": np.zeros(10)})
    writer.write_block(5, good)
    writer.close()
    with h5py.File(tmp_path / "s.h5", "r") as f:
        for name in ("key", "activity"):
            site = SITES[name]
            assert tuple(f[site.dataset].attrs["dims"]) == site.dims
            assert f[site.dataset].attrs["description"] == site.description
        for column in TOKEN_TABLE.values():
            assert f["tokens"][column.name].dtype == column.dtype

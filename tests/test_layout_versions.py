"""Files of the versions before the shared layout vocabulary still open, and the files
written now follow it (headprobe.layout)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from extract.merge import merge_stores
from extract.store import SCHEMA_VERSION, open_store, reopen_store, write_store
from extract.store.writer import PREVIOUS_VERSION
from headprobe.errors import UsageError
from headprobe.layout import Array, Dimensions, Layout, netcdf_name, stored_dims
from probing.results import FORMAT, read_results, write_results

TAGS = {"fine": ["NN", "VBD"], "coarse": ["NOUN", "VERB"]}


def _grouped(n: int = 60, seed: int = 0) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    table = {"story_id": np.repeat(np.arange(3), n // 3), "fine_tag": rng.integers(0, 2, n)}
    arrays = {"key": rng.standard_normal((n, 2, 2, 4)).astype(np.float32),
              "query": rng.standard_normal((n, 2, 4, 4)).astype(np.float32),
              "activity": rng.random((n, 2, 4)).astype(np.float32)}
    return table, arrays


def test_a_version_2_store_opens(tmp_path):
    """The previous layout: 'schema'/'schema_version', dims as one string, /kv_head the
    key/value head of each query head, no coordinates."""
    table, arrays = _grouped()
    path = write_store(tmp_path / "v2.h5", table, arrays, tags=TAGS, dtype="float32",
                       version=PREVIOUS_VERSION)
    with h5py.File(path, "r") as f:
        assert f.attrs["schema_version"] == 2 and "format_version" not in f.attrs
        assert f["keys"].attrs["dims"] == "token, layer, kv_head, d_head"
        assert f["kv_head"][()].tolist() == [0, 0, 1, 1]
        assert "token" not in f and not any(ds.is_scale for ds in f.values()
                                            if isinstance(ds, h5py.Dataset))
        assert stored_dims(f["keys"]) == ("token", "layer", "kv_head", "d_head")
    with open_store(path) as store:
        assert store.version == 2 and store.kv_head.tolist() == [0, 0, 1, 1]
        np.testing.assert_array_equal(store.read("key", 1, 1), arrays["key"][:, 1, 1])
        np.testing.assert_array_equal(store.tokens(["fine_tag"])["fine_tag"],
                                      table["fine_tag"])
    with pytest.raises(UsageError, match="schema version"):
        reopen_store(path)


def test_the_current_store_names_its_format_and_axes(tmp_path):
    table, arrays = _grouped()
    path = write_store(tmp_path / "v3.h5", table, arrays, tags=TAGS, dtype="float32")
    with h5py.File(path, "r") as f:
        assert (f.attrs["format"], f.attrs["format_version"]) == (
            "headprobe-activations", SCHEMA_VERSION)
        assert "schema_version" not in f.attrs
        assert f["kv_head_of"][()].tolist() == [0, 0, 1, 1]
        assert f["kv_head"][()].tolist() == [0, 1] and f["head"][()].tolist() == [0, 1, 2, 3]
        assert f["tokens/story_id"].dims[0][0].name == "/token"
    with open_store(path) as store:
        assert store.version == SCHEMA_VERSION and store.kv_head.tolist() == [0, 0, 1, 1]


def test_a_merged_store_has_coordinates_too(tmp_path):
    paths = []
    for i in range(2):
        table, arrays = _grouped(seed=i)
        table["story_id"] = table["story_id"] + 3 * i
        paths.append(write_store(tmp_path / f"s{i}.h5", table, arrays, tags=TAGS,
                                 dtype="float32", attrs={"shard": f"{i}/2"}))
    out = merge_stores(tmp_path / "merged.h5", paths)
    with h5py.File(out, "r") as f:
        assert f["token"][()].tolist() == list(range(120))
        assert [f["queries"].dims[i][0].name for i in range(4)] == [
            "/token", "/layer", "/head", "/d_head"]
        assert list(f["queries"].attrs["dims"]) == ["token", "layer", "head", "d_head"]
        assert f.attrs["format_version"] == SCHEMA_VERSION


def _probe_arrays(rng: np.random.Generator) -> dict[str, np.ndarray]:
    f1 = rng.random((2, 2, 3, 2))
    return {"f1": f1, "macro_f1": f1.mean(-1), "coef": rng.random((2, 2, 3, 2, 4))}


def test_version_2_probe_results_open(tmp_path):
    """Probe results as version 2 wrote them: the axes named by the arrays sites, layers
    and tags, dims as one string, no coordinates."""
    arrays = _probe_arrays(np.random.default_rng(0))
    (tmp_path / "old").mkdir()
    with h5py.File(tmp_path / "old" / "probes.h5", "w") as f:
        f.attrs["format"], f.attrs["format_version"] = FORMAT, 2
        f.attrs["params"] = json.dumps({"tagset": "fine"})
        for name, values in (("sites", ["key", "query"]), ("tags", ["NN", "VBD"]),
                             ("head_axes", ["kv_head", "head"])):
            f.create_dataset(name, data=np.array(values, dtype=object),
                             dtype=h5py.string_dtype())
        f["layers"] = np.array([1, 3], dtype=np.int32)
        f["site_heads"] = np.array([2, 3], dtype=np.int32)
        for name, value in arrays.items():
            f.create_dataset(name, data=value).attrs["dims"] = "site, layer, head, tag"
    res = read_results(tmp_path / "old")
    assert (res.sites, res.layers, res.tags) == (["key", "query"], [1, 3], ["NN", "VBD"])
    assert res.site_heads == [2, 3] and res.head_axes == ["kv_head", "head"]
    assert sorted(res.arrays) == sorted(arrays) and res.attrs == {"tagset": "fine"}
    np.testing.assert_array_equal(res.grid("f1", "key", "VBD"), arrays["f1"][0, :, :2, 1])


def test_probe_results_carry_coordinates(tmp_path):
    arrays = _probe_arrays(np.random.default_rng(1))
    out = write_results(tmp_path / "p", ["key", "query"], [1, 3], ["NN", "VBD"], arrays, {},
                        {}, site_heads=[2, 3], head_axes=["kv_head", "head"])
    with h5py.File(out / "probes.h5", "r") as f:
        assert f.attrs["format_version"] == 3 and "sites" not in f
        assert f["layer"][()].tolist() == [1, 3] and list(f["tag"].asstr()[()]) == ["NN", "VBD"]
        assert [f["coef"].dims[i][0].name for i in range(5)] == [
            "/site", "/layer", "/head", "/tag", "/d_head"]
    res = read_results(out)
    assert (res.sites, res.layers, res.tags) == (["key", "query"], [1, 3], ["NN", "VBD"])
    assert sorted(res.arrays) == sorted(arrays)


def test_layout_helpers(tmp_path):
    assert netcdf_name("destination position") == "destination_position"
    assert netcdf_name("mode (Q, K, V)") == "mode_Q_K_V" and netcdf_name("2nd") == "axis_2nd"
    with pytest.raises(ValueError, match="unknown kind"):
        Array("x", ("a",), "text", "x")
    layout = Layout("f", (Array("x", ("a",), "int", "x"), Array("y", (), "", "y", "sometimes")))
    layout.check({"x": np.arange(3)})
    x = layout["x"]
    assert (x.axes, x.definition, layout.study) == (("a",), "x", "f")   # the older names
    with pytest.raises(ValueError, match="holds float64 values but is declared int"):
        layout.check({"x": np.zeros(3)})
    with h5py.File(tmp_path / "d.h5", "w") as f:
        ds = f.create_dataset("x", data=np.zeros((2, 3)))
        Dimensions(f).attach(ds, ("a", "b"))
        assert f["b"][()].tolist() == [0, 1, 2] and f["a"].is_scale
        with pytest.raises(ValueError, match="has 4 along b, the coordinate 3"):
            Dimensions(f).attach(f.create_dataset("y", data=np.zeros(4)), ("b",))

"""Every file headprobe writes opens in xarray (h5netcdf engine) and netCDF4 with named
dimensions and coordinates that agree with headprobe's own readers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from extract.store import SITES, open_store, write_store
from headprobe.layout import netcdf_name
from probing.results import ARRAYS, read_results
from probing.study_io import read_study

xr = pytest.importorskip("xarray")
pytest.importorskip("h5netcdf")
netCDF4 = pytest.importorskip("netCDF4")


def _xr(path: Path, **kwargs):
    return xr.open_dataset(path, engine="h5netcdf", **kwargs)


def test_store_opens_in_xarray_with_named_axes(shared_store):
    with open_store(shared_store) as store, _xr(shared_store) as ds, \
            _xr(shared_store, group="tokens") as tokens:
        assert ds.sizes["token"] == store.n_tokens
        for name, length in (("layer", store.n_layers), ("head", store.n_heads),
                             ("kv_head", store.n_kv_heads), ("d_head", store.d_head)):
            assert ds[name].values.tolist() == list(range(length)), name
        assert ds["site"].values.tolist() == store.sites
        assert ds["kv_head_of"].values.tolist() == store.kv_head.tolist()
        for site in store.sites:
            var = ds[SITES[site].dataset]
            assert var.dims == SITES[site].dims
            np.testing.assert_allclose(var.isel(layer=2).values, store.read_layer(site, 2),
                                       rtol=1e-6)
        table = store.tokens()
        assert tokens["story_id"].dims == ("token",)
        for column in ("story_id", "position", "fine_tag", "quoted", "split"):
            np.testing.assert_array_equal(tokens[column].values, table[column])


def test_store_opens_in_netcdf4_with_named_axes(shared_store):
    with open_store(shared_store) as store, netCDF4.Dataset(shared_store) as nc:
        assert {name: len(d) for name, d in nc.dimensions.items()} == {
            "token": store.n_tokens, "layer": store.n_layers, "head": store.n_heads,
            "kv_head": store.n_kv_heads, "d_head": store.d_head, "site": len(store.sites),
            "block": -(-store.n_tokens // int(store.attrs["chunk_rows"]))}
        assert list(nc["site"][:]) == store.sites
        assert nc["keys"].dimensions == ("token", "layer", "kv_head", "d_head")
        np.testing.assert_allclose(nc["keys"][:, 1, 0, :], store.read("key", 1, 0), rtol=1e-6)
        assert nc["tokens"]["position"].dimensions == ("token",)
        np.testing.assert_array_equal(nc["tokens"]["position"][:],
                                      store.tokens(["position"])["position"])
        assert nc.getncattr("format") == "headprobe-activations"
        assert nc["integrity"]["block_crc32"].dimensions == ("block", "site")


def test_probe_results_open_in_xarray_and_netcdf4(probing_results):
    res = read_results(probing_results)
    file = probing_results / "probes.h5"
    with _xr(file) as ds:
        assert ds["site"].values.tolist() == res.sites
        assert ds["layer"].values.tolist() == res.layers
        assert ds["tag"].values.tolist() == res.tags
        assert ds["head"].values.tolist() == list(range(res.n_heads))
        assert ds["f1"].dims == ARRAYS["f1"].dims
        f1 = ds["f1"].sel(site="key", layer=res.layers[-1], tag=res.tags[0]).values
        np.testing.assert_allclose(f1, res.grid("f1", "key", res.tags[0])[-1], rtol=1e-12)
        assert ds["site_heads"].values.tolist() == res.site_heads
    with netCDF4.Dataset(file) as nc:
        assert {name: len(d) for name, d in nc.dimensions.items()
                if name in ("site", "layer", "head", "tag")} == {
            "site": len(res.sites), "layer": len(res.layers), "head": res.n_heads,
            "tag": len(res.tags)}
        assert list(nc["tag"][:]) == res.tags and list(nc["layer"][:]) == res.layers
        assert nc["macro_f1"].dimensions == ("site", "layer", "head")
        np.testing.assert_allclose(nc["macro_f1"][:], res.arrays["macro_f1"], rtol=1e-12)


def test_study_results_open_in_xarray_and_netcdf4(quote_study):
    res = read_study(quote_study)
    file = quote_study / "results.h5"
    with _xr(file) as ds, netCDF4.Dataset(file) as nc:
        for name, axes in res.axes.items():
            names = tuple(netcdf_name(a) for a in axes)
            assert ds[name].dims == names, name
            assert nc[name].dimensions == names, name
            if res.arrays[name].dtype.kind == "f":
                np.testing.assert_allclose(ds[name].values, res.arrays[name], rtol=1e-12)
                np.testing.assert_allclose(nc[name][:].filled(np.nan), res.arrays[name],
                                           rtol=1e-12)
        ratio = res.arrays["ratio"]
        assert ds["layer"].values.tolist() == list(range(ratio.shape[0]))
        assert ds["head"].values.tolist() == list(range(ratio.shape[1]))
        assert nc.getncattr("study") == "quote"


def test_a_float16_store_reads_through_xarray(tmp_path):
    """float16 (the default storage dtype) has no netCDF type; h5netcdf reads it."""
    rng = np.random.default_rng(0)
    keys = rng.standard_normal((40, 2, 3, 4)).astype(np.float16)
    path = write_store(tmp_path / "s.h5", {"story_id": np.repeat([0, 1], 20)}, {"key": keys})
    with _xr(path) as ds, open_store(path) as store:
        assert ds["keys"].dtype == np.float16
        np.testing.assert_array_equal(ds["keys"].values, keys)
        np.testing.assert_array_equal(ds["keys"].isel(layer=1).values.astype(np.float32),
                                      store.read_layer("key", 1))
        assert ds["token"].values.tolist() == list(range(40))

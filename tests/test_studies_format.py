"""The study results format: each study's layout declared once, checked when writing, stored
with every array, and documented."""

from __future__ import annotations

import ast
import importlib
import json
import re
from pathlib import Path

import h5py
import numpy as np
import pytest

from headprobe.errors import UsageError
from probing.studies import STUDY_MODULES, quote
from probing.study_io import (
    PATTERN,
    STUDY_FORMAT_VERSION,
    Array,
    Layout,
    layout_of,
    read_study,
    write_study,
)
from tests.conftest import REPO
from tests.fixtures_figures import layout_arrays

LAYOUTS = {study: importlib.import_module(module).LAYOUT
           for study, module in STUDY_MODULES.items()}


def quote_arrays(**changes) -> dict:
    """Arrays fitting the quote layout (every one, optional ones too), with ``changes``."""
    arrays = layout_arrays(quote.LAYOUT, np.random.default_rng(0), 10)
    arrays.update(changes)
    return {name: value for name, value in arrays.items() if value is not None}


def test_every_study_module_declares_its_layout():
    for study, module in STUDY_MODULES.items():
        mod = importlib.import_module(module)
        assert mod.LAYOUT.name == mod.STUDY == study
        assert layout_of(study) is mod.LAYOUT
        assert all(a.kind in ("float", "int", "bool", "str") and a.description and a.dims
                   for a in mod.LAYOUT)
    with pytest.raises(UsageError, match="unknown study 'nope'"):
        layout_of("nope")


@pytest.mark.parametrize("study", sorted(LAYOUTS))
def test_every_array_is_stored_with_its_axes_and_definition(study, tmp_path: Path):
    layout = LAYOUTS[study]
    arrays = layout_arrays(layout, np.random.default_rng(1), 7)
    out = write_study(tmp_path / "r", layout, arrays, {"n": 1}, "report")
    with h5py.File(out / "results.h5") as f:
        assert sorted(n for n in f if not f[n].is_scale) == sorted(layout.names)
        for entry in layout:
            attrs = f[entry.name].attrs
            assert list(attrs["dims"]) == list(entry.dims) or attrs["dims"] == ""
            assert attrs["description"] == entry.description
        assert json.loads(f.attrs["meta"]) == {"n": 1}
        assert f.attrs["format"] == "headprobe-study"
        assert f.attrs["format_version"] == STUDY_FORMAT_VERSION
    res = read_study(out)
    assert res.layout is layout and res.file == out / "results.h5"
    assert res.axes == {entry.name: entry.dims for entry in layout}
    for entry in layout:
        np.testing.assert_array_equal(res[entry], arrays[entry.name])


def test_write_refuses_an_undeclared_array(tmp_path: Path):
    with pytest.raises(ValueError, match="undeclared array.*ratios.*layout"):
        write_study(tmp_path / "q", quote.LAYOUT, quote_arrays(ratios=np.zeros((3, 4))), {}, "")
    assert not (tmp_path / "q").exists()


def test_write_refuses_a_missing_required_array(tmp_path: Path):
    with pytest.raises(ValueError, match="lacks required array.*t_stat"):
        write_study(tmp_path / "q", quote.LAYOUT, quote_arrays(t_stat=None), {}, "")
    assert not (tmp_path / "q").exists()


def test_write_refuses_wrong_axes_or_kind(tmp_path: Path):
    with pytest.raises(ValueError, match=r"'ratio' has 3 dimension\(s\) but is declared with 2 "
                                         r"\(layer, head\)"):
        write_study(tmp_path / "q", quote.LAYOUT, quote_arrays(ratio=np.zeros((2, 3, 4))), {}, "")
    with pytest.raises(ValueError, match="'example_quoted' holds float64 values but is "
                                         "declared bool"):
        write_study(tmp_path / "q", quote.LAYOUT, quote_arrays(example_quoted=np.zeros(10)),
                    {}, "")
    assert not (tmp_path / "q").exists()


def test_optional_arrays_may_be_left_out(tmp_path: Path):
    without_model = quote_arrays(**{a.name: None for a in quote.LAYOUT if not a.required})
    res = read_study(write_study(tmp_path / "q", quote.LAYOUT, without_model, {}, "report"))
    assert quote.ATTN_TO_OPEN not in res and res.get(quote.ATTN_TO_OPEN) is None
    with pytest.raises(UsageError, match=f"{tmp_path / 'q'} lacks array 'attn_to_open'"):
        res[quote.ATTN_TO_OPEN]


def test_a_layout_rejects_unknown_kinds_and_repeated_names():
    with pytest.raises(ValueError, match="unknown kind 'text'"):
        Array("x", ("position",), "text", "x")
    entry = Array("x", ("position",), "str", "x")
    with pytest.raises(ValueError, match="declares an array name twice"):
        Layout("s", (entry, entry))


def test_results_written_before_axes_were_stored_are_read(tmp_path: Path):
    (tmp_path / "old").mkdir()
    with h5py.File(tmp_path / "old" / "results.h5", "w") as f:
        f.attrs["study"] = quote.STUDY
        f.attrs["format_version"] = 1
        f.attrs["meta"] = json.dumps({"best_head": [1, 2], "axes": {"ratio": ["layer", "head"]}})
        f.create_dataset("ratio", data=np.ones((2, 3)))
        f.create_dataset("example_tokens", data=np.array(["a", "b"], dtype=object),
                         dtype=h5py.string_dtype())
    res = read_study(tmp_path / "old")
    assert res.axes == {} and res.report == "" and res.meta["best_head"] == [1, 2]
    assert res[quote.RATIO].shape == (2, 3) and list(res[quote.EXAMPLE_TOKENS]) == ["a", "b"]


def test_format_version_1_results_are_read(tmp_path: Path):
    """Results as version 1 wrote them: 'axes' (a list) and 'definition' on each array, no
    'format' attribute and no coordinates."""
    (tmp_path / "v1").mkdir()
    ratio = np.arange(6.0).reshape(2, 3)
    with h5py.File(tmp_path / "v1" / "results.h5", "w") as f:
        f.attrs["study"] = quote.STUDY
        f.attrs["format_version"] = 1
        f.attrs["meta"] = json.dumps({"n": 2})
        ds = f.create_dataset("ratio", data=ratio)
        ds.attrs.create("axes", ["layer", "head"], dtype=h5py.string_dtype())
        ds.attrs["definition"] = quote.RATIO.description
    res = read_study(tmp_path / "v1")
    assert res.axes == {"ratio": ("layer", "head")} and res.meta == {"n": 2}
    np.testing.assert_array_equal(res[quote.RATIO], ratio)
    with h5py.File(tmp_path / "v1" / "results.h5", "a") as f:
        f.attrs["format_version"] = STUDY_FORMAT_VERSION + 1
    with pytest.raises(UsageError, match="unknown study format version"):
        read_study(tmp_path / "v1")


def test_axes_become_netcdf_dimensions_with_distinct_lengths(tmp_path: Path):
    """Axis names in words become netCDF names; one name of two lengths, two dimensions."""
    layout = Layout("s", (Array("pattern", PATTERN, "float", "p"),
                          Array("ratio", ("layer", "head"), "float", "r"),
                          Array("heads", ("head", "layer/head"), "int", "h")))
    arrays = {"pattern": np.zeros((4, 4)), "ratio": np.zeros((2, 3)),
              "heads": np.zeros((5, 2), dtype=int)}
    out = write_study(tmp_path / "s", layout, arrays, {}, "")
    with h5py.File(out / "results.h5") as f:
        def scales(name):
            return [f[name].dims[i][0].name.lstrip("/") for i in range(f[name].ndim)]
        assert scales("pattern") == ["destination_position", "source_position"]
        assert scales("ratio") == ["layer", "head"]
        assert scales("heads") == ["head_5", "layer_head"]
        assert f["head_5"][()].tolist() == [0, 1, 2, 3, 4]
        assert list(f["heads"].attrs["dims"]) == ["head", "layer/head"]


def doc_tables(path: Path) -> dict[str, list[list[str]]]:
    """Section name -> rows (cells) of the tables of each ``## `name` ...`` section."""
    parts = re.split(r"^## `([^`]+)`", path.read_text(), flags=re.MULTILINE)
    return {name: [[c.strip() for c in line.strip().strip("|").split("|")]
                   for line in text.splitlines() if line.startswith("| `")]
            for name, text in zip(parts[1::2], parts[2::2], strict=True)}


def test_case_studies_doc_matches_the_declared_layouts():
    sections = doc_tables(REPO / "docs" / "case-studies.md")
    for study, layout in LAYOUTS.items():
        documented = {row[0].strip("`"): row[1:] for row in sections[study]}
        assert sorted(documented) == sorted(layout.names), study
        for entry in layout:
            assert documented[entry.name] == [
                ", ".join(entry.dims), entry.kind, entry.when or "always", entry.description
            ], (study, entry.name)


def flag_messages(path: Path) -> list[str]:
    """``file:line`` of each UsageError naming a ``--flag`` outside a command-line handler
    (a function taking an ``argparse.Namespace``)."""
    found = []
    for fn in ast.walk(ast.parse(path.read_text())):
        if not isinstance(fn, ast.FunctionDef) or any(
                a.annotation is not None and "Namespace" in ast.unparse(a.annotation)
                for a in fn.args.args):
            continue
        for node in ast.walk(fn):
            if (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)
                    and ast.unparse(node.exc.func) == "UsageError"
                    and re.search(r"--[a-z]", ast.unparse(node.exc))):
                found.append(f"{path.name}:{node.lineno}")
    return found


def test_library_errors_name_parameters_not_flags():
    files = [*(REPO / "probing" / "studies").glob("*.py"), REPO / "probing" / "study_io.py",
             REPO / "probing" / "summary.py", *(REPO / "figures").glob("*.py")]
    assert [hit for f in files if f.name != "__main__.py" for hit in flag_messages(f)] == []

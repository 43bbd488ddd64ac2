"""The xarray, netCDF4 and h5py sections of docs/reading-files.md run as written: their
python blocks, in order, in one namespace, against the run directory of the Python API
guide (the session's store, probe grid and quote study)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from tests.test_python_api import guide_dir, python_blocks  # noqa: F401 (a fixture)

DOC = Path(__file__).resolve().parents[1] / "docs" / "reading-files.md"
SECTIONS = ("xarray", "netCDF4", "h5py")


def section_blocks(text: str, section: str) -> list[str]:
    """The python blocks of the ``## section`` of a Markdown text."""
    parts = re.split(r"^## (.+)$", text, flags=re.MULTILINE)
    bodies = dict(zip(parts[1::2], parts[2::2], strict=True))
    return python_blocks(bodies[section])


def test_sections_hold_their_blocks():
    text = "intro\n## a\n```python\nx = 1\n```\n## b\n```python\ny = 2\n```\n"
    assert section_blocks(text, "a") == ["x = 1\n"] and section_blocks(text, "b") == ["y = 2\n"]


def test_reading_files_guide_runs(guide_dir, capsys):  # noqa: F811 (the imported fixture)
    pytest.importorskip("xarray")
    pytest.importorskip("h5netcdf")
    pytest.importorskip("netCDF4")
    text = DOC.read_text()
    for heading in ("## xarray", "## netCDF4", "## h5py", "## h5dump"):
        assert re.search(f"^{heading}$", text, flags=re.MULTILINE), heading
    namespace: dict = {"__name__": "reading_files_guide"}
    for section in SECTIONS:
        blocks = section_blocks(text, section)
        assert blocks, section
        for number, block in enumerate(blocks, 1):
            exec(compile(block, f"{DOC.name}, {section} block {number}", "exec"), namespace)
    out = capsys.readouterr().out
    from headprobe import open_store, read_probes, read_study

    with open_store(guide_dir / "activations.h5") as store:
        nn = store.select(fine="NN")
        np.testing.assert_allclose(namespace["nn_keys"],
                                   store.read("key", 2, store.kv_head[4], nn), rtol=1e-6)
        np.testing.assert_array_equal(namespace["positions"],
                                      store.tokens(["position"])["position"])
        np.testing.assert_allclose(namespace["queries"], store.read("query", 2, 0), rtol=1e-6)
    probes = read_probes(guide_dir / "probes")
    np.testing.assert_allclose(namespace["f1"], probes.grid("f1", "key", "NN"), rtol=1e-12)
    np.testing.assert_allclose(namespace["macro"], probes.arrays["macro_f1"], rtol=1e-12)
    quote = read_study(guide_dir / "studies" / "quote")
    np.testing.assert_allclose(namespace["ratio"], quote["ratio"], rtol=1e-12)
    best = np.unravel_index(np.argmax(quote["ratio"]), quote["ratio"].shape)
    assert f"quotation head: L{best[0]}H{best[1]}" in out
    assert "('token', 'layer', 'kv_head', 'd_head')" in out and "key F1 for NN by layer" in out

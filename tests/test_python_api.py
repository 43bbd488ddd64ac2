"""docs/python-api.md runs as written: its python blocks, in order, in one namespace,
against a run directory laid out from the session's dataset, store and probe grid."""

import re
from pathlib import Path

import numpy as np
import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "python-api.md"


def python_blocks(text: str) -> list[str]:
    """The code of every ```python block of a Markdown text, in order."""
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


@pytest.fixture
def guide_dir(tmp_path, monkeypatch, shared_dir, shared_dataset, shared_store,
              probing_results, quote_study) -> Path:
    """A working directory where the guide's paths exist: ``runs/ts/...`` and
    ``../shared``; returns the run directory."""
    work = tmp_path / "work"
    run = work / "runs" / "ts"
    run.mkdir(parents=True)
    (tmp_path / "shared").symlink_to(shared_dir)
    (run / "dataset").symlink_to(shared_dataset)
    (run / "activations.h5").symlink_to(shared_store)
    (run / "probes").symlink_to(probing_results)
    (run / "studies").mkdir()
    (run / "studies" / "quote").symlink_to(quote_study)
    monkeypatch.chdir(work)
    return run


def test_python_blocks_are_found():
    text = "a\n```python\nx = 1\n```\n```bash\nls\n```\n```python\ny = x\n```\n"
    assert python_blocks(text) == ["x = 1\n", "y = x\n"]


def test_python_api_guide_runs(guide_dir, capsys):
    blocks = python_blocks(DOC.read_text())
    assert len(blocks) >= 8
    namespace: dict = {"__name__": "python_api_guide"}
    for number, block in enumerate(blocks, 1):
        exec(compile(block, f"{DOC.name}, python block {number}", "exec"), namespace)
    out = capsys.readouterr().out

    n_quoted = int(namespace["table"]["quoted"].sum())
    assert namespace["keys"].shape == (n_quoted, namespace["store"].d_head) and n_quoted > 100
    probe = namespace["probe"]
    assert (probe.layer, probe.head) == (2, 0)
    assert probe.metrics["macro_f1"] > probe.metrics["macro_f1_shuffled"] + 0.05
    assert "best key head for the opening quote: L" in out
    assert "min_support must be >= 0" in out and "--min-support" not in out
    assert "quotation head L" in out and "40 stories" in out
    for name in ("key-probe-f1.png", "quote-heads.png"):
        assert (guide_dir / "figures" / "notebook" / name).stat().st_size > 1000
    assert sorted(p.name for p in guide_dir.parents[1].iterdir()) == ["runs"]   # nothing else
    np.testing.assert_allclose(namespace["pattern"].sum(-1).numpy(), 1.0, atol=1e-4)

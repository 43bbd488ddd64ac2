"""The export sections of docs/reading-files.md run as written: their bash lines (the
export commands) and their python blocks, against a run directory laid out from the
session's dataset, store and probe grid."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "reading-files.md"
SECTIONS = ("pandas (tidy probe table)", "Hugging Face datasets", "Hewitt & Liang layout")


def section(text: str, heading: str) -> str:
    """The text of the ``## heading`` section, up to the next ``## `` heading."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text,
                      flags=re.MULTILINE | re.DOTALL)
    assert match, f"no section {heading!r} in {DOC.name}"
    return match.group(1)


def blocks(text: str, language: str) -> list[str]:
    """The code of every ```language block of a Markdown text, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def commands(block: str) -> list[list[str]]:
    """The commands of a bash block (continued lines joined), each as its words."""
    return [shlex.split(line) for line in block.replace("\\\n", " ").splitlines()
            if line.strip()]


def test_sections_are_cut_at_their_headings():
    text = "## a\n```python\nx = 1\n```\n## b\n```bash\nls \\\n  -l\n```\n"
    assert blocks(section(text, "a"), "python") == ["x = 1\n"]
    assert [commands(b) for b in blocks(section(text, "b"), "bash")] == [[["ls", "-l"]]]


@pytest.fixture
def run_dir(tmp_path, monkeypatch, shared_dataset, shared_store, probing_results) -> Path:
    work = tmp_path / "work"
    run = work / "runs" / "ts"
    run.mkdir(parents=True)
    (run / "dataset").symlink_to(shared_dataset)
    (run / "activations.h5").symlink_to(shared_store)
    (run / "probes").symlink_to(probing_results)
    monkeypatch.chdir(work)
    return run


@pytest.mark.parametrize("heading", SECTIONS)
def test_export_section_runs(heading, run_dir, capsys):
    text = section(DOC.read_text(encoding="utf-8"), heading)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    for block in blocks(text, "bash"):
        for words in commands(block):
            assert words[:2] == ["python", "-m"], words
            done = subprocess.run([sys.executable, *words[1:]], env=env, capture_output=True,
                                  text=True, timeout=300)
            assert done.returncode == 0, done.stderr
    code = blocks(text, "python")
    assert code, heading
    namespace: dict = {"__name__": "reading_files_guide"}
    for number, block in enumerate(code, 1):
        exec(compile(block, f"{DOC.name}, {heading}, python block {number}", "exec"), namespace)
    out = capsys.readouterr().out
    if heading.startswith("pandas"):
        assert "value" in out and "f1" in namespace["grid"].metric.values
        assert set(namespace["side_by_side"].columns) >= {"probe", "shuffled"}
    elif heading.startswith("Hugging"):
        keys = namespace["keys"]
        assert keys.ndim == 3 and keys.shape[0] == len(namespace["ds"])
        assert len(namespace["quote_rows"]) > 0 and "query_L0" in namespace["first"]
    else:
        assert namespace["layers"] == [0, 2] and namespace["first"].shape[0] == 2
        assert (run_dir / "hl-test" / "tokens.conllu").is_file()

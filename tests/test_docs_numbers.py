"""scripts/docs_numbers.py: every number it prints names a doc that names the script, and a
summary line is found by its start."""

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _script():
    spec = importlib.util.spec_from_file_location("docs_numbers",
                                                  REPO / "scripts" / "docs_numbers.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(sys.modules[spec.name])
    return sys.modules[spec.name]


def test_each_quoted_file_names_the_script():
    numbers = _script()
    labels = [(q.file, q.label) for q in numbers.QUOTES]
    assert len(set(labels)) == len(labels)
    for name in {q.file for q in numbers.QUOTES}:
        assert "scripts/docs_numbers.py" in (REPO / name).read_text(), name
    assert {q.label.split(" (")[-1] for q in numbers.QUOTES if q.demo} == {
        f"{start})" for start in numbers.FINDINGS}


def test_summary_line_by_its_start():
    numbers = _script()
    lines = ["Headline findings in runs/x", "quotation head: found: L6H0 pays 0.51",
             "tag probe (``): found: query of L7H10 F1 0.94"]
    assert numbers.summary_line(lines, "tag probe") == lines[2]
    assert "no line starting 'induction head'" in numbers.summary_line(lines, "induction head")
    assert "no line" in numbers.summary_line(None, "tag probe")

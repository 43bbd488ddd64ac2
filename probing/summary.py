"""Headline findings of a run directory, read from its stored results.

``python -m probing summary --run runs/NAME`` names, for the probe grid, the best head for
each headline tag (with its shuffled-label control), and for every case study found under
``runs/NAME/studies`` its main number.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from headprobe.errors import UsageError
from headprobe.heads import head_label
from headprobe.rundir import run_path
from probing.results import ProbeResults, read_results
from probing.studies import quote, repeated
from probing.study_io import StudyResults, read_study
from probing.top import top_cells

HEADLINE_TAGS = ("``", "''", "VBD", "NN", "PRP$", "NNP", "DT")


def probe_lines(results: ProbeResults, tags: tuple[str, ...] = HEADLINE_TAGS) -> list[str]:
    """One line per headline tag present: the best cell by F1 and its controls."""
    lines = []
    for tag in (t for t in tags if t in results.tags):
        best = top_cells(results, tag, k=1)[0]
        shuffled = best.get("f1_shuffled", np.nan)
        extra = f", random weights {best['f1_random']:.2f}" if "f1_random" in best else ""
        head = head_label(best["layer"], best["head"])
        lines.append(f"  {tag:<5} best {best['site']:<5} {head:<6}"
                     f" F1 {best['f1']:.2f} (shuffled labels {shuffled:.2f}{extra};"
                     f" {best['support']} test tokens)")
    return lines


def _quote(r: StudyResults) -> str:
    b = r.meta["best"]
    text = (f"quotation head {head_label(*r.meta['best_head'])}: activity {b['ratio']:.2f}x higher "
            f"inside quotes (paired t {b['t_stat']:.1f})")
    if "attn_to_open" in b:
        text += f", attention to the opening mark {b['attn_to_open']:.2f}"
    return text


def _repeated(r: StudyResults) -> str:
    return repeated.circuit_line(r.meta)


HEADLINES = {quote.STUDY: _quote, repeated.STUDY: _repeated}


def study_line(r: StudyResults) -> str:
    """The headline of one study: a dedicated sentence, else its report's first line."""
    if r.study in HEADLINES:
        try:
            return HEADLINES[r.study](r)
        except (KeyError, IndexError, TypeError, UsageError):
            pass  # results of an older version: fall back to the report
    first = next((line for line in r.report.splitlines() if line.strip()), "")
    return first


def summarize(run: str | Path) -> str:
    """The headline findings of run directory ``run`` as text."""
    run = Path(run)
    if not run.is_dir():
        raise UsageError(f"run directory {run} does not exist")
    lines = [f"Headline findings in {run}"]
    probes = run_path(run, "probes")
    if (probes / "probes.h5").exists():
        results = read_results(probes)
        lines += [f"probe grid ({', '.join(results.sites)}; {len(results.tags)} tags):",
                  *probe_lines(results)]
    studies = run_path(run, "studies")
    for path in sorted(studies.glob("*/results.h5")) if studies.is_dir() else []:
        r = read_study(path.parent)
        lines.append(f"{r.study}: {study_line(r)}")
    figures = run_path(run, "figures")
    if figures.is_dir():
        n = sum(1 for p in figures.rglob("*") if p.suffix in (".png", ".pdf", ".svg"))
        lines.append(f"figures: {n} files in {figures}")
    return "\n".join(lines)

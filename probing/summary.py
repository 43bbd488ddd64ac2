"""Headline findings of a run directory, read from its stored results.

``python -m probing summary --run runs/NAME`` names, for the probe grid, the best head for
each headline tag (by F1, selectivity or compression, with its controls) and, when MDL was
measured, the most compressing head of each site; and for every case study found under
``runs/NAME/studies`` its main number. It starts with the three findings of
:mod:`probing.findings`, each with its control, or "not found".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from headprobe.rundir import require_input, run_path
from probing.findings import findings_lines
from probing.results import ProbeResults, read_results
from probing.studies import quote, repeated
from probing.study_io import StudyResults, read_study
from probing.top import top_cells

# studies whose result is one of the findings, so not listed again
FINDING_STUDIES = (quote.STUDY,)
HEADLINE_TAGS = ("``", "''", "VBD", "NN", "PRP$", "NNP", "DT")


# per-tag control F1 named in a summary line: (row key, words)
SUMMARY_CONTROLS = (("f1_shuffled", "shuffled labels"), ("f1_control_task", "control task"),
                    ("f1_random", "random weights"))


def probe_lines(results: ProbeResults, tags: tuple[str, ...] = HEADLINE_TAGS,
                by: str = "f1", control: str | None = None) -> list[str]:
    """One line per headline tag present: the best cell (ranked ``by`` as in
    probing.top), its F1, the controls' F1, selectivity and compression."""
    lines = []
    for tag in (t for t in tags if t in results.tags):
        best = top_cells(results, tag, k=1, by=by, control=control)[0]
        controls = [f"{words} {best[key]:.2f}" for key, words in SUMMARY_CONTROLS
                    if key in best]
        if "selectivity" in best:
            controls.append(f"selectivity {best['selectivity']:+.2f} vs {best['control']}")
        if "compression" in best:
            controls.append(f"compression {best['compression']:.2f}")
        lines.append(f"  {tag:<5} best {best['site']:<5} {best['cell']:<6}"
                     f" F1 {best['f1']:.2f} ({', '.join(controls) or 'no controls'};"
                     f" {best['support']} test tokens)")
    return lines


def mdl_lines(results: ProbeResults) -> list[str]:
    """Per site, the head whose probe compresses the tags most, beside the median head and
    the same head's random-weights and control-task compression."""
    a = results.arrays
    if "compression" not in a:
        return []
    lines = [f"MDL (uniform code {float(a['uniform_codelength']):.0f} bits):"]
    for s, site in enumerate(results.sites):
        grid = a["compression"][s, :, :results.heads(site)]
        li, h = np.unravel_index(int(np.nanargmax(grid)), grid.shape)
        same = [f"{words} {a[name][s, li, h]:.2f}x" for name, words in (
            ("compression_random", "on random weights"),
            ("compression_control_task", "on the control task")) if name in a]
        extra = f"; this head {', '.join(same)}" if same else ""
        cell = results.cell_label(site, results.layers[li], h)
        lines.append(f"  {site:<5} most compressing {cell:<6}"
                     f" {grid[li, h]:.2f}x (median head {np.nanmedian(grid):.2f}x{extra})")
    return lines


def study_line(r: StudyResults) -> str:
    """The headline of one study: the induction circuit's verdict for ``repeated``, else
    its report's first line."""
    if r.study == repeated.STUDY and "circuit" in r.meta:
        return repeated.circuit_line(r.meta)
    return next((line for line in r.report.splitlines() if line.strip()), "")


def summarize(run: str | Path, by: str = "f1", control: str | None = None) -> str:
    """The headline findings of run directory ``run`` as text; probe heads ranked ``by``
    'f1', 'selectivity' (against ``control``) or 'compression'."""
    run = require_input("run", run)
    probes = run_path(run, "probes")
    results = read_results(probes) if (probes / "probes.h5").exists() else None
    studies_dir = run_path(run, "studies")
    studies = {r.study: r for r in (read_study(p.parent) for p in sorted(
        studies_dir.glob("*/results.h5")))} if studies_dir.is_dir() else {}
    lines = [f"Headline findings in {run}", *findings_lines(results, studies)]
    if results is not None:
        lines += [f"probe grid ({', '.join(results.sites)}; {len(results.tags)} tags; "
                  f"best heads by {by}):", *probe_lines(results, by=by, control=control),
                  *mdl_lines(results)]
    for r in studies.values():
        if r.study not in FINDING_STUDIES:
            lines.append(f"{r.study}: {study_line(r)}")
    figures = run_path(run, "figures")
    if figures.is_dir():
        n = sum(1 for p in figures.rglob("*") if p.suffix in (".png", ".pdf", ".svg"))
        lines.append(f"figures: {n} files in {figures}")
    return "\n".join(lines)

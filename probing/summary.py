"""Headline findings of a run directory, read from its stored results.

``python -m probing summary --run runs/NAME`` names, for the probe grid, the best head for
each headline tag (by F1, selectivity or compression, with its controls) and, when MDL was
measured, the most compressing head of each site; and for every case study found under
``runs/NAME/studies`` its main number. It starts with the findings of
:mod:`probing.findings`, each with its control, or "not found".

``python -m probing summary --run runs/A runs/B ...`` (the demo at several seeds or thread
counts) prints instead, per finding and per criterion of the induction circuit, in how many
of the runs it holds (:mod:`probing.kofn`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from headprobe.rundir import require_input, run_path
from probing.findings import Finding, findings, findings_lines
from probing.kofn import FindingTally, kofn_table, tally
from probing.results import ProbeResults, read_results
from probing.studies import quote, repeated
from probing.studies.repeated_kofn import circuit_tallies
from probing.study_io import StudyResults, read_study
from probing.top import ranking_words, top_cells

# studies whose result is one of the findings, so not listed again
FINDING_STUDIES = (quote.STUDY,)
HEADLINE_TAGS = ("``", "''", "VBD", "NN", "PRP$", "NNP", "DT")


# per-tag control F1 named in a summary line: (row key, words)
SUMMARY_CONTROLS = (("f1_shuffled", "shuffled labels"), ("f1_control_task", "control task"),
                    ("f1_random", "random weights"), ("f1_lexical", "lexical baseline"),
                    ("f1_lexical_lower", "lowercased lexical baseline"))


def _cell_line(best: dict, lead: str) -> str:
    """One cell of a summary: its F1 with its controls, then its word-identity verdict."""
    controls = [f"{words} {best[key]:.2f}" for key, words in SUMMARY_CONTROLS if key in best]
    if "selectivity" in best:
        controls.append(f"selectivity {best['selectivity']:+.2f} vs {best['control']}")
    if "compression" in best:
        controls.append(f"compression {best['compression']:.2f}")
    return (f"{lead} {best['site']:<5} {best['cell']:<6}"
            f" F1 {best['f1']:.2f} ({', '.join(controls) or 'no controls'};"
            f" {best['support']} test tokens); {best['verdict']}")


def probe_lines(results: ProbeResults, tags: tuple[str, ...] = HEADLINE_TAGS,
                by: str = "f1", control: str | None = None) -> list[str]:
    """Per headline tag present: the best cell (ranked ``by`` as in probing.top) with its
    F1, the controls' F1 (the lexical baseline's included), selectivity, compression and
    whether it goes beyond word identity; and, when another cell beats the lexical
    baseline on ambiguous tokens by more, that cell too."""
    lines = []
    for tag in (t for t in tags if t in results.tags):
        best = top_cells(results, tag, k=1, by=by, control=control)[0]
        lines.append(_cell_line(best, f"  {tag:<5} best"))
        if by != "beyond-lexical" and "lexical_gain" in results.arrays:
            other = top_cells(results, tag, k=1, by="beyond-lexical", control=control)[0]
            if other["support_ambiguous"] > 0 and (other["site"], other["cell"]) != (
                    best["site"], best["cell"]):
                lines.append(_cell_line(other, f"  {'':<5} most beyond lexical"))
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


def _ranking(results: ProbeResults, by: str, control: str | None) -> str:
    """What the probe lines are ranked by, in words (probing.top)."""
    row = top_cells(results, results.tags[0], k=1, by=by, control=control)[0]
    return ranking_words(by, row["control"], row["acc_control"])


def _ambiguous_words(results: ProbeResults) -> str:
    """How many test tokens are ambiguous and what that means."""
    n = results.attrs.get("n_ambiguous_test")
    if n is None:
        return "no ambiguous-token scores"
    return (f"{n} of {results.attrs.get('n_test')} test tokens ambiguous: their token id "
            f"carries two or more tags in training, each on at least "
            f"{results.attrs.get('ambiguous_min_count')} tokens")


def study_line(r: StudyResults) -> str:
    """The headline of one study: the induction circuit's verdict for ``repeated``, else
    its report's first line."""
    if r.study == repeated.STUDY and "circuit" in r.meta:
        return repeated.circuit_line(r.meta)
    return next((line for line in r.report.splitlines() if line.strip()), "")


def read_run(run: str | Path) -> tuple[Path, ProbeResults | None, dict[str, StudyResults]]:
    """(run, its probe results or None, its studies by name) of run directory ``run``."""
    run = require_input("run", run)
    probes = run_path(run, "probes")
    results = read_results(probes) if (probes / "probes.h5").exists() else None
    studies_dir = run_path(run, "studies")
    studies = {r.study: r for r in (read_study(p.parent) for p in sorted(
        studies_dir.glob("*/results.h5")))} if studies_dir.is_dir() else {}
    return run, results, studies


def summarize(run: str | Path, by: str = "f1", control: str | None = None) -> str:
    """The headline findings of run directory ``run`` as text; probe heads ranked ``by``
    one of probing.top.RANKINGS (selectivity against ``control``)."""
    run, results, studies = read_run(run)
    lines = [f"Headline findings in {run}", *findings_lines(results, studies)]
    if results is not None:
        lines += [f"probe grid ({', '.join(results.sites)}; {len(results.tags)} tags; "
                  f"best heads by {by}: {_ranking(results, by, control)}; "
                  f"{_ambiguous_words(results)}):",
                  *probe_lines(results, by=by, control=control),
                  *mdl_lines(results)]
    for r in studies.values():
        if r.study not in FINDING_STUDIES:
            lines.append(f"{r.study}: {study_line(r)}")
    figures = run_path(run, "figures")
    if figures.is_dir():
        n = sum(1 for p in figures.rglob("*") if p.suffix in (".png", ".pdf", ".svg"))
        lines.append(f"figures: {n} files in {figures}")
    return "\n".join(lines)


def finding_tallies(per_run: Sequence[Sequence[Finding]]) -> list[FindingTally]:
    """Per finding, its k-of-n rows over runs: ``per_run[r]`` holds run r's findings in
    the same order. A criterion not measured in a run counts as not met there."""
    rows = []
    for same in zip(*per_run, strict=True):
        thresholds = list(dict.fromkeys(t for f in same for t, _ in f.measures))
        values = [{t: v for t, v in f.measures} for f in same]
        rows.append(FindingTally(same[0].name, [tally(t, [v.get(t) for v in values])
                                                for t in thresholds],
                                 [f.head for f in same], found=np.array([f.found for f in same])))
    return rows


def summarize_runs(runs: Sequence[str | Path]) -> str:
    """Found in k of n: per finding of :mod:`probing.findings` and per criterion of the
    repeated study's circuit (in the runs that ran it), in how many of ``runs`` it holds,
    with the spread of its scores, the smallest margin and the heads named."""
    read = [read_run(run) for run in runs]
    per_run = [findings(results, studies) for _, results, studies in read]
    rows = finding_tallies(per_run)
    with_circuit = [studies[repeated.STUDY].meta for _, _, studies in read
                    if repeated.STUDY in studies and "circuit" in studies[repeated.STUDY].meta]
    if with_circuit:
        rows += circuit_tallies(with_circuit)
    lines = [f"Found in k of n: {len(read)} runs", kofn_table(rows)]
    if len(with_circuit) < len(read):
        lines.append(f"the circuit rows count the {len(with_circuit)} runs with a repeated study")
    lines += ["", "runs:"]
    for (run, _, _), found in zip(read, per_run, strict=True):
        verdicts = "; ".join(f"{f.name} {'found' if f.found else 'not found'}" for f in found)
        lines.append(f"  {run}: {verdicts}")
    return "\n".join(lines)

"""Export probe results in other layouts.

``seed004``: one JSON file per site (``key_probes.json``, ``query_probes.json``), a list over
layers of lists over heads of scikit-learn ``classification_report(output_dict=True)``
dicts (for keys of a grouped-query model the inner lists run over key/value heads, so
they are shorter than the queries')::

    {"NN": {"precision": .., "recall": .., "f1-score": .., "support": ..}, ...,
     "accuracy": .., "macro avg": {...}, "weighted avg": {...}}

so that plotting code written for that layout reads it unchanged. Beside them
``notes.txt`` says what the reports cannot: per site and tag, the best cell's F1 beside
the lexical baseline (word identity), the comparison on ambiguous test tokens with its
interval, and whether that cell goes beyond word identity (probing.word_identity).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from headprobe.atomic import atomic_dir
from headprobe.errors import UsageError
from probing.results import ProbeResults, read_results
from probing.top import top_cells

FORMATS = ("seed004",)


def classification_report_dict(results: ProbeResults, site: int, layer: int,
                               head: int) -> dict:
    """One cell's scores in the shape of classification_report(output_dict=True).

    site, layer, head: indices into the arrays of ``results`` (not model layer numbers).
    """
    a = results.arrays
    support = a["support"][site, layer, head].astype(float)
    report: dict = {}
    for k, tag in enumerate(results.tags):
        report[tag] = {"precision": float(a["precision"][site, layer, head, k]),
                       "recall": float(a["recall"][site, layer, head, k]),
                       "f1-score": float(a["f1"][site, layer, head, k]),
                       "support": int(support[k])}
    occurs = support > 0
    total = support.sum()
    report["accuracy"] = float(a["accuracy"][site, layer, head])
    for name, weights in (("macro avg", occurs / max(occurs.sum(), 1)),
                          ("weighted avg", support / max(total, 1))):
        report[name] = {m: float(np.sum(weights * a[key][site, layer, head]))
                        for m, key in (("precision", "precision"), ("recall", "recall"),
                                       ("f1-score", "f1"))}
        report[name]["support"] = int(total)
    return report


def notes(results: ProbeResults) -> str:
    """The export's notes: per site and tag with test tokens, the best cell by F1, the
    lexical baseline and the word-identity verdict (probing.top, probing.word_identity)."""
    a = results.attrs
    lines = [f"seed004 export of {results.path}",
             "lexical baseline: each test token gets the most frequent training tag of its "
             "token id (word identity; the same for every head)"]
    if "f1_lexical" not in results.arrays:
        return "\n".join([*lines, "these results hold no lexical baseline (fitted before it "
                                   "was a default control)", ""])
    lines.append(f"ambiguous test tokens: {a.get('n_ambiguous_test')} of {a.get('n_test')} "
                 "(their token id carries two or more tags in training, each on at least "
                 f"{a.get('ambiguous_min_count')} tokens)")
    support = results.arrays["support"].reshape(-1, len(results.tags))[0]
    for site in results.sites:
        lines.append(f"{site}:")
        for tag in (t for t, n in zip(results.tags, support, strict=True) if n > 0):
            best = top_cells(results, tag, [site], k=1)[0]
            lines.append(f"  {tag:<6} best {best['cell']} F1 {best['f1']:.3f}, lexical "
                         f"baseline {best['f1_lexical']:.3f}; {best['verdict']}")
    return "\n".join([*lines, ""])


def export_seed004(results: ProbeResults, out_dir: str | Path,
                   overwrite: bool = False) -> list[Path]:
    """Write ``<site>_probes.json`` per site and ``notes.txt`` into ``out_dir``; return the
    file paths."""
    names = []
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        for s, site in enumerate(results.sites):
            grid = [[classification_report_dict(results, s, li, h)
                     for h in range(results.site_heads[s])] for li in range(len(results.layers))]
            (tmp / f"{site}_probes.json").write_text(json.dumps(grid))
            names.append(Path(out_dir) / f"{site}_probes.json")
        (tmp / "notes.txt").write_text(notes(results))
        names.append(Path(out_dir) / "notes.txt")
    return names


def export(results_dir: str | Path, fmt: str, out_dir: str | Path,
           overwrite: bool = False) -> list[Path]:
    """Export the results in ``results_dir`` as ``fmt`` into ``out_dir``."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    return export_seed004(read_results(results_dir), out_dir, overwrite)

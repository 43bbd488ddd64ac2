"""The best cells of a probe grid for one tag, with their controls."""

from __future__ import annotations

import numpy as np

from headprobe.errors import UsageError, opt
from probing.results import ProbeResults

COLUMNS = (("f1", "F1"), ("f1_lo", "lo"), ("f1_hi", "hi"), ("f1_shuffled", "shuffled"),
           ("f1_random", "random"), ("f1_majority", "majority"), ("selectivity", "select."))


def top_cells(results: ProbeResults, tag: str, sites: list[str] | None = None,
              k: int = 5) -> list[dict]:
    """The ``k`` cells with the highest F1 for ``tag``, best first.

    Each is a dict with site, layer (the model layer), head (a key/value head for keys
    of a grouped-query model), cell (its name, ``L2H0`` or ``L2KV0``), support and the
    per-tag metrics of COLUMNS that the results hold. Padding cells are never listed.
    """
    if k < 1:
        raise UsageError(f"{opt('k')} must be at least 1")
    t = results.tag_index(tag)
    rows = []
    for site in sites or results.sites:
        s = results.site_index(site)
        for li, layer in enumerate(results.layers):
            for h in range(results.site_heads[s]):
                row = {"site": site, "layer": layer, "head": h,
                       "cell": results.cell_label(site, layer, h),
                       "support": int(results.arrays["support"][s, li, h, t])}
                for key, _ in COLUMNS:
                    if key in results.arrays:
                        row[key] = float(results.arrays[key][s, li, h, t])
                rows.append(row)
    rows.sort(key=lambda r: (-r["f1"], r["site"], r["layer"], r["head"]))
    return rows[:k]


def format_top(rows: list[dict], tag: str) -> str:
    """A plain table of ``top_cells`` output."""
    cols = [(key, title) for key, title in COLUMNS if rows and key in rows[0]]
    lines = [f"tag {tag}: best cells by test F1 (support {rows[0]['support'] if rows else 0})",
             "  ".join(["site ", "cell   "] + [f"{title:>8}" for _, title in cols])]
    for r in rows:
        cells = [f"{r['site']:<5}", f"{r['cell']:<7}"]
        cells += [f"{r[key]:8.3f}" if not np.isnan(r[key]) else f"{'-':>8}" for key, _ in cols]
        lines.append("  ".join(cells))
    return "\n".join(lines)

"""The best cells of a probe grid for one tag, ranked by F1, selectivity or compression,
with their controls beside them."""

from __future__ import annotations

import numpy as np

from headprobe.errors import UsageError, opt
from probing.controls import SELECTIVITY_CONTROLS, strongest_control
from probing.results import ProbeResults

# what cells can be ranked by -> the row key of its value
RANKINGS = {"f1": "f1", "selectivity": "selectivity",
            "selectivity-accuracy": "selectivity_accuracy", "compression": "compression"}
# per-tag F1 of each control: (array, column title, what it is)
CONTROL_COLUMNS = {
    "shuffled": ("f1_shuffled", "shuffled", "F1 of the same probe fitted on shuffled labels"),
    "control-task": ("f1_control_task", "ctl-task",
                     "F1 of the same probe on the control task (one random label per word "
                     "type, drawn from the tag distribution)"),
    "random": ("f1_random", "random", "F1 of the same probe on the randomly initialised "
                                      "model's vectors"),
    "majority": ("f1_majority", "majority", "F1 of always predicting the most frequent tag"),
}
# (row key, column title, what it is); {control} is the control selectivity is taken against
COLUMNS = (
    ("f1", "F1", "test F1 of the probe for the tag"),
    ("f1_lo", "lo", "lower end of the bootstrap 95% interval of F1 (test stories resampled)"),
    ("f1_hi", "hi", "upper end of that interval"),
    *((key, title, text) for key, title, text in CONTROL_COLUMNS.values()),
    ("selectivity", "select.", "F1 minus the {control} F1"),
    ("selectivity_accuracy", "sel.acc", "accuracy minus the {control} accuracy, whole probe "
                                        "(against the control task: Hewitt & Liang's "
                                        "selectivity)"),
    ("compression", "compr.", "MDL compression, whole probe: uniform code length / online "
                              "code length of the train tags (1 = learns nothing)"),
    ("compression_random", "cmp.rand", "the same on the randomly initialised model"),
    ("compression_control_task", "cmp.ctl", "the same for the control task"),
)
CONTROL_NAMES = {"control-task": "control-task", "shuffled": "shuffled-label",
                 "random": "random-weights", "majority": "majority-class"}


def columns_help() -> str:
    """What the columns of the table mean, for ``probing top --help`` (the table repeats the
    lines of the columns it shows)."""
    lines = ["columns (those the results hold are shown):",
             f"  {'site':>8}  the probed site (key, query, ...)",
             f"  {'cell':>8}  layer and head: L2H5 (a key/value head L2KV1 for keys of a "
             "grouped-query model)"]
    lines += [f"  {title:>8}  {text.format(control='chosen control (--control)')}"
              for _, title, text in COLUMNS]
    return "\n".join(lines)


def _check(results: ProbeResults, by: str, control: str | None, k: int) -> str | None:
    """The control selectivity is measured against (None when the results hold none)."""
    if k < 1:
        raise UsageError(f"{opt('k')} must be at least 1")
    if by not in RANKINGS:
        raise UsageError(f"cannot rank by {by!r}; choose from {', '.join(RANKINGS)}")
    if control is not None and control not in SELECTIVITY_CONTROLS:
        raise UsageError(f"unknown {opt('control')} {control!r}; choose from "
                         f"{', '.join(SELECTIVITY_CONTROLS)}")
    if by == "compression" and "compression" not in results.arrays:
        raise UsageError(f"{results.path} holds no MDL results; fit with {opt('mdl')}")
    control = control or strongest_control(results.controls)
    if control is None or control not in results.controls:
        if by.startswith("selectivity") or control is not None:
            raise UsageError(f"{results.path} holds no {control or 'control'} F1 to measure "
                             f"selectivity against (have {', '.join(results.controls) or 'none'})")
        return None
    return control


def _values(results: ProbeResults, control: str | None) -> dict[str, np.ndarray]:
    """Row key -> its array ([S, L, H, K] or [S, L, H]) for every column the results hold."""
    values = {key: results.arrays[key] for key, _, _ in COLUMNS if key in results.arrays}
    if control is not None:
        values["selectivity"] = results.selectivity(control)
        values["selectivity_accuracy"] = results.selectivity(control, "accuracy")
    else:
        values.pop("selectivity", None)
        values.pop("selectivity_accuracy", None)
    return values


def top_cells(results: ProbeResults, tag: str, sites: list[str] | None = None, k: int = 5,
              by: str = "f1", control: str | None = None) -> list[dict]:
    """The ``k`` best cells for ``tag``, best first.

    by: 'f1' (the tag's F1), 'selectivity' (its F1 minus that of ``control``, by default
    the strongest control the results hold, see probing.controls.STRONGEST_FIRST),
    'selectivity-accuracy' (the probe's accuracy minus the control's, Hewitt & Liang's
    selectivity) or 'compression' (MDL, the whole probe). Each cell is a dict with site,
    layer (the model layer), head (a key/value head for keys of a grouped-query model),
    cell (its name, ``L2H0`` or ``L2KV0``), support, ``value`` (what it was ranked by),
    ``control`` and the COLUMNS the results hold. Padding cells are never listed.
    """
    control = _check(results, by, control, k)
    t = results.tag_index(tag)
    values = _values(results, control)
    rows = []
    for site in sites or results.sites:
        s = results.site_index(site)
        for li, layer in enumerate(results.layers):
            for h in range(results.site_heads[s]):
                row = {"site": site, "layer": layer, "head": h, "control": control,
                       "cell": results.cell_label(site, layer, h),
                       "support": int(results.arrays["support"][s, li, h, t])}
                for key, value in values.items():
                    cell = value[s, li, h]
                    row[key] = float(cell[t] if cell.ndim else cell)
                row["value"] = row[RANKINGS[by]]
                rows.append(row)
    rows.sort(key=lambda r: (-r["value"], r["site"], r["layer"], r["head"]))
    return rows[:k]


def format_top(rows: list[dict], tag: str, by: str = "f1") -> str:
    """A plain table of ``top_cells`` output, then what each column means."""
    keys = [c for c in COLUMNS if rows and c[0] in rows[0]]
    control = rows[0]["control"] if rows else None
    against = CONTROL_NAMES.get(control, control)
    ranking = {"f1": "test F1", "selectivity": f"selectivity against the {against} control",
               "selectivity-accuracy": f"accuracy selectivity against the {against} control",
               "compression": "MDL compression"}[by]
    lines = [f"tag {tag}: best cells by {ranking} (support {rows[0]['support'] if rows else 0})",
             "  ".join(["site ", "cell   "] + [f"{title:>8}" for _, title, _ in keys])]
    for r in rows:
        cells = [f"{r['site']:<5}", f"{r['cell']:<7}"]
        cells += [f"{r[key]:8.3f}" if not np.isnan(r[key]) else f"{'-':>8}"
                  for key, _, _ in keys]
        lines.append("  ".join(cells))
    lines.append("")
    lines += [f"  {title:>8}  {text.format(control=against)}" for _, title, text in keys]
    return "\n".join(lines)

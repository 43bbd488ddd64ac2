"""The best cells of a probe grid for one tag, ranked by one named measure, with their
controls, the lexical baseline and the ambiguous-token comparison beside them.

Measures (``--by``):

- ``f1``: the tag's test F1;
- ``selectivity``: the tag's F1 minus one control's F1 (``--control``, the lexical
  baselines included; default the strongest control fitted per cell that the results
  hold, probing.controls.STRONGEST_FIRST: random weights, else the control task, else
  shuffled labels);
- ``selectivity-accuracy``: the probe's accuracy minus the control task's accuracy,
  Hewitt & Liang's selectivity (or minus ``--control``'s accuracy when given);
- ``selectivity-f1``: the tag's F1 minus the highest F1 of any control run in the same
  cell, the lexical baselines included;
- ``beyond-lexical``: on the ambiguous test tokens, the tag's F1 minus the lexical
  baseline's, ranked by the lower end of its bootstrap 95% interval (by the difference
  itself when the fit ran without intervals); see probing.word_identity;
- ``compression``: MDL compression of the whole probe.
"""

from __future__ import annotations

import numpy as np

from headprobe.errors import UsageError, opt
from probing.controls import SELECTIVITY_CONTROLS, strongest_control
from probing.results import ProbeResults
from probing.word_identity import verdict

# what cells can be ranked by -> the row key of its value
RANKINGS = {"f1": "f1", "selectivity": "selectivity",
            "selectivity-accuracy": "selectivity_accuracy",
            "selectivity-f1": "selectivity_f1", "beyond-lexical": "lexical_gain_lo",
            "compression": "compression"}
# what each ranking is, for table headers; {control} / {acc_control}: the controls
RANKING_WORDS = {
    "f1": "test F1",
    "selectivity": "F1 selectivity against the {control} control (F1 minus its F1)",
    "selectivity-accuracy": "accuracy selectivity (accuracy minus the {acc_control} "
                            "accuracy{hl})",
    "selectivity-f1": "F1 selectivity against the strongest control of each cell (F1 minus "
                      "the highest control F1, lexical baseline included)",
    "beyond-lexical": "F1 beyond the lexical baseline on ambiguous tokens (lower end of the "
                      "95% interval of F1 minus lexical F1)",
    "compression": "MDL compression",
}
# per-tag F1 of each control: (array, column title, what it is)
CONTROL_COLUMNS = {
    "shuffled": ("f1_shuffled", "shuffled", "F1 of the same probe fitted on shuffled labels"),
    "control-task": ("f1_control_task", "ctl-task",
                     "F1 of the same probe on the control task (one random label per word "
                     "type, drawn from the tag distribution)"),
    "random": ("f1_random", "random", "F1 of the same probe on the randomly initialised "
                                      "model's vectors"),
    "majority": ("f1_majority", "majority", "F1 of always predicting the most frequent tag"),
    "lexical": ("f1_lexical", "lexical", "F1 of the lexical baseline: each token gets the "
                                         "most frequent training tag of its token id"),
    "lexical-lower": ("f1_lexical_lower", "lex.low", "the same per lowercased word"),
}
# (row key, column title, what it is); {control} is the control selectivity is taken
# against, {acc_control} the one accuracy selectivity is
COLUMNS = (
    ("f1", "F1", "test F1 of the probe for the tag"),
    ("f1_lo", "lo", "lower end of the bootstrap 95% interval of F1 (test stories resampled)"),
    ("f1_hi", "hi", "upper end of that interval"),
    *((key, title, text) for key, title, text in CONTROL_COLUMNS.values()),
    ("selectivity", "select.", "F1 minus the {control} F1"),
    ("selectivity_f1", "sel.f1", "F1 minus the highest control F1 of the cell (lexical "
                                 "baseline included)"),
    ("selectivity_accuracy", "sel.acc", "accuracy minus the {acc_control} accuracy, whole "
                                        "probe{hl}"),
    ("support_ambiguous", "amb.n", "ambiguous test tokens of the tag (their token id carries "
                                   "two or more tags in training)"),
    ("f1_ambiguous", "amb.F1", "F1 of the probe on the ambiguous test tokens"),
    ("f1_lexical_ambiguous", "amb.lex", "F1 of the lexical baseline on them"),
    ("lexical_gain", "gain", "amb.F1 minus amb.lex"),
    ("lexical_gain_lo", "gain.lo", "lower end of the bootstrap 95% interval of gain"),
    ("lexical_gain_hi", "gain.hi", "upper end of that interval"),
    ("compression", "compr.", "MDL compression, whole probe: uniform code length / online "
                              "code length of the train tags (1 = learns nothing)"),
    ("compression_random", "cmp.rand", "the same on the randomly initialised model"),
    ("compression_control_task", "cmp.ctl", "the same for the control task"),
)
CONTROL_NAMES = {"control-task": "control-task", "shuffled": "shuffled-label",
                 "random": "random-weights", "majority": "majority-class",
                 "lexical": "lexical-baseline", "lexical-lower": "lowercased-lexical-baseline"}
HL = " (Hewitt & Liang's selectivity)"


def columns_help() -> str:
    """What the columns of the table mean, for ``probing top --help`` (the table repeats the
    lines of the columns it shows)."""
    lines = ["columns (those the results hold are shown):",
             f"  {'site':>8}  the probed site (key, query, ...)",
             f"  {'cell':>8}  layer and head: L2H5 (a key/value head L2KV1 for keys of a "
             "grouped-query model)"]
    lines += [f"  {title:>8}  " + text.format(control="chosen control (--control)",
                                               acc_control="control-task (or --control)",
                                               hl="")
              for _, title, text in COLUMNS]
    lines.append(f"  {'beyond':>8}  yes: gain.lo > 0, the probe beats word identity where it "
                 "cannot decide (probing.word_identity)")
    return "\n".join(lines)


def _require(results: ProbeResults, by: str) -> None:
    """Refuse a ranking whose arrays the results lack."""
    needs = {"compression": ("compression", f"holds no MDL results; fit with {opt('mdl')}"),
             "beyond-lexical": ("lexical_gain", "holds no lexical baseline; fit again (it is "
                                                "a default control)"),
             "selectivity-f1": ("selectivity_f1", "holds no control F1 to measure "
                                                  "selectivity against")}
    if by in needs and needs[by][0] not in results.arrays:
        raise UsageError(f"{results.path} {needs[by][1]}")


def _check(results: ProbeResults, by: str, control: str | None, k: int
           ) -> tuple[str | None, str | None]:
    """The controls F1 and accuracy selectivity are measured against (None: none held)."""
    if k < 1:
        raise UsageError(f"{opt('k')} must be at least 1")
    if by not in RANKINGS:
        raise UsageError(f"cannot rank by {by!r}; choose from {', '.join(RANKINGS)}")
    if control is not None and control not in SELECTIVITY_CONTROLS:
        raise UsageError(f"unknown {opt('control')} {control!r}; choose from "
                         f"{', '.join(SELECTIVITY_CONTROLS)}")
    _require(results, by)
    if control is not None and control not in results.controls:
        raise UsageError(f"{results.path} holds no {control} F1 to measure selectivity "
                         f"against (have {', '.join(results.controls) or 'none'})")
    acc_control = control or ("control-task" if "control-task" in results.controls else None)
    control = control or strongest_control(results.controls)
    if by == "selectivity" and control is None:
        raise UsageError(f"{results.path} holds no control F1 to measure selectivity against")
    if by == "selectivity-accuracy" and acc_control is None:
        raise UsageError(f"{results.path} holds no control-task accuracy (Hewitt & Liang's "
                         f"selectivity): fit with {opt('controls')} control-task, or name "
                         f"{opt('control')}")
    return control, acc_control


def _values(results: ProbeResults, control: str | None, acc_control: str | None
            ) -> dict[str, np.ndarray]:
    """Row key -> its array ([S, L, H, K] or [S, L, H]) for every column the results hold."""
    values = {key: results.arrays[key] for key, _, _ in COLUMNS if key in results.arrays}
    values.pop("selectivity", None)
    values.pop("selectivity_accuracy", None)
    if control is not None:
        values["selectivity"] = results.selectivity(control)
    if acc_control is not None:
        values["selectivity_accuracy"] = results.selectivity(acc_control, "accuracy")
    return values


def top_cells(results: ProbeResults, tag: str, sites: list[str] | None = None, k: int = 5,
              by: str = "f1", control: str | None = None) -> list[dict]:
    """The ``k`` best cells for ``tag``, best first, ranked ``by`` one of RANKINGS (see
    the module docstring).

    Each cell is a dict with site, layer (the model layer), head (a key/value head for
    keys of a grouped-query model), cell (its name, ``L2H0`` or ``L2KV0``), support,
    ``value`` (what it was ranked by), ``control`` (F1 selectivity's), ``acc_control``
    (accuracy selectivity's), ``by``, the COLUMNS the results hold and ``verdict`` (in
    words, whether it goes beyond word identity). Padding cells are never listed.
    """
    control, acc_control = _check(results, by, control, k)
    t = results.tag_index(tag)
    values = _values(results, control, acc_control)
    key = RANKINGS[by]
    if key not in values and by == "beyond-lexical":
        key = "lexical_gain"                      # fitted without intervals
    rows = []
    for site in sites or results.sites:
        s = results.site_index(site)
        for li, layer in enumerate(results.layers):
            for h in range(results.site_heads[s]):
                row = {"site": site, "layer": layer, "head": h, "control": control,
                       "acc_control": acc_control, "by": by,
                       "cell": results.cell_label(site, layer, h),
                       "support": int(results.arrays["support"][s, li, h, t])}
                for name, value in values.items():
                    cell = value[s, li, h]
                    row[name] = float(cell[t] if cell.ndim else cell)
                if "support_ambiguous" in row:
                    row["support_ambiguous"] = int(row["support_ambiguous"])
                row["value"] = row[key]
                row["verdict"] = verdict(row)
                rows.append(row)
    # cells tied on the measure (beyond-lexical often ties at 0) are ordered by their F1
    rows.sort(key=lambda r: (-np.nan_to_num(r["value"], nan=-np.inf),
                             -np.nan_to_num(r["f1"], nan=-np.inf), r["site"], r["layer"],
                             r["head"]))
    return rows[:k]


def ranking_words(by: str, control: str | None, acc_control: str | None) -> str:
    """What ranking ``by`` shows, naming its controls."""
    return RANKING_WORDS[by].format(control=CONTROL_NAMES.get(control, control),
                                    acc_control=CONTROL_NAMES.get(acc_control, acc_control),
                                    hl=HL if acc_control == "control-task" else "")


def _cell_text(row: dict, key: str) -> str:
    value = row[key]
    if key == "support_ambiguous":
        return f"{value:8d}"
    return f"{value:8.3f}" if not np.isnan(value) else f"{'-':>8}"


def format_top(rows: list[dict], tag: str, by: str = "f1") -> str:
    """A plain table of ``top_cells`` output, then each row's word-identity verdict and
    what each column means."""
    keys = [c for c in COLUMNS if rows and c[0] in rows[0]]
    control = rows[0]["control"] if rows else None
    acc_control = rows[0]["acc_control"] if rows else None
    words = {"control": CONTROL_NAMES.get(control, control),
             "acc_control": CONTROL_NAMES.get(acc_control, acc_control),
             "hl": HL if acc_control == "control-task" else ""}
    beyond = rows and "lexical_gain" in rows[0]
    lines = [f"tag {tag}: best cells by {ranking_words(by, control, acc_control)} "
             f"(support {rows[0]['support'] if rows else 0})",
             "  ".join(["site ", "cell   "] + [f"{title:>8}" for _, title, _ in keys]
                       + (["beyond"] if beyond else []))]
    for r in rows:
        cells = [f"{r['site']:<5}", f"{r['cell']:<7}"]
        cells += [_cell_text(r, key) for key, _, _ in keys]
        if beyond:
            cells.append("yes" if r["verdict"].startswith("beyond") else "no")
        lines.append("  ".join(cells))
    lines += ["", "word identity:"]
    lines += [f"  {r['site']} {r['cell']}: {r['verdict']}" for r in rows]
    lines.append("")
    lines += [f"  {title:>8}  {text.format(**words)}" for _, title, text in keys]
    if beyond:
        lines.append(f"  {'beyond':>8}  yes: gain.lo > 0, the probe beats word identity where "
                     "word identity cannot decide")
    return "\n".join(lines)

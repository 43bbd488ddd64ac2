"""The probe grid as a tidy table: one row per number, for pandas, R and spreadsheets.

Columns (:data:`COLUMNS`): ``site``, ``layer`` (model layer), ``head`` (query head, empty for
key/value-head cells), ``kv_head`` (key/value head of a grouped-query model's keys and
values, empty for query-head cells), ``tag`` (empty for per-cell metrics such as accuracy),
``metric``, ``value``, ``low`` and ``high`` (the bootstrap interval of ``value`` where the
results hold one, else empty) and ``control`` (empty for the probe's own scores, else the
control the number belongs to, e.g. ``shuffled``).

The rows are derived from the results' declaration (:data:`probing.results.ARRAYS`, read
when the table is made), not from a list kept here: every per-tag and per-cell array
(``TAG_METRICS``, ``CELL_METRICS``) gives rows. An array named ``<metric>_<suffix>``, for
the suffix of a control (:func:`probing.controls.array_suffix`), is that control's
``<metric>``; a pair
``<name>_lo``/``<name>_hi`` is the interval of ``<name>`` and fills ``low``/``high`` of its
rows rather than rows of its own. Padding cells (past a site's heads) are left out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from headprobe.atomic import atomic_file
from headprobe.errors import UsageError
from headprobe.interop import require
from probing import controls
from probing import results as declared
from probing.results import TAG, ProbeResults

FORMATS = ("parquet", "csv")
COLUMNS = ("site", "layer", "head", "kv_head", "tag", "metric", "value", "low", "high",
           "control")
BOUNDS = ("_lo", "_hi")


def interval_of(name: str) -> str | None:
    """The array whose interval bound ``name`` is (``f1_lo`` -> ``f1``), else None: both
    bounds must be declared."""
    for end in BOUNDS:
        base = name.removesuffix(end)
        if base != name and all(base + b in declared.ARRAYS for b in BOUNDS):
            return base
    return None


def metric_and_control(name: str) -> tuple[str, str]:
    """(metric, control) an array holds: ``f1_control_task`` -> (``f1``, ``control-task``);
    an array of the probe's own scores gives (name, '')."""
    for control in controls.CONTROLS:
        base = name.removesuffix("_" + controls.array_suffix(control))
        if base != name and base in declared.ARRAYS:
            return base, control
    return name, ""


def row_arrays(results: ProbeResults) -> list[str]:
    """The arrays of ``results`` that give rows (interval bounds give columns instead)."""
    return [name for name in (*declared.TAG_METRICS, *declared.CELL_METRICS)
            if name in results.arrays and interval_of(name) is None]


def _cell_rows(results: ProbeResults, name: str, s: int) -> dict[str, np.ndarray]:
    """The rows of array ``name`` for site index ``s``: columns -> [n_rows]."""
    heads = results.site_heads[s]
    per_tag = declared.ARRAYS[name].dims == TAG
    tags = results.tags if per_tag else [""]
    layer, head, tag = (a.ravel() for a in np.meshgrid(
        np.asarray(results.layers), np.arange(heads), np.arange(len(tags)), indexing="ij"))

    def cells(array: str) -> np.ndarray:
        data = results.arrays[array][s, :, :heads]
        return (data if per_tag else data[..., None]).astype(np.float64).ravel()

    metric, control = metric_and_control(name)
    missing = np.full(layer.shape, np.nan)
    is_kv = results.head_axes[s] == "kv_head"
    none = np.full(layer.shape, None, dtype=object)
    return {"layer": layer, "head": none if is_kv else head, "kv_head": head if is_kv else none,
            "tag": np.asarray(tags, dtype=object)[tag], "metric": np.full(layer.shape, metric),
            "value": cells(name),
            "low": cells(name + "_lo") if name + "_lo" in results.arrays else missing,
            "high": cells(name + "_hi") if name + "_hi" in results.arrays else missing,
            "control": np.full(layer.shape, control)}


def tidy_frame(results: ProbeResults) -> Any:
    """The results as a pandas DataFrame with :data:`COLUMNS`, one row per number."""
    pd = require("pandas", "the tidy export")
    frames = []
    for name in row_arrays(results):
        for s, site in enumerate(results.sites):
            rows = _cell_rows(results, name, s)
            frames.append(pd.DataFrame({"site": site, **rows}, columns=list(COLUMNS)))
    frame = pd.concat(frames, ignore_index=True)
    for column in ("head", "kv_head"):
        frame[column] = frame[column].astype("Int64")
    for column in ("tag", "control"):
        frame[column] = frame[column].replace("", None)
    return frame


def export_tidy(results: ProbeResults, out: str | Path, fmt: str,
                overwrite: bool = False) -> Path:
    """Write the tidy table of ``results`` to the file ``out`` as ``fmt`` (parquet or csv)."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown tidy format {fmt!r}; choose from {', '.join(FORMATS)}")
    if fmt == "parquet":
        require("pyarrow", "the parquet export")
    frame = tidy_frame(results)
    with atomic_file(out, overwrite=overwrite) as tmp:
        if fmt == "parquet":
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False)
    return Path(out)

"""The run directory: how stages find each other's outputs from ``--run runs/NAME``.

::

    runs/NAME/
        dataset/           datasets_build  (tagged tokens, tag sets, manifest.json)
        activations.h5     extract         (per-head keys, queries, activity)
        model/             extract train   (a model trained by headprobe)
        probes/            probing fit     (probe grid results)
        studies/<study>/   probing <study> (one results file + report per study)
        figures/           figures

Every path inside a run directory is made here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from headprobe.errors import UsageError, opt

LAYOUT = {
    "dataset": "dataset",
    "store": "activations.h5",
    "model": "model",
    "probes": "probes",
    "studies": "studies",
    "figures": "figures",
}
# Root attributes of an activation store that may name the model it was extracted from.
STORE_MODEL_ATTRS = ("model_path", "model", "model_name")


def run_path(run: str | Path, what: str) -> Path:
    """Path of output ``what`` (a key of LAYOUT) inside run directory ``run``."""
    return Path(run) / LAYOUT[what]


def study_path(run: str | Path, study: str) -> Path:
    """Results directory of case study ``study`` inside run directory ``run``."""
    return run_path(run, "studies") / study


def run_members(run: str | Path) -> list[Path]:
    """The results directories a run holds: ``probes/`` and each ``studies/<study>/``."""
    members = []
    if run_path(run, "probes").is_dir():
        members.append(run_path(run, "probes"))
    studies = run_path(run, "studies")
    if studies.is_dir():
        members.extend(sorted(p for p in studies.iterdir() if p.is_dir()))
    return members


def resolve(explicit: str | Path | None, run: str | Path | None, what: str,
            param: str) -> Path:
    """An explicit path wins; otherwise take ``what`` from the run directory.

    param: the name of the explicit setting, for the error when neither is given.
    """
    if explicit:
        return Path(explicit)
    if run:
        return run_path(run, what)
    raise UsageError(f"give {opt(param)} or {opt('run')}")


def model_of_store(store_attrs: Mapping[str, Any], run: str | Path | None = None
                   ) -> str | None:
    """The model a store was extracted from (its attributes), else ``RUN/model``, else None."""
    for key in STORE_MODEL_ATTRS:
        value = store_attrs.get(key)
        if isinstance(value, str) and value:
            return value
    if run and run_path(run, "model").is_dir():
        return str(run_path(run, "model"))
    return None

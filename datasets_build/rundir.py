"""The run directory: how stages find each other's outputs from ``--run runs/NAME``.

::

    runs/NAME/
        dataset/           datasets_build  (tagged tokens, tag sets, manifest.json)
        activations.h5     extract         (per-head keys, queries, activity)
        model/             extract train   (a model trained by headprobe)
        probes/            probing fit     (probe grid results)
        studies/           probing <study> (one results file + report per study)
        figures/           figures
"""

from __future__ import annotations

from pathlib import Path

from datasets_build.cli_support import UsageError

LAYOUT = {
    "dataset": "dataset",
    "store": "activations.h5",
    "model": "model",
    "probes": "probes",
    "studies": "studies",
    "figures": "figures",
}


def run_path(run: str | Path, what: str) -> Path:
    """Path of output ``what`` (a key of LAYOUT) inside run directory ``run``."""
    return Path(run) / LAYOUT[what]


def resolve(explicit: str | Path | None, run: str | Path | None, what: str, flag: str) -> Path:
    """An explicit path wins; otherwise take ``what`` from the run directory."""
    if explicit:
        return Path(explicit)
    if run:
        return run_path(run, what)
    raise UsageError(f"give {flag} or --run")

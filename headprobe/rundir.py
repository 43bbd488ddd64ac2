"""The run directory: how stages find each other's outputs from ``--run runs/NAME``.

::

    runs/NAME/
        dataset/           datasets_build  (tagged tokens, tag sets, manifest.json)
        activations.h5     extract         (per-head keys, queries, activity)
        activations-random.h5  extract --reinit-seed  (the random-weights control store)
        model/             extract train   (a model trained by headprobe)
        probes/            probing fit     (probe grid results)
        studies/<study>/   probing <study> (one results file + report per study)
        figures/           figures

Every path inside a run directory is made here and nowhere else, and so is the answer to
"which command makes this input?" (:func:`missing_input`), which every stage gives when an
input another stage makes is not there.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from headprobe.errors import UsageError, opt

LAYOUT = {
    "dataset": "dataset",
    "store": "activations.h5",
    "control_store": "activations-random.h5",
    "model": "model",
    "probes": "probes",
    "studies": "studies",
    "figures": "figures",
}
# What each input is called in an error, and the command that makes it: the first form
# writes to an explicit {path}, the second into run directory {run} (None: no such form).
# {study} is the study's name.
MAKERS: dict[str, tuple[str, str, str | None]] = {
    "run": ("run directory",
            "python -m datasets_build --source FILE --tokenizer MODEL --run {path}", None),
    "dataset": ("tagged dataset",
                "python -m datasets_build --source FILE --tokenizer MODEL --out {path}",
                "python -m datasets_build --source FILE --tokenizer MODEL --run {run}"),
    "store": ("activation store",
              "python -m extract --dataset DATASET --model MODEL --out {path}",
              "python -m extract --run {run} --model MODEL"),
    "control_store": ("random-weights control store",
                      "python -m extract --dataset DATASET --model MODEL --reinit-seed 0 "
                      "--out {path}",
                      "python -m extract --run {run} --model MODEL --reinit-seed 0 --out {path}"),
    "model": ("model directory", "python -m extract train --corpus FILE --out {path}",
              "python -m extract train --corpus FILE --run {run}"),
    "probes": ("probe results", "python -m probing fit --store FILE.h5 --out {path}",
               "python -m probing fit --run {run}"),
    "study": ("{study} study results", "python -m probing {study} --store FILE.h5 --out {path}",
              "python -m probing {study} --run {run}"),
}
# Inputs that are files (the others are directories).
FILE_INPUTS = ("store", "control_store")
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


def make_command(what: str, path: str | Path, run: str | Path | None = None,
                 study: str = "STUDY") -> str:
    """The command that makes input ``what`` (a key of MAKERS) at ``path``; with ``run``
    the run-directory form of that command."""
    _, explicit, in_run = MAKERS[what]
    template = in_run if run is not None and in_run is not None else explicit
    return template.format(path=path, run=run, study=study)


def missing_input(what: str, path: str | Path, run: str | Path | None = None,
                  study: str = "STUDY") -> UsageError:
    """The one-line error for input ``what`` not found at ``path``, naming the command that
    makes it: ``activation store runs/x/activations.h5 not found; make it with: ...``."""
    name = MAKERS[what][0].format(study=study)
    wrong = _wrong_kind(what, Path(path))
    if wrong:
        return UsageError(f"{name} expected, but {path} is {wrong}")
    return UsageError(f"{name} {path} not found; make it with: "
                      f"{make_command(what, path, run, study)}")


def _wrong_kind(what: str, path: Path) -> str:
    """'a directory' or 'a file' when ``path`` is the other kind than input ``what`` is (a
    file for stores, a directory for the rest); '' otherwise."""
    is_file_input = what in FILE_INPUTS
    if is_file_input and path.is_dir():
        return "a directory"
    if not is_file_input and path.is_file():
        return "a file"
    return ""


def require_input(what: str, path: str | Path, run: str | Path | None = None,
                  study: str = "STUDY") -> Path:
    """``path`` when input ``what`` is there (a directory for run, dataset, model, probes and
    study, a file otherwise); else :func:`missing_input`."""
    path = Path(path)
    found = path.is_file() if what in FILE_INPUTS else path.is_dir()
    if not found:
        raise missing_input(what, path, run, study)
    return path


def run_of(path: str | Path, what: str) -> Path | None:
    """The run directory ``path`` sits in when it is that run's ``what``, else None."""
    path = Path(path)
    if what == "study":
        return path.parent.parent if path.parent.name == LAYOUT["studies"] else None
    return path.parent if path.name == LAYOUT[what] else None

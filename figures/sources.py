"""The results ``figures`` draws from: how a directory is recognised, found and read.

A *source* is one results directory: a probe grid (``probing fit``) or one case study
(``probing <study>``, format in :mod:`probing.study_io`). A run directory stands for its
``probes/`` and ``studies/*``; any other folder for those of its subdirectories that
are results.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py

from headprobe.errors import UsageError
from headprobe.heads import head_label
from headprobe.rundir import make_command, missing_input, run_members, run_of
from probing.results import RESULTS_FILE as PROBES_FILE
from probing.results import read_results
from probing.study_io import RESULTS_FILE, StudyResults, read_study

PROBES = "probes"


@dataclass
class Source:
    """One results directory: ``kind`` is 'probes' or the study's name."""

    kind: str
    path: Path
    _data: Any = field(default=None, repr=False)

    def data(self) -> Any:
        """The results, read once: a ProbeResults or a StudyResults."""
        if self._data is None:
            self._data = read_results(self.path) if self.kind == PROBES else read_study(self.path)
        return self._data


def classify(path: Path) -> str | None:
    """The study name for a study directory, 'probes' for probe results, else None."""
    file = path / RESULTS_FILE
    if file.is_file():
        try:
            with h5py.File(file, "r") as f:
                study = f.attrs.get("study")
        except OSError:
            study = None
        if study is not None:
            return str(study)
    return PROBES if (path / PROBES_FILE).is_file() else None


def _missing(path: Path) -> UsageError:
    """The error for a results directory that is not there: a file given instead says so;
    a missing one names the command that makes what its place says it is (probe results or
    a study's results), else what a results directory can be."""
    if path.exists():
        return UsageError(f"results directory expected, but {path} is a file; give the "
                          f"directory that holds it ({path.parent})")
    if run_of(path, "probes") is not None:
        return missing_input("probes", path, run_of(path, "probes"))
    if run_of(path, "study") is not None:
        return missing_input("study", path, run_of(path, "study"), path.name)
    return UsageError(f"results directory {path} not found; give probe results, a study's "
                      "results or a run directory (make probe results with: "
                      f"{make_command('probes', path)})")


def discover(paths: Sequence[str | Path]) -> list[Source]:
    """Sources under the given directories (results, run directories or folders of results)."""
    sources: list[Source] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            raise _missing(path)
        kind = classify(path)
        if kind is not None:
            sources.append(Source(kind, path))
            continue
        found = run_members(path) or sorted(p for p in path.iterdir()
                                            if p.is_dir() and classify(p) is not None)
        if not found:
            raise UsageError(f"{path} is neither probe results, a study directory nor a run "
                             "directory with probes/ or studies/; make probe results with: "
                             f"{make_command('probes', path, run=path)}")
        for member in found:
            member_kind = classify(member)
            if member_kind is not None:
                sources.append(Source(member_kind, member))
    return sources


def meta_entry(results: StudyResults, key: str) -> Any:
    """``results.meta[key]``; a UsageError naming the directory when it is absent."""
    if key not in results.meta:
        raise UsageError(f"{results.path} lacks meta entry {key!r} ({results.study} results)")
    return results.meta[key]


def best_head(results: StudyResults, key: str = "best_head") -> str:
    """The name (``L2H0``) of the head stored as ``meta[key]``."""
    return head_label(*meta_entry(results, key))

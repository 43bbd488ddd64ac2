"""What ``figures`` can draw, and how results directories are found and matched to figures.

A *source* is one results directory: a probe grid (``probing fit``) or one case study
(``probing <study>``). A run directory stands for its ``probes/`` and ``studies/*``.
Each :class:`FigureType` names the source it needs and turns a loaded source into
:class:`Planned` figures: a name (what ``--only`` matches), a drawing function that
returns a matplotlib Figure, the input files it depends on, and its parameters.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from headprobe.errors import UsageError

PROBES = "probes"


class MissingData(Exception):
    """A source lacks an array or metadata entry a figure needs (the message names it)."""


@dataclass
class Source:
    """One results directory: ``kind`` is 'probes' or the study's name."""

    kind: str
    path: Path
    loader: Callable[[Path], Any]
    _data: Any = field(default=None, repr=False)

    def data(self) -> Any:
        """The loaded results (read once)."""
        if self._data is None:
            self._data = self.loader(self.path)
        return self._data


@dataclass
class Planned:
    """One figure ready to draw."""

    name: str
    draw: Callable[[], Figure]
    inputs: list[Path]
    params: dict[str, Any] = field(default_factory=dict)
    stem: str = ""

    def __post_init__(self) -> None:
        self.stem = self.stem or file_stem(self.name)


@dataclass(frozen=True)
class FigureType:
    """A kind of figure: ``name`` (a pattern such as ``f1:TAG``), its source kind, its plan."""

    name: str
    source: str
    help: str
    plan: Callable[[Source], list[Planned]]


FIGURE_TYPES: list[FigureType] = []


def register(name: str, source: str, help: str):
    """Decorator: add a planning function to FIGURE_TYPES."""

    def wrap(plan: Callable[[Source], list[Planned]]) -> Callable[[Source], list[Planned]]:
        FIGURE_TYPES.append(FigureType(name, source, help, plan))
        return plan

    return wrap


_SYMBOLS = {"$": "dollar", "``": "openquote", "''": "closequote", ",": "comma", ".": "period",
            ":": "colon", "#": "hash", "-LRB-": "lrb", "-RRB-": "rrb", "(": "lrb", ")": "rrb",
            "\"": "quote", "'": "apostrophe", "-": "dash", "!": "bang", "?": "question"}


def _symbol(match: re.Match) -> str:
    char = match.group()
    return "-" + _SYMBOLS.get(char, f"x{ord(char):02x}")


def file_stem(name: str) -> str:
    """A file-name-safe stem for a figure name: ``f1:PRP$`` -> ``f1_PRP-dollar``."""
    base, _, param = name.partition(":")
    if not param:
        return re.sub(r"[^A-Za-z0-9_.-]", "_", base)
    if param in _SYMBOLS:
        param = _SYMBOLS[param]
    else:
        param = re.sub(r"[^A-Za-z0-9]", _symbol, param).strip("-")
    return f"{base}_{param}"


def matches(name: str, patterns: Sequence[str]) -> bool:
    """True when ``name`` is selected by ``--only`` patterns (exact, ``f1`` for ``f1:*``, globs)."""
    if not patterns:
        return True
    base = name.partition(":")[0]
    return any(p == name or p == base or fnmatch.fnmatchcase(name, p) for p in patterns)


def discover(paths: Sequence[str | Path], loaders: dict[str, Callable[[Path], Any]],
             classify: Callable[[Path], str | None]) -> list[Source]:
    """Sources under the given directories.

    A directory is classified by ``classify`` (a source kind or None); a directory that is
    none of them but holds ``probes/`` or ``studies/`` is a run directory and stands for them;
    otherwise a directory stands for those of its subdirectories that are results.
    """
    sources: list[Source] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            raise UsageError(f"results directory {path} does not exist")
        kind = classify(path)
        if kind is not None:
            sources.append(Source(kind, path, loaders.get(kind, loaders["study"])))
            continue
        found = _run_members(path) or sorted(p for p in path.iterdir()
                                             if p.is_dir() and classify(p) is not None)
        if not found:
            raise UsageError(f"{path} is neither probe results, a study directory nor a run "
                             "directory with probes/ or studies/")
        for member in found:
            member_kind = classify(member)
            if member_kind is not None:
                sources.append(Source(member_kind, member, loaders.get(member_kind,
                                                                       loaders["study"])))
    return sources


def _run_members(path: Path) -> list[Path]:
    members = []
    if (path / "probes").is_dir():
        members.append(path / "probes")
    if (path / "studies").is_dir():
        members.extend(sorted(p for p in (path / "studies").iterdir() if p.is_dir()))
    return members


def plan_all(sources: Sequence[Source], only: Sequence[str] = ()
             ) -> tuple[list[Planned], list[tuple[str, str]]]:
    """Planned figures for every source, and (figure name, reason) for those that cannot be."""
    planned: list[Planned] = []
    skipped: list[tuple[str, str]] = []
    for source in sources:
        for ftype in FIGURE_TYPES:
            if ftype.source != source.kind:
                continue
            try:
                items = ftype.plan(source)
            except MissingData as exc:
                if matches(ftype.name, only) or not only:
                    skipped.append((ftype.name, str(exc)))
                continue
            planned.extend(p for p in items if matches(p.name, only))
    _unique_stems(planned)
    return planned, skipped


def _unique_stems(planned: list[Planned]) -> None:
    """Where two sources give the same figure, suffix the stems with the source folder."""
    seen: dict[str, int] = {}
    for p in planned:
        seen[p.stem] = seen.get(p.stem, 0) + 1
    for p in planned:
        if seen[p.stem] > 1 and p.inputs:
            p.stem = f"{p.stem}-{file_stem(p.inputs[0].parent.name)}"

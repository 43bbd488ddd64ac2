"""What ``figures`` can draw, and the plan: which figures each source gives.

Each :class:`FigureType` names the kind of source it draws from (a study's name, or
'probes'), the study arrays it needs (entries of the study's layout,
:mod:`probing.study_io`) and a planning function that turns the loaded results into
:class:`Planned` figures: a name (what ``--only`` matches), a drawing function that
returns a matplotlib Figure, the input files it depends on, and its parameters.

A source that lacks an array a figure needs is an error, unless the study writes that
array only in some mode (the layout says which): then the figure is not planned for it,
and the plan says why. Nothing is recomputed: every number drawn is read from the files.
"""

from __future__ import annotations

import fnmatch
import importlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from figures.sources import Source
from headprobe.errors import UsageError
from probing.study_io import Array

# modules whose figure types register themselves when imported
FIGURE_MODULES = ("figures.probe_grids", "figures.quote", "figures.tag_induction",
                  "figures.repeated", "figures.patching", "figures.ablation", "figures.stats",
                  "figures.chat")


# pages drawn from every source of a run at once (not one figure per source): name -> help
PAGES = {"atlas": "one offline HTML page: layers x heads grid coloured by any stored metric, "
                  "a card per head, a search (figures.atlas)"}


class NotPlanned(Exception):
    """A figure does not apply to a source (the message says why); not an error."""


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


# a planning function: loaded results (StudyResults or ProbeResults) -> figures to draw
PlanFunction = Callable[[Any], list[Planned]]


@dataclass(frozen=True)
class FigureType:
    """A kind of figure: ``name`` (a pattern such as ``f1:<TAG>``), the kind of source it
    draws from, the study arrays it needs, and its planning function."""

    name: str
    source: str
    help: str
    plan: PlanFunction
    needs: tuple[Array, ...] = ()

    def check(self, source: Source) -> None:
        """Raise UsageError if the source lacks a required array this figure needs, and
        NotPlanned if it lacks one the study writes only in some mode."""
        missing = [a for a in self.needs if a.name not in source.data().arrays]
        for array in missing:
            if array.required:
                raise UsageError(f"{source.path} lacks array {array.name!r}, which figure "
                                 f"{self.name} needs ({source.kind} results)")
        if missing:
            raise NotPlanned(f"{source.path} holds no {missing[0].name} (written only "
                             f"{missing[0].when})")


FIGURE_TYPES: list[FigureType] = []


def register(name: str, source: str, help: str, needs: Sequence[Array] = ()
             ) -> Callable[[PlanFunction], PlanFunction]:
    """Decorator: add a planning function to FIGURE_TYPES.

    source: the study name (``quote.STUDY``) or 'probes'; needs: the study arrays the
    figure cannot be drawn without.
    """

    def wrap(plan: PlanFunction) -> PlanFunction:
        FIGURE_TYPES.append(FigureType(name, source, help, plan, tuple(needs)))
        return plan

    return wrap


def figure_types() -> list[FigureType]:
    """Every figure type, in the order of FIGURE_MODULES."""
    for module in FIGURE_MODULES:
        importlib.import_module(module)
    return FIGURE_TYPES


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


def _selected(ftype: FigureType, only: Sequence[str]) -> bool:
    """Whether ``--only`` may select figures of this type (a pattern name always may)."""
    return "<" in ftype.name or matches(ftype.name, only)


def plan_all(sources: Sequence[Source], only: Sequence[str] = ()
             ) -> tuple[list[Planned], list[tuple[str, str]]]:
    """Planned figures for every source, and (figure name, reason) for those not planned.

    A UsageError names the source and the array when a source lacks an array it always
    holds.
    """
    planned: list[Planned] = []
    not_planned: list[tuple[str, str]] = []
    for source in sources:
        for ftype in figure_types():
            if ftype.source != source.kind or not _selected(ftype, only):
                continue
            try:
                ftype.check(source)
                items = ftype.plan(source.data())
            except NotPlanned as exc:
                not_planned.append((ftype.name, str(exc)))
                continue
            planned.extend(p for p in items if matches(p.name, only))
    _unique_stems(planned)
    return planned, not_planned


def _unique_stems(planned: list[Planned]) -> None:
    """Where two sources give the same figure, suffix the stems with the source folder."""
    seen: dict[str, int] = {}
    for p in planned:
        seen[p.stem] = seen.get(p.stem, 0) + 1
    for p in planned:
        if seen[p.stem] > 1 and p.inputs:
            p.stem = f"{p.stem}-{file_stem(p.inputs[0].parent.name)}"

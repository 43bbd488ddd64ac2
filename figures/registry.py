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

# How to read each kind of figure, in one line (the index page, figures/index.py, shows it
# under the figure's ``help``); every registered figure type has one.
READING = {
    "probes_<site>": "each small grid is one tag: rows are layers, columns heads; a dark cell is "
                     "a head whose vectors predict that tag well - compare with the control "
                     "figures beside it before believing it",
    "f1:<TAG>": "read across a row: the probe's F1 is worth something only where it clearly "
                "beats the control grids next to it; the boxed cell is the best head",
    "probes_selectivity": "positive cells (accuracy above the control's) are heads that encode "
                          "more than the control can explain; near zero means the control does "
                          "as well",
    "probes_compression": "higher compression means the tags are easier to code from the "
                          "vectors; a head is interesting where it beats both the random model "
                          "and the control task",
    "quote_heads": "look for one cell that stands out in every panel: more active inside "
                   "quotations (ratio > 1, large t) and attending to the opening mark far above "
                   "the uniform level",
    "quote_activity": "the line should rise inside the shaded quoted spans and fall outside "
                      "them if the head tracks quotations",
    "quote_attention": "each row is a token attending to earlier tokens; a quotation head's "
                       "rows inside a quote light up the column of the opening mark",
    "quote_shift": "offset 0 is the closing mark: a quotation head's attention to the opening "
                   "mark should drop after it, a closing-mark head's attention should appear",
    "tag_induction_heads": "the difference panel matters: positive cells attend to earlier "
                           "tokens of the tag more than their baseline does",
    "tag_induction_activity": "the line should rise on or before the shaded tag tokens if the "
                              "head anticipates the tag",
    "tag_induction_attention": "rows are tokens, columns the tokens they attend to; bright "
                               "columns at earlier tag tokens show the induction-like pattern",
    "repeated_scores": "an induction head has a high induction score (left), a "
                       "previous-token head a high previous-token score (right); uniform "
                       "attention would be near zero",
    "repeated_loss": "loss should drop sharply in the second (repeated) half when the model "
                     "has induction heads; a flat curve means it does not copy",
    "repeated_mlp_patching": "cells far from zero are MLP outputs whose first-half value "
                             "changes the loss of the repeat; most should be pale",
    "repeated_pattern": "the induction head attends along a diagonal offset by one copy "
                        "length, the previous-token head along the line just below the main "
                        "diagonal",
    "repeated_scatter": "induction heads sit high on one axis, previous-token heads on the "
                        "other; the two kinds forming a circuit shows as points in both corners",
    "repeated_composition": "bright cells are writer -> reader pairs whose weights compose "
                            "(K-composition from a previous-token head into an induction head "
                            "is the classic circuit)",
    "repeated_ablation": "a large drop when one head is ablated shows that the copy depends on "
                         "it; compare with the induction-score grid",
    "patching": "red cells restore the clean answer when patched (1 = fully), blue ones push "
                "it further away; the path from the changed token to the last position is the "
                "circuit",
    "patching_topk": "compare the two tables: the tokens whose probability moves between the "
                     "prompts are what the corruption changes (the target and foil come from "
                     "them)",
    "ablation": "bars above zero are tags whose loss rises when the chosen heads are ablated; "
                "they matter only where they exceed the random-head bars",
    "activation_stats": "boxes that widen layer by layer show growing activations; outlying "
                        "means or maxima point to a few very large dimensions",
    "activation_hist": "each ridge is a layer's distribution; heavy tails or several peaks "
                       "show features of a few dimensions or tokens",
    "mlp_sparsity": "a high fraction means most neurons are silent on most tokens (sparse "
                    "MLPs); compare layers",
    "next_token_table": "each row sums the probability the model gives each column's token "
                        "after that prompt; read down a column to see what the varied value "
                        "changes",
    "time_order_mass": "a model that keeps time order puts most mass on 'later' for every "
                       "previous digit",
    "time_order_hist": "mass right of zero means generated timestamps move forward; mass left "
                       "of zero is time going backwards",
}


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


def type_of(name: str) -> FigureType:
    """The figure type a planned figure ``name`` belongs to (``f1:VBD`` -> ``f1:<TAG>``)."""
    types = figure_types()
    for ftype in types:
        if ftype.name == name:
            return ftype
    for ftype in types:
        if "<" in ftype.name and fnmatch.fnmatchcase(name, re.sub(r"<[^>]*>", "*", ftype.name)):
            return ftype
    raise KeyError(f"no figure type draws {name!r}")


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

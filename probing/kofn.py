"""Found in k of n: how many of several models or runs (training seeds, thread counts) a
finding holds in, criterion by criterion, with the spread of each score.

A :class:`Tally` is one criterion over n results: each result's value, in how many it clears
its threshold (:mod:`probing.thresholds`), in how many it does so robustly, the minimum,
median and maximum of the value and the smallest margin. A :class:`FindingTally` is one
finding: its criteria's tallies, in how many results all of them hold, and which head each
result named (for a criterion measured on a head, with that head's range of values).
:func:`kofn_table` prints them as one table.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from probing.studies.common import format_table
from probing.thresholds import ROBUST_MARGIN, ROBUST_RATIO, Threshold

HEADER = ("finding / criterion", "threshold", "holds", "robust", "min", "median", "max",
          "worst margin", "heads")


@dataclass
class Tally:
    """One criterion over n results: values [n] (NaN: not measured in that result) and,
    when the criterion is measured on a head, the head of each result (None: none)."""

    threshold: Threshold
    values: np.ndarray
    heads: list[str | None] | None = None

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def holds(self) -> np.ndarray:
        """[n] bool: the value clears the threshold."""
        return np.array([self.threshold.holds(float(v)) for v in self.values], dtype=bool)

    @property
    def robust(self) -> np.ndarray:
        """[n] bool: the value clears the threshold by the robust margin."""
        return np.array([self.threshold.robust(float(v)) for v in self.values], dtype=bool)

    def spread(self) -> tuple[float, float, float]:
        """(min, median, max) of the measured values (NaN when none is)."""
        v = self.values[~np.isnan(self.values)]
        if not len(v):
            return math.nan, math.nan, math.nan
        return float(v.min()), float(np.median(v)), float(v.max())

    def worst_margin(self) -> float:
        """The smallest margin over the measured values (NaN when none is)."""
        margins = [self.threshold.margin(float(v)) for v in self.values if not np.isnan(v)]
        return min(margins) if margins else math.nan


@dataclass
class FindingTally:
    """One finding over n results: its criteria, and per result whether it was found (every
    criterion holds, unless ``found`` says otherwise) and which head it named (None: none)."""

    name: str
    tallies: list[Tally]
    heads: list[str | None]
    found: np.ndarray | None = None

    @property
    def n(self) -> int:
        return len(self.heads)

    def found_in(self) -> np.ndarray:
        """[n] bool: the finding holds in each result."""
        if self.found is not None:
            return np.asarray(self.found, dtype=bool)
        every = np.ones(self.n, dtype=bool)
        for t in self.tallies:
            every &= t.holds
        return every & bool(self.tallies)

    def robust_in(self) -> np.ndarray:
        """[n] bool: found, and every criterion clears its threshold by the robust margin."""
        every = self.found_in().copy()
        for t in self.tallies:
            every &= t.robust
        return every


def tally(threshold: Threshold, values: Sequence[float | None],
          heads: list[str | None] | None = None) -> Tally:
    """A :class:`Tally` of ``values`` (None: not measured) measured on ``heads``."""
    return Tally(threshold, np.array([math.nan if v is None else float(v) for v in values]),
                 heads)


def head_counts(heads: Sequence[str | None], values: np.ndarray | None = None) -> str:
    """Which head each result named, most common first: ``L1H2 x3, L1H0 x2``; with the
    results' ``values`` [n], each head's range of them: ``L1H2 x3 (0.91-0.97)``."""
    counts = Counter(h for h in heads if h is not None)
    parts = []
    for head, count in sorted(counts.items(), key=lambda x: (-x[1], x[0])):
        part = f"{head} x{count}"
        if values is not None:
            mine = [float(v) for h, v in zip(heads, values, strict=True)
                    if h == head and not math.isnan(v)]
            low, high = (min(mine), max(mine)) if mine else (math.nan, math.nan)
            span = _number(low) if low == high or math.isnan(low) else \
                f"{_number(low)}-{_number(high)}"
            part += f" ({span})"
        parts.append(part)
    return ", ".join(parts) or "none"


def _number(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.2f}"


def tally_row(t: Tally) -> list[str]:
    """One criterion's row of the k-of-n table."""
    low, mid, high = t.spread()
    return [f"  {t.threshold.name}", t.threshold.words(), f"{int(t.holds.sum())}/{t.n}",
            f"{int(t.robust.sum())}/{t.n}", _number(low), _number(mid), _number(high),
            t.threshold.margin_text(t.worst_margin()),
            "" if t.heads is None else head_counts(t.heads, t.values)]


def finding_rows(f: FindingTally) -> list[list[str]]:
    """The rows of one finding: its own (k of n, robust k of n, heads), then its criteria."""
    head = [f.name, "", f"{int(f.found_in().sum())}/{f.n}", f"{int(f.robust_in().sum())}/{f.n}",
            "", "", "", "", head_counts(f.heads)]
    return [head, *(tally_row(t) for t in f.tallies)]


def kofn_table(findings: Sequence[FindingTally]) -> str:
    """The k-of-n table of ``findings``, with a line saying what "robust" means."""
    rows = [row for f in findings for row in finding_rows(f)]
    return "\n".join([format_table(HEADER, rows),
                      f"robust: every criterion clears its threshold by {ROBUST_MARGIN:.2f} "
                      f"(ratios by {ROBUST_RATIO:g}x); thresholds in probing/thresholds.py"])

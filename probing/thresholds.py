"""Every threshold a finding is judged by, in one place.

``python -m probing summary`` (:mod:`probing.findings`) and the k-of-n tables of several
models or runs (:mod:`probing.kofn`) read their thresholds from here, and so does the
``repeated`` study's ``--min-score`` default. A :class:`Threshold` knows which way it
points (a floor or a ceiling), how far a value clears it (the margin) and whether it clears
it robustly: by at least :data:`ROBUST_MARGIN`, or for a ratio by a factor of at least
:data:`ROBUST_RATIO`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

ROBUST_MARGIN = 0.05    # a score clears its threshold robustly by at least this much
ROBUST_RATIO = 1.25     # ... a ratio by at least this factor


@dataclass(frozen=True)
class Threshold:
    """One threshold: ``name`` of the measured value, its ``bound``; ``ceiling``: the value
    must stay at or below the bound (else reach it); ``ratio``: the value is a ratio, whose
    margin is a factor (value / bound) rather than a difference."""

    name: str
    bound: float
    ceiling: bool = False
    ratio: bool = False

    def holds(self, value: float | None) -> bool:
        """Whether ``value`` clears the threshold (a missing or NaN value does not)."""
        if value is None or math.isnan(value):
            return False
        return value <= self.bound if self.ceiling else value >= self.bound

    def margin(self, value: float | None) -> float:
        """How far ``value`` clears the threshold: the difference (negative when it does not
        clear it), or for a ratio the factor value / bound (below 1 when it does not);
        NaN for a missing value."""
        if value is None or math.isnan(value):
            return math.nan
        if self.ratio:
            return self.bound / value if self.ceiling else value / self.bound
        return self.bound - value if self.ceiling else value - self.bound

    def robust(self, value: float | None) -> bool:
        """Whether ``value`` clears the threshold by :data:`ROBUST_MARGIN` (ratios: by a
        factor :data:`ROBUST_RATIO`)."""
        margin = self.margin(value)
        return margin >= (ROBUST_RATIO if self.ratio else ROBUST_MARGIN)

    def words(self) -> str:
        """The threshold in words, e.g. ``>= 0.90`` or ``>= 5x``."""
        sign = "<=" if self.ceiling else ">="
        return f"{sign} {self.bound:g}x" if self.ratio else f"{sign} {self.bound:.2f}"

    def margin_words(self, value: float | None) -> str:
        """The margin of ``value`` as printed: ``+0.07`` or ``1.40x`` (``-``: none)."""
        return self.margin_text(self.margin(value))

    def margin_text(self, margin: float) -> str:
        """A margin of this threshold as printed: ``+0.07``, ``1.40x`` or ``-`` (NaN)."""
        if math.isnan(margin):
            return "-"
        return f"{margin:.2f}x" if self.ratio else f"{margin:+.2f}"


# the summary's findings (probing.findings)
QUOTE_ATTENTION = Threshold("attention from quoted tokens to the opening mark", 0.30)
QUOTE_OVER_UNIFORM = Threshold("attention over uniform attention", 5.0, ratio=True)
INDUCTION_SCORE = Threshold("induction score", 0.50)
INDUCTION_GAIN = Threshold("top-1 accuracy gain, second half over first", 0.20)
# the previous-token head feeding the induction head (the circuit of the repeated study)
PREV_TOKEN_SCORE = Threshold("previous-token score of the head before the induction head", 0.50)
PREV_TOKEN_DROP = Threshold("second-half accuracy drop when it is ablated", 0.50)
PREV_TOKEN_RANDOM_DROP = Threshold("the drop when a random head of its layer is ablated", 0.10,
                                   ceiling=True)
PROBE_TAG = "``"                # the opening quotation mark (Penn Treebank tag)
PROBE_MARGIN = Threshold("probe F1 minus the random-weights control's", 0.30)

# the repeated study names a circuit when both of its heads reach this score (--min-score)
CIRCUIT_MIN_SCORE = 0.5
# the canonical induction circuit of an organism: each criterion of the study's circuit line
CIRCUIT_PREV_TOKEN = Threshold("previous-token head score", 0.9)
CIRCUIT_INDUCTION = Threshold("induction head score", 0.9)
CIRCUIT_ACCURACY = Threshold("second-half top-1 accuracy", 0.9)
CIRCUIT_ABLATION = Threshold("previous-token head's ablation drop", 0.5)
CIRCUIT_RANDOM_DROP = Threshold("random head's ablation drop", 0.1, ceiling=True)

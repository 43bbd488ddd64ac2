"""The three findings a run is checked for, each beside its control, or "not found".

``python -m probing summary`` starts with these lines. A finding is reported as found only
when its effect clears the thresholds below; otherwise the line says "not found" and why.

* quotation head: the head whose mean attention from quoted tokens to the opening mark of
  their quotation is highest (``probing quote`` run with the model). Control: the
  attention a head spreading its weight uniformly over the positions it can see would pay
  to the mark. Found when the attention is at least :data:`QUOTE_MIN_ATTENTION` and at
  least :data:`QUOTE_MIN_OVER_UNIFORM` times the uniform attention.
* induction head: the head with the highest induction score on repeated random tokens
  (``probing repeated``). Control: top-1 accuracy on the first half, which no head can
  predict. Found when the score is at least :data:`INDUCTION_MIN_SCORE` and the
  second-half accuracy exceeds the first half's by :data:`INDUCTION_MIN_GAIN`.
* tag probe: for tag :data:`PROBE_TAG`, the head outside layer 0 whose probe F1 exceeds
  the same probe's F1 on the re-initialised model (``probing fit --control-store``) by the
  most. Layer 0 is left out: its keys and queries are a function of the token and its
  position alone, so a probe there reads word identity, which random weights keep too.
  Found when that margin is at least :data:`PROBE_MIN_MARGIN`. The line then says whether
  that head goes beyond word identity (probing.word_identity): only when it beats the
  lexical baseline on ambiguous tokens with a bootstrap interval that excludes 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from headprobe.heads import head_label
from probing.results import ProbeResults
from probing.studies import quote, repeated
from probing.studies.common import top_heads
from probing.study_io import StudyResults
from probing.top import top_cells

QUOTE_MIN_ATTENTION = 0.30      # mean attention from quoted tokens to their opening mark
QUOTE_MIN_OVER_UNIFORM = 5.0    # ... and this many times what uniform attention would give
INDUCTION_MIN_SCORE = 0.50      # mean attention from a repeated token to its earlier successor
INDUCTION_MIN_GAIN = 0.20       # second-half top-1 accuracy minus the first half's
PROBE_TAG = "``"                # the opening quotation mark (Penn Treebank tag)
PROBE_MIN_MARGIN = 0.30         # probe F1 minus the random-weights control's F1


@dataclass
class Finding:
    """One finding: its name, whether it clears its thresholds, and the line to print."""

    name: str
    found: bool
    text: str

    def line(self) -> str:
        verdict = "found" if self.found else "not found"
        return f"  {self.name}: {verdict}: {self.text}"


def quote_finding(r: StudyResults | None) -> Finding:
    """The quotation head of a ``quote`` study (None: the study was not run)."""
    name = "quotation head"
    if r is None:
        return Finding(name, False, "no quote study (run python -m probing quote)")
    if quote.ATTN_TO_OPEN not in r or r.meta.get("uniform_attention") is None:
        return Finding(name, False, "the quote study ran without the model, so no attention "
                                    "was measured (run it with --model)")
    grid = r[quote.ATTN_TO_OPEN]                                   # [n_layers, n_heads]
    layer, head = top_heads(grid, 1)[0]
    attn, uniform = float(grid[layer, head]), float(r.meta["uniform_attention"])
    found = attn >= QUOTE_MIN_ATTENTION and attn >= QUOTE_MIN_OVER_UNIFORM * uniform
    return Finding(name, found, (
        f"{head_label(layer, head)} pays {attn:.2f} of its attention from quoted "
        f"tokens to the opening mark (uniform attention: {uniform:.3f}; thresholds "
        f"{QUOTE_MIN_ATTENTION:.2f} and {QUOTE_MIN_OVER_UNIFORM:g}x uniform; "
        f"{r.meta.get('n_quoted_queries', 0)} quoted tokens)"))


def induction_finding(r: StudyResults | None) -> Finding:
    """The induction head of a ``repeated`` study (None: the study was not run)."""
    name = "induction head"
    if r is None:
        return Finding(name, False, "no repeated study (run python -m probing repeated)")
    grid = r[repeated.INDUCTION_SCORE]                             # [n_layers, n_heads]
    layer, head = top_heads(grid, 1)[0]
    score = float(grid[layer, head])
    first, second = (float(a) for a in r[repeated.ACCURACY])
    found = score >= INDUCTION_MIN_SCORE and second - first >= INDUCTION_MIN_GAIN
    m = r.meta
    low, high = m.get("min_len", m["seq_len"]), m["seq_len"]
    lengths = f"{low}-{high}" if low < high else f"{high}"
    return Finding(name, found, (
        f"{head_label(layer, head)} induction score {score:.2f} on "
        f"{m['batch']} sequences of {lengths} random tokens repeated; "
        f"top-1 accuracy first half {first:.2f} -> second half {second:.2f} (thresholds: "
        f"score {INDUCTION_MIN_SCORE:.2f}, accuracy gain {INDUCTION_MIN_GAIN:.2f})"))


def probe_finding(results: ProbeResults | None, tag: str = PROBE_TAG) -> Finding:
    """The probe head for ``tag`` that beats the random-weights control by the most,
    outside layer 0 (None: no probe grid)."""
    name = f"tag probe ({tag})"
    if results is None:
        return Finding(name, False, "no probe grid (run python -m probing fit)")
    if tag not in results.tags:
        return Finding(name, False, f"the probe grid has no tag {tag!r}")
    if "random" not in results.controls:
        return Finding(name, False, "no random-weights control (fit with --control-store "
                                    "holding a store extracted with --reinit-seed)")
    cells = [c for c in top_cells(results, tag, k=10 ** 6, by="selectivity", control="random")
             if c["layer"] > 0 and not np.isnan(c["value"])]
    if not cells:
        return Finding(name, False, "the probe grid has no layer above 0")
    best = cells[0]
    margin = best["value"]
    return Finding(name, margin >= PROBE_MIN_MARGIN, (
        f"{best['site']} of {best['cell']} F1 {best['f1']:.2f} vs random weights "
        f"{best['f1_random']:.2f} ({margin:+.2f}; threshold {PROBE_MIN_MARGIN:+.2f}; best "
        f"head outside layer 0; {best['support']} test tokens); {best['verdict']}"))


def findings(results: ProbeResults | None, studies: dict[str, StudyResults]
             ) -> list[Finding]:
    """The three findings of a run: quotation head, induction head, tag probe."""
    return [quote_finding(studies.get(quote.STUDY)),
            induction_finding(studies.get(repeated.STUDY)),
            probe_finding(results)]


def findings_lines(results: ProbeResults | None, studies: dict[str, StudyResults]
                   ) -> list[str]:
    """The findings block of the summary (thresholds: probing.findings)."""
    return ["findings (thresholds in probing/findings.py):",
            *(f.line() for f in findings(results, studies))]

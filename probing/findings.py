"""The findings a run is checked for, each beside its control, or "not found".

``python -m probing summary`` starts with these lines. A finding is reported as found only
when its effect clears the thresholds below; otherwise the line says "not found" and why.

* quotation head: the head whose mean attention from quoted tokens to the opening mark of
  their quotation is highest (``probing quote`` run with the model). Control: the
  attention a head spreading its weight uniformly over the positions it can see would pay
  to the mark. Found when the attention clears :data:`probing.thresholds.QUOTE_ATTENTION`
  and its ratio to the uniform attention :data:`probing.thresholds.QUOTE_OVER_UNIFORM`.
* induction head: the head with the highest induction score on repeated random tokens
  (``probing repeated``). Control: top-1 accuracy on the first half, which no head can
  predict. Found when the score clears :data:`probing.thresholds.INDUCTION_SCORE` and the
  second-half accuracy exceeds the first half's by
  :data:`probing.thresholds.INDUCTION_GAIN`.
* previous-token head: the head below the induction head that attends most to the token
  before (the circuit of ``probing repeated``). Control: ablating it (its mean output
  instead of its output) must cost the second-half accuracy
  :data:`probing.thresholds.PREV_TOKEN_DROP`, while ablating a random other head of its
  layer costs at most :data:`probing.thresholds.PREV_TOKEN_RANDOM_DROP`. Found when its
  score clears :data:`probing.thresholds.PREV_TOKEN_SCORE` and both drops their thresholds
  (a layer of one head has no control: not found).
* tag probe: for tag :data:`probing.thresholds.PROBE_TAG`, the head outside layer 0 whose
  probe F1 exceeds the same probe's F1 on the re-initialised model (``probing fit
  --control-store``) by the most. Layer 0 is left out: its keys and queries are a function
  of the token and its position alone, so a probe there reads word identity, which random
  weights keep too. Found when that margin clears :data:`probing.thresholds.PROBE_MARGIN`.
  The line then says whether that head goes beyond word identity (probing.word_identity):
  only when it beats the lexical baseline on ambiguous tokens with a bootstrap interval
  that excludes 0.

Each :class:`Finding` keeps the values it was judged by, beside their thresholds, so that
:mod:`probing.kofn` can count in how many of several runs it holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from headprobe.heads import head_label
from probing import thresholds as th
from probing.results import ProbeResults
from probing.studies import quote, repeated
from probing.studies.common import top_heads
from probing.study_io import StudyResults
from probing.top import top_cells


@dataclass
class Finding:
    """One finding: its name, whether it clears its thresholds, the line to print, and the
    values it was judged by (threshold, value) with the head it names (None: none)."""

    name: str
    found: bool
    text: str
    measures: tuple[tuple[th.Threshold, float], ...] = field(default_factory=tuple)
    head: str | None = None

    def line(self) -> str:
        verdict = "found" if self.found else "not found"
        return f"  {self.name}: {verdict}: {self.text}"


def judged(name: str, measures: tuple[tuple[th.Threshold, float], ...], head: str,
           text: str) -> Finding:
    """A finding judged by ``measures``: found when every value clears its threshold."""
    found = all(t.holds(v) for t, v in measures)
    return Finding(name, found, text, measures, head)


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
    measures = ((th.QUOTE_ATTENTION, attn),
                (th.QUOTE_OVER_UNIFORM, attn / uniform if uniform > 0 else float("nan")))
    return judged(name, measures, head_label(layer, head), (
        f"{head_label(layer, head)} pays {attn:.2f} of its attention from quoted "
        f"tokens to the opening mark (uniform attention: {uniform:.3f}; thresholds "
        f"{th.QUOTE_ATTENTION.bound:.2f} and {th.QUOTE_OVER_UNIFORM.bound:g}x uniform; "
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
    measures = ((th.INDUCTION_SCORE, score), (th.INDUCTION_GAIN, second - first))
    m = r.meta
    low, high = m.get("min_len", m["seq_len"]), m["seq_len"]
    lengths = f"{low}-{high}" if low < high else f"{high}"
    return judged(name, measures, head_label(layer, head), (
        f"{head_label(layer, head)} induction score {score:.2f} on "
        f"{m['batch']} sequences of {lengths} random tokens repeated; "
        f"top-1 accuracy first half {first:.2f} -> second half {second:.2f} (thresholds: "
        f"score {th.INDUCTION_SCORE.bound:.2f}, accuracy gain {th.INDUCTION_GAIN.bound:.2f})"))


def prev_token_finding(r: StudyResults | None) -> Finding:
    """The previous-token head of a ``repeated`` study's circuit (None: not run)."""
    name = "previous-token head"
    if r is None:
        return Finding(name, False, "no repeated study (run python -m probing repeated)")
    c = r.meta.get("circuit") or {}
    if "prev_token_head" not in c:
        return Finding(name, False, f"no circuit ({c.get('reason', 'not measured')})")
    head, ind = head_label(*c["prev_token_head"]), head_label(*c["induction_head"])
    score, drop = float(c["prev_token_score"]), float(c["ablation_drop"])
    random = c.get("random_drop")
    other = ("no other head in its layer" if random is None else
             f"random head {head_label(*c['random_head'])}: {random:.2f}")
    measures = ((th.PREV_TOKEN_SCORE, score), (th.PREV_TOKEN_DROP, drop),
                (th.PREV_TOKEN_RANDOM_DROP, float("nan") if random is None else float(random)))
    return judged(name, measures, head, (
        f"{head} previous-token score {score:.2f}, before induction head {ind}; ablating it "
        f"drops the second-half accuracy by {drop:.2f} ({other}; thresholds: score "
        f"{th.PREV_TOKEN_SCORE.bound:.2f}, drop {th.PREV_TOKEN_DROP.bound:.2f}, random head "
        f"{th.PREV_TOKEN_RANDOM_DROP.words()})"))


def probe_finding(results: ProbeResults | None, tag: str = th.PROBE_TAG) -> Finding:
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
    return judged(name, ((th.PROBE_MARGIN, margin),), f"{best['site']} of {best['cell']}", (
        f"{best['site']} of {best['cell']} F1 {best['f1']:.2f} vs random weights "
        f"{best['f1_random']:.2f} ({margin:+.2f}; threshold {th.PROBE_MARGIN.bound:+.2f}; best "
        f"head outside layer 0; {best['support']} test tokens); {best['verdict']}"))


def findings(results: ProbeResults | None, studies: dict[str, StudyResults]
             ) -> list[Finding]:
    """The findings of a run: quotation head, induction head and the previous-token head
    before it, tag probe."""
    return [quote_finding(studies.get(quote.STUDY)),
            induction_finding(studies.get(repeated.STUDY)),
            prev_token_finding(studies.get(repeated.STUDY)),
            probe_finding(results)]


def findings_lines(results: ProbeResults | None, studies: dict[str, StudyResults]
                   ) -> list[str]:
    """The findings block of the summary (thresholds: probing.findings)."""
    return ["findings (thresholds in probing/thresholds.py):",
            *(f.line() for f in findings(results, studies))]
